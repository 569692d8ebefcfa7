//! natsfn's roles (nats-secure/) on a real server with their users: the node serves on
//! its allow list alone, the invoker invokes and can do nothing else, the admin
//! deploys and reads, and an inbox prefix keeps a role to its own replies.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use futures::{FutureExt, StreamExt};
use natsfn_protocol::FunctionState;
use serde_json::{json, Value};

use crate::harness::*;

/// Writes each event it runs to `$RUNS` (a line of JSON), prints a line, and fails
/// when asked to.
const APP: &str = r#"
import json, os

def handler(event, context):
    with open(os.environ["RUNS"], "a") as f:
        f.write(json.dumps(event) + "\n")
    print("ran", context.aws_request_id)
    if isinstance(event, dict) and event.get("fail"):
        raise ValueError("failing on purpose")
    return {"ok": event}
"#;

/// A secured server as shipped, a node connected as `node`, and what the admin sees.
struct Secure {
    server: NatsServer,
    node: Node,
    bindings: Store,
    status: Store,
    code: tempfile::TempDir,
}

impl Secure {
    async fn start(server: NatsServer, node_args: &[&str]) -> Secure {
        Self::start_as(server, node_args, async_nats::ConnectOptions::new()).await
    }

    /// With the admin's client connecting with `admin`.
    async fn start_as(
        server: NatsServer,
        node_args: &[&str],
        admin: async_nats::ConnectOptions,
    ) -> Secure {
        // Unsandboxed: these tests observe runs through a file the handler writes ($RUNS)
        // and test the roles' permissions, not isolation.
        let node_args: Vec<&str> = node_args
            .iter()
            .copied()
            .chain(["--isolation", "none"])
            .collect();
        let node = Node::start_with(&server, "node-a", &node_args);
        // The node, not a client, makes natsfn's buckets and streams.
        eventually("the node to start", || {
            let started = node.log().contains("natsfn node running");
            async move { started.then_some(()) }
        })
        .await;
        let js = async_nats::jetstream::new(ADMIN.client_with(&server, admin).await);
        let bindings = js.get_key_value("natsfn-bindings").await.expect("bindings");
        let status = js.get_key_value("natsfn-status").await.expect("status");
        Secure {
            server,
            node,
            bindings,
            status,
            code: code_dir(&[("app.py", APP)]),
        }
    }

    fn runs(&self) -> PathBuf {
        self.code.path().join("runs.log")
    }

    /// The function's code and `$RUNS`, as a binding to build on.
    fn spec(&self) -> Binding {
        Binding::python("app.handler", self.code.path())
            .env("RUNS", self.runs().to_string_lossy())
            .pool(1, 2)
    }

    /// The admin puts a binding; returns its revision.
    async fn put(&self, name: &str, spec: Binding) -> u64 {
        self.bindings
            .put(name, serde_json::to_vec(&spec.json()).expect("json").into())
            .await
            .expect("the admin puts a binding")
    }

    async fn bind_ready(&self, name: &str, spec: Binding) {
        let revision = self.put(name, spec).await;
        let status = wait_status(&self.status, name, |s| {
            s.revision >= revision && s.state != FunctionState::Starting
        })
        .await;
        assert_eq!(
            status.state,
            FunctionState::Ready,
            "{status:?}\n{}",
            self.log()
        );
    }

    /// Waits until the function has run an event equal to `event`.
    async fn ran(&self, event: Value) {
        eventually(&format!("the function to run {event}"), || {
            let runs = std::fs::read_to_string(self.runs()).unwrap_or_default();
            let seen = runs
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|e| e == event);
            async move { seen.then_some(()) }
        })
        .await;
    }

    fn log(&self) -> String {
        self.node.log()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

/// Every JetStream API, KV, stream, `$SRV` and gateway use of a node, on a server with
/// the shipped roles: each works, and the server refuses the node nothing. Removing
/// any entry of `$NODE` makes this test (or the cluster's R1 one) fail:
/// scripts/node-role-minimal.
#[tokio::test]
async fn the_node_serves_on_its_allow_list_alone_and_is_refused_nothing() {
    let addr = format!("127.0.0.1:{}", free_port());
    let env = Secure::start(secure_server(), &["--http", &addr]).await;
    // Code from natsfn-packages, a bound subject, async destinations, retries.
    let pushed = ADMIN
        .cli(
            &env.server,
            &["package", "push", &dir_str(env.code.path()), "-p", "orders"],
        )
        .await;
    succeeded(&pushed);
    let spec = env
        .spec()
        .code(Code::package("orders"))
        .subjects(["fn.orders.new", "orders.lambda"])
        .max_retries(1)
        .retry_delay_ms(100)
        .on_success("fn.orders.done")
        .on_failure("fn.orders.failed");
    env.bind_ready("orders", spec).await;
    // Placement: the node reads the registry and hands this one to nobody.
    let elsewhere = env.spec().label("region", "mars");
    let revision = env.put("elsewhere", elsewhere).await;
    let placed = wait_status(&env.status, "elsewhere", |s| s.revision >= revision).await;
    assert!(
        placed
            .reason
            .unwrap_or_default()
            .contains("no live node matches"),
        "{}",
        env.log()
    );

    let invoked = INVOKER
        .cli(&env.server, &["invoke", "orders", r#"{"n": 1}"#])
        .await;
    assert_eq!(succeeded(&invoked).trim(), r#"{"ok": {"n": 1}}"#);
    let invoker = INVOKER.client(&env.server).await;
    let reply = request(&invoker, "fn.orders.new", r#"{"n": 2}"#.into()).await;
    assert_eq!(json(&reply), json!({"ok": {"n": 2}}));
    let reply = request(&invoker, "orders.lambda", r#"{"n": 2}"#.into()).await;
    assert_eq!(json(&reply), json!({"ok": {"n": 2}}));
    succeeded(
        &INVOKER
            .cli(&env.server, &["invoke", "--async", "orders", r#"{"n": 3}"#])
            .await,
    );
    env.ran(json!({"n": 3})).await;
    // Retried once (re-enqueued), then a dead letter.
    succeeded(
        &INVOKER
            .cli(
                &env.server,
                &["invoke", "--async", "orders", r#"{"fail": 4}"#],
            )
            .await,
    );
    eventually("a dead letter", || {
        let server = &env.server;
        async move {
            let out = ADMIN.cli(server, &["dlq", "ls", "orders"]).await;
            stdout(&out).contains("failing on purpose").then_some(())
        }
    })
    .await;

    // The gateway: a function URL, the Invoke API with its log tail, an Event.
    // A gateway refused its request would wait 15 min for the reply: fail sooner.
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("http client");
    let url = format!("http://{addr}/orders");
    let answered = eventually("the function URL to answer", || {
        let request = http.post(&url).body(r#"{"n": 5}"#).send();
        async move { request.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    assert!(answered.text().await.unwrap_or_default().contains("ok"));
    let api = format!("http://{addr}/2015-03-31/functions/orders/invocations");
    let tailed = http
        .post(&api)
        .header("X-Amz-Log-Type", "Tail")
        .body(r#"{"n": 6}"#)
        .send()
        .await
        .expect("invoke API");
    assert_eq!(tailed.status(), 200);
    assert!(tailed.headers().contains_key("x-amz-log-result"));
    let event = http
        .post(&api)
        .header("X-Amz-Invocation-Type", "Event")
        .body(r#"{"n": 7}"#)
        .send()
        .await
        .expect("invoke API");
    assert_eq!(event.status(), 202);
    env.ran(json!({"n": 7})).await;

    // $SRV.STATS of every function, each answering on the admin's one inbox, and
    // the log history, as the admin reads them.
    env.bind_ready("tally", env.spec().pool(0, 1)).await;
    let stats = succeeded(&ADMIN.cli(&env.server, &["stats"]).await);
    assert!(
        stats.contains("orders") && stats.contains("tally"),
        "{stats}"
    );
    let logs = ADMIN.cli(&env.server, &["logs", "orders"]).await;
    assert!(succeeded(&logs).contains("ran "));

    let log = env.log();
    assert!(!log.contains("Permissions Violation"), "{log}");
}

#[tokio::test]
async fn a_subject_the_node_may_not_subscribe_to_is_an_error_and_the_others_serve() {
    let env = Secure::start(secure_server(), &[]).await;
    let spec = env.spec().subjects(["fn.split.open", "private.split"]);
    let revision = env.put("split", spec).await;
    let status = wait_status(&env.status, "split", |s| {
        s.revision >= revision && s.state == FunctionState::Error
    })
    .await;
    assert_eq!(
        status.reason.as_deref(),
        Some(r#"the node may not subscribe to "private.split" (NATS permissions: subscribe)"#)
    );
    let invoker = INVOKER.client(&env.server).await;
    for subject in ["fn.split.open", "natsfn.invoke.split"] {
        let reply = request(&invoker, subject, r#"{"n": 1}"#.into()).await;
        assert_eq!(json(&reply), json!({"ok": {"n": 1}}), "{subject}");
    }
    // Without the subject it may not have, the function is ready.
    env.bind_ready("split", env.spec().subjects(["fn.split.open"]))
        .await;
}

#[tokio::test]
async fn the_invoker_invokes_sync_and_async_with_its_permissions_alone() {
    let env = Secure::start(secure_server(), &[]).await;
    env.bind_ready("greet", env.spec().subjects(["fn.greet"]))
        .await;
    let sync = INVOKER
        .cli(&env.server, &["invoke", "greet", r#"{"n": 1}"#])
        .await;
    assert_eq!(succeeded(&sync).trim(), r#"{"ok": {"n": 1}}"#);
    let queued = INVOKER
        .cli(&env.server, &["invoke", "--async", "greet", r#"{"n": 2}"#])
        .await;
    assert_eq!(succeeded(&queued).trim().len(), 36, "the event id");
    env.ran(json!({"n": 2})).await;
    let invoker = INVOKER.client(&env.server).await;
    let reply = request(&invoker, "fn.greet", r#"{"n": 3}"#.into()).await;
    assert_eq!(json(&reply), json!({"ok": {"n": 3}}));
}

#[tokio::test]
async fn the_invoker_cannot_put_a_binding_or_a_package() {
    let env = Secure::start(secure_server(), &[]).await;
    let code = dir_str(env.code.path());
    let bind = INVOKER
        .cli(
            &env.server,
            &[
                "bind",
                "-f",
                "sneaky",
                "--runtime",
                "python3",
                "--handler",
                "app.handler",
                "--code",
                &code,
            ],
        )
        .await;
    assert!(!bind.status.success());
    assert!(
        stderr(&bind).contains("Permissions Violation"),
        "{}",
        stderr(&bind)
    );
    let push = INVOKER
        .cli(&env.server, &["package", "push", &code, "-p", "sneaky"])
        .await;
    assert!(!push.status.success());
    assert!(
        stderr(&push).contains("Permissions Violation"),
        "{}",
        stderr(&push)
    );
    // Nothing of either was stored.
    assert!(env.bindings.get("sneaky").await.expect("read").is_none());
    let ls = succeeded(&ADMIN.cli(&env.server, &["package", "ls"]).await);
    assert!(!ls.contains("sneaky"), "{ls}");
}

#[tokio::test]
async fn an_invoker_subscribing_to_a_functions_subjects_receives_no_invocation() {
    let env = Secure::start(secure_server(), &[]).await;
    env.bind_ready("quiet", env.spec().subjects(["fn.quiet"]))
        .await;
    let (errors, mut refused) = tokio::sync::mpsc::unbounded_channel();
    let options = async_nats::ConnectOptions::new().event_callback(move |event| {
        let errors = errors.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = errors.send(e.to_string());
            }
        }
    });
    let spy = INVOKER.client_with(&env.server, options).await;
    let mut plain = spy.subscribe("fn.quiet").await.expect("subscribe");
    let mut canonical = spy
        .subscribe("natsfn.invoke.quiet")
        .await
        .expect("subscribe");
    let mut grouped = spy
        .queue_subscribe("natsfn.invoke.quiet", "natsfn.quiet".into())
        .await
        .expect("subscribe");
    for subject in ["fn.quiet", "natsfn.invoke.quiet", "natsfn.invoke.quiet"] {
        let text = tokio::time::timeout(DEADLINE, refused.recv())
            .await
            .expect("the server refuses the subscription")
            .unwrap_or_default();
        assert!(
            text.contains(&format!(
                "Permissions Violation for Subscription to \"{subject}\""
            )),
            "{text}"
        );
    }
    let invoker = INVOKER.client(&env.server).await;
    for n in 0..50 {
        let subject = if n % 2 == 0 {
            "fn.quiet"
        } else {
            "natsfn.invoke.quiet"
        };
        let reply = request(&invoker, subject, json!({"n": n}).to_string().into()).await;
        assert_eq!(json(&reply), json!({"ok": {"n": n}}), "invocation {n}");
    }
    spy.flush().await.expect("flush");
    for sub in [&mut plain, &mut canonical, &mut grouped] {
        assert!(
            sub.next().now_or_never().is_none(),
            "the spy received an invocation"
        );
    }
}

#[tokio::test]
async fn the_admin_deploys_and_reads_bindings_status_nodes_and_logs() {
    let env = Secure::start(secure_server(), &[]).await;
    let example = format!("{}/examples/hello-python", env!("CARGO_MANIFEST_DIR"));
    let deployed = ADMIN
        .cli(
            &env.server,
            &[
                "deploy",
                &example,
                "-f",
                "hello",
                "--runtime",
                "python3",
                "--handler",
                "app.handler",
            ],
        )
        .await;
    succeeded(&deployed);
    let invoked = INVOKER.cli(&env.server, &["invoke", "hello", "{}"]).await;
    assert_eq!(succeeded(&invoked).trim(), r#"{"message": "hello, world"}"#);
    let got: Value =
        serde_json::from_str(&succeeded(&ADMIN.cli(&env.server, &["get", "hello"]).await))
            .expect("get prints JSON");
    assert_eq!(got["status"]["state"], "ready", "{got}");
    assert!(succeeded(&ADMIN.cli(&env.server, &["ls"]).await).contains("hello"));
    assert!(succeeded(&ADMIN.cli(&env.server, &["nodes"]).await).contains("node-a"));
    assert!(succeeded(&ADMIN.cli(&env.server, &["logs", "hello"]).await).contains("REPORT"));
    succeeded(&ADMIN.cli(&env.server, &["rm", "hello"]).await);
    assert!(env.bindings.get("hello").await.expect("read").is_none());
}

/// `_INBOX.>` would let the admin read every invoker's results and the invoker every
/// binding's `env`: with their own prefixes each reads only its own replies.
#[tokio::test]
async fn an_inbox_prefix_keeps_a_role_to_its_own_replies() {
    let admin = async_nats::ConnectOptions::new().custom_inbox_prefix("_INBOX_admin");
    let env = Secure::start_as(own_inbox_server(), &[], admin).await;
    let as_admin = ["--inbox-prefix", "_INBOX_admin", "get", "greet"];
    env.bind_ready("greet", env.spec()).await;
    let got = succeeded(&ADMIN.cli(&env.server, &as_admin).await);
    assert!(got.contains("ready"), "{got}");
    let invoked = INVOKER
        .cli(
            &env.server,
            &["--inbox-prefix", "_INBOX_invoker", "invoke", "greet", "{}"],
        )
        .await;
    assert_eq!(succeeded(&invoked).trim(), r#"{"ok": {}}"#);
    // Without the prefix: refused, and told what to give.
    for (role, args) in [
        (ADMIN, &as_admin[2..]),
        (INVOKER, &["invoke", "greet", "{}"][..]),
    ] {
        let out = role.cli(&env.server, args).await;
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(r#"Subscription to "_INBOX."#), "{err}");
        assert!(err.contains("--inbox-prefix"), "{err}");
    }
    // Nor may the invoker read the admin's replies.
    let (errors, mut refused) = tokio::sync::mpsc::unbounded_channel();
    let options = async_nats::ConnectOptions::new()
        .custom_inbox_prefix("_INBOX_invoker")
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = errors.send(e.to_string());
                }
            }
        });
    let invoker = INVOKER.client_with(&env.server, options).await;
    let _spy = invoker
        .subscribe("_INBOX_admin.>")
        .await
        .expect("subscribe");
    let text = tokio::time::timeout(Duration::from_secs(5), refused.recv())
        .await
        .expect("the server refuses it")
        .unwrap_or_default();
    assert!(
        text.contains("Permissions Violation for Subscription"),
        "{text}"
    );
}
