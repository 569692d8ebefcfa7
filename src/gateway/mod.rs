//! `--http ADDR`: the HTTP gateway that speaks Lambda. Function URLs (`ANY /{function}`,
//! `ANY /{function}/{*path}`) and the Invoke API (`POST /2015-03-31/functions/{name}/invocations`)
//! become requests on `natsfn.invoke.<function>`: the gateway is a plain NATS client and
//! needs no local function.
//!
//! Every client costs a bounded amount: its connections and their heads are bounded in
//! `accept`, its bodies by `BODY_READ_TIMEOUT` and the server's `max_payload`.
//! `--http-auth` (`sigv4`) and a binding's `url` (`urls`, `cors`) decide who may call;
//! `--http-tls-cert/--http-tls-key` (`tls`) serve it all over TLS.

mod accept;
mod cors;
mod invoke_api;
mod sigv4;
mod tls;
mod url_event;
mod urls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::kv::Store;
use async_nats::{HeaderMap, Request, RequestErrorKind};
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use http_body_util::BodyExt;
use natsfn_protocol::names::{
    invoke_subject, qualified_invoke_subject, HEADER_DEADLINE_MS, HEADER_EXECUTED_VERSION,
    HEADER_REQUEST_ID, HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE,
};

/// Time a client has to send a request's whole body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long, and how much of, a refused body is still read before its connection closes.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 << 20;
/// What the NATS headers of a request (its request id) may take of `max_payload`.
const HEADERS_ROOM: usize = 256;
/// How long the gateway waits for a function: Lambda's longest timeout (15 min) and a
/// little more, so that the node's own 504 arrives first.
const INVOKE_WAIT: Duration = Duration::from_secs(15 * 60 + 5);

/// What every request handler shares: immutable after start-up.
#[derive(Clone)]
struct Gateway {
    client: async_nats::Client,
    /// `natsfn-bindings`: whether a function exists, for `Event` and `DryRun` invocations
    /// (which get no reply to tell).
    bindings: Store,
    /// The largest event a request may carry: the server's `max_payload` less room for
    /// the request's headers.
    max_event: usize,
    /// `--http-auth`: the keys whose signatures are accepted; `None`: the Invoke API is
    /// open and function URLs with `url.auth` `AWS_IAM` refuse every request.
    auth: Option<Arc<sigv4::Keys>>,
    /// Each function's `url` settings.
    urls: urls::Urls,
}

/// The peer of a connection (the function URL event's `sourceIp`) and whether it
/// came over TLS (its `x-forwarded-proto`).
#[derive(Clone, Copy)]
struct Peer {
    addr: SocketAddr,
    tls: bool,
}

/// Binds `addr` (failing at start-up if it is taken, or if the `--http-auth` file or
/// the TLS certificate and key cannot be used) and serves until the returned task is
/// aborted.
pub async fn serve(
    addr: SocketAddr,
    client: async_nats::Client,
    auth: Option<&Path>,
    tls: Option<(&Path, &Path)>,
) -> anyhow::Result<tokio::task::AbortHandle> {
    let auth = auth.map(sigv4::Keys::load).transpose()?.map(Arc::new);
    let tls = tls
        .map(|(cert, key)| tls::acceptor(cert, key))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| {
            format!("cannot serve the HTTP gateway on {addr} (--http ADDR to move it; under natsfn dev, --no-http to turn it off)")
        })?;
    let js = async_nats::jetstream::new(client.clone());
    let bindings = natsfn_actors::buckets::bindings(&js).await?;
    let (urls, follow) = urls::Urls::follow(bindings.clone()).await;
    let gateway = Gateway {
        max_event: client
            .server_info()
            .max_payload
            .saturating_sub(HEADERS_ROOM),
        client,
        bindings,
        auth,
        urls,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let signed = if gateway.auth.is_some() {
        "signed requests only (--http-auth)"
    } else {
        "no --http-auth: the Invoke API is open, function URLs with url.auth AWS_IAM refuse every request"
    };
    let app = router(gateway);
    tracing::info!(%addr, "serving the HTTP gateway on {scheme}://{addr} (function URLs and the Lambda Invoke API; {signed})");
    let task = tokio::spawn(async move {
        // The bindings watch lives as long as the gateway.
        let _follow = tokio_util::task::AbortOnDropHandle::new(follow);
        accept::accept(listener, app, tls).await
    });
    Ok(task.abort_handle())
}

fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/_natsfn/health", get(|| async { "ok\n" }))
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke_api::invoke),
        )
        .route("/{function}", any(url_event::invoke))
        .route("/{function}/", any(url_event::invoke))
        .route("/{function}/{*path}", any(url_event::invoke))
        // The handlers bound the body themselves (a 413 at once, from Content-Length).
        .layer(DefaultBodyLimit::disable())
        .with_state(gateway)
}

/// Why a request's body could not be read.
enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}

/// Reads a request's body: refused at once if its Content-Length is over `limit`,
/// stopped as soon as it grows past it, and given `BODY_READ_TIMEOUT` in all.
async fn read_body(
    headers: &axum::http::HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        linger(body);
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(|_| BodyError::Broken)?.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
        Ok(Bytes::from(buf))
    };
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, read).await;
    match read {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Err(BodyError::TooLarge)) => {
            linger(body);
            Err(BodyError::TooLarge)
        }
        Ok(result) => result,
    }
}

/// Reads and drops what is left of a refused body for a little while (`LINGER_TIME`,
/// `LINGER_BYTES`), as nginx's lingering close does: a client still sending when the
/// 413 went out then reads it, instead of a connection reset that would lose it.
fn linger(mut body: Body) {
    tokio::spawn(async move {
        let drain = async {
            let mut drained = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                drained += frame.data_ref().map_or(0, |d| d.len());
                if drained > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    });
}

/// How one request to a function ended, as the NATS reply (or its absence) said.
enum Outcome {
    Success {
        payload: Bytes,
        request_id: String,
        /// The reply's `Natsfn-Executed-Version`, if it has one.
        executed_version: Option<String>,
    },
    /// An error reply: its `Nats-Service-Error-Code`, Lambda's error JSON and the
    /// one-line message.
    Error {
        code: u16,
        payload: Bytes,
        message: String,
        request_id: String,
        executed_version: Option<String>,
    },
    /// The function is served but has no such version or alias: the node's 503 with
    /// errorType `ResourceNotFoundException`.
    QualifierNotFound { message: String },
    /// Nobody serves the function: it is not bound (or no node runs).
    NoResponders,
    /// No reply within `INVOKE_WAIT`.
    TimedOut,
    /// NATS itself failed (disconnected, or the request was refused).
    Unavailable(String),
}

/// Sends the event on the function's canonical subject (or its qualifier's) with the
/// request id the gateway chose and the deadline of its own wait (a node drops the
/// invocation if it is still queued then), and waits for the reply.
async fn request(
    gateway: &Gateway,
    function: &str,
    qualifier: Option<&str>,
    request_id: &str,
    event: Bytes,
) -> Outcome {
    let subject = match qualifier {
        Some(q) => qualified_invoke_subject(function, q),
        None => invoke_subject(function),
    };
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REQUEST_ID, request_id);
    headers.insert(
        HEADER_DEADLINE_MS,
        crate::invoke::deadline_after(INVOKE_WAIT).as_str(),
    );
    let request = Request::new()
        .headers(headers)
        .payload(event)
        .timeout(Some(INVOKE_WAIT));
    let reply = match gateway.client.send_request(subject, request).await {
        Ok(reply) => reply,
        Err(e) if e.kind() == RequestErrorKind::NoResponders => return Outcome::NoResponders,
        Err(e) if e.kind() == RequestErrorKind::TimedOut => return Outcome::TimedOut,
        Err(e) => return Outcome::Unavailable(e.to_string()),
    };
    let text = |name: &str| {
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let request_id = text(HEADER_REQUEST_ID).unwrap_or_else(|| request_id.to_owned());
    let executed_version = text(HEADER_EXECUTED_VERSION);
    let Some(code) = text(HEADER_SERVICE_ERROR_CODE) else {
        return Outcome::Success {
            payload: reply.payload,
            request_id,
            executed_version,
        };
    };
    // An unreadable code is still an error, and the worker's fault.
    let code = code.trim().parse().unwrap_or(502);
    let message = text(HEADER_SERVICE_ERROR).unwrap_or_default();
    if code == 503 && is_not_found(&reply.payload) {
        return Outcome::QualifierNotFound { message };
    }
    Outcome::Error {
        code,
        message,
        payload: reply.payload,
        request_id,
        executed_version,
    }
}

/// Whether an error reply's body is Lambda's `ResourceNotFoundException` (what a node
/// answers for a version or alias it does not know).
fn is_not_found(payload: &[u8]) -> bool {
    let not_found = natsfn_protocol::LambdaError::resource_not_found("").error_type;
    serde_json::from_slice::<serde_json::Value>(payload)
        .is_ok_and(|body| body["errorType"].as_str() == Some(not_found.as_str()))
}

/// A plain-text response (the gateway's own answers).
fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
