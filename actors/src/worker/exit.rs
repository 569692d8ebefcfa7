//! How a worker ends: its timeout, its memory limit, garbage on its channel, a
//! failed write, or its process exiting. The running invocation gets the error, those
//! waiting behind it go back to the FunctionActor's queue (they never started), and
//! the FunctionActor hears of the exit before anything else, so it hands the worker
//! nothing more.

use std::time::Duration;

use natsfn_protocol::names::LOG_STREAM_PLATFORM;
use natsfn_protocol::{ErrorCode, LambdaError};
use ractor::ActorRef;

use super::platform_log::Ran;
use super::report::{Outcome, WorkerReport};
use super::{Phase, WorkerMsg, WorkerState, EXIT_SETTLE};
use crate::invocation::Invocation;

/// One of `LambdaError`'s named constructors of a platform error type.
pub(super) type PlatformError = fn(String) -> LambdaError;

impl WorkerState {
    pub(super) async fn write_failed(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        why: impl std::fmt::Display,
    ) {
        let why = format!("cannot write to the worker: {why}");
        self.fail(myself, why, LambdaError::exit_error).await;
    }

    pub(super) async fn on_timeout(&mut self, myself: &ActorRef<WorkerMsg>, seq: u64) {
        if self.phase == Phase::Done || self.in_flight.front().is_none_or(|c| c.seq != seq) {
            return;
        }
        self.kill();
        let secs = self.args.timeout.as_secs_f64();
        let why = format!("Task timed out after {secs:.2} seconds");
        self.end(myself, ErrorCode::TimedOut, LambdaError::timed_out, why)
            .await;
    }

    pub(super) async fn out_of_memory(&mut self, myself: &ActorRef<WorkerMsg>, rss: u64) {
        let why = format!(
            "Runtime exited with error: memory limit exceeded ({} MB resident, memory_mb {})",
            rss / (1024 * 1024),
            self.args.memory_mb
        );
        self.out_of_memory_because(myself, why).await;
    }

    async fn out_of_memory_because(&mut self, myself: &ActorRef<WorkerMsg>, why: String) {
        if self.phase == Phase::Done {
            return;
        }
        self.kill();
        if self.phase == Phase::Starting {
            self.init_failed(myself, LambdaError::out_of_memory(why));
        } else {
            self.end(
                myself,
                ErrorCode::WorkerFailed,
                LambdaError::out_of_memory,
                why,
            )
            .await;
        }
    }

    pub(super) async fn out_of_storage(&mut self, myself: &ActorRef<WorkerMsg>, bytes: u64) {
        let why = format!(
            "Runtime exited with error: ephemeral storage exceeded ({} MB in /tmp, ephemeral_storage_mb {})",
            bytes / (1024 * 1024),
            self.args.plan.ephemeral_storage_mb
        );
        self.fail(myself, why, LambdaError::exit_error).await;
    }

    /// The process said something it should not have: it cannot be trusted further.
    pub(super) async fn fail(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        why: String,
        error: PlatformError,
    ) {
        if self.phase == Phase::Done {
            return;
        }
        self.kill();
        if self.phase == Phase::Starting {
            self.init_failed(myself, error(why));
        } else {
            self.end(myself, ErrorCode::WorkerFailed, error, why).await;
        }
    }

    /// The process or its channel is gone. Kill the rest of the group (so inherited
    /// pipes close too) and wait for the other half of the news before reporting, so
    /// an InitError written just before exiting is not mistaken for a crash.
    pub(super) async fn on_exit_news(&mut self, myself: &ActorRef<WorkerMsg>) {
        if self.phase == Phase::Done {
            return;
        }
        self.kill();
        if self.exit.channel_closed && self.exit.status.is_some() {
            self.finish_exit(myself).await;
        } else if !self.exit.settle_timer {
            self.exit.settle_timer = true;
            myself.send_after(EXIT_SETTLE, || WorkerMsg::Settle);
        }
    }

    pub(super) async fn finish_exit(&mut self, myself: &ActorRef<WorkerMsg>) {
        if self.phase == Phase::Done {
            return;
        }
        let cgroup = self.jail.as_ref().and_then(|j| j.groups.as_ref());
        if cgroup.is_some_and(|g| g.oom_kills() > 0) {
            // The kernel enforced memory_mb: its OOM killer ended the worker.
            let why = format!(
                "Runtime exited with error: memory limit exceeded (the kernel's OOM killer stopped it at memory_mb {})",
                self.args.memory_mb
            );
            return self.out_of_memory_because(myself, why).await;
        }
        let status = self
            .exit
            .status
            .clone()
            .unwrap_or_else(|| "its channel closed".into());
        let why = format!("Runtime exited with error: {status}");
        if self.phase == Phase::Starting {
            self.init_failed(myself, LambdaError::exit_error(why));
        } else {
            self.end(
                myself,
                ErrorCode::WorkerFailed,
                LambdaError::exit_error,
                why,
            )
            .await;
        }
    }

    /// The worker is finished: the running invocation gets `code`, the ones waiting
    /// behind it go back to the FunctionActor's queue (they never started).
    async fn end(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        code: ErrorCode,
        error: PlatformError,
        why: String,
    ) {
        self.phase = Phase::Done;
        // The pool hears of the exit before the running invocation's end, so it never
        // hands this worker another invocation.
        let _ = self.args.parent.send_message(WorkerReport::Exited {
            worker: self.id,
            reason: why.clone(),
        });
        let mut waiting = std::mem::take(&mut self.in_flight).into_iter();
        if let Some(running) = waiting.next() {
            let since_received = running.invocation.received.elapsed();
            let endpoint = running.invocation.endpoint;
            let caller = running.invocation.caller;
            let message = format!("RequestId: {} Error: {why}", caller.request_id);
            let error = error(message);
            let ran = Ran {
                duration: running.started.map_or(Duration::ZERO, |t| t.elapsed()),
                cold: running.cold,
            };
            let with_start = self.framing.take_start();
            let record = self.framing.finished(&caller.request_id, with_start, ran);
            let request_id = caller.request_id.clone();
            caller.fail(&self.args.ctx, code, &error).await;
            self.publish_log(&request_id, LOG_STREAM_PLATFORM, record.into());
            self.report_finished(
                endpoint,
                Outcome::failed(code, &error),
                None,
                since_received,
            );
        }
        let waiting: Vec<Invocation> = waiting.map(|c| c.invocation).collect();
        if !waiting.is_empty() {
            let _ = self
                .args
                .parent
                .send_message(WorkerReport::Requeue(waiting));
        }
        myself.stop(None);
    }

    pub(super) fn init_failed(&mut self, myself: &ActorRef<WorkerMsg>, error: LambdaError) {
        self.kill();
        self.phase = Phase::Done;
        let _ = self.args.parent.send_message(WorkerReport::InitFailed {
            worker: self.id,
            error,
        });
        myself.stop(None);
    }

    pub(super) fn kill(&mut self) {
        if let Some(group) = &self.group {
            group.kill();
        }
    }
}
