//! What handlers print becomes log lines of their invocation, on natsfn.logs.<function>,
//! without ever disturbing the replies; Lambda's START/END/REPORT lines frame each
//! invocation; the NATSFN_LOGS stream keeps them for `natsfn logs`.

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
    env.bind_ready("noisy", Binding::python("app.handler", &code).pool(1, 1))
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
            Some("platform") => continue,
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
        Binding::python("app.handler", &code).subjects(["events.fire"]),
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
    let lines = lines_until_report(&mut logs, None).await;
    assert!(lines.iter().any(|l| l.text == "ran for m-42"), "{lines:?}");
}

/// One line of a log record (a platform record holds several).
#[derive(Debug)]
struct Line {
    request_id: String,
    stream: String,
    text: String,
}

/// The lines that arrive until the REPORT of `request_id` (of any request if `None`).
async fn lines_until_report(
    logs: &mut async_nats::Subscriber,
    request_id: Option<&str>,
) -> Vec<Line> {
    let mut lines = Vec::new();
    loop {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .unwrap_or_else(|_| panic!("no REPORT for {request_id:?}; lines so far: {lines:?}"))
            .expect("log stream");
        let id = header(&msg, "Natsfn-Request-Id").unwrap_or_default();
        let stream = header(&msg, "Natsfn-Log-Stream").unwrap_or_default();
        let text = String::from_utf8_lossy(&msg.payload).into_owned();
        let parts: Vec<String> = if stream == "platform" {
            text.lines().map(str::to_owned).collect()
        } else {
            vec![text]
        };
        for text in parts {
            let done = text.starts_with("REPORT RequestId: ") && request_id.is_none_or(|r| id == r);
            lines.push(Line {
                request_id: id.clone(),
                stream: stream.clone(),
                text,
            });
            if done {
                return lines;
            }
        }
    }
}

/// The fields of a REPORT line, by name (`Duration` → `2.26 ms`).
fn report_fields(line: &str) -> std::collections::HashMap<String, String> {
    line.split('\t')
        .skip(1)
        .filter_map(|field| field.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn number(fields: &std::collections::HashMap<String, String>, name: &str, unit: &str) -> f64 {
    let value = fields
        .get(name)
        .unwrap_or_else(|| panic!("REPORT without {name}: {fields:?}"));
    value
        .strip_suffix(unit)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name}: {value:?} is not a number of {unit}"))
}

const FRAMED: &str = r#"
def handler(event, context):
    if event.get("alloc_mb"):
        # bytes * n writes every byte: the memory is resident, not just reserved.
        block = b"x" * (event["alloc_mb"] * 1024 * 1024)
        del block
    if not event.get("quiet"):
        print("hello from", context.aws_request_id)
    return "ok"
"#;

/// The lines of one invocation: START, the handler's own, END, REPORT; the REPORT's
/// fields.
async fn invoke_framed(
    env: &Env,
    logs: &mut async_nats::Subscriber,
    event: serde_json::Value,
    printed: bool,
) -> (std::collections::HashMap<String, String>, bool) {
    let reply = env.invoke("framed", event.to_string()).await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let cold = header(&reply, "Natsfn-Cold-Start").as_deref() == Some("true");
    let id = header(&reply, "Natsfn-Request-Id").expect("request id");
    let lines = lines_until_report(logs, Some(&id)).await;
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let mut expected = vec![format!("START RequestId: {id} Version: $LATEST")];
    if printed {
        expected.push(format!("hello from {id}"));
    }
    expected.push(format!("END RequestId: {id}"));
    assert_eq!(texts.len(), expected.len() + 1, "{lines:?}");
    assert_eq!(texts[..expected.len()], expected, "{lines:?}");
    let report = texts[expected.len()];
    assert!(
        report.starts_with(&format!("REPORT RequestId: {id}\tDuration: ")),
        "{report}"
    );
    for line in &lines {
        assert_eq!(line.request_id, id, "{line:?}");
        let stream = if line.text.starts_with("hello") {
            "stdout"
        } else {
            "platform"
        };
        assert_eq!(line.stream, stream, "{line:?}");
    }
    (report_fields(report), cold)
}

#[tokio::test]
async fn start_end_and_report_frame_each_invocation_with_its_duration_and_memory() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", FRAMED)]);
    env.bind_ready(
        "framed",
        Binding::python("app.handler", &code)
            .memory_mb(256)
            .pool(0, 1),
    )
    .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.framed")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");

    // Cold: the worker starts for it, and REPORT says how long its init took.
    let (cold, was_cold) = invoke_framed(&env, &mut logs, json!({}), true).await;
    assert!(was_cold, "min 0: the first invocation starts a worker");
    let init = number(&cold, "Init Duration", "ms");
    assert!(init > 0.0 && init < 10_000.0, "{cold:?}");

    // Warm, printing nothing: START, END and REPORT still, without Init Duration.
    let (warm, was_cold) = invoke_framed(&env, &mut logs, json!({"quiet": true}), false).await;
    assert!(!was_cold);
    assert!(!warm.contains_key("Init Duration"), "{warm:?}");
    for report in [&cold, &warm] {
        let duration = number(report, "Duration", "ms");
        let billed = number(report, "Billed Duration", "ms");
        assert!(duration > 0.0 && duration < 3_000.0, "{report:?}");
        // Billed is the duration rounded up to the millisecond (Duration has two
        // decimals of its own rounding).
        assert_eq!(billed, billed.round(), "{report:?}");
        assert!(billed >= duration.floor().max(1.0), "{report:?}");
        assert!(billed <= duration.ceil() + 1.0, "{report:?}");
        assert_eq!(
            report.get("Memory Size").map(String::as_str),
            Some("256 MB")
        );
    }
    let small = number(&warm, "Max Memory Used", "MB");
    assert!((1.0..256.0).contains(&small), "{warm:?}");

    // A handler that touches 50 MB (and frees it before returning) peaked higher.
    let (big, _) = invoke_framed(&env, &mut logs, json!({"alloc_mb": 50}), true).await;
    let used = number(&big, "Max Memory Used", "MB");
    assert!(
        used >= small + 40.0,
        "{small} MB, then {used} MB after 50 MB"
    );
    assert!(used < 256.0, "{big:?}");
    // The slower invocation's duration shows it.
    assert!(number(&big, "Duration", "ms") > number(&warm, "Duration", "ms"));
}

async fn natsfn_logs(env: &Env, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .arg("--nats")
        .arg(&env.server.url)
        .arg("logs")
        .args(args)
        .output()
        .await
        .expect("run natsfn logs");
    assert!(
        out.status.success(),
        "natsfn logs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const MARKED: &str =
    "def handler(event, context):\n    print('marker', event['marker'])\n    return 1\n";

/// Invokes the function `marked` with `marker` and waits for its REPORT; its request id.
async fn invoke_marked(env: &Env, logs: &mut async_nats::Subscriber, marker: &str) -> String {
    let reply = env
        .invoke("marked", json!({ "marker": marker }).to_string())
        .await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    let id = header(&reply, "Natsfn-Request-Id").expect("request id");
    lines_until_report(logs, Some(&id)).await;
    id
}

/// The printed lines of `out` (the part after the timestamp) that name `id`, in order.
fn printed_for(out: &str, id: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(id))
        .map(|l| {
            let (at, rest) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("no timestamp: {l:?}"));
            assert!(
                at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
                "not an RFC 3339 time: {l:?}"
            );
            rest.to_owned()
        })
        .collect()
}

#[tokio::test]
async fn natsfn_logs_shows_history_bounded_by_since_and_still_after_a_node_restart() {
    let mut env = Env::start().await;
    let code = code_dir(&[("app.py", MARKED)]);
    env.bind_ready("marked", Binding::python("app.handler", &code))
        .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.marked")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let old = invoke_marked(&env, &mut logs, "old-one").await;
    // Not synchronisation: the old record must be older than --since below.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let new = invoke_marked(&env, &mut logs, "new-one").await;

    let recent = natsfn_logs(&env, &["marked", "--since", "2s"]).await;
    assert!(recent.contains("marker new-one"), "{recent}");
    assert!(!recent.contains("marker old-one"), "{recent}");
    assert!(!recent.contains(&old), "{recent}");

    // A new node on the same server: the history is in the stream, not the node.
    env.node.terminate();
    assert!(env.node.exited().await.success());
    env.node = Node::start(&env.server, "node-b");
    env.wait_status("marked", |s| {
        s.node == "node-b" && s.state == natsfn_protocol::FunctionState::Ready
    })
    .await;
    let all = natsfn_logs(&env, &["marked"]).await;
    for (id, marker) in [(&old, "old-one"), (&new, "new-one")] {
        let lines = printed_for(&all, id);
        assert_eq!(lines.len(), 4, "{all}");
        assert_eq!(lines[0], format!("START RequestId: {id} Version: $LATEST"));
        assert_eq!(lines[1], format!("{id}\tmarker {marker}"));
        assert_eq!(lines[2], format!("END RequestId: {id}"));
        assert!(
            lines[3].starts_with(&format!("REPORT RequestId: {id}\tDuration: ")),
            "{all}"
        );
    }
    assert!(all.find(&old) < all.find(&new), "oldest first: {all}");
    // A function with no history prints nothing and ends.
    assert_eq!(natsfn_logs(&env, &["nobody"]).await, "");
}

#[tokio::test]
async fn natsfn_logs_follow_prints_what_is_logged_after_it_started() {
    use tokio::io::AsyncBufReadExt;

    let env = Env::start().await;
    let code = code_dir(&[("app.py", MARKED)]);
    env.bind_ready("marked", Binding::python("app.handler", &code))
        .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.marked")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    invoke_marked(&env, &mut logs, "before").await;

    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .arg("--nats")
        .arg(&env.server.url)
        .args(["logs", "marked", "-f"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run natsfn logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut read_until = async |marker: &str| {
        tokio::time::timeout(DEADLINE, async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if line.ends_with(marker) {
                    return line;
                }
            }
            panic!("natsfn logs -f ended before printing {marker:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("natsfn logs -f did not print {marker:?}"))
    };
    // The history first: once it is printed, the consumer is reading.
    read_until("marker before").await;
    let id = invoke_marked(&env, &mut logs, "after").await;
    let line = read_until("marker after").await;
    assert!(line.contains(&format!("\t{id}\t")), "{line}");
    read_until(&format!("END RequestId: {id}")).await;
    follow.kill().await.expect("kill natsfn logs -f");
}

#[tokio::test]
async fn a_timed_out_invocation_still_gets_its_end_and_report() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        "import time\ndef handler(event, context):\n    print('going to sleep')\n    time.sleep(30)\n",
    )]);
    env.bind_ready(
        "sleepy",
        Binding::python("app.handler", &code).timeout_ms(500),
    )
    .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.sleepy")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let reply = env.invoke("sleepy", "{}").await;
    assert_eq!(error_code(&reply), Some(504), "{reply:?}");
    let id = header(&reply, "Natsfn-Request-Id").expect("request id");
    let lines = lines_until_report(&mut logs, Some(&id)).await;
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(
        texts[0],
        format!("START RequestId: {id} Version: $LATEST"),
        "{texts:?}"
    );
    assert_eq!(texts[1], "going to sleep");
    assert_eq!(texts[2], format!("END RequestId: {id}"));
    let report = report_fields(texts[3]);
    let duration = number(&report, "Duration", "ms");
    assert!(duration >= 500.0, "ran until the timeout: {report:?}");
}

#[tokio::test]
async fn nodes_create_natsfn_logs_with_their_limits_and_leave_an_existing_one_alone() {
    use async_nats::jetstream::stream::{Config, StorageType};
    use std::time::Duration;

    /// NATSFN_LOGS's config, once a node has created it.
    async fn config(server: &NatsServer) -> Config {
        let js = async_nats::jetstream::new(server.client().await);
        eventually("a node to create NATSFN_LOGS", || async {
            let mut stream = js.get_stream("NATSFN_LOGS").await.ok()?;
            Some(stream.info().await.ok()?.config.clone())
        })
        .await
    }

    // The defaults.
    let env = Env::start().await;
    let defaults = config(&env.server).await;
    assert_eq!(defaults.subjects, vec!["natsfn.logs.>".to_owned()]);
    assert_eq!(defaults.storage, StorageType::Memory);
    assert_eq!(defaults.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(defaults.max_bytes, 256 * 1024 * 1024);

    // Given on the command line.
    let server = NatsServer::start();
    let args = [
        "--logs-storage",
        "file",
        "--logs-max-age",
        "2h",
        "--logs-max-mb",
        "8",
    ];
    let _node = Node::start_with(&server, "node-a", &args);
    let given = config(&server).await;
    assert_eq!(given.storage, StorageType::File);
    assert_eq!(given.max_age, Duration::from_secs(2 * 3600));
    assert_eq!(given.max_bytes, 8 * 1024 * 1024);

    // An operator's stream is kept as it is.
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(server.client().await);
    js.create_stream(Config {
        name: "NATSFN_LOGS".into(),
        subjects: vec!["natsfn.logs.>".into()],
        max_age: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .expect("create the stream");
    let env = Env::on(server).await;
    let code = code_dir(&[("app.py", MARKED)]);
    // Ready means the node is past its start-up, stream included.
    env.bind_ready("kept", Binding::python("app.handler", &code))
        .await;
    let kept = config(&env.server).await;
    assert_eq!(kept.max_age, Duration::from_secs(600));
    assert_eq!(kept.storage, StorageType::File);
    assert_eq!(kept.max_bytes, -1);
}

#[tokio::test]
async fn a_busy_functions_platform_records_share_messages_and_none_is_lost() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", "def handler(event, context):\n    return event\n")]);
    env.bind_ready("busy", Binding::python("app.handler", &code).pool(2, 2))
        .await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.busy")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");

    let invocations = 2_000;
    let replies: Vec<String> = futures::stream::iter(0..invocations)
        .map(|i| {
            let client = env.client.clone();
            async move {
                let reply = client
                    .request("natsfn.invoke.busy", format!("{i}").into())
                    .await
                    .expect("request");
                assert_eq!(error_code(&reply), None, "{reply:?}");
                header(&reply, "Natsfn-Request-Id").expect("request id")
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut unreported: HashSet<String> = replies.into_iter().collect();
    assert_eq!(unreported.len(), invocations);

    let (mut messages, mut shared) = (0, 0);
    while !unreported.is_empty() {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .unwrap_or_else(|_| panic!("{} invocations without REPORT", unreported.len()))
            .expect("log stream");
        messages += 1;
        assert_eq!(
            header(&msg, "Natsfn-Log-Stream").as_deref(),
            Some("platform")
        );
        let ids = header(&msg, "Natsfn-Request-Id").expect("request ids");
        let ids: Vec<&str> = ids.split(',').collect();
        shared += usize::from(ids.len() > 1);
        let text = String::from_utf8_lossy(&msg.payload).into_owned();
        let mut named = Vec::new();
        for line in text.lines() {
            let id = line
                .split("RequestId: ")
                .nth(1)
                .and_then(|rest| rest.split(['\t', ' ']).next())
                .unwrap_or_else(|| panic!("a platform line without its request id: {line:?}"));
            assert!(ids.contains(&id), "{line:?} is not of {ids:?}");
            if named.last() != Some(&id) {
                named.push(id);
            }
            if line.starts_with("REPORT RequestId: ") {
                assert!(unreported.remove(id), "a second REPORT for {id}");
            }
        }
        assert_eq!(
            named, ids,
            "the header lists the records' request ids in order"
        );
    }
    assert!(
        messages < invocations && shared > 0,
        "{messages} messages for {invocations} invocations' records"
    );
}
