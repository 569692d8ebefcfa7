//! The queue in front of a function's workers: deadlines and limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::json;

use crate::harness::*;

const SLOW: &str = "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return event.get('n')\n";

async fn one_slow_worker(env: &Env, name: &str) -> tempfile::TempDir {
    let code = code_dir(&[("app.py", SLOW)]);
    env.bind_ready(name, Binding::python("app.handler", &code).pool(1, 1))
        .await;
    code
}

#[tokio::test]
async fn a_queued_invocation_past_its_callers_deadline_is_dropped_not_run() {
    let env = Env::start().await;
    let _code = one_slow_worker(&env, "late").await;
    let subject = "natsfn.invoke.late";
    // Published in this order on one connection, so they reach the node in this order.
    let mut inboxes = Vec::new();
    for (event, deadline_ms) in [
        // a runs 300 ms; b, queued behind it, is given up on by its caller after 100 ms.
        (json!({"n": "a", "sleep": 0.3}), None),
        (json!({"n": "b"}), Some(100)),
        (json!({"n": "c"}), None),
    ] {
        let inbox = env.client.new_inbox();
        let replies = env
            .client
            .subscribe(inbox.clone())
            .await
            .expect("subscribe");
        let mut headers = HeaderMap::new();
        if let Some(ms) = deadline_ms {
            let at = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
                + Duration::from_millis(ms);
            headers.insert("Natsfn-Deadline-Ms", at.as_millis().to_string().as_str());
        }
        env.client
            .publish_with_reply_and_headers(subject, inbox, headers, event.to_string().into())
            .await
            .expect("publish");
        inboxes.push(replies);
    }
    let c = tokio::time::timeout(DEADLINE, inboxes[2].next()).await;
    // One worker, in order: by the time c is answered, a was and b was run or dropped.
    assert_eq!(json(&c.expect("c answered").expect("reply")), json!("c"));
    let a = tokio::time::timeout(DEADLINE, inboxes[0].next()).await;
    assert_eq!(json(&a.expect("a answered").expect("reply")), json!("a"));
    let b = tokio::time::timeout(Duration::from_millis(1), inboxes[1].next()).await;
    assert!(b.is_err(), "b was run after its caller's deadline: {b:?}");
}

/// Notes each event's `n` in `$MARKS/ran` as it starts; one with `hold` then waits
/// (at most 30 s) until `$MARKS/release` exists.
const GATED: &str = r#"
import os, time
def handler(event, context):
    marks = os.environ["MARKS"]
    with open(os.path.join(marks, "ran"), "a") as f:
        f.write(event["n"] + "\n")
    if event.get("hold"):
        release = os.path.join(marks, "release")
        for _ in range(3000):
            if os.path.exists(release):
                break
            time.sleep(0.01)
    return event["n"]
"#;

/// `natsfn invoke --timeout` tells the node when it stops waiting: an invocation it
/// gave up on while it was queued behind a busy worker is never run.
#[tokio::test]
async fn natsfn_invoke_sends_its_timeout_as_the_deadline_and_a_call_it_gave_up_on_is_not_run() {
    // Unsandboxed: the test observes runs through a shared directory ($MARKS) and tests
    // queueing semantics, not isolation.
    let server = NatsServer::start();
    let node = Node::start_with(&server, "node-a", &["--isolation", "none"]);
    let env = Env::with(server, node).await;
    let code = code_dir(&[("app.py", GATED)]);
    let marks = tempfile::tempdir().expect("marks dir");
    env.bind_ready(
        "gated",
        Binding::python("app.handler", &code)
            .env("MARKS", dir_str(marks.path()))
            .pool(1, 1)
            .queue(4),
    )
    .await;
    let ran = marks.path().join("ran");
    let runs = || std::fs::read_to_string(&ran).unwrap_or_default();

    // a holds the only worker until released.
    let held = env.client.new_inbox();
    let mut held_reply = env.client.subscribe(held.clone()).await.expect("subscribe");
    env.client
        .publish_with_reply(
            "natsfn.invoke.gated",
            held,
            json!({"n": "a", "hold": true}).to_string().into(),
        )
        .await
        .expect("publish a");
    eventually("a to run", || async { (runs() == "a\n").then_some(()) }).await;

    // b waits in the queue behind a until natsfn invoke gives up on it.
    let out = run_cli(
        &env.server,
        &["invoke", "gated", r#"{"n": "b"}"#, "--timeout", "300ms"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "b was answered: {out:?}");
    assert!(stderr.contains("no reply from gated"), "{stderr}");

    std::fs::write(marks.path().join("release"), "").expect("release a");
    let a = tokio::time::timeout(DEADLINE, held_reply.next()).await;
    assert_eq!(json(&a.expect("a answered").expect("reply")), json!("a"));
    // One worker, in order: once c is answered, b was run or dropped.
    let c = env.invoke("gated", r#"{"n": "c"}"#).await;
    assert_eq!(json(&c), json!("c"));
    assert_eq!(
        runs(),
        "a\nc\n",
        "b ran after natsfn invoke stopped waiting"
    );
}

#[tokio::test]
async fn a_bad_deadline_header_is_a_400() {
    let env = Env::start().await;
    let _code = one_slow_worker(&env, "baddeadline").await;
    let mut headers = HeaderMap::new();
    headers.insert("Natsfn-Deadline-Ms", "tomorrow");
    let request = async_nats::Request::new()
        .headers(headers)
        .payload("{}".into())
        .timeout(Some(DEADLINE));
    let reply = env
        .client
        .send_request("natsfn.invoke.baddeadline", request)
        .await
        .expect("request");
    assert_eq!(error_code(&reply), Some(400));
}

#[tokio::test]
async fn a_chosen_request_id_is_adopted_and_a_bad_one_is_a_400() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    print('line of', context.aws_request_id)\n    return context.aws_request_id\n",
    )]);
    env.bind_ready("chosen", Binding::python("app.handler", &code))
        .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.chosen")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let send = |id: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert("Natsfn-Request-Id", id);
        let request = async_nats::Request::new()
            .headers(headers)
            .payload("{}".into())
            .timeout(Some(DEADLINE));
        env.client.send_request("natsfn.invoke.chosen", request)
    };
    let id = "0b9e1c52-6d3f-4a8e-9f1a-2c3d4e5f6a7b";
    let reply = send(id).await.expect("request");
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(json(&reply), json!(id));
    assert_eq!(header(&reply, "Natsfn-Request-Id").as_deref(), Some(id));
    let line = tokio::time::timeout(DEADLINE, logs.next())
        .await
        .expect("a log line")
        .expect("log stream");
    assert_eq!(header(&line, "Natsfn-Request-Id").as_deref(), Some(id));

    let refused = send("not an id").await.expect("request");
    assert_eq!(error_code(&refused), Some(400), "{refused:?}");
    assert_ne!(
        header(&refused, "Natsfn-Request-Id").as_deref(),
        Some("not an id")
    );
}

#[tokio::test]
async fn past_the_queue_limit_requests_get_429_and_the_rest_are_served() {
    let env = Env::start().await;
    let _code = one_slow_worker(&env, "busy").await;
    // One running and 64 queued (pool.max 1) fill the function; the rest are refused.
    let requests = (0..75).map(|n| {
        let client = env.client.clone();
        async move {
            request(
                &client,
                "natsfn.invoke.busy",
                json!({"n": n, "sleep": 0.02}).to_string().into(),
            )
            .await
        }
    });
    let replies = futures::future::join_all(requests).await;
    let refused = replies
        .iter()
        .filter(|r| error_code(r) == Some(429))
        .count();
    let served = replies.iter().filter(|r| error_code(r).is_none()).count();
    assert!(refused >= 1, "nothing was refused");
    assert_eq!(refused + served, 75, "other errors: {replies:?}");
    let refusal = replies
        .iter()
        .find(|r| error_code(r) == Some(429))
        .expect("a 429");
    assert_eq!(json(refusal)["errorType"], "TooManyRequestsException");
}
