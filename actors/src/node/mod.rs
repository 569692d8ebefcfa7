//! NodeActor: the root of a node. Watches `natsfn-bindings` from its current state on
//! and keeps exactly one FunctionActor per valid key (bindings.rs); writes why a key
//! was rejected to `natsfn-status`; keeps the node's key in `natsfn-nodes` current
//! (registry.rs); hands functions whose placement leaves it out to a matching node
//! (placement.rs); evicts idle workers across functions when out of worker slots
//! (eviction.rs); stops taking work while cut off from NATS (connection.rs).

mod bindings;
mod connection;
mod eviction;
mod placement;
mod registry;
mod shares;
mod start;
mod versions;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use bytes::Bytes;
use natsfn_protocol::names::invoke_subject;
use natsfn_protocol::BindingSpec;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::task::AbortOnDrop;

use crate::buckets;
use crate::context::{Interpreters, NodeContext};
use crate::function::{FunctionMsg, FunctionReport};
use crate::metrics::Metrics;
use connection::ConnectionReport;
pub use placement::Handover;
use registry::NodeRegistry;

const STOP_FUNCTIONS_WITHIN: Duration = Duration::from_secs(10);

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
    /// `--signing-key`: mint NATS credentials for the handlers of bindings with `nats`.
    pub signing_key: Option<crate::credentials::SigningKey>,
    /// The node's servers without credentials (`user:password@`, `token@`), which such
    /// handlers get as `NATS_URL`.
    pub nats_url: String,
    /// This node serves the HTTP gateway without `--http-auth`: its function URLs with
    /// `url.auth` `AWS_IAM` refuse every request, which their status says.
    pub url_auth_refused: bool,
    /// Subjects the NATS server refused the node a subscription to, as the
    /// connection's event callback hears of them (the server says so only then).
    pub subscription_denials: UnboundedReceiver<String>,
    /// Builds each worker's sandbox (`--isolation sandbox`); `None`: workers run as
    /// the node's user (`--isolation none`).
    pub sandbox: Option<Arc<crate::sandbox::Sandbox>>,
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
    /// The NATS server refused the node a subscription to this subject.
    SubscriptionDenied(String),
    /// A node (this one too) serves these functions now; `None`: it left.
    PeerServes {
        node: String,
        functions: Option<BTreeSet<String>>,
    },
    /// A key of `natsfn-versions` was put (with this value) or removed.
    VersionChanged { key: String, value: Option<Bytes> },
    /// A key of `natsfn-aliases` was put (with this value) or removed.
    AliasChanged {
        key: String,
        value: Option<Bytes>,
        revision: u64,
    },
    /// This node no longer matches the placement of revision `revision` of `name`, and
    /// a matching node now serves it (or none will): retire it here.
    HandedOver {
        name: String,
        revision: u64,
        outcome: Handover,
    },
}

impl From<FunctionReport> for NodeMsg {
    fn from(report: FunctionReport) -> NodeMsg {
        match report {
            FunctionReport::SlotWanted(function) => NodeMsg::SlotWanted(function),
        }
    }
}

/// Gives a report that could not be delivered back to its sender.
impl TryFrom<NodeMsg> for FunctionReport {
    type Error = NodeMsg;

    fn try_from(msg: NodeMsg) -> Result<FunctionReport, NodeMsg> {
        match msg {
            NodeMsg::SlotWanted(function) => Ok(FunctionReport::SlotWanted(function)),
            other => Err(other),
        }
    }
}

impl From<ConnectionReport> for NodeMsg {
    fn from(report: ConnectionReport) -> NodeMsg {
        match report {
            ConnectionReport::Isolated => NodeMsg::Isolated,
            ConnectionReport::Reconnected => NodeMsg::Reconnected,
            ConnectionReport::SubscriptionDenied(subject) => NodeMsg::SubscriptionDenied(subject),
        }
    }
}

/// Gives a report that could not be delivered back to its sender.
impl TryFrom<NodeMsg> for ConnectionReport {
    type Error = NodeMsg;

    fn try_from(msg: NodeMsg) -> Result<ConnectionReport, NodeMsg> {
        match msg {
            NodeMsg::Isolated => Ok(ConnectionReport::Isolated),
            NodeMsg::Reconnected => Ok(ConnectionReport::Reconnected),
            NodeMsg::SubscriptionDenied(subject) => {
                Ok(ConnectionReport::SubscriptionDenied(subject))
            }
            other => Err(other),
        }
    }
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
    versions: Store,
    aliases: Store,
    /// Which functions every live node serves (`natsfn-nodes`), for the shares of
    /// what is a function's across the cluster.
    peers: HashMap<String, BTreeSet<String>>,
    /// What `natsfn-versions` and `natsfn-aliases` hold, per function.
    published: HashMap<String, versions::Published>,
    /// `natsfn-nodes`, read to see who else may serve a function.
    nodes: Store,
    labels: Arc<BTreeMap<String, String>>,
    /// The watches of the bindings, versions and aliases; none while draining or
    /// isolated.
    watchers: Vec<AbortOnDrop>,
    _connection: AbortOnDrop,
    /// Taken when the node stops, to remove its key.
    registry: Option<NodeRegistry>,
}

struct Function {
    /// The `$LATEST` actor.
    actor: ActorRef<FunctionMsg>,
    spec: BindingSpec,
    revision: u64,
    /// Its versions and aliases here.
    served: versions::Served,
}

impl Function {
    /// Every actor of the function stops taking work, finishes what it holds, stops.
    fn retire(self) {
        let _ = self.actor.cast(FunctionMsg::Retire);
        self.served.retire();
    }
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
        Ok(NodeState::start(myself, args).await?)
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::BindingChanged { .. }
            | NodeMsg::VersionChanged { .. }
            | NodeMsg::AliasChanged { .. }
                if state.draining || state.isolated => {}
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
            NodeMsg::VersionChanged { key, value } => {
                state.version_changed(&myself, &key, value.as_deref()).await
            }
            NodeMsg::AliasChanged {
                key,
                value,
                revision,
            } => state.alias_changed(&key, value.as_deref(), revision).await,
            NodeMsg::PeerServes { node, functions } => state.peer_serves(node, functions),
            NodeMsg::Drain => state.drain(&myself),
            NodeMsg::SlotWanted(by) => state.evict_for(by).await,
            NodeMsg::Isolated if !state.draining => state.isolate(),
            NodeMsg::Reconnected if state.isolated && !state.draining => {
                tracing::info!("connected to NATS again: reading the bindings and serving them");
                state.isolated = false;
                state.watch(&myself);
            }
            NodeMsg::Isolated | NodeMsg::Reconnected => {}
            NodeMsg::SubscriptionDenied(subject) => state.subscription_denied(subject),
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
                let id = cell.get_id();
                // A `$LATEST` actor stops only once retired (its Function is gone then);
                // a version's may stop before (its version removed).
                for f in state.functions.values_mut() {
                    f.served.versions.retain(|_, actor| actor.get_id() != id);
                }
                state.live.remove(&id);
                state.stop_if_drained(&myself);
            }
            // A FunctionActor that panicked is a bug; its binding still stands, so it
            // gets a fresh actor.
            SupervisionEvent::ActorFailed(cell, err) => {
                state.live.remove(&cell.get_id());
                state.stop_if_drained(&myself);
                state.actor_failed(&myself, cell.get_id(), &err).await;
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
        state.watchers.clear();
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

    /// Every function retires as if its binding were deleted: its subscriptions are
    /// drained, what it received runs to the end, then it stops; the node after them.
    fn drain(&mut self, myself: &ActorRef<NodeMsg>) {
        self.draining = true;
        self.watchers.clear();
        for (_, f) in self.functions.drain() {
            f.retire();
        }
        self.stop_if_drained(myself);
    }

    /// Every function retires; the watch stops, to start from the current state once
    /// the node is connected again (what changed meanwhile is then read as it is).
    fn isolate(&mut self) {
        self.isolated = true;
        self.watchers.clear();
        // Read anew from the buckets once connected again.
        self.published.clear();
        for (name, f) in self.functions.drain() {
            tracing::warn!(function = %name, "isolated from NATS: stops taking work");
            f.retire();
        }
    }

    /// Tells the functions bound to `subject` that they may not have it; a subject of
    /// no function (the node's own inbox, `$SRV`) is the node's to report.
    fn subscription_denied(&self, subject: String) {
        let mut bound = self
            .functions
            .iter()
            .filter(|(name, f)| {
                f.spec.subjects.contains(&subject) || invoke_subject(name) == subject
            })
            .peekable();
        if bound.peek().is_none() {
            tracing::error!(
                subject,
                "the node may not subscribe to {subject:?} (NATS permissions: subscribe); \
                 if that is its inbox, start it with the --inbox-prefix its role allows"
            );
        }
        for (_, f) in bound {
            let _ = f
                .actor
                .cast(FunctionMsg::SubscriptionDenied(subject.clone()));
        }
    }

    fn stop_if_drained(&self, myself: &ActorRef<NodeMsg>) {
        if self.draining && self.live.is_empty() {
            myself.stop(None);
        }
    }
}
