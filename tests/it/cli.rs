//! The natsfn command line against a running node: what the README's tour shows.

use std::process::Output;

use serde_json::{json, Value};

use crate::harness::*;

async fn natsfn(env: &Env, args: &[&str]) -> Output {
    run_cli(&env.server, args).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn bind_invoke_edit_subjects_list_get_and_remove() {
    let env = Env::start().await;
    let out = natsfn(
        &env,
        &[
            "bind",
            "-f",
            "hello",
            "--runtime",
            "python3",
            "--handler",
            "app.handler",
            "--code",
            &example("hello-python"),
            "-s",
            "myfunction.lambda",
            "--timeout",
            "2s",
            "--min",
            "1",
            "--max",
            "2",
            "--queue",
            "10",
            "--idle",
            "30s",
            "--max-invocations",
            "1000",
            "--env",
            "A=1",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("hello is ready on node node-a"),
        "{}",
        stdout(&out)
    );

    let out = natsfn(&env, &["invoke", "hello", r#"{"name":"cli"}"#]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!({"message": "hello, cli"})
    );
    let reply = env.request("myfunction.lambda", r#"{"name":"nats"}"#).await;
    assert_eq!(json(&reply), json!({"message": "hello, nats"}));

    // Concurrent subject edits: compare-and-swap keeps every one of them.
    let subjects: Vec<String> = (0..5).map(|i| format!("extra.s{i}")).collect();
    let edits = subjects.iter().map(|s| {
        let env = &env;
        async move { natsfn(env, &["nats", "bind", "-s", s, "-f", "hello"]).await }
    });
    for out in futures::future::join_all(edits).await {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = natsfn(&env, &["nats", "unbind", "-s", "extra.s0", "-f", "hello"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = natsfn(&env, &["get", "hello"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Value = serde_json::from_slice(&out.stdout).expect("get prints JSON");
    let mut bound: Vec<&str> = got["spec"]["subjects"]
        .as_array()
        .expect("subjects")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    bound.sort();
    assert_eq!(
        bound,
        [
            "extra.s1",
            "extra.s2",
            "extra.s3",
            "extra.s4",
            "myfunction.lambda"
        ]
    );
    assert_eq!(got["spec"]["env"], json!({"A": "1"}));
    assert_eq!(got["spec"]["timeout_ms"], json!(2000));
    assert_eq!(
        got["spec"]["pool"],
        json!({"min": 1, "max": 2, "queue": 10, "idle_ms": 30000, "max_invocations": 1000})
    );
    assert_eq!(got["status"]["node"], json!("node-a"));

    // The edited subjects are served once the node has the latest revision.
    let revision = got["revision"].as_u64().expect("revision");
    env.wait_status("hello", |s| s.revision >= revision).await;
    let reply = env.request("extra.s3", "{}").await;
    assert_eq!(json(&reply), json!({"message": "hello, world"}));

    let out = natsfn(&env, &["ls"]).await;
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("hello ") && l.contains("python3")),
        "{}",
        stdout(&out)
    );

    let out = natsfn(&env, &["rm", "hello"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = eventually("hello to stop answering", || async {
        let out = natsfn(&env, &["invoke", "hello"]).await;
        (!out.status.success()).then_some(out)
    })
    .await;
    assert!(
        stderr(&out).contains("nobody answers on natsfn.invoke.hello"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn invoke_reports_function_errors_on_stderr_with_a_failing_exit() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        "def handler(e, c):\n    raise KeyError('missing')\n",
    )]);
    env.bind_ready("raiser", Binding::python("app.handler", &code))
        .await;
    let out = natsfn(&env, &["invoke", "raiser", "{}"]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.starts_with("error 500 KeyError"), "{err}");
    assert!(err.contains(r#""errorType":"KeyError""#), "{err}");
}

#[tokio::test]
async fn bind_rejects_a_bad_spec_before_writing_it() {
    let env = Env::start().await;
    let out = natsfn(
        &env,
        &[
            "bind",
            "-f",
            "bad",
            "--runtime",
            "cobol",
            "--handler",
            "a.b",
            "--code",
            &example("hello-python"),
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"runtime: expected one of "python3", "nodejs", "java", "provided", got "cobol""#
        ),
        "{}",
        stderr(&out)
    );
    assert!(env.bindings.get("bad").await.expect("kv get").is_none());
}
