//! The cost of `--http-auth` on the gateway (`cargo bench --bench natsfn --
//! --gateway-auth-only`): the Invoke API through a node without it and a node with it,
//! each node on its own nats-server with the same echo function, and function URLs with
//! `url.auth` `NONE` and `AWS_IAM` on the node with it, in interleaved rounds. Signed requests carry a signature botocore made at the start of
//! the round (valid for 5 minutes, replayable: AWS keeps no replay cache), so the load
//! generator does no signing and only the gateway's checking is measured. The check's
//! own CPU time, apart from everything else a request costs, is timed in-process on the
//! gateway's code (`src/gateway/sigv4.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

use crate::gateway::{throughput, Way, IN_FLIGHT};
use crate::harness::{
    code_dir, dir_str, free_port, http_auth_file, sigv4_headers, Env, HttpKey, NatsServer, Node,
};
use crate::load::Latency;

/// The gateway's own checking code, as the node runs it (its unit tests come along in
/// test builds, and are not run here).
#[allow(dead_code)]
#[path = "../../src/gateway/sigv4.rs"]
mod check;

const KEY: HttpKey = HttpKey {
    id: "AKIDBENCH",
    secret: "bench-secret",
    functions: &["*"],
};

/// Measures, and prints a table: without and with `--http-auth`, side by side.
pub async fn measure(payload: &Bytes, rounds: usize, latency: usize, requests: usize) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = http_auth_file(dir.path(), &[KEY]);
    let code = code_dir(&[("app.py", crate::ECHO_PY)]);
    let open = Gateway::start(&[], &code, "NONE").await;
    let checked = Gateway::start(&["--http-auth", &dir_str(&keys)], &code, "AWS_IAM").await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("HTTP client");
    // (name, gateway, path, signed)
    let rows = [
        ("Invoke API, no --http-auth", &open, INVOKE, false),
        (
            "Invoke API, --http-auth (SigV4 checked)",
            &checked,
            INVOKE,
            true,
        ),
        // Both function URL rows on the node with `--http-auth`: one node, one server,
        // so the difference is the check alone.
        (
            "function URL, url.auth NONE, same node",
            &checked,
            URL_OPEN,
            false,
        ),
        (
            "function URL, url.auth AWS_IAM (SigV4 checked)",
            &checked,
            URL,
            true,
        ),
    ];
    let mut samples: Vec<Vec<Duration>> = rows.iter().map(|_| Vec::new()).collect();
    let mut rates: Vec<Vec<f64>> = rows.iter().map(|_| Vec::new()).collect();
    for round in 0..=rounds {
        for (i, (_, gateway, path, signed)) in rows.iter().enumerate() {
            let url = format!("{}{path}", gateway.base);
            let headers = if *signed {
                signature(&url, payload).await
            } else {
                HeaderMap::new()
            };
            let way = Arc::new(Way::Http(http.clone(), url, headers));
            if round == 0 {
                // Warm-up: workers, pooled connections.
                for _ in 0..200 {
                    way.one(payload).await;
                }
                continue;
            }
            for _ in 0..latency / rounds {
                samples[i].push(way.one(payload).await);
            }
            rates[i].push(throughput(&way, payload, requests / rounds).await);
        }
    }
    let per_check = check_cost(&keys, &format!("{}{INVOKE}", checked.base), payload).await;
    let mut md = String::from(
        "\n| gateway, echo python3, same run | p50 µs | p99 µs | req/s @64 | p50 × without | req/s × without |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut without = (0.0, 0.0);
    for (((name, _, _, signed), samples), mut rates) in rows.iter().zip(samples).zip(rates) {
        rates.sort_by(f64::total_cmp);
        let rate = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
        let latency = Latency::from_samples(samples);
        if !signed {
            without = (latency.p50_us, rate);
        }
        md.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
            latency.p50_us,
            latency.p99_us,
            rate,
            latency.p50_us / without.0,
            rate / without.1,
        ));
    }
    md.push_str(&format!(
        "\nOne SigV4 check (claim and verify, the body hashed) of such a request: {per_check:.1} µs of CPU, timed in-process.\n"
    ));
    md
}

/// Mean time of the gateway's claim and verify of one signed Invoke API request.
async fn check_cost(keys: &std::path::Path, url: &str, payload: &Bytes) -> f64 {
    let keys = check::Keys::load(keys).expect("the --http-auth file");
    // As it arrives: the path alone, the host in its header.
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut request = axum::http::Request::post(INVOKE).header("host", host);
    for (name, value) in signature(url, payload).await.iter() {
        request = request.header(name, value);
    }
    let (parts, ()) = request.body(()).expect("a request").into_parts();
    const CHECKS: u32 = 100_000;
    let started = Instant::now();
    for _ in 0..CHECKS {
        let claim = keys
            .claim(&parts.headers, SystemTime::now())
            .expect("a claim");
        claim
            .verify(&parts, payload, "echo-python", "lambda:InvokeFunction")
            .expect("a valid signature");
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(CHECKS)
}

const INVOKE: &str = "/2015-03-31/functions/echo-python/invocations";
const URL: &str = "/echo-python";
/// The same echo, `url.auth` `NONE`, on the node with `--http-auth`.
const URL_OPEN: &str = "/echo-open";

struct Gateway {
    base: String,
    _env: Env,
}

impl Gateway {
    /// A nats-server and a node serving the gateway with `args`, the echo function bound
    /// with `url.auth` `auth`.
    async fn start(args: &[&str], code: &tempfile::TempDir, auth: &str) -> Gateway {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut all = vec!["--http", addr.as_str()];
        all.extend_from_slice(args);
        let server = NatsServer::start();
        let node = Node::start_with(&server, "node-a", &all);
        let env = Env::with(server, node).await;
        for (name, auth) in [("echo-python", auth), ("echo-open", "NONE")] {
            env.bind_ready(
                name,
                json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(code.path())},
                       "pool": {"min": 2, "max": 2}, "url": {"auth": auth}}),
            )
            .await;
        }
        Gateway {
            base: format!("http://{addr}"),
            _env: env,
        }
    }
}

/// The headers of a POST of `payload` to `url` signed by `KEY`, now.
async fn signature(url: &str, payload: &Bytes) -> HeaderMap {
    let body = std::str::from_utf8(payload).expect("a UTF-8 payload");
    let mut headers = HeaderMap::new();
    for (name, value) in sigv4_headers("POST", url, body, KEY.id, KEY.secret, None).await {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    headers
}
