//! FunctionActor: one per valid binding on a node. Admits invocations into its queue,
//! hands them to its pool of WorkerActors, keeps the pool the size the binding asks
//! for (standby `min`, up to `max` on demand, idle ones above `min` reaped), replaces
//! dead workers with backoff, and reports the function's state.

mod health;
mod pool;
mod queue;
mod service;
mod subscription;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Subject;
use natsfn_protocol::names::{invoke_subject, logs_subject};
use natsfn_protocol::service::Verb;
use natsfn_protocol::{BindingSpec, ErrorCode, FunctionState as State, LambdaError};
use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent,
};

use crate::context::NodeContext;
use crate::invocation::Invocation;
use crate::launch::LaunchPlan;
use crate::metrics::FunctionMetrics;
use crate::node_actor::NodeMsg;
use crate::worker::{WorkerActor, WorkerArgs, WorkerMsg};
use health::{StartHealth, Verdict};
use pool::{Target, WorkerPool};
use queue::WaitQueue;
pub(crate) use service::EndpointId;
use service::ServiceStats;
use subscription::{Discovery, Subscriptions};

const STOP_WORKERS_WITHIN: Duration = Duration::from_secs(5);
/// While the node is out of worker slots, how often a function with waiting
/// invocations asks again (the node evicts another function's idle worker for it).
const SLOT_RETRY: Duration = Duration::from_millis(50);

pub(crate) struct FunctionActor;

pub(crate) struct FunctionArgs {
    pub(crate) ctx: NodeContext,
    pub(crate) node: ActorRef<NodeMsg>,
    pub(crate) name: Arc<str>,
    pub(crate) spec: BindingSpec,
    pub(crate) revision: u64,
}

pub(crate) enum FunctionMsg {
    /// A request arrived on one of the function's subjects.
    Invoke(Invocation),
    /// Invocations a worker took but never started (it failed first), oldest first:
    /// they go back to the front of the queue.
    Requeue(Vec<Invocation>),
    /// The binding changed: new invocations go to workers of the new revision (the
    /// warm ones, when only subjects or pool size changed).
    Reconfigure {
        spec: BindingSpec,
        revision: u64,
    },
    /// The binding was deleted: stop listening, finish what was received, stop.
    Retire,
    WorkerReady(ActorId),
    InvocationFinished(Finished),
    WorkerInitFailed {
        worker: ActorId,
        error: LambdaError,
    },
    WorkerExited {
        worker: ActorId,
        reason: String,
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
    /// A `$SRV` discovery request (ADR-32) for this function's service instance.
    Service(async_nats::Message),
}

/// One invocation a worker is done with.
pub(crate) struct Finished {
    pub(crate) worker: ActorId,
    pub(crate) endpoint: EndpointId,
    pub(crate) outcome: Outcome,
    /// How long the handler ran, when it ran to an answer (a crash or timeout does
    /// not say how long the function takes).
    pub(crate) ran: Option<Duration>,
    /// From the request's arrival to its reply.
    pub(crate) since_received: Duration,
}

pub(crate) enum Outcome {
    Success,
    /// The reply's error code and `errorType: errorMessage`.
    Failed(ErrorCode, String),
}

pub(crate) struct FunctionState {
    ctx: NodeContext,
    node: ActorRef<NodeMsg>,
    name: Arc<str>,
    spec: BindingSpec,
    /// The binding revision this actor serves (what the status reports).
    revision: u64,
    /// The revision whose code the workers run: the last one that changed more than
    /// subjects or pool size (`AWS_LAMBDA_FUNCTION_VERSION`).
    code_revision: u64,
    /// Why the function cannot start at all, if it cannot.
    plan: Result<Arc<LaunchPlan>, LambdaError>,
    arn: Arc<str>,
    logs_subject: Subject,
    subscriptions: Subscriptions,
    /// This node's instance of the function's micro service: its id and stats.
    service: ServiceStats,
    /// Kept for its subscriptions' lifetime.
    _discovery: Discovery,
    queue: WaitQueue,
    pool: WorkerPool<ActorRef<WorkerMsg>>,
    health: StartHealth,
    /// A `Reap` is scheduled for this moment.
    reap_at: Option<Instant>,
    /// A `RetryStart` is scheduled because the node is out of worker slots.
    slot_retry: bool,
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
        } = args;
        let plan = make_plan(&ctx, &name, revision, &spec);
        let service = ServiceStats::new(&name, invoke_subject(&name), &ctx.node_id);
        let discovery = Discovery::start(&ctx, &name, service.id(), myself.clone()).await?;
        let metrics = ctx.metrics.function(&name);
        let mut state = FunctionState {
            arn: format!("arn:aws:lambda:local:000000000000:function:{name}").into(),
            logs_subject: logs_subject(&name).into(),
            queue: WaitQueue::new(spec.pool.queue as usize),
            ctx,
            node,
            name,
            spec,
            revision,
            code_revision: revision,
            plan,
            subscriptions: Subscriptions::default(),
            service,
            _discovery: discovery,
            pool: WorkerPool::default(),
            health: StartHealth::default(),
            reap_at: None,
            slot_retry: false,
            standby_capped: false,
            last_status: None,
            retiring: false,
            metrics,
        };
        state.subscribe(&myself).await?;
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
            FunctionMsg::Requeue(invocations) => {
                state.queue.requeue(invocations);
                state.pump(&myself).await;
            }
            FunctionMsg::Reconfigure { spec, revision } => {
                state.reconfigure(&myself, spec, revision).await
            }
            FunctionMsg::Retire => state.retire(&myself),
            FunctionMsg::WorkerReady(id) => state.worker_ready(&myself, id).await,
            FunctionMsg::InvocationFinished(finished) => {
                state.invocation_finished(&myself, finished).await
            }
            FunctionMsg::WorkerInitFailed { worker, error } => {
                state.pool.remove(worker);
                state.start_failed(error).await;
                state.pump(&myself).await;
            }
            FunctionMsg::WorkerExited { worker, reason } => {
                state.pool.remove(worker);
                state.crashed(format!("a worker exited: {reason}"));
                state.pump(&myself).await;
            }
            FunctionMsg::RetryStart => {
                state.health.retry_scheduled = false;
                state.slot_retry = false;
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
        let error = LambdaError::new(
            "ServiceException",
            format!("function {} stopped on this node", state.name),
        );
        state.fail_queue(ErrorCode::Unavailable, &error).await;
        // Each worker reaps its process as it stops.
        crate::children::stop_all(&myself.get_cell(), STOP_WORKERS_WITHIN).await;
        Ok(())
    }
}

/// Answers an invocation the FunctionActor turns away itself (429, 503), counting it
/// in the function's stats and metrics like one a worker answered.
async fn refuse(
    ctx: &NodeContext,
    service: &mut ServiceStats,
    metrics: &FunctionMetrics,
    invocation: Invocation,
    code: ErrorCode,
    error: &LambdaError,
) {
    metrics.finished(code, invocation.received.elapsed());
    let text = format!("{}: {}", error.error_type, error.error_message);
    service.record(
        invocation.endpoint,
        invocation.received.elapsed(),
        Some((code, &text)),
    );
    invocation.caller.fail(ctx, code, error).await;
}

fn make_plan(
    ctx: &NodeContext,
    name: &str,
    revision: u64,
    spec: &BindingSpec,
) -> Result<Arc<LaunchPlan>, LambdaError> {
    LaunchPlan::for_spec(name, revision, spec, &ctx.runtime_dir, &ctx.interpreters).map(Arc::new)
}

impl FunctionState {
    /// What the pool is to be now.
    fn target(&self) -> Target {
        Target::new(
            self.code_revision,
            &self.spec.pool,
            self.retiring && self.queue.is_empty(),
        )
    }

    async fn invoke(&mut self, myself: &ActorRef<FunctionMsg>, invocation: Invocation) {
        if let Err(error) = &self.plan {
            return refuse(
                &self.ctx,
                &mut self.service,
                &self.metrics,
                invocation,
                ErrorCode::Unavailable,
                error,
            )
            .await;
        }
        if let Some(error) = self.unstartable().cloned() {
            return refuse(
                &self.ctx,
                &mut self.service,
                &self.metrics,
                invocation,
                ErrorCode::Unavailable,
                &error,
            )
            .await;
        }
        // An idle worker takes it at once; otherwise it waits, if there is room.
        let invocation = if self.queue.is_empty() {
            match self.dispatch(invocation) {
                None => return self.start_workers(myself).await,
                Some(invocation) => invocation,
            }
        } else {
            invocation
        };
        if let Some(invocation) = self.queue.admit(invocation) {
            let error = LambdaError::new(
                "TooManyRequestsException",
                format!(
                    "function {} is at its concurrency limit ({} running) and {} invocations wait",
                    self.name,
                    self.spec.pool.max,
                    self.queue.limit()
                ),
            );
            return refuse(
                &self.ctx,
                &mut self.service,
                &self.metrics,
                invocation,
                ErrorCode::TooManyRequests,
                &error,
            )
            .await;
        }
        self.pump(myself).await;
    }

    /// Hands `invocation` to a worker that can take it now; gives it back when none can.
    fn dispatch(&mut self, invocation: Invocation) -> Option<Invocation> {
        let target = self.target();
        let Some(assigned) = self.pool.assign(&target) else {
            return Some(invocation);
        };
        // It waited for its worker to start: a cold start.
        let cold = assigned.first && invocation.received < assigned.ready_at;
        if cold {
            self.metrics.cold_start();
        }
        let id = assigned.id;
        match assigned.handle.cast(WorkerMsg::Invoke { invocation, cold }) {
            Err(MessagingErr::SendErr(WorkerMsg::Invoke { invocation, .. })) => {
                // The worker is gone (news of its exit is on the way): another takes it.
                self.pool.undo_assign(id);
                self.dispatch(invocation)
            }
            // Delivered (any other failure gives no message back to retry).
            _ => None,
        }
    }

    /// Hands queued invocations to workers and starts the workers the queue and
    /// `pool.min` call for.
    async fn pump(&mut self, myself: &ActorRef<FunctionMsg>) {
        while let Some(invocation) = self.queue.next() {
            if let Some(invocation) = self.dispatch(invocation) {
                self.queue.put_back(invocation);
                break;
            }
        }
        if let Some(error) = self.unstartable().cloned() {
            self.fail_queue(ErrorCode::Unavailable, &error).await;
        }
        self.start_workers(myself).await;
    }

    async fn start_workers(&mut self, myself: &ActorRef<FunctionMsg>) {
        let target = self.target();
        let wanted = if self.standby_capped {
            self.pool.for_demand(&target, self.queue.len())
        } else {
            self.pool.to_start(&target, self.queue.len())
        };
        if wanted == 0 || self.plan.is_err() || self.wait_for_backoff(myself) {
            return;
        }
        let Ok(plan) = self.plan.clone() else { return };
        for started in 0..wanted {
            let Ok(slot) = self.ctx.worker_slots.clone().try_acquire_owned() else {
                self.wait_for_slot(
                    myself,
                    started < self.pool.for_demand(&target, self.queue.len()),
                );
                return;
            };
            let args = WorkerArgs {
                ctx: self.ctx.clone(),
                function: self.name.clone(),
                plan: plan.clone(),
                timeout: Duration::from_millis(self.spec.timeout_ms),
                memory_mb: self.spec.memory_mb,
                arn: self.arn.clone(),
                logs_subject: self.logs_subject.clone(),
                parent: myself.clone(),
                slot: Some(slot),
            };
            match WorkerActor::spawn_linked(None, WorkerActor, args, myself.get_cell()).await {
                Ok((actor, _)) => {
                    self.pool
                        .started(actor.get_id(), actor, self.code_revision, Instant::now())
                }
                Err(e) => {
                    let error = LambdaError::new(
                        "Runtime.InvalidEntrypoint",
                        format!("cannot start a worker process: {e}"),
                    );
                    self.start_failed(error).await;
                    self.wait_for_backoff(myself);
                    return;
                }
            }
        }
    }

    /// The node is out of worker slots. Invocations waiting here get the node to
    /// evict another function's least recently used idle worker, and the start is
    /// tried again shortly. A standby short of `pool.min` waits for the function's
    /// next invocation instead: a thousand capped functions must not poll.
    fn wait_for_slot(&mut self, myself: &ActorRef<FunctionMsg>, for_demand: bool) {
        if for_demand {
            let _ = self.node.cast(NodeMsg::SlotWanted(myself.get_id()));
            if !self.slot_retry {
                self.slot_retry = true;
                myself.send_after(SLOT_RETRY, || FunctionMsg::RetryStart);
            }
        } else if !self.standby_capped {
            self.standby_capped = true;
            tracing::warn!(function = %self.name, min = self.spec.pool.min,
                "the node is at --max-workers: fewer standby workers than pool.min");
        }
        if self.standby_ready() {
            self.report(State::Ready, None);
        }
    }

    async fn worker_ready(&mut self, myself: &ActorRef<FunctionMsg>, id: ActorId) {
        let target = self.target();
        if let Err(worker) = self.pool.ready(id, &target, Instant::now()) {
            worker.stop(None);
            return;
        }
        self.health.clear();
        if self.pool.ready_count(self.code_revision) >= self.spec.pool.min as usize {
            self.standby_capped = false;
        }
        if self.standby_ready() {
            self.report(State::Ready, None);
        }
        self.pump(myself).await;
        self.schedule_reap(myself);
    }

    async fn invocation_finished(&mut self, myself: &ActorRef<FunctionMsg>, done: Finished) {
        self.metrics.finished(&done.outcome, done.since_received);
        if done.ran.is_some() {
            self.health.clear();
        }
        let error = match &done.outcome {
            Outcome::Success => None,
            Outcome::Failed(code, error) => {
                tracing::debug!(function = %self.name, code = code.code(), error = %error,
                    took_us = done.since_received.as_micros() as u64, "invocation failed");
                Some((*code, error.as_str()))
            }
        };
        self.service
            .record(done.endpoint, done.since_received, error);
        let target = self.target();
        if let Some(worker) = self
            .pool
            .finished(done.worker, done.ran, &target, Instant::now())
        {
            worker.stop(None);
        }
        self.pump(myself).await;
        self.schedule_reap(myself);
        self.stop_if_retired(myself);
    }

    /// Stops the idle workers the pool no longer wants.
    fn retire_idle(&mut self) {
        let target = self.target();
        for worker in self.pool.retire_idle(&target, Instant::now()) {
            worker.stop(None);
        }
    }

    /// Makes sure a `Reap` comes when the next idle worker above `min` may go. One
    /// timer at a time: it only ever fires early (a worker used since then is kept),
    /// and is then set again.
    fn schedule_reap(&mut self, myself: &ActorRef<FunctionMsg>) {
        if self.reap_at.is_some() {
            return;
        }
        if let Some(at) = self.pool.next_reap(&self.target()) {
            self.reap_at = Some(at);
            let wait = at.saturating_duration_since(Instant::now());
            myself.send_after(wait, || FunctionMsg::Reap);
        }
    }

    /// While a failed start's pause runs, whether the timer that ends it is set.
    fn wait_for_backoff(&mut self, myself: &ActorRef<FunctionMsg>) -> bool {
        let Some(at) = self.health.pause_until() else {
            return false;
        };
        if !self.health.retry_scheduled {
            self.health.retry_scheduled = true;
            myself.send_after(at - Instant::now(), || FunctionMsg::RetryStart);
        }
        true
    }

    /// A worker could not start (spawn failure or init error): count it, answer those
    /// waiting when no other worker can serve them, and keep the error for new callers.
    async fn start_failed(&mut self, error: LambdaError) {
        let reason = format!("{}: {}", error.error_type, error.error_message);
        match self.health.start_failed(error.clone()) {
            Verdict::Crashloop => self.report(State::Crashloop, Some(reason)),
            _ => self.report(State::Error, Some(reason)),
        }
        if !self.pool.has_live(self.code_revision) {
            self.fail_queue(ErrorCode::Unavailable, &error).await;
        }
    }

    fn crashed(&mut self, reason: String) {
        match self.health.crashed() {
            Verdict::Crashloop => self.report(State::Crashloop, Some(reason)),
            _ => tracing::warn!(function = %self.name, reason = %reason, "worker failure"),
        }
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
        // Subjects and pool size are this actor's business: workers only change when
        // what they run changes, so `natsfn nats bind` costs no cold start.
        let same_code = BindingSpec {
            subjects: self.spec.subjects.clone(),
            pool: self.spec.pool,
            ..spec.clone()
        } == self.spec;
        self.spec = spec;
        self.queue.set_limit(self.spec.pool.queue as usize);
        if !same_code {
            self.plan = make_plan(&self.ctx, &self.name, revision, &self.spec);
            self.code_revision = revision;
            self.health.clear();
        }
        // Workers of the old code (or beyond a lowered max) finish what they run, then
        // stop; idle ones now.
        self.retire_idle();
        if let Err(e) = self.subscribe(myself).await {
            tracing::warn!(function = %self.name, error = %e, "cannot subscribe");
            self.report(State::Error, Some(format!("cannot subscribe: {e}")));
        }
        self.report_configured();
        if let Err(error) = self.plan.clone() {
            self.fail_queue(ErrorCode::Unavailable, &error).await;
        }
        self.pump(myself).await;
        self.reap_at = None;
        self.schedule_reap(myself);
    }

    fn retire(&mut self, myself: &ActorRef<FunctionMsg>) {
        self.retiring = true;
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
    async fn subscribe(
        &mut self,
        myself: &ActorRef<FunctionMsg>,
    ) -> Result<(), async_nats::SubscribeError> {
        let wanted: BTreeSet<String> = std::iter::once(invoke_subject(&self.name))
            .chain(self.spec.subjects.iter().cloned())
            .collect();
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

    /// The init error to answer with while no worker of this revision can start.
    fn unstartable(&self) -> Option<&LambdaError> {
        self.health
            .unstartable(self.pool.has_live(self.code_revision))
    }

    async fn fail_queue(&mut self, code: ErrorCode, error: &LambdaError) {
        for invocation in self.queue.drain() {
            refuse(
                &self.ctx,
                &mut self.service,
                &self.metrics,
                invocation,
                code,
                error,
            )
            .await;
        }
    }

    /// Answers a `$SRV.PING|INFO|STATS` request; other verbs, and requests nobody
    /// waits for, get nothing.
    async fn answer_discovery(&self, request: async_nats::Message) {
        let (Some(verb), Some(reply)) = (Verb::of_subject(&request.subject), request.reply) else {
            return;
        };
        let body = match self
            .service
            .reply(verb, &self.name, self.revision, &self.spec)
        {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(function = %self.name, error = %e, "cannot encode a service reply");
                return;
            }
        };
        if let Err(e) = self.ctx.client.publish(reply, body.into()).await {
            tracing::warn!(function = %self.name, error = %e, "cannot publish a service reply");
        }
    }

    /// The queue and the pool as the metrics show them; after every message, since
    /// most change one or the other.
    fn record_load(&mut self) {
        self.metrics.queue_depth(self.queue.len());
        let (starting, idle, busy) = self.pool.counts();
        self.metrics.workers(starting, idle, busy);
    }

    /// The state right after a (re)configuration.
    fn report_configured(&mut self) {
        match &self.plan {
            Err(error) => {
                let reason = format!("{}: {}", error.error_type, error.error_message);
                self.report(State::Error, Some(reason))
            }
            // Nothing to wait for: the first invocation starts a worker, or warm ones
            // (kept through a change of subjects or pool size) serve.
            Ok(_) if self.standby_ready() => self.report(State::Ready, None),
            Ok(_) => self.report(State::Starting, None),
        }
    }

    /// `pool.min` workers are ready (or as many as the node has slots for): the
    /// function reports `ready` only then, so its first request is served warm.
    fn standby_ready(&self) -> bool {
        self.standby_capped
            || self.pool.ready_count(self.code_revision) >= self.spec.pool.min as usize
    }

    fn report(&mut self, state: State, reason: Option<String>) {
        let status = (state, reason, self.revision);
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        self.ctx
            .status
            .report(&self.name, status.0, status.2, status.1.clone());
        self.last_status = Some(status);
    }
}
