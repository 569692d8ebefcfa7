//! Rolling updates on one node: a change of code under load fails no request, costs
//! no cold start, and once a reply of the new code has gone out no request gets the
//! old one; new code that cannot run leaves the old serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use natsfn_protocol::FunctionState;
use serde_json::json;
use tokio::sync::Mutex;

use crate::harness::*;

/// A handler that says which version it is; the new version's init is slow, so a
/// switch that waited for it would show.
fn versioned(version: u32, init_sleep_s: f64) -> String {
    format!(
        "import time\ntime.sleep({init_sleep_s})\ndef handler(event, context):\n    return {{\"version\": {version}}}\n"
    )
}

fn spec(dir: &str) -> Binding {
    Binding::python("app.handler", dir).pool(2, 4)
}

/// One request of a steady load: when it was sent, when its answer came, and the
/// answer (the version, or why it failed).
struct Sample {
    sent: Instant,
    answered: Instant,
    outcome: Result<(u64, bool), String>,
}

/// Sends a request every `every` on `subject` (each in a task of its own, so a slow
/// one does not hold back the next) until `stop` is set, and collects what came back.
async fn steady_load(
    client: async_nats::Client,
    subject: &'static str,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Sample> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut tick = tokio::time::interval(every);
    let mut tasks = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tick.tick().await;
        let (client, samples) = (client.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let request = async_nats::Request::new()
                .payload("{}".into())
                .timeout(Some(Duration::from_secs(10)));
            let outcome = match client.send_request(subject, request).await {
                Err(e) => Err(format!("request failed: {e}")),
                Ok(msg) if error_code(&msg).is_some() => Err(format!(
                    "error reply: {:?}",
                    String::from_utf8_lossy(&msg.payload)
                )),
                Ok(msg) => match json(&msg)["version"].as_u64() {
                    Some(v) => Ok((v, header(&msg, "Natsfn-Cold-Start").is_some())),
                    None => Err(format!("no version in {:?}", json(&msg))),
                },
            };
            samples.lock().await.push(Sample {
                sent,
                answered: Instant::now(),
                outcome,
            });
        }));
    }
    for task in tasks {
        task.await.expect("request task");
    }
    Arc::try_unwrap(samples)
        .map_err(|_| ())
        .expect("all tasks done")
        .into_inner()
}

#[tokio::test]
async fn a_new_version_under_load_fails_nothing_and_old_code_stops_at_the_switch() {
    let env = Env::start().await;
    let v1 = code_dir(&[("app.py", &versioned(1, 0.0))]);
    let v2 = code_dir(&[("app.py", &versioned(2, 0.5))]);
    env.bind_ready("rolling", spec(&dir_str(v1.path()))).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // About 200 requests a second.
    let load = tokio::spawn(steady_load(
        env.client.clone(),
        "natsfn.invoke.rolling",
        Duration::from_millis(5),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deployed = Instant::now();
    let revision = env.put_binding("rolling", spec(&dir_str(v2.path()))).await;
    env.wait_status("rolling", |s| {
        s.revision >= revision && s.state == FunctionState::Ready
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = load.await.expect("load");

    let failed: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    let first_new = samples
        .iter()
        .filter(|s| matches!(s.outcome, Ok((2, _))))
        .map(|s| s.answered)
        .min()
        .expect("a reply of version 2");
    let old_after: Vec<Duration> = samples
        .iter()
        .filter(|s| s.sent > first_new && matches!(s.outcome, Ok((1, _))))
        .map(|s| s.sent - first_new)
        .collect();
    assert!(
        old_after.is_empty(),
        "{} requests sent after the first version-2 reply got version 1 (sent that long after it: {:?})",
        old_after.len(),
        &old_after[..old_after.len().min(5)]
    );
    let old = samples
        .iter()
        .filter(|s| matches!(s.outcome, Ok((1, _))))
        .count();
    let new = samples
        .iter()
        .filter(|s| matches!(s.outcome, Ok((2, _))))
        .count();
    assert!(old > 0 && new > 0, "old {old}, new {new}");
    let cold_new = samples
        .iter()
        .filter(|s| matches!(s.outcome, Ok((2, true))))
        .count();
    assert_eq!(cold_new, 0, "the switch waited for a starting worker");
    println!(
        "rolling update: {} requests, 0 failed; first version-2 reply {} ms after the put (its init takes 500 ms)",
        samples.len(),
        (first_new - deployed).as_millis()
    );
}

#[tokio::test]
async fn new_code_that_cannot_run_leaves_the_old_revision_serving_and_says_why() {
    let env = Env::start().await;
    let v1 = code_dir(&[("app.py", &versioned(1, 0.0))]);
    let broken = code_dir(&[("app.py", "raise RuntimeError('the new code is broken')\n")]);
    let good = env.bind_ready("kept", spec(&dir_str(v1.path()))).await;

    // Code that fails its init.
    let revision = env.put_binding("kept", spec(&dir_str(broken.path()))).await;
    let status = env
        .wait_status("kept", |s| {
            s.revision >= revision && s.state != FunctionState::Starting
        })
        .await;
    assert_ne!(status.state, FunctionState::Ready, "{status:?}");
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("the new code is broken")
            && reason.contains(&format!("still serving revision {good}")),
        "{reason}"
    );
    for _ in 0..5 {
        assert_eq!(json(&env.invoke("kept", "{}").await), json!({"version": 1}));
    }

    // Code that is not there at all.
    let revision = env
        .put_binding("kept", spec("/nonexistent/natsfn-code"))
        .await;
    let status = env
        .wait_status("kept", |s| {
            s.revision >= revision && s.state == FunctionState::Error
        })
        .await;
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("/nonexistent/natsfn-code")
            && reason.contains(&format!("still serving revision {good}")),
        "{reason}"
    );
    assert_eq!(json(&env.invoke("kept", "{}").await), json!({"version": 1}));

    // Fixed: the new code takes over.
    let v3 = code_dir(&[("app.py", &versioned(3, 0.0))]);
    env.bind_ready("kept", spec(&dir_str(v3.path()))).await;
    assert_eq!(json(&env.invoke("kept", "{}").await), json!({"version": 3}));
}

/// `natsfn deploy` of `code` as function `rolling-pkg`; its stdout.
async fn deploy(env: &Env, code: &std::path::Path) -> String {
    let out = run_cli(
        &env.server,
        &[
            "deploy",
            &dir_str(code),
            "-f",
            "rolling-pkg",
            "--runtime",
            "python3",
            "--handler",
            "app.handler",
            "--min",
            "2",
            "--max",
            "4",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "deploy failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn redeploying_a_package_under_load_fails_nothing_and_a_bad_digest_leaves_it_serving() {
    let env = Env::start().await;
    let v1 = code_dir(&[("app.py", &versioned(1, 0.0))]);
    let v2 = code_dir(&[("app.py", &versioned(2, 0.3))]);
    deploy(&env, v1.path()).await;
    assert_eq!(
        json(&env.invoke("rolling-pkg", "{}").await),
        json!({"version": 1})
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(steady_load(
        env.client.clone(),
        "natsfn.invoke.rolling-pkg",
        Duration::from_millis(5),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deployed = Instant::now();
    deploy(&env, v2.path()).await; // returns once a node reports the new revision ready
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = load.await.expect("load");
    let failed = samples.iter().filter(|s| s.outcome.is_err()).count();
    assert_eq!(failed, 0, "{failed} of {} failed", samples.len());
    let first_new = samples
        .iter()
        .filter(|s| matches!(s.outcome, Ok((2, _))))
        .map(|s| s.answered)
        .min()
        .expect("a reply of version 2");
    let old_after = samples
        .iter()
        .filter(|s| s.sent > first_new && matches!(s.outcome, Ok((1, _))))
        .count();
    assert_eq!(old_after, 0, "version 1 after the first version-2 reply");
    println!(
        "redeploy under load: {} requests, 0 failed; first version-2 reply {} ms after natsfn deploy started",
        samples.len(),
        (first_new - deployed).as_millis()
    );

    // A binding pinned to a digest the store does not have: version 2 serves on.
    let entry = env
        .bindings
        .entry("rolling-pkg")
        .await
        .expect("kv")
        .expect("bound");
    let mut spec: serde_json::Value = serde_json::from_slice(&entry.value).expect("json");
    spec["code"]["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
    let revision = env.put_binding("rolling-pkg", spec).await;
    let status = env
        .wait_status("rolling-pkg", |s| {
            s.revision >= revision && s.state == FunctionState::Error
        })
        .await;
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.starts_with("Runtime.PackageDigestMismatch")
            && reason.contains("still serving revision"),
        "{reason}"
    );
    assert_eq!(
        json(&env.invoke("rolling-pkg", "{}").await),
        json!({"version": 2})
    );
}
