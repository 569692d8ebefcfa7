//! Issue 21 §3: function URLs. A request's method, path, query, headers (cookies,
//! CORS preflights) and body become an event (payload format 2.0) or a refusal, and a
//! function's result (any bytes) becomes a response: 100,000 seeded cases each, never a
//! panic; a result that cannot be mapped is a 502 with a body.

use axum::http::{HeaderValue, Method, Request, StatusCode, Version};
use base64::Engine;
use natsfn_protocol::spec::Cors;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;

const CASES: u32 = 100_000;

fn runner(seed: &[u8; 16]) -> TestRunner {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::XorShift, seed))
}

/// Mostly what a header may carry, sometimes any byte.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> + Clone {
    prop_oneof![
        6 => proptest::collection::vec(0x20u8..0x7f, 0..=max),
        1 => proptest::collection::vec(any::<u8>(), 0..=max),
    ]
}

/// Any bytes as a URI's path or query would carry them (the rest percent-encoded).
fn uri_part(max: usize) -> impl Strategy<Value = String> {
    bytes(max).prop_map(|b| {
        let mut out = String::new();
        for c in b {
            if c.is_ascii_alphanumeric() || b"/-._~%=&+;:@!$'()*,".contains(&c) {
                out.push(c as char);
            } else {
                out.push_str(&format!("%{c:02X}"));
            }
        }
        out
    })
}

const HEADER_NAMES: &[&str] = &[
    "host",
    "cookie",
    "user-agent",
    "origin",
    "access-control-request-method",
    "access-control-request-headers",
    "x-forwarded-for",
    "content-type",
    "x-custom",
];

fn request() -> impl Strategy<Value = (Request<()>, Vec<u8>)> {
    let method = prop_oneof![
        4 => proptest::sample::select(vec![Method::GET, Method::POST, Method::OPTIONS, Method::PUT]),
        1 => "[A-Z!#$%&'*+.^_`|~-]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ];
    let function = prop_oneof![
        4 => Just("hello".to_owned()),
        1 => uri_part(12),
    ];
    let headers = proptest::collection::vec(
        (
            prop_oneof![
                4 => proptest::sample::select(HEADER_NAMES).prop_map(str::to_owned),
                1 => "[a-z0-9-]{1,12}",
            ],
            bytes(40),
        ),
        0..5,
    );
    let version = proptest::sample::select(vec![
        Version::HTTP_09,
        Version::HTTP_10,
        Version::HTTP_11,
        Version::HTTP_2,
    ]);
    let body = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..64),
        2 => "[ -~]{0,64}".prop_map(String::into_bytes),
    ];
    (
        method,
        function,
        uri_part(24),
        proptest::option::of(uri_part(24)),
        headers,
        version,
        body,
    )
        .prop_map(|(method, function, rest, query, headers, version, body)| {
            let mut uri = format!("/{function}/{rest}");
            if let Some(q) = query {
                uri.push('?');
                uri.push_str(&q);
            }
            let mut builder = Request::builder().method(method).version(version);
            builder = match axum::http::Uri::try_from(uri.as_str()) {
                Ok(uri) => builder.uri(uri),
                Err(_) => builder.uri("/hello"),
            };
            for (name, value) in headers {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    builder = builder.header(name, value);
                }
            }
            (builder.body(()).unwrap(), body)
        })
}

fn cors(credentials: bool, any: bool) -> Cors {
    let list = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    Cors {
        allow_origins: if any {
            list(&["*"])
        } else {
            list(&["https://example.com"])
        },
        allow_methods: if any {
            list(&["*"])
        } else {
            list(&["GET", "POST"])
        },
        allow_headers: if any {
            list(&["*"])
        } else {
            list(&["content-type"])
        },
        expose_headers: list(&["x-custom"]),
        max_age: 600,
        allow_credentials: credentials,
    }
}

#[test]
fn hostile_function_url_requests_become_events_or_refusals() {
    let configs = [
        cors(false, false),
        cors(true, false),
        cors(false, true),
        cors(true, true),
    ];
    let events = std::cell::Cell::new(0u32);
    runner(b"natsfn url event")
        .run(&(request(), any::<Index>()), |((request, body), config)| {
            let (parts, ()) = request.into_parts();
            let Some((function, _, rest)) = route(parts.uri.path()) else {
                return Ok(());
            };
            prop_assert!(is_valid_function_name(function));
            let cors = &configs[config.index(configs.len())];
            if let Some(preflight) = cors::preflight(cors, &parts.method, &parts.headers) {
                prop_assert_eq!(preflight.status(), StatusCode::OK);
                prop_assert_eq!(&parts.method, Method::OPTIONS);
                return Ok(());
            }
            let raw_path = format!("/{rest}");
            let event = event(&parts, &raw_path, &body, Some("127.0.0.1"), "http", "id-1");
            // What the gateway sends: it must serialise (its bytes are not read back
            // here, a debug build's JSON parser being the slowest part of a case).
            serde_json::to_vec(&event).expect("an event serialises");
            let again = event;
            prop_assert_eq!(&again["version"], "2.0");
            prop_assert_eq!(&again["rawPath"], raw_path.as_str());
            // The body arrives whole: as text, or base64 when it is not UTF-8.
            let sent = match (&again["body"], &again["isBase64Encoded"]) {
                (Value::Null, _) => Vec::new(),
                (Value::String(b), Value::Bool(true)) => BASE64.decode(b).expect("base64"),
                (Value::String(b), _) => b.clone().into_bytes(),
                other => return Err(TestCaseError::fail(format!("body {other:?}"))),
            };
            prop_assert_eq!(sent, body);
            let mut response = Response::new(Body::empty());
            cors::decorate(cors, parts.headers.get(header::ORIGIN), &mut response);
            events.set(events.get() + 1);
            Ok(())
        })
        .unwrap();
    assert!(events.get() > 10_000, "only {} events", events.get());
}

const KEYS: &[&str] = &[
    "statusCode",
    "headers",
    "cookies",
    "body",
    "isBase64Encoded",
    "content-type",
    "set-cookie",
    "x-a",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![0u64..700, Just(u64::from(u16::MAX) + 200), any::<u64>()]
            .prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e3f64..1e3).prop_map(|f| json!(f)),
        bytes(16).prop_map(|b| json!(String::from_utf8_lossy(&b))),
        Just(json!("aGVsbG8=")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    3 => proptest::sample::select(KEYS).prop_map(str::to_owned),
                    1 => bytes(10).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn hostile_function_results_become_responses_or_a_502() {
    let valid = json!({"statusCode": 201, "headers": {"x-a": "1", "content-type": "text/plain"},
                       "cookies": ["a=1"], "body": "aGVsbG8=", "isBase64Encoded": true});
    let payload = prop_oneof![
        // The valid result with one field replaced.
        4 => (proptest::sample::select(KEYS), json()).prop_map(move |(k, v)| {
            let mut r = valid.clone();
            r[k] = v;
            serde_json::to_vec(&r).unwrap()
        }),
        2 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ];
    let mapped = std::cell::Cell::new(0u32);
    runner(b"natsfn url reply")
        .run(&payload, |payload| {
            let response = result_response(&payload);
            let status = response.status();
            let parsed: Option<Map<String, Value>> = serde_json::from_slice(&payload).ok();
            match parsed.as_ref().and_then(|r| r.get("statusCode")) {
                None => prop_assert_eq!(status, StatusCode::OK),
                Some(code) if code.as_u64() == Some(u64::from(status.as_u16())) => {
                    mapped.set(mapped.get() + 1)
                }
                Some(_) => {
                    prop_assert_eq!(status, StatusCode::BAD_GATEWAY);
                    let body = futures::executor::block_on(axum::body::to_bytes(
                        response.into_body(),
                        usize::MAX,
                    ))
                    .unwrap();
                    prop_assert!(!body.is_empty());
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(mapped.get() > 10_000, "only {} mapped", mapped.get());
}
