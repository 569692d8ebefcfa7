//! `natsfn dev`: its own nats-server and a node, serving the HTTP gateway.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn natsfn_dev_serves_the_gateway_and_the_readme_curl_answers() {
    let nats_port = free_port();
    let http_port = free_port();
    let data = tempfile::tempdir().expect("temp dir");
    let log = std::fs::File::create(data.path().join("dev.log")).expect("dev log");
    let mut dev = Dev(std::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .args(["dev", "--port", &nats_port.to_string()])
        .args(["--http", &format!("127.0.0.1:{http_port}")])
        .arg("--data-dir")
        .arg(data.path().join("store"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start natsfn dev"));
    let url = format!("nats://127.0.0.1:{nats_port}");
    let client = eventually("natsfn dev's nats-server to accept connections", || {
        let url = url.clone();
        async move { async_nats::connect(&url).await.ok() }
    })
    .await;
    let js = async_nats::jetstream::new(client.clone());
    let bindings = natsfn_actors::buckets::bindings(&js)
        .await
        .expect("bindings");
    let status = natsfn_actors::buckets::status(&js).await.expect("status");
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-python");
    let spec = Binding::python("app.handler", hello);
    let revision = bindings
        .put("hello", spec.bytes())
        .await
        .expect("bind hello");
    wait_status(&status, "hello", |s| {
        s.revision >= revision && s.state == natsfn_protocol::FunctionState::Ready
    })
    .await;
    let answer = reqwest::get(format!("http://127.0.0.1:{http_port}/hello"))
        .await
        .expect("curl the function URL");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&answer.bytes().await.expect("body")).expect("a JSON result");
    assert_eq!(body, json!({"message": "hello, world"}));
    dev.interrupt();
    let exited = eventually("natsfn dev to exit", || {
        let status = dev.0.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    assert!(exited.success(), "{exited:?}");
}

/// A `natsfn dev` process, stopped (with its nats-server) when the test ends.
struct Dev(std::process::Child);

impl Dev {
    /// Ctrl-C, as a person would stop it: the node drains, then the server stops.
    fn interrupt(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        self.interrupt();
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn natsfn_dev_secure_requires_credentials_and_each_role_does_its_part() {
    let nats_port = free_port();
    let data = tempfile::tempdir().expect("temp dir");
    let log_path = data.path().join("dev.log");
    let log = std::fs::File::create(&log_path).expect("dev log");
    let store = data.path().join("store");
    let _dev = Dev(std::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .args([
            "dev",
            "--secure",
            "--no-http",
            "--port",
            &nats_port.to_string(),
        ])
        .arg("--data-dir")
        .arg(&store)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start natsfn dev --secure"));
    let printed = eventually("natsfn dev --secure to say how to connect", || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        async move { text.contains("invoker (invoke only)").then_some(text) }
    })
    .await;
    let secure = store.join("secure");
    let admin = dir_str(&secure.join("admin.nk"));
    let invoker = dir_str(&secure.join("invoker.nk"));
    assert!(
        printed.contains(&admin) && printed.contains(&invoker),
        "{printed}"
    );

    let url = format!("nats://127.0.0.1:{nats_port}");
    let anonymous = run_cli_on(&url, &["ls"]).await;
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("authorization violation"));

    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello-python");
    let bind = [
        "--nkey",
        &admin,
        "deploy",
        hello,
        "-f",
        "hello",
        "--runtime",
        "python3",
        "--handler",
        "app.handler",
    ];
    let deployed = run_cli_on(&url, &bind).await;
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let invoked = run_cli_on(&url, &["--nkey", &invoker, "invoke", "hello", "{}"]).await;
    assert!(
        invoked.status.success(),
        "{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    assert!(String::from_utf8_lossy(&invoked.stdout).contains("hello, world"));
    let refused = run_cli_on(&url, &["--nkey", &invoker, "rm", "hello"]).await;
    assert!(
        !refused.status.success(),
        "an invoker may not remove a function"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Permissions Violation"));
}
