//! Scoped NATS credentials for handlers (binding field `nats`, `natsfn node
//! --signing-key`), on an operator-mode nats-server: a python handler connects with the
//! credentials its worker was given and may do what its binding lists, nothing else.

use futures::{FutureExt, StreamExt};
use natsfn_protocol::FunctionState;
use serde_json::json;

use crate::harness::*;

/// Connects as its worker's NATS user, then: publishes where it may not and where it
/// may, subscribes where it may not, and asks a question through its private inbox.
/// Returns what happened, and what it was given.
const NATS_HANDLER: &str = r#"
import asyncio, os, stat
import nats

def handler(event, context):
    return asyncio.run(use_nats())

async def use_nats():
    refused = []
    async def on_error(e):
        refused.append(str(e))
    nc = await nats.connect(
        servers=os.environ["NATS_URL"].split(","),
        user_credentials=os.environ["NATS_CREDS"],
        inbox_prefix=os.environ["NATS_INBOX_PREFIX"],
        error_cb=on_error,
        allow_reconnect=False,
    )
    await nc.publish("payments.refund", b"not allowed")
    await nc.publish("orders.created", b"from the handler")
    await nc.subscribe("natsfn.invoke.>")
    await nc.flush()
    answer = await nc.request("orders.quote", b"how much?", timeout=10)
    await nc.close()
    creds = os.environ["NATS_CREDS"]
    return {
        "refused": refused,
        "answer": answer.data.decode(),
        "nats_env": sorted(k for k in os.environ if k.startswith("NATS_")),
        "inbox_prefix": os.environ["NATS_INBOX_PREFIX"],
        "creds": creds,
        "creds_mode": stat.S_IMODE(os.stat(creds).st_mode),
        "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(creds)).st_mode),
    }
"#;

/// Connects as its worker's NATS user and says so.
const CONNECT_HANDLER: &str = r#"
import asyncio, os
import nats

def handler(event, context):
    return asyncio.run(connect())

async def connect():
    nc = await nats.connect(
        servers=os.environ["NATS_URL"].split(","),
        user_credentials=os.environ["NATS_CREDS"],
        allow_reconnect=False,
    )
    await nc.flush()
    await nc.close()
    return "connected"
"#;

/// Every variable a NATS client could take credentials from.
const CREDENTIAL_VARIABLES: [&str; 8] = [
    "NATS_CREDS",
    "NATS_NKEY",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_CERT",
    "NATS_KEY",
    "NATS_CONTEXT",
];

#[tokio::test]
async fn a_handler_publishes_and_subscribes_only_where_its_binding_says() {
    let operator = Operator::new();
    let server = operator.start_server();
    let node = operator.node(&server, "node-a");
    let env = operator.env(server, node).await;
    let mut orders = env.client.subscribe("orders.>").await.expect("subscribe");
    let mut payments = env.client.subscribe("payments.>").await.expect("subscribe");
    env.client.flush().await.expect("flush");

    let code = code_dir(&[("app.py", NATS_HANDLER)]);
    let spec = Binding::python("app.handler", &code)
        .timeout_ms(15_000)
        .with(
            "nats",
            json!({"publish": ["orders.>"], "subscribe": ["prices.>"]}),
        );
    env.bind_ready("scoped", spec).await;
    let invocation = {
        let client = env.client.clone();
        tokio::spawn(async move { request(&client, "natsfn.invoke.scoped", "{}".into()).await })
    };

    // What the handler may publish arrives; what it may not never does.
    let created = next_message(&mut orders).await;
    assert_eq!(created.subject.as_str(), "orders.created");
    assert_eq!(created.payload.as_ref(), b"from the handler");
    // Sent before orders.created on the same connection, so it would be here by now.
    assert!(payments.next().now_or_never().is_none());
    let quote = next_message(&mut orders).await;
    assert_eq!(quote.subject.as_str(), "orders.quote");
    let inbox = quote.reply.clone().expect("a request has a reply subject");
    env.client
        .publish(inbox.clone(), "42 EUR".into())
        .await
        .expect("answer");

    let reply = invocation.await.expect("invocation task");
    assert_eq!(error_code(&reply), None, "{reply:?}\n{}", env.node.log());
    let result = json(&reply);
    let prefix = result["inbox_prefix"].as_str().unwrap_or_default();
    assert!(prefix.starts_with("_INBOX_natsfn.scoped."), "{result}");
    assert!(inbox.as_str().starts_with(&format!("{prefix}.")), "{inbox}");
    assert_eq!(result["answer"], "42 EUR");
    assert_eq!(
        result["refused"],
        json!([
            r#"nats: permissions violation for publish to "payments.refund""#,
            r#"nats: permissions violation for subscription to "natsfn.invoke.>""#,
        ]),
        "{result}"
    );
    assert_eq!(
        result["nats_env"],
        json!(["NATS_CREDS", "NATS_INBOX_PREFIX", "NATS_URL"])
    );
    assert_eq!(
        (result["creds_mode"].as_u64(), result["dir_mode"].as_u64()),
        (Some(0o600), Some(0o700))
    );

    // The file goes with the worker.
    let creds = std::path::PathBuf::from(result["creds"].as_str().unwrap_or_default());
    assert!(creds.is_file(), "{}", creds.display());
    env.bindings
        .delete("scoped")
        .await
        .expect("remove the binding");
    eventually("the worker's credentials to be removed", || {
        let gone = !creds.exists() && !creds.parent().is_some_and(|d| d.exists());
        async move { gone.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_largest_nats_field_still_lets_the_handler_connect() {
    let operator = Operator::new();
    let server = operator.start_server();
    let node = operator.node(&server, "node-a");
    let env = operator.env(server, node).await;
    let code = code_dir(&[("app.py", CONNECT_HANDLER)]);
    // 1,536 bytes of subjects (the most the spec takes), and the longest function name
    // (it is in the inbox prefix).
    let subjects: Vec<String> = (0..12)
        .map(|i| format!("s{i:02}.{}", "a".repeat(124)))
        .collect();
    let name = "f".repeat(64);
    let spec = Binding::python("app.handler", &code)
        .timeout_ms(15_000)
        .with(
            "nats",
            json!({"publish": subjects[..6], "subscribe": subjects[6..]}),
        );
    env.bind_ready(&name, spec).await;
    let reply = env.invoke(&name, "{}").await;
    assert_eq!(json(&reply), "connected", "{reply:?}");
}

#[tokio::test]
async fn a_binding_without_nats_gets_no_nats_variables() {
    let operator = Operator::new();
    let server = operator.start_server();
    // The node itself connects with NATS_CREDS from its environment.
    let node = operator.node(&server, "node-a");
    let env = operator.env(server, node).await;
    let code = code_dir(&[(
        "app.py",
        "import os\ndef handler(event, context):\n    return sorted(k for k in os.environ if k.startswith('NATS'))\n",
    )]);
    env.bind_ready("plain", Binding::python("app.handler", &code))
        .await;
    let seen = json(&env.invoke("plain", "{}").await);
    assert_eq!(seen, json!([]), "{seen}");
    for name in CREDENTIAL_VARIABLES {
        assert!(!seen.to_string().contains(name));
    }
}

#[tokio::test]
async fn nats_on_a_node_without_a_signing_key_is_an_error_naming_the_flag() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", "def handler(event, context):\n    return 1\n")]);
    let spec = Binding::python("app.handler", &code).with("nats", json!({"publish": ["a"]}));
    let revision = env.put_binding("scoped", spec).await;
    let status = env
        .wait_status("scoped", |s| {
            s.revision >= revision && s.state != FunctionState::Starting
        })
        .await;
    assert_eq!(status.state, FunctionState::Error, "{status:?}");
    let reason = status.reason.unwrap_or_default();
    assert!(reason.contains("--signing-key"), "{reason}");
    let reply = env.invoke("scoped", "{}").await;
    assert_eq!(error_code(&reply), Some(503));
    assert_eq!(json(&reply)["errorType"], "Runtime.CredentialsUnavailable");
}

#[tokio::test]
async fn a_signing_key_needs_a_server_in_operator_mode() {
    let server = NatsServer::start();
    let operator = Operator::new();
    let mut node = Node::start_with(
        &server,
        "node-a",
        &["--signing-key", &dir_str(&operator.signing_key)],
    );
    let status = node.exited().await;
    assert!(!status.success());
    let log = node.log();
    assert!(
        log.contains("--signing-key") && log.contains("operator mode"),
        "{log}"
    );
}

async fn next_message(subscriber: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(DEADLINE, subscriber.next())
        .await
        .expect("a message within the deadline")
        .expect("the subscription is open")
}
