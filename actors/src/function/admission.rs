//! How an invocation gets in (a request on a subscription, or an async event pulled
//! from `NATSFN_ASYNC`): answered at once when the function cannot start, refused
//! (429) when `pool.max` run and `pool.queue` wait already, else handed to a worker
//! that can take it now or queued.

use natsfn_protocol::names::{async_consumer, async_subject, dlq_subject, ASYNC_STREAM};
use natsfn_protocol::{ErrorCode, LambdaError};
use ractor::{ActorRef, MessagingErr};

use super::service::ServiceStats;
use super::{Code, FunctionMsg, FunctionState, SHARE_RETRY};
use crate::context::NodeContext;
use crate::events::{EventSource, Settings, SourceSpec};
use crate::invocation::{EndpointId, Executed, Invocation};
use crate::metrics::FunctionMetrics;
use crate::route;
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
    let text = error.to_string();
    service.record(
        invocation.endpoint,
        invocation.received.elapsed(),
        Some((code, &text)),
    );
    invocation.caller.fail(ctx, code, error).await;
}

impl FunctionState {
    /// Pulls the function's async events, as many at once as its workers can run here.
    pub(super) fn start_events(&self, myself: &ActorRef<FunctionMsg>) -> EventSource {
        let spec = SourceSpec {
            stream: ASYNC_STREAM,
            consumer: async_consumer(&self.name),
            filter: async_subject(&self.name),
        };
        let (ctx, actor) = (self.ctx.clone(), myself.clone());
        let routes = self.routes.clone();
        let endpoint = self.service.endpoint(&async_subject(&self.name));
        EventSource::start(
            spec,
            self.event_room(),
            self.event_settings(),
            move |event| {
                // An event that names a version or alias (`Natsfn-Qualifier`) runs
                // there; it is pulled here, where the function's one consumer is.
                let target = event
                    .qualifier
                    .as_deref()
                    .map(|qualifier| route::read(&routes).resolve(qualifier, fastrand::f64()));
                match target {
                    None => {
                        let invocation = Invocation::from_event(&ctx, event, endpoint);
                        actor.cast(FunctionMsg::Invoke(invocation)).is_ok()
                    }
                    Some(Ok(version)) => {
                        // Counted under the version's own endpoint.
                        let invocation = Invocation::from_event(&ctx, event, EndpointId(0));
                        if let Err(MessagingErr::SendErr(FunctionMsg::Invoke(invocation))) =
                            version.cast(FunctionMsg::Invoke(invocation))
                        {
                            drop(invocation); // put back for another node
                        }
                        true
                    }
                    Some(Err(error)) => {
                        let invocation = Invocation::from_event(&ctx, event, endpoint);
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            invocation
                                .caller
                                .fail(&ctx, ErrorCode::Unavailable, &error)
                                .await
                        });
                        true
                    }
                }
            },
        )
    }

    /// Events running here at once: the pool's `max`, within the node's cap.
    pub(super) fn event_room(&self) -> usize {
        (self.spec.pool.max as usize).min(self.ctx.max_workers)
    }

    pub(super) fn event_settings(&self) -> Settings {
        Settings {
            js: async_nats::jetstream::new(self.ctx.client.clone()),
            policy: self.spec.async_invocations.clone(),
            dead_letters: dlq_subject(&self.name),
            arn: self.arn.clone(),
            metrics: self.ctx.metrics.events(&self.name),
        }
    }

    pub(super) async fn invoke(
        &mut self,
        myself: &ActorRef<FunctionMsg>,
        mut invocation: Invocation,
    ) {
        invocation.caller.executed = Some(Executed::of(self.version));
        if let Some(settings) = &self.version_events {
            invocation.caller.settle_event_by(settings);
        }
        if let Some((code, error)) = self.turned_away() {
            return refuse(
                &self.ctx,
                &mut self.service,
                &self.metrics,
                invocation,
                code,
                &error,
            )
            .await;
        }
        // A worker that can take it now does; otherwise it waits here.
        if self.queue.is_empty() {
            match self.dispatch(invocation, false) {
                None => return self.start_workers(myself).await,
                Some(invocation) => self.queue.push(invocation),
            }
        } else {
            self.queue.push(invocation);
        }
        self.pump(myself).await;
    }

    /// Why a new invocation is answered at once instead of admitted, if it is: the
    /// function cannot start (503), a `reserved_concurrency` share of 0 (429), or
    /// `pool.max` run and `pool.queue` wait already (429).
    fn turned_away(&self) -> Option<(ErrorCode, LambdaError)> {
        let cannot_start = match &self.plan {
            Code::Unavailable(error) => Some(error.clone()),
            Code::Preparing => None,
            Code::Ready(_) => self.unstartable().cloned(),
        };
        if let Some(error) = cannot_start {
            return Some((ErrorCode::Unavailable, error));
        }
        let full = if self.reserved.limit() == Some(0) {
            format!(
                "function {} is throttled: its reserved_concurrency leaves this node no invocation at once",
                self.name
            )
        } else if !self.pool.admits(self.queue.len(), &self.target()) {
            format!(
                "function {} is at its concurrency limit ({} running) and {} invocations wait",
                self.name, self.spec.pool.max, self.spec.pool.queue
            )
        } else {
            return None;
        };
        Some((
            ErrorCode::TooManyRequests,
            LambdaError::too_many_requests(full),
        ))
    }

    /// Hands `invocation` to a worker that can take it now; gives it back when none can.
    /// `queued`: it waited in the queue (else it has just arrived).
    fn dispatch(&mut self, mut invocation: Invocation, queued: bool) -> Option<Invocation> {
        // Within this node's share of `reserved_concurrency` (kept if it was handed
        // back unstarted); the function's other actors here may hold the rest.
        if invocation.caller.permit.is_none() {
            match self.reserved.try_acquire() {
                Some(permit) => invocation.caller.permit = Some(permit),
                None => {
                    self.share_full = true;
                    return Some(invocation);
                }
            }
        }
        let target = self.target();
        let Some(assigned) = self.pool.assign(&target) else {
            invocation.caller.permit = None;
            return Some(invocation);
        };
        // It waited for its worker to start: a cold start. One that has just arrived
        // found its worker ready, though its timestamp (taken by the subscription) may
        // be older than the worker's readiness (noted here, maybe first).
        let cold = queued && assigned.first && invocation.received < assigned.ready_at;
        if cold {
            self.metrics.cold_start();
        }
        let id = assigned.id;
        match assigned.handle.cast(WorkerMsg::Invoke { invocation, cold }) {
            Err(MessagingErr::SendErr(WorkerMsg::Invoke { invocation, .. })) => {
                // The worker is gone (news of its exit is on the way): another takes it.
                self.pool.undo_assign(id);
                self.dispatch(invocation, queued)
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
            if let Some(invocation) = self.dispatch(invocation, true) {
                self.queue.put_back(invocation);
                break;
            }
        }
        // The share's permits come back through other actors' answers too: look
        // again shortly rather than wait for news of this actor's own.
        if std::mem::take(&mut self.share_full) && !self.queue.is_empty() && !self.share_retry {
            self.share_retry = true;
            myself.send_after(SHARE_RETRY, || FunctionMsg::RetryStart);
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

    /// The function stops on this node: waiting requests get 503, waiting events go
    /// back to their stream for another node.
    pub(super) async fn hand_back_queue(&mut self, error: &LambdaError) {
        for invocation in self.queue.drain() {
            invocation.caller.elsewhere(&self.ctx, error).await;
        }
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
