//! Binding reconciliation: every key of `natsfn-bindings` that is valid and admits
//! this node gets one FunctionActor, told of each later revision; a deleted key
//! retires it; an invalid one leaves the last good version serving and says why in
//! `natsfn-status`; a placement that leaves this node out hands the function over.

use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use natsfn_protocol::names::{ALIASES_BUCKET, BINDINGS_BUCKET, VERSIONS_BUCKET};
use natsfn_protocol::{BindingSpec, FunctionState};
use ractor::{Actor, ActorRef};
use tokio_util::task::AbortOnDrop;

use super::placement::{self, Handover};
use super::versions::{Family, Served};
use super::{Function, NodeMsg, NodeState};
use crate::function::{FunctionActor, FunctionArgs, FunctionMsg};
use crate::route;

const WATCH_RETRY: Duration = Duration::from_secs(1);

impl NodeState {
    /// Starts (again) feeding this actor every key's latest value, then every change,
    /// of the bindings, versions and aliases.
    pub(super) fn watch(&mut self, myself: &ActorRef<NodeMsg>) {
        let bindings = watch(
            self.bindings.clone(),
            BINDINGS_BUCKET,
            myself.clone(),
            |entry| NodeMsg::BindingChanged {
                name: entry.key,
                value: put_value(entry.operation, entry.value),
                revision: entry.revision,
            },
        );
        let versions = watch(
            self.versions.clone(),
            VERSIONS_BUCKET,
            myself.clone(),
            |entry| NodeMsg::VersionChanged {
                key: entry.key,
                value: put_value(entry.operation, entry.value),
            },
        );
        let aliases = watch(
            self.aliases.clone(),
            ALIASES_BUCKET,
            myself.clone(),
            |entry| NodeMsg::AliasChanged {
                key: entry.key,
                value: put_value(entry.operation, entry.value),
                revision: entry.revision,
            },
        );
        let peers = super::shares::watch_peers(self.nodes.clone(), myself.clone());
        // Versions and aliases first, so that a function's are known when its binding
        // makes it served (they are applied on arrival as well, in any order).
        self.watchers = [
            Box::pin(versions) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
            Box::pin(aliases),
            Box::pin(bindings),
            Box::pin(peers),
        ]
        .into_iter()
        .map(|task| AbortOnDrop::new(tokio::spawn(task).abort_handle()))
        .collect();
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
                let _ = f.actor.cast(FunctionMsg::Reconfigure {
                    spec: Box::new(spec),
                    revision,
                });
                self.apply_reserved(&name);
                self.reconfigure_versions(&name);
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
            f.retire();
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
            f.retire();
        }
        self.ctx.status.clear(name);
    }

    /// Serves `name` on this node: its `$LATEST` actor, its qualified subjects, its
    /// versions and aliases.
    pub(super) async fn spawn_function(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        name: String,
        spec: BindingSpec,
        revision: u64,
    ) {
        let family = Family::new(&name);
        let Some(actor) = self
            .spawn_actor(myself, &name, spec.clone(), revision, None, family.clone())
            .await
        else {
            return;
        };
        route::write(&family.routes).set_latest(Some(actor.clone()));
        let served = Served::start(&self.ctx, &name, family).await;
        self.functions.insert(
            name.clone(),
            Function {
                actor,
                spec,
                revision,
                served,
            },
        );
        self.apply_reserved(&name);
        self.serve_published(myself, &name).await;
    }

    /// Spawns one FunctionActor (`$LATEST` or a version), linked to the node.
    pub(super) async fn spawn_actor(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        name: &str,
        spec: BindingSpec,
        revision: u64,
        version: Option<u64>,
        family: Family,
    ) -> Option<ActorRef<FunctionMsg>> {
        let args = FunctionArgs {
            ctx: self.ctx.clone(),
            node: myself.get_derived(),
            name: name.into(),
            spec,
            revision,
            version,
            routes: family.routes,
            reserved: family.reserved,
        };
        match FunctionActor::spawn_linked(None, FunctionActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.live.insert(actor.get_id());
                Some(actor)
            }
            Err(e) => {
                let what = version.map_or_else(String::new, |n| format!(" version {n}"));
                self.ctx.status.report(
                    name,
                    FunctionState::Error,
                    revision,
                    Some(format!("cannot start the function{what}: {e}")),
                );
                None
            }
        }
    }

    /// A FunctionActor that panicked is a bug; its binding (or version) still stands,
    /// so it gets a fresh actor.
    pub(super) async fn actor_failed(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        id: ractor::ActorId,
        err: &ractor::ActorProcessingErr,
    ) {
        let latest = self
            .functions
            .iter()
            .find(|(_, f)| f.actor.get_id() == id)
            .map(|(name, f)| {
                (
                    name.clone(),
                    f.spec.clone(),
                    f.revision,
                    f.served.family.clone(),
                )
            });
        if let Some((name, spec, revision, family)) = latest {
            tracing::error!(function = %name, error = %err, "function actor failed; restarting it");
            route::write(&family.routes).set_latest(None);
            let actor = self
                .spawn_actor(myself, &name, spec, revision, None, family.clone())
                .await;
            match (actor, self.functions.get_mut(&name)) {
                (Some(actor), Some(f)) => {
                    route::write(&family.routes).set_latest(Some(actor.clone()));
                    f.actor = actor;
                }
                _ => {
                    if let Some(f) = self.functions.remove(&name) {
                        f.retire();
                    }
                }
            }
            return;
        }
        let version = self.functions.iter_mut().find_map(|(name, f)| {
            let n = f
                .served
                .versions
                .iter()
                .find(|(_, a)| a.get_id() == id)
                .map(|(n, _)| *n)?;
            f.served.versions.remove(&n);
            route::write(&f.served.family.routes).set_version(n, None);
            Some((name.clone(), n))
        });
        if let Some((name, n)) = version {
            tracing::error!(function = %name, version = n, error = %err, "version actor failed; restarting it");
            self.start_version(myself, &name, n).await;
        }
    }
}

/// A put's value; `None` for a delete or purge.
fn put_value(operation: Operation, value: bytes::Bytes) -> Option<bytes::Bytes> {
    match operation {
        Operation::Put => Some(value),
        Operation::Delete | Operation::Purge => None,
    }
}

/// Feeds the NodeActor every key's latest value, then every change. When the watch
/// breaks (a server failover) it starts again just after the last revision it passed
/// on, so every change made meanwhile arrives, deletes included, in order.
async fn watch(
    store: Store,
    bucket: &'static str,
    node: ActorRef<NodeMsg>,
    to_msg: fn(async_nats::jetstream::kv::Entry) -> NodeMsg,
) {
    let mut last_seen: u64 = 0;
    loop {
        let watch = if last_seen == 0 {
            store.watch_with_history(">").await
        } else {
            tracing::info!(
                from = last_seen + 1,
                "watching {bucket} again from revision {}",
                last_seen + 1
            );
            store.watch_all_from_revision(last_seen + 1).await
        };
        match watch {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            tracing::warn!(error = %e, "{bucket} watch failed");
                            break;
                        }
                    };
                    last_seen = last_seen.max(entry.revision);
                    if node.cast(to_msg(entry)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch {bucket}"),
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}
