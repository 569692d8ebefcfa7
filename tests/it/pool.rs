//! The warm pool under pressure: a worker whose channel is full still times out, each
//! caller gets exactly one reply, bursts get 429s at once rather than timeouts, idle
//! workers are reaped (down to zero), the node-wide cap evicts before it refuses,
//! memory limits, recycling, and no worker left unreaped by a stopping node.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::harness::*;

const HANDLER: &str = r#"
import os, time
hog = None
def handler(event, context):
    global hog
    if event.get("hang"):
        time.sleep(3600)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("exit"):
        os._exit(3)
    if event.get("alloc_mb"):
        hog = b"x" * (event["alloc_mb"] * 1024 * 1024)
        time.sleep(5)
    return {"n": event.get("n"), "worker": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"], "size": len(event.get("blob", ""))}
"#;

/// Binds HANDLER as `name`, its spec completed by `spec`.
async fn bind(env: &Env, name: &str, spec: impl FnOnce(Binding) -> Binding) -> tempfile::TempDir {
    let code = code_dir(&[("app.py", HANDLER)]);
    env.bind_ready(name, spec(Binding::python("app.handler", &code)))
        .await;
    code
}

/// Sends every event at once (in order, on one connection) and collects the replies,
/// each with how long it took.
async fn burst(
    env: &Env,
    name: &str,
    events: Vec<serde_json::Value>,
) -> Vec<(async_nats::Message, Duration)> {
    let requests = events.into_iter().map(|event| {
        let client = env.client.clone();
        let subject = format!("natsfn.invoke.{name}");
        async move {
            let started = Instant::now();
            let request = async_nats::Request::new()
                .payload(event.to_string().into())
                .timeout(Some(DEADLINE));
            let reply = client
                .send_request(subject, request)
                .await
                .expect("a reply before the deadline");
            (reply, started.elapsed())
        }
    });
    futures::future::join_all(requests).await
}

/// The worker that answered, by its AWS_LAMBDA_LOG_STREAM_NAME (its pid is its
/// sandbox's own, the same in every worker).
fn worker_of(reply: &async_nats::Message) -> String {
    json(reply)["worker"]
        .as_str()
        .expect("a worker in the reply")
        .to_owned()
}

#[tokio::test]
async fn a_hung_handler_with_large_invocations_pipelined_behind_it_still_times_out() {
    let env = Env::start().await;
    let _code = bind(&env, "wedge", |b| b.timeout_ms(1000).pool(1, 1)).await;
    // Quick invocations make it a function that is pipelined.
    let mut warm = HashSet::new();
    for n in 0..20 {
        warm.insert(worker_of(
            &env.invoke("wedge", json!({"n": n}).to_string()).await,
        ));
    }
    // Two invocations of about 900 KiB behind one that hangs: more than the channel's
    // socket buffer holds while nobody reads it.
    let blob = "x".repeat(900 * 1024);
    let replies = burst(
        &env,
        "wedge",
        vec![
            json!({"n": "hang", "hang": true}),
            json!({"n": "big1", "blob": blob}),
            json!({"n": "big2", "blob": blob}),
        ],
    )
    .await;
    let (hung, took) = &replies[0];
    assert_eq!(error_code(hung), Some(504), "{hung:?}");
    assert_eq!(json(hung)["errorType"], "Sandbox.Timedout");
    println!("wedge: 504 after {took:?} (timeout_ms 1000)");
    for (reply, _) in &replies[1..] {
        assert_eq!(error_code(reply), None, "{reply:?}");
        assert_eq!(json(reply)["size"], 900 * 1024);
        assert!(
            !warm.contains(&worker_of(reply)),
            "served by the replacement, not the killed worker"
        );
    }
}

#[tokio::test]
async fn every_caller_behind_a_worker_that_dies_gets_exactly_one_reply() {
    let env = Env::start().await;
    let _code = bind(&env, "once", |b| b.pool(1, 1)).await;
    for n in 0..20 {
        env.invoke("once", json!({"n": n}).to_string()).await;
    }
    let mut inboxes = Vec::new();
    let events = [
        json!({"n": "a", "sleep": 0.2, "exit": true}),
        json!({"n": "b"}),
        json!({"n": "c"}),
        json!({"n": "d"}),
    ];
    for event in &events {
        let inbox = env.client.new_inbox();
        let sub = env
            .client
            .subscribe(inbox.clone())
            .await
            .expect("subscribe");
        env.client
            .publish_with_reply("natsfn.invoke.once", inbox, event.to_string().into())
            .await
            .expect("publish");
        inboxes.push(sub);
    }
    let mut first = Vec::new();
    for sub in &mut inboxes {
        let reply = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .expect("a reply")
            .expect("subscription open");
        first.push(reply);
    }
    assert_eq!(error_code(&first[0]), Some(502), "{:?}", first[0]);
    for (reply, n) in first[1..].iter().zip(["b", "c", "d"]) {
        assert_eq!(error_code(reply), None, "{reply:?}");
        assert_eq!(json(reply)["n"], n);
    }
    // A second reply to anyone would come with the first ones' news; none does.
    env.invoke("once", json!({"n": "after"}).to_string()).await;
    for (sub, event) in inboxes.iter_mut().zip(&events) {
        let again = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
        assert!(again.is_err(), "a second reply for {event}: {again:?}");
    }
}

#[tokio::test]
async fn the_first_request_after_bind_is_served_warm() {
    let env = Env::start().await;
    let _code = bind(&env, "standby", |b| b.pool(1, 2)).await;
    let reply = env.invoke("standby", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(
        header(&reply, "Natsfn-Cold-Start"),
        None,
        "a standby served it"
    );
}

/// How fast the function has been so far, which decides whether the pool pipelines
/// invocations to a busy worker (it does for quick ones).
#[derive(Clone, Copy)]
enum Speed {
    Quick,
    Slow,
}

/// `pool.max` 2 and `pool.queue` 2, warm (both workers ready) or cold (one ready, the
/// second starts in the burst): 8 invocations of 1 s at once, and exactly 4 are
/// admitted (2 run, 2 wait) while 4 get a 429 before any of those finishes.
async fn burst_admits_max_plus_queue(name: &str, speed: Speed, warm: bool) {
    let env = Env::start().await;
    let (max, queue) = (2u64, 2u64);
    let min = if warm { max } else { 1 };
    let _code = bind(&env, name, |b| {
        b.timeout_ms(10000).pool(min, max).queue(queue)
    })
    .await;
    // Quick invocations make it a function the pool pipelines; one of 50 ms does not.
    let warm_up = match speed {
        Speed::Quick => vec![json!({}); 20],
        Speed::Slow => vec![json!({"sleep": 0.05})],
    };
    for event in warm_up {
        let reply = env.invoke(name, event.to_string()).await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
    }
    let replies = burst(
        &env,
        name,
        (0..8).map(|n| json!({"n": n, "sleep": 1.0})).collect(),
    )
    .await;
    let throttled: Vec<_> = replies
        .iter()
        .filter(|(r, _)| error_code(r) == Some(429))
        .collect();
    let served: Vec<_> = replies
        .iter()
        .filter(|(r, _)| error_code(r).is_none())
        .collect();
    assert_eq!(throttled.len(), 8 - (max + queue) as usize, "{replies:?}");
    assert_eq!(
        served.len(),
        (max + queue) as usize,
        "the rest ran: no timeouts, no other errors: {replies:?}"
    );
    let first_served = served.iter().map(|(_, took)| *took).min();
    for (reply, took) in throttled {
        assert_eq!(json(reply)["errorType"], "TooManyRequestsException");
        assert!(
            first_served.is_some_and(|first| *took < first),
            "a 429 after {took:?}, later than the first success ({first_served:?}): it waited instead of being refused"
        );
    }
}

#[tokio::test]
async fn a_burst_on_a_quick_warm_function_admits_exactly_max_plus_queue() {
    burst_admits_max_plus_queue("quickwarm", Speed::Quick, true).await;
}

#[tokio::test]
async fn a_burst_on_a_quick_cold_function_admits_exactly_max_plus_queue() {
    burst_admits_max_plus_queue("quickcold", Speed::Quick, false).await;
}

#[tokio::test]
async fn a_burst_on_a_slow_warm_function_admits_exactly_max_plus_queue() {
    burst_admits_max_plus_queue("slowwarm", Speed::Slow, true).await;
}

#[tokio::test]
async fn a_burst_on_a_slow_cold_function_admits_exactly_max_plus_queue() {
    burst_admits_max_plus_queue("slowcold", Speed::Slow, false).await;
}

#[tokio::test]
async fn idle_workers_above_min_are_reaped_and_min_zero_scales_to_zero() {
    let env = Env::start().await;
    let code = bind(&env, "reap", |b| b.pool(1, 3).idle_ms(300)).await;
    let replies = burst(
        &env,
        "reap",
        // Long enough for two sandboxed cold starts on a loaded machine: the burst needs
        // three workers only while the first is busy.
        (0..3).map(|n| json!({"n": n, "sleep": 1.5})).collect(),
    )
    .await;
    let workers: HashSet<String> = replies.iter().map(|(r, _)| worker_of(r)).collect();
    assert_eq!(workers.len(), 3, "three workers served the burst");
    eventually("the pool to shrink back to min (1)", || {
        let n = env.node.worker_pids().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    // Scale to zero: the same code with min 0 keeps the warm worker until idle_ms.
    env.put_binding(
        "reap",
        Binding::python("app.handler", &code)
            .pool(0, 3)
            .idle_ms(300),
    )
    .await;
    eventually("the pool to scale to zero", || {
        let n = env.node.worker_pids().len();
        async move { (n == 0).then_some(()) }
    })
    .await;
    let reply = env.invoke("reap", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(header(&reply, "Natsfn-Cold-Start").as_deref(), Some("true"));
}

#[tokio::test]
async fn the_node_cap_evicts_another_functions_idle_worker_before_refusing() {
    let server = NatsServer::start();
    let node = Node::start_with(&server, "capped", &["--max-workers", "1"]);
    let env = Env::with(server, node).await;
    let _a = bind(&env, "cap-a", |b| b.pool(0, 2)).await;
    let _b = bind(&env, "cap-b", |b| b.pool(0, 2)).await;
    let a = env.invoke("cap-a", "{}").await;
    assert_eq!(error_code(&a), None, "{a:?}");
    let a_worker = worker_of(&a);
    let a_pid = env
        .node
        .worker_pid_of(&a_worker, None)
        .expect("cap-a's worker runs");
    assert_eq!(env.node.worker_pids(), vec![a_pid]);
    // The node is full; cap-a's worker is idle: cap-b gets its slot.
    let b = env.invoke("cap-b", "{}").await;
    assert_eq!(error_code(&b), None, "{b:?}");
    let b_worker = worker_of(&b);
    assert_ne!(a_worker, b_worker);
    let b_pid = env
        .node
        .worker_pid_of(&b_worker, None)
        .expect("cap-b's worker runs");
    assert_eq!(
        env.node.worker_pids(),
        vec![b_pid],
        "cap-a's idle worker was evicted, and only one runs"
    );
    // And back.
    let again = env.invoke("cap-a", "{}").await;
    assert_eq!(error_code(&again), None, "{again:?}");
}

#[tokio::test]
async fn a_handler_past_memory_mb_gets_out_of_memory_and_the_next_request_succeeds() {
    let env = Env::start().await;
    let _code = bind(&env, "hog", |b| {
        b.memory_mb(128).timeout_ms(10000).pool(1, 1)
    })
    .await;
    let reply = env
        .invoke("hog", json!({"alloc_mb": 300}).to_string())
        .await;
    assert_eq!(error_code(&reply), Some(502), "{reply:?}");
    let body = json(&reply);
    assert_eq!(body["errorType"], "Runtime.OutOfMemory", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("memory_mb 128")),
        "{body}"
    );
    let next = env.invoke("hog", json!({"n": 1}).to_string()).await;
    assert_eq!(error_code(&next), None, "{next:?}");
    assert_eq!(json(&next)["n"], 1);
}

#[tokio::test]
async fn a_worker_is_replaced_after_max_invocations() {
    let env = Env::start().await;
    let _code = bind(&env, "recycle", |b| b.pool(1, 1).max_invocations(2)).await;
    let mut workers = Vec::new();
    for n in 0..3 {
        let reply = env.invoke("recycle", json!({"n": n}).to_string()).await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
        workers.push(worker_of(&reply));
    }
    assert_eq!(workers[0], workers[1], "two invocations per worker");
    assert_ne!(workers[1], workers[2], "then a new worker");
}

#[tokio::test]
async fn a_node_stopped_after_a_load_leaves_no_worker_unreaped() {
    // Orphans of this test process's children come back to it instead of init, so a
    // worker the node did not reap stays visible here as a zombie.
    // SAFETY: prctl with these arguments only sets a flag on this process.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let mut env = Env::start().await;
    let _code = bind(&env, "reaped", |b| b.pool(2, 2)).await;
    let replies = burst(&env, "reaped", (0..64).map(|n| json!({"n": n})).collect()).await;
    assert!(replies.iter().all(|(r, _)| error_code(r).is_none()));
    let workers = env.node.worker_pids();
    assert_eq!(workers.len(), 2, "{workers:?}");
    // Stop it while a second load is in flight: once its first reply is back.
    let inbox = env.client.new_inbox();
    let mut replies = env
        .client
        .subscribe(inbox.clone())
        .await
        .expect("subscribe");
    for n in 0..64 {
        env.client
            .publish_with_reply(
                "natsfn.invoke.reaped",
                inbox.clone(),
                json!({"n": n}).to_string().into(),
            )
            .await
            .expect("publish");
    }
    tokio::time::timeout(DEADLINE, replies.next())
        .await
        .expect("the load is being served");
    env.node.terminate();
    env.node.exited().await;
    for pid in workers {
        let state = process_state(pid);
        assert!(
            state.is_none(),
            "worker {pid} outlived its node in state {state:?}"
        );
    }
}

#[tokio::test]
async fn a_standby_the_cap_leaves_short_still_reports_ready_and_serves() {
    let server = NatsServer::start();
    let node = Node::start_with(&server, "small", &["--max-workers", "1"]);
    let env = Env::with(server, node).await;
    let _one = bind(&env, "first", |b| b.pool(1, 1)).await;
    // No slot is left for its standby: it is ready all the same, and serves on demand.
    let _two = bind(&env, "second", |b| b.pool(1, 1)).await;
    let reply = env.invoke("second", "{}").await;
    assert_eq!(error_code(&reply), None, "{reply:?}");
    assert_eq!(header(&reply, "Natsfn-Cold-Start").as_deref(), Some("true"));
    let pid = env.node.worker_pid_of(&worker_of(&reply), None);
    assert_eq!(env.node.worker_pids(), vec![pid.expect("its worker runs")]);
}
