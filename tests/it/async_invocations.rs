//! Async invocations through `NATSFN_ASYNC`: enqueued by `natsfn invoke --async` or a
//! plain JetStream publish, run at least once, retried with backoff, dead-lettered
//! with the reason when retries run out, reported to destinations, redriven; throttled
//! events are not attempts; nodes pull only what they have room for.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use futures::StreamExt;
use natsfn_protocol::names::{
    dlq_subject, ASYNC_STREAM, DLQ_STREAM, HEADER_ATTEMPT, HEADER_CONDITION, HEADER_ERROR,
    HEADER_MSG_ID, HEADER_REQUEST_ID,
};
use serde_json::{json, Value};

use crate::harness::*;

/// Appends one line per run to $EVENTS_LOG: the request id, the event, the worker pid.
/// Fails when asked to (always, or until a marker file exists), sleeps when asked to.
const RECORDER: &str = r#"
import json, os, time
LOG = os.environ["EVENTS_LOG"]
def handler(event, context):
    with open(LOG, "a") as f:
        f.write(json.dumps({"id": context.aws_request_id, "event": event, "pid": os.getpid()}) + "\n")
    if event.get("fail") or (event.get("fail_until") and not os.path.exists(event["fail_until"])):
        raise ValueError("failing on purpose: " + str(event.get("n")))
    time.sleep(event.get("sleep", 0))
    return {"ok": event.get("n")}
"#;

struct Recorder {
    code: tempfile::TempDir,
    log: PathBuf,
}

impl Recorder {
    fn new() -> Recorder {
        let code = code_dir(&[("app.py", RECORDER)]);
        let log = code.path().join("events.log");
        Recorder { code, log }
    }

    fn spec(&self) -> Binding {
        Binding::python("app.handler", &self.code)
            .env("EVENTS_LOG", self.log.to_string_lossy())
            .pool(1, 2)
    }

    /// Every run so far: (request id, event, worker pid).
    fn runs(&self) -> Vec<(String, Value, u64)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["id"].as_str().unwrap_or_default().to_owned(),
                    v["event"].clone(),
                    v["pid"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn runs_of(&self, id: &str) -> usize {
        self.runs().iter().filter(|(i, _, _)| i == id).count()
    }
}

/// The node flags of these tests: they observe runs through a file the handler writes
/// (its EVENTS_LOG), which a sandboxed worker cannot, and test async semantics, not
/// isolation.
const UNSANDBOXED: [&str; 2] = ["--isolation", "none"];

/// A server and an unsandboxed node (see [`UNSANDBOXED`]).
async fn unsandboxed_env() -> Env {
    let server = NatsServer::start();
    let node = Node::start_with(&server, "node-a", &UNSANDBOXED);
    Env::with(server, node).await
}

async fn publish(js: &jetstream::Context, function: &str, id: &str, event: Value) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, id);
    js.publish_with_headers(
        format!("natsfn.async.{function}"),
        headers,
        event.to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored")
    .duplicate
}

/// Waits until nothing of `function` waits or runs in `NATSFN_ASYNC`.
async fn drained(js: &jetstream::Context, function: &str) {
    let stream = js.get_stream(ASYNC_STREAM).await.expect("async stream");
    let consumer = format!("natsfn-async-{function}");
    eventually(&format!("{function}'s async backlog to drain"), || async {
        let info = stream.consumer_info(consumer.as_str()).await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
}

/// The dead letters of `function`: (headers, payload).
async fn dead_letters(js: &jetstream::Context, function: &str) -> Vec<(HeaderMap, Value)> {
    let stream = js.get_stream(DLQ_STREAM).await.expect("dlq stream");
    let mut letters = Vec::new();
    let mut next = 0;
    while let Ok(msg) = stream
        .direct_get_next_for_subject(dlq_subject(function), Some(next))
        .await
    {
        next = msg.sequence + 1;
        letters.push((
            msg.headers.clone(),
            serde_json::from_slice(&msg.payload).unwrap_or(Value::Null),
        ));
    }
    letters
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn events_enqueued_by_the_cli_or_a_publish_run_once_and_a_repeated_msg_id_is_stored_once() {
    let env = unsandboxed_env().await;
    let recorder = Recorder::new();
    env.bind_ready("recorder", recorder.spec()).await;
    let js = jetstream::new(env.client.clone());

    let out = run_cli(
        &env.server,
        &["invoke", "recorder", "--async", r#"{"n": 1}"#],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(cli_id.len(), 36, "the CLI prints the event id: {cli_id:?}");

    assert!(!publish(&js, "recorder", "event-2", json!({"n": 2})).await);
    assert!(
        publish(&js, "recorder", "event-2", json!({"n": 2})).await,
        "JetStream's dedupe window: stored once"
    );
    // Without a Nats-Msg-Id: natsfn makes the id from the stream sequence.
    js.publish("natsfn.async.recorder", json!({"n": 3}).to_string().into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    eventually("three events to run", || async {
        (recorder.runs().len() >= 3).then_some(())
    })
    .await;
    drained(&js, "recorder").await;
    assert_eq!(recorder.runs_of(&cli_id), 1);
    assert_eq!(recorder.runs_of("event-2"), 1);
    let runs = recorder.runs();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let mut ns: Vec<u64> = runs
        .iter()
        .filter_map(|(_, e, _)| e["n"].as_u64())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, vec![1, 2, 3]);
    assert!(dead_letters(&js, "recorder").await.is_empty());

    // `natsfn get` shows the backlog.
    let out = run_cli(&env.server, &["get", "recorder"]).await;
    let got: Value = serde_json::from_slice(&out.stdout).expect("get json");
    assert_eq!(
        got["async"],
        json!({"pending": 0, "in_progress": 0, "dead_letters": 0})
    );
}

#[tokio::test]
async fn an_always_failing_event_is_a_dead_letter_after_one_plus_max_retries_attempts() {
    let env = unsandboxed_env().await;
    let recorder = Recorder::new();
    let policy = recorder
        .spec()
        .max_retries(2)
        .retry_delay_ms(100)
        .on_failure("fn.test.failed")
        .on_success("fn.test.ok");
    env.bind_ready("failing", policy).await;
    let js = jetstream::new(env.client.clone());
    let mut failed = env.client.subscribe("fn.test.failed").await.expect("sub");
    let mut ok = env.client.subscribe("fn.test.ok").await.expect("sub");

    publish(&js, "failing", "doomed", json!({"fail": true, "n": 7})).await;
    publish(&js, "failing", "fine", json!({"n": 8})).await;

    let record = tokio::time::timeout(Duration::from_secs(20), failed.next())
        .await
        .expect("an on_failure record")
        .expect("message");
    let record: Value = serde_json::from_slice(&record.payload).expect("record json");
    assert_eq!(record["requestContext"]["requestId"], "doomed");
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestPayload"], json!({"fail": true, "n": 7}));
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responsePayload"]["errorType"], "ValueError");

    let success = tokio::time::timeout(Duration::from_secs(20), ok.next())
        .await
        .expect("an on_success record")
        .expect("message");
    let success: Value = serde_json::from_slice(&success.payload).expect("record json");
    assert_eq!(success["requestContext"]["requestId"], "fine");
    assert_eq!(success["requestContext"]["condition"], "Success");
    assert_eq!(success["responsePayload"], json!({"ok": 8}));

    drained(&js, "failing").await;
    assert_eq!(recorder.runs_of("doomed"), 3, "1 + max_retries attempts");
    let letters = dead_letters(&js, "failing").await;
    assert_eq!(letters.len(), 1);
    let (headers, payload) = &letters[0];
    assert_eq!(payload, &json!({"fail": true, "n": 7}), "the event as sent");
    assert_eq!(header(headers, HEADER_REQUEST_ID), "doomed");
    assert_eq!(header(headers, HEADER_ATTEMPT), "3");
    assert_eq!(header(headers, HEADER_CONDITION), "RetriesExhausted");
    assert!(
        header(headers, HEADER_ERROR).contains("ValueError: failing on purpose: 7"),
        "{}",
        header(headers, HEADER_ERROR)
    );
    let out = run_cli(&env.server, &["dlq", "ls", "failing"]).await;
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("doomed") && listing.contains("RetriesExhausted"),
        "{listing}"
    );
}

#[tokio::test]
async fn a_redriven_dead_letter_runs_again_once() {
    let env = unsandboxed_env().await;
    let recorder = Recorder::new();
    let marker = recorder.code.path().join("fixed");
    env.bind_ready("redrive", recorder.spec().max_retries(0))
        .await;
    let js = jetstream::new(env.client.clone());
    let event = json!({"fail_until": marker.to_string_lossy(), "n": 1});
    publish(&js, "redrive", "second-chance", event).await;
    eventually("a dead letter", || async {
        (dead_letters(&js, "redrive").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        recorder.runs_of("second-chance"),
        1,
        "max_retries 0: one attempt"
    );

    std::fs::write(&marker, "").expect("marker");
    let out = run_cli(&env.server, &["dlq", "redrive", "redrive"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("redrove 1"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the redriven event to run", || async {
        (recorder.runs_of("second-chance") == 2).then_some(())
    })
    .await;
    drained(&js, "redrive").await;
    assert!(dead_letters(&js, "redrive").await.is_empty());
    let out = run_cli(&env.server, &["dlq", "redrive", "redrive"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no dead letters")
            || String::from_utf8_lossy(&out.stdout).contains("redrove 0")
    );
    assert_eq!(recorder.runs_of("second-chance"), 2);
}

#[tokio::test]
async fn throttled_events_wait_and_are_not_counted_as_attempts() {
    let server = NatsServer::start();
    let port = free_port();
    let node = Node::start_with(
        &server,
        "node-a",
        &[
            "--metrics",
            &format!("127.0.0.1:{port}"),
            UNSANDBOXED[0],
            UNSANDBOXED[1],
        ],
    );
    let env = Env::with(server, node).await;
    let recorder = Recorder::new();
    // One worker, no queue: while a request keeps it busy, an event pulled is refused
    // (429) and must be offered again, not failed; with max_retries 0 a throttle
    // counted as an attempt would make it a dead letter.
    let spec = recorder
        .spec()
        .pool(1, 1)
        .queue(0)
        .timeout_ms(10000)
        .max_retries(0);
    env.bind_ready("throttled", spec).await;
    let js = jetstream::new(env.client.clone());
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REQUEST_ID, "busy");
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(json!({"sleep": 3}).to_string().into())
        .timeout(Some(DEADLINE));
    let busy = tokio::spawn({
        let client = env.client.clone();
        async move {
            client
                .send_request("natsfn.invoke.throttled", request)
                .await
        }
    });
    // The events come while the one worker runs the request.
    eventually("the busy request runs", || async {
        (recorder.runs_of("busy") == 1).then_some(())
    })
    .await;
    for n in 0..4 {
        publish(&js, "throttled", &format!("t-{n}"), json!({"n": n})).await;
    }
    let reply = busy.await.expect("busy").expect("a reply");
    assert_eq!(error_code(&reply), None, "{reply:?}");
    drained(&js, "throttled").await;
    for n in 0..4 {
        assert_eq!(recorder.runs_of(&format!("t-{n}")), 1, "event t-{n}");
    }
    assert!(dead_letters(&js, "throttled").await.is_empty());
    let text = crate::metrics::scrape(port).await;
    let settled = |outcome| {
        crate::metrics::value(
            &text,
            "natsfn_async_events_total",
            &[("function", "throttled"), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert!(
        settled("throttled") >= 1.0,
        "no event was throttled, so the test proved nothing:\n{text}"
    );
    assert_eq!(settled("succeeded"), 4.0, "{text}");
    assert_eq!(settled("dead_lettered"), 0.0, "{text}");
}

#[tokio::test]
async fn a_node_with_less_room_pulls_fewer_events() {
    let server = NatsServer::start();
    let small = Node::start_with(
        &server,
        "small",
        &["--max-workers", "1", UNSANDBOXED[0], UNSANDBOXED[1]],
    );
    let env = Env::with(server, small).await;
    let big = Node::start_with(
        &env.server,
        "big",
        &["--max-workers", "8", UNSANDBOXED[0], UNSANDBOXED[1]],
    );
    let recorder = Recorder::new();
    let spec = recorder.spec().pool(1, 4);
    let revision = env.put_binding("spread", spec).await;
    // Both nodes ready: each writes the status, so wait for each one's workers.
    env.wait_status("spread", |s| {
        s.revision >= revision && s.state == natsfn_protocol::FunctionState::Ready
    })
    .await;
    eventually("both nodes to run a worker", || async {
        (!env.node.worker_pids().is_empty() && !big.worker_pids().is_empty()).then_some(())
    })
    .await;
    let js = jetstream::new(env.client.clone());
    for n in 0..40 {
        publish(
            &js,
            "spread",
            &format!("s-{n}"),
            json!({"n": n, "sleep": 0.2}),
        )
        .await;
    }
    eventually("40 events to run", || async {
        (recorder.runs().len() >= 40).then_some(())
    })
    .await;
    drained(&js, "spread").await;
    let small_pids = env.node.worker_pids();
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for (_, _, pid) in recorder.runs() {
        let node = if small_pids.contains(&(pid as u32)) {
            "small"
        } else {
            "big"
        };
        *per_node.entry(node).or_default() += 1;
    }
    let (s, b) = (
        per_node.get("small").copied().unwrap_or(0),
        per_node.get("big").copied().unwrap_or(0),
    );
    println!("capacity-aware pulling: node with 1 slot ran {s}, node with 4 ran {b}");
    assert_eq!(s + b, 40);
    assert!(s * 2 < b, "small {s}, big {b}");
}

/// Appends the event's `n` to $EVENTS_LOG: the cheapest handler that leaves a trace.
const TALLY: &str = r#"
import os
LOG = os.environ["EVENTS_LOG"]
def handler(event, context):
    with open(LOG, "a") as f:
        f.write("%d\n" % event["n"])
    return None
"#;

#[tokio::test]
async fn ten_thousand_events_on_a_cluster_survive_a_node_and_a_server_killed() {
    const EVENTS: u64 = 10_000;
    let mut cluster = Cluster::start().await;
    let urls = cluster.urls();
    let mut nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|id| Node::start_urls(&urls, id, &UNSANDBOXED))
        .collect();
    let client = cluster.client_of(0).await;
    let js = jetstream::new(client.clone());
    let bindings = natsfn_actors::buckets::bindings(&js).await.expect("bucket");
    let code = code_dir(&[("app.py", TALLY)]);
    let log = code.path().join("events.log");
    let spec = Binding::python("app.handler", &code)
        .env("EVENTS_LOG", log.to_string_lossy())
        .pool(2, 4)
        .max_retries(2)
        .retry_delay_ms(100);
    bindings.put("tally", spec.bytes()).await.expect("bind");
    // A python3 worker of the function on every node (not just any child, such as the
    // interpreter probes a node runs at start-up).
    let runs_worker = |node: &Node| {
        node.worker_pids().iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("bootstrap.py"))
        })
    };
    eventually("every node to run a worker", || async {
        nodes.iter().all(runs_worker).then_some(())
    })
    .await;
    let seen = || -> Vec<u64> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };

    let started = std::time::Instant::now();
    enqueue_numbered(&js, "tally", 0..EVENTS).await;
    let published = started.elapsed();
    eventually("a fifth of the events to run", || async {
        (seen().len() as u64 >= EVENTS / 5).then_some(())
    })
    .await;
    nodes[1].kill();
    let node_killed_at = (seen().len(), started.elapsed());
    eventually("two fifths of the events to run", || async {
        (seen().len() as u64 >= 2 * EVENTS / 5).then_some(())
    })
    .await;
    // A server the client of the test is not on.
    cluster.kill(2);
    let server_killed_at = (seen().len(), started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(2);
    eventually_within(Duration::from_secs(120), "every event to run", || async {
        let distinct: std::collections::HashSet<u64> = seen().into_iter().collect();
        (distinct.len() as u64 == EVENTS).then_some(())
    })
    .await;
    let ran_all = started.elapsed();
    drained(&js, "tally").await;
    let seen = seen();
    let mut counts = vec![0u32; EVENTS as usize];
    for n in &seen {
        counts[*n as usize] += 1;
    }
    let lost = counts.iter().filter(|c| **c == 0).count();
    let duplicates: u32 = counts.iter().map(|c| c.saturating_sub(1)).sum();
    println!(
        "async 10k on a 3-server cluster: published in {:.2} s; a node killed -9 after (events run, time) {node_killed_at:?}, a server killed (2 s, then restarted) after {server_killed_at:?}; all {EVENTS} ran {:.2} s after the first publish; lost {lost}, duplicates {duplicates}",
        published.as_secs_f64(),
        ran_all.as_secs_f64(),
    );
    assert_eq!(lost, 0);
    assert!(dead_letters(&js, "tally").await.is_empty());
}

#[tokio::test]
async fn an_event_running_longer_than_its_lease_keeps_it_and_runs_once() {
    let env = unsandboxed_env().await;
    let recorder = Recorder::new();
    // The lease is 10 s; a second worker is free to take a redelivery.
    let spec = recorder.spec().timeout_ms(30000).pool(2, 2);
    env.bind_ready("long", spec).await;
    let js = jetstream::new(env.client.clone());
    publish(&js, "long", "slow-one", json!({"sleep": 12, "n": 1})).await;
    eventually_within(
        Duration::from_secs(40),
        "the long event to finish",
        || async {
            let stream = js.get_stream(ASYNC_STREAM).await.ok()?;
            let info = stream.consumer_info("natsfn-async-long").await.ok()?;
            (recorder.runs_of("slow-one") >= 1
                && info.num_pending == 0
                && info.num_ack_pending == 0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(recorder.runs_of("slow-one"), 1, "redelivered while it ran");
}
