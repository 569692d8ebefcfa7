//! NodeActor: the root of a node. Watches `natsfn-bindings` from its current state on
//! and keeps exactly one FunctionActor per valid key; writes why a key was rejected to
//! `natsfn-status`. Keeps the node's key in `natsfn-nodes` current.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use futures::StreamExt;
use natsfn_protocol::names::BINDINGS_BUCKET;
use natsfn_protocol::{BindingSpec, FunctionState};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::Semaphore;

use crate::buckets;
use crate::context::{Interpreters, NodeContext};
use crate::function::{FunctionActor, FunctionArgs, FunctionMsg};
use crate::launch;
use crate::logs::LogShipper;
use crate::metrics::Metrics;
use crate::placement;
use crate::registry::{self, NodeRegistry};
use crate::status::StatusReporter;

const WATCH_RETRY: Duration = Duration::from_secs(1);
const STOP_FUNCTIONS_WITHIN: Duration = Duration::from_secs(10);
/// How long a function may take to say which of its workers is idle.
const ASK_IDLE_WITHIN: Duration = Duration::from_millis(200);

pub struct NodeActor;

pub struct NodeArgs {
    pub client: async_nats::Client,
    pub node_id: String,
    /// Where to write the bootstraps; a per-build temporary directory when `None`.
    pub runtime_dir: Option<PathBuf>,
    pub interpreters: Interpreters,
    /// Worker processes this node runs at most, all functions together.
    pub max_workers: usize,
    pub metrics: Arc<Metrics>,
    /// Limits of `NATSFN_LOGS` if this node creates it.
    pub logs: buckets::LogRetention,
    /// Where the node keeps its package cache (`<dir>/packages`); the user's cache
    /// directory when `None`.
    pub data_dir: Option<PathBuf>,
    /// How long the node may be without NATS before it stops taking work.
    pub nats_grace: Duration,
    /// `--label k=v`: matched with the `placement.labels` of each binding.
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("node id {0:?}: expected letters, digits and -_=/. (it is a key of natsfn-nodes)")]
    NodeId(String),
    #[error(transparent)]
    Bucket(#[from] buckets::BucketError),
    #[error(transparent)]
    Stream(#[from] buckets::StreamError),
    #[error("cannot create the package cache under {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the runtime bootstraps to {dir}: {source}")]
    Runtimes {
        dir: PathBuf,
        source: std::io::Error,
    },
}

pub enum NodeMsg {
    /// A key of `natsfn-bindings` was put (with this value) or removed.
    BindingChanged {
        name: String,
        value: Option<Bytes>,
        revision: u64,
    },
    /// Stop taking requests, finish those already received, then stop.
    Drain,
    /// This function has invocations waiting and the node is out of worker slots:
    /// evict the least recently used idle worker of another function.
    SlotWanted(ActorId),
    /// No NATS connection for longer than the grace period: stop taking work (the
    /// functions retire: they finish what they hold; nobody may be waiting for it).
    Isolated,
    /// Connected again after being isolated: read the bindings anew and serve them.
    Reconnected,
    /// This node no longer matches the placement of revision `revision` of `name`, and
    /// a matching node now serves it (or none will): retire it here.
    HandedOver {
        name: String,
        revision: u64,
        outcome: Handover,
    },
}

/// How the wait for a matching node to take over a function ended.
pub enum Handover {
    /// A live matching node serves it.
    Served,
    /// No live node matches the placement (named in words).
    NoMatch(String),
    /// Matching nodes live but none said it serves the function in time.
    TimedOut,
}

pub struct NodeState {
    ctx: NodeContext,
    functions: HashMap<String, Function>,
    /// Every FunctionActor still running, retired ones (finishing their work) included.
    live: HashSet<ActorId>,
    draining: bool,
    /// Cut off from NATS past the grace period: serving nothing until reconnected.
    isolated: bool,
    bindings: Store,
    /// `natsfn-nodes`, read to see who else may serve a function.
    nodes: Store,
    labels: Arc<BTreeMap<String, String>>,
    watcher: tokio::task::AbortHandle,
    connection: tokio::task::AbortHandle,
    /// Taken when the node stops, to remove its key.
    registry: Option<NodeRegistry>,
}

struct Function {
    actor: ActorRef<FunctionMsg>,
    spec: BindingSpec,
    revision: u64,
}

impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        if !registry::is_valid_node_id(&args.node_id) {
            return Err(NodeError::NodeId(args.node_id).into());
        }
        let runtime_dir = args.runtime_dir.unwrap_or_else(launch::default_runtime_dir);
        launch::install_runtimes(&runtime_dir).map_err(|source| NodeError::Runtimes {
            dir: runtime_dir.clone(),
            source,
        })?;
        let js = jetstream::new(args.client.clone());
        let data_dir = args
            .data_dir
            .unwrap_or_else(crate::package::default_data_dir);
        let packages =
            crate::package::PackageCache::new(&data_dir, js.clone()).map_err(|source| {
                NodeError::DataDir {
                    dir: data_dir.clone(),
                    source,
                }
            })?;
        let bindings = buckets::bindings(&js).await?;
        let status = buckets::status(&js).await?;
        let nodes = buckets::nodes(&js).await?;
        buckets::logs(&js, args.logs).await?;
        buckets::async_streams(&js).await?;
        let node_id: Arc<str> = args.node_id.into();
        let logs = LogShipper::spawn(args.client.clone());
        let ctx = NodeContext {
            max_payload: args.client.server_info().max_payload,
            client: args.client,
            runtime_dir: runtime_dir.into(),
            interpreters: Arc::new(args.interpreters),
            status: StatusReporter::spawn(node_id.clone(), status),
            logs,
            node_id,
            worker_slots: Arc::new(Semaphore::new(args.max_workers)),
            max_workers: args.max_workers,
            metrics: args.metrics,
            packages,
        };
        ctx.metrics.set_max_workers(args.max_workers);
        let registry = NodeRegistry::spawn(
            js,
            nodes.clone(),
            &ctx.node_id,
            args.max_workers,
            args.labels.clone(),
            ctx.metrics.clone(),
        );
        let watcher = tokio::spawn(watch_bindings(bindings.clone(), myself.clone())).abort_handle();
        let connection = tokio::spawn(crate::connection::watch(
            ctx.client.clone(),
            args.nats_grace,
            ctx.metrics.clone(),
            myself,
        ))
        .abort_handle();
        Ok(NodeState {
            ctx,
            functions: HashMap::new(),
            live: HashSet::new(),
            draining: false,
            isolated: false,
            bindings,
            nodes,
            labels: Arc::new(args.labels),
            watcher,
            connection,
            registry: Some(registry),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::BindingChanged { .. } if state.draining || state.isolated => {}
            NodeMsg::BindingChanged {
                name,
                value: Some(value),
                revision,
            } => state.binding_put(&myself, name, &value, revision).await,
            NodeMsg::BindingChanged {
                name,
                value: None,
                revision,
            } => state.binding_removed(&name, revision),
            NodeMsg::Drain => state.drain(&myself),
            NodeMsg::SlotWanted(by) => state.evict_for(by).await,
            NodeMsg::Isolated if !state.draining => state.isolate(),
            NodeMsg::Reconnected if state.isolated && !state.draining => {
                tracing::info!("connected to NATS again: reading the bindings and serving them");
                state.isolated = false;
                state.watcher =
                    tokio::spawn(watch_bindings(state.bindings.clone(), myself.clone()))
                        .abort_handle();
            }
            NodeMsg::Isolated | NodeMsg::Reconnected => {}
            NodeMsg::HandedOver {
                name,
                revision,
                outcome,
            } => state.handed_over(&name, revision, outcome),
        }
        state.report_load();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state
                    .functions
                    .retain(|_, f| f.actor.get_id() != cell.get_id());
                state.live.remove(&cell.get_id());
                state.stop_if_drained(&myself);
            }
            // A FunctionActor that panicked is a bug; its binding still stands, so it
            // gets a fresh actor.
            SupervisionEvent::ActorFailed(cell, err) => {
                state.live.remove(&cell.get_id());
                state.stop_if_drained(&myself);
                let failed = state
                    .functions
                    .iter()
                    .find(|(_, f)| f.actor.get_id() == cell.get_id())
                    .map(|(name, _)| name.clone());
                if let Some(name) = failed {
                    tracing::error!(function = %name, error = %err, "function actor failed; restarting it");
                    if let Some(f) = state.functions.remove(&name) {
                        state
                            .spawn_function(&myself, name, f.spec, f.revision)
                            .await;
                    }
                }
            }
            _ => {}
        }
        state.report_load();
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        state.watcher.abort();
        state.connection.abort();
        crate::children::stop_all(&myself.get_cell(), STOP_FUNCTIONS_WITHIN).await;
        // The last invocations' log records reach the connection before it is flushed.
        state.ctx.logs.flush().await;
        if let Some(registry) = state.registry.take() {
            registry.stop().await;
        }
        Ok(())
    }
}

impl NodeState {
    /// The functions the node serves, for its key in `natsfn-nodes`.
    fn report_load(&self) {
        if let Some(registry) = &self.registry {
            let mut serving: Vec<String> = self.functions.keys().cloned().collect();
            serving.sort();
            registry.report(serving);
        }
    }

    async fn binding_put(
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

    /// Every function retires as if its binding were deleted: its subscriptions are
    /// drained, what it received runs to the end, then it stops; the node after them.
    fn drain(&mut self, myself: &ActorRef<NodeMsg>) {
        self.draining = true;
        self.watcher.abort();
        for (_, f) in self.functions.drain() {
            let _ = f.actor.cast(FunctionMsg::Retire);
        }
        self.stop_if_drained(myself);
    }

    /// The wait started when this node stopped matching revision `revision` of
    /// `name` ended.
    fn handed_over(&mut self, name: &str, revision: u64, outcome: Handover) {
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

    /// Every function retires; the watch stops, to start from the current state once
    /// the node is connected again (what changed meanwhile is then read as it is).
    fn isolate(&mut self) {
        self.isolated = true;
        self.watcher.abort();
        for (name, f) in self.functions.drain() {
            tracing::warn!(function = %name, "isolated from NATS: stops taking work");
            let _ = f.actor.cast(FunctionMsg::Retire);
        }
    }

    /// Evicts the idle worker, of any function but `by`, that was used least recently.
    async fn evict_for(&self, by: ActorId) {
        if self.ctx.worker_slots.available_permits() > 0 {
            return;
        }
        let mut oldest: Option<(&ActorRef<FunctionMsg>, ActorId, Instant)> = None;
        for f in self.functions.values() {
            if f.actor.get_id() == by {
                continue;
            }
            let asked = f
                .actor
                .call(FunctionMsg::LeastRecentlyUsed, Some(ASK_IDLE_WITHIN))
                .await;
            if let Ok(CallResult::Success(Some((worker, since)))) = asked {
                if oldest.is_none_or(|(_, _, t)| since < t) {
                    oldest = Some((&f.actor, worker, since));
                }
            }
        }
        if let Some((function, worker, _)) = oldest {
            let _ = function.cast(FunctionMsg::Evict(worker));
        }
    }

    fn stop_if_drained(&self, myself: &ActorRef<NodeMsg>) {
        if self.draining && self.live.is_empty() {
            myself.stop(None);
        }
    }

    fn binding_removed(&mut self, name: &str, revision: u64) {
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

    async fn spawn_function(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        name: String,
        spec: BindingSpec,
        revision: u64,
    ) {
        let args = FunctionArgs {
            ctx: self.ctx.clone(),
            node: myself.clone(),
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
async fn watch_bindings(bindings: Store, node: ActorRef<NodeMsg>) {
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
