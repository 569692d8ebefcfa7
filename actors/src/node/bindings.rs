//! Binding reconciliation: every key of `natsfn-bindings` that is valid and admits
//! this node gets one FunctionActor, told of each later revision; a deleted key
//! retires it; an invalid one leaves the last good version serving and says why in
//! `natsfn-status`; a placement that leaves this node out hands the function over.

use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use natsfn_protocol::names::BINDINGS_BUCKET;
use natsfn_protocol::{BindingSpec, FunctionState};
use ractor::{Actor, ActorRef};
use tokio_util::task::AbortOnDrop;

use super::placement::{self, Handover};
use super::{Function, NodeMsg, NodeState};
use crate::function::{FunctionActor, FunctionArgs, FunctionMsg};

const WATCH_RETRY: Duration = Duration::from_secs(1);

impl NodeState {
    /// Starts (again) feeding this actor every key's latest value, then every change.
    pub(super) fn watch_bindings(&mut self, myself: &ActorRef<NodeMsg>) {
        let task = tokio::spawn(watch(self.bindings.clone(), myself.clone()));
        self.watcher = Some(AbortOnDrop::new(task.abort_handle()));
    }

    pub(super) async fn binding_put(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        name: String,
        value: &[u8],
        revision: u64,
    ) {
        if self
            .functions
            .get(&name)
            .is_some_and(|f| f.revision >= revision)
        {
            return;
        }
        let spec = match BindingSpec::parse(&name, value) {
            Ok(spec) => spec,
            Err(e) => {
                // The last good version (if any) keeps serving.
                let kept = match self.functions.get(&name) {
                    Some(f) => format!(" (still serving revision {})", f.revision),
                    None => String::new(),
                };
                self.ctx.status.report(
                    &name,
                    FunctionState::Error,
                    revision,
                    Some(format!("invalid binding: {e}{kept}")),
                );
                return;
            }
        };
        if let Some(placement) = spec.placement.as_ref().filter(|p| !p.admits(&self.labels)) {
            // Not for this node. One serving it goes on until a matching node does.
            let serving_here = self.functions.get_mut(&name).map(|f| {
                f.revision = revision;
            });
            let (nodes, me) = (self.nodes.clone(), self.ctx.node_id.clone());
            let wanted = placement.labels.clone();
            let node = myself.clone();
            tokio::spawn(async move {
                let outcome =
                    placement::hand_over(&nodes, &me, &name, &wanted, serving_here.is_some()).await;
                let _ = node.cast(NodeMsg::HandedOver {
                    name,
                    revision,
                    outcome,
                });
            });
            return;
        }
        match self.functions.get_mut(&name) {
            Some(f) => {
                f.spec = spec.clone();
                f.revision = revision;
                let _ = f.actor.cast(FunctionMsg::Reconfigure { spec, revision });
            }
            None => self.spawn_function(myself, name, spec, revision).await,
        }
    }

    /// The wait started when this node stopped matching revision `revision` of
    /// `name` ended.
    pub(super) fn handed_over(&mut self, name: &str, revision: u64, outcome: Handover) {
        let current = self.functions.get(name).map(|f| f.revision);
        // A later edit decided again (and may have made this node match).
        if current.is_some_and(|r| r != revision) {
            return;
        }
        if let Some(f) = self.functions.remove(name) {
            tracing::info!(function = %name, revision, "placement: no longer served on this node");
            let _ = f.actor.cast(FunctionMsg::Retire);
        }
        match outcome {
            Handover::Served => {}
            Handover::NoMatch(reason) => {
                self.ctx
                    .status
                    .report(name, FunctionState::Error, revision, Some(reason))
            }
            Handover::TimedOut => tracing::warn!(
                function = %name,
                "placement: no matching node said it serves the function in time; retired here all the same"
            ),
        }
    }

    pub(super) fn binding_removed(&mut self, name: &str, revision: u64) {
        if self
            .functions
            .get(name)
            .is_some_and(|f| f.revision >= revision)
        {
            return;
        }
        if let Some(f) = self.functions.remove(name) {
            let _ = f.actor.cast(FunctionMsg::Retire);
        }
        self.ctx.status.clear(name);
    }

    pub(super) async fn spawn_function(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        name: String,
        spec: BindingSpec,
        revision: u64,
    ) {
        let args = FunctionArgs {
            ctx: self.ctx.clone(),
            node: myself.get_derived(),
            name: name.as_str().into(),
            spec: spec.clone(),
            revision,
        };
        match FunctionActor::spawn_linked(None, FunctionActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.live.insert(actor.get_id());
                self.functions.insert(
                    name,
                    Function {
                        actor,
                        spec,
                        revision,
                    },
                );
            }
            Err(e) => self.ctx.status.report(
                &name,
                FunctionState::Error,
                revision,
                Some(format!("cannot start the function: {e}")),
            ),
        }
    }
}

/// Feeds the NodeActor every key's latest value, then every change. When the watch
/// breaks (a server failover) it starts again just after the last revision it passed
/// on, so every change made meanwhile arrives, deletes included, in order.
async fn watch(bindings: Store, node: ActorRef<NodeMsg>) {
    let mut last_seen: u64 = 0;
    loop {
        let watch = if last_seen == 0 {
            bindings.watch_with_history(">").await
        } else {
            tracing::info!(
                from = last_seen + 1,
                "watching {BINDINGS_BUCKET} again from revision {}",
                last_seen + 1
            );
            bindings.watch_all_from_revision(last_seen + 1).await
        };
        match watch {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            tracing::warn!(error = %e, "bindings watch failed");
                            break;
                        }
                    };
                    last_seen = last_seen.max(entry.revision);
                    let value = match entry.operation {
                        Operation::Put => Some(entry.value),
                        Operation::Delete | Operation::Purge => None,
                    };
                    let msg = NodeMsg::BindingChanged {
                        name: entry.key,
                        value,
                        revision: entry.revision,
                    };
                    if node.cast(msg).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch {BINDINGS_BUCKET}"),
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}
