//! FunctionActor: one per valid binding on a node. Admits invocations into its queue,
//! hands them to its pool of WorkerActors, keeps the pool the size the binding asks
//! for (standby `min`, up to `max` on demand, idle ones above `min` reaped), replaces
//! dead workers with backoff, and reports the function's state.

mod admission;
mod health;
mod pool;
mod queue;
mod reporting;
mod rollout;
mod service;
mod subscription;
mod workers;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Subject;
use natsfn_protocol::names::{invoke_subject, logs_subject, qualified_invoke_subject};
use natsfn_protocol::version::LATEST;
use natsfn_protocol::{BindingSpec, FunctionState as State, LambdaError, PoolSpec};
use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort, SupervisionEvent,
};

use crate::context::NodeContext;
use crate::events::EventSource;
use crate::invocation::Invocation;
use crate::launch::LaunchPlan;
use crate::metrics::FunctionMetrics;
use crate::reserved::ReservedShare;
use crate::route::SharedRoutes;
use crate::worker::{WorkerMsg, WorkerReport};
use health::StartHealth;
use pool::{Target, WorkerPool};
use queue::WaitQueue;
use service::ServiceStats;
use subscription::{Discovery, Subscriptions};

const STOP_WORKERS_WITHIN: Duration = Duration::from_secs(5);
/// While the node is out of worker slots, how often a function with waiting
/// invocations asks again (the node evicts another function's idle worker for it).
const SLOT_RETRY: Duration = Duration::from_millis(50);
/// While this node's share of `reserved_concurrency` is taken, how often invocations
/// waiting for it look again (the share is this function's actors' together).
const SHARE_RETRY: Duration = Duration::from_millis(10);

pub(crate) struct FunctionActor;

pub(crate) struct FunctionArgs {
    pub(crate) ctx: NodeContext,
    /// Where the function reports (its node, which converts the reports).
    pub(crate) node: DerivedActorRef<FunctionReport>,
    pub(crate) name: Arc<str>,
    pub(crate) spec: BindingSpec,
    pub(crate) revision: u64,
    /// The published version this actor runs; `None`: the binding as edited
    /// (`$LATEST`), which also listens on the function's subjects and pulls its
    /// async events.
    pub(crate) version: Option<u64>,
    /// The function's qualifiers on this node, for async events that name one.
    pub(crate) routes: SharedRoutes<ActorRef<FunctionMsg>>,
    /// This node's share of the function's `reserved_concurrency`, shared by its
    /// `$LATEST` and version actors.
    pub(crate) reserved: ReservedShare,
}

pub(crate) enum FunctionMsg {
    /// A request arrived on one of the function's subjects, or an async event.
    Invoke(Invocation),
    /// News from one of its workers.
    Worker(WorkerReport),
    /// The binding changed: new invocations go to workers of the new revision (the
    /// warm ones, when only subjects or pool size changed).
    Reconfigure {
        /// Boxed: a spec is larger than every other message.
        spec: Box<BindingSpec>,
        revision: u64,
    },
    /// The binding was deleted: stop listening, finish what was received, stop.
    Retire,
    /// How workers of code revision `revision` start (or why they cannot), worked out
    /// off the actor (the code may have to be fetched).
    CodePrepared {
        revision: u64,
        plan: Result<Arc<LaunchPlan>, LambdaError>,
    },
    /// A pause ended (a failed start's backoff, or a wait for a worker slot): workers
    /// may be started again.
    RetryStart,
    /// An idle worker may have been idle for `pool.idle_ms`.
    Reap,
    /// The node is out of worker slots: this function's least recently used idle
    /// worker, and since when it is idle.
    LeastRecentlyUsed(RpcReplyPort<Option<(ActorId, Instant)>>),
    /// Stop this idle worker: another function needs its slot.
    Evict(ActorId),
    SubscriptionEnded(String),
    /// The NATS server refused the node's subscription to this subject of the function
    /// (the node's permissions do not allow it).
    SubscriptionDenied(String),
    /// A `$SRV` discovery request (ADR-32) for this function's service instance.
    Service(async_nats::Message),
}

impl From<WorkerReport> for FunctionMsg {
    fn from(report: WorkerReport) -> FunctionMsg {
        FunctionMsg::Worker(report)
    }
}

/// Gives a report that could not be delivered back to its sender.
impl TryFrom<FunctionMsg> for WorkerReport {
    type Error = FunctionMsg;

    fn try_from(msg: FunctionMsg) -> Result<WorkerReport, FunctionMsg> {
        match msg {
            FunctionMsg::Worker(report) => Ok(report),
            other => Err(other),
        }
    }
}

/// What a FunctionActor tells its node, in a message type of its own.
pub(crate) enum FunctionReport {
    /// This function has invocations waiting and the node is out of worker slots:
    /// evict the least recently used idle worker of another function.
    SlotWanted(ActorId),
}

pub(crate) struct FunctionState {
    ctx: NodeContext,
    node: DerivedActorRef<FunctionReport>,
    name: Arc<str>,
    /// `None`: `$LATEST`.
    version: Option<u64>,
    routes: SharedRoutes<ActorRef<FunctionMsg>>,
    reserved: ReservedShare,
    spec: BindingSpec,
    /// The binding revision this actor serves (what the status reports).
    revision: u64,
    /// The revision whose code new workers run: the last one that changed more than
    /// subjects or pool size (`AWS_LAMBDA_FUNCTION_VERSION`) and whose code is ready.
    code_revision: u64,
    /// How workers of `code_revision` start.
    plan: Code,
    /// A newer code revision being prepared; until it is, `code_revision` serves.
    preparing: Option<u64>,
    /// During a rolling update, the code revision that still takes new invocations
    /// while `code_revision` warms up.
    previous: Option<u64>,
    /// Why the binding's newest code is not the one running (it could not be
    /// prepared, and an older revision serves on).
    rejected_code: Option<String>,
    /// Subjects of the binding the server refused the node: the function is in error
    /// until the binding leaves them (its other subjects serve meanwhile).
    denied: BTreeSet<String>,
    arn: Arc<str>,
    logs_subject: Subject,
    subscriptions: Subscriptions,
    /// This node's instance of the function's micro service: its id and stats.
    service: ServiceStats,
    /// Kept for its subscriptions' lifetime.
    _discovery: Discovery,
    /// Pulls the function's async events; none once it retires, none for a version.
    events: Option<EventSource>,
    /// A version's own `async` settings, which the events routed to it (by their
    /// `Natsfn-Qualifier`) are settled by; `None` for `$LATEST`.
    version_events: Option<Arc<crate::events::Settings>>,
    queue: WaitQueue,
    pool: WorkerPool<ActorRef<WorkerMsg>>,
    health: StartHealth,
    /// A `Reap` is scheduled for this moment.
    reap_at: Option<Instant>,
    /// A `RetryStart` is scheduled because the node is out of worker slots.
    slot_retry: bool,
    /// A dispatch found this node's share of `reserved_concurrency` taken.
    share_full: bool,
    /// A `RetryStart` is scheduled to look at the share again.
    share_retry: bool,
    /// The node's cap left the standby short of `pool.min` (or took a worker of it
    /// for another function): workers start only for waiting invocations until the
    /// standby is whole again, or an evicted standby would take back the slot at once.
    standby_capped: bool,
    last_status: Option<(State, Option<String>, u64)>,
    retiring: bool,
    metrics: FunctionMetrics,
}

impl Actor for FunctionActor {
    type Msg = FunctionMsg;
    type State = FunctionState;
    type Arguments = FunctionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<FunctionMsg>,
        args: FunctionArgs,
    ) -> Result<FunctionState, ActorProcessingErr> {
        let FunctionArgs {
            ctx,
            node,
            name,
            spec,
            revision,
            version,
            routes,
            reserved,
        } = args;
        let canonical = match version {
            None => invoke_subject(&name),
            Some(n) => qualified_invoke_subject(&name, &n.to_string()),
        };
        let service = ServiceStats::new(&name, canonical, &ctx.node_id, version);
        let discovery = Discovery::start(&ctx, &name, service.id(), myself.clone()).await?;
        // A version's series are its own (`<fn>:<N>`), not mixed into `$LATEST`'s.
        let metrics = match version {
            None => ctx.metrics.function(&name),
            Some(n) => ctx.metrics.function(&format!("{name}:{n}")),
        };
        let mut state = FunctionState {
            arn: format!("arn:aws:lambda:local:000000000000:function:{name}").into(),
            logs_subject: logs_subject(&name).into(),
            queue: WaitQueue::default(),
            ctx,
            node,
            name,
            version,
            routes,
            reserved,
            spec,
            revision,
            code_revision: revision,
            plan: Code::Preparing,
            preparing: None,
            previous: None,
            rejected_code: None,
            denied: BTreeSet::new(),
            subscriptions: Subscriptions::default(),
            service,
            _discovery: discovery,
            events: None,
            version_events: None,
            pool: WorkerPool::default(),
            health: StartHealth::default(),
            reap_at: None,
            slot_retry: false,
            share_full: false,
            share_retry: false,
            standby_capped: false,
            last_status: None,
            retiring: false,
            metrics,
        };
        state.subscribe(&myself).await?;
        match state.version {
            None => state.events = Some(state.start_events(&myself)),
            Some(_) => state.version_events = Some(Arc::new(state.event_settings())),
        }
        state.prepare(&myself, revision);
        state.report_configured();
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<FunctionMsg>,
        state: &mut FunctionState,
    ) -> Result<(), ActorProcessingErr> {
        state.pump(&myself).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<FunctionMsg>,
        msg: FunctionMsg,
        state: &mut FunctionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FunctionMsg::Invoke(invocation) => state.invoke(&myself, invocation).await,
            FunctionMsg::Worker(report) => state.worker_reported(&myself, report).await,
            FunctionMsg::Reconfigure { spec, revision } => {
                state.reconfigure(&myself, *spec, revision).await
            }
            FunctionMsg::Retire => state.retire(&myself),
            FunctionMsg::CodePrepared { revision, plan } => {
                state.code_prepared(&myself, revision, plan).await
            }
            FunctionMsg::RetryStart => {
                state.health.retry_scheduled = false;
                state.slot_retry = false;
                state.share_retry = false;
                state.pump(&myself).await;
            }
            FunctionMsg::Reap => {
                state.reap_at = None;
                state.retire_idle();
                state.schedule_reap(&myself);
                state.pump(&myself).await;
            }
            FunctionMsg::LeastRecentlyUsed(reply) => {
                let _ = reply.send(state.pool.least_recently_used());
            }
            FunctionMsg::Evict(id) => {
                if let Some(worker) = state.pool.evict(id) {
                    tracing::info!(function = %state.name, "idle worker evicted: the node needs its slot");
                    worker.stop(None);
                    state.standby_capped = true;
                }
            }
            FunctionMsg::SubscriptionDenied(subject) => state.subscription_denied(subject),
            FunctionMsg::SubscriptionEnded(subject) => {
                state.subscriptions.ended(&subject);
                state.stop_if_retired(&myself);
            }
            FunctionMsg::Service(request) => state.answer_discovery(request).await,
        }
        state.record_load();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<FunctionMsg>,
        event: SupervisionEvent,
        state: &mut FunctionState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            // A worker that stops by itself has answered its callers and reported why
            // in a message of its own; here it only leaves the pool.
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.pool.remove(cell.get_id());
                state.pump(&myself).await;
                state.stop_if_retired(&myself);
            }
            // A worker actor that panicked: its callers were answered when its state
            // was dropped (see `Caller`); the pool replaces it.
            SupervisionEvent::ActorFailed(cell, err) => {
                state.pool.remove(cell.get_id());
                state.crashed(format!("a worker failed: {err}"));
                state.pump(&myself).await;
                state.stop_if_retired(&myself);
            }
            _ => {}
        }
        state.record_load();
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<FunctionMsg>,
        state: &mut FunctionState,
    ) -> Result<(), ActorProcessingErr> {
        state.subscriptions.clear();
        let error =
            LambdaError::service_exception(format!("function {} stopped on this node", state.name));
        state.events = None;
        state.hand_back_queue(&error).await;
        // Each worker reaps its process as it stops.
        crate::children::stop_all(&myself.get_cell(), STOP_WORKERS_WITHIN).await;
        Ok(())
    }
}

/// Where a revision's code stands.
pub(crate) enum Code {
    /// Being fetched or checked: invocations wait.
    Preparing,
    Ready(Arc<LaunchPlan>),
    /// Why workers of this revision cannot start at all.
    Unavailable(LambdaError),
}

/// How this revision's workers start. Async: the code may have to be fetched first.
async fn make_plan(
    ctx: NodeContext,
    name: Arc<str>,
    version: Option<u64>,
    spec: BindingSpec,
) -> Result<Arc<LaunchPlan>, LambdaError> {
    if let (natsfn_protocol::Runtime::Java, Ok(jdk)) = (spec.runtime, &ctx.interpreters.java) {
        jdk.ensure_built(&ctx.runtime_dir).await;
    }
    let code = ctx.packages.resolve(&spec).await?;
    let version = version.map_or_else(|| LATEST.to_owned(), |n| n.to_string());
    LaunchPlan::for_spec(&name, &version, &spec, code, &ctx).map(Arc::new)
}

impl FunctionState {
    /// What the pool is to be now.
    fn target(&self) -> Target {
        // More workers than this node's share of `reserved_concurrency` would only
        // wait for its permits.
        let pool = match self.reserved.limit() {
            Some(limit) => PoolSpec {
                max: self.spec.pool.max.min(limit),
                min: self.spec.pool.min.min(limit),
                ..self.spec.pool
            },
            None => self.spec.pool,
        };
        Target::new(
            self.code_revision,
            self.previous,
            &pool,
            self.retiring && self.queue.is_empty(),
        )
    }

    async fn reconfigure(
        &mut self,
        myself: &ActorRef<FunctionMsg>,
        spec: BindingSpec,
        revision: u64,
    ) {
        if revision <= self.revision {
            return;
        }
        self.revision = revision;
        // Subjects, pool size, async policy, placement and the function URL are this
        // actor's (or the node's, or the gateway's) business: workers only change when
        // what they run changes, so `natsfn nats bind` costs no cold start.
        let same_code = BindingSpec {
            subjects: self.spec.subjects.clone(),
            pool: self.spec.pool,
            async_invocations: self.spec.async_invocations.clone(),
            placement: self.spec.placement.clone(),
            url: self.spec.url.clone(),
            reserved_concurrency: self.spec.reserved_concurrency,
            ..spec.clone()
        } == self.spec;
        self.spec = spec;
        let (room, settings) = (self.event_room(), self.event_settings());
        if let Some(events) = &mut self.events {
            events.update(room, settings);
        } else if self.version_events.is_some() {
            self.version_events = Some(Arc::new(settings));
        }
        if !same_code {
            self.prepare(myself, revision);
        }
        // Workers beyond a lowered max finish what they run, then stop; idle ones now.
        self.retire_idle();
        if let Err(e) = self.subscribe(myself).await {
            tracing::warn!(function = %self.name, error = %e, "cannot subscribe");
            self.report(State::Error, Some(format!("cannot subscribe: {e}")));
        }
        self.report_configured();
        self.pump(myself).await;
        self.reap_at = None;
        self.schedule_reap(myself);
    }

    fn retire(&mut self, myself: &ActorRef<FunctionMsg>) {
        self.retiring = true;
        // No more events pulled; those held here run to the end.
        self.events = None;
        self.subscriptions.drain_all();
        if self.queue.is_empty() {
            for worker in self.pool.retire_all_idle() {
                worker.stop(None);
            }
        }
        self.stop_if_retired(myself);
    }

    fn stop_if_retired(&self, myself: &ActorRef<FunctionMsg>) {
        if self.retiring
            && !self.pool.any_busy()
            && self.queue.is_empty()
            && self.subscriptions.is_empty()
        {
            myself.stop(None);
        }
    }

    /// Makes the subscriptions match the canonical subject plus the spec's subjects.
    /// A version's actor has none of its own: its invocations are routed to it
    /// (`route/`), and its service reports its qualified subject.
    async fn subscribe(
        &mut self,
        myself: &ActorRef<FunctionMsg>,
    ) -> Result<(), async_nats::SubscribeError> {
        if let Some(n) = self.version {
            let canonical = qualified_invoke_subject(&self.name, &n.to_string());
            self.service.serve(&BTreeSet::from([canonical]));
            return Ok(());
        }
        let wanted: BTreeSet<String> = std::iter::once(invoke_subject(&self.name))
            .chain(self.spec.subjects.iter().cloned())
            .collect();
        self.denied.retain(|s| wanted.contains(s));
        self.service.serve(&wanted);
        self.subscriptions
            .set(
                &self.ctx,
                &self.name,
                &wanted,
                &self.service,
                myself,
                self.metrics.refused(),
            )
            .await
    }
}
