//! Payload sizes up to the server's max_payload pass intact; beyond it, clear errors.

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::harness::*;

const ECHO: &str = "def handler(event, context):\n    return event\n";
const BIG_RESULT: &str = "def handler(event, context):\n    return 'x' * event\n";

async fn env_with(name: &str, source: &str) -> (Env, tempfile::TempDir) {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", source)]);
    env.bind_ready(name, Binding::python("app.handler", &code))
        .await;
    (env, code)
}

#[tokio::test]
async fn a_payload_just_under_max_payload_round_trips_intact() {
    let (env, _code) = env_with("echo", ECHO).await;
    let max = env.client.server_info().max_payload;
    // A JSON string event, echoed byte for byte; room left for the reply's headers.
    let body: String = (0..max - 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let event = format!("\"{}\"", &body[2..]);
    let reply = env.invoke("echo", event.clone()).await;
    assert_eq!(error_code(&reply), None);
    assert_eq!(reply.payload.len(), event.len());
    assert!(
        reply.payload == event.as_bytes(),
        "the echoed payload differs"
    );
}

#[tokio::test]
async fn a_payload_over_max_payload_is_refused_clearly_not_hung() {
    let (env, _code) = env_with("echo", ECHO).await;
    let max = env.client.server_info().max_payload;
    let event = format!("\"{}\"", "y".repeat(max + 10));
    let result = tokio::time::timeout(
        DEADLINE / 4,
        env.client.request("natsfn.invoke.echo", event.into()),
    )
    .await
    .expect("an oversized request must fail, not hang");
    let err = result.expect_err("an oversized request cannot succeed");
    assert!(err.to_string().to_lowercase().contains("payload"), "{err}");

    // Through stdin: an argument that long is beyond what exec allows.
    let mut cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .args(["--nats", &env.server.url, "invoke", "echo", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run natsfn invoke");
    let mut stdin = cli.stdin.take().expect("stdin");
    stdin
        .write_all("z".repeat(max + 1).as_bytes())
        .await
        .expect("write event");
    drop(stdin);
    let out = cli.wait_with_output().await.expect("natsfn invoke output");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("accepts at most {max}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_result_over_max_payload_is_answered_413() {
    let (env, _code) = env_with("big", BIG_RESULT).await;
    let max = env.client.server_info().max_payload;
    let reply = env.invoke("big", (max + 1).to_string()).await;
    assert_eq!(error_code(&reply), Some(413));
    assert_eq!(json(&reply)["errorType"], "Function.ResponseSizeTooLarge");
    // The worker is fine afterwards.
    let reply = env.invoke("big", "3").await;
    assert_eq!(json(&reply), json!("xxx"));
}
