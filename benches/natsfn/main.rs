//! `scripts/bench`: how far natsfn is from the physical limit of NATS request/reply
//! here, and from what a user would write instead, measured side by side in one run on
//! the test harness's real nats-server and node processes.

#[path = "../../tests/it/harness.rs"]
mod harness;
mod load;
mod report;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use natsfn_protocol::FunctionState;
use serde_json::json;

use crate::harness::{code_dir, dir_str, Env, NatsServer};
use crate::load::Latency;
use crate::report::{ColdStart, Report, Target};

const ECHO_PY: &str = "def handler(event, context):\n    return event\n";
const ECHO_JS: &str = "exports.handler = async (event) => event;\n";
const EVENT: &str = r#"{"name":"bench","n":1,"items":[1,2,3],"nested":{"ok":true}}"#;

struct Plan {
    warmup: usize,
    latency_requests: usize,
    rounds: usize,
    throughput_requests: usize,
    cold_starts: usize,
    propagations: usize,
    idle_functions: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-responder") {
        return bare_responder(&args[i + 1]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            warmup: 200,
            latency_requests: 2_000,
            rounds: 2,
            throughput_requests: 4_000,
            cold_starts: 20,
            propagations: 5,
            idle_functions: 1_000,
        }
    } else {
        Plan {
            warmup: 1_000,
            latency_requests: 20_000,
            rounds: 5,
            throughput_requests: 20_000,
            cold_starts: 30,
            propagations: 10,
            idle_functions: 1_000,
        }
    };
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let report = runtime.block_on(run(&plan, quick));
    std::fs::create_dir_all(&out_dir).expect("bench output dir");
    let markdown = report.markdown();
    std::fs::write(out_dir.join("latest.md"), &markdown).expect("write latest.md");
    std::fs::write(
        out_dir.join("latest.json"),
        serde_json::to_vec_pretty(&report).expect("report json"),
    )
    .expect("write latest.json");
    println!("{markdown}");
    println!(
        "(written to {}/latest.md and latest.json)",
        out_dir.display()
    );
}

async fn run(plan: &Plan, quick: bool) -> Report {
    let env = Env::start().await;
    let py = code_dir(&[("app.py", ECHO_PY)]);
    let js = code_dir(&[("app.js", ECHO_JS)]);
    for (name, runtime, dir) in [
        ("echo-python", "python3", &py),
        ("echo-node", "nodejs", &js),
    ] {
        env.bind_ready(
            name,
            json!({"runtime": runtime, "handler": "app.handler", "code": {"dir": dir_str(dir.path())},
                   "pool": {"min": 2, "max": 2}}),
        )
        .await;
    }
    let _bare = Service::start(
        Command::new(std::env::current_exe().expect("bench binary"))
            .args(["--bare-responder", &env.server.url]),
    );
    let _pyservice = Service::start(Command::new("python3").args([
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/natsfn/py_service.py"),
        &env.server.url,
        "bench.pyservice",
        &dir_str(py.path()),
    ]));
    let subjects = [
        ("bare async-nats echo (Rust)", "bench.bare"),
        ("natsfn python3", "natsfn.invoke.echo-python"),
        ("natsfn nodejs", "natsfn.invoke.echo-node"),
        ("nats-py service, same handler", "bench.pyservice"),
    ];
    let payload = Bytes::from_static(EVENT.as_bytes());
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(env.server.client().await);
    }
    let node_cpu_before = cpu_time(env.node.pid());

    // Latency in interleaved rounds, so that the machine's drift hits every target alike.
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); subjects.len()];
    for (_, subject) in &subjects {
        load::latency(&clients[0], subject, &payload, plan.warmup, 0).await;
    }
    for _ in 0..plan.rounds {
        for (i, (_, subject)) in subjects.iter().enumerate() {
            let per_round = plan.latency_requests / plan.rounds;
            samples[i].extend(timed(&clients[0], subject, &payload, per_round).await);
        }
    }
    let mut targets: Vec<Target> = Vec::new();
    for ((name, subject), s) in subjects.iter().zip(samples) {
        let mut throughput = Vec::new();
        for in_flight in [16, 64] {
            throughput.push(
                load::throughput(
                    &clients[..1],
                    subject,
                    &payload,
                    in_flight,
                    plan.throughput_requests,
                )
                .await,
            );
        }
        targets.push(Target {
            name: name.to_string(),
            subject: subject.to_string(),
            latency: Latency::from_samples(s),
            throughput,
        });
    }
    let generator_check = load::throughput(
        &clients,
        "bench.bare",
        &payload,
        64,
        plan.throughput_requests,
    )
    .await;
    // Everything the node did for the natsfn targets, per natsfn invocation.
    let natsfn_invocations =
        2 * (plan.warmup + plan.latency_requests + 2 * plan.throughput_requests);
    let node_cpu_us_per_invocation = (cpu_time(env.node.pid()) - node_cpu_before).as_secs_f64()
        * 1e6
        / natsfn_invocations as f64;

    let cold_python = cold_starts(&env, "python3", &py, plan.cold_starts).await;
    let cold_node = cold_starts(&env, "nodejs", &js, plan.cold_starts).await;
    let import_python = import_times(
        Command::new("python3").args(["-c", "import app"]),
        py.path(),
        plan.cold_starts,
    );
    let import_node = import_times(
        Command::new("node").args(["-e", "require('./app')"]),
        js.path(),
        plan.cold_starts,
    );
    let propagation = propagation(&env, &py, plan.propagations).await;
    drop(env);
    let (rss_empty_kb, rss_idle_kb) = idle_rss(&py, plan.idle_functions).await;

    Report::new(
        quick,
        targets,
        generator_check,
        vec![
            ColdStart {
                runtime: "python3".into(),
                cold: cold_python,
                import: import_python,
            },
            ColdStart {
                runtime: "nodejs".into(),
                cold: cold_node,
                import: import_node,
            },
        ],
        propagation,
        node_cpu_us_per_invocation,
        plan.idle_functions,
        rss_empty_kb,
        rss_idle_kb,
    )
}

async fn timed(
    client: &async_nats::Client,
    subject: &str,
    payload: &Bytes,
    count: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let reply = client
            .request(subject.to_owned(), payload.clone())
            .await
            .expect("request");
        out.push(started.elapsed());
        assert!(
            reply
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Service-Error-Code"))
                .is_none(),
            "error reply on {subject}"
        );
    }
    out
}

/// First invocation of a function with pool.min 0: the worker starts for it.
async fn cold_starts(env: &Env, runtime: &str, code: &tempfile::TempDir, count: usize) -> Latency {
    let mut samples = Vec::new();
    for i in 0..count {
        let name = format!("cold-{runtime}-{i}");
        env.bind_ready(
            &name,
            json!({"runtime": runtime, "handler": "app.handler", "code": {"dir": dir_str(code.path())},
                   "pool": {"min": 0, "max": 1}}),
        )
        .await;
        let started = Instant::now();
        let reply = env.invoke(&name, EVENT).await;
        samples.push(started.elapsed());
        assert_eq!(
            harness::header(&reply, "Natsfn-Cold-Start").as_deref(),
            Some("true"),
            "{name} was not cold"
        );
        env.bindings.delete(&name).await.expect("delete");
    }
    Latency::from_samples(samples)
}

/// What the same import costs in a fresh interpreter: the floor of a cold start.
fn import_times(command: &mut Command, dir: &Path, count: usize) -> Latency {
    let samples = (0..count)
        .map(|_| {
            let started = Instant::now();
            let status = command.current_dir(dir).status().expect("interpreter");
            assert!(status.success());
            started.elapsed()
        })
        .collect();
    Latency::from_samples(samples)
}

/// KV put of a new binding -> its first successful reply (worker start included).
async fn propagation(env: &Env, code: &tempfile::TempDir, count: usize) -> Latency {
    let mut samples = Vec::new();
    for i in 0..count {
        let name = format!("prop-{i}");
        let spec = json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())}});
        let started = Instant::now();
        env.put_binding(&name, spec).await;
        let subject = format!("natsfn.invoke.{name}");
        loop {
            match env.client.request(subject.clone(), EVENT.into()).await {
                Ok(reply) if harness::error_code(&reply).is_none() => break,
                Ok(reply) => panic!("error reply during propagation: {reply:?}"),
                Err(_) => tokio::task::yield_now().await,
            }
        }
        samples.push(started.elapsed());
        env.bindings.delete(&name).await.expect("delete");
    }
    Latency::from_samples(samples)
}

/// Node RSS with no function, then with `count` idle ones (pool.min 0) all ready.
async fn idle_rss(code: &tempfile::TempDir, count: usize) -> (u64, u64) {
    let env = Env::on(NatsServer::start()).await;
    // The node is up once it has created its buckets and watches; a first function proves it.
    env.bind_ready("probe", json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())}, "pool": {"min": 0, "max": 1}})).await;
    let empty = rss_kb(env.node.pid());
    let mut ready = env.status.watch_all().await.expect("watch status");
    for i in 0..count {
        let spec = json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())},
                          "subjects": [format!("idle.{i}")], "pool": {"min": 0, "max": 1}});
        env.put_binding(&format!("idle-{i}"), spec).await;
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < count {
        let entry = tokio::time::timeout(harness::DEADLINE, ready.next())
            .await
            .expect("idle functions becoming ready")
            .expect("status stream")
            .expect("status entry");
        let ok = serde_json::from_slice::<natsfn_protocol::FunctionStatus>(&entry.value)
            .is_ok_and(|s| s.state == FunctionState::Ready);
        if ok && entry.key.starts_with("idle-") {
            seen.insert(entry.key);
        }
    }
    (empty, rss_kb(env.node.pid()))
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU time of all of a process's threads (ns precision, from schedstat).
fn cpu_time(pid: u32) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("proc tasks")
        .flatten()
    {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// A helper process that prints `ready` once it serves; killed on drop.
struct Service(Child);

impl Service {
    fn start(command: &mut Command) -> Service {
        let mut child = command
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start service");
        let stdout = child.stdout.take().expect("service stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("service output");
        assert_eq!(line.trim(), "ready", "service did not start: {line:?}");
        Service(child)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The physical limit: the smallest useful async-nats responder, in its own process.
fn bare_responder(url: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let mut sub = client
            .queue_subscribe("bench.bare", "bare".into())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        println!("ready");
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = client.publish(reply, msg.payload).await;
            }
        }
    });
}
