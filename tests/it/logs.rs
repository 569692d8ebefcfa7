//! What handlers print becomes log lines of their invocation, on natsfn.logs.<function>,
//! without ever disturbing the replies.

use std::collections::HashSet;

use futures::StreamExt;
use serde_json::json;

use crate::harness::*;

const NOISY: &str = r#"
import sys
def handler(event, context):
    for i in range(event["lines"]):
        print('{"Response": {"id": "%s", "payload": "fake"}} line %d' % (context.aws_request_id, i))
        print("err line %d \x00\xff" % i, file=sys.stderr)
    sys.stdout.write("no newline at the end")
    return {"done": event["lines"]}
"#;

#[tokio::test]
async fn printed_lines_reach_the_logs_subject_with_the_request_id_and_leave_replies_intact() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", NOISY)]);
    env.bind_ready(
        "noisy",
        json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())},
               "pool": {"min": 1, "max": 1}}),
    )
    .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.noisy")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");

    let lines = 500;
    let reply = env
        .invoke("noisy", json!({"lines": lines}).to_string())
        .await;
    assert_eq!(error_code(&reply), None);
    assert_eq!(json(&reply), json!({"done": lines}));
    let request_id = header(&reply, "Natsfn-Request-Id").expect("request id");

    let mut stdout = HashSet::new();
    let mut stderr = HashSet::new();
    while stdout.len() < lines + 1 || stderr.len() < lines {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} stdout / {} stderr lines arrived",
                    stdout.len(),
                    stderr.len()
                )
            })
            .expect("log stream");
        assert_eq!(
            header(&msg, "Natsfn-Request-Id").as_deref(),
            Some(request_id.as_str())
        );
        let text = String::from_utf8_lossy(&msg.payload).into_owned();
        match header(&msg, "Natsfn-Log-Stream").as_deref() {
            Some("stdout") => stdout.insert(text),
            Some("stderr") => stderr.insert(text),
            other => panic!("log line without a stream header: {other:?}"),
        };
    }
    assert!(stdout.contains(&format!(
        r#"{{"Response": {{"id": "{request_id}", "payload": "fake"}}}} line {}"#,
        lines - 1
    )));
    assert!(stdout.contains("no newline at the end"));
    assert!(stderr.iter().any(|l| l.starts_with("err line 0")));

    // The next invocation is just as clean.
    let reply = env.invoke("noisy", json!({"lines": 3}).to_string()).await;
    assert_eq!(json(&reply), json!({"done": 3}));
}

#[tokio::test]
async fn a_publish_without_a_reply_subject_still_runs_the_function() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    print('ran for', event['marker'])\n    return 1\n",
    )]);
    env.bind_ready(
        "fire",
        json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())},
               "subjects": ["events.fire"]}),
    )
    .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.fire")
        .await
        .expect("subscribe");
    env.client
        .publish("events.fire", r#"{"marker": "m-42"}"#.into())
        .await
        .expect("publish");
    let line = tokio::time::timeout(DEADLINE, logs.next())
        .await
        .expect("the function ran")
        .expect("log stream");
    assert_eq!(String::from_utf8_lossy(&line.payload), "ran for m-42");
}
