//! Quick functions get their next invocation written to the worker while the current
//! one runs. Nothing of Lambda's model may change: one invocation at a time per
//! worker, each answered on its own, each timed from its own start, none lost when a
//! worker dies with one waiting behind the running one.

use serde_json::json;

use crate::harness::*;

const HANDLER: &str = r#"
import os, time
def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("exit"):
        os._exit(3)
    return {"echo": event.get("n"), "remaining": context.get_remaining_time_in_millis(), "worker": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]}
"#;

async fn one_worker(env: &Env, name: &str, timeout_ms: u64) -> tempfile::TempDir {
    let code = code_dir(&[("app.py", HANDLER)]);
    env.bind_ready(
        name,
        Binding::python("app.handler", &code)
            .timeout_ms(timeout_ms)
            .pool(1, 1),
    )
    .await;
    // Quick invocations make the function one that is pipelined.
    for n in 0..20 {
        assert_eq!(
            json(&env.invoke(name, json!({"n": n}).to_string()).await)["echo"],
            n
        );
    }
    code
}

/// Publishes the events on one connection, in order, and collects the replies.
async fn concurrently(
    env: &Env,
    name: &str,
    events: Vec<serde_json::Value>,
) -> Vec<async_nats::Message> {
    let requests = events.into_iter().map(|event| {
        let client = env.client.clone();
        let subject = format!("natsfn.invoke.{name}");
        async move {
            let request = async_nats::Request::new()
                .payload(event.to_string().into())
                .timeout(Some(DEADLINE));
            client
                .send_request(subject, request)
                .await
                .expect("request")
        }
    });
    futures::future::join_all(requests).await
}

#[tokio::test]
async fn every_concurrent_request_gets_its_own_answer_from_one_worker() {
    let env = Env::start().await;
    let _code = one_worker(&env, "pipe", 3000).await;
    // Within the queue limit (64 per worker): more would be answered 429.
    let replies = concurrently(&env, "pipe", (0..60).map(|n| json!({"n": n})).collect()).await;
    let mut workers = std::collections::HashSet::new();
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(error_code(reply), None, "{reply:?}");
        let body = json(reply);
        assert_eq!(body["echo"], n, "reply {n} answered another request");
        workers.insert(body["worker"].as_str().expect("worker").to_owned());
    }
    assert_eq!(workers.len(), 1, "pool.max 1 must mean one worker");
}

#[tokio::test]
async fn an_invocation_waiting_behind_one_that_crashes_is_run_not_lost() {
    let env = Env::start().await;
    let _code = one_worker(&env, "pipecrash", 3000).await;
    let replies = concurrently(
        &env,
        "pipecrash",
        vec![
            json!({"n": "a", "sleep": 0.2, "exit": true}),
            json!({"n": "b"}),
        ],
    )
    .await;
    assert_eq!(error_code(&replies[0]), Some(502), "{:?}", replies[0]);
    assert_eq!(error_code(&replies[1]), None, "{:?}", replies[1]);
    assert_eq!(json(&replies[1])["echo"], "b");
}

#[tokio::test]
async fn a_waiting_invocation_is_timed_from_its_own_start() {
    let env = Env::start().await;
    let _code = one_worker(&env, "pipetime", 2000).await;
    // b waits 600 ms behind a, then sleeps 600 ms itself: counted from its own start
    // it has about 1400 ms of its 2000 left, counted from dispatch about 800.
    let replies = concurrently(
        &env,
        "pipetime",
        vec![
            json!({"n": "a", "sleep": 0.6}),
            json!({"n": "b", "sleep": 0.6}),
        ],
    )
    .await;
    for reply in &replies {
        assert_eq!(error_code(reply), None, "{reply:?}");
    }
    let remaining = json(&replies[1])["remaining"].as_u64().expect("remaining");
    assert!(
        remaining > 1100,
        "b was given only {remaining} ms of its 2000 after 600 ms of sleep"
    );
}
