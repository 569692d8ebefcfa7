//! The warm pool's figures: a burst of 4 × `pool.max` slow requests (answered, 429s,
//! timeouts), a standby-warm first request against a cold one, and a node starting
//! with 1,000 bound functions (default pool, default `--max-workers`).

use std::time::{Duration, Instant};

use futures::StreamExt;
use natsfn_protocol::FunctionState;
use serde::Serialize;
use serde_json::json;

use crate::harness::{self, children_of, code_dir, dir_str, Env, NatsServer, Node};
use crate::load::Latency;

const SLOW_PY: &str = "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return event\n";

#[derive(Serialize)]
pub struct Burst {
    pub max: usize,
    pub queue: usize,
    pub requests: usize,
    pub answered: usize,
    pub throttled: usize,
    pub timeouts: usize,
    pub other_errors: usize,
    /// The slowest 429, and how long each served request slept.
    pub slowest_429_ms: f64,
    pub sleep_ms: u64,
}

#[derive(Serialize)]
pub struct FirstRequest {
    pub warm: Latency,
    pub cold: Latency,
}

#[derive(Serialize)]
pub struct ManyFunctions {
    pub functions: usize,
    /// Node start → every function reported ready.
    pub ready_after_ms: f64,
    pub node_rss_kb: u64,
    pub workers: usize,
    pub workers_rss_kb: u64,
}

#[derive(Serialize)]
pub struct PoolReport {
    pub burst: Burst,
    pub first_request: FirstRequest,
    pub many: ManyFunctions,
}

pub async fn measure(
    env: &Env,
    code: &tempfile::TempDir,
    firsts: usize,
    functions: usize,
) -> PoolReport {
    PoolReport {
        burst: burst(env).await,
        first_request: first_request(env, code, firsts).await,
        many: many_functions(code, functions).await,
    }
}

async fn burst(env: &Env) -> Burst {
    let (max, queue, sleep_ms) = (4usize, 4usize, 200u64);
    let code = code_dir(&[("app.py", SLOW_PY)]);
    env.bind_ready(
        "burst",
        json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())},
               "timeout_ms": 10_000, "pool": {"min": max, "max": max, "queue": queue}}),
    )
    .await;
    let event = json!({"sleep": sleep_ms as f64 / 1000.0}).to_string();
    let requests = 4 * max;
    let calls = (0..requests).map(|_| {
        let client = env.client.clone();
        let event = event.clone();
        async move {
            let started = Instant::now();
            let request = async_nats::Request::new()
                .payload(event.into())
                .timeout(Some(harness::DEADLINE));
            let reply = client.send_request("natsfn.invoke.burst", request).await;
            (reply, started.elapsed())
        }
    });
    let mut report = Burst {
        max,
        queue,
        requests,
        answered: 0,
        throttled: 0,
        timeouts: 0,
        other_errors: 0,
        slowest_429_ms: 0.0,
        sleep_ms,
    };
    for (reply, took) in futures::future::join_all(calls).await {
        match reply.as_ref().map(harness::error_code) {
            Ok(None) => report.answered += 1,
            Ok(Some(429)) => {
                report.throttled += 1;
                report.slowest_429_ms = report.slowest_429_ms.max(took.as_secs_f64() * 1e3);
            }
            Ok(Some(504)) | Err(_) => report.timeouts += 1,
            Ok(Some(_)) => report.other_errors += 1,
        }
    }
    env.bindings.delete("burst").await.expect("delete");
    report
}

/// The first request after `natsfn bind` with a standby (`pool.min` 1) and without
/// (`pool.min` 0), interleaved.
async fn first_request(env: &Env, code: &tempfile::TempDir, count: usize) -> FirstRequest {
    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    for i in 0..count {
        for (min, samples) in [(1, &mut warm), (0, &mut cold)] {
            let name = format!("first-{min}-{i}");
            env.bind_ready(
                &name,
                json!({"runtime": "python3", "handler": "app.handler",
                       "code": {"dir": dir_str(code.path())}, "pool": {"min": min, "max": 1}}),
            )
            .await;
            let started = Instant::now();
            let reply = env.invoke(&name, "{}").await;
            samples.push(started.elapsed());
            assert_eq!(harness::error_code(&reply), None, "{reply:?}");
            env.bindings.delete(&name).await.expect("delete");
        }
    }
    FirstRequest {
        warm: Latency::from_samples(warm),
        cold: Latency::from_samples(cold),
    }
}

/// `count` functions with the default pool (`min` 1) already bound when a node with
/// the default `--max-workers` starts: how long until all are ready, what it holds.
async fn many_functions(code: &tempfile::TempDir, count: usize) -> ManyFunctions {
    let server = NatsServer::start();
    let client = server.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let bindings = natsfn_actors::buckets::bindings(&js)
        .await
        .expect("bindings");
    let status = natsfn_actors::buckets::status(&js).await.expect("status");
    for i in 0..count {
        let spec = json!({"runtime": "python3", "handler": "app.handler",
                          "code": {"dir": dir_str(code.path())}, "subjects": [format!("many.{i}")]});
        bindings
            .put(
                format!("many-{i}"),
                serde_json::to_vec(&spec).expect("json").into(),
            )
            .await
            .expect("put");
    }
    let mut ready = status.watch_all().await.expect("watch status");
    let started = Instant::now();
    let node = Node::start(&server, "many");
    let mut seen = std::collections::HashSet::new();
    while seen.len() < count {
        let entry = tokio::time::timeout(Duration::from_secs(120), ready.next())
            .await
            .expect("functions becoming ready")
            .expect("status stream")
            .expect("status entry");
        let ok = serde_json::from_slice::<natsfn_protocol::FunctionStatus>(&entry.value)
            .is_ok_and(|s| s.state == FunctionState::Ready);
        if ok {
            seen.insert(entry.key);
        }
    }
    let ready_after_ms = started.elapsed().as_secs_f64() * 1e3;
    let workers = children_of(node.pid());
    ManyFunctions {
        functions: count,
        ready_after_ms,
        node_rss_kb: crate::rss_kb(node.pid()),
        workers: workers.len(),
        workers_rss_kb: workers.iter().map(|pid| crate::rss_kb(*pid)).sum(),
    }
}

impl PoolReport {
    pub fn markdown(&self) -> String {
        let b = &self.burst;
        let f = &self.first_request;
        let m = &self.many;
        format!(
            "| burst of {} requests sleeping {} ms (pool.max {}, pool.queue {}): answered / 429 / timeouts / other errors | {} / {} / {} / {} |\n\
             | slowest 429 in that burst | {:.1} ms |\n\
             | first request after bind, standby-warm (pool.min 1) / cold (pool.min 0), p50 | {:.1} / {:.1} ms |\n\
             | node starting with {} bound functions (default pool, default --max-workers): all ready after | {:.0} ms |\n\
             | ... its RSS / workers started / their RSS | {:.1} MB / {} / {:.0} MB |\n",
            b.requests, b.sleep_ms, b.max, b.queue, b.answered, b.throttled, b.timeouts, b.other_errors,
            b.slowest_429_ms,
            f.warm.p50_us / 1e3, f.cold.p50_us / 1e3,
            m.functions, m.ready_after_ms,
            m.node_rss_kb as f64 / 1024.0, m.workers, m.workers_rss_kb as f64 / 1024.0,
        )
    }
}
