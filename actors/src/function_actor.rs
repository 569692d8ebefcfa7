//! FunctionActor: one per valid binding on a node. Owns the function's subscriptions,
//! the queue of invocations waiting for a worker, and the pool policy: keep `pool.min`
//! workers warm, start up to `pool.max` on demand, replace dead ones with backoff.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Subject;
use natsfn_protocol::names::{invoke_subject, logs_subject};
use natsfn_protocol::{BindingSpec, ErrorCode, FunctionState as State, LambdaError};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, SupervisionEvent};

use crate::context::NodeContext;
use crate::invocation::{now_ms, Invocation};
use crate::launch::LaunchPlan;
use crate::pool::{Backoff, WorkerPool};
use crate::subscription::Subscription;
use crate::worker_actor::{WorkerActor, WorkerArgs, WorkerMsg};

/// Queued invocations per worker the pool may grow to, before new ones get a 429.
const QUEUE_PER_WORKER: usize = 64;
/// Consecutive failures after which the status says `crashloop`.
const CRASHLOOP_AFTER: u32 = 3;
const STOP_WORKERS_WITHIN: Duration = Duration::from_secs(2);

pub struct FunctionActor;

pub struct FunctionArgs {
    pub(crate) ctx: NodeContext,
    pub(crate) name: Arc<str>,
    pub(crate) spec: BindingSpec,
    pub(crate) revision: u64,
}

pub enum FunctionMsg {
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
    InvocationFinished {
        worker: ActorId,
        completed: bool,
        took: Duration,
    },
    WorkerInitFailed {
        worker: ActorId,
        error: LambdaError,
    },
    WorkerExited {
        worker: ActorId,
        reason: String,
    },
    /// A backoff period ended: workers may be started again.
    RetryStart,
    SubscriptionEnded(String),
}

pub struct FunctionState {
    ctx: NodeContext,
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
    subscriptions: HashMap<String, Subscription>,
    /// Left subjects whose last messages are still being forwarded.
    draining: HashMap<String, Subscription>,
    queue: VecDeque<Invocation>,
    pool: WorkerPool,
    /// Reset by a completed invocation or a new binding.
    backoff: Backoff,
    retry_scheduled: bool,
    /// The last init error, answered at once while no worker can start.
    init_error: Option<LambdaError>,
    last_status: Option<(State, Option<String>, u64)>,
    retiring: bool,
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
            name,
            spec,
            revision,
        } = args;
        let plan = make_plan(&ctx, &name, revision, &spec);
        let mut state = FunctionState {
            arn: format!("arn:aws:lambda:local:000000000000:function:{name}").into(),
            logs_subject: logs_subject(&name).into(),
            ctx,
            name,
            spec,
            revision,
            code_revision: revision,
            plan,
            subscriptions: HashMap::new(),
            draining: HashMap::new(),
            queue: VecDeque::new(),
            pool: WorkerPool::default(),
            backoff: Backoff::default(),
            retry_scheduled: false,
            init_error: None,
            last_status: None,
            retiring: false,
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
                for invocation in invocations.into_iter().rev() {
                    state.queue.push_front(invocation);
                }
                state.pump(&myself).await;
            }
            FunctionMsg::Reconfigure { spec, revision } => {
                state.reconfigure(&myself, spec, revision).await
            }
            FunctionMsg::Retire => state.retire(&myself).await,
            FunctionMsg::WorkerReady(id) => state.worker_ready(&myself, id).await,
            FunctionMsg::InvocationFinished {
                worker,
                completed,
                took,
            } => {
                state
                    .invocation_finished(&myself, worker, completed, took)
                    .await
            }
            FunctionMsg::WorkerInitFailed { worker, error } => {
                state.pool.remove(worker);
                state.init_failed(&myself, error).await;
            }
            FunctionMsg::WorkerExited { worker, reason } => {
                state.pool.remove(worker);
                state.record_failure(format!("a worker exited: {reason}"), false);
                state.pump(&myself).await;
            }
            FunctionMsg::RetryStart => {
                state.retry_scheduled = false;
                state.pump(&myself).await;
            }
            FunctionMsg::SubscriptionEnded(subject) => {
                if state.draining.remove(&subject).is_none() {
                    state.subscriptions.remove(&subject);
                }
                state.stop_if_retired(&myself);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<FunctionMsg>,
        event: SupervisionEvent,
        state: &mut FunctionState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            // A worker that stops by itself has answered its caller and reported why
            // in a message of its own; here it only leaves the pool.
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.pool.remove(cell.get_id());
                state.stop_if_retired(&myself);
            }
            // A worker actor that panicked reported nothing: answer for it.
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(worker) = state.pool.remove(cell.get_id()) {
                    let error =
                        LambdaError::new("Runtime.ExitError", format!("worker failed: {err}"));
                    for caller in worker.assigned {
                        caller
                            .fail(&state.ctx, ErrorCode::WorkerFailed, &error)
                            .await;
                    }
                }
                state.record_failure(format!("a worker failed: {err}"), false);
                state.pump(&myself).await;
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<FunctionMsg>,
        state: &mut FunctionState,
    ) -> Result<(), ActorProcessingErr> {
        state.subscriptions.clear();
        state.draining.clear();
        let error = LambdaError::new(
            "ServiceException",
            format!("function {} stopped on this node", state.name),
        );
        for invocation in state.queue.drain(..) {
            invocation
                .caller
                .fail(&state.ctx, ErrorCode::Unavailable, &error)
                .await;
        }
        myself
            .stop_children_and_wait(None, Some(STOP_WORKERS_WITHIN))
            .await;
        Ok(())
    }
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
    async fn invoke(&mut self, myself: &ActorRef<FunctionMsg>, invocation: Invocation) {
        if let Err(error) = &self.plan {
            return invocation
                .caller
                .fail(&self.ctx, ErrorCode::Unavailable, error)
                .await;
        }
        if self.queue.len() >= QUEUE_PER_WORKER * self.spec.pool.max as usize {
            let error = LambdaError::new(
                "TooManyRequestsException",
                format!(
                    "function {} is at its concurrency limit ({} workers) and its queue is full",
                    self.name, self.spec.pool.max
                ),
            );
            return invocation
                .caller
                .fail(&self.ctx, ErrorCode::TooManyRequests, &error)
                .await;
        }
        if let Some(error) = self.unstartable() {
            let error = error.clone();
            return invocation
                .caller
                .fail(&self.ctx, ErrorCode::Unavailable, &error)
                .await;
        }
        self.queue.push_back(invocation);
        self.pump(myself).await;
    }

    /// Hands queued invocations to workers (idle ones first; for quick functions, busy
    /// ones with room) and starts the workers the queue and `pool.min` call for.
    async fn pump(&mut self, myself: &ActorRef<FunctionMsg>) {
        let now = now_ms();
        while let Some(front) = self.queue.front() {
            if front.expired(now) {
                if let Some(dropped) = self.queue.pop_front() {
                    tracing::info!(function = %self.name, request_id = %dropped.caller.request_id,
                        "dropped: its caller's deadline passed while it was queued");
                }
                continue;
            }
            let Some(worker) = self.pool.next_for(self.code_revision) else {
                break;
            };
            let Some(invocation) = self.queue.pop_front() else {
                break;
            };
            let cold =
                worker.served == 0 && worker.ready_at.is_some_and(|t| invocation.received < t);
            worker.served += 1;
            worker.assigned.push_back(invocation.caller.clone());
            let sent = worker.actor.cast(WorkerMsg::Invoke { invocation, cold });
            if let Err(MessagingErr::SendErr(WorkerMsg::Invoke { invocation, .. })) = sent {
                // The worker is gone (news of its exit is on the way): another takes it.
                worker.assigned.pop_back();
                worker.retire();
                self.queue.push_front(invocation);
            }
        }
        if let Some(error) = self.unstartable().cloned() {
            self.fail_queue(ErrorCode::Unavailable, &error).await;
        }
        self.start_workers(myself).await;
    }

    async fn start_workers(&mut self, myself: &ActorRef<FunctionMsg>) {
        if self.plan.is_err() {
            return;
        }
        let (live, held) = self.pool.load(self.code_revision);
        let demand = held + self.queue.len();
        let floor = if self.retiring {
            0
        } else {
            self.spec.pool.min as usize
        };
        let wanted = demand.max(floor).min(self.spec.pool.max as usize);
        if live >= wanted {
            return;
        }
        if self.wait_for_backoff(myself) {
            return;
        }
        let Ok(plan) = self.plan.clone() else { return };
        for _ in live..wanted {
            let args = WorkerArgs {
                ctx: self.ctx.clone(),
                function: self.name.clone(),
                plan: plan.clone(),
                timeout: Duration::from_millis(self.spec.timeout_ms),
                arn: self.arn.clone(),
                logs_subject: self.logs_subject.clone(),
                parent: myself.clone(),
            };
            match WorkerActor::spawn_linked(None, WorkerActor, args, myself.get_cell()).await {
                Ok((actor, _)) => self.pool.started(actor, self.code_revision),
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

    async fn worker_ready(&mut self, myself: &ActorRef<FunctionMsg>, id: ActorId) {
        let current = self.code_revision;
        let retire = self.retiring && self.queue.is_empty();
        let Some(worker) = self.pool.get_mut(id) else {
            return;
        };
        if worker.revision != current || retire {
            worker.retire();
            return;
        }
        worker.ready_at = Some(Instant::now());
        self.init_error = None;
        self.report(State::Ready, None);
        self.pump(myself).await;
    }

    async fn invocation_finished(
        &mut self,
        myself: &ActorRef<FunctionMsg>,
        id: ActorId,
        completed: bool,
        took: Duration,
    ) {
        if completed {
            self.backoff.reset();
        }
        let current = self.code_revision;
        let retire = self.retiring && self.queue.is_empty();
        if let Some(worker) = self.pool.finished(id, completed.then_some(took)) {
            if worker.assigned.is_empty() && (worker.revision != current || retire) {
                worker.retire();
            }
        }
        self.pool
            .trim(self.code_revision, self.spec.pool.max as usize);
        self.pump(myself).await;
        self.stop_if_retired(myself);
    }

    /// While a failed start's pause runs, whether the timer that ends it is set.
    fn wait_for_backoff(&mut self, myself: &ActorRef<FunctionMsg>) -> bool {
        let Some(at) = self.backoff.pending() else {
            return false;
        };
        if !self.retry_scheduled {
            self.retry_scheduled = true;
            myself.send_after(at - Instant::now(), || FunctionMsg::RetryStart);
        }
        true
    }

    async fn init_failed(&mut self, myself: &ActorRef<FunctionMsg>, error: LambdaError) {
        self.start_failed(error).await;
        self.pump(myself).await;
    }

    /// A worker could not start (spawn failure or init error): count it, answer those
    /// waiting when no other worker can serve them, and keep the error for new callers.
    async fn start_failed(&mut self, error: LambdaError) {
        self.record_failure(
            format!("{}: {}", error.error_type, error.error_message),
            true,
        );
        if !self.pool.has_live(self.code_revision) {
            self.fail_queue(ErrorCode::Unavailable, &error).await;
        }
        self.init_error = Some(error);
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
        if !same_code {
            self.plan = make_plan(&self.ctx, &self.name, revision, &self.spec);
            self.code_revision = revision;
            self.backoff.reset();
            self.init_error = None;
            // Workers of the old code finish what they run, then stop; idle ones now.
            for worker in self.pool.iter_mut() {
                if worker.assigned.is_empty() {
                    worker.retire();
                }
            }
        }
        self.pool
            .trim(self.code_revision, self.spec.pool.max as usize);
        if let Err(e) = self.subscribe(myself).await {
            tracing::warn!(function = %self.name, error = %e, "cannot subscribe");
            self.report(State::Error, Some(format!("cannot subscribe: {e}")));
        }
        self.report_configured();
        if let Err(error) = self.plan.clone() {
            self.fail_queue(ErrorCode::Unavailable, &error).await;
        }
        self.pump(myself).await;
    }

    async fn retire(&mut self, myself: &ActorRef<FunctionMsg>) {
        self.retiring = true;
        for (subject, mut sub) in self.subscriptions.drain() {
            sub.drain();
            self.draining.insert(subject, sub);
        }
        if self.queue.is_empty() {
            for worker in self.pool.iter_mut() {
                if worker.assigned.is_empty() {
                    worker.retire();
                }
            }
        }
        self.stop_if_retired(myself);
    }

    fn stop_if_retired(&self, myself: &ActorRef<FunctionMsg>) {
        let busy = self.pool.any_busy();
        if self.retiring
            && !busy
            && self.queue.is_empty()
            && self.subscriptions.is_empty()
            && self.draining.is_empty()
        {
            myself.stop(None);
        }
    }

    /// Makes the subscriptions match the canonical subject plus the spec's subjects:
    /// new ones first, then the left ones are drained, so no request falls between.
    async fn subscribe(
        &mut self,
        myself: &ActorRef<FunctionMsg>,
    ) -> Result<(), async_nats::SubscribeError> {
        let wanted: BTreeSet<String> = std::iter::once(invoke_subject(&self.name))
            .chain(self.spec.subjects.iter().cloned())
            .collect();
        for subject in &wanted {
            if !self.subscriptions.contains_key(subject) {
                let sub =
                    Subscription::start(&self.ctx, &self.name, subject.clone(), myself.clone())
                        .await?;
                self.subscriptions.insert(subject.clone(), sub);
            }
        }
        let left: Vec<String> = self
            .subscriptions
            .keys()
            .filter(|s| !wanted.contains(*s))
            .cloned()
            .collect();
        for subject in left {
            if let Some(mut sub) = self.subscriptions.remove(&subject) {
                sub.drain();
                self.draining.insert(subject, sub);
            }
        }
        Ok(())
    }

    /// The init error to answer with while no worker of this revision can start.
    fn unstartable(&self) -> Option<&LambdaError> {
        let backing_off = self.backoff.pending().is_some();
        self.init_error
            .as_ref()
            .filter(|_| backing_off && !self.pool.has_live(self.code_revision))
    }

    async fn fail_queue(&mut self, code: ErrorCode, error: &LambdaError) {
        for invocation in self.queue.drain(..) {
            invocation.caller.fail(&self.ctx, code, error).await;
        }
    }

    fn record_failure(&mut self, reason: String, while_starting: bool) {
        if self.backoff.failed() >= CRASHLOOP_AFTER {
            self.report(State::Crashloop, Some(reason));
        } else if while_starting {
            self.report(State::Error, Some(reason));
        } else {
            tracing::warn!(function = %self.name, reason = %reason, "worker failure");
        }
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
            Ok(_) if self.spec.pool.min == 0 || self.pool.has_ready(self.code_revision) => {
                self.report(State::Ready, None)
            }
            Ok(_) => self.report(State::Starting, None),
        }
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
