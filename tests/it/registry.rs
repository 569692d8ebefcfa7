//! `natsfn-nodes`: every live node keeps a TTL'd key there; `natsfn nodes` lists them.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use natsfn_protocol::NodeInfo;

use crate::harness::*;

/// The key's TTL and refresh (actors/src/registry.rs): a dead node's key is gone at
/// most this long after its last refresh.
const TTL: Duration = Duration::from_secs(15);

async fn nodes_bucket(server: &NatsServer) -> Store {
    let js = async_nats::jetstream::new(server.client().await);
    natsfn_actors::buckets::nodes(&js)
        .await
        .expect("nodes bucket")
}

async fn node_info(nodes: &Store, id: &str) -> Option<NodeInfo> {
    let value = nodes.get(id).await.expect("read natsfn-nodes")?;
    Some(serde_json::from_slice(&value).expect("node record json"))
}

async fn natsfn_nodes(server: &NatsServer) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .args(["--nats", &server.url, "nodes"])
        .output()
        .await
        .expect("run natsfn nodes");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn natsfn_nodes_lists_the_running_nodes_with_their_functions_and_workers() {
    let server = NatsServer::start();
    let second = Node::start(&server, "node-b");
    let env = Env::on(server).await;
    let code = code_dir(&[("app.py", "def handler(event, context):\n    return 1\n")]);
    env.bind_ready("listed", Binding::python("app.handler", &code).pool(1, 2))
        .await;
    // Worker counts are refreshed with the key (every 5 s), function counts at once.
    let listing = eventually("both nodes listed with their worker", || async {
        let listing = natsfn_nodes(&env.server).await;
        let rows: Vec<Vec<String>> = listing
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect();
        let serving = |id: &str| {
            rows.iter()
                .any(|r| r.len() == 5 && r[0] == id && r[2] == "1" && r[3].starts_with("1/"))
        };
        (serving("node-a") && serving("node-b")).then_some(listing)
    })
    .await;
    let header: Vec<&str> = listing
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "HOST", "FUNCTIONS", "WORKERS", "UPTIME"],
        "{listing}"
    );
    let info = node_info(&nodes_bucket(&env.server).await, "node-b")
        .await
        .expect("node-b's record");
    assert_eq!(info.pid, second.pid(), "{info:?}");
    assert_eq!(info.functions, 1, "{info:?}");
    assert!(info.max_workers >= 4, "{info:?}");
    assert!(
        !info.host.is_empty() && !info.started.is_empty(),
        "{info:?}"
    );
}

#[tokio::test]
async fn a_node_killed_with_sigkill_leaves_natsfn_nodes_within_its_ttl() {
    let server = NatsServer::start();
    let mut node = Node::start(&server, "doomed");
    let nodes = nodes_bucket(&server).await;
    eventually("the node's key", || async {
        node_info(&nodes, "doomed").await
    })
    .await;
    node.kill();
    let killed = Instant::now();
    // It refreshed at most 5 s before the kill, so the key may outlive the node by
    // up to one TTL; the server's expiry adds its own scan interval.
    eventually_within(2 * TTL, "the killed node's key to expire", || async {
        node_info(&nodes, "doomed").await.is_none().then_some(())
    })
    .await;
    assert!(killed.elapsed() <= 2 * TTL, "{:?}", killed.elapsed());
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_removes_its_key_before_it_exits() {
    let server = NatsServer::start();
    let mut node = Node::start(&server, "leaving");
    let nodes = nodes_bucket(&server).await;
    eventually("the node's key", || async {
        node_info(&nodes, "leaving").await
    })
    .await;
    node.terminate();
    assert!(node.exited().await.success(), "{}", node.log());
    // At once: no TTL to wait out.
    assert_eq!(node_info(&nodes, "leaving").await, None);
}
