//! Where the CPU goes per request at 64 in flight: the nats-server's share and the
//! responder's (for natsfn, the node and the function's workers apart), read from
//! /proc around one throughput run per target, so that every run reports both.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::harness::children_of;
use crate::load;

/// Who answers a target's requests.
pub enum Responder {
    /// A natsfn node; its workers are those of this function.
    Natsfn { node: u32, function: &'static str },
    /// A process of its own (the bare echo, a hand-written service).
    Process(u32),
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuPerRequest {
    pub target: String,
    pub per_second: f64,
    pub server_us: f64,
    /// natsfn only: the node process and the function's worker processes.
    pub node_us: Option<f64>,
    pub workers_us: Option<f64>,
    /// All of the responder's processes.
    pub responder_us: f64,
}

/// One run of `requests` at 64 in flight on `subject`, with the CPU time of `server`
/// and of the responder read around it.
pub async fn measure(
    target: &str,
    client: &async_nats::Client,
    subject: &str,
    payload: &Bytes,
    requests: usize,
    server: u32,
    responder: &Responder,
) -> CpuPerRequest {
    let (own, workers) = match responder {
        Responder::Natsfn { node, function } => (*node, workers_of(*node, function)),
        Responder::Process(pid) => (*pid, Vec::new()),
    };
    let read = || (cpu_time(&[server]), cpu_time(&[own]), cpu_time(&workers));
    let before = read();
    let t = load::throughput(std::slice::from_ref(client), subject, payload, 64, requests).await;
    let after = read();
    let per = |a: Duration, b: Duration| (a - b).as_secs_f64() * 1e6 / requests as f64;
    let (own_us, workers_us) = (per(after.1, before.1), per(after.2, before.2));
    let natsfn = matches!(responder, Responder::Natsfn { .. });
    CpuPerRequest {
        target: target.to_owned(),
        per_second: t.per_second,
        server_us: per(after.0, before.0),
        node_us: natsfn.then_some(own_us),
        workers_us: natsfn.then_some(workers_us),
        responder_us: own_us + workers_us,
    }
}

/// The node's worker processes that run `function` (their environment names it): the
/// node's descendants, since a sandboxed runtime runs below its bubblewrap processes.
fn workers_of(node: u32, function: &str) -> Vec<u32> {
    let wanted = format!("AWS_LAMBDA_FUNCTION_NAME={function}");
    let mut all = Vec::new();
    let mut pending = children_of(node);
    while let Some(pid) = pending.pop() {
        pending.extend(children_of(pid));
        all.push(pid);
    }
    all.into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_bytes()))
        })
        .collect()
}

/// CPU time of all of the processes' threads (ns precision, from schedstat).
pub fn cpu_time(pids: &[u32]) -> Duration {
    let mut ns = 0u64;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += stat
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

/// The table of the report.
pub fn markdown(rows: &[CpuPerRequest]) -> String {
    let reference = rows
        .iter()
        .find(|r| r.target.starts_with("nats-py"))
        .map_or(f64::NAN, |r| r.server_us);
    let mut md = String::from(
        "\n| CPU per request, 64 in flight (one run each) | req/s | nats-server µs | node µs | workers µs | responder µs | nats-server × nats-py service's |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let opt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
    for r in rows {
        md.push_str(&format!(
            "| {} | {:.0} | {:.1} | {} | {} | {:.1} | {:.2} |\n",
            r.target,
            r.per_second,
            r.server_us,
            opt(r.node_us),
            opt(r.workers_us),
            r.responder_us,
            r.server_us / reference,
        ));
    }
    md
}
