//! What is the function's across the cluster, split over the nodes that serve it:
//! its `reserved_concurrency` and the workers its aliases provision. Each node works
//! out its own share from `natsfn-nodes` (which node serves which functions), so no
//! invocation waits for a round trip; the shares add up to the whole once every node
//! has seen the same registry (a node that joins or leaves shifts them within a
//! registry refresh; one that dies, within the key's TTL).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use natsfn_protocol::names::NODES_BUCKET;
use natsfn_protocol::NodeInfo;
use ractor::ActorRef;

use super::{NodeMsg, NodeState};

const WATCH_RETRY: Duration = Duration::from_secs(1);

/// `me`'s part of `total` among `serving` (sorted node ids, `me` among them): an
/// equal split, the remainder to the first ids.
pub(super) fn share_of(total: u32, me: &str, serving: &BTreeSet<String>) -> u32 {
    let n = serving.len().max(1) as u32;
    let index = serving.iter().position(|id| id == me).unwrap_or(0) as u32;
    total / n + u32::from(index < total % n)
}

impl NodeState {
    /// A node's list of served functions changed (`None`: the node left).
    pub(super) fn peer_serves(&mut self, node: String, functions: Option<BTreeSet<String>>) {
        let after = functions.clone().unwrap_or_default();
        let before = match functions {
            Some(functions) => self.peers.insert(node, functions),
            None => self.peers.remove(&node),
        }
        .unwrap_or_default();
        // Only the functions that node started or stopped serving get new shares.
        let changed: Vec<String> = before
            .symmetric_difference(&after)
            .filter(|f| self.functions.contains_key(*f))
            .cloned()
            .collect();
        for function in changed {
            self.apply_reserved(&function);
            self.reconfigure_versions(&function);
        }
    }

    /// The nodes serving `function`, this one included.
    pub(super) fn serving(&self, function: &str) -> BTreeSet<String> {
        self.peers
            .iter()
            .filter(|(_, functions)| functions.contains(function))
            .map(|(node, _)| node.clone())
            .chain(std::iter::once(self.ctx.node_id.to_string()))
            .collect()
    }

    /// Sets this node's share of `function`'s `reserved_concurrency`.
    pub(super) fn apply_reserved(&self, function: &str) {
        let Some(f) = self.functions.get(function) else {
            return;
        };
        let share = f
            .spec
            .reserved_concurrency
            .map(|total| share_of(total, &self.ctx.node_id, &self.serving(function)));
        if f.served.family.reserved.limit() != share {
            tracing::info!(function, ?share, "reserved_concurrency: this node's share");
            f.served.family.reserved.set_limit(share);
        }
    }
}

/// Tells the NodeActor which functions each node serves, whenever that changes.
pub(super) async fn watch_peers(nodes: Store, node: ActorRef<NodeMsg>) {
    let mut known: HashMap<String, BTreeSet<String>> = HashMap::new();
    loop {
        match nodes.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else {
                        break;
                    };
                    let functions = match entry.operation {
                        Operation::Put => serde_json::from_slice::<NodeInfo>(&entry.value)
                            .ok()
                            .map(|info| info.serving.into_iter().collect::<BTreeSet<_>>()),
                        Operation::Delete | Operation::Purge => None,
                    };
                    if known.get(&entry.key) == functions.as_ref() {
                        continue; // a refresh: nothing served changed
                    }
                    match &functions {
                        Some(f) => known.insert(entry.key.clone(), f.clone()),
                        None => known.remove(&entry.key),
                    };
                    let msg = NodeMsg::PeerServes {
                        node: entry.key,
                        functions,
                    };
                    if node.cast(msg).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch {NODES_BUCKET}"),
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shares_add_up_to_the_whole() {
        let nodes = ids(&["a", "b", "c"]);
        for total in 0..20 {
            let sum: u32 = ["a", "b", "c"]
                .iter()
                .map(|me| share_of(total, me, &nodes))
                .sum();
            assert_eq!(sum, total);
        }
        assert_eq!(share_of(4, "a", &nodes), 2);
        assert_eq!(share_of(4, "c", &nodes), 1);
        assert_eq!(share_of(1, "b", &nodes), 0);
        assert_eq!(share_of(5, "a", &ids(&["a"])), 5);
    }
}
