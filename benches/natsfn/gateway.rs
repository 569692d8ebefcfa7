//! The HTTP gateway's overhead: an HTTP request → function → HTTP response, through a
//! function URL and through the Invoke API, next to a direct NATS request to the same
//! function, measured in interleaved rounds on one node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::load::{self, Latency};

pub const IN_FLIGHT: usize = 64;

#[derive(Serialize)]
pub struct GatewayRow {
    pub name: String,
    pub latency: Latency,
    pub per_second_at_64: f64,
}

#[derive(Serialize)]
pub struct GatewayReport {
    pub rows: Vec<GatewayRow>,
}

impl GatewayReport {
    pub fn markdown(&self) -> String {
        let mut md = String::from(
            "\n| HTTP gateway, echo python3 | p50 µs | p99 µs | req/s @64 | p50 × NATS | @64 × NATS |\n|---|---:|---:|---:|---:|---:|\n",
        );
        let Some(nats) = self.rows.first() else {
            return md;
        };
        for row in &self.rows {
            md.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
                row.name,
                row.latency.p50_us,
                row.latency.p99_us,
                row.per_second_at_64,
                row.latency.p50_us / nats.latency.p50_us,
                row.per_second_at_64 / nats.per_second_at_64,
            ));
        }
        md
    }
}

/// One way of invoking the function.
pub enum Way {
    Nats(async_nats::Client, &'static str),
    /// A POST with these headers (a signature made beforehand, or none).
    Http(reqwest::Client, String, reqwest::header::HeaderMap),
}

impl Way {
    pub async fn one(&self, payload: &Bytes) -> Duration {
        let started = Instant::now();
        match self {
            Way::Nats(client, subject) => {
                load::timed(client, subject, payload, 1).await;
            }
            Way::Http(client, url, headers) => {
                let response = client
                    .post(url)
                    .headers(headers.clone())
                    .body(payload.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("POST {url} failed: {e}"));
                assert_eq!(response.status(), 200, "POST {url}");
                assert!(
                    response.headers().get("x-amz-function-error").is_none(),
                    "POST {url}: a function error"
                );
                response.bytes().await.expect("response body");
            }
        }
        started.elapsed()
    }
}

/// `rounds` interleaved rounds of `latency` one-at-a-time requests and `requests` at
/// `IN_FLIGHT`, for a direct NATS request, a function URL and the Invoke API.
pub async fn measure(
    client: async_nats::Client,
    http_base: &str,
    payload: &Bytes,
    rounds: usize,
    latency: usize,
    requests: usize,
) -> GatewayReport {
    // Enough pooled connections for every request in flight (HTTP/1.1: one each).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("HTTP client");
    let ways = [
        (
            "direct NATS request (natsfn.invoke.echo-python)",
            Arc::new(Way::Nats(client, "natsfn.invoke.echo-python")),
        ),
        (
            "function URL (POST /echo-python)",
            Arc::new(Way::Http(
                http.clone(),
                format!("{http_base}/echo-python"),
                Default::default(),
            )),
        ),
        (
            "Invoke API (POST /2015-03-31/functions/echo-python/invocations)",
            Arc::new(Way::Http(
                http,
                format!("{http_base}/2015-03-31/functions/echo-python/invocations"),
                Default::default(),
            )),
        ),
    ];
    for (_, way) in &ways {
        for _ in 0..200 {
            way.one(payload).await;
        }
    }
    let mut samples: Vec<Vec<Duration>> = ways.iter().map(|_| Vec::new()).collect();
    let mut rates: Vec<Vec<f64>> = ways.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (_, way)) in ways.iter().enumerate() {
            for _ in 0..latency / rounds {
                samples[i].push(way.one(payload).await);
            }
            rates[i].push(throughput(way, payload, requests / rounds).await);
        }
    }
    let rows = ways
        .iter()
        .zip(samples)
        .zip(rates)
        .map(|(((name, _), samples), mut rates)| {
            rates.sort_by(f64::total_cmp);
            GatewayRow {
                name: (*name).to_owned(),
                latency: Latency::from_samples(samples),
                per_second_at_64: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
            }
        })
        .collect();
    GatewayReport { rows }
}

pub async fn throughput(way: &Arc<Way>, payload: &Bytes, requests: usize) -> f64 {
    let remaining = Arc::new(AtomicUsize::new(requests));
    let started = Instant::now();
    let loops: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let way = way.clone();
            let payload = payload.clone();
            let remaining = remaining.clone();
            tokio::spawn(async move {
                while remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    way.one(&payload).await;
                }
            })
        })
        .collect();
    for l in loops {
        l.await.expect("load loop");
    }
    requests as f64 / started.elapsed().as_secs_f64()
}
