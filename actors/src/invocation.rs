//! One invocation on its way through the tree, and the replies sent to its caller.

use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use natsfn_protocol::names::{
    HEADER_COLD_START, HEADER_DEADLINE_MS, HEADER_FUNCTION_ERROR, HEADER_REQUEST_ID,
    HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE,
};
use natsfn_protocol::{ErrorCode, LambdaError};

use crate::context::NodeContext;

/// Who is waiting for an invocation's outcome: the reply subject (none for a plain
/// publish) and the request id every reply and log line carries.
#[derive(Debug, Clone)]
pub struct Caller {
    pub reply: Option<Subject>,
    pub request_id: String,
}

#[derive(Debug)]
pub struct Invocation {
    pub caller: Caller,
    /// The event, exactly as the caller sent it.
    pub payload: Bytes,
    /// `Natsfn-Deadline-Ms`: past it the caller no longer waits.
    pub deadline_ms: Option<u64>,
    pub received: std::time::Instant,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Invocation {
    /// Reads a request message. A request with unusable headers is answered 400 here.
    pub(crate) async fn from_message(ctx: &NodeContext, msg: Message) -> Option<Invocation> {
        let caller = Caller {
            reply: msg.reply,
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let deadline = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_DEADLINE_MS))
            .map(|v| v.as_str().trim().parse::<u64>());
        let deadline_ms = match deadline {
            None => None,
            Some(Ok(ms)) => Some(ms),
            Some(Err(_)) => {
                let err = LambdaError::new(
                    "InvalidRequestContentException",
                    format!("{HEADER_DEADLINE_MS} must be Unix time in milliseconds"),
                );
                caller.fail(ctx, ErrorCode::BadRequest, &err).await;
                return None;
            }
        };
        Some(Invocation {
            caller,
            payload: msg.payload,
            deadline_ms,
            received: std::time::Instant::now(),
        })
    }

    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.deadline_ms.is_some_and(|d| d <= now_ms)
    }
}

impl Caller {
    /// Sends the handler's result. A result the server cannot carry becomes a 413.
    pub(crate) async fn succeed(&self, ctx: &NodeContext, payload: Bytes, cold: bool) {
        let Some(reply) = &self.reply else {
            tracing::debug!(request_id = %self.request_id, bytes = payload.len(), "result (no reply subject)");
            return;
        };
        if payload.len() + 256 > ctx.max_payload {
            let err = LambdaError::new(
                "Function.ResponseSizeTooLarge",
                format!(
                    "Response payload size ({} bytes) exceeded maximum allowed payload size ({} bytes).",
                    payload.len(),
                    ctx.max_payload
                ),
            );
            return self.fail(ctx, ErrorCode::PayloadTooLarge, &err).await;
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REQUEST_ID, self.request_id.as_str());
        if cold {
            headers.insert(HEADER_COLD_START, "true");
        }
        if let Err(e) = ctx
            .client
            .publish_with_headers(reply.clone(), headers, payload)
            .await
        {
            tracing::warn!(request_id = %self.request_id, error = %e, "cannot publish reply");
        }
    }

    /// Sends an error reply: ADR-32 headers and Lambda's error body.
    pub(crate) async fn fail(&self, ctx: &NodeContext, code: ErrorCode, error: &LambdaError) {
        let Some(reply) = &self.reply else {
            tracing::warn!(
                request_id = %self.request_id,
                code = code.code(),
                error_type = %error.error_type,
                error = %error.error_message,
                "invocation failed (no reply subject)"
            );
            return;
        };
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REQUEST_ID, self.request_id.as_str());
        // Header values are one line: a multi-line message keeps its first line here
        // and stays whole in the body.
        let summary = error.error_message.lines().next().unwrap_or_default();
        let header = format!("{}: {}", error.error_type, summary);
        headers.insert(HEADER_SERVICE_ERROR, one_line(&header).as_str());
        headers.insert(HEADER_SERVICE_ERROR_CODE, code.code().to_string().as_str());
        if code == ErrorCode::FunctionError {
            headers.insert(HEADER_FUNCTION_ERROR, "Unhandled");
        }
        let body = Bytes::from(error.to_json());
        if let Err(e) = ctx
            .client
            .publish_with_headers(reply.clone(), headers, body)
            .await
        {
            tracing::warn!(request_id = %self.request_id, error = %e, "cannot publish error reply");
        }
    }
}

/// A header value: no control characters, bounded length.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}
