//! Every function is a NATS micro service (ADR-32): each node's instance answers
//! `$SRV.PING|INFO|STATS`, counts what its endpoints served, and any micro tooling
//! (here `natsfn stats` and the nats.js service client) lists and describes it.

use std::collections::HashSet;
use std::path::Path;

use futures::StreamExt;
use natsfn_protocol::{FunctionState, FunctionStatus};
use serde_json::{json, Value};

use crate::harness::*;

const APP: &str = r#"
def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    return "ok"
"#;

fn spec(dir: &Path, subjects: &[&str]) -> Binding {
    Binding::python("app.handler", dir)
        .subjects(subjects)
        .pool(1, 1)
}

/// Validates a reply against the ADR-32 schema vendored for the protocol's tests.
fn assert_schema(kind: &str, reply: &Value) {
    let text = match kind {
        "ping" => include_str!("../../protocol/tests/schemas/ping_response.json"),
        "info" => include_str!("../../protocol/tests/schemas/info_response.json"),
        "stats" => include_str!("../../protocol/tests/schemas/stats_response.json"),
        _ => panic!("no schema {kind}"),
    };
    let schema: Value = serde_json::from_str(text).expect("schema JSON");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("valid schema");
    let errors: Vec<String> = validator
        .iter_errors(reply)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{reply} is not a valid {kind} reply: {errors:?}"
    );
}

/// Sends one request to `subject` and returns the first `want` replies, in order.
async fn gather(client: &async_nats::Client, subject: &str, want: usize) -> Vec<Value> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
    client
        .publish_with_reply(subject.to_owned(), inbox, "".into())
        .await
        .expect("publish");
    let mut found = Vec::new();
    while found.len() < want {
        let msg = tokio::time::timeout(DEADLINE, replies.next())
            .await
            .unwrap_or_else(|_| panic!("{want} replies on {subject}, got {found:?}"))
            .expect("inbox subscription");
        found.push(json(&msg));
    }
    found
}

/// The one reply of a single instance.
async fn ask(env: &Env, subject: &str) -> Value {
    gather(&env.client, subject, 1).await.remove(0)
}

/// Waits for `$SRV.STATS.<name>` from one instance until `accept` likes it.
async fn stats_when(env: &Env, name: &str, accept: impl Fn(&Value) -> bool) -> Value {
    let subject = format!("$SRV.STATS.{name}");
    eventually(&format!("stats of {name} to be as expected"), || {
        let reply = ask(env, &subject);
        let accept = &accept;
        async move {
            let reply = reply.await;
            accept(&reply).then_some(reply)
        }
    })
    .await
}

fn is_semver(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| p.parse::<u64>().is_ok() && (p.len() == 1 || !p.starts_with('0')))
}

#[tokio::test]
async fn a_function_answers_ping_info_and_stats_as_adr_32_says() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", APP)]);
    let revision = env
        .bind_ready("micro", spec(code.path(), &["micro.greet"]))
        .await;
    for _ in 0..3 {
        assert_eq!(error_code(&env.invoke("micro", "{}").await), None);
    }
    assert_eq!(error_code(&env.request("micro.greet", "{}").await), None);
    for _ in 0..2 {
        let reply = env.invoke("micro", r#"{"fail": true}"#).await;
        assert_eq!(error_code(&reply), Some(500));
    }

    let ping = ask(&env, "$SRV.PING.micro").await;
    assert_schema("ping", &ping);
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
    assert_eq!(ping["name"], "micro");
    assert_eq!(ping["version"], format!("0.0.{revision}"));
    assert!(is_semver(ping["version"].as_str().unwrap()), "{ping}");
    assert_eq!(
        ping["metadata"],
        json!({"natsfn.node": "node-a", "natsfn.version": "$LATEST"})
    );
    let id = ping["id"].as_str().expect("id").to_owned();
    // The same instance answers the plain verb and the one naming its id.
    assert_eq!(ask(&env, "$SRV.PING").await["id"], id.as_str());
    assert_eq!(ask(&env, &format!("$SRV.PING.micro.{id}")).await, ping);

    let info = ask(&env, &format!("$SRV.INFO.micro.{id}")).await;
    assert_schema("info", &info);
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["description"], "natsfn function: python3 app.handler");
    assert_eq!(
        info["endpoints"],
        json!([
            {"name": "invoke", "subject": "natsfn.invoke.micro", "queue_group": "natsfn.micro", "metadata": {}},
            {"name": "micro_greet", "subject": "micro.greet", "queue_group": "natsfn.micro", "metadata": {}},
        ])
    );

    // A reply goes out before its invocation is counted: wait for the count.
    let stats = stats_when(&env, "micro", |s| s["endpoints"][0]["num_requests"] == 5).await;
    assert_schema("stats", &stats);
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    assert_eq!(stats["id"], id.as_str());
    assert_eq!(stats["version"], format!("0.0.{revision}"));
    let started = stats["started"].as_str().expect("started");
    let started =
        time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339)
            .expect("started is RFC 3339");
    assert!(started <= time::OffsetDateTime::now_utc());
    let canonical = &stats["endpoints"][0];
    assert_eq!(canonical["subject"], "natsfn.invoke.micro");
    assert_eq!(canonical["queue_group"], "natsfn.micro");
    assert_eq!(canonical["num_errors"], 2);
    assert_eq!(canonical["last_error"], "500:ValueError: asked to fail");
    let total = canonical["processing_time"].as_u64().expect("ns");
    assert!(total > 0, "{canonical}");
    assert_eq!(canonical["average_processing_time"], total / 5);
    let bound = &stats["endpoints"][1];
    assert_eq!(bound["subject"], "micro.greet");
    assert_eq!(bound["num_requests"], 1);
    assert_eq!(bound["num_errors"], 0);
    assert_eq!(bound["last_error"], "");

    // Unknown verbs are ignored: of two requests on one inbox, in this order, only the
    // second is answered.
    let inbox = env.client.new_inbox();
    let mut replies = env
        .client
        .subscribe(inbox.clone())
        .await
        .expect("subscribe");
    for verb in ["SCHEMA", "PING"] {
        env.client
            .publish_with_reply(format!("$SRV.{verb}.micro"), inbox.clone(), "".into())
            .await
            .expect("publish");
    }
    let first = tokio::time::timeout(DEADLINE, replies.next())
        .await
        .expect("a reply")
        .expect("inbox");
    assert_eq!(json(&first)["type"], "io.nats.micro.v1.ping_response");

    // A changed binding is a new version of the same instance, its counts kept.
    let revision = env
        .bind_ready("micro", spec(code.path(), &["micro.greet", "micro.other"]))
        .await;
    let info = ask(&env, "$SRV.INFO.micro").await;
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["version"], format!("0.0.{revision}"));
    assert_eq!(info["endpoints"].as_array().map(Vec::len), Some(3));
    let stats = ask(&env, "$SRV.STATS.micro").await;
    assert_eq!(stats["endpoints"][0]["num_requests"], 5);
}

#[tokio::test]
async fn errors_the_node_answers_itself_are_counted() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", APP)]);
    let broken = spec(code.path(), &[]).handler("missing.handler");
    let revision = env.put_binding("broken", broken).await;
    env.wait_status("broken", |s| {
        s.revision >= revision && matches!(s.state, FunctionState::Error | FunctionState::Crashloop)
    })
    .await;
    let reply = env.invoke("broken", "{}").await;
    assert_eq!(error_code(&reply), Some(503));
    let stats = stats_when(&env, "broken", |s| s["endpoints"][0]["num_requests"] == 1).await;
    let canonical = &stats["endpoints"][0];
    assert_eq!(canonical["num_errors"], 1);
    let last = canonical["last_error"].as_str().unwrap_or_default();
    assert!(
        last.starts_with("503:Runtime.ImportModuleError"),
        "{canonical}"
    );
}

/// Binds `name` and waits until both nodes report it ready (their service instances
/// subscribe before they report).
async fn bind_on_both(env: &Env, name: &str, spec: Binding) {
    let mut reports = env.status.watch(name).await.expect("watch status");
    env.put_binding(name, spec).await;
    let mut ready = HashSet::new();
    while ready.len() < 2 {
        let entry = tokio::time::timeout(DEADLINE, reports.next())
            .await
            .expect("both nodes to report the function ready")
            .expect("status stream")
            .expect("status entry");
        let status: FunctionStatus = serde_json::from_slice(&entry.value).expect("status json");
        if status.state == FunctionState::Ready {
            ready.insert(status.node);
        }
    }
}

#[tokio::test]
async fn two_nodes_are_two_instances_and_natsfn_stats_shows_both() {
    let server = NatsServer::start();
    let _second = Node::start(&server, "node-b");
    let env = Env::on(server).await;
    let code = code_dir(&[("app.py", APP)]);
    bind_on_both(&env, "shared", spec(code.path(), &[])).await;

    let pings = gather(&env.client, "$SRV.PING.shared", 2).await;
    let ids: HashSet<&str> = pings.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "two instances, two ids: {pings:?}");
    let nodes: HashSet<&str> = pings
        .iter()
        .filter_map(|p| p["metadata"]["natsfn.node"].as_str())
        .collect();
    assert_eq!(nodes, HashSet::from(["node-a", "node-b"]));
    for ping in &pings {
        let id = ping["id"].as_str().unwrap_or_default();
        assert_eq!(&ask(&env, &format!("$SRV.PING.shared.{id}")).await, ping);
    }

    for _ in 0..6 {
        assert_eq!(error_code(&env.invoke("shared", "{}").await), None);
    }
    assert_eq!(
        error_code(&env.invoke("shared", r#"{"fail": 1}"#).await),
        Some(500)
    );
    eventually("both instances to have counted all 7 invocations", || {
        let stats = gather(&env.client, "$SRV.STATS.shared", 2);
        async move {
            let total: u64 = stats
                .await
                .iter()
                .filter_map(|s| s["endpoints"][0]["num_requests"].as_u64())
                .sum();
            (total == 7).then_some(())
        }
    })
    .await;

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .args(["--nats", &env.server.url, "stats", "shared"])
        .output()
        .await
        .expect("run natsfn stats");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][0], "FUNCTION", "{text}");
    for node in ["node-a", "node-b"] {
        let row = rows
            .iter()
            .find(|r| r.get(1) == Some(&node))
            .unwrap_or_else(|| panic!("no row for {node}:\n{text}"));
        assert_eq!(row[0], "shared", "{text}");
        assert!(ids.contains(row[2].trim_matches(['(', ')'])), "{text}");
    }
    let total = rows
        .iter()
        .find(|r| r.get(1) == Some(&"total"))
        .unwrap_or_else(|| panic!("no total row:\n{text}"));
    // shared total REQUESTS ERRORS AVERAGE LAST-ERROR...
    assert_eq!(&total[..4], ["shared", "total", "7", "1"], "{text}");
    assert_eq!(
        total[5..].join(" "),
        "500:ValueError: asked to fail",
        "{text}"
    );

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .args(["--nats", &env.server.url, "stats", "nosuchfunction"])
        .output()
        .await
        .expect("run natsfn stats");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no node answers for function nosuchfunction"),
        "{out:?}"
    );
}

#[tokio::test]
async fn the_nats_js_service_client_lists_and_describes_functions() {
    let js_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/js");
    assert!(
        js_dir.join("node_modules/nats").is_dir(),
        "the nats.js client is not installed: run scripts/test, or npm ci in {}",
        js_dir.display()
    );
    let env = Env::start().await;
    let code = code_dir(&[("app.py", APP)]);
    let revision = env
        .bind_ready("jsfn", spec(code.path(), &["js.hello"]))
        .await;
    assert_eq!(error_code(&env.invoke("jsfn", "{}").await), None);
    assert_eq!(error_code(&env.invoke("jsfn", "{}").await), None);
    assert_eq!(
        error_code(&env.invoke("jsfn", r#"{"fail": true}"#).await),
        Some(500)
    );
    stats_when(&env, "jsfn", |s| s["endpoints"][0]["num_requests"] == 3).await;

    let out = tokio::process::Command::new("node")
        .arg(js_dir.join("micro.js"))
        .arg(&env.server.url)
        .arg("jsfn")
        .output()
        .await
        .expect("node (Node.js 20) is required by this test and was not found on PATH");
    assert!(
        out.status.success(),
        "micro.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "micro.js printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let version = format!("0.0.{revision}");
    assert!(
        seen["ping_all"]
            .as_array()
            .is_some_and(|all| all.iter().any(|p| p["name"] == "jsfn")),
        "{seen}"
    );
    let ping = &seen["ping"][0];
    assert_eq!(ping["name"], "jsfn", "{seen}");
    assert_eq!(ping["version"], version.as_str());
    let id = ping["id"].as_str().expect("id");
    let info = &seen["info"][0];
    assert_eq!(info["id"], id);
    let subjects: Vec<(&str, &str)> = info["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| Some((e["subject"].as_str()?, e["queue_group"].as_str()?)))
        .collect();
    assert_eq!(
        subjects,
        [
            ("natsfn.invoke.jsfn", "natsfn.jsfn"),
            ("js.hello", "natsfn.jsfn")
        ]
    );
    let stats = &seen["stats"][0];
    assert_eq!(stats["id"], id);
    assert_eq!(stats["endpoints"][0]["num_requests"], 3, "{seen}");
    assert_eq!(stats["endpoints"][0]["num_errors"], 1);
    assert_eq!(
        stats["endpoints"][0]["last_error"],
        "500:ValueError: asked to fail"
    );
    assert_eq!(stats["endpoints"][1]["num_requests"], 0);
}
