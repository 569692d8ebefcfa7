//! The node's key in `natsfn-nodes`: written at start, rewritten with a fresh TTL
//! while the node lives and whenever what it serves changes, removed when it stops.
//! A node that dies without stopping (kill -9, a lost host) is dropped by the server
//! itself once the TTL runs out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use natsfn_protocol::names::NODES_BUCKET;
use natsfn_protocol::NodeInfo;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::buckets::NODE_TTL;
use crate::metrics::Metrics;

/// Three refreshes per TTL: one lost write never drops a live node.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long a stopping node waits for its key to be removed.
const REMOVE_WITHIN: Duration = Duration::from_secs(2);

/// Fed the functions served by the NodeActor; worker counts come from [`Metrics`],
/// which the FunctionActors keep current.
pub(crate) struct NodeRegistry {
    functions: watch::Sender<Vec<String>>,
    task: JoinHandle<()>,
}

impl NodeRegistry {
    pub(crate) fn spawn(
        js: Context,
        store: Store,
        node_id: &str,
        max_workers: usize,
        labels: BTreeMap<String, String>,
        metrics: Arc<Metrics>,
    ) -> NodeRegistry {
        let info = NodeInfo {
            id: node_id.to_owned(),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started: time::OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
            functions: 0,
            workers: 0,
            max_workers,
            labels,
            serving: Vec::new(),
            server: String::new(),
        };
        let (functions, rx) = watch::channel(Vec::new());
        let task = tokio::spawn(keep(js, store, info, metrics, rx));
        NodeRegistry { functions, task }
    }

    /// A change rewrites the key at once; the same list again does nothing.
    pub(crate) fn report(&self, functions: Vec<String>) {
        self.functions.send_if_modified(|current| {
            let changed = *current != functions;
            *current = functions;
            changed
        });
    }

    /// Removes the key (and waits for that, briefly).
    pub(crate) async fn stop(self) {
        let NodeRegistry {
            functions,
            mut task,
        } = self;
        drop(functions);
        if tokio::time::timeout(REMOVE_WITHIN, &mut task)
            .await
            .is_err()
        {
            tracing::warn!("could not remove this node from {NODES_BUCKET} in time");
            task.abort();
        }
    }
}

/// Whether `id` can be a KV key (and so a subject token of `$KV.natsfn-nodes.`).
pub(crate) fn is_valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && !id.ends_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=/.".contains(&b))
}

async fn keep(
    js: Context,
    store: Store,
    mut info: NodeInfo,
    metrics: Arc<Metrics>,
    mut functions: watch::Receiver<Vec<String>>,
) {
    let subject = format!("$KV.{NODES_BUCKET}.{}", info.id);
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = refresh.tick() => {}
            changed = functions.changed() => if changed.is_err() { break },
        }
        info.serving = functions.borrow_and_update().clone();
        info.functions = info.serving.len();
        info.workers = metrics.node_workers();
        info.server = js.client().server_info().server_name;
        if let Err(e) = put(&js, &subject, &info).await {
            tracing::warn!(error = %e, "cannot refresh this node in {NODES_BUCKET}");
        }
    }
    // The purge marker expires too, so stopped nodes leave nothing behind.
    if let Err(e) = store.purge_with_ttl(&info.id, NODE_TTL).await {
        tracing::warn!(error = %e, "cannot remove this node from {NODES_BUCKET}");
    }
}

/// A KV put with a per-message TTL (`Store::put` has none).
async fn put(js: &Context, subject: &str, info: &NodeInfo) -> Result<(), PublishError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_TTL,
        NODE_TTL.as_secs().to_string().as_str(),
    );
    // A struct of strings and numbers always serialises.
    let value = serde_json::to_vec(info).unwrap_or_default();
    js.publish_with_headers(subject.to_owned(), headers, value.into())
        .await?
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_valid_node_id;

    #[test]
    fn node_ids_are_kv_keys() {
        assert!(is_valid_node_id("node-a"));
        assert!(is_valid_node_id("host-1a2b3c4d"));
        assert!(is_valid_node_id("eu.host_1"));
        assert!(!is_valid_node_id(""));
        assert!(!is_valid_node_id(".a"));
        assert!(!is_valid_node_id("a."));
        assert!(!is_valid_node_id("a b"));
        assert!(!is_valid_node_id("a*"));
        assert!(!is_valid_node_id("a>"));
    }
}
