//! The function's workers as the pool policy asks: started (within the node's
//! `--max-workers` slots, after a failure's pause), told what finished, reaped when idle.

use std::time::{Duration, Instant};

use natsfn_protocol::{ErrorCode, FunctionState as State, LambdaError};
use ractor::{Actor, ActorId, ActorRef};

use super::health::Verdict;
use super::{Code, FunctionMsg, FunctionReport, FunctionState, SLOT_RETRY};
use crate::worker::{Finished, Outcome, WorkerActor, WorkerArgs, WorkerReport};

impl FunctionState {
    pub(super) async fn worker_reported(
        &mut self,
        myself: &ActorRef<FunctionMsg>,
        report: WorkerReport,
    ) {
        match report {
            WorkerReport::Ready(id) => self.worker_ready(myself, id).await,
            WorkerReport::Finished(finished) => self.invocation_finished(myself, finished).await,
            WorkerReport::Requeue(invocations) => {
                self.queue.requeue(invocations);
                self.pump(myself).await;
            }
            // Only the current code's failures say anything of its health: workers of
            // code overtaken by a newer revision just leave.
            WorkerReport::InitFailed { worker, error } => {
                if self.pool.remove(worker).map(|w| w.revision()) == Some(self.code_revision) {
                    self.start_failed(error).await;
                }
                self.pump(myself).await;
            }
            WorkerReport::Exited { worker, reason } => {
                if self.pool.remove(worker).map(|w| w.revision()) == Some(self.code_revision) {
                    self.crashed(format!("a worker exited: {reason}"));
                }
                self.pump(myself).await;
            }
        }
    }

    pub(super) async fn start_workers(&mut self, myself: &ActorRef<FunctionMsg>) {
        let target = self.target();
        let wanted = if self.standby_capped {
            self.pool.for_demand(&target, self.queue.len())
        } else {
            self.pool.to_start(&target, self.queue.len())
        };
        let Code::Ready(plan) = &self.plan else {
            return;
        };
        let plan = plan.clone();
        if wanted == 0 || self.wait_for_backoff(myself) {
            return;
        }
        for started in 0..wanted {
            let Ok(slot) = self.ctx.worker_slots.clone().try_acquire_owned() else {
                // No slot to warm the new code up in: switch now; the old workers'
                // slots come free as they finish.
                self.switch();
                let target = self.target();
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
                parent: myself.get_derived(),
                slot: Some(slot),
            };
            match WorkerActor::spawn_linked(None, WorkerActor, args, myself.get_cell()).await {
                Ok((actor, _)) => {
                    self.pool
                        .started(actor.get_id(), actor, self.code_revision, Instant::now())
                }
                Err(e) => {
                    let error = LambdaError::invalid_entrypoint(format!(
                        "cannot start a worker process: {e}"
                    ));
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
            let _ = self
                .node
                .send_message(FunctionReport::SlotWanted(myself.get_id()));
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
        if self.pool.revision_of(id) == Some(self.code_revision) {
            self.health.clear();
        }
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
        // An old revision serving through a rolling update says nothing of the new.
        if done.ran.is_some() && self.pool.revision_of(done.worker) == Some(self.code_revision) {
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
    pub(super) fn retire_idle(&mut self) {
        let target = self.target();
        for worker in self.pool.retire_idle(&target, Instant::now()) {
            worker.stop(None);
        }
    }

    /// Makes sure a `Reap` comes when the next idle worker above `min` may go. One
    /// timer at a time: it only ever fires early (a worker used since then is kept),
    /// and is then set again.
    pub(super) fn schedule_reap(&mut self, myself: &ActorRef<FunctionMsg>) {
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
    pub(super) async fn start_failed(&mut self, error: LambdaError) {
        let mut reason = error.to_string();
        if let Some(previous) = self.previous {
            reason.push_str(&format!(" (still serving revision {previous})"));
        }
        match self.health.start_failed(error.clone()) {
            Verdict::Crashloop => self.report(State::Crashloop, Some(reason)),
            _ => self.report(State::Error, Some(reason)),
        }
        if !self.pool.has_live(self.code_revision) && !self.old_revision_serves() {
            self.fail_queue(ErrorCode::Unavailable, &error).await;
        }
    }

    pub(super) fn crashed(&mut self, reason: String) {
        match self.health.crashed() {
            Verdict::Crashloop => self.report(State::Crashloop, Some(reason)),
            _ => tracing::warn!(function = %self.name, reason = %reason, "worker failure"),
        }
    }
}
