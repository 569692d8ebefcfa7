//! Versions and aliases served by a node (issue 22): `natsfn publish` freezes code and
//! configuration, each version runs in workers of its own, qualified subjects and the
//! gateway's qualifiers reach them, aliases route by their weights and subjects, a move
//! under load fails nothing, canaries promote or roll themselves back, async
//! invocations keep their qualifier.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use futures::StreamExt;
use natsfn_protocol::version::CanaryState;
use natsfn_protocol::AliasRecord;
use serde_json::Value;

use crate::harness::*;

/// A handler that says which code it runs, in which worker, as which version, with
/// which `GREETING`; `{"fail": true}` raises.
fn handler(label: &str) -> String {
    format!(
        "import os\n\
         def handler(event, context):\n\
         \x20   if event.get('fail'):\n\
         \x20       raise ValueError('asked to fail')\n\
         \x20   return {{'code': '{label}', 'version': os.environ['AWS_LAMBDA_FUNCTION_VERSION'],\n\
         \x20           'context_version': context.function_version,\n\
         \x20           'greeting': os.environ.get('GREETING'),\n\
         \x20           'worker': os.environ['AWS_LAMBDA_LOG_STREAM_NAME'], 'pid': os.getpid()}}\n"
    )
}

/// A handler whose every fifth invocation (per worker) fails: 20 % errors.
const FLAKY: &str = "import os\n\
count = 0\n\
def handler(event, context):\n\
\x20   global count\n\
\x20   count += 1\n\
\x20   if count % 5 == 0:\n\
\x20       raise RuntimeError('every fifth call fails')\n\
\x20   return {'code': 'flaky', 'version': os.environ['AWS_LAMBDA_FUNCTION_VERSION']}\n";

async fn natsfn_ok(env: &Env, args: &[&str]) -> String {
    let log = format!("\nnode log:\n{}", env.node.log());
    cli_ok(&env.server.url, args, &log).await
}

/// Publishes the binding of `name` as it is now; the version's number.
async fn publish(env: &Env, name: &str) -> u64 {
    let out = natsfn_ok(env, &["publish", name]).await;
    let n = out
        .trim()
        .strip_prefix(&format!("published {name} version "))
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("unexpected publish output: {out:?}"))
}

/// Binds `name` to python code saying `label`, ready.
async fn bind_label(env: &Env, name: &str, label: &str) -> tempfile::TempDir {
    let code = code_dir(&[("app.py", &handler(label))]);
    env.bind_ready(name, Binding::python("app.handler", dir_str(code.path())))
        .await;
    code
}

/// The first successful reply on `subject`, asking until one comes (a new alias'
/// subscriptions, or a version's actor, take a moment to exist).
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

async fn aliases(env: &Env) -> Store {
    let js = async_nats::jetstream::new(env.client.clone());
    natsfn_actors::buckets::aliases(&js).await.expect("aliases")
}

async fn alias(store: &Store, name: &str, alias: &str) -> AliasRecord {
    let value = store
        .get(format!("{name}.{alias}"))
        .await
        .expect("read alias")
        .expect("alias exists");
    serde_json::from_slice(&value).expect("alias parses")
}

#[tokio::test]
async fn publish_freezes_code_and_configuration_and_each_version_runs_in_its_own_workers() {
    let env = Env::start().await;
    let one = code_dir(&[("app.py", &handler("one"))]);
    let spec = Binding::python("app.handler", dir_str(one.path())).env("GREETING", "hello");
    env.bind_ready("frozen", spec).await;
    assert_eq!(publish(&env, "frozen").await, 1);

    // The binding moves on and the version's directory disappears.
    let two = code_dir(&[("app.py", &handler("two"))]);
    let spec = Binding::python("app.handler", dir_str(two.path())).env("GREETING", "bonjour");
    env.bind_ready("frozen", spec).await;
    drop(one);

    let latest = env.invoke("frozen", "{}").await;
    let latest_out = json(&latest);
    assert_eq!(latest_out["code"], "two", "{latest_out}");
    assert_eq!(latest_out["greeting"], "bonjour");
    assert_eq!(latest_out["version"], "$LATEST");
    assert_eq!(latest_out["context_version"], "$LATEST");
    assert_eq!(
        header(&latest, "Natsfn-Executed-Version").as_deref(),
        Some("$LATEST")
    );

    let v1 = answered(&env, "natsfn.invoke.frozen.1").await;
    let v1_out = json(&v1);
    assert_eq!(v1_out["code"], "one", "code frozen by publish: {v1_out}");
    assert_eq!(
        v1_out["greeting"], "hello",
        "configuration frozen: {v1_out}"
    );
    assert_eq!(v1_out["version"], "1");
    assert_eq!(v1_out["context_version"], "1");
    assert_eq!(header(&v1, "Natsfn-Executed-Version").as_deref(), Some("1"));
    assert!(
        v1_out["worker"]
            .as_str()
            .unwrap_or_default()
            .contains("/[1]"),
        "{v1_out}"
    );
    assert_ne!(
        v1_out["worker"], latest_out["worker"],
        "a version's own workers"
    );

    let qualified_latest = answered(&env, "natsfn.invoke.frozen.$LATEST").await;
    assert_eq!(json(&qualified_latest)["worker"], latest_out["worker"]);

    // A second version of the new binding, and the first still answers.
    assert_eq!(publish(&env, "frozen").await, 2);
    let v2 = answered(&env, "natsfn.invoke.frozen.2").await;
    assert_eq!(json(&v2)["code"], "two");
    assert_eq!(json(&v2)["version"], "2");
    let again = env.request("natsfn.invoke.frozen.1", "{}").await;
    assert_eq!(
        json(&again)["worker"],
        v1_out["worker"],
        "warm: the same worker"
    );
}

#[tokio::test]
async fn an_unknown_qualifier_is_a_503_naming_it_and_errors_say_the_version() {
    let env = Env::start().await;
    let _code = bind_label(&env, "named", "one").await;
    publish(&env, "named").await;
    answered(&env, "natsfn.invoke.named.1").await;

    for (qualifier, says) in [("7", "no version 7"), ("beta", "no alias \"beta\"")] {
        let reply = env
            .request(&format!("natsfn.invoke.named.{qualifier}"), "{}")
            .await;
        assert_eq!(error_code(&reply), Some(503), "{qualifier}");
        let body = json(&reply);
        assert_eq!(body["errorType"], "ResourceNotFoundException", "{body}");
        assert!(
            body["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{body}"
        );
        assert_eq!(header(&reply, "Natsfn-Executed-Version"), None);
    }

    // The handler's own error, from a version: the reply says which ran.
    let failed = env
        .request("natsfn.invoke.named.1", r#"{"fail": true}"#)
        .await;
    assert_eq!(error_code(&failed), Some(500));
    assert_eq!(
        header(&failed, "Natsfn-Executed-Version").as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_weighted_alias_splits_invocations_and_serves_its_subjects() {
    let env = Env::start().await;
    let _one = bind_label(&env, "split", "one").await;
    publish(&env, "split").await;
    let _two = bind_label(&env, "split", "two").await;
    publish(&env, "split").await;
    natsfn_ok(
        &env,
        &[
            "alias",
            "set",
            "split",
            "live",
            "1",
            "--weight",
            "2=10%",
            "--subject",
            "fn.split",
        ],
    )
    .await;
    answered(&env, "fn.split").await;

    const N: usize = 2_000;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let replies = futures::stream::iter(0..N)
        .map(|_| env.request("fn.split", "{}"))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for reply in &replies {
        assert_eq!(error_code(reply), None, "{reply:?}");
        let out = json(reply);
        let executed = header(reply, "Natsfn-Executed-Version").expect("executed version");
        assert_eq!(
            out["version"],
            executed.as_str(),
            "the header says what ran"
        );
        *counts.entry(executed).or_default() += 1;
    }
    let extra = counts.get("2").copied().unwrap_or(0) as f64 / N as f64;
    println!("weighted alias, 10% to version 2: {extra:.3} of {N} invocations ({counts:?})");
    assert!(
        (0.05..=0.15).contains(&extra),
        "version 2 got {extra:.3} of the invocations, not 10% ± 5 points: {counts:?}"
    );
    assert_eq!(counts.len(), 2, "{counts:?}");

    // Its qualified subject too, and `alias rm` ends both.
    let reply = answered(&env, "natsfn.invoke.split.live").await;
    assert!(header(&reply, "Natsfn-Executed-Version").is_some());
    natsfn_ok(&env, &["alias", "rm", "split", "live"]).await;
    eventually("the alias is gone", || async {
        let reply = env.request("natsfn.invoke.split.live", "{}").await;
        (error_code(&reply) == Some(503)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn moving_an_alias_under_load_fails_nothing_and_never_goes_back() {
    let env = Env::start().await;
    let _one = bind_label(&env, "moving", "one").await;
    publish(&env, "moving").await;
    let _two = bind_label(&env, "moving", "two").await;
    publish(&env, "moving").await;
    natsfn_ok(
        &env,
        &["alias", "set", "moving", "live", "1", "-s", "fn.moving"],
    )
    .await;
    answered(&env, "fn.moving").await;

    // About 100 requests a second, four at a time, for three seconds; the alias moves
    // after one. Each records when it was sent and when its answer came.
    let client = env.client.clone();
    let load = tokio::spawn(async move {
        let start = Instant::now();
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut done = Vec::new();
        while start.elapsed() < Duration::from_secs(3) {
            interval.tick().await;
            let client = client.clone();
            pending.push(async move {
                let sent = Instant::now();
                let reply = client.request("fn.moving", "{}".into()).await;
                (sent, Instant::now(), reply)
            });
            while pending.len() >= 4 {
                if let Some(r) = pending.next().await {
                    done.push(r);
                }
            }
        }
        while let Some(r) = pending.next().await {
            done.push(r);
        }
        done
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    natsfn_ok(
        &env,
        &["alias", "set", "moving", "live", "2", "-s", "fn.moving"],
    )
    .await;
    let done = load.await.expect("load");

    let mut first_new: Option<Instant> = None;
    let mut outcomes: Vec<(Instant, Instant, String)> = Vec::new();
    for (sent, answered, reply) in done {
        let reply = reply.unwrap_or_else(|e| panic!("a request failed during the move: {e}"));
        assert_eq!(error_code(&reply), None, "a request failed: {reply:?}");
        let version = json(&reply)["version"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if version == "2" && first_new.is_none_or(|t| answered < t) {
            first_new = Some(answered);
        }
        outcomes.push((sent, answered, version));
    }
    let first_new = first_new.expect("version 2 answered after the move");
    let went_back = outcomes
        .iter()
        .filter(|(sent, _, version)| *sent > first_new && version == "1")
        .count();
    assert!(outcomes.len() > 200, "{} requests", outcomes.len());
    assert_eq!(
        went_back, 0,
        "requests sent after version 2 answered were run by version 1"
    );
    assert!(outcomes.iter().any(|(_, _, v)| v == "1"));
}

/// Drives `subject` at about 50 requests a second until the alias' canary is no longer
/// running (or 60 s pass); the final alias and, for each version, the times its
/// replies arrived.
async fn drive_canary(
    env: &Env,
    store: &Store,
    subject: &str,
    name: &str,
) -> (AliasRecord, HashMap<String, Vec<Instant>>) {
    let mut replies: HashMap<String, Vec<Instant>> = HashMap::new();
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    loop {
        interval.tick().await;
        let batch = futures::future::join_all((0..4).map(|_| env.request(subject, "{}"))).await;
        for reply in batch {
            if let Some(version) = header(&reply, "Natsfn-Executed-Version") {
                replies.entry(version).or_default().push(Instant::now());
            }
        }
        let record = alias(store, name, "live").await;
        let running = record
            .canary
            .as_ref()
            .is_some_and(|c| c.state == CanaryState::Running);
        if !running {
            return (record, replies);
        }
        assert!(
            Instant::now() < give_up,
            "the canary did not end in 60 s: {record:?}\nnode log:\n{}",
            env.node.log()
        );
        interval = tokio::time::interval(Duration::from_millis(80));
    }
}

#[tokio::test]
async fn a_canary_of_a_healthy_version_promotes_itself() {
    let env = Env::start().await;
    let _one = bind_label(&env, "healthy", "one").await;
    publish(&env, "healthy").await;
    let _two = bind_label(&env, "healthy", "two").await;
    publish(&env, "healthy").await;
    natsfn_ok(
        &env,
        &["alias", "set", "healthy", "live", "1", "-s", "fn.healthy"],
    )
    .await;
    answered(&env, "fn.healthy").await;
    let store = aliases(&env).await;

    natsfn_ok(
        &env,
        &[
            "alias",
            "set",
            "healthy",
            "live",
            "2",
            "--canary",
            "30%,100%",
            "--every",
            "2s",
            "--max-error-rate",
            "5%",
            "--min-sample",
            "20",
            "-s",
            "fn.healthy",
        ],
    )
    .await;
    let (record, replies) = drive_canary(&env, &store, "fn.healthy", "healthy").await;
    let canary = record.canary.as_ref().expect("canary kept");
    assert_eq!(canary.state, CanaryState::Promoted, "{record:?}");
    assert!(
        canary.observed.requests >= 20,
        "promoted on what it counted of the new version: {record:?}"
    );
    assert_eq!(record.version, 2);
    assert!(record.weights.is_empty(), "{record:?}");
    assert!(replies.get("2").is_some_and(|r| !r.is_empty()));
    let listed = natsfn_ok(&env, &["alias", "ls", "healthy"]).await;
    assert!(listed.contains("promoted"), "{listed}");
    // Only version 2 answers from now on.
    for _ in 0..20 {
        let reply = env.request("fn.healthy", "{}").await;
        assert_eq!(
            header(&reply, "Natsfn-Executed-Version").as_deref(),
            Some("2")
        );
    }
}

#[tokio::test]
async fn a_canary_of_a_failing_version_rolls_back_within_seconds() {
    let env = Env::start().await;
    let _one = bind_label(&env, "flaky", "one").await;
    publish(&env, "flaky").await;
    let code = code_dir(&[("app.py", FLAKY)]);
    env.bind_ready(
        "flaky",
        Binding::python("app.handler", dir_str(code.path())),
    )
    .await;
    publish(&env, "flaky").await;
    natsfn_ok(
        &env,
        &["alias", "set", "flaky", "live", "1", "-s", "fn.flaky"],
    )
    .await;
    answered(&env, "fn.flaky").await;
    let store = aliases(&env).await;

    // A long step: only the error rate can end it in time.
    natsfn_ok(
        &env,
        &[
            "alias",
            "set",
            "flaky",
            "live",
            "2",
            "--canary",
            "50%,100%",
            "--every",
            "10m",
            "--max-error-rate",
            "5%",
            "--min-sample",
            "20",
            "-s",
            "fn.flaky",
        ],
    )
    .await;
    let started = Instant::now();
    let (record, replies) = drive_canary(&env, &store, "fn.flaky", "flaky").await;
    let ended = Instant::now();
    let canary = record.canary.as_ref().expect("canary kept");
    assert_eq!(canary.state, CanaryState::RolledBack, "{record:?}");
    assert_eq!(record.version, 1, "back to the old version: {record:?}");
    assert!(record.weights.is_empty(), "{record:?}");
    let reason = canary.reason.clone().unwrap_or_default();
    assert!(reason.contains("error rate"), "{reason}");
    // From the reply that made the sample whole to the rollback.
    let new = replies.get("2").cloned().unwrap_or_default();
    let sampled = new.get(19).copied().unwrap_or(started);
    println!(
        "canary rollback: {:?} after the new version's 20th reply (min_sample), {:?} after the canary began; {reason}",
        ended.duration_since(sampled),
        ended.duration_since(started)
    );
    assert!(
        ended.duration_since(started) < Duration::from_secs(30),
        "rolled back long after the canary began"
    );
    let listed = natsfn_ok(&env, &["alias", "ls", "flaky"]).await;
    assert!(
        listed.contains("rolled back") && listed.contains("error rate"),
        "{listed}"
    );
    for _ in 0..20 {
        let reply = env.request("fn.flaky", "{}").await;
        assert_eq!(
            header(&reply, "Natsfn-Executed-Version").as_deref(),
            Some("1")
        );
    }
}

#[tokio::test]
async fn async_invocations_run_their_qualifier_and_name_it_in_destinations() {
    let env = Env::start().await;
    let code = code_dir(&[("app.py", &handler("one"))]);
    let spec = Binding::python("app.handler", dir_str(code.path())).on_success("fn.qualified.done");
    env.bind_ready("qualified", spec).await;
    publish(&env, "qualified").await;
    let _two = bind_label(&env, "qualified", "two").await;
    natsfn_ok(&env, &["alias", "set", "qualified", "live", "1"]).await;
    answered(&env, "natsfn.invoke.qualified.live").await;

    let mut done = env
        .client
        .subscribe("fn.qualified.done")
        .await
        .expect("subscribe");
    natsfn_ok(&env, &["invoke", "qualified:live", "--async", "{}"]).await;
    let record = tokio::time::timeout(Duration::from_secs(20), done.next())
        .await
        .expect("a destination record in time")
        .expect("subscription open");
    let record: Value = serde_json::from_slice(&record.payload).expect("record is JSON");
    let arn = record["requestContext"]["functionArn"]
        .as_str()
        .unwrap_or_default();
    assert!(arn.ends_with(":function:qualified:live"), "{record}");
    assert_eq!(
        record["responseContext"]["executedVersion"], "1",
        "{record}"
    );
    assert_eq!(record["responsePayload"]["code"], "one", "{record}");
}

#[tokio::test]
async fn the_gateway_invokes_versions_and_aliases_by_qualifier_with_boto3_and_function_urls() {
    let (env, addr) = gateway_env(NatsServer::start()).await;
    let _one = bind_label(&env, "gw", "one").await;
    publish(&env, "gw").await;
    let _two = bind_label(&env, "gw", "two").await;
    publish(&env, "gw").await;
    let _three = bind_label(&env, "gw", "three").await;
    natsfn_ok(&env, &["alias", "set", "gw", "live", "1"]).await;
    answered(&env, "natsfn.invoke.gw.live").await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    gateway_up(&http, &base).await;

    let out = python_json("boto3_qualified.py", &[&base, "gw"]).await;
    assert_eq!(out["alias"]["version"], "1", "{out}");
    assert_eq!(out["alias"]["payload"]["code"], "one", "{out}");
    assert_eq!(out["version"]["version"], "2", "{out}");
    assert_eq!(out["version"]["payload"]["code"], "two", "{out}");
    assert_eq!(out["named"]["version"], "1", "{out}");
    assert_eq!(out["latest"]["version"], "$LATEST", "{out}");
    assert_eq!(out["latest"]["payload"]["code"], "three", "{out}");
    let missing = out["missing"].as_str().unwrap_or_default();
    assert!(missing.contains("ResourceNotFoundException"), "{out}");

    // Function URLs per alias.
    let response = http
        .get(format!("{base}/gw:live/any/path"))
        .send()
        .await
        .expect("function URL");
    assert_eq!(response.status(), 200);
    let executed = response
        .headers()
        .get("X-Amz-Executed-Version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(executed.as_deref(), Some("1"));
    let body: Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON body");
    assert_eq!(body["code"], "one", "{body}");
    let unknown = http
        .get(format!("{base}/gw:nope/"))
        .send()
        .await
        .expect("function URL");
    assert_eq!(unknown.status(), 404);
}
