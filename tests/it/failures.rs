//! What happens when a worker misbehaves: runs too long, dies, or leaves children.
//! Each failure answers its caller with the right code and the pool recovers.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::harness::*;

const SLOW_OR_FAST: &str = r#"
import os, subprocess, time
def handler(event, context):
    if event.get("children"):
        # Two grandchildren in the worker's process group, as `sh -c 'sleep 100 & sleep 100'`.
        subprocess.Popen(["sh", "-c", "sleep 100 & sleep 100"])
        print("pgid", os.getpgid(0), flush=True)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("exit"):
        os._exit(3)
    return {"pid": os.getpid()}
"#;

fn spec(dir: &str) -> Binding {
    Binding::python("app.handler", dir)
        .timeout_ms(500)
        .pool(1, 1)
}

#[tokio::test]
async fn a_handler_past_its_timeout_gets_504_and_the_pool_recovers() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", SLOW_OR_FAST)]);
    env.bind_ready("slow", spec(&dir_str(code.path()))).await;
    let before = json(&env.invoke("slow", "{}").await)["pid"].clone();

    let reply = env.invoke("slow", r#"{"sleep": 30}"#).await;
    assert_eq!(error_code(&reply), Some(504));
    let body = json(&reply);
    assert_eq!(body["errorType"], "Sandbox.Timedout");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("0.50 seconds"),
        "{body}"
    );

    let after = env.invoke("slow", "{}").await;
    assert_eq!(error_code(&after), None, "{:?}", after);
    assert_ne!(
        json(&after)["pid"],
        before,
        "a timed-out worker is replaced"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", SLOW_OR_FAST)]);
    env.bind_ready("family", spec(&dir_str(code.path()))).await;
    let mut logs = env
        .client
        .subscribe("natsfn.logs.family")
        .await
        .expect("subscribe");

    let reply = env
        .invoke("family", r#"{"children": true, "sleep": 30}"#)
        .await;
    assert_eq!(error_code(&reply), Some(504));
    let pgid: i32 = loop {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .expect("pgid log line")
            .expect("log stream");
        if let Some(pgid) = String::from_utf8_lossy(&msg.payload).strip_prefix("pgid ") {
            break pgid.trim().parse().expect("pgid");
        }
    };
    eventually("no process left in the worker's group", || async {
        members_of_group(pgid).is_empty().then_some(())
    })
    .await;
}

/// Processes (not zombies) whose process group is `pgid`, read from /proc.
fn members_of_group(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, pgrp, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

#[tokio::test]
async fn a_worker_that_exits_mid_invocation_gets_502_at_once_and_the_next_succeeds() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", SLOW_OR_FAST)]);
    env.bind_ready("crashy", spec(&dir_str(code.path())).timeout_ms(10_000))
        .await;

    let started = Instant::now();
    let reply = env.invoke("crashy", r#"{"exit": true}"#).await;
    let took = started.elapsed();
    assert_eq!(error_code(&reply), Some(502), "{:?}", reply);
    assert_eq!(json(&reply)["errorType"], "Runtime.ExitError");
    assert!(
        took < Duration::from_secs(1),
        "the crash was answered after {took:?}, like a timeout"
    );
    let next = env.invoke("crashy", "{}").await;
    assert_eq!(error_code(&next), None, "{:?}", next);
}

#[tokio::test]
async fn a_nodejs_worker_that_exits_gets_502_and_the_next_succeeds() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.js",
        "exports.handler = async (event) => { if (event.exit) process.exit(2); return {ok: true}; };",
    )]);
    env.bind_ready(
        "nodecrash",
        Binding::nodejs("app.handler", &code)
            .timeout_ms(10000)
            .pool(1, 1),
    )
    .await;
    let started = Instant::now();
    let reply = env.invoke("nodecrash", r#"{"exit": true}"#).await;
    assert_eq!(error_code(&reply), Some(502));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        json(&env.invoke("nodecrash", "{}").await),
        json!({"ok": true})
    );
}

#[tokio::test]
async fn code_that_cannot_start_answers_503_and_backs_off_instead_of_spinning() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", "import no_such_module\n")]);
    let revision = env
        .put_binding("broken", Binding::python("app.handler", &code).pool(1, 4))
        .await;
    let status = env
        .wait_status("broken", |s| s.revision == revision && s.reason.is_some())
        .await;
    assert!(
        status
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("Runtime.ImportModuleError"),
        "{status:?}"
    );
    let reply = env.invoke("broken", "{}").await;
    assert_eq!(error_code(&reply), Some(503));
    assert_eq!(json(&reply)["errorType"], "Runtime.ImportModuleError");
    // Repeated failures become a crashloop, with growing pauses between attempts.
    let status = env
        .wait_status("broken", |s| {
            s.state == natsfn_protocol::FunctionState::Crashloop
        })
        .await;
    assert!(status
        .reason
        .unwrap_or_default()
        .contains("No module named"));
    let starts = env.node.log().matches("worker process started").count();
    assert!(
        starts < 10,
        "{starts} worker starts in a few seconds: the restart loop spins"
    );
}
