//! How an invocation gets in: answered at once when the function cannot start, handed
//! to a worker that can take it now, queued while there is room, refused (429) when
//! there is none.

use natsfn_protocol::{ErrorCode, LambdaError};
use ractor::{ActorRef, MessagingErr};

use super::service::ServiceStats;
use super::{Code, FunctionMsg, FunctionState};
use crate::context::NodeContext;
use crate::invocation::Invocation;
use crate::metrics::FunctionMetrics;
use crate::worker::WorkerMsg;

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

impl FunctionState {
    pub(super) async fn invoke(&mut self, myself: &ActorRef<FunctionMsg>, invocation: Invocation) {
        let cannot_start = match &self.plan {
            Code::Unavailable(error) => Some(error.clone()),
            Code::Preparing => None,
            Code::Ready(_) => self.unstartable().cloned(),
        };
        if let Some(error) = cannot_start {
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
    pub(super) async fn pump(&mut self, myself: &ActorRef<FunctionMsg>) {
        self.switch_if_warm();
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

    /// The init error to answer with while no worker of this revision can start (and
    /// no older one serves on).
    fn unstartable(&self) -> Option<&LambdaError> {
        if self.old_revision_serves() {
            return None;
        }
        self.health
            .unstartable(self.pool.has_live(self.code_revision))
    }

    pub(super) async fn fail_queue(&mut self, code: ErrorCode, error: &LambdaError) {
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
}
