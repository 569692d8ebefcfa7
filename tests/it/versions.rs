//! Versions and aliases served by nodes (issue 22): qualified subjects, per-version
//! workers, aliases and their weights, moving an alias under load.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::harness::*;

/// A handler that says which code it runs, in which worker, as which version.
fn handler(label: &str) -> String {
    format!(
        "import os\ndef handler(event, context):\n    return {{'code': '{label}', 'version': os.environ['AWS_LAMBDA_FUNCTION_VERSION'], 'context_version': context.function_version, 'worker': os.environ['AWS_LAMBDA_LOG_STREAM_NAME'], 'pid': os.getpid()}}\n"
    )
}

/// Writes version `n` by hand into `natsfn-versions` (what `natsfn publish` does).
async fn put_version(env: &Env, name: &str, n: u64, binding: Value) {
    let js = async_nats::jetstream::new(env.client.clone());
    let versions = natsfn_actors::buckets::versions(&js).await.expect("bucket");
    let record = json!({"version": n, "binding": binding});
    versions
        .put(
            format!("{name}.{n}"),
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .expect("put version");
}

async fn put_alias(env: &Env, name: &str, alias: &str, record: Value) {
    let js = async_nats::jetstream::new(env.client.clone());
    let aliases = natsfn_actors::buckets::aliases(&js).await.expect("bucket");
    aliases
        .put(
            format!("{name}.{alias}"),
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .expect("put alias");
}

/// The first successful reply on `subject`, asking until one comes (a new alias'
/// subscriptions take a moment to reach the server).
async fn answered(env: &Env, subject: &str) -> async_nats::Message {
    eventually(&format!("{subject} answers"), || async {
        let reply = env
            .client
            .request(subject.to_owned(), "{}".into())
            .await
            .ok()?;
        (error_code(&reply).is_none()).then_some(reply)
    })
    .await
}

#[tokio::test]
async fn smoke_versions_route() {
    let env = Env::start().await;
    let one = code_dir(&[("app.py", &handler("one"))]);
    let two = code_dir(&[("app.py", &handler("two"))]);
    let v1 = Binding::python("app.handler", dir_str(one.path()));
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    eprintln!("NODE LOG {}", env.node.log());
    env.bind_ready("fn", v1.clone()).await;
    put_version(&env, "fn", 1, v1.into()).await;
    env.bind_ready("fn", Binding::python("app.handler", dir_str(two.path())))
        .await;

    let latest = env.invoke("fn", "{}").await;
    assert_eq!(json(&latest)["code"], "two");
    assert_eq!(json(&latest)["version"], "$LATEST");
    assert_eq!(
        header(&latest, "Natsfn-Executed-Version").as_deref(),
        Some("$LATEST")
    );

    let reply = answered(&env, "natsfn.invoke.fn.1").await;
    assert_eq!(json(&reply)["code"], "one", "{:?}", json(&reply));
    assert_eq!(json(&reply)["version"], "1");
    assert_eq!(
        header(&reply, "Natsfn-Executed-Version").as_deref(),
        Some("1")
    );

    let unknown = env.request("natsfn.invoke.fn.7", "{}").await;
    assert_eq!(error_code(&unknown), Some(503));

    put_alias(
        &env,
        "fn",
        "live",
        json!({"version": 1, "weights": {}, "subjects": ["fn.prod"]}),
    )
    .await;
    let reply = answered(&env, "fn.prod").await;
    assert_eq!(json(&reply)["code"], "one");
    let mut counts: HashMap<String, u32> = HashMap::new();
    let _ = &mut counts;
}
