//! `scripts/bench`: how far natsfn is from the physical limit of NATS request/reply
//! here, and from what a user would write instead, measured side by side in one run on
//! the test harness's real nats-server and node processes.

mod cpu;
mod events;
mod gateway;
#[path = "../../tests/it/harness.rs"]
mod harness;
mod load;
mod page;
mod pool;
mod report;
mod sandbox;
mod sigv4;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use natsfn_protocol::FunctionState;
use serde_json::json;

use crate::harness::{code_dir, dir_str, free_port, Env, NatsServer, Node};
use crate::load::Latency;
use crate::report::{ColdStart, DispatcherCpu, Report, Target};

const ECHO_PY: &str = "def handler(event, context):\n    return event\n";
const ECHO_JS: &str = "exports.handler = async (event) => event;\n";
/// The Java echo (`example.Echo`), and `Hello`, a class that does nothing, for the bare
/// JVM start beside the cold start.
const ECHO_JAVA: [(&str, &str); 2] = [
    (
        "example/Echo.java",
        "package example;\npublic class Echo implements com.amazonaws.services.lambda.runtime.RequestHandler<java.util.Map<String, Object>, java.util.Map<String, Object>> {\n    public java.util.Map<String, Object> handleRequest(java.util.Map<String, Object> event, com.amazonaws.services.lambda.runtime.Context context) { return event; }\n}\n",
    ),
    (
        "Hello.java",
        "public class Hello { public static void main(String[] args) {} }\n",
    ),
];
const IN_FLIGHT: [usize; 2] = [16, 64];
const EVENT: &str = r#"{"name":"bench","n":1,"items":[1,2,3],"nested":{"ok":true}}"#;

struct Plan {
    warmup: usize,
    latency_requests: usize,
    rounds: usize,
    throughput_requests: usize,
    cold_starts: usize,
    propagations: usize,
    idle_functions: usize,
    async_events: usize,
}

fn main() {
    // The "before" build of `--before REV` may not know the connection flags: every
    // node of the run connects to open servers alike.
    harness::open_servers();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-responder") {
        return bare_responder(&args[i + 1]);
    }
    if let Some(i) = args.iter().position(|a| a == "--load") {
        // Profiling aid: `--load URL SUBJECT IN_FLIGHT REQUESTS` against a running node.
        return load_only(&args[i + 1..], true);
    }
    if let Some(i) = args.iter().position(|a| a == "--load-tp") {
        // The same, throughput only (for reading CPU counters around it).
        return load_only(&args[i + 1..], false);
    }
    if args.iter().any(|a| a == "--async-only") {
        // Profiling aid: only the async rows.
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let events = runtime.block_on(events::measure(5_000));
        return println!("{}", events.markdown());
    }
    if args.iter().any(|a| a == "--gateway-auth-only") {
        // What --http-auth costs the gateway, with and without it in one run.
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let payload = Bytes::from_static(EVENT.as_bytes());
        return println!(
            "{}",
            runtime.block_on(sigv4::measure(&payload, 5, 5_000, 10_000))
        );
    }
    if args.iter().any(|a| a == "--sandbox-only") {
        // What the worker sandbox costs a cold start, and its memory limit's overshoot.
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        return println!("{}", runtime.block_on(sandbox::measure(20, 10)));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let plan = if quick {
        Plan {
            warmup: 200,
            // Three rounds, so that a median is one round's, not an average of two.
            latency_requests: 3_000,
            rounds: 3,
            throughput_requests: 6_000,
            cold_starts: 20,
            propagations: 5,
            idle_functions: 1_000,
            async_events: 5_000,
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
            async_events: 20_000,
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
    // A quick run checks a change; only a full run is what the published page shows.
    if quick {
        println!("(a quick run: {} is left as it is)", page::PAGE);
        return;
    }
    let page = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(page::PAGE);
    match page::write_tables(&page, &markdown) {
        Ok(()) => println!(
            "(the tables written to {} between {} and {}; its prose is yours to update)",
            page.display(),
            page::BEGIN,
            page::END
        ),
        Err(e) => eprintln!("the tables were not written to {}: {e}", page::PAGE),
    }
}

/// A measured target: a subject and the connections that load it.
struct Subject {
    name: String,
    subject: &'static str,
    clients: Vec<async_nats::Client>,
}

async fn clients(server: &NatsServer, n: usize) -> Vec<async_nats::Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(server.client().await);
    }
    out
}

async fn bind_echo(env: &Env, name: &str, runtime: &str, dir: &tempfile::TempDir) {
    env.bind_ready(
        name,
        json!({"runtime": runtime, "handler": handler_of(runtime), "code": {"dir": dir_str(dir.path())},
               "pool": {"min": 2, "max": 2}}),
    )
    .await;
}

fn handler_of(runtime: &str) -> &'static str {
    if runtime == "java" {
        "example.Echo"
    } else {
        "app.handler"
    }
}

/// ECHO_JAVA compiled with the node's JDK against natsfn's interfaces (runtimes/java).
fn java_code(jdk: &natsfn_actors::Jdk) -> tempfile::TempDir {
    let code = code_dir(&ECHO_JAVA);
    let javac = jdk.java.with_file_name("javac");
    let status = Command::new(javac)
        .args(["--release", "17", "-implicit:none", "-sourcepath"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes/java"))
        .arg("-d")
        .arg(code.path())
        .args(ECHO_JAVA.map(|(path, _)| code.path().join(path)))
        .status()
        .expect("javac");
    assert!(status.success(), "javac failed");
    code
}

async fn run(plan: &Plan, quick: bool) -> Report {
    // The node under test also serves the HTTP gateway, for the gateway's rows.
    let http_addr = format!("127.0.0.1:{}", free_port());
    let server = NatsServer::start();
    let node = Node::start_with(&server, "node-a", &["--http", &http_addr]);
    let env = Env::with(server, node).await;
    // The node to compare with, on its own server (nodes on one server share every
    // binding): an older build when scripts/bench was given `--before REV`, else this
    // build on several threads.
    let before_server = NatsServer::start();
    let (before_node, before_name) = match std::env::var_os("NATSFN_BENCH_BEFORE") {
        Some(binary) => (
            Node::start_binary(Path::new(&binary), &before_server, "before", &[]),
            format!(
                "natsfn python3, {} (before)",
                std::env::var("NATSFN_BENCH_BEFORE_REV").unwrap_or_default()
            ),
        ),
        None => (
            Node::start_with(&before_server, "before", &["--threads", "2"]),
            "natsfn python3, node --threads 2".to_owned(),
        ),
    };
    let before = Env::with(before_server, before_node).await;
    let py = code_dir(&[("app.py", ECHO_PY)]);
    let js = code_dir(&[("app.js", ECHO_JS)]);
    bind_echo(&env, "echo-python", "python3", &py).await;
    bind_echo(&env, "echo-node", "nodejs", &js).await;
    // The interpreters the node runs (not a shim on PATH, such as pyenv's).
    let interpreters = natsfn_actors::Interpreters::discover().await;
    let jdk = interpreters.java.clone().expect("a JDK 17+ and Jackson");
    let java = java_code(&jdk);
    bind_echo(&env, "echo-java", "java", &java).await;
    bind_echo(&before, "echo-python", "python3", &py).await;
    // The Rust echo on the lambda_runtime crate (scripts/bench builds it).
    let rust = code_dir(&[]);
    let rust_bootstrap =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/provided-rust/release/bootstrap");
    std::fs::copy(&rust_bootstrap, rust.path().join("bootstrap")).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/bench builds it from examples/provided-rust)",
            rust_bootstrap.display()
        )
    });
    bind_echo(&env, "echo-rust", "provided", &rust).await;
    let bare = Service::start(
        Command::new(std::env::current_exe().expect("bench binary"))
            .args(["--bare-responder", &env.server.url]),
    );
    let pyservice = Service::start(Command::new("python3").args([
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/natsfn/py_service.py"),
        &env.server.url,
        "bench.pyservice",
        &dir_str(py.path()),
    ]));
    // The npm `nats` package of the tests' lock file (scripts/bench installs it).
    let nodeservice = Service::start(
        Command::new("node")
            .env(
                "NODE_PATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/js/node_modules"),
            )
            .args([
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/benches/natsfn/node_service.js"
                ),
                &env.server.url,
                "bench.nodeservice",
                &dir_str(js.path()),
            ]),
    );
    let subjects = [
        Subject {
            name: "bare async-nats echo (Rust)".into(),
            subject: "bench.bare",
            clients: clients(&env.server, 4).await,
        },
        Subject {
            name: "natsfn python3".into(),
            subject: "natsfn.invoke.echo-python",
            clients: clients(&env.server, 1).await,
        },
        Subject {
            name: "natsfn nodejs".into(),
            subject: "natsfn.invoke.echo-node",
            clients: clients(&env.server, 1).await,
        },
        Subject {
            name: "nats-py service, same handler".into(),
            subject: "bench.pyservice",
            clients: clients(&env.server, 1).await,
        },
        Subject {
            name: "node.js `nats` service, same handler".into(),
            subject: "bench.nodeservice",
            clients: clients(&env.server, 1).await,
        },
        Subject {
            name: before_name,
            subject: "natsfn.invoke.echo-python",
            clients: clients(&before.server, 1).await,
        },
        Subject {
            name: "natsfn provided (Rust, lambda_runtime)".into(),
            subject: "natsfn.invoke.echo-rust",
            clients: clients(&env.server, 1).await,
        },
        Subject {
            name: "natsfn java".into(),
            subject: "natsfn.invoke.echo-java",
            clients: clients(&env.server, 1).await,
        },
    ];
    let payload = Bytes::from_static(EVENT.as_bytes());

    // Latency in interleaved rounds, so that the machine's drift hits every target alike.
    for s in &subjects {
        load::timed(&s.clients[0], s.subject, &payload, plan.warmup).await;
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); subjects.len()];
    for _ in 0..plan.rounds {
        for (i, s) in subjects.iter().enumerate() {
            let per_round = plan.latency_requests / plan.rounds;
            samples[i].extend(load::timed(&s.clients[0], s.subject, &payload, per_round).await);
        }
    }
    // Throughput likewise: interleaved rounds, the median round reported.
    let mut rates: Vec<[Vec<f64>; 2]> = subjects.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for _ in 0..plan.rounds {
        for (i, s) in subjects.iter().enumerate() {
            for (j, in_flight) in IN_FLIGHT.into_iter().enumerate() {
                let requests = plan.throughput_requests / plan.rounds;
                let t = load::throughput(&s.clients[..1], s.subject, &payload, in_flight, requests)
                    .await;
                rates[i][j].push(t.per_second);
            }
        }
    }
    let targets: Vec<Target> = subjects
        .iter()
        .zip(samples)
        .zip(rates)
        .map(|((s, samples), rates)| Target {
            name: s.name.clone(),
            subject: s.subject.to_string(),
            latency: Latency::from_samples(samples),
            throughput: IN_FLIGHT
                .into_iter()
                .zip(rates)
                .map(|(in_flight, rounds)| {
                    load::Throughput::median_of(in_flight, 1, rounds, plan.throughput_requests)
                })
                .collect(),
        })
        .collect();
    let generator_check = load::throughput(
        &subjects[0].clients,
        "bench.bare",
        &payload,
        64,
        plan.throughput_requests,
    )
    .await;
    let dispatcher_cpu = vec![
        dispatcher_cpu(&env, &subjects[1], &payload, plan).await,
        dispatcher_cpu(&before, &subjects[5], &payload, plan).await,
    ];
    let natsfn = |function| cpu::Responder::Natsfn {
        node: env.node.pid(),
        function,
    };
    let responders = [
        (0, env.server.pid(), cpu::Responder::Process(bare.pid())),
        (1, env.server.pid(), natsfn("echo-python")),
        (
            3,
            env.server.pid(),
            cpu::Responder::Process(pyservice.pid()),
        ),
        (
            5,
            before.server.pid(),
            cpu::Responder::Natsfn {
                node: before.node.pid(),
                function: "echo-python",
            },
        ),
        (2, env.server.pid(), natsfn("echo-node")),
        (
            4,
            env.server.pid(),
            cpu::Responder::Process(nodeservice.pid()),
        ),
        (7, env.server.pid(), natsfn("echo-java")),
        (6, env.server.pid(), natsfn("echo-rust")),
    ];
    let mut cpu = Vec::new();
    for (i, server, responder) in &responders {
        let s = &subjects[*i];
        let row = cpu::measure(
            &s.name,
            &s.clients[0],
            s.subject,
            &payload,
            plan.throughput_requests,
            *server,
            responder,
        )
        .await;
        cpu.push(row);
    }
    drop((bare, pyservice, nodeservice, before));
    let gateway = gateway::measure(
        env.server.client().await,
        &format!("http://{http_addr}"),
        &payload,
        plan.rounds,
        plan.latency_requests / 4,
        plan.throughput_requests / 2,
    )
    .await;

    let python = interpreters.python3.expect("python3");
    let node = interpreters.node.expect("node");
    let cold_python = cold_starts(
        &env,
        "python3",
        &py,
        Command::new(python).args(["-c", "import app"]),
        plan.cold_starts,
    )
    .await;
    let cold_node = cold_starts(
        &env,
        "nodejs",
        &js,
        Command::new(node).args(["-e", "require('./app')"]),
        plan.cold_starts,
    )
    .await;
    let cold_java = cold_starts(
        &env,
        "java",
        &java,
        Command::new(&jdk.java).args(["-cp", ".", "Hello"]),
        plan.cold_starts,
    )
    .await;
    let propagation = propagation(&env, &py, plan.propagations).await;
    let pool = pool::measure(&env, &py, plan.propagations, plan.idle_functions).await;
    drop(env);
    let (rss_empty_kb, rss_idle_kb) = idle_rss(&py, plan.idle_functions).await;
    let events = events::measure(plan.async_events).await;

    Report {
        machine: report::machine(),
        date: time::OffsetDateTime::now_utc().date().to_string(),
        quick,
        targets,
        generator_check,
        cold_starts: vec![cold_python, cold_node, cold_java],
        propagation,
        dispatcher_cpu,
        cpu,
        idle_functions: plan.idle_functions,
        node_rss_empty_kb: rss_empty_kb,
        node_rss_idle_kb: rss_idle_kb,
        pool,
        gateway,
        events,
    }
}

/// The node's own CPU time per python3 invocation, at 1 and at 64 in flight.
async fn dispatcher_cpu(env: &Env, s: &Subject, payload: &Bytes, plan: &Plan) -> DispatcherCpu {
    let pid = [env.node.pid()];
    let count = plan.throughput_requests;
    let start = cpu::cpu_time(&pid);
    load::timed(&s.clients[0], s.subject, payload, count).await;
    let sequential = cpu::cpu_time(&pid);
    load::throughput(&s.clients[..1], s.subject, payload, 64, count).await;
    let concurrent = cpu::cpu_time(&pid);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
    DispatcherCpu {
        node: s.name.to_string(),
        us_at_1: per(sequential - start),
        us_at_64: per(concurrent - sequential),
    }
}

/// First invocations of functions with pool.min 0 (the worker starts for it), each
/// followed by the same import in a fresh interpreter, the floor of a cold start:
/// interleaved, so that the machine's drift hits both alike.
async fn cold_starts(
    env: &Env,
    runtime: &str,
    code: &tempfile::TempDir,
    import: &mut Command,
    count: usize,
) -> ColdStart {
    let (mut cold, mut imports) = (Vec::new(), Vec::new());
    for i in 0..count {
        let name = format!("cold-{runtime}-{i}");
        env.bind_ready(
            &name,
            json!({"runtime": runtime, "handler": handler_of(runtime), "code": {"dir": dir_str(code.path())},
                   "pool": {"min": 0, "max": 1}}),
        )
        .await;
        let started = Instant::now();
        let reply = env.invoke(&name, EVENT).await;
        cold.push(started.elapsed());
        assert_eq!(
            harness::header(&reply, "Natsfn-Cold-Start").as_deref(),
            Some("true"),
            "{name} was not cold"
        );
        env.bindings.delete(&name).await.expect("delete");
        let started = Instant::now();
        let status = import
            .current_dir(code.path())
            .status()
            .expect("interpreter");
        assert!(status.success());
        imports.push(started.elapsed());
    }
    ColdStart {
        runtime: runtime.into(),
        cold: Latency::from_samples(cold),
        import: Latency::from_samples(imports),
    }
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

/// A helper process that prints `ready` once it serves; killed on drop.
struct Service(Child);

impl Service {
    fn pid(&self) -> u32 {
        self.0.id()
    }

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

fn load_only(args: &[String], with_latency: bool) {
    let [url, subject, in_flight, requests, ..] = args else {
        panic!("--load URL SUBJECT IN_FLIGHT REQUESTS");
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url.as_str()).await.expect("connect");
        let payload = Bytes::from_static(EVENT.as_bytes());
        let n: usize = requests.parse().expect("requests");
        let started = Instant::now();
        let count = if with_latency { n / 4 } else { 1 };
        let samples = load::timed(&client, subject, &payload, count).await;
        let sequential = started.elapsed();
        let t = load::throughput(
            &[client],
            subject,
            &payload,
            in_flight.parse().expect("in flight"),
            n,
        )
        .await;
        let l = Latency::from_samples(samples);
        println!(
            "p50 {:.0} µs  p99 {:.0} µs  ({:?} for {} sequential)  {:.0} req/s at {}",
            l.p50_us, l.p99_us, sequential, count, t.per_second, t.in_flight
        );
    });
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
