//! Issue 21 §3: what the Invoke API reads of a request before NATS is asked (the
//! `{name}` in any form the SDKs send, the region of a credential scope) and of the
//! log records `X-Amz-Log-Type: Tail` gathers: 100,000 seeded cases, never a panic;
//! a tail never holds more than Lambda's 4 KiB.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::*;

fn text(max: usize) -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => proptest::collection::vec(
            proptest::sample::select(vec!['a', 'Z', '0', ':', '/', ',', ' ', '-', '=', '\t']),
            0..=max
        )
        .prop_map(String::from_iter),
        1 => "[ -~]{0,40}",
        1 => proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter),
    ]
}

#[test]
fn hostile_invoke_api_names_regions_and_log_records() {
    let target = prop_oneof![
        2 => Just("arn:aws:lambda:eu-west-1:123456789012:function:hello:$LATEST".to_owned()),
        3 => text(40),
    ];
    let auth = prop_oneof![
        2 => text(12).prop_map(|r| format!("AWS4-HMAC-SHA256 Credential=AKID/20261202/{r}/lambda/aws4_request, SignedHeaders=host, Signature=00")),
        1 => text(60),
    ];
    let record = (
        prop_oneof![Just("b".to_owned()), Just("b1,b".to_owned()), text(12)],
        prop_oneof![
            2 => Just("END RequestId: b\nREPORT RequestId: b\tDuration: 1 ms".to_owned()),
            3 => proptest::collection::vec(any::<u8>(), 0..48)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            // Past the tail's 4 KiB in a few records.
            1 => (1usize..3000).prop_map(|n| "REPORT RequestId: b\n".repeat(n / 20)),
        ],
    );
    let strategy = (target, auth, proptest::collection::vec(record, 0..6));
    let config = Config {
        cases: 100_000,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::XorShift, b"natsfn invokeapi");
    TestRunner::new_with_rng(config, rng)
        .run(&strategy, |(target, auth, records)| {
            let (name, named) = function_target(&target);
            prop_assert!(!name.contains(':'));
            // Whatever the name carries, the qualifier parses or is refused.
            let _ = qualifier(named, None);
            let mut headers = axum::http::HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&auth) {
                headers.insert("authorization", value);
            }
            let region = region(&headers);
            prop_assert!(!region.is_empty());
            prop_assert!(HeaderValue::from_str(&region).is_ok());
            let mut tail = Tail::default();
            for (ids, body) in records {
                let Ok(ids) = ids.parse::<async_nats::HeaderValue>() else {
                    continue;
                };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(HEADER_REQUEST_ID, ids);
                let message = async_nats::Message {
                    subject: "natsfn.logs.f".into(),
                    reply: None,
                    payload: body.into(),
                    headers: Some(headers),
                    status: None,
                    description: None,
                    length: 0,
                };
                tail.push(&message, "b");
            }
            let encoded = tail.encode();
            let decoded = BASE64.decode(&encoded).expect("base64");
            prop_assert!(decoded.len() <= TAIL_BYTES);
            // Carried as the X-Amz-Log-Result header.
            prop_assert!(HeaderValue::from_str(&encoded).is_ok());
            Ok(())
        })
        .unwrap();
}
