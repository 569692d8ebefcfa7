//! The Lambda Invoke API, `POST /2015-03-31/functions/{name}/invocations`, as the AWS
//! SDKs and CLI call it (SigV4-signed; the signature is checked under `--http-auth`).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures::StreamExt;
use natsfn_protocol::names::{
    async_subject, is_valid_function_name, logs_subject, HEADER_MSG_ID, HEADER_QUALIFIER,
    HEADER_REQUEST_ID,
};
use natsfn_protocol::{LambdaError, Qualifier};
use serde_json::json;

use super::{new_request_id, read_body, request, BodyError, Gateway, Outcome};

/// How much of an invocation's log `X-Amz-Log-Type: Tail` returns, as Lambda does.
const TAIL_BYTES: usize = 4096;
/// After the reply, how long log lines of the invocation may still arrive (they travel
/// apart from it, and a busy node may be slow to read them); the invocation's `REPORT`
/// line, which nodes publish after the reply, ends the wait early.
const LOG_SETTLE: Duration = Duration::from_secs(1);
/// The version an unqualified invocation reports when its reply names none (a node
/// from before versions).
const LATEST_VERSION: &str = "$LATEST";
/// The permission a key needs to call the Invoke API, as IAM names it.
const INVOKE_ACTION: &str = "lambda:InvokeFunction";

pub(super) async fn invoke(
    State(gateway): State<Gateway>,
    Path(target): Path<String>,
    request_in: Request,
) -> Response {
    let (parts, body) = request_in.into_parts();
    let request_id = new_request_id();
    let region = region(&parts.headers);
    let (name, named_qualifier) = function_target(&target);
    let query_qualifier = parts.uri.query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "Qualifier")
            .map(|(_, value)| value.into_owned())
    });
    let reply = Reply {
        request_id: &request_id,
        region: &region,
        name,
        qualifier: named_qualifier.or(query_qualifier.as_deref()),
    };
    // Under --http-auth, a request without a usable signature learns nothing more.
    let claim = match &gateway.auth {
        None => None,
        Some(keys) => match keys.claim(&parts.headers, SystemTime::now()) {
            Ok(claim) => Some(claim),
            Err(refusal) => return reply.refused(&refusal),
        },
    };
    if !is_valid_function_name(name) {
        return reply.not_found();
    }
    // Refused before anything is sent: a qualifier is one subject token.
    let qualifier = match qualifier(named_qualifier, query_qualifier.as_deref()) {
        Ok(qualifier) => qualifier.map(|q| q.to_string()),
        Err(error) => return reply.error(StatusCode::BAD_REQUEST, &error),
    };
    let qualifier = qualifier.as_deref();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let invocation_type = header("x-amz-invocation-type");
    let tail = header("x-amz-log-type") == "Tail";
    let body = match read_body(&parts.headers, body, gateway.max_event).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let message = format!(
                "Request must be smaller than {} bytes for the InvokeFunction operation",
                gateway.max_event
            );
            return reply.error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &LambdaError::request_too_large_exception(&message),
            );
        }
        Err(BodyError::TimedOut) => {
            return reply.error(
                StatusCode::REQUEST_TIMEOUT,
                &LambdaError::request_timeout("the request body did not arrive in time"),
            )
        }
        Err(BodyError::Broken) => {
            return reply.error(
                StatusCode::BAD_REQUEST,
                &LambdaError::invalid_request_content("the request body could not be read"),
            )
        }
    };
    if let Some(claim) = claim {
        if let Err(refusal) = claim.verify(&parts, &body, name, INVOKE_ACTION) {
            return reply.refused(&refusal);
        }
    }
    match invocation_type {
        "" | "RequestResponse" => {}
        "Event" | "DryRun" => {
            // No reply will say whether the function exists: its binding does.
            match gateway.bindings.get(name).await {
                Ok(Some(_)) => {}
                Ok(None) => return reply.not_found(),
                Err(e) => return reply.unavailable(&e.to_string()),
            }
            if invocation_type == "DryRun" {
                return reply.empty(StatusCode::NO_CONTENT);
            }
            if !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                return reply.error(
                    StatusCode::BAD_REQUEST,
                    &LambdaError::invalid_request_content("Could not parse request body into json"),
                );
            }
            // Durable: 202 only once NATSFN_ASYNC has stored it; the request id is its
            // event id (and dedupe id).
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_REQUEST_ID, request_id.as_str());
            headers.insert(HEADER_MSG_ID, request_id.as_str());
            if let Some(qualifier) = qualifier {
                headers.insert(HEADER_QUALIFIER, qualifier);
            }
            let js = async_nats::jetstream::new(gateway.client.clone());
            let stored = match js
                .publish_with_headers(async_subject(name), headers, body)
                .await
            {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            return match stored {
                Ok(()) => reply.empty(StatusCode::ACCEPTED),
                Err(e) => reply.unavailable(&format!("the event was not stored: {e}")),
            };
        }
        other => {
            let message = format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            );
            return reply.error(StatusCode::BAD_REQUEST, &LambdaError::validation(&message));
        }
    }
    let (outcome, log) = if tail {
        invoke_with_tail(&gateway, name, qualifier, &request_id, body).await
    } else {
        let outcome = request(&gateway, name, qualifier, &request_id, body).await;
        (outcome, None)
    };
    match outcome {
        Outcome::Success {
            payload,
            request_id,
            executed_version,
        } => Reply {
            request_id: &request_id,
            ..reply
        }
        .result(payload, None, log, executed_version),
        Outcome::Error { code: 429, .. } => {
            let body = json!({"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                              "Type": "User", "message": "Rate Exceeded."});
            let error_type = LambdaError::too_many_requests("Rate Exceeded.").error_type;
            reply.json(StatusCode::TOO_MANY_REQUESTS, &error_type, &body)
        }
        Outcome::Error {
            code: 400, message, ..
        } => reply.error(
            StatusCode::BAD_REQUEST,
            &LambdaError::invalid_request_content(&message),
        ),
        // The handler's error, and (as in Lambda) a timeout, a crashed worker, an init
        // error or a result too large: 200 and the error JSON, marked Unhandled.
        Outcome::Error {
            payload,
            request_id,
            executed_version,
            ..
        } => Reply {
            request_id: &request_id,
            ..reply
        }
        .result(payload, Some("Unhandled"), log, executed_version),
        Outcome::QualifierNotFound { .. } | Outcome::NoResponders => reply.not_found(),
        Outcome::TimedOut => reply.error(
            StatusCode::BAD_GATEWAY,
            &LambdaError::service_exception("no reply from the function in time"),
        ),
        Outcome::Unavailable(why) => reply.unavailable(&why),
    }
}

/// A request that also gathers the invocation's log lines (`natsfn.logs.<function>`
/// with its request id): subscribed before the request is sent, read while it runs.
async fn invoke_with_tail(
    gateway: &Gateway,
    name: &str,
    qualifier: Option<&str>,
    request_id: &str,
    event: axum::body::Bytes,
) -> (Outcome, Option<String>) {
    let mut logs = match gateway.client.subscribe(logs_subject(name)).await {
        Ok(logs) => logs,
        Err(e) => return (Outcome::Unavailable(e.to_string()), None),
    };
    // The subscription reaches the server before the request does (one connection).
    let mut tail = Tail::default();
    let invocation = request(gateway, name, qualifier, request_id, event);
    tokio::pin!(invocation);
    let outcome = loop {
        tokio::select! {
            outcome = &mut invocation => break outcome,
            Some(line) = logs.next() => { tail.push(&line, request_id); }
        }
    };
    let settle = tokio::time::sleep(LOG_SETTLE);
    tokio::pin!(settle);
    loop {
        tokio::select! {
            _ = &mut settle => break,
            line = logs.next() => match line {
                Some(line) => if tail.push(&line, request_id) { break },
                None => break,
            },
        }
    }
    (outcome, Some(tail.encode()))
}

/// The last `TAIL_BYTES` of one invocation's log.
#[derive(Default)]
struct Tail {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl Tail {
    /// Keeps what `record` holds of `request_id`; whether that is the invocation's
    /// last line (`REPORT`). Platform records of several invocations may share one
    /// message (its request id header lists them all): each of their lines names its own.
    fn push(&mut self, record: &async_nats::Message, request_id: &str) -> bool {
        let ids = record
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_REQUEST_ID))
            .map_or("", |ids| ids.as_str());
        if !ids.split(',').any(|id| id == request_id) {
            return false;
        }
        let text: Vec<u8> = if ids.contains(',') {
            record
                .payload
                .split(|b| *b == b'\n')
                .filter(|line| names_request(line, request_id))
                .flat_map(|line| line.iter().copied().chain([b'\n']))
                .collect()
        } else {
            let mut text = record.payload.to_vec();
            text.push(b'\n');
            text
        };
        let last = text
            .split(|b| *b == b'\n')
            .any(|l| l.starts_with(b"REPORT RequestId: "));
        self.bytes += text.len();
        self.lines.push_back(text);
        while self.bytes > TAIL_BYTES && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
        last
    }

    fn encode(&self) -> String {
        let all: Vec<u8> = self.lines.iter().flatten().copied().collect();
        let from = all.len().saturating_sub(TAIL_BYTES);
        BASE64.encode(&all[from..])
    }
}

/// A platform line (`START RequestId: <id> ...`, `END ...`, `REPORT ...`) of `request_id`.
fn names_request(line: &[u8], request_id: &str) -> bool {
    let Some(at) = line.windows(11).position(|w| w == b"RequestId: ") else {
        return false;
    };
    let rest = &line[at + 11..];
    rest.starts_with(request_id.as_bytes())
        && rest
            .get(request_id.len())
            .is_none_or(|b| b.is_ascii_whitespace())
}

/// `{name}` as the SDKs send it: a name, `name:qualifier`, `account:function:name`
/// or a function ARN, with or without a qualifier. The function and the qualifier as
/// written (everything after the name's `:`, checked by [`qualifier`]).
fn function_target(target: &str) -> (&str, Option<&str>) {
    let after = target
        .split_once(":function:")
        .map_or(target, |(_, rest)| rest);
    match after.split_once(':') {
        Some((name, qualifier)) => (name, Some(qualifier)),
        None => (after, None),
    }
}

/// The qualifier of a request, from its `FunctionName` or its `?Qualifier=` (which,
/// both given, must agree, as Lambda has it); an empty one is none.
fn qualifier(
    in_name: Option<&str>,
    in_query: Option<&str>,
) -> Result<Option<Qualifier>, LambdaError> {
    let (in_name, in_query) = (
        in_name.filter(|q| !q.is_empty()),
        in_query.filter(|q| !q.is_empty()),
    );
    let text = match (in_name, in_query) {
        (Some(a), Some(b)) if a != b => return Err(LambdaError::new(
            "InvalidParameterValueException",
            "The derived qualifier from the function name does not match the specified qualifier.",
        )),
        (a, b) => a.or(b),
    };
    let Some(text) = text else {
        return Ok(None);
    };
    Qualifier::parse(text).map(Some).map_err(|why| {
        LambdaError::validation(format!(
            "1 validation error detected: Value '{text}' at 'qualifier' failed to satisfy constraint: {why}"
        ))
    })
}

/// The region of the request's SigV4 credential scope, for the ARNs of error messages.
fn region(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|scope| scope.split('/').nth(2))
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or("us-east-1")
        .to_owned()
}

/// Builds the responses of one Invoke API request.
struct Reply<'a> {
    request_id: &'a str,
    region: &'a str,
    name: &'a str,
    /// As the request wrote it, for the ARN of a 404.
    qualifier: Option<&'a str>,
}

impl Reply<'_> {
    fn response(&self, status: StatusCode, body: Body) -> Response {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        if let Ok(id) = HeaderValue::from_str(self.request_id) {
            response.headers_mut().insert("x-amzn-requestid", id);
        }
        response
    }

    fn empty(&self, status: StatusCode) -> Response {
        self.response(status, Body::empty())
    }

    /// 200 and the function's result (or its error JSON, with `X-Amz-Function-Error`).
    fn result(
        &self,
        payload: axum::body::Bytes,
        function_error: Option<&'static str>,
        log: Option<String>,
        executed_version: Option<String>,
    ) -> Response {
        let mut response = self.response(StatusCode::OK, Body::from(payload));
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        // The node says which version ran; without a word from it, only an unqualified
        // invocation is known to have run $LATEST.
        let executed = executed_version
            .as_deref()
            .or(self.qualifier.is_none().then_some(LATEST_VERSION))
            .and_then(|v| HeaderValue::from_str(v).ok());
        if let Some(version) = executed {
            headers.insert("x-amz-executed-version", version);
        }
        if let Some(kind) = function_error {
            headers.insert("x-amz-function-error", HeaderValue::from_static(kind));
        }
        if let Some(value) = log.and_then(|log| HeaderValue::from_str(&log).ok()) {
            headers.insert("x-amz-log-result", value);
        }
        response
    }

    /// An error as Lambda sends it: the type in `x-amzn-ErrorType` (which the SDKs
    /// read first) and a JSON body with `Type` and `message`.
    fn json(&self, status: StatusCode, error_type: &str, body: &serde_json::Value) -> Response {
        let mut response = self.response(status, Body::from(body.to_string()));
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if let Ok(kind) = HeaderValue::from_str(error_type) {
            headers.insert("x-amzn-errortype", kind);
        }
        response
    }

    fn error(&self, status: StatusCode, error: &LambdaError) -> Response {
        let side = if status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        self.json(
            status,
            &error.error_type,
            &json!({"Type": side, "message": error.error_message}),
        )
    }

    /// A 403 of `--http-auth`: the exception in `x-amzn-ErrorType` and the body's
    /// `__type`, as Lambda's JSON protocol sends it.
    fn refused(&self, refusal: &LambdaError) -> Response {
        self.json(
            StatusCode::FORBIDDEN,
            &refusal.error_type,
            &json!({"Type": "User", "__type": refusal.error_type, "message": refusal.error_message}),
        )
    }

    fn not_found(&self) -> Response {
        let qualifier = self.qualifier.map(|q| format!(":{q}")).unwrap_or_default();
        let message = format!(
            "Function not found: arn:aws:lambda:{}:000000000000:function:{}{qualifier}",
            self.region, self.name
        );
        self.error(
            StatusCode::NOT_FOUND,
            &LambdaError::resource_not_found(&message),
        )
    }

    fn unavailable(&self, why: &str) -> Response {
        tracing::warn!(function = self.name, error = %why, "Invoke API request failed on NATS");
        self.error(
            StatusCode::SERVICE_UNAVAILABLE,
            &LambdaError::service_exception("the function could not be reached over NATS"),
        )
    }
}

#[cfg(test)]
#[path = "invoke_api/hostile.rs"]
mod hostile;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_from_every_form_the_sdks_send() {
        assert_eq!(function_target("hello"), ("hello", None));
        assert_eq!(function_target("hello:prod"), ("hello", Some("prod")));
        assert_eq!(
            function_target("123456789012:function:hello"),
            ("hello", None)
        );
        assert_eq!(
            function_target("arn:aws:lambda:eu-west-1:123456789012:function:hello:$LATEST"),
            ("hello", Some("$LATEST"))
        );
        assert_eq!(
            function_target("arn:aws:lambda:eu-west-1:123456789012:function:hello:7"),
            ("hello", Some("7"))
        );
    }

    #[test]
    fn qualifiers_from_the_name_or_the_query_agree_and_parse() {
        assert_eq!(qualifier(None, None).ok(), Some(None));
        assert_eq!(qualifier(None, Some("")).ok(), Some(None));
        assert_eq!(
            qualifier(Some("live"), None).ok(),
            Some(Some(Qualifier::Alias("live".into())))
        );
        assert_eq!(
            qualifier(None, Some("3")).ok(),
            Some(Some(Qualifier::Version(3)))
        );
        assert_eq!(
            qualifier(Some("3"), Some("3")).ok(),
            Some(Some(Qualifier::Version(3)))
        );
        let differ = qualifier(Some("live"), Some("3"))
            .err()
            .map(|e| e.error_type);
        assert_eq!(differ.as_deref(), Some("InvalidParameterValueException"));
        let invalid = qualifier(Some("a.b"), None).err().map(|e| e.error_type);
        assert_eq!(invalid.as_deref(), Some("ValidationException"));
        assert!(qualifier(Some("0"), None).is_err());
        assert!(qualifier(Some("live:x"), None).is_err());
    }

    #[test]
    fn an_unknown_qualifier_reply_is_recognised() {
        let body = LambdaError::resource_not_found("no alias live").to_json();
        assert!(super::super::is_not_found(&body));
        assert!(!super::super::is_not_found(
            &LambdaError::service_exception("x").to_json()
        ));
        assert!(!super::super::is_not_found(b"not json"));
    }

    #[test]
    fn the_region_comes_from_the_credential_scope() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(region(&headers), "us-east-1");
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20261202/eu-west-1/lambda/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        assert_eq!(region(&headers), "eu-west-1");
    }

    #[test]
    fn a_tail_keeps_only_its_own_lines_of_merged_platform_records() {
        let message = |ids: &str, body: &str| {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(HEADER_REQUEST_ID, ids);
            async_nats::Message {
                subject: "natsfn.logs.f".into(),
                reply: None,
                payload: body.to_owned().into(),
                headers: Some(headers),
                status: None,
                description: None,
                length: 0,
            }
        };
        let mut tail = Tail::default();
        assert!(!tail.push(&message("a", "printed by a"), "b"));
        assert!(!tail.push(&message("b", "printed by b"), "b"));
        let merged = "END RequestId: b1\nREPORT RequestId: b1\tDuration: 1 ms\n\
                      END RequestId: b\nREPORT RequestId: b\tDuration: 2 ms";
        assert!(tail.push(&message("b1,b", merged), "b"));
        let all: Vec<u8> = tail.lines.iter().flatten().copied().collect();
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "printed by b\nEND RequestId: b\nREPORT RequestId: b\tDuration: 2 ms\n"
        );
    }
}
