//! The benchmark's output: JSON for machines, markdown tables for docs/performance.md.

use serde::Serialize;

use crate::cpu::CpuPerRequest;
use crate::events::EventsReport;
use crate::gateway::GatewayReport;
use crate::load::{Latency, Throughput};
use crate::pool::PoolReport;

#[derive(Serialize)]
pub struct Target {
    pub name: String,
    pub subject: String,
    pub latency: Latency,
    pub throughput: Vec<Throughput>,
}

#[derive(Serialize)]
pub struct ColdStart {
    pub runtime: String,
    pub cold: Latency,
    /// A fresh interpreter importing the same handler module.
    pub import: Latency,
}

#[derive(Serialize)]
pub struct DispatcherCpu {
    pub node: String,
    pub us_at_1: f64,
    pub us_at_64: f64,
}

#[derive(Serialize)]
pub struct Report {
    pub machine: String,
    pub date: String,
    pub quick: bool,
    pub targets: Vec<Target>,
    /// Bare echo at 64 in flight over 4 connections: whether one connection limits the load.
    pub generator_check: Throughput,
    pub cold_starts: Vec<ColdStart>,
    pub propagation: Latency,
    pub dispatcher_cpu: Vec<DispatcherCpu>,
    pub cpu: Vec<CpuPerRequest>,
    pub idle_functions: usize,
    pub node_rss_empty_kb: u64,
    pub node_rss_idle_kb: u64,
    pub pool: PoolReport,
    pub gateway: GatewayReport,
    pub events: EventsReport,
}

impl Report {
    fn per_second(target: &Target, in_flight: usize) -> f64 {
        target
            .throughput
            .iter()
            .find(|t| t.in_flight == in_flight)
            .map_or(0.0, |t| t.per_second)
    }

    pub fn markdown(&self) -> String {
        let bare = &self.targets[0];
        let mut md = format!(
            "Measured {} on {}{}. Latency: one request in flight, {} samples each, taken in interleaved rounds. \
             Throughput: one async-nats connection, the median of interleaved rounds; the bare echo reaches {:.0} req/s at 64 in flight over {} connections.\n\n",
            self.date,
            self.machine,
            if self.quick { " (quick run)" } else { "" },
            bare.latency.samples,
            self.generator_check.per_second,
            self.generator_check.connections,
        );
        md.push_str("| target | p50 µs | p99 µs | p99.9 µs | p50 × bare | p99 × bare | req/s @16 | req/s @64 | @64 × bare |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for t in &self.targets {
            md.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} |\n",
                t.name,
                t.latency.p50_us,
                t.latency.p99_us,
                t.latency.p999_us,
                t.latency.p50_us / bare.latency.p50_us,
                t.latency.p99_us / bare.latency.p99_us,
                Self::per_second(t, 16),
                Self::per_second(t, 64),
                Self::per_second(t, 64) / Self::per_second(bare, 64),
            ));
        }
        md.push_str(&crate::cpu::markdown(&self.cpu));
        md.push_str(&self.gateway.markdown());
        md.push_str(&self.events.markdown());
        md.push_str("\n| measure | value |\n|---|---:|\n");
        for c in &self.cold_starts {
            md.push_str(&format!(
                "| cold start {} (pool.min 0, first invocation), p50 / p99 | {:.1} / {:.1} ms |\n| `{}` in a fresh process, p50 / p99 | {:.1} / {:.1} ms |\n",
                c.runtime,
                c.cold.p50_us / 1e3,
                c.cold.p99_us / 1e3,
                match c.runtime.as_str() {
                    "python3" => "python3 -c 'import app'",
                    "java" => "java -cp . Hello",
                    _ => "node -e 'require(\"./app\")'",
                },
                c.import.p50_us / 1e3,
                c.import.p99_us / 1e3,
            ));
        }
        md.push_str(&format!(
            "| binding propagation (KV put → first successful reply, worker start included), p50 / p99 | {:.1} / {:.1} ms |\n",
            self.propagation.p50_us / 1e3,
            self.propagation.p99_us / 1e3
        ));
        for cpu in &self.dispatcher_cpu {
            md.push_str(&format!(
                "| node CPU per invocation ({}), 1 / 64 in flight | {:.1} / {:.1} µs |\n",
                cpu.node, cpu.us_at_1, cpu.us_at_64
            ));
        }
        md.push_str(&format!(
            "| node RSS: no functions / {} idle functions (pool.min 0) | {:.1} / {:.1} MB |\n",
            self.idle_functions,
            self.node_rss_empty_kb as f64 / 1024.0,
            self.node_rss_idle_kb as f64 / 1024.0
        ));
        md.push_str(&self.pool.markdown());
        md
    }
}

/// The machine a report was measured on, as docs/performance.md quotes it.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores of {cpu}")
}
