//! The driver against a real nats-server (on PATH, as the integration tests need it),
//! with a fake service instance of each version answering `$SRV.STATS.f`.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;
use natsfn_protocol::service::{
    EndpointData, EndpointStats, Identity, Metadata, StatsResponse, METADATA_VERSION,
};
use natsfn_protocol::version::Outcomes;
use tokio_util::task::AbortOnDropHandle;

use super::*;

const WAIT: Duration = Duration::from_secs(15);

struct Server {
    child: Child,
    url: String,
    _store: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn server() -> (Server, async_nats::Client, Store) {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = tempfile::tempdir().unwrap();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH");
    let server = Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _store: store,
    };
    let deadline = Instant::now() + WAIT;
    let client = loop {
        match async_nats::connect(&server.url).await {
            Ok(client) => break client,
            Err(e) if Instant::now() > deadline => panic!("no nats-server: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let js = async_nats::jetstream::new(client.clone());
    let aliases = crate::buckets::aliases(&js).await.unwrap();
    (server, client, aliases)
}

/// The counts of one fake service instance.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    fn add(&self, requests: u64, errors: u64) {
        self.requests.fetch_add(requests, Ordering::SeqCst);
        self.errors.fetch_add(errors, Ordering::SeqCst);
    }
}

/// Answers `$SRV.STATS.f` as instance `id` of `version` with `counts`.
async fn instance(
    client: &async_nats::Client,
    id: &str,
    version: &str,
    counts: Arc<Counts>,
) -> AbortOnDropHandle<()> {
    let mut requests = client.subscribe("$SRV.STATS.f").await.unwrap();
    client.flush().await.unwrap();
    let client = client.clone();
    let (id, version) = (id.to_owned(), version.to_owned());
    AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else { continue };
            let endpoint = EndpointStats {
                name: "invoke".into(),
                subject: "natsfn.invoke.f".into(),
                queue_group: "natsfn.f".into(),
                num_requests: counts.requests.load(Ordering::SeqCst),
                num_errors: 0,
                processing_time: 0,
                average_processing_time: 0,
                last_error: String::new(),
                data: Some(EndpointData {
                    server_errors: counts.errors.load(Ordering::SeqCst),
                    ready_workers: 0,
                }),
            };
            let identity = Identity {
                name: "f".into(),
                id: id.clone(),
                version: "0.0.1".into(),
                metadata: Metadata::from([(METADATA_VERSION.to_owned(), version.clone())]),
            };
            let stats = StatsResponse::new(identity, "2026-12-06T10:00:00Z".into(), vec![endpoint]);
            let _ = client
                .publish(reply, serde_json::to_vec(&stats).unwrap().into())
                .await;
        }
    }))
}

/// Version 5 as canary of version 4: steps 50%, 100%, each `every_ms`, judged from 20
/// invocations at 10 %.
async fn set_canary(aliases: &Store, every_ms: u64) {
    let value = serde_json::json!({"version": 5, "weights": {"4": 0.5},
        "canary": {"steps": [0.5, 1.0], "step": 0, "every_ms": every_ms,
        "max_error_rate": 0.1, "min_sample": 20, "from": 4, "state": "running",
        "reason": null, "step_started_ms": now_ms(), "baseline": null,
        "observed": {"requests": 0, "errors": 0}}});
    aliases
        .put("f.live", serde_json::to_vec(&value).unwrap().into())
        .await
        .unwrap();
}

async fn alias(aliases: &Store) -> AliasRecord {
    let value = aliases.get("f.live").await.unwrap().unwrap();
    AliasRecord::parse(&value).unwrap()
}

async fn eventually<F: Fn(&AliasRecord) -> bool>(
    aliases: &Store,
    what: &str,
    done: F,
) -> AliasRecord {
    let deadline = Instant::now() + WAIT;
    loop {
        let record = alias(aliases).await;
        if done(&record) {
            return record;
        }
        assert!(Instant::now() < deadline, "{what}: still {record:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn holder(record: &AliasRecord) -> Option<String> {
    record
        .canary
        .as_ref()?
        .lease
        .as_ref()
        .map(|l| l.node.clone())
}

fn state(record: &AliasRecord) -> Option<CanaryState> {
    record.canary.as_ref().map(|c| c.state)
}

fn start(client: &async_nats::Client, aliases: &Store, node: &str) -> CanaryDriver {
    CanaryDriver::start(
        client.clone(),
        aliases.clone(),
        Arc::from("f"),
        "live".into(),
        Arc::from(node),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_drivers_one_lease_and_the_canary_promotes_itself() {
    let (_server, client, aliases) = server().await;
    let new = Arc::new(Counts::default());
    new.add(7, 7); // served before the canary: not counted
    let old = Arc::new(Counts::default());
    old.add(100, 100); // the old version's errors are not the canary's
    let _new = instance(&client, "i5", "5", new.clone()).await;
    let _old = instance(&client, "i4", "4", old).await;
    let mut history = aliases.watch("f.live").await.unwrap();
    set_canary(&aliases, 1_000).await;
    let (a, b) = (
        start(&client, &aliases, "n1"),
        start(&client, &aliases, "n2"),
    );
    let load = {
        let new = new.clone();
        AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                new.add(5, 0);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }))
    };
    let done = eventually(&aliases, "promoted", |r| {
        state(r) == Some(CanaryState::Promoted)
    })
    .await;
    drop(load);
    assert_eq!(done.version, 5);
    assert!(done.weights.is_empty());
    let canary = done.canary.as_ref().unwrap();
    assert_eq!(canary.lease, None);
    assert!(canary.observed.requests >= 20, "{canary:?}");
    assert_eq!(canary.observed.errors, 0);
    assert!(
        canary
            .reason
            .as_deref()
            .unwrap()
            .starts_with("error rate 0.0% ("),
        "{canary:?}"
    );
    // Every write while it ran named the same node.
    let mut holders = Vec::new();
    while let Ok(Some(Ok(entry))) =
        tokio::time::timeout(Duration::from_millis(200), history.next()).await
    {
        let record = AliasRecord::parse(&entry.value).unwrap();
        if let Some(node) = holder(&record) {
            if holders.last() != Some(&node) {
                holders.push(node);
            }
        }
    }
    assert_eq!(holders.len(), 1, "lease holders in turn: {holders:?}");
    // Both drivers end with the canary.
    let deadline = Instant::now() + WAIT;
    while !(a.is_finished() && b.is_finished()) {
        assert!(Instant::now() < deadline, "a driver kept running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_takes_over_and_rolls_a_failing_version_back() {
    let (_server, client, aliases) = server().await;
    let new = Arc::new(Counts::default());
    let _new = instance(&client, "i5", "5", new.clone()).await;
    set_canary(&aliases, 60_000).await;
    let first = start(&client, &aliases, "n1");
    eventually(&aliases, "n1 drives", |r| {
        holder(r).as_deref() == Some("n1")
    })
    .await;
    drop(first);
    let _second = start(&client, &aliases, "n2");
    let took_over = Instant::now();
    eventually(&aliases, "n2 drives", |r| {
        holder(r).as_deref() == Some("n2")
    })
    .await;
    assert!(took_over.elapsed() < LEASE_FOR + LOOK_FOR_LEASE_EVERY + Duration::from_secs(1));
    new.add(30, 10);
    let failing = Instant::now();
    let back = eventually(&aliases, "rolled back", |r| {
        state(r) == Some(CanaryState::RolledBack)
    })
    .await;
    assert!(
        failing.elapsed() < Duration::from_secs(2),
        "{:?}",
        failing.elapsed()
    );
    assert_eq!(back.version, 4);
    assert!(back.weights.is_empty());
    let canary = back.canary.as_ref().unwrap();
    assert_eq!(
        canary.observed,
        Outcomes {
            requests: 30,
            errors: 10
        }
    );
    assert_eq!(
        canary.reason.as_deref(),
        Some("error rate 33.3% (10 of 30 invocations) above 10.0%")
    );
}
