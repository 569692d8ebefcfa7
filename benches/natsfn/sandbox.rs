//! `scripts/bench --sandbox-only`: what the worker sandbox costs and what it buys, in
//! one run. Two nodes of this build, each on its own server: one with the default
//! `--isolation sandbox`, one with `--isolation none`. Cold starts per runtime are
//! interleaved between them (the machine's drift hits both alike); then a handler
//! that allocates past `memory_mb` as fast as it can, on each, to see how far past the
//! limit it gets before it is stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{self, code_dir, dir_str, Env, NatsServer, Node};
use crate::load::Latency;

const GREEDY_PY: &str = "def handler(event, context):\n    hold = []\n    while True:\n        hold.append(b'x' * (1024 * 1024))\n";
const MEMORY_MB: u64 = 128;

pub async fn measure(cold_starts: usize, overshoots: usize) -> String {
    let sandboxed = Env::with_node(|server| Node::start_with(server, "sandboxed", &[])).await;
    let open =
        Env::with_node(|server| Node::start_with(server, "open", &["--isolation", "none"])).await;
    let py = code_dir(&[("app.py", crate::ECHO_PY)]);
    let js = code_dir(&[("app.js", crate::ECHO_JS)]);
    let interpreters = natsfn_actors::Interpreters::discover().await;
    let jdk = interpreters.java.clone().expect("a JDK 17+ and Jackson");
    let java = crate::java_code(&jdk);
    let rust = code_dir(&[]);
    let bootstrap =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/provided-rust/release/bootstrap");
    std::fs::copy(&bootstrap, rust.path().join("bootstrap"))
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/bench builds it)", bootstrap.display()));
    // A v1 cgroup migration waits for an RCU grace period unless the kernel expedites
    // them (a root-only, machine-wide setting): measured both ways, then put back.
    let expedited = Path::new("/sys/kernel/rcu_expedited");
    let was = std::fs::read_to_string(expedited).unwrap_or_default();
    let mut out = String::from(
        "| cold start (pool.min 0, first invocation), p50 / p99 | sandbox | sandbox, rcu_expedited=1 | none | sandbox - none, p50 (expedited) |\n|---|---|---|---|---|\n",
    );
    for (runtime, code) in [
        ("python3", &py),
        ("nodejs", &js),
        ("java", &java),
        ("provided", &rust),
    ] {
        let (mut with, mut fast, mut without) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..cold_starts {
            let _ = std::fs::write(expedited, "0");
            with.push(cold_start(&sandboxed, runtime, code, i).await);
            let _ = std::fs::write(expedited, "1");
            fast.push(cold_start(&sandboxed, runtime, code, cold_starts + i).await);
            let _ = std::fs::write(expedited, was.trim());
            without.push(cold_start(&open, runtime, code, i).await);
        }
        let [with, fast, without] = [with, fast, without].map(Latency::from_samples);
        let ms = |l: &Latency| format!("{:.1} / {:.1} ms", l.p50_us / 1e3, l.p99_us / 1e3);
        out.push_str(&format!(
            "| {runtime} | {} | {} | {} | {:+.1} ms ({:+.1} ms) |\n",
            ms(&with),
            ms(&fast),
            ms(&without),
            (with.p50_us - without.p50_us) / 1e3,
            (fast.p50_us - without.p50_us) / 1e3
        ));
    }
    let _ = std::fs::write(expedited, was.trim());
    let greedy = code_dir(&[("app.py", GREEDY_PY)]);
    out.push_str(&format!(
        "\n| a handler allocating 1 MB after another, memory_mb {MEMORY_MB} ({overshoots} runs) | stopped by | resident when stopped, median / max |\n|---|---|---|\n"
    ));
    for (label, env) in [("sandbox", &sandboxed), ("none", &open)] {
        let (mut resident, mut how) = (Vec::new(), String::new());
        for i in 0..overshoots {
            let (mb, by) = overshoot(env, &greedy, i).await;
            resident.push(mb);
            how = by;
        }
        resident.sort_unstable();
        let show = |mb: Option<u64>| {
            mb.map_or(
                format!("at most {MEMORY_MB} MB (the kernel's limit)"),
                |mb| format!("{mb} MB"),
            )
        };
        out.push_str(&format!(
            "| {label} | {how} | {} / {} |\n",
            show(resident.get(resident.len() / 2).copied().flatten()),
            show(resident.last().copied().flatten())
        ));
    }
    out
}

async fn cold_start(env: &Env, runtime: &str, code: &tempfile::TempDir, i: usize) -> Duration {
    let name = format!("cold-{runtime}-{i}");
    env.bind_ready(
        &name,
        json!({"runtime": runtime, "handler": crate::handler_of(runtime),
               "code": {"dir": dir_str(code.path())}, "pool": {"min": 0, "max": 1}}),
    )
    .await;
    let started = Instant::now();
    let reply = env.invoke(&name, crate::EVENT).await;
    let took = started.elapsed();
    assert_eq!(
        harness::header(&reply, "Natsfn-Cold-Start").as_deref(),
        Some("true"),
        "{name} was not cold: {}",
        String::from_utf8_lossy(&reply.payload)
    );
    env.bindings.delete(&name).await.expect("delete");
    took
}

/// How the greedy handler was stopped, and the resident MB the node saw then (the
/// polling node says it; the kernel's limit is exact, so the sandbox's is `None`).
async fn overshoot(env: &Env, code: &tempfile::TempDir, i: usize) -> (Option<u64>, String) {
    let name = format!("greedy-{i}");
    env.bind_ready(
        &name,
        json!({"runtime": "python3", "handler": "app.handler", "memory_mb": MEMORY_MB,
               "timeout_ms": 60_000, "code": {"dir": dir_str(code.path())}}),
    )
    .await;
    let reply = env.invoke(&name, "{}").await;
    let error = harness::json(&reply);
    env.bindings.delete(&name).await.expect("delete");
    let message = error["errorMessage"].as_str().unwrap_or_default();
    assert_eq!(error["errorType"], "Runtime.OutOfMemory", "{error}");
    if message.contains("OOM killer") {
        return (None, "the kernel (cgroup limit)".into());
    }
    let mb = message
        .split('(')
        .nth(1)
        .and_then(|s| s.split(" MB resident").next())
        .and_then(|n| n.trim().parse().ok());
    (mb, "polling every 100 ms".into())
}

impl Env {
    /// A server of its own and the node `start` makes on it.
    async fn with_node(start: impl FnOnce(&NatsServer) -> Node) -> Env {
        let server = NatsServer::start();
        let node = start(&server);
        Env::with(server, node).await
    }
}
