//! Writes function states to `natsfn-status`. One task, fed through a channel, so the
//! writes of one function land in the order they were reported and no actor waits on
//! a JetStream acknowledgement.

use async_nats::jetstream::kv::Store;
use natsfn_protocol::{FunctionState, FunctionStatus};
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

enum StatusUpdate {
    Set(String, FunctionStatus),
    Clear(String),
}

#[derive(Clone)]
pub(crate) struct StatusReporter {
    node_id: std::sync::Arc<str>,
    tx: mpsc::UnboundedSender<StatusUpdate>,
}

impl StatusReporter {
    pub(crate) fn spawn(node_id: std::sync::Arc<str>, bucket: Store) -> StatusReporter {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(update) = rx.recv().await {
                let (key, result) = match update {
                    StatusUpdate::Set(key, status) => {
                        let value = serde_json::to_vec(&status).unwrap_or_default();
                        let r = bucket.put(&key, value.into()).await.map(drop);
                        (key, r.map_err(|e| e.to_string()))
                    }
                    StatusUpdate::Clear(key) => {
                        let r = bucket.delete(&key).await;
                        (key, r.map_err(|e| e.to_string()))
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(function = %key, error = %e, "cannot write natsfn-status");
                }
            }
        });
        StatusReporter { node_id, tx }
    }

    pub(crate) fn report(
        &self,
        function: &str,
        state: FunctionState,
        revision: u64,
        reason: Option<String>,
    ) {
        let updated = time::OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        match &reason {
            Some(reason) => {
                tracing::warn!(function, revision, ?state, reason = %reason, "function state")
            }
            None => tracing::info!(function, revision, ?state, "function state"),
        }
        let status = FunctionStatus {
            state,
            revision,
            node: self.node_id.to_string(),
            reason,
            updated,
        };
        let _ = self.tx.send(StatusUpdate::Set(function.to_owned(), status));
    }

    pub(crate) fn clear(&self, function: &str) {
        let _ = self.tx.send(StatusUpdate::Clear(function.to_owned()));
    }
}
