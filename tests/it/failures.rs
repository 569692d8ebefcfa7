//! What happens when a worker misbehaves beyond what every runtime shares (a timeout's
//! 504, a dying worker's 502: see conformance): a timeout takes the processes the
//! handler started along, and code that cannot start is not restarted in a tight loop.

use futures::StreamExt;

use crate::harness::*;

const SLOW_OR_FAST: &str = r#"
import json, os, subprocess, time, uuid
def handler(event, context):
    if event.get("children"):
        # Two grandchildren in the worker's process group, as `sh -c 'sleep 100 & sleep 100'`,
        # marked with a variable of their own: the worker's pids are its sandbox's.
        family = uuid.uuid4().hex
        subprocess.Popen(["sh", "-c", "sleep 100 & sleep 100"], env=dict(os.environ, FAMILY=family))
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])
        worker = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        print("family", json.dumps({"family": family, "worker": worker, "started": started}), flush=True)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"worker": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]}
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
    // The worker's own pids and groups are its sandbox's: the worker is known by its log
    // stream and start time, the processes it started by their FAMILY.
    let family: serde_json::Value = loop {
        let msg = tokio::time::timeout(DEADLINE, logs.next())
            .await
            .expect("family log line")
            .expect("log stream");
        if let Some(family) = String::from_utf8_lossy(&msg.payload).strip_prefix("family ") {
            break serde_json::from_str(family).expect("family json");
        }
    };
    let worker = family["worker"].as_str().expect("worker").to_owned();
    let started = family["started"].as_u64();
    let children = format!("FAMILY={}", family["family"].as_str().expect("family"));
    eventually("no process left of the worker's", || async {
        (env.node.worker_pid_of(&worker, started).is_none()
            && processes_with_env(&children).is_empty())
        .then_some(())
    })
    .await;
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
