//! One invocation on its way through the tree, and the replies sent to its caller.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use natsfn_protocol::names::{
    is_valid_request_id, HEADER_COLD_START, HEADER_DEADLINE_MS, HEADER_EXECUTED_VERSION,
    HEADER_FUNCTION_ERROR, HEADER_REQUEST_ID, HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE,
};
use natsfn_protocol::version::LATEST;
use natsfn_protocol::{ErrorCode, LambdaError};

use crate::context::NodeContext;
use crate::events::{Event, Settings};
use crate::reserved::SharePermit;

/// Who is waiting for an invocation's outcome: the reply subject (none for a plain
/// publish) or the async event to settle, and the request id every reply and log line
/// carries.
///
/// The one record of whether the caller has been answered: answering consumes it, and
/// one dropped unanswered (a worker actor that panicked with it) still gets a 502 (an
/// event is put back), so every caller gets exactly one reply wherever its invocation
/// ends.
pub(crate) struct Caller {
    answer: Answer,
    pub(crate) request_id: String,
    /// The version that runs it, set by the FunctionActor that admits it; every reply
    /// from then on says it (`Natsfn-Executed-Version`). `None`: refused before (a
    /// 400, an unknown qualifier): no version ran.
    pub(crate) executed: Option<Executed>,
    /// Its place within the node's share of `reserved_concurrency` while a worker
    /// holds it; given back with the answer.
    pub(crate) permit: Option<SharePermit>,
    /// For the reply of last resort in `drop`, which has no context at hand.
    client: Arc<async_nats::Client>,
}

enum Answer {
    /// A plain publish, or answered already.
    Nobody,
    Reply(Subject),
    /// An async invocation: its outcome settles the event in its stream.
    Event(Box<Event>),
}

impl Answer {
    fn take(&mut self) -> Answer {
        std::mem::replace(self, Answer::Nobody)
    }
}

/// Which endpoint of the function's micro service an invocation came in on: an index
/// that stays valid for the FunctionActor's life, so recording its stats is an array
/// access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndpointId(pub(crate) usize);

pub(crate) struct Invocation {
    pub(crate) caller: Caller,
    /// The event, exactly as the caller sent it.
    pub(crate) payload: Bytes,
    /// `Natsfn-Deadline-Ms`: past it the caller no longer waits.
    pub(crate) deadline_ms: Option<u64>,
    pub(crate) received: std::time::Instant,
    /// The service endpoint (subject) it came in on, for the function's stats.
    pub(crate) endpoint: EndpointId,
}

impl Invocation {
    /// Reads a request message that came in on `endpoint`. A request with unusable
    /// headers is answered 400 here.
    pub(crate) async fn from_message(
        ctx: &NodeContext,
        msg: Message,
        endpoint: EndpointId,
    ) -> Option<Invocation> {
        let headers = msg.headers.as_ref();
        let chosen = chosen_request_id(headers);
        let caller = Caller {
            answer: msg.reply.map_or(Answer::Nobody, Answer::Reply),
            request_id: match &chosen {
                Ok(Some(id)) => id.clone(),
                _ => uuid::Uuid::new_v4().to_string(),
            },
            executed: None,
            permit: None,
            client: ctx.shared_client.clone(),
        };
        let deadline_ms = match chosen.and_then(|_| deadline_ms(headers)) {
            Ok(deadline_ms) => deadline_ms,
            Err(err) => {
                caller.fail(ctx, ErrorCode::BadRequest, &err).await;
                return None;
            }
        };
        Some(Invocation {
            caller,
            payload: msg.payload,
            deadline_ms,
            received: std::time::Instant::now(),
            endpoint,
        })
    }

    /// An async invocation, pulled from its stream.
    pub(crate) fn from_event(ctx: &NodeContext, event: Event, endpoint: EndpointId) -> Invocation {
        Invocation {
            payload: event.payload(),
            caller: Caller {
                request_id: event.id.clone(),
                answer: Answer::Event(Box::new(event)),
                executed: None,
                permit: None,
                client: ctx.shared_client.clone(),
            },
            deadline_ms: None,
            received: std::time::Instant::now(),
            endpoint,
        }
    }

    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.deadline_ms.is_some_and(|d| d <= now_ms)
    }
}

/// `Natsfn-Request-Id`, when a request chose one (the gateway does, to find the
/// invocation's log lines); an unusable one is refused with the 400 that answers it.
pub(crate) fn chosen_request_id(
    headers: Option<&HeaderMap>,
) -> Result<Option<String>, LambdaError> {
    match headers.and_then(|h| h.get(HEADER_REQUEST_ID)) {
        None => Ok(None),
        Some(id) if is_valid_request_id(id.as_str()) => Ok(Some(id.as_str().to_owned())),
        Some(_) => Err(LambdaError::invalid_request_content(format!(
            "{HEADER_REQUEST_ID} must be 1 to 64 characters of A-Za-z0-9-"
        ))),
    }
}

/// `Natsfn-Deadline-Ms` (Unix ms past which the caller no longer waits), or the 400
/// that answers an unreadable one.
pub(crate) fn deadline_ms(headers: Option<&HeaderMap>) -> Result<Option<u64>, LambdaError> {
    let Some(value) = headers.and_then(|h| h.get(HEADER_DEADLINE_MS)) else {
        return Ok(None);
    };
    value.as_str().trim().parse::<u64>().map(Some).map_err(|_| {
        LambdaError::invalid_request_content(format!(
            "{HEADER_DEADLINE_MS} must be Unix time in milliseconds"
        ))
    })
}

impl Caller {
    /// An async event is settled by `settings` (its version's `async`); a request has
    /// none to change.
    pub(crate) fn settle_event_by(&mut self, settings: &Arc<Settings>) {
        if let Answer::Event(event) = &mut self.answer {
            event.settle_by(settings.clone());
        }
    }

    /// The caller no longer waits (its deadline passed): no reply.
    pub(crate) fn abandon(mut self) {
        self.answer = Answer::Nobody;
    }

    /// Not run on this node (it stops): a request is answered 503, an event is put
    /// back at once for another node.
    pub(crate) async fn elsewhere(mut self, ctx: &NodeContext, error: &LambdaError) {
        match self.answer.take() {
            Answer::Event(event) => event.put_back(Duration::ZERO).await,
            answer => {
                self.answer = answer;
                self.fail(ctx, ErrorCode::Unavailable, error).await;
            }
        }
    }

    /// Sends the handler's result. A result the server cannot carry becomes a 413,
    /// returned so that the invocation is counted as what its caller got.
    pub(crate) async fn succeed(
        mut self,
        ctx: &NodeContext,
        payload: Bytes,
        cold: bool,
    ) -> Result<(), (ErrorCode, LambdaError)> {
        let reply = match self.answer.take() {
            Answer::Reply(reply) => reply,
            Answer::Event(mut event) => {
                event.executed = self.executed.and_then(Executed::version);
                tokio::spawn(event.succeeded(payload));
                return Ok(());
            }
            Answer::Nobody => {
                tracing::debug!(request_id = %self.request_id, bytes = payload.len(), "result (no reply subject)");
                return Ok(());
            }
        };
        if payload.len() + 256 > ctx.max_payload {
            let err = LambdaError::response_too_large(format!(
                    "Response payload size ({} bytes) exceeded maximum allowed payload size ({} bytes).",
                    payload.len(),
                    ctx.max_payload
                ),
            );
            self.answer = Answer::Reply(reply);
            self.fail(ctx, ErrorCode::PayloadTooLarge, &err).await;
            return Err((ErrorCode::PayloadTooLarge, err));
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REQUEST_ID, self.request_id.as_str());
        insert_executed(&mut headers, self.executed);
        if cold {
            headers.insert(HEADER_COLD_START, "true");
        }
        if let Err(e) = ctx
            .client
            .publish_with_headers(reply, headers, payload)
            .await
        {
            tracing::warn!(request_id = %self.request_id, error = %e, "cannot publish reply");
        }
        Ok(())
    }

    /// Sends an error reply: ADR-32 headers and Lambda's error body.
    pub(crate) async fn fail(mut self, ctx: &NodeContext, code: ErrorCode, error: &LambdaError) {
        let reply = match self.answer.take() {
            Answer::Reply(reply) => reply,
            Answer::Event(mut event) => {
                event.executed = self.executed.and_then(Executed::version);
                let error = error.clone();
                tokio::spawn(async move { event.failed(code, &error).await });
                return;
            }
            Answer::Nobody => {
                tracing::warn!(
                    request_id = %self.request_id,
                    code = code.code(),
                    error_type = %error.error_type,
                    error = %error.error_message,
                    "invocation failed (no reply subject)"
                );
                return;
            }
        };
        let (headers, body) = error_reply(&self.request_id, self.executed, code, error);
        if let Err(e) = ctx.client.publish_with_headers(reply, headers, body).await {
            tracing::warn!(request_id = %self.request_id, error = %e, "cannot publish error reply");
        }
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        // An event dropped here is put back by its own drop.
        let Answer::Reply(reply) = self.answer.take() else {
            return;
        };
        tracing::error!(request_id = %self.request_id, "an invocation was lost without an answer; answering 502");
        let error = LambdaError::exit_error(format!(
            "RequestId: {} Error: the worker serving it failed",
            self.request_id
        ));
        let (headers, body) = error_reply(
            &self.request_id,
            self.executed,
            ErrorCode::WorkerFailed,
            &error,
        );
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.publish_with_headers(reply, headers, body).await;
            });
        }
    }
}

/// Which version ran an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Executed {
    Latest,
    Version(u64),
}

impl Executed {
    pub(crate) fn of(version: Option<u64>) -> Executed {
        version.map_or(Executed::Latest, Executed::Version)
    }

    fn version(self) -> Option<u64> {
        match self {
            Executed::Latest => None,
            Executed::Version(n) => Some(n),
        }
    }
}

/// `Natsfn-Executed-Version`: `$LATEST` or the version's number.
fn insert_executed(headers: &mut HeaderMap, executed: Option<Executed>) {
    match executed {
        None => {}
        Some(Executed::Latest) => headers.insert(HEADER_EXECUTED_VERSION, LATEST),
        Some(Executed::Version(n)) => {
            headers.insert(HEADER_EXECUTED_VERSION, n.to_string().as_str())
        }
    }
}

/// An error reply: ADR-32 headers and Lambda's error body.
fn error_reply(
    request_id: &str,
    executed: Option<Executed>,
    code: ErrorCode,
    error: &LambdaError,
) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REQUEST_ID, request_id);
    insert_executed(&mut headers, executed);
    // Header values are one line: a multi-line message keeps its first line here and
    // stays whole in the body.
    let summary = error.error_message.lines().next().unwrap_or_default();
    let header = format!("{}: {}", error.error_type, summary);
    headers.insert(HEADER_SERVICE_ERROR, one_line(&header).as_str());
    headers.insert(HEADER_SERVICE_ERROR_CODE, code.code().to_string().as_str());
    if code == ErrorCode::FunctionError {
        headers.insert(HEADER_FUNCTION_ERROR, "Unhandled");
    }
    (headers, Bytes::from(error.to_json()))
}

/// A header value: no control characters, bounded length.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

#[cfg(test)]
#[path = "invocation/hostile.rs"]
mod hostile;
