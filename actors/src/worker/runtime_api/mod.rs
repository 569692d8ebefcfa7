//! The AWS Lambda Runtime API (2018-06-01) that a `provided` worker's WorkerActor
//! serves to that one worker, on a loopback listener of its own: inside the worker's
//! network namespace, or on the host's taking only the worker's uid (`RuntimeApiListen`,
//! issue 21). It turns HTTP into the same messages a framed worker's channel gives
//! (`WorkerMsg::Frame`): the first `/next` is `Ready`, a posted response or error is
//! `Response` / `Error`, `init/error` is `InitError`. The WorkerActor stays the one
//! owner of the invocations in flight; the server only remembers which request id it
//! handed out, to answer misuse the way Lambda does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{Listener, ListenerExt};
use axum::Router;
use natsfn_protocol::frame::{ErrorFields, InvocationError};
use natsfn_protocol::{FromWorker, LambdaError};
use ractor::ActorRef;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDrop;

mod listen;

use super::WorkerMsg;
use crate::clock::now_ms;
pub(crate) use listen::RuntimeApiListen;
use listen::WorkerOnly;

/// Lambda's limit on a synchronous invocation's response, and so on what its Runtime
/// API takes as a response or error body.
const LAMBDA_RESPONSE_LIMIT: usize = 6 * 1024 * 1024;
/// Of a non-JSON error body, this much becomes the error message.
const MAX_ERROR_TEXT: usize = 4096;

const REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
const DEADLINE_MS: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
const FUNCTION_ARN: HeaderName = HeaderName::from_static("lambda-runtime-invoked-function-arn");
const TRACE_ID: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
const ERROR_TYPE: HeaderName = HeaderName::from_static("lambda-runtime-function-error-type");

/// The WorkerActor's end: hands invocations to the server; dropping it stops the
/// server and ends a `/next` that is waiting.
pub(crate) struct RuntimeApi {
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<Next>,
    /// The HTTP server, stopped when this is dropped.
    _server: AbortOnDrop,
}

/// An invocation waiting for the worker's `/next`.
struct Next {
    id: String,
    /// The NATS payload itself (reference counted, not copied).
    payload: Bytes,
}

struct Shared {
    worker: ActorRef<WorkerMsg>,
    /// Held by the one `/next` that waits: a second caller waits behind it.
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Next>>,
    ids: Mutex<Ids>,
    /// The worker asked for its first invocation (it is ready; init is over).
    ready: AtomicBool,
    arn: HeaderValue,
    timeout_ms: u64,
    max_body: usize,
}

#[derive(Default)]
struct Ids {
    /// Handed out by `/next` and not answered yet.
    running: Option<String>,
    /// Answered last: a second answer for it is a state error, not an unknown id.
    answered: Option<String>,
}

impl RuntimeApi {
    /// Serves where `listen` says. `max_payload`: the NATS server's, which a reply
    /// must fit in.
    pub(crate) async fn start(
        worker: ActorRef<WorkerMsg>,
        arn: &str,
        timeout: Duration,
        max_payload: usize,
        listen: RuntimeApiListen,
    ) -> std::io::Result<RuntimeApi> {
        let listener = WorkerOnly::new(listen).await?;
        let addr = listener.local_addr()?;
        let (queue, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            worker,
            queue: tokio::sync::Mutex::new(receiver),
            ids: Mutex::new(Ids::default()),
            ready: AtomicBool::new(false),
            arn: HeaderValue::from_str(arn).map_err(std::io::Error::other)?,
            timeout_ms: timeout.as_millis() as u64,
            max_body: LAMBDA_RESPONSE_LIMIT.min(max_payload),
        });
        let app = router(shared);
        // Answers are small writes that must not wait for the peer's delayed ACK.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("runtime API server stopped: {e}");
            }
        });
        Ok(RuntimeApi {
            addr,
            queue,
            _server: AbortOnDrop::new(server.abort_handle()),
        })
    }

    /// What `AWS_LAMBDA_RUNTIME_API` says.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues an invocation for the worker's next `/next`; never waits.
    pub(crate) fn send(&self, id: &str, payload: &Bytes) -> std::io::Result<()> {
        let next = Next {
            id: id.to_owned(),
            payload: payload.clone(),
        };
        self.queue
            .send(next)
            .map_err(|_| std::io::Error::other("the runtime API server is gone"))
    }
}

/// The Runtime API's routes over the worker's shared state.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(not_found)
        .with_state(shared)
}

async fn next(State(s): State<Arc<Shared>>) -> Response {
    if !s.ready.swap(true, Ordering::AcqRel) {
        let _ = s.worker.cast(WorkerMsg::Frame(FromWorker::Ready {}));
    }
    let mut queue = s.queue.lock().await;
    if lock(&s.ids).running.is_some() {
        return lambda_error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "the invocation handed out last has not been answered",
        );
    }
    // Cancel-safe: a worker that hangs up while waiting takes nothing with it.
    let Some(call) = queue.recv().await else {
        let error = LambdaError::service_exception("the worker is stopping");
        return lambda_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error.error_type,
            &error.error_message,
        );
    };
    lock(&s.ids).running = Some(call.id.clone());
    let mut headers = HeaderMap::with_capacity(5);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(FUNCTION_ARN, s.arn.clone());
    headers.insert(DEADLINE_MS, HeaderValue::from(now_ms() + s.timeout_ms));
    if let Ok(trace) = HeaderValue::from_str(&trace_id(&call.id)) {
        headers.insert(TRACE_ID, trace);
    }
    if let Ok(id) = HeaderValue::from_str(&call.id) {
        headers.insert(REQUEST_ID, id);
    }
    (headers, call.payload).into_response()
}

async fn response(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Body) -> Response {
    if let Err(refused) = s.check(&id) {
        return refused.into_response();
    }
    let payload = match s.read(body).await {
        Ok(payload) => payload,
        Err(refused) => {
            // As in Lambda, the invocation fails rather than waiting out its timeout.
            let error = LambdaError::response_too_large(format!(
                "Response payload size exceeded maximum allowed payload size ({} bytes).",
                s.max_body
            ));
            let _ = s.answer(
                &id,
                FromWorker::Error(InvocationError {
                    id: id.clone(),
                    error_type: error.error_type,
                    error_message: error.error_message,
                    stack_trace: Vec::new(),
                }),
            );
            return refused.into_response();
        }
    };
    let answered = s.answer(
        &id,
        FromWorker::Response {
            id: id.clone(),
            payload: payload.into(),
        },
    );
    answered.map_or_else(IntoResponse::into_response, |()| accepted())
}

async fn error(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refused) = s.check(&id) {
        return refused.into_response();
    }
    let (body, refused) = match s.read(body).await {
        Ok(body) => (body, None),
        Err(refused) => (Bytes::new(), Some(refused)),
    };
    let fields = error_fields(&headers, &body);
    let answered = s.answer(
        &id,
        FromWorker::Error(InvocationError {
            id: id.clone(),
            error_type: fields.error_type,
            error_message: fields.error_message,
            stack_trace: fields.stack_trace,
        }),
    );
    match (answered, refused) {
        (Err(refused), _) | (Ok(()), Some(refused)) => refused.into_response(),
        (Ok(()), None) => accepted(),
    }
}

async fn init_error(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if s.ready.swap(true, Ordering::AcqRel) {
        return lambda_error(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "init/error after the runtime asked for an invocation",
        );
    }
    let (body, refused) = match s.read(body).await {
        Ok(body) => (body, None),
        Err(refused) => (Bytes::new(), Some(refused)),
    };
    let fields = error_fields(&headers, &body);
    let _ = s
        .worker
        .cast(WorkerMsg::Frame(FromWorker::InitError(fields)));
    refused.map_or_else(accepted, IntoResponse::into_response)
}

async fn not_found() -> Response {
    lambda_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such Runtime API resource",
    )
}

impl Shared {
    /// Whether `id` is the invocation the worker holds (checked before its body is
    /// read, and again when it is answered).
    fn check(&self, id: &str) -> Result<(), Refused> {
        check(&lock(&self.ids), id)
    }

    /// Records the answer and hands it to the WorkerActor; of two racing posts for one
    /// invocation, the second is refused here.
    fn answer(&self, id: &str, frame: FromWorker) -> Result<(), Refused> {
        {
            let mut ids = lock(&self.ids);
            check(&ids, id)?;
            ids.answered = ids.running.take();
        }
        let _ = self.worker.cast(WorkerMsg::Frame(frame));
        Ok(())
    }

    /// The body, refused with 413 past `max_body` (read no further than that).
    async fn read(&self, body: Body) -> Result<Bytes, Refused> {
        axum::body::to_bytes(body, self.max_body)
            .await
            .map_err(|_| {
                Refused::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    format!(
                        "Exceeded maximum allowed payload size ({} bytes).",
                        self.max_body
                    ),
                )
            })
    }
}

fn check(ids: &Ids, id: &str) -> Result<(), Refused> {
    if ids.running.as_deref() == Some(id) {
        Ok(())
    } else if ids.answered.as_deref() == Some(id) {
        Err(Refused::new(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "this invocation has been answered already",
        ))
    } else {
        Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID",
        ))
    }
}

/// Lambda's reading of an error report: the type from the header when present, else
/// the body's `errorType`, else `Unhandled` (the official Python and Node.js clients
/// send no header).
pub(crate) fn error_fields(headers: &HeaderMap, body: &[u8]) -> ErrorFields {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let error_type = headers
        .get(ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or_else(|| field("errorType"))
        .unwrap_or_else(|| "Unhandled".into());
    let error_message = field("errorMessage").unwrap_or_else(|| {
        let text = &body[..body.len().min(MAX_ERROR_TEXT)];
        String::from_utf8_lossy(text).into_owned()
    });
    let stack_trace = json
        .as_ref()
        .and_then(|j| j.get("stackTrace"))
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ErrorFields {
        error_type,
        error_message,
        stack_trace,
    }
}

/// An X-Ray style trace header made from the request id (natsfn does no tracing, but
/// runtime clients expect the header and pass it on as `_X_AMZN_TRACE_ID`).
fn trace_id(request_id: &str) -> String {
    let hex: String = request_id.chars().filter(char::is_ascii_hexdigit).collect();
    let root = &hex[..hex.len().min(24)];
    let parent = &hex[hex.len().saturating_sub(16)..];
    format!(
        "Root=1-{:08x}-{root};Parent={parent};Sampled=0",
        now_ms() / 1000
    )
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn lambda_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A request refused, answered as Lambda answers it.
struct Refused {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            error_type,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        lambda_error(self.status, self.error_type, &self.message)
    }
}

/// The ids are plain data: a handler that panicked holding the lock left them whole.
fn lock(ids: &Mutex<Ids>) -> std::sync::MutexGuard<'_, Ids> {
    ids.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod tests;
