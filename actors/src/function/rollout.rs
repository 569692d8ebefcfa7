//! A change of code, rolled out without a failed request or a cold start: the new
//! revision's code is prepared off the actor (it may have to be fetched), its standby
//! warms up while the old workers serve, then new invocations switch to it and the old
//! workers finish what they hold and stop. Code that cannot be prepared leaves the old
//! revision serving, and the status says why.

use std::sync::Arc;

use natsfn_protocol::{ErrorCode, FunctionState as State, LambdaError};
use ractor::ActorRef;

use super::{make_plan, Code, FunctionMsg, FunctionState};
use crate::launch::LaunchPlan;

impl FunctionState {
    /// Works out, off the actor, how workers of `revision` start; `CodePrepared` says.
    pub(super) fn prepare(&mut self, myself: &ActorRef<FunctionMsg>, revision: u64) {
        self.preparing = Some(revision);
        self.rejected_code = None;
        if !self.serving() {
            // Nothing warm to keep: invocations wait for the new code.
            self.code_revision = revision;
            self.plan = Code::Preparing;
            self.previous = None;
        }
        let ctx = self.ctx.clone();
        let (name, version) = (self.name.clone(), self.version);
        let spec = self.spec.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let plan = make_plan(ctx, name, version, spec).await;
            let _ = myself.cast(FunctionMsg::CodePrepared { revision, plan });
        });
    }

    pub(super) async fn code_prepared(
        &mut self,
        myself: &ActorRef<FunctionMsg>,
        revision: u64,
        plan: Result<Arc<LaunchPlan>, LambdaError>,
    ) {
        if self.preparing != Some(revision) {
            return; // a newer revision is on its way
        }
        self.preparing = None;
        match plan {
            Ok(plan) => {
                if self.serving() {
                    // Mid-rollout, the revision still serving stays the one to leave.
                    self.previous = Some(self.previous.unwrap_or(self.code_revision));
                }
                self.code_revision = revision;
                self.plan = Code::Ready(plan);
                self.health.clear();
            }
            Err(error) if self.serving() => {
                let reason = format!(
                    "{}: {} (still serving revision {})",
                    error.error_type,
                    error.error_message,
                    self.previous.unwrap_or(self.code_revision)
                );
                tracing::warn!(function = %self.name, revision, reason = %reason,
                    "the new code cannot run");
                self.rejected_code = Some(reason);
            }
            Err(error) => {
                self.code_revision = revision;
                self.plan = Code::Unavailable(error.clone());
                self.previous = None;
                self.fail_queue(ErrorCode::Unavailable, &error).await;
            }
        }
        // Workers of a revision overtaken mid-rollout are no longer wanted.
        self.retire_idle();
        self.report_configured();
        self.pump(myself).await;
    }

    /// Ready workers of the revision taking new invocations exist, or are starting.
    fn serving(&self) -> bool {
        matches!(self.plan, Code::Ready(_))
            && self
                .pool
                .has_live(self.previous.unwrap_or(self.code_revision))
    }

    /// A rolling update keeps the old revision serving, whatever the new one does.
    pub(super) fn old_revision_serves(&self) -> bool {
        self.previous.is_some_and(|p| self.pool.has_live(p))
    }

    /// Ends a rolling update once the new revision's warm-up is ready, or when the old
    /// revision has no worker left to serve with.
    pub(super) fn switch_if_warm(&mut self) {
        let Some(previous) = self.previous else {
            return;
        };
        let warm = self.pool.ready_count(self.code_revision) >= self.target().warm_up();
        if warm || !self.pool.has_live(previous) {
            self.switch();
        }
    }

    /// New invocations go to `code_revision` from now on; the old workers finish what
    /// they hold and stop.
    pub(super) fn switch(&mut self) {
        if self.previous.take().is_none() {
            return;
        }
        tracing::info!(function = %self.name, revision = self.code_revision, "new code rolled out");
        self.retire_idle();
        if self.standby_ready() {
            self.report(State::Ready, None);
        }
    }
}
