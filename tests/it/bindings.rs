//! Bindings in JetStream KV drive what a node serves: put, update, delete, and bad
//! values that must not disturb anything else.

use natsfn_protocol::FunctionState;
use serde_json::{json, Value};

use crate::harness::*;

const GREETER: &str = r#"
import os
def handler(event, context):
    return {"greeting": os.environ.get("GREETING", "") + ", " + event.get("name", "world")}
"#;

fn greeter_spec(dir: &str, greeting: &str) -> Binding {
    Binding::python("app.handler", dir)
        .subjects(["myfunction.lambda"])
        .env("GREETING", greeting)
        .pool(1, 2)
}

#[tokio::test]
async fn put_serves_update_changes_and_delete_stops() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", GREETER)]);
    let dir = dir_str(code.path());

    env.bind_ready("greeter", greeter_spec(&dir, "hi")).await;
    let reply = env.request("myfunction.lambda", r#"{"name":"bob"}"#).await;
    assert_eq!(json(&reply), json!({"greeting": "hi, bob"}));
    assert!(header(&reply, "Natsfn-Request-Id").is_some_and(|id| id.len() == 36));
    // The canonical subject answers too.
    let reply = env.invoke("greeter", r#"{"name":"ann"}"#).await;
    assert_eq!(json(&reply), json!({"greeting": "hi, ann"}));

    // An update reaches the next replies.
    env.bind_ready("greeter", greeter_spec(&dir, "ho")).await;
    let reply = env.request("myfunction.lambda", r#"{"name":"bob"}"#).await;
    assert_eq!(json(&reply), json!({"greeting": "ho, bob"}));

    // A delete removes the subscriptions: no responders.
    env.bindings.delete("greeter").await.expect("delete");
    for subject in ["myfunction.lambda", "natsfn.invoke.greeter"] {
        eventually(&format!("{subject} to have no responders"), || async {
            let r = env.client.request(subject.to_owned(), "{}".into()).await;
            match r {
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Some(()),
                _ => None,
            }
        })
        .await;
    }
}

#[tokio::test]
async fn subjects_can_move_without_losing_the_canonical_one() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", GREETER)]);
    let dir = dir_str(code.path());
    let spec = greeter_spec(&dir, "hey");
    env.bind_ready("mover", spec.clone()).await;
    env.bind_ready("mover", spec.subjects(["moved.here"])).await;
    let reply = env.request("moved.here", "{}").await;
    assert_eq!(json(&reply), json!({"greeting": "hey, world"}));
    eventually("the old subject to be left", || async {
        match env.client.request("myfunction.lambda", "{}".into()).await {
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Some(()),
            _ => None,
        }
    })
    .await;
    assert_eq!(
        json(&env.invoke("mover", "{}").await),
        json!({"greeting": "hey, world"})
    );
}

#[tokio::test]
async fn malformed_bindings_get_a_status_and_disturb_nothing() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", GREETER)]);
    let dir = dir_str(code.path());
    env.bind_ready("good", greeter_spec(&dir, "still")).await;

    env.bindings
        .put("broken", "{not json".into())
        .await
        .expect("put");
    let s = env
        .wait_status("broken", |s| s.state == FunctionState::Error)
        .await;
    assert!(
        s.reason.as_deref().unwrap_or("").contains("not valid JSON"),
        "{s:?}"
    );

    let mut unknown = greeter_spec(&dir, "x").json();
    unknown["colour"] = json!("red");
    env.put_binding("unknown", unknown).await;
    let s = env
        .wait_status("unknown", |s| s.state == FunctionState::Error)
        .await;
    assert!(
        s.reason
            .as_deref()
            .unwrap_or("")
            .contains("colour: unknown field"),
        "{s:?}"
    );

    let mut bad_type = greeter_spec(&dir, "x").json();
    bad_type["timeout_ms"] = json!("soon");
    env.put_binding("badtype", bad_type).await;
    let s = env
        .wait_status("badtype", |s| s.state == FunctionState::Error)
        .await;
    assert_eq!(
        s.reason.as_deref(),
        Some(r#"invalid binding: timeout_ms: expected an integer of milliseconds, got "soon""#)
    );

    // A key that is valid for KV but not as a function name.
    env.put_binding("bad.name", greeter_spec(&dir, "x")).await;
    let s = env
        .wait_status("bad.name", |s| s.state == FunctionState::Error)
        .await;
    assert!(
        s.reason.as_deref().unwrap_or("").contains("function name"),
        "{s:?}"
    );

    // Nothing of that reached the other function or the node.
    let reply = env.request("myfunction.lambda", r#"{"name":"you"}"#).await;
    assert_eq!(json(&reply), json!({"greeting": "still, you"}));
    let mut node = env.node;
    assert!(node.is_running());
}

#[tokio::test]
async fn an_invalid_update_keeps_the_last_good_version_serving() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", GREETER)]);
    let dir = dir_str(code.path());
    let good = env.bind_ready("keeper", greeter_spec(&dir, "kept")).await;

    let bad = greeter_spec(&dir, "x").pool(5, 1);
    let bad_revision = env.put_binding("keeper", bad).await;
    let s = env
        .wait_status("keeper", |s| {
            s.revision == bad_revision && s.state == FunctionState::Error
        })
        .await;
    let reason = s.reason.unwrap_or_default();
    assert!(
        reason.contains("pool: min (5) may not be larger than max (1)"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("still serving revision {good}")),
        "{reason}"
    );
    let reply = env.request("myfunction.lambda", "{}").await;
    assert_eq!(json(&reply), json!({"greeting": "kept, world"}));
}

#[tokio::test]
async fn a_binding_put_before_the_node_starts_is_served() {
    let server = NatsServer::start();
    let client = server.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let bindings = natsfn_actors::buckets::bindings(&js).await.expect("bucket");
    let code = code_dir(&[("app.py", GREETER)]);
    bindings
        .put(
            "early",
            greeter_spec(&dir_str(code.path()), "early").bytes(),
        )
        .await
        .expect("put");
    let env = Env::on(server).await;
    env.wait_status("early", |s| s.state == FunctionState::Ready)
        .await;
    assert_eq!(
        json(&env.invoke("early", "{}").await),
        json!({"greeting": "early, world"})
    );
}

#[tokio::test]
async fn a_change_of_subjects_or_pool_keeps_the_warm_workers_and_a_change_of_code_replaces_them() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        "import os\ndef handler(event, context):\n    return [os.environ['AWS_LAMBDA_LOG_STREAM_NAME'], os.environ.get('GREETING'), context.function_version]\n",
    )]);
    let spec = greeter_spec(&dir_str(code.path()), "one").pool(1, 1);
    env.bind_ready("keeper", spec.clone()).await;
    let before = json(&env.invoke("keeper", "{}").await);

    let spec = spec.subjects(["kept.subject"]).pool(1, 2);
    env.bind_ready("keeper", spec.clone()).await;
    let after = json(&env.request("kept.subject", "{}").await);
    assert_eq!(
        after, before,
        "a subject or pool change restarted the worker"
    );
    assert_eq!(after[2], "$LATEST", "the binding as edited is $LATEST");

    env.bind_ready("keeper", spec.env("GREETING", "two")).await;
    let replaced = json(&env.request("kept.subject", "{}").await);
    assert_ne!(
        replaced[0], before[0],
        "a code change must reach new workers"
    );
    assert_eq!(replaced[1], "two");
    assert_eq!(replaced[2], "$LATEST");
}

/// The distinct workers (by AWS_LAMBDA_LOG_STREAM_NAME) that answer a burst of
/// concurrent requests.
async fn workers_serving(env: &Env, name: &str) -> std::collections::HashSet<String> {
    let requests = (0..12).map(|_| env.invoke(name, "{}"));
    futures::future::join_all(requests)
        .await
        .iter()
        .map(|reply| json(reply).as_str().expect("worker").to_owned())
        .collect()
}

#[tokio::test]
async fn lowering_pool_max_stops_the_workers_beyond_it() {
    let env = Env::start().await;
    let code = code_dir(&[(
        "app.py",
        "import os\ndef handler(event, context):\n    return os.environ['AWS_LAMBDA_LOG_STREAM_NAME']\n",
    )]);
    let spec = greeter_spec(&dir_str(code.path()), "x");
    env.bind_ready("shrinking", spec.clone().pool(3, 3)).await;
    eventually("all three workers serving", || async {
        (workers_serving(&env, "shrinking").await.len() == 3).then_some(())
    })
    .await;
    env.bind_ready("shrinking", spec.pool(1, 1)).await;
    let workers = workers_serving(&env, "shrinking").await;
    assert_eq!(workers.len(), 1, "pool.max 1 served by {workers:?}");
}

/// The builder of the harness writes each field where the binding contract puts it.
#[test]
fn the_binding_builder_puts_every_field_where_the_contract_has_it() {
    let spec = Binding::python("app.handler", Code::pinned("hello", "sha256:00"))
        .subjects(["myfunction.lambda"])
        .env("GREETING", "hi")
        .env("OTHER", String::from("x"))
        .timeout_ms(3000)
        .memory_mb(128)
        .pool(1, 4)
        .queue(64)
        .idle_ms(60000)
        .max_invocations(5)
        .max_retries(2)
        .retry_delay_ms(1000)
        .max_event_age_s(21600)
        .on_success("ok.subject")
        .on_failure("failed.subject")
        .layer("scaffolding")
        .layer_pinned("tools", "sha256:11")
        .label("region", "eu")
        .label("gpu", "false")
        .with("recursion", "Allow");
    assert_eq!(
        spec.json(),
        json!({
            "runtime": "python3",
            "handler": "app.handler",
            "code": {"package": "hello", "digest": "sha256:00"},
            "subjects": ["myfunction.lambda"],
            "env": {"GREETING": "hi", "OTHER": "x"},
            "timeout_ms": 3000,
            "memory_mb": 128,
            "pool": {"min": 1, "max": 4, "queue": 64, "idle_ms": 60000, "max_invocations": 5},
            "async": {"max_retries": 2, "retry_delay_ms": 1000, "max_event_age_s": 21600,
                      "on_success": "ok.subject", "on_failure": "failed.subject"},
            "layers": [{"package": "scaffolding"}, {"package": "tools", "digest": "sha256:11"}],
            "placement": {"labels": {"region": "eu", "gpu": "false"}},
            "recursion": "Allow"
        })
    );
    let bytes: Value = serde_json::from_slice(&spec.bytes()).expect("json bytes");
    assert_eq!(bytes, Value::from(spec));
}

#[test]
fn the_binding_builders_code_is_a_directory_or_a_package_and_only_what_is_set_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir_str(dir.path());
    let by_dir = json!({"runtime": "nodejs", "handler": "app.handler", "code": {"dir": path}});
    assert_eq!(Binding::nodejs("app.handler", &dir).json(), by_dir);
    assert_eq!(Binding::nodejs("app.handler", dir.path()).json(), by_dir);
    assert_eq!(Binding::nodejs("app.handler", path.as_str()).json(), by_dir);
    assert_eq!(
        Binding::provided(Code::package("boot")).pool_min(0).json(),
        json!({"runtime": "provided", "code": {"package": "boot"}, "pool": {"min": 0}})
    );
    assert_eq!(
        Binding::java("example.Echo", Code::dir(&dir))
            .subjects(Vec::<String>::new())
            .json(),
        json!({"runtime": "java", "handler": "example.Echo", "code": {"dir": path},
               "subjects": []})
    );
    // The escape hatch replaces what the builder made.
    assert_eq!(
        Binding::python("app.handler", &dir)
            .pool(1, 1)
            .with("pool", json!({"max": 2}))
            .json()["pool"],
        json!({"max": 2})
    );
}
