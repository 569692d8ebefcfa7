//! What happens when a worker misbehaves beyond what every runtime shares (a timeout's
//! 504, a dying worker's 502: see conformance): a timeout takes the processes the
//! handler started along, and code that cannot start is not restarted in a tight loop.

use futures::StreamExt;

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
    return {"pid": os.getpid()}
"#;

fn spec(dir: &str) -> Binding {
    Binding::python("app.handler", dir)
        .timeout_ms(500)
        .pool(1, 1)
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
