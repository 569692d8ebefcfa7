//! What the function tells the world: its state in `natsfn-status`, its load in the
//! metrics, its micro service replies.

use natsfn_protocol::service::Verb;
use natsfn_protocol::FunctionState as State;
use natsfn_protocol::UrlAuth;

use super::{Code, FunctionState};

impl FunctionState {
    /// Answers a `$SRV.PING|INFO|STATS` request; other verbs, and requests nobody
    /// waits for, get nothing.
    pub(super) async fn answer_discovery(&self, request: async_nats::Message) {
        let (Some(verb), Some(reply)) = (Verb::of_subject(&request.subject), request.reply) else {
            return;
        };
        let body = match self.service.reply(
            verb,
            &self.name,
            self.revision,
            &self.spec,
            self.ready_workers(),
        ) {
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

    /// Workers ready for an invocation now (idle or running one).
    fn ready_workers(&self) -> u64 {
        let (_, idle, busy) = self.pool.counts();
        (idle + busy) as u64
    }

    /// The queue and the pool as the metrics show them; after every message, since
    /// most change one or the other.
    pub(super) fn record_load(&mut self) {
        self.metrics.queue_depth(self.queue.len());
        let (starting, idle, busy) = self.pool.counts();
        self.metrics.workers(starting, idle, busy);
    }

    /// The state right after a (re)configuration.
    pub(super) fn report_configured(&mut self) {
        match &self.plan {
            Code::Unavailable(error) => {
                let reason = error.to_string();
                self.report(State::Error, Some(reason))
            }
            // Nothing to wait for: the first invocation starts a worker, or warm ones
            // (kept through a change of subjects or pool size) serve.
            Code::Ready(_) if self.standby_ready() => self.report(State::Ready, None),
            Code::Ready(_) | Code::Preparing => self.report(State::Starting, None),
        }
    }

    /// `pool.min` workers are ready (or as many as the node has slots for): the
    /// function reports `ready` only then, so its first request is served warm.
    pub(super) fn standby_ready(&self) -> bool {
        if self.preparing.is_some() || self.previous.is_some() {
            return false; // the newest code is not serving yet
        }
        self.standby_capped
            || self.pool.ready_count(self.code_revision) >= self.spec.pool.min as usize
    }

    /// Why this node's function URL refuses every request, if it does: the function
    /// runs (over NATS, the Invoke API), so this is a reason beside its state.
    fn url_refused(&self) -> Option<String> {
        let aws_iam = self
            .spec
            .url
            .as_ref()
            .is_some_and(|u| u.auth == UrlAuth::AwsIam);
        (aws_iam && self.ctx.url_auth_refused).then(|| {
            format!(
                "url.auth is AWS_IAM and node {} serves its HTTP gateway without --http-auth: its function URL answers 403 to every request",
                self.ctx.node_id
            )
        })
    }

    /// The server refused the node one of the function's subjects: the function is in
    /// error, saying which subject and why, while its other subjects serve on.
    pub(super) fn subscription_denied(&mut self, subject: String) {
        tracing::error!(function = %self.name, subject, "{}", denied_reason(&subject));
        self.denied.insert(subject);
        self.report(State::Error, None);
    }

    pub(super) fn report(&mut self, state: State, reason: Option<String>) {
        // `natsfn-status` is the function's, which `$LATEST` reports; a version's
        // failures reach its callers (503 with the reason) and the node's log.
        if let Some(version) = self.version {
            if state == State::Error || state == State::Crashloop {
                tracing::warn!(function = %self.name, version, ?reason, "version cannot serve");
            }
            return;
        }
        // While the newest code is prepared, the status is about it: what the workers
        // of older code do meanwhile is not.
        if self.preparing.is_some() && state != State::Starting {
            return;
        }
        // A revision whose code could not be prepared is an error, however well the
        // one before it serves.
        // So is a subject the node may not subscribe to.
        let (state, reason) = match (&self.rejected_code, self.denied.first()) {
            (Some(why), _) => (State::Error, Some(why.clone())),
            (None, Some(subject)) => (State::Error, Some(denied_reason(subject))),
            (None, None) => (state, reason.or_else(|| self.url_refused())),
        };
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

fn denied_reason(subject: &str) -> String {
    format!("the node may not subscribe to {subject:?} (NATS permissions: subscribe)")
}
