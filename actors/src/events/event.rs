//! One leased event and how its outcome is settled.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use natsfn_protocol::destination::DestinationRecord;
use natsfn_protocol::names::{
    HEADER_ATTEMPT, HEADER_CONDITION, HEADER_ENQUEUED_AT, HEADER_ERROR, HEADER_MSG_ID,
    HEADER_NOT_BEFORE, HEADER_QUALIFIER, HEADER_REQUEST_ID,
};
use natsfn_protocol::version::LATEST;
use natsfn_protocol::{AfterFailure, AsyncSpec, Condition, ErrorCode, LambdaError};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::AbortOnDrop;

use crate::clock::now_ms;
use crate::metrics::{EventMetrics, Settled};

/// A throttled event (the function's queue was full) is offered again after this.
const THROTTLE_DELAY: Duration = Duration::from_secs(1);
/// Headers natsfn writes on re-enqueued events and dead letters; replaced, not copied.
const OURS: [&str; 6] = [
    HEADER_ATTEMPT,
    HEADER_NOT_BEFORE,
    HEADER_ENQUEUED_AT,
    HEADER_CONDITION,
    HEADER_ERROR,
    HEADER_MSG_ID,
];

/// What an event's outcome needs besides the event: shared by a source's events and
/// replaced when the binding changes.
pub(crate) struct Settings {
    pub(crate) js: jetstream::Context,
    pub(crate) policy: AsyncSpec,
    /// Where dead letters go.
    pub(crate) dead_letters: String,
    /// The function's ARN, for destination records.
    pub(crate) arn: Arc<str>,
    pub(crate) metrics: EventMetrics,
}

/// An event pulled from the stream and not settled yet. Dropped unsettled (its node
/// stops, or what ran it failed), it is put back at once for any node to take.
pub(crate) struct Event {
    message: Option<jetstream::Message>,
    /// The invocation's request id: the same for every attempt.
    pub(crate) id: String,
    /// 1 for the first run.
    attempt: u32,
    enqueued_ms: u64,
    settings: Arc<Settings>,
    /// Its room on this node, given back as soon as it has run (settling it is only
    /// messages to the server).
    room: Option<OwnedSemaphorePermit>,
    /// Keeps the lease alive while it runs; stopped when the event settles or drops.
    lease: AbortOnDrop,
    /// `Natsfn-Qualifier`: the version or alias it runs (none: `$LATEST`).
    pub(crate) qualifier: Option<String>,
    /// The version that ran it, for its destination record (`None`: `$LATEST`).
    pub(crate) executed: Option<u64>,
}

impl Event {
    /// A retry whose backoff has not passed yet: how long until it has.
    pub(crate) fn not_yet(message: &jetstream::Message) -> Option<Duration> {
        backoff_left(message.headers.as_ref(), now_ms())
    }

    /// Reads what natsfn keeps in the message's headers. `lease_every` is how often
    /// the server is told the event is still in progress.
    pub(crate) fn arrive(
        message: jetstream::Message,
        settings: Arc<Settings>,
        permit: OwnedSemaphorePermit,
        lease_every: Duration,
    ) -> Event {
        let now = now_ms();
        let info = message.info().ok();
        let published_ms = info
            .as_ref()
            .map(|i| (i.published.unix_timestamp_nanos() / 1_000_000) as u64)
            .unwrap_or(now);
        let sequence = info.as_ref().map(|i| i.stream_sequence).unwrap_or_default();
        let Stamp {
            id,
            attempt,
            enqueued_ms,
        } = Stamp::read(message.headers.as_ref(), sequence, published_ms);
        let lease = tokio::spawn(keep_leased(message.clone(), lease_every)).abort_handle();
        let lease = AbortOnDrop::new(lease);
        let qualifier = message
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_QUALIFIER))
            .map(|q| q.as_str().to_owned());
        Event {
            qualifier,
            executed: None,
            message: Some(message),
            id,
            attempt,
            enqueued_ms,
            settings,
            room: Some(permit),
            lease,
        }
    }

    /// Settles it by these settings instead: those of the version its qualifier chose
    /// (its own retries, destinations), not of `$LATEST`, whose source pulled it.
    pub(crate) fn settle_by(&mut self, settings: Arc<Settings>) {
        self.settings = settings;
    }

    pub(crate) fn payload(&self) -> Bytes {
        self.message
            .as_ref()
            .map(|m| m.payload.clone())
            .unwrap_or_default()
    }

    fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.enqueued_ms))
    }

    /// Too old to run at all.
    pub(crate) fn expired(&self) -> bool {
        self.age() >= self.settings.policy.max_event_age()
    }

    /// The handler succeeded: the success destination gets its record, then the event
    /// is acknowledged (and gone from the stream).
    pub(crate) async fn succeeded(mut self, result: Bytes) {
        let Some(message) = self.message.take() else {
            return;
        };
        self.lease.abort();
        if let Some(subject) = self.settings.policy.on_success.clone() {
            self.destination(&subject, &message, Condition::Success, 200, false, &result)
                .await;
        }
        self.room.take();
        // A plain ack: were it lost, the event would run again (at least once) rather
        // than every event wait for the server's confirmation.
        match message.ack().await {
            Ok(()) => self.settings.metrics.settled(Settled::Succeeded),
            // Not acknowledged: it runs again elsewhere (at least once).
            Err(e) => {
                tracing::warn!(event = %self.id, error = %e, "cannot acknowledge an async event")
            }
        }
    }

    /// An attempt failed with `code`: throttled events are offered again untouched;
    /// others are retried with backoff, or end as dead letters.
    pub(crate) async fn failed(mut self, code: ErrorCode, error: &LambdaError) {
        if code == ErrorCode::TooManyRequests {
            tracing::info!(event = %self.id, "async event throttled; offered again in {THROTTLE_DELAY:?}");
            self.settings.metrics.settled(Settled::Throttled);
            return self.put_back(THROTTLE_DELAY).await;
        }
        let Some(message) = self.message.take() else {
            return;
        };
        self.lease.abort();
        self.room.take();
        match self.settings.policy.after_failure(self.attempt, self.age()) {
            AfterFailure::Retry { attempt, delay } => {
                self.retry(message, attempt, delay, error).await
            }
            AfterFailure::DeadLetter(condition) => {
                self.dead_letter(message, condition, code, error).await
            }
        }
    }

    /// Ends an event that is too old to run.
    pub(crate) async fn too_old(mut self) {
        let Some(message) = self.message.take() else {
            return;
        };
        self.lease.abort();
        let error = LambdaError::new(
            "EventAgeExceeded",
            format!(
                "the event is older than async.max_event_age_s ({} s)",
                self.settings.policy.max_event_age_s
            ),
        );
        let attempts = self.attempt.saturating_sub(1);
        self.attempt = attempts;
        self.dead_letter(
            message,
            Condition::EventAgeExceeded,
            ErrorCode::Unavailable,
            &error,
        )
        .await;
    }

    /// Not run here (throttled, or the node stops): any node may take it after `delay`.
    pub(crate) async fn put_back(mut self, delay: Duration) {
        let Some(message) = self.message.take() else {
            return;
        };
        self.lease.abort();
        let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
    }

    async fn retry(
        &self,
        message: jetstream::Message,
        attempt: u32,
        delay: Duration,
        error: &LambdaError,
    ) {
        let mut headers = copied_headers(&message);
        headers.insert(HEADER_REQUEST_ID, self.id.as_str());
        headers.insert(HEADER_ATTEMPT, attempt.to_string().as_str());
        headers.insert(
            HEADER_NOT_BEFORE,
            (now_ms() + delay.as_millis() as u64).to_string().as_str(),
        );
        headers.insert(HEADER_ENQUEUED_AT, self.enqueued_ms.to_string().as_str());
        headers.insert(HEADER_ERROR, summary(error).as_str());
        // Enqueued twice (a crash between this and the ack) it still runs once.
        headers.insert(HEADER_MSG_ID, format!("{}.{attempt}", self.id).as_str());
        let subject = message.subject.to_string();
        match self
            .publish(subject, headers, message.payload.clone())
            .await
        {
            Ok(()) => {
                tracing::debug!(event = %self.id, attempt, delay_ms = delay.as_millis() as u64, "async event retried");
                self.settings.metrics.settled(Settled::Retried);
                let _ = message.ack().await;
            }
            Err(e) => {
                tracing::warn!(event = %self.id, error = %e, "cannot enqueue a retry; the event runs again as it was");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
    }

    async fn dead_letter(
        &self,
        message: jetstream::Message,
        condition: Condition,
        code: ErrorCode,
        error: &LambdaError,
    ) {
        let mut headers = copied_headers(&message);
        headers.insert(HEADER_REQUEST_ID, self.id.as_str());
        headers.insert(HEADER_ATTEMPT, self.attempt.to_string().as_str());
        headers.insert(HEADER_ENQUEUED_AT, self.enqueued_ms.to_string().as_str());
        headers.insert(HEADER_CONDITION, condition.as_str());
        headers.insert(HEADER_ERROR, summary(error).as_str());
        headers.insert(HEADER_MSG_ID, format!("{}.dead", self.id).as_str());
        let subject = self.settings.dead_letters.clone();
        if let Err(e) = self
            .publish(subject, headers, message.payload.clone())
            .await
        {
            tracing::error!(event = %self.id, error = %e, "cannot store a dead letter; the event stays enqueued");
            let _ = message.ack_with(AckKind::Nak(Some(THROTTLE_DELAY))).await;
            return;
        }
        tracing::warn!(event = %self.id, attempts = self.attempt, condition = condition.as_str(),
            error = %summary(error), "async event dead-lettered");
        self.settings.metrics.settled(Settled::DeadLettered);
        if let Some(subject) = self.settings.policy.on_failure.clone() {
            let status = if code == ErrorCode::FunctionError {
                200
            } else {
                code.code()
            };
            self.destination(
                &subject,
                &message,
                condition,
                status,
                code == ErrorCode::FunctionError,
                &error.to_json(),
            )
            .await;
        }
        let _ = message.ack().await;
    }

    /// A JetStream publish, waiting for the stream's acknowledgement.
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), async_nats::Error> {
        self.settings
            .js
            .publish_with_headers(subject, headers, payload)
            .await?
            .await?;
        Ok(())
    }

    async fn destination(
        &self,
        subject: &str,
        message: &jetstream::Message,
        condition: Condition,
        status_code: u16,
        function_error: bool,
        response: &[u8],
    ) {
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let executed = self
            .executed
            .map_or_else(|| LATEST.to_owned(), |n| n.to_string());
        let record = DestinationRecord {
            timestamp: &timestamp,
            request_id: &self.id,
            function_arn: &self.settings.arn,
            qualifier: self.qualifier.as_deref().unwrap_or(LATEST),
            executed_version: &executed,
            condition,
            attempts: self.attempt,
            request_payload: &message.payload,
            status_code,
            function_error,
            response_payload: response,
        };
        // A core publish: a stream that captures the subject stores it; waiting for a
        // stream's ack would stall on a subject only subscribers listen to.
        let client = self.settings.js.client();
        if let Err(e) = client
            .publish(subject.to_owned(), record.to_json().into())
            .await
        {
            tracing::warn!(event = %self.id, subject, error = %e, "cannot publish a destination record");
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let Some(message) = self.message.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = message.ack_with(AckKind::Nak(None)).await;
            });
        }
    }
}

/// Tells the server, while the event runs, that it is still being worked on, so that
/// its ack wait never runs out under a long invocation.
async fn keep_leased(message: jetstream::Message, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if message.ack_with(AckKind::Progress).await.is_err() {
            return;
        }
    }
}

/// What natsfn reads of an async event's headers (outside bytes: any publisher allowed
/// on `natsfn.async.<fn>` may set them, natsfn's own included).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The invocation's request id: the same for every attempt.
    pub(crate) id: String,
    /// 1 for the first run; never 0.
    pub(crate) attempt: u32,
    pub(crate) enqueued_ms: u64,
}

impl Stamp {
    /// An event's id, attempt and enqueue time from its headers; `sequence` and
    /// `published_ms` (the stream's) stand in for what is missing or unreadable.
    pub(crate) fn read(headers: Option<&HeaderMap>, sequence: u64, published_ms: u64) -> Stamp {
        let header = |name: &str| header(headers, name);
        // The publisher's Nats-Msg-Id when it can be a request id; else one made from
        // the stream sequence, so that a redelivery keeps it.
        let id = [HEADER_REQUEST_ID, HEADER_MSG_ID]
            .into_iter()
            .filter_map(header)
            .find(|id| natsfn_protocol::names::is_valid_request_id(id))
            .unwrap_or_else(|| format!("00000000-0000-4000-8000-{sequence:012x}"));
        let attempt = number(headers, HEADER_ATTEMPT)
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1)
            .max(1);
        let enqueued_ms = number(headers, HEADER_ENQUEUED_AT).unwrap_or(published_ms);
        Stamp {
            id,
            attempt,
            enqueued_ms,
        }
    }
}

/// A retry's `Natsfn-Not-Before` still ahead of `now_ms`: how long until it passes.
pub(crate) fn backoff_left(headers: Option<&HeaderMap>, now_ms: u64) -> Option<Duration> {
    let not_before = number(headers, HEADER_NOT_BEFORE)?;
    (not_before > now_ms).then(|| Duration::from_millis(not_before - now_ms))
}

fn header(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

fn number(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    header(headers, name).and_then(|v| v.trim().parse().ok())
}

/// The publisher's headers, without those natsfn writes itself.
fn copied_headers(message: &jetstream::Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            if OURS
                .iter()
                .any(|ours| AsRef::<str>::as_ref(name).eq_ignore_ascii_case(ours))
            {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    headers
}

fn summary(error: &LambdaError) -> String {
    let first = error.error_message.lines().next().unwrap_or_default();
    format!("{}: {}", error.error_type, first)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

#[cfg(test)]
#[path = "event/hostile.rs"]
mod hostile;
