//! The load generator: async-nats requests at a fixed number in flight, timed per
//! request. Its limits are stated in the report: one connection by default, and the
//! load runs in the same process as the timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

impl Latency {
    pub fn from_samples(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        Latency {
            samples: samples.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
        }
    }
}

/// Fails loudly on an error reply: a benchmark of errors measures nothing.
async fn one(client: &async_nats::Client, subject: &str, payload: Bytes) -> Duration {
    let started = Instant::now();
    let reply = client
        .request(subject.to_owned(), payload)
        .await
        .unwrap_or_else(|e| panic!("request on {subject} failed: {e}"));
    let took = started.elapsed();
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
    {
        panic!(
            "error reply {} on {subject}: {}",
            code.as_str(),
            String::from_utf8_lossy(&reply.payload)
        );
    }
    took
}

/// One request at a time, `count` of them, each timed.
pub async fn timed(
    client: &async_nats::Client,
    subject: &str,
    payload: &Bytes,
    count: usize,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        samples.push(one(client, subject, payload.clone()).await);
    }
    samples
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub in_flight: usize,
    pub connections: usize,
    pub requests: usize,
    pub per_second: f64,
    /// Each round's rate, when the figure is the median of several rounds.
    pub rounds: Vec<f64>,
}

impl Throughput {
    pub fn median_of(
        in_flight: usize,
        connections: usize,
        rounds: Vec<f64>,
        requests: usize,
    ) -> Throughput {
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let per_second = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        Throughput {
            in_flight,
            connections,
            requests,
            per_second,
            rounds,
        }
    }
}

/// `in_flight` concurrent request loops over `clients` connections, `requests` in all.
pub async fn throughput(
    clients: &[async_nats::Client],
    subject: &str,
    payload: &Bytes,
    in_flight: usize,
    requests: usize,
) -> Throughput {
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(requests));
    let started = Instant::now();
    let loops: Vec<_> = (0..in_flight)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let subject = subject.to_owned();
            let payload = payload.clone();
            let remaining = remaining.clone();
            tokio::spawn(async move {
                use std::sync::atomic::Ordering;
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    one(&client, &subject, payload.clone()).await;
                }
            })
        })
        .collect();
    for l in loops {
        l.await.expect("load loop");
    }
    let elapsed = started.elapsed().as_secs_f64();
    Throughput {
        in_flight,
        connections: clients.len(),
        requests,
        per_second: requests as f64 / elapsed,
        rounds: Vec::new(),
    }
}
