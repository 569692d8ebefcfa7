//! runtime "provided": a code directory's own `bootstrap` speaks the AWS Lambda Runtime
//! API (2018-06-01) to an endpoint its WorkerActor serves. Driven by the classic bash +
//! curl bootstrap of AWS's custom runtime tutorial, by the official Python runtime
//! interface client (awslambdaric) and by a Rust function on the `lambda_runtime`
//! crate; and the endpoint's answers to misuse, with reqwest playing the runtime.
//! What every runtime does alike (errors, timeouts, a dying worker, init errors, the
//! context) is in conformance, where `provided` runs awslambdaric.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use natsfn_protocol::FunctionState;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// AWS's tutorial bootstrap, plus its error path: a handler that fails is reported on
/// `/error` (the tutorial leaves that to the reader).
const BASH_BOOTSTRAP: &str = r#"#!/bin/bash
set -euo pipefail

# Initialization - load function handler
source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"

# Processing
while true
do
  HEADERS="$(mktemp)"
  # Get an event. The HTTP request will block until one is received
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")

  # Extract request ID by scraping response headers received above
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$HEADERS"

  # Run the handler function from the script
  if RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA"); then
    curl -sS "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response" -d "$RESPONSE"
  else
    curl -sS "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/error" \
      -d '{"errorMessage":"the handler failed","errorType":"BashHandlerError"}'
  fi
done
"#;

const BASH_FUNCTION: &str = r#"
function handler () {
  EVENT_DATA=$1
  echo "$EVENT_DATA" 1>&2
  case "$EVENT_DATA" in
    *fail*) return 1 ;;
  esac
  echo "{\"echo\": $EVENT_DATA, \"handler\": \"$_HANDLER\", \"cwd\": \"$PWD\", \"task_root\": \"$LAMBDA_TASK_ROOT\", \"function\": \"$AWS_LAMBDA_FUNCTION_NAME\", \"memory\": \"$AWS_LAMBDA_FUNCTION_MEMORY_SIZE\", \"region\": \"$AWS_REGION\", \"greeting\": \"$GREETING\"}"
}
"#;

/// Writes `files` into a code directory, `bootstrap` executable.
fn provided_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = code_dir(files);
    make_executable(&dir.path().join("bootstrap"));
    dir
}

fn make_executable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod bootstrap");
}

fn spec(dir: &Path) -> Binding {
    Binding::provided(dir).pool(1, 1)
}

fn bash_spec(dir: &Path) -> Binding {
    spec(dir).handler("function.handler").env("GREETING", "hi")
}

fn error_type(reply: &async_nats::Message) -> String {
    json(reply)["errorType"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_tutorial_bash_bootstrap_answers_fails_and_logs_over_nats() {
    let env = Env::start().await;
    let code = provided_dir(&[
        ("bootstrap", BASH_BOOTSTRAP),
        ("function.sh", BASH_FUNCTION),
    ]);
    env.bind_ready("bashfn", bash_spec(code.path()).memory_mb(256))
        .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.bashfn")
        .await
        .expect("subscribe to logs");

    let reply = env.invoke("bashfn", r#"{"n": 1}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let out = json(&reply);
    let root = dir_str(code.path());
    assert_eq!(out["echo"], json!({"n": 1}), "{out}");
    assert_eq!(out["handler"], "function.handler");
    assert_eq!(
        out["cwd"],
        root.as_str(),
        "the worker runs in LAMBDA_TASK_ROOT"
    );
    assert_eq!(out["task_root"], root.as_str());
    assert_eq!(out["function"], "bashfn");
    assert_eq!(out["memory"], "256");
    assert_eq!(out["region"], "us-east-1");
    assert_eq!(
        out["greeting"], "hi",
        "the binding's env reaches the bootstrap"
    );

    // What the handler printed is a log line of that invocation.
    let request_id = header(&reply, "Natsfn-Request-Id").expect("request id");
    let line = tokio::time::timeout(DEADLINE, async {
        while let Some(msg) = logs.next().await {
            if msg.payload.as_ref() == br#"{"n": 1}"# {
                return msg;
            }
        }
        panic!("log subscription ended");
    })
    .await
    .expect("the handler's stderr line was published");
    assert_eq!(header(&line, "Natsfn-Request-Id"), Some(request_id));

    let reply = env.invoke("bashfn", r#"{"fail": true}"#).await;
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    assert_eq!(
        error_type(&reply),
        "BashHandlerError",
        "the body's errorType"
    );
    assert_eq!(json(&reply)["errorMessage"], "the handler failed");

    // The worker took both in its stride.
    let reply = env.invoke("bashfn", r#"{"n": 2}"#).await;
    assert_eq!(json(&reply)["echo"], json!({"n": 2}), "{reply:?}");
}

#[tokio::test]
async fn a_bootstrap_that_posts_init_error_is_a_503_with_its_reason() {
    let code = provided_dir(&[(
        "bootstrap",
        r#"#!/bin/bash
curl -sS "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/init/error" \
  -H "Lambda-Runtime-Function-Error-Type: Runtime.BashInitError" \
  -d '{"errorMessage":"cannot read the configuration","errorType":"ConfigError"}'
exit 1
"#,
    )]);
    // The header's error type wins over the body's.
    assert_init_error(
        spec(code.path()),
        "Runtime.BashInitError",
        "cannot read the configuration",
    )
    .await;
}

#[tokio::test]
async fn a_code_dir_without_a_bootstrap_is_a_503() {
    let code = code_dir(&[("function.sh", BASH_FUNCTION)]);
    assert_init_error(
        spec(code.path()),
        "Runtime.InvalidEntrypoint",
        "runtime provided:",
    )
    .await;
}

/// A bootstrap that answers every event with the `_HANDLER` it was started with.
const HANDLER_ECHO_BOOTSTRAP: &str = r#"#!/bin/bash
set -euo pipefail
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true
do
  HEADERS="$(mktemp)"
  curl -sS -o /dev/null -D "$HEADERS" "$API/next"
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$HEADERS"
  curl -sS "$API/$REQUEST_ID/response" -d "{\"handler\": \"$_HANDLER\"}"
done
"#;

/// Lambda gives a custom runtime's handler no meaning: `bootstrap` (the usual one) and
/// any other string without spaces are bound, run, and reach the bootstrap as
/// `_HANDLER`.
#[tokio::test]
async fn a_provided_handler_is_any_string_and_reaches_the_bootstrap_as_handler() {
    let env = Env::start().await;
    let code = provided_dir(&[("bootstrap", HANDLER_ECHO_BOOTSTRAP)]);
    for (name, handler) in [("plain", "bootstrap"), ("custom", "my-handler/v2:main")] {
        env.bind_ready(name, spec(code.path()).handler(handler))
            .await;
        let reply = env.invoke(name, "{}").await;
        assert_eq!(error_code(&reply), None, "{name}: {reply:?}");
        assert_eq!(json(&reply), json!({"handler": handler}), "{name}");
    }
}

/// The Python interpreter the tests use (`NATSFN_PYTHON3`, else `python3` on PATH),
/// which scripts/test installs awslambdaric for.
pub(crate) fn python3() -> PathBuf {
    let program = std::env::var("NATSFN_PYTHON3").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&program)
        .args(["-c", "import awslambdaric, sys; print(sys.executable)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "awslambdaric is not installed for {program} (scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[tokio::test]
async fn the_official_python_runtime_interface_client_sees_the_invocations_trace_id() {
    let python = python3();
    let env = Env::start().await;
    let code = provided_dir(&[
        (
            "bootstrap",
            "#!/bin/sh\nexec python3 -m awslambdaric app.handler\n",
        ),
        (
            "app.py",
            r#"
import os

def handler(event, context):
    return {"trace": os.environ.get("_X_AMZN_TRACE_ID")}
"#,
        ),
    ]);
    let bin = python.parent().expect("python's directory");
    let spec = spec(code.path())
        .handler("app.handler")
        .timeout_ms(3000)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
    env.bind_ready("ric", spec).await;

    // awslambdaric sets _X_AMZN_TRACE_ID from the Lambda-Runtime-Trace-Id header.
    let reply = env.invoke("ric", r#"{"hello": "ric"}"#).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let out = json(&reply);
    let trace = out["trace"].as_str().unwrap_or_default();
    assert!(trace.starts_with("Root=1-"), "{out}");
}

/// The echo function of examples/provided-rust, built by scripts/test.
fn rust_echo_bootstrap() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/provided-rust/release/bootstrap");
    assert!(
        path.is_file(),
        "{} is missing: scripts/test builds it (cargo build --release --manifest-path \
         examples/provided-rust/Cargo.toml --target-dir target/provided-rust)",
        path.display()
    );
    path
}

#[tokio::test]
async fn a_rust_function_on_the_lambda_runtime_crate_echoes() {
    let env = Env::start().await;
    let code = code_dir(&[]);
    std::fs::copy(rust_echo_bootstrap(), code.path().join("bootstrap")).expect("copy bootstrap");
    env.bind_ready("rustecho", spec(code.path()).pool(2, 2))
        .await;

    for n in 0..20 {
        let event = json!({"n": n, "text": "héllo"});
        let reply = env.invoke("rustecho", event.to_string()).await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
        assert_eq!(json(&reply), event);
    }
    // Many at once on two workers: each waits its turn for a /next, none is lost or
    // answered with another's result.
    let calls = (0..64).map(|n| {
        let client = env.client.clone();
        async move {
            let event = json!({"n": n});
            let reply = request(&client, "natsfn.invoke.rustecho", event.to_string().into()).await;
            (event, reply)
        }
    });
    for (event, reply) in futures::future::join_all(calls).await {
        assert_eq!(error_code(&reply), None, "{reply:?}");
        assert_eq!(json(&reply), event);
    }
}

/// A bootstrap that leaves the Runtime API to the test: it publishes its address and
/// waits to be killed.
const IDLE_BOOTSTRAP: &str = r#"#!/bin/sh
echo "api $AWS_LAMBDA_RUNTIME_API"
exec sleep 600
"#;

#[tokio::test]
async fn runtime_api_misuse_gets_lambdas_status_codes_and_the_node_keeps_serving() {
    // The test plays the runtime from its own process: a sandboxed worker's Runtime API
    // would close its connections (sandbox.rs tests that), so this node has none.
    let server = NatsServer::start();
    let node = Node::start_with(&server, "node-a", &["--isolation", "none"]);
    let mut env = Env::with(server, node).await;
    let code = provided_dir(&[("bootstrap", IDLE_BOOTSTRAP)]);
    // The bootstrap prints its AWS_LAMBDA_RUNTIME_API (its code directory is read-only).
    let mut logs = env
        .client
        .subscribe("natsfn.logs.misuse")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let revision = env
        .put_binding("misuse", spec(code.path()).timeout_ms(10_000))
        .await;
    let api = loop {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .expect("the bootstrap to print its AWS_LAMBDA_RUNTIME_API")
            .expect("log stream");
        if let Some(api) = String::from_utf8_lossy(&msg.payload).strip_prefix("api ") {
            break api.trim().to_owned();
        }
    };
    assert!(api.starts_with("127.0.0.1:"), "loopback only: {api}");
    let base = format!("http://{api}/2018-06-01/runtime");
    let http = reqwest::Client::new();
    let post = |path: String, body: Vec<u8>| {
        let request = http.post(format!("{base}{path}")).body(body);
        async move { request.send().await.expect("runtime API request") }
    };

    // Garbage on the wire, a path Lambda does not serve, an id never handed out.
    let mut raw = tokio::net::TcpStream::connect(&api).await.expect("connect");
    raw.write_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        .await
        .expect("write garbage");
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let status = http
        .get(format!("{base}/invocation/nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(status.status().as_u16(), 404);
    let status = post("/invocation/unknown-id/response".into(), b"{}".to_vec()).await;
    assert_eq!(status.status().as_u16(), 400);
    let body: Value = status.json().await.expect("Lambda's error JSON");
    assert_eq!(body["errorType"], "InvalidRequestID");

    // The first /next makes the worker ready; an invocation over NATS arrives on it.
    let next = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/invocation/next"))
            .send()
            .await
            .expect("next")
    };
    let first = tokio::spawn(next(http.clone(), base.clone()));
    env.wait_status("misuse", |s| {
        s.revision >= revision && s.state == FunctionState::Ready
    })
    .await;
    let client = env.client.clone();
    let call = tokio::spawn(async move {
        request(&client, "natsfn.invoke.misuse", r#"{"big": true}"#.into()).await
    });
    let first = first.await.expect("next task");
    assert_eq!(first.status().as_u16(), 200);
    let id = first.headers()["lambda-runtime-aws-request-id"]
        .to_str()
        .expect("request id")
        .to_owned();
    let deadline: u64 = first.headers()["lambda-runtime-deadline-ms"]
        .to_str()
        .ok()
        .and_then(|d| d.parse().ok())
        .expect("deadline ms");
    assert!(deadline > natsfn_now_ms(), "the deadline lies ahead");
    let arn = first.headers()["lambda-runtime-invoked-function-arn"]
        .to_str()
        .unwrap_or_default();
    assert!(arn.ends_with(":function:misuse"), "{arn}");
    assert!(first.headers().contains_key("lambda-runtime-trace-id"));
    assert_eq!(
        first.bytes().await.expect("event").as_ref(),
        br#"{"big": true}"#
    );

    // A second /next while one is unanswered, init/error after init.
    let early = next(http.clone(), base.clone()).await;
    assert_eq!(early.status().as_u16(), 403);
    let late_init = post("/init/error".into(), b"{}".to_vec()).await;
    assert_eq!(late_init.status().as_u16(), 403);

    // A response past the server's max_payload (1 MB here, under Lambda's 6 MB) is
    // refused, and the invocation fails as Lambda fails it.
    let too_big = post(
        format!("/invocation/{id}/response"),
        vec![b'x'; 1024 * 1024 + 1],
    )
    .await;
    assert_eq!(too_big.status().as_u16(), 413);
    let body: Value = too_big.json().await.expect("Lambda's error JSON");
    assert_eq!(body["errorType"], "RequestEntityTooLarge");
    let reply = call.await.expect("call task");
    assert_eq!(error_code(&reply), Some(500), "{reply:?}");
    assert_eq!(error_type(&reply), "Function.ResponseSizeTooLarge");
    let again = post(format!("/invocation/{id}/response"), b"{}".to_vec()).await;
    assert_eq!(again.status().as_u16(), 403, "answered already");

    // The worker and the node carry on: the next invocation is answered normally,
    // and a second answer for it is refused.
    let client = env.client.clone();
    let call = tokio::spawn(async move {
        request(&client, "natsfn.invoke.misuse", r#"{"n": 5}"#.into()).await
    });
    let second = next(http.clone(), base.clone()).await;
    let id = second.headers()["lambda-runtime-aws-request-id"]
        .to_str()
        .expect("request id")
        .to_owned();
    let ok = post(
        format!("/invocation/{id}/response"),
        br#"{"ok": 5}"#.to_vec(),
    )
    .await;
    assert_eq!(ok.status().as_u16(), 202);
    let twice = post(format!("/invocation/{id}/error"), b"{}".to_vec()).await;
    assert_eq!(twice.status().as_u16(), 403);
    let reply = call.await.expect("call task");
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!({"ok": 5}));
    assert!(
        env.node.is_running(),
        "the node survived:\n{}",
        env.node.log()
    );
}

fn natsfn_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
