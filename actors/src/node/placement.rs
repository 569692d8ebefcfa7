//! Placement across nodes: when a binding's `placement.labels` leave this node out,
//! who else serves the function, read from `natsfn-nodes` (each live node lists its
//! labels and the functions it serves).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Store;
use futures::StreamExt;
use natsfn_protocol::{NodeInfo, Placement};

/// How the wait for a matching node to take over a function ended.
pub enum Handover {
    /// A live matching node serves it.
    Served,
    /// No live node matches the placement (named in words).
    NoMatch(String),
    /// Matching nodes live but none said it serves the function in time.
    TimedOut,
}

/// How long a node that no longer matches keeps serving while it waits for a
/// matching one to serve the function.
const HAND_OVER_WITHIN: Duration = Duration::from_secs(30);
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// After a matching node lists the function: time for its queue subscription's
/// interest to reach every server of the cluster before this node leaves the group.
const INTEREST_SETTLES: Duration = Duration::from_millis(250);

/// Waits until a live node other than `me` that matches `wanted` serves `name` (when
/// `serving_here`, so that callers never find nobody), or says that no live node
/// matches.
pub(crate) async fn hand_over(
    nodes: &Store,
    me: &str,
    name: &str,
    wanted: &BTreeMap<String, String>,
    serving_here: bool,
) -> Handover {
    let placement = Placement {
        labels: wanted.clone(),
    };
    let started = Instant::now();
    loop {
        let live = live_nodes(nodes).await;
        let matching: Vec<&NodeInfo> = live
            .iter()
            .filter(|n| n.id != me && placement.admits(&n.labels))
            .collect();
        if matching.is_empty() {
            return Handover::NoMatch(format!(
                "no live node matches placement {}",
                serde_json::json!({ "labels": wanted })
            ));
        }
        if !serving_here {
            return Handover::Served;
        }
        if matching.iter().any(|n| n.serving.iter().any(|f| f == name)) {
            tokio::time::sleep(INTEREST_SETTLES).await;
            return Handover::Served;
        }
        if started.elapsed() >= HAND_OVER_WITHIN {
            return Handover::TimedOut;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Every record of `natsfn-nodes` that can be read now.
async fn live_nodes(nodes: &Store) -> Vec<NodeInfo> {
    let Ok(keys) = nodes.keys().await else {
        return Vec::new();
    };
    let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
    let mut found = Vec::new();
    for key in keys {
        if let Ok(Some(value)) = nodes.get(&key).await {
            if let Ok(info) = serde_json::from_slice::<NodeInfo>(&value) {
                found.push(info);
            }
        }
    }
    found
}
