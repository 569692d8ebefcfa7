//! `natsfn node --http ADDR --http-auth FILE`: SigV4 on the Invoke API and on function
//! URLs with `url.auth` `AWS_IAM` (boto3 and botocore's signer as the clients), CORS
//! preflights, TLS, and the bound on one client's connections.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Echoes the function URL event; refuses to be called for a preflight, which the
/// gateway must answer itself.
const ECHO_APP: &str = r#"
import json
def handler(event, context):
    if "rawPath" in event and event["requestContext"]["http"]["method"] == "OPTIONS":
        raise ValueError("a preflight reached the function")
    return {"statusCode": 200,
            "headers": {"content-type": "application/json", "x-custom": "yes",
                        "access-control-allow-origin": "https://set-by-the-function.example"},
            "body": json.dumps({"event": event})}
"#;

const ALL: HttpKey = HttpKey {
    id: "AKIDALL",
    secret: "secret-of-all",
    functions: &["*"],
};
/// May call `web` alone.
const WEB_ONLY: HttpKey = HttpKey {
    id: "AKIDWEB",
    secret: "secret-of-web",
    functions: &["web"],
};
const ALLOWED_ORIGIN: &str = "https://allowed.example";

struct Gateway {
    env: Env,
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    _code: tempfile::TempDir,
}

impl Gateway {
    /// A node serving the gateway with `--http-auth` (unless `auth` is false) and TLS
    /// (if `tls`), and three functions: `api`, `web` (CORS) and `iam` (`AWS_IAM`).
    async fn start(auth: bool, tls: bool) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let keys = http_auth_file(dir.path(), &[ALL, WEB_ONLY]);
        let mut args = vec!["--http".to_owned(), addr.clone()];
        if auth {
            args.extend(["--http-auth".to_owned(), dir_str(&keys)]);
        }
        let mut http = reqwest::Client::builder();
        let base = if tls {
            let (cert, key, pem) = self_signed_cert(dir.path());
            args.extend([
                "--http-tls-cert".to_owned(),
                dir_str(&cert),
                "--http-tls-key".to_owned(),
                dir_str(&key),
            ]);
            let root = reqwest::Certificate::from_pem(pem.as_bytes()).expect("certificate");
            http = http.use_rustls_tls().add_root_certificate(root);
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = NatsServer::start();
        let node = Node::start_with(&server, "node-a", &args);
        let env = Env::with(server, node).await;
        let code = code_dir(&[("app.py", ECHO_APP)]);
        let cors = json!({"allow_origins": [ALLOWED_ORIGIN], "allow_methods": ["GET", "POST"],
                          "allow_headers": ["content-type", "x-custom"],
                          "expose_headers": ["x-custom"], "max_age": 600});
        for (name, url) in [
            ("api", json!({})),
            ("web", json!({"cors": cors})),
            ("iam", json!({"auth": "AWS_IAM"})),
        ] {
            let binding = Binding::python("app.handler", &code)
                .pool(1, 2)
                .with("url", url);
            env.bind_ready(name, binding).await;
        }
        let http = http.build().expect("HTTP client");
        gateway_up(&http, &base).await;
        Gateway {
            env,
            base,
            http,
            dir,
            _code: code,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method url body` signed by botocore for `key` (its clock at `at`, or now).
    async fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
        key: (&str, &str),
        at: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let url = self.url(path);
        let headers = sigv4_headers(method.as_str(), &url, body, key.0, key.1, at).await;
        let mut request = self.http.request(method, url).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
    }
}

fn header_of(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A 403 with this exception in `x-amzn-ErrorType`; its JSON body.
async fn refused(response: reqwest::Response, exception: &str) -> Value {
    assert_eq!(response.status(), 403, "{response:?}");
    assert_eq!(
        header_of(&response, "x-amzn-errortype").as_deref(),
        Some(exception)
    );
    let bytes = response.bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}

async fn echoed(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "{response:?}");
    let bytes = response.bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("the echo is JSON")
}

const INVOKE_API: &str = "/2015-03-31/functions/api/invocations";

#[tokio::test]
async fn boto3_invokes_with_a_right_key_and_is_refused_with_wrong_ones() {
    let gw = Gateway::start(true, false).await;
    let calls = json!([
        {"name": "right", "key": ALL.id, "secret": ALL.secret, "function": "api"},
        {"name": "wrong_secret", "key": ALL.id, "secret": "not-the-secret", "function": "api"},
        {"name": "unknown_key", "key": "AKIDNOBODY", "secret": ALL.secret, "function": "api"},
        {"name": "not_allowed", "key": WEB_ONLY.id, "secret": WEB_ONLY.secret, "function": "api"},
        {"name": "allowed", "key": WEB_ONLY.id, "secret": WEB_ONLY.secret, "function": "web"},
    ]);
    let out = python_json("boto3_auth.py", &[&gw.base, "-", &calls.to_string()]).await;
    assert_eq!(out["right"]["status"], 200, "{out}");
    let payload: Value =
        serde_json::from_str(out["right"]["payload"].as_str().unwrap_or_default()).expect("JSON");
    assert_eq!(payload["statusCode"], 200, "{out}");
    for (call, code) in [
        ("wrong_secret", "InvalidSignatureException"),
        ("unknown_key", "UnrecognizedClientException"),
        ("not_allowed", "AccessDeniedException"),
    ] {
        assert_eq!(out[call]["status"], 403, "{call}: {out}");
        assert_eq!(out[call]["code"], code, "{call}: {out}");
    }
    assert!(
        out["not_allowed"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("AKIDWEB") && m.contains("lambda:InvokeFunction")),
        "{out}"
    );
    assert_eq!(out["allowed"]["status"], 200, "{out}");
}

#[tokio::test]
async fn invoke_api_refuses_unsigned_skewed_and_altered_requests() {
    let gw = Gateway::start(true, false).await;
    let all = (ALL.id, ALL.secret);
    let post = reqwest::Method::POST;

    let unsigned = gw.http.post(gw.url(INVOKE_API)).body("{}").send().await;
    let body = refused(unsigned.expect("response"), "UnrecognizedClientException").await;
    assert_eq!(body["__type"], "UnrecognizedClientException", "{body}");

    // Within five minutes of the gateway's clock either way: accepted.
    let now = SystemTime::now();
    let four_minutes = Duration::from_secs(240);
    for at in [now - four_minutes, now + four_minutes] {
        let at = amz_date(at);
        let request = gw
            .signed(post.clone(), INVOKE_API, "{}", all, Some(&at))
            .await;
        let response = request.send().await.expect("response");
        assert_eq!(response.status(), 200, "signed at {at}: {response:?}");
    }
    // Past them: refused, either way.
    for (at, says) in [
        (now - Duration::from_secs(360), "Signature expired"),
        (now + Duration::from_secs(360), "Signature not yet current"),
    ] {
        let request = gw
            .signed(post.clone(), INVOKE_API, "{}", all, Some(&amz_date(at)))
            .await;
        let body = refused(
            request.send().await.expect("response"),
            "InvalidSignatureException",
        )
        .await;
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(says)),
            "{body}"
        );
    }
    // The body is part of what is signed: another one is refused.
    let signed = sigv4_headers("POST", &gw.url(INVOKE_API), "{}", all.0, all.1, None).await;
    let mut altered = gw.http.post(gw.url(INVOKE_API)).body(r#"{"n": 2}"#);
    for (name, value) in signed {
        altered = altered.header(name, value);
    }
    refused(
        altered.send().await.expect("response"),
        "InvalidSignatureException",
    )
    .await;
}

#[tokio::test]
async fn aws_iam_function_urls_take_only_signatures_of_keys_allowed_the_function() {
    let gw = Gateway::start(true, false).await;
    let get = reqwest::Method::GET;
    // A path and query that must be encoded as every signer encodes them.
    let path = "/iam/a%20b/c?z=1&a=x%2By&empty";

    let unsigned = gw.http.get(gw.url(path)).send().await.expect("response");
    let body = refused(unsigned, "UnrecognizedClientException").await;
    assert!(body["Message"].is_string(), "{body}");

    let request = gw
        .signed(get.clone(), path, "", (ALL.id, ALL.secret), None)
        .await;
    let echo = echoed(request.send().await.expect("response")).await;
    assert_eq!(echo["event"]["rawPath"], "/a%20b/c", "{echo}");
    assert_eq!(
        echo["event"]["rawQueryString"], "z=1&a=x%2By&empty",
        "{echo}"
    );

    let posted = gw
        .signed(
            reqwest::Method::POST,
            "/iam/",
            r#"{"n": 1}"#,
            (ALL.id, ALL.secret),
            None,
        )
        .await;
    let echo = echoed(posted.send().await.expect("response")).await;
    assert_eq!(echo["event"]["body"], r#"{"n": 1}"#, "{echo}");

    let wrong = gw
        .signed(get.clone(), path, "", (ALL.id, "not-it"), None)
        .await;
    refused(
        wrong.send().await.expect("response"),
        "InvalidSignatureException",
    )
    .await;
    let other = gw
        .signed(get.clone(), path, "", (WEB_ONLY.id, WEB_ONLY.secret), None)
        .await;
    let body = refused(
        other.send().await.expect("response"),
        "AccessDeniedException",
    )
    .await;
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.contains("lambda:InvokeFunctionUrl")),
        "{body}"
    );
    // A function URL with url.auth NONE needs no signature, under --http-auth too.
    let open = gw.http.get(gw.url("/api/")).send().await.expect("response");
    assert_eq!(open.status(), 200);
}

#[tokio::test]
async fn aws_iam_on_a_gateway_without_http_auth_refuses_every_request_and_says_why() {
    let gw = Gateway::start(false, false).await;
    let status = gw.env.wait_status("iam", |s| s.reason.is_some()).await;
    assert_eq!(status.state, natsfn_protocol::FunctionState::Ready);
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("AWS_IAM") && reason.contains("--http-auth"),
        "{reason}"
    );
    // Even a signature a --http-auth gateway would take is refused: nothing checks it.
    let request = gw
        .signed(
            reqwest::Method::GET,
            "/iam/",
            "",
            (ALL.id, ALL.secret),
            None,
        )
        .await;
    let body = refused(
        request.send().await.expect("response"),
        "AccessDeniedException",
    )
    .await;
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.contains("--http-auth")),
        "{body}"
    );
    // The function itself runs, and its NONE neighbours answer.
    assert_eq!(
        gw.http
            .get(gw.url("/api/"))
            .send()
            .await
            .expect("response")
            .status(),
        200
    );
    // Without --http-auth the Invoke API stays open, as before.
    let open = gw.http.post(gw.url(INVOKE_API)).body("{}").send().await;
    assert_eq!(open.expect("response").status(), 200);
}

#[tokio::test]
async fn cors_preflights_are_answered_by_the_gateway_for_allowed_origins_only() {
    let gw = Gateway::start(false, false).await;
    let preflight = |origin: &str, method: &str| {
        gw.http
            .request(reqwest::Method::OPTIONS, gw.url("/web/items"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "Content-Type")
            .send()
    };
    let allowed = preflight(ALLOWED_ORIGIN, "POST").await.expect("response");
    // Answered by the gateway: the function (which fails on OPTIONS) never ran.
    assert_eq!(allowed.status(), 200, "{allowed:?}");
    assert_eq!(header_of(&allowed, "x-amzn-requestid"), None);
    let expect = [
        ("access-control-allow-origin", ALLOWED_ORIGIN),
        ("access-control-allow-methods", "GET,POST"),
        ("access-control-allow-headers", "content-type,x-custom"),
        ("access-control-max-age", "600"),
        ("vary", "Origin"),
    ];
    for (name, value) in expect {
        assert_eq!(header_of(&allowed, name).as_deref(), Some(value), "{name}");
    }
    for (origin, method) in [
        ("https://elsewhere.example", "POST"),
        (ALLOWED_ORIGIN, "DELETE"),
    ] {
        let refused = preflight(origin, method).await.expect("response");
        assert_eq!(refused.status(), 200, "{refused:?}");
        assert_eq!(header_of(&refused, "x-amzn-requestid"), None);
        assert_eq!(
            header_of(&refused, "access-control-allow-origin"),
            None,
            "{origin} {method}"
        );
        assert_eq!(header_of(&refused, "access-control-allow-methods"), None);
    }

    // Actual requests: the function runs; an allowed origin gets the CORS headers
    // (the configured ones, not the function's), a refused one none.
    let actual = |origin: &'static str| {
        gw.http
            .get(gw.url("/web/items"))
            .header("origin", origin)
            .send()
    };
    let response = actual(ALLOWED_ORIGIN).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_of(&response, "access-control-allow-origin").as_deref(),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(
        header_of(&response, "access-control-expose-headers").as_deref(),
        Some("x-custom")
    );
    let response = actual("https://elsewhere.example").await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_of(&response, "access-control-allow-origin").as_deref(),
        Some("https://set-by-the-function.example"),
        "a refused origin's response is the function's own"
    );
    assert_eq!(header_of(&response, "access-control-expose-headers"), None);
}

#[tokio::test]
async fn tls_serves_the_gateway_and_boto3_calls_it_with_a_key() {
    let gw = Gateway::start(true, true).await;
    let echo = echoed(gw.http.get(gw.url("/api/")).send().await.expect("response")).await;
    assert_eq!(
        echo["event"]["headers"]["x-forwarded-proto"], "https",
        "{echo}"
    );
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(gw.base.replacen("https://", "http://", 1) + "/api/")
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    let ca = gw.dir.path().join("gateway.crt");
    let calls = json!([
        {"name": "right", "key": ALL.id, "secret": ALL.secret, "function": "api"},
        {"name": "wrong", "key": ALL.id, "secret": "not-the-secret", "function": "api"},
    ]);
    let out = python_json(
        "boto3_auth.py",
        &[&gw.base, &dir_str(&ca), &calls.to_string()],
    )
    .await;
    assert_eq!(out["right"]["status"], 200, "{out}");
    assert_eq!(out["wrong"]["code"], "InvalidSignatureException", "{out}");
}

/// The issue's case: one process at one address opens 4,200 connections that each send
/// half a request head. It keeps 256 of them (its address's share); the others are closed at once, and a
/// client at another address is served at once.
#[tokio::test]
async fn one_client_cannot_take_every_connection() {
    let gw = Gateway::start(false, false).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let half_head = b"GET /web/ HTTP/1.1\r\nHost: x\r\n";
    let mut held = Vec::new();
    let opened = Instant::now();
    for _ in 0..4_200 {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        // A closed one may refuse the write: that is the point.
        let _ = stream.write_all(half_head).await;
        held.push(stream);
    }
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let started = Instant::now();
    let response = other.get(gw.url("/api/")).send().await.expect("response");
    let waited = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(
        waited < Duration::from_secs(3),
        "another client waited {waited:?}"
    );

    // The slow client's connections past its share were closed at once: before the
    // 10 s a head may take, only they are.
    let until = tokio::time::Instant::from_std(opened + Duration::from_secs(8));
    let reads = held.iter_mut().map(|stream| async move {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout_at(until, stream.read(&mut byte)).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    });
    let closed = futures::future::join_all(reads)
        .await
        .into_iter()
        .filter(|closed| *closed)
        .count();
    // 256 for the address, less the test's own keep-alive connections from it.
    let kept = 4_200 - closed;
    assert!(
        (250..=256).contains(&kept),
        "{kept} of 4,200 connections kept ({:?} after the first was opened)",
        opened.elapsed()
    );
    // Once it lets go, its share is its own again.
    drop(held);
    eventually("the slow client's address to be served again", || {
        let request = gw.http.get(gw.url("/api/")).send();
        async move { request.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
}
