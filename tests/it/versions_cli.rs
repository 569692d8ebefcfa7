//! Versions and aliases from the command line (`publish`, `version`, `alias`, `package
//! rm`): what they write in `natsfn-versions`, `natsfn-aliases` and `natsfn-packages`.
//! No node is needed: nothing here runs a function.

use std::process::Output;

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::object_store::ObjectStore;
use natsfn_protocol::version::CanaryState;
use natsfn_protocol::{AliasRecord, VersionRecord};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::harness::*;

struct Setup {
    server: NatsServer,
    bindings: Store,
    versions: Store,
    aliases: Store,
    packages: ObjectStore,
}

impl Setup {
    async fn start() -> Setup {
        let server = NatsServer::start();
        let js = async_nats::jetstream::new(server.client().await);
        Setup {
            bindings: natsfn_actors::buckets::bindings(&js)
                .await
                .expect("bindings"),
            versions: natsfn_actors::buckets::versions(&js)
                .await
                .expect("versions"),
            aliases: natsfn_actors::buckets::aliases(&js).await.expect("aliases"),
            packages: natsfn_actors::buckets::packages(&js)
                .await
                .expect("packages"),
            server,
        }
    }

    async fn natsfn(&self, args: &[&str]) -> Output {
        run_cli(&self.server, args).await
    }

    /// Runs natsfn, which must succeed; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        cli_ok(&self.server.url, args, "").await
    }

    /// Runs natsfn, which must fail; its stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.natsfn(args).await;
        assert!(
            !out.status.success(),
            "natsfn {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    async fn bind(&self, name: &str, spec: Value) {
        self.bindings
            .put(name, serde_json::to_vec(&spec).expect("json").into())
            .await
            .expect("put binding");
    }

    async fn version(&self, name: &str, n: u64) -> Option<VersionRecord> {
        let value = self
            .versions
            .get(format!("{name}.{n}"))
            .await
            .expect("read version")?;
        Some(serde_json::from_slice(&value).expect("a version record"))
    }

    async fn alias(&self, name: &str, alias: &str) -> Option<AliasRecord> {
        let value = self
            .aliases
            .get(format!("{name}.{alias}"))
            .await
            .expect("read alias")?;
        Some(serde_json::from_slice(&value).expect("an alias record"))
    }

    /// The object's bytes hashed as bindings pin them.
    async fn object_digest(&self, object: &str) -> String {
        let mut bytes = Vec::new();
        self.packages
            .get(object)
            .await
            .unwrap_or_else(|e| panic!("no object {object}: {e}"))
            .read_to_end(&mut bytes)
            .await
            .expect("read object");
        format!("sha256:{:x}", Sha256::digest(&bytes))
    }

    /// Publishes `name`, which must succeed; the version number it printed.
    async fn publish(&self, name: &str) -> u64 {
        let out = self.ok(&["publish", name]).await;
        let n = out
            .trim()
            .strip_prefix(&format!("published {name} version "))
            .unwrap_or_else(|| panic!("unexpected output {out:?}"));
        n.parse().expect("a version number")
    }
}

fn python_dir(body: &str) -> tempfile::TempDir {
    code_dir(&[(
        "app.py",
        &format!("def handler(event, context):\n    return {body}\n"),
    )])
}

fn dir_binding(dir: &tempfile::TempDir) -> Value {
    json!({"runtime": "python3", "handler": "app.handler", "code": {"dir": dir_str(dir.path())}})
}

#[tokio::test]
async fn publish_freezes_a_directory_and_numbers_versions_for_good() {
    let s = Setup::start().await;
    assert!(s
        .fails(&["publish", "nobody"])
        .await
        .contains("no function nobody is bound"));
    let dir = python_dir("1");
    s.bind("f", dir_binding(&dir)).await;
    let revision = s
        .bindings
        .entry("f")
        .await
        .expect("entry")
        .expect("bound")
        .revision;

    let out = s.ok(&["publish", "f", "--description", "first"]).await;
    assert_eq!(out, "published f version 1\n");
    let v1 = s.version("f", 1).await.expect("version 1");
    assert_eq!((v1.version, v1.description.as_str()), (1, "first"));
    assert_eq!(v1.from_revision, revision);
    assert!(
        time::OffsetDateTime::parse(&v1.created, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{}",
        v1.created
    );
    let code = &v1.binding["code"];
    let digest = code["digest"].as_str().expect("a digest").to_owned();
    let object = code["package"].as_str().expect("a package").to_owned();
    assert_eq!(object, format!("f@{digest}"));
    assert!(code.get("dir").is_none(), "{code}");
    assert_eq!(v1.binding["handler"], "app.handler");
    assert_eq!(s.object_digest(&object).await, digest);
    let counter: Value =
        serde_json::from_slice(&s.versions.get("f").await.expect("get").expect("counter"))
            .expect("json");
    assert_eq!(counter, json!({"last": 1}));

    // The directory changes: the next version freezes the new code, the first keeps its own.
    std::fs::write(
        dir.path().join("app.py"),
        "def handler(e, c):\n    return 2\n",
    )
    .expect("write");
    assert_eq!(s.publish("f").await, 2);
    let v2 = s.version("f", 2).await.expect("version 2");
    let digest2 = v2.binding["code"]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    assert_ne!(digest2, digest);
    assert_eq!(s.object_digest(&format!("f@{digest2}")).await, digest2);
    assert_eq!(s.object_digest(&object).await, digest);

    let listed = s.ok(&["version", "ls", "f"]).await;
    assert!(
        listed.contains(&object) && listed.contains("first"),
        "{listed}"
    );
    assert!(listed.contains(&format!("f@{digest2}")), "{listed}");

    // Numbers are never given out again, even after the last one is removed.
    assert_eq!(
        s.ok(&["version", "rm", "f", "2"]).await,
        "removed f version 2\n"
    );
    assert!(s.version("f", 2).await.is_none());
    assert!(s
        .fails(&["version", "rm", "f", "2"])
        .await
        .contains("no version 2"));
    assert_eq!(s.publish("f").await, 3);
    assert!(s.version("f", 3).await.is_some());
}

#[tokio::test]
async fn publish_freezes_packages_and_layers_and_package_rm_is_refused_while_a_version_uses_them() {
    let s = Setup::start().await;
    let code = python_dir("1");
    let layer = code_dir(&[("lib/x.txt", "x")]);
    s.ok(&["package", "push", &dir_str(code.path()), "-p", "app"])
        .await;
    s.ok(&["package", "push", &dir_str(layer.path()), "-p", "libs"])
        .await;
    let (app, libs) = (s.object_digest("app").await, s.object_digest("libs").await);
    s.bind(
        "g",
        json!({"runtime": "python3", "handler": "app.handler",
               "code": {"package": "app", "digest": app},
               "layers": [{"package": "libs"}]}),
    )
    .await;
    assert_eq!(s.publish("g").await, 1);
    let v1 = s.version("g", 1).await.expect("version 1");
    assert_eq!(
        v1.binding["code"],
        json!({"package": format!("app@{app}"), "digest": app})
    );
    assert_eq!(
        v1.binding["layers"],
        json!([{"package": format!("libs@{libs}"), "digest": libs}])
    );
    assert_eq!(s.object_digest(&format!("app@{app}")).await, app);
    assert_eq!(s.object_digest(&format!("libs@{libs}")).await, libs);

    // The frozen copies are the versions' own: package rm names who uses them.
    let refused = s.fails(&["package", "rm", &format!("app@{app}")]).await;
    assert!(refused.contains("g version 1 (code)"), "{refused}");
    let refused = s
        .fails(&["package", "rm", &format!("libs@{libs}"), "--force"])
        .await;
    assert!(refused.contains("g version 1 (layer)"), "{refused}");
    let listed = s.ok(&["package", "ls"]).await;
    assert!(listed.contains("g version 1 (code)"), "{listed}");

    // A package pushed anew no longer holds the digest the binding pins: a function
    // never published from it cannot be, one whose copy is frozen already still can.
    let changed = python_dir("2");
    s.ok(&["package", "push", &dir_str(changed.path()), "-p", "app"])
        .await;
    s.bind(
        "h",
        json!({"runtime": "python3", "handler": "app.handler",
               "code": {"package": "other", "digest": app}}),
    )
    .await;
    s.ok(&["package", "push", &dir_str(changed.path()), "-p", "other"])
        .await;
    let stale = s.fails(&["publish", "h"]).await;
    assert!(stale.contains("not the") && stale.contains(&app), "{stale}");
    assert_eq!(s.publish("g").await, 2);

    s.ok(&["version", "rm", "g", "1"]).await;
    s.ok(&["version", "rm", "g", "2"]).await;
    s.ok(&["package", "rm", &format!("app@{app}")]).await;
}

#[tokio::test]
async fn aliases_are_checked_written_whole_and_keep_their_versions() {
    let s = Setup::start().await;
    let dir = python_dir("1");
    s.bind("f", dir_binding(&dir)).await;
    assert_eq!(s.publish("f").await, 1);
    std::fs::write(
        dir.path().join("app.py"),
        "def handler(e, c):\n    return 2\n",
    )
    .expect("write");
    assert_eq!(s.publish("f").await, 2);

    let digits = s.fails(&["alias", "set", "f", "123", "1"]).await;
    assert!(digits.contains("all digits"), "{digits}");
    let latest = s.fails(&["alias", "set", "f", "$LATEST", "1"]).await;
    assert!(latest.contains("$LATEST"), "{latest}");
    let missing = s.fails(&["alias", "set", "f", "live", "9"]).await;
    assert!(missing.contains("no version 9"), "{missing}");
    let missing = s
        .fails(&["alias", "set", "f", "live", "1", "--weight", "7=10%"])
        .await;
    assert!(missing.contains("no version 7"), "{missing}");
    let two = s
        .fails(&[
            "alias", "set", "f", "live", "1", "--weight", "2=10%", "--weight", "3=10%",
        ])
        .await;
    assert!(two.contains("at most one"), "{two}");
    assert!(s.alias("f", "live").await.is_none());

    let out = s
        .ok(&[
            "alias",
            "set",
            "f",
            "live",
            "1",
            "--weight",
            "2=10%",
            "-s",
            "orders.live",
            "--no-wait",
            "--provisioned",
            "2",
            "--description",
            "production",
        ])
        .await;
    assert_eq!(out, "alias f:live -> version 1 (version 2 gets 10%)\n");
    let live = s.alias("f", "live").await.expect("alias");
    assert_eq!(live.version, 1);
    assert_eq!(live.weights.get("2"), Some(&0.1));
    assert_eq!(live.subjects, vec!["orders.live".to_owned()]);
    assert_eq!(live.provisioned, Some(2));
    let listed = s.ok(&["alias", "ls", "f"]).await;
    assert!(
        listed.contains("live") && listed.contains("2=10%") && listed.contains("orders.live"),
        "{listed}"
    );

    // In use as the alias' version or as its weighted extra: not removed.
    for n in ["1", "2"] {
        let refused = s.fails(&["version", "rm", "f", n]).await;
        assert!(refused.contains("alias live"), "{refused}");
    }
    // A plain set writes the whole alias: the weight and the subject are gone.
    s.ok(&["alias", "set", "f", "live", "2"]).await;
    let live = s.alias("f", "live").await.expect("alias");
    assert!(
        live.weights.is_empty() && live.subjects.is_empty(),
        "{live:?}"
    );
    assert_eq!(live.provisioned, None);
    s.ok(&["version", "rm", "f", "1"]).await;

    assert!(s
        .fails(&["alias", "rm", "f", "nope"])
        .await
        .contains("no alias nope"));
    assert_eq!(
        s.ok(&["alias", "rm", "f", "live"]).await,
        "removed alias f:live\n"
    );
    assert!(s.alias("f", "live").await.is_none());
    s.ok(&["version", "rm", "f", "2"]).await;
}

#[tokio::test]
async fn a_canary_moves_an_existing_alias_and_is_written_as_nodes_drive_it() {
    let s = Setup::start().await;
    let dir = python_dir("1");
    s.bind("f", dir_binding(&dir)).await;
    s.publish("f").await;
    std::fs::write(
        dir.path().join("app.py"),
        "def handler(e, c):\n    return 2\n",
    )
    .expect("write");
    s.publish("f").await;
    let canary = [
        "--canary",
        "10%,30%,100%",
        "--every",
        "1m",
        "--max-error-rate",
        "1%",
    ];

    let absent = s
        .fails(&[&["alias", "set", "f", "live", "2"][..], &canary[..]].concat())
        .await;
    assert!(absent.contains("set it first"), "{absent}");
    s.ok(&["alias", "set", "f", "live", "1"]).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    s.ok(&[&["alias", "set", "f", "live", "2"][..], &canary[..]].concat())
        .await;
    let value: Value =
        serde_json::from_slice(&s.aliases.get("f.live").await.expect("get").expect("alias"))
            .expect("json");
    let started = value["canary"]["step_started_ms"]
        .as_u64()
        .expect("started");
    assert!(started >= before, "{value}");
    let weight = value["weights"]["1"].as_f64().expect("a weight");
    assert!((weight - 0.9).abs() < 1e-9, "{value}");
    let expected = json!({
        "version": 2,
        "weights": {"1": weight},
        "subjects": [],
        "canary": {"steps": [0.1, 0.3, 1.0], "step": 0, "every_ms": 60000,
                   "max_error_rate": 0.01, "min_sample": 100, "from": 1,
                   "state": "running", "reason": null, "step_started_ms": started,
                   "baseline": null, "observed": {"requests": 0, "errors": 0}}
    });
    assert_eq!(value, expected);
    let listed = s.ok(&["alias", "ls", "f"]).await;
    assert!(
        listed.contains("running, step 1/3: version 2 gets 10%, from version 1"),
        "{listed}"
    );
    // The old version is where a rollback goes: still in use.
    assert!(s
        .fails(&["version", "rm", "f", "1"])
        .await
        .contains("alias live"));

    // One step of 100% moves everything at once: no weight is left to the old version.
    s.ok(&["alias", "set", "f", "live", "1"]).await;
    s.ok(&[
        "alias",
        "set",
        "f",
        "live",
        "2",
        "--canary",
        "100%",
        "--every",
        "30s",
        "--max-error-rate",
        "0.05",
        "--min-sample",
        "10",
    ])
    .await;
    let live = s.alias("f", "live").await.expect("alias");
    assert!(live.weights.is_empty(), "{live:?}");
    let c = live.canary.expect("a canary");
    assert_eq!((c.min_sample, c.every_ms, c.from), (10, 30_000, 1));
    assert_eq!(c.state, CanaryState::Running);

    // A plain set ends it.
    s.ok(&["alias", "set", "f", "live", "2"]).await;
    assert!(s.alias("f", "live").await.expect("alias").canary.is_none());
    let bad = s
        .fails(&[
            "alias",
            "set",
            "f",
            "live",
            "1",
            "--canary",
            "30%,10%",
            "--every",
            "1m",
            "--max-error-rate",
            "1%",
        ])
        .await;
    assert!(bad.contains("canary.steps"), "{bad}");
}

/// The gateway's qualified requests, with a stand-in for the node side of versions:
/// it answers `natsfn.invoke.probe.live` as version 2, and `natsfn.invoke.probe.gone`
/// as a node answers a qualifier it does not know (503, `ResourceNotFoundException`).
#[tokio::test]
async fn the_gateway_sends_qualified_requests_and_maps_their_replies() {
    use futures::StreamExt;

    let (env, addr) = gateway_env(NatsServer::start()).await;
    let mut probe = env
        .client
        .subscribe("natsfn.invoke.probe.>")
        .await
        .expect("subscribe");
    env.client.flush().await.expect("flush");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (client, log) = (env.client.clone(), seen.clone());
    let answering = tokio::spawn(async move {
        while let Some(msg) = probe.next().await {
            log.lock().expect("lock").push(msg.subject.to_string());
            let Some(reply) = msg.reply else { continue };
            let mut headers = async_nats::HeaderMap::new();
            let payload = if msg.subject.ends_with(".gone") {
                headers.insert("Nats-Service-Error-Code", "503");
                headers.insert("Nats-Service-Error", "probe has no alias gone");
                natsfn_protocol::LambdaError::resource_not_found("probe has no alias gone")
                    .to_json()
            } else {
                headers.insert("Natsfn-Executed-Version", "2");
                br#"{"ok": true}"#.to_vec()
            };
            let _ = client
                .publish_with_headers(reply, headers, payload.into())
                .await;
        }
    });
    // Bound where no node runs it: only the gateway reads it (its url settings).
    let binding = Binding::provided(Code::dir("/nonexistent")).label("serves", "nobody");
    env.put_binding("probe", binding).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    gateway_up(&http, &base).await;
    eventually("the gateway to read the probe's binding", || {
        let request = http.get(format!("{base}/probe:live/x")).send();
        async move { request.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
    let api = |target: &str| format!("{base}/2015-03-31/functions/{target}/invocations");
    let executed = |r: &reqwest::Response| {
        r.headers()
            .get("x-amz-executed-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let error_type = |r: &reqwest::Response| {
        r.headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    for url in [api("probe:live"), api("probe") + "?Qualifier=live"] {
        let response = http.post(&url).body("{}").send().await.expect("invoke");
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(executed(&response).as_deref(), Some("2"), "{url}");
    }
    let response = http.post(api("probe:gone")).send().await.expect("invoke");
    assert_eq!(response.status(), 404);
    assert_eq!(
        error_type(&response).as_deref(),
        Some("ResourceNotFoundException")
    );
    let sent = seen.lock().expect("lock").len();
    for url in [
        api("probe:live") + "?Qualifier=3",
        api("probe:a.b"),
        api("probe:0"),
    ] {
        let response = http.post(&url).body("{}").send().await.expect("invoke");
        assert_eq!(response.status(), 400, "{url}");
    }

    let response = http
        .get(format!("{base}/probe:live/x"))
        .send()
        .await
        .expect("url");
    assert_eq!(response.status(), 200);
    assert_eq!(executed(&response).as_deref(), Some("2"));
    let response = http
        .get(format!("{base}/probe:gone/x"))
        .send()
        .await
        .expect("url");
    assert_eq!(response.status(), 404);
    assert_eq!(
        error_type(&response).as_deref(),
        Some("ResourceNotFoundException")
    );
    let response = http
        .get(format!("{base}/probe:a.b/x"))
        .send()
        .await
        .expect("url");
    assert_eq!(response.status(), 400);

    // Nothing refused was sent; what was sent went to the qualified subjects.
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), sent + 2, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s == "natsfn.invoke.probe.live" || s == "natsfn.invoke.probe.gone"),
        "{seen:?}"
    );
    answering.abort();
}
