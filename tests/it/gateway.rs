//! `natsfn node --http ADDR`: function URLs and the Lambda Invoke API, driven by a real
//! HTTP client (reqwest), raw sockets where a client misbehaves, and boto3.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Echoes the function URL event it got, or shapes its result after the path.
const URL_APP: &str = r#"
import base64, json
def handler(event, context):
    path = event["rawPath"]
    if path == "/custom":
        return {"statusCode": 201, "headers": {"x-custom": "yes", "content-type": "text/plain"},
                "cookies": ["a=1; Path=/", "b=2; Max-Age=60"], "body": "created"}
    if path == "/binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes([0, 255, 1, 254])).decode(), "isBase64Encoded": True}
    if path == "/plain":
        return {"hello": "world"}
    if path == "/fail":
        raise ValueError("asked to")
    if path == "/slow":
        import time
        time.sleep(1)
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"event": event, "request_id": context.aws_request_id})}
"#;

/// Invoke API target: prints a line, fails or sleeps on request, returns what it got.
const API_APP: &str = r#"
import time
def handler(event, context):
    print("invoked with", event.get("n"))
    if event.get("fail"):
        raise ValueError("asked to")
    time.sleep(event.get("sleep", 0))
    return {"got": event}
"#;

struct Gateway {
    env: Env,
    base: String,
    port: u16,
    http: reqwest::Client,
    _code: Vec<tempfile::TempDir>,
}

impl Gateway {
    async fn start() -> Gateway {
        Self::on(NatsServer::start()).await
    }

    /// A node serving `--http` on `server`, with the two test functions bound.
    async fn on(server: NatsServer) -> Gateway {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let node = Node::start_with(&server, "node-a", &["--http", &addr]);
        let env = Env::with(server, node).await;
        let url_code = code_dir(&[("app.py", URL_APP)]);
        let api_code = code_dir(&[("app.py", API_APP)]);
        env.bind_ready("web", Binding::python("app.handler", &url_code).pool(1, 2))
            .await;
        env.bind_ready("api", Binding::python("app.handler", &api_code).pool(1, 1))
            .await;
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        gateway_up(&http, &base).await;
        Gateway {
            env,
            base,
            port,
            http,
            _code: vec![url_code, api_code],
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn invocations(&self, function: &str) -> String {
        self.url(&format!("/2015-03-31/functions/{function}/invocations"))
    }

    /// The event the `web` function saw, from its echo.
    async fn echoed(&self, request: reqwest::RequestBuilder) -> Value {
        let response = request.send().await.expect("request to the gateway");
        assert_eq!(response.status(), 200, "{response:?}");
        let body: Value = serde_json::from_slice(&response.bytes().await.expect("body"))
            .expect("the echo is JSON");
        body
    }
}

fn header_of(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("body");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)))
}

/// The gateway tells the node how long it waits (its own limit, 15 min 5 s), so that a
/// node never starts an invocation the gateway has stopped waiting for.
#[tokio::test]
async fn the_gateway_sends_the_end_of_its_wait_as_the_deadline() {
    const GATEWAY_WAIT_MS: u64 = (15 * 60 + 5) * 1000;
    let (env, addr) = gateway_env(NatsServer::start()).await;
    // Stands in for a node's function: answers, and keeps the headers it got.
    let mut probe = env
        .client
        .subscribe("natsfn.invoke.probe")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let http = reqwest::Client::new();
    // The gateway serves only functions it has read a binding of: this one is bound for
    // nodes labelled as none is, and with CORS, whose preflights the gateway answers
    // itself once it has read it.
    let binding = Binding::provided(Code::dir("/nonexistent"))
        .label("serves", "nobody")
        .with("url", serde_json::json!({"cors": {"allow_origins": ["*"]}}));
    env.put_binding("probe", binding).await;
    let preflight = format!("http://{addr}/probe/");
    eventually("the gateway to read the probe's binding", || {
        let request = http
            .request(reqwest::Method::OPTIONS, &preflight)
            .header("origin", "https://example.com")
            .header("access-control-request-method", "POST")
            .send();
        async move { request.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
    };
    for url in [
        format!("http://{addr}/probe/path"),
        format!("http://{addr}/2015-03-31/functions/probe/invocations"),
    ] {
        let sent = now_ms();
        let response = tokio::spawn(http.post(&url).body("{}").send());
        let msg = tokio::time::timeout(DEADLINE, probe.next())
            .await
            .expect("the gateway's request")
            .expect("a message");
        let got = now_ms();
        let deadline: u64 = header(&msg, "Natsfn-Deadline-Ms")
            .unwrap_or_else(|| panic!("{url}: no Natsfn-Deadline-Ms in {:?}", msg.headers))
            .parse()
            .expect("Unix ms");
        assert!(
            (sent + GATEWAY_WAIT_MS..=got + GATEWAY_WAIT_MS).contains(&deadline),
            "{url}: deadline {deadline}, sent at {sent}, received at {got}"
        );
        let reply = msg.reply.expect("a reply subject");
        env.client
            .publish(reply, r#"{"ok": true}"#.into())
            .await
            .expect("answer");
        let response = response.await.expect("task").expect("response");
        assert_eq!(response.status(), 200, "{url}: {response:?}");
    }
}

#[tokio::test]
async fn a_function_url_request_becomes_a_payload_2_0_event() {
    let gw = Gateway::start().await;
    let echo = gw
        .echoed(
            gw.http
                .get(gw.url("/web/some/path?a=1&a=2&b=x%20y"))
                .header("Cookie", "c1=v1; c2=v2")
                .header("X-Repeated", "one")
                .header("x-repeated", "two")
                .header("User-Agent", "gateway-test"),
        )
        .await;
    let event = &echo["event"];
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "$default");
    assert_eq!(event["rawPath"], "/some/path");
    assert_eq!(event["rawQueryString"], "a=1&a=2&b=x%20y");
    assert_eq!(
        event["queryStringParameters"],
        json!({"a": "1,2", "b": "x y"})
    );
    assert_eq!(event["cookies"], json!(["c1=v1", "c2=v2"]));
    assert_eq!(event["headers"]["x-repeated"], "one,two");
    assert_eq!(event["headers"]["user-agent"], "gateway-test");
    assert!(event["headers"].get("cookie").is_none(), "{event}");
    assert!(event.get("body").is_none(), "{event}");
    assert_eq!(event["isBase64Encoded"], false);
    let context = &event["requestContext"];
    assert_eq!(context["http"]["method"], "GET");
    assert_eq!(context["http"]["path"], "/some/path");
    assert_eq!(context["http"]["protocol"], "HTTP/1.1");
    assert_eq!(context["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(context["http"]["userAgent"], "gateway-test");
    assert_eq!(context["domainName"], format!("127.0.0.1:{}", gw.port));
    assert_eq!(context["accountId"], "anonymous");
    assert_eq!(context["stage"], "$default");
    // The event's request id is the invocation's.
    assert_eq!(context["requestId"], echo["request_id"]);
    let epoch = context["timeEpoch"].as_u64().expect("timeEpoch");
    assert!(epoch > 1_700_000_000_000, "{context}");
    let time = context["time"].as_str().expect("time");
    assert!(time.ends_with(" +0000") && time.contains('/'), "{time}");

    // A text body stays text; the bare function path is "/".
    let echo = gw
        .echoed(gw.http.post(gw.url("/web")).body("héllo, world"))
        .await;
    assert_eq!(echo["event"]["rawPath"], "/");
    assert_eq!(echo["event"]["body"], "héllo, world");
    assert_eq!(echo["event"]["isBase64Encoded"], false);
    assert_eq!(echo["event"]["requestContext"]["http"]["method"], "POST");
    assert!(echo["event"].get("queryStringParameters").is_none());

    // A body that is not UTF-8 arrives base64-encoded.
    let echo = gw
        .echoed(
            gw.http
                .put(gw.url("/web/bin"))
                .body(vec![0u8, 159, 146, 150, 255]),
        )
        .await;
    assert_eq!(echo["event"]["isBase64Encoded"], true);
    assert_eq!(echo["event"]["body"], "AJ+Slv8=");
}

#[tokio::test]
async fn a_function_url_result_becomes_the_http_response() {
    let gw = Gateway::start().await;
    let custom = gw
        .http
        .get(gw.url("/web/custom"))
        .send()
        .await
        .expect("custom");
    assert_eq!(custom.status(), 201);
    assert_eq!(header_of(&custom, "x-custom").as_deref(), Some("yes"));
    assert_eq!(
        header_of(&custom, "content-type").as_deref(),
        Some("text/plain")
    );
    assert!(header_of(&custom, "x-amzn-requestid").is_some());
    let cookies: Vec<&str> = custom
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Max-Age=60"]);
    assert_eq!(custom.text().await.expect("body"), "created");

    let binary = gw
        .http
        .get(gw.url("/web/binary"))
        .send()
        .await
        .expect("binary");
    assert_eq!(binary.status(), 200);
    assert_eq!(
        binary.bytes().await.expect("body").as_ref(),
        [0, 255, 1, 254]
    );

    // Any other JSON result: 200 application/json, the result as the body.
    let plain = gw
        .http
        .get(gw.url("/web/plain"))
        .send()
        .await
        .expect("plain");
    assert_eq!(plain.status(), 200);
    assert_eq!(
        header_of(&plain, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(json_body(plain).await, json!({"hello": "world"}));

    // The handler's error: 502, as function URLs answer it.
    let fail = gw.http.get(gw.url("/web/fail")).send().await.expect("fail");
    assert_eq!(fail.status(), 502);

    // Nobody serves it: 404.
    let missing = gw
        .http
        .get(gw.url("/nobody/here"))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_invoke_api_answers_as_lambda_does() {
    let gw = Gateway::start().await;
    let ok = gw
        .http
        .post(gw.invocations("api"))
        .body(r#"{"n": 1}"#)
        .send()
        .await
        .expect("invoke");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        header_of(&ok, "x-amz-executed-version").as_deref(),
        Some("$LATEST")
    );
    assert!(header_of(&ok, "x-amz-function-error").is_none());
    assert_eq!(json_body(ok).await, json!({"got": {"n": 1}}));

    let failed = gw
        .http
        .post(gw.invocations("api"))
        .body(r#"{"fail": true}"#)
        .send()
        .await
        .expect("invoke");
    assert_eq!(failed.status(), 200);
    assert_eq!(
        header_of(&failed, "x-amz-function-error").as_deref(),
        Some("Unhandled")
    );
    let error = json_body(failed).await;
    assert_eq!(error["errorType"], "ValueError", "{error}");
    assert_eq!(error["errorMessage"], "asked to", "{error}");

    // Event: 202 without waiting, and the function runs.
    let mut logs = gw
        .env
        .client
        .subscribe("natsfn.logs.api")
        .await
        .expect("subscribe");
    gw.env.client.flush().await.expect("flush");
    let event = gw
        .http
        .post(gw.invocations("api"))
        .header("X-Amz-Invocation-Type", "Event")
        .body(r#"{"n": 42}"#)
        .send()
        .await
        .expect("invoke");
    assert_eq!(event.status(), 202);
    let request_id = header_of(&event, "x-amzn-requestid").expect("request id");
    // The handler's own line, past the START record that precedes it and past what
    // the earlier invocations logged (records are shipped up to 5 ms late).
    let line = loop {
        let line = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .expect("the Event invocation ran")
            .expect("log stream");
        if header(&line, "Natsfn-Log-Stream").as_deref() != Some("platform")
            && header(&line, "Natsfn-Request-Id").as_ref() == Some(&request_id)
        {
            break line;
        }
    };
    assert_eq!(String::from_utf8_lossy(&line.payload), "invoked with 42");

    let dry = gw
        .http
        .post(gw.invocations("api"))
        .header("X-Amz-Invocation-Type", "DryRun")
        .send()
        .await
        .expect("invoke");
    assert_eq!(dry.status(), 204);

    for kind in ["RequestResponse", "Event", "DryRun"] {
        let missing = gw
            .http
            .post(gw.invocations("missing"))
            .header("X-Amz-Invocation-Type", kind)
            .body("{}")
            .send()
            .await
            .expect("invoke");
        assert_eq!(missing.status(), 404, "{kind}");
        assert_eq!(
            header_of(&missing, "x-amzn-errortype").as_deref(),
            Some("ResourceNotFoundException")
        );
        let body = json_body(missing).await;
        assert_eq!(body["Type"], "User");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Function not found: arn:aws:lambda:"),
            "{body}"
        );
    }

    // A function ARN names the function too.
    let by_arn = gw
        .http
        .post(gw.invocations("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aapi"))
        .body(r#"{"n": 7}"#)
        .send()
        .await
        .expect("invoke");
    assert_eq!(by_arn.status(), 200);
    assert_eq!(json_body(by_arn).await, json!({"got": {"n": 7}}));
}

#[tokio::test]
async fn a_busy_function_is_429_too_many_requests() {
    let gw = Gateway::start().await;
    let code = code_dir(&[("app.py", API_APP)]);
    gw.env
        .bind_ready(
            "busy",
            Binding::python("app.handler", &code).pool(1, 1).queue(0),
        )
        .await;
    let mut logs = gw
        .env
        .client
        .subscribe("natsfn.logs.busy")
        .await
        .expect("subscribe");
    gw.env.client.flush().await.expect("flush");
    // pool.max 1, pool.queue 0: while one runs, the next is refused.
    let running = tokio::spawn(
        gw.http
            .post(gw.invocations("busy"))
            .body(r#"{"n": 1, "sleep": 2}"#)
            .send(),
    );
    tokio::time::timeout(DEADLINE, logs.next())
        .await
        .expect("the first invocation started")
        .expect("log stream");
    let refused = gw
        .http
        .post(gw.invocations("busy"))
        .body(r#"{"n": 2}"#)
        .send()
        .await
        .expect("invoke");
    assert_eq!(refused.status(), 429);
    assert_eq!(
        header_of(&refused, "x-amzn-errortype").as_deref(),
        Some("TooManyRequestsException")
    );
    assert_eq!(json_body(refused).await["Type"], "User");
    let first = running.await.expect("task").expect("first invoke");
    assert_eq!(first.status(), 200);
}

#[tokio::test]
async fn a_body_over_max_payload_is_413_before_it_is_sent() {
    let gw = Gateway::on(NatsServer::start_with_config("max_payload: 64KB")).await;
    let big = vec![b'x'; 100 * 1024];
    let api = gw
        .http
        .post(gw.invocations("api"))
        .body(big.clone())
        .send()
        .await
        .expect("invoke");
    assert_eq!(api.status(), 413);
    assert_eq!(
        header_of(&api, "x-amzn-errortype").as_deref(),
        Some("RequestTooLargeException")
    );
    let url = gw
        .http
        .post(gw.url("/web"))
        .body(big)
        .send()
        .await
        .expect("url");
    assert_eq!(url.status(), 413);

    // Refused on its Content-Length alone: the answer comes with no byte of the body sent.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    stream
        .write_all(b"POST /web HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        .await
        .expect("send the head");
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut answer))
        .await
        .expect("an answer before the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A chunked body (no Content-Length) is cut off at the limit.
    let chunks = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 16 * 1024]))),
    );
    let chunked = gw
        .http
        .post(gw.url("/web"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("chunked");
    assert_eq!(chunked.status(), 413);
}

#[tokio::test]
async fn a_client_sending_its_body_slowly_does_not_delay_another() {
    let gw = Gateway::start().await;
    let slow_done = Arc::new(AtomicBool::new(false));
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    let done = slow_done.clone();
    // 100 bytes, 5 every 100 ms: two seconds of body.
    let slow = tokio::spawn(async move {
        stream
            .write_all(b"POST /web HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            .await
            .expect("send the head");
        for _ in 0..20 {
            stream.write_all(b"aaaaa").await.expect("send a bit");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done.store(true, Ordering::SeqCst);
        let mut answer = vec![0u8; 64];
        let n = stream.read(&mut answer).await.expect("read");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    });
    let echo = gw
        .echoed(gw.http.post(gw.url("/web/fast")).body("quick"))
        .await;
    assert_eq!(echo["event"]["body"], "quick");
    assert!(
        !slow_done.load(Ordering::SeqCst),
        "the fast request waited for the slow client"
    );
    let answer = slow.await.expect("slow client");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn boto3_invokes_through_the_gateway() {
    let gw = Gateway::start().await;
    let out = python_json("boto3_invoke.py", &[&gw.base, "api"]).await;
    assert_eq!(out["ok"]["status"], 200, "{out}");
    assert_eq!(out["ok"]["version"], "$LATEST", "{out}");
    assert_eq!(out["ok"]["function_error"], Value::Null, "{out}");
    assert_eq!(out["ok"]["payload"], r#"{"got": {"n": 1}}"#, "{out}");
    assert_eq!(out["error"]["status"], 200, "{out}");
    assert_eq!(out["error"]["function_error"], "Unhandled", "{out}");
    let error: Value = serde_json::from_str(out["error"]["payload"].as_str().unwrap_or_default())
        .expect("error JSON");
    assert_eq!(error["errorType"], "ValueError", "{out}");
    assert_eq!(out["event"]["status"], 202, "{out}");
    assert_eq!(out["tail"]["status"], 200, "{out}");
    let log = out["tail"]["log"].as_str().unwrap_or_default();
    assert!(log.contains("invoked with 3\n"), "{out}");
    assert!(
        !log.contains("invoked with 1\n"),
        "another invocation's line: {out}"
    );
    let missing = out["missing"].as_str().unwrap_or_default();
    assert!(
        missing.starts_with(
            "ResourceNotFoundException: Function not found: arn:aws:lambda:eu-west-1:"
        ),
        "{out}"
    );
}

#[tokio::test]
async fn header_bytes_that_are_not_utf8_are_replaced_not_refused() {
    let gw = Gateway::start().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /web/raw HTTP/1.1\r\nHost: x\r\nX-Odd: a\xffb\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("send the request");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echo: Value = serde_json::from_str(body).expect("the echo");
    assert_eq!(echo["event"]["headers"]["x-odd"], "a\u{fffd}b");
}
