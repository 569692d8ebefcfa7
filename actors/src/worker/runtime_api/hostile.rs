//! Issue 21 §3: whatever a `provided` worker's runtime sends its Runtime API (any
//! method, path and request id, error headers and bodies, bodies past the limit), in
//! every state of the invocation, 100,000 seeded cases through the real router: a 200
//! or 202 where the request is right, else a coded 4xx/5xx with a body (axum's own 405
//! aside, which has none and names the methods in `Allow`, and any answer to a HEAD);
//! never a panic or a hang.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use proptest::prelude::*;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tower::ServiceExt;

use super::*;
use crate::hostile::{header_text, runner, CASES};

/// The WorkerActor's stand-in: takes the frames and drops them.
struct Sink;

impl Actor for Sink {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<WorkerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

const RUNNING: &str = "0f8e6b7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
const ANSWERED: &str = "11111111-2222-4333-8444-555555555555";
/// Small, so that bodies past it are cheap to make.
const MAX_BODY: usize = 1024;

#[derive(Debug, Clone)]
struct State {
    running: bool,
    answered: bool,
    ready: bool,
    queued: bool,
}

#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    error_type: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// A path segment: every byte that is not plainly safe percent-encoded (so any bytes,
/// invalid UTF-8 too, reach the router).
fn encoded(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn request_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(RUNNING.to_owned()),
        2 => Just(ANSWERED.to_owned()),
        1 => Just(format!("{RUNNING}x")),
        1 => Just(String::new()),
        2 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| encoded(&b)),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let base = "/2018-06-01/runtime";
    prop_oneof![
        2 => Just(format!("{base}/invocation/next")),
        4 => request_id().prop_map(move |id| format!("{base}/invocation/{id}/response")),
        4 => request_id().prop_map(move |id| format!("{base}/invocation/{id}/error")),
        2 => Just(format!("{base}/init/error")),
        1 => request_id().prop_map(move |id| format!("{base}/invocation/{id}/{id}/error")),
        1 => proptest::collection::vec(any::<u8>(), 0..30)
            .prop_map(move |b| format!("{base}/{}", encoded(&b))),
        1 => proptest::collection::vec(any::<u8>(), 0..30).prop_map(|b| format!("/{}", encoded(&b))),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        8 => Just(Method::POST),
        4 => Just(Method::GET),
        1 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::HEAD),
        1 => "[A-Z]{1,8}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let json_text = || prop_oneof![header_text(20).prop_map(Value::String), Just(Value::Null)];
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..64),
        3 => (json_text(), json_text(), proptest::collection::vec(json_text(), 0..3), any::<bool>())
            .prop_map(|(t, m, trace, array)| {
                let trace = if array { Value::Array(trace) } else { trace.into_iter().next().unwrap_or(Value::Null) };
                serde_json::json!({"errorType": t, "errorMessage": m, "stackTrace": trace})
                    .to_string()
                    .into_bytes()
            }),
        1 => (MAX_BODY - 2..MAX_BODY + 64).prop_map(|n| vec![b'x'; n]),
        1 => Just(Vec::new()),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    (
        method(),
        path(),
        proptest::option::of(prop_oneof![
            header_text(24).prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..24),
        ]),
        body(),
    )
        .prop_map(|(method, path, error_type, body)| Call {
            method,
            path,
            error_type,
            body,
        })
}

fn state() -> impl Strategy<Value = State> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(running, answered, ready, queued)| State {
            running,
            answered,
            ready,
            queued,
        },
    )
}

/// The server of one case, in `state`: no sender is left, so a `/next` with nothing
/// queued is answered at once (the worker is stopping) instead of waiting.
fn shared(worker: &ActorRef<WorkerMsg>, state: &State) -> Arc<Shared> {
    let (queue, receiver) = mpsc::unbounded_channel();
    if state.queued {
        let payload = Bytes::from_static(b"{\"event\":1}");
        let _ = queue.send(Next {
            id: "queued-1".into(),
            payload,
        });
    }
    Arc::new(Shared {
        worker: worker.clone(),
        queue: tokio::sync::Mutex::new(receiver),
        ids: Mutex::new(Ids {
            running: state.running.then(|| RUNNING.to_owned()),
            answered: state.answered.then(|| ANSWERED.to_owned()),
        }),
        ready: AtomicBool::new(state.ready),
        arn: HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:f"),
        timeout_ms: 3_000,
        max_body: MAX_BODY,
    })
}

#[test]
fn hostile_runtime_api_requests_get_a_coded_answer() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (worker, _handle) = runtime.block_on(Actor::spawn(None, Sink, ())).unwrap();
    // How many cases were accepted (200/202) and refused, so the test proves it reached
    // both sides of every handler.
    let counts = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    runner(CASES, b"natsfn runtime!!")
        .run(&(state(), call()), |(state, call)| {
            let shared = shared(&worker, &state);
            let mut request = Request::builder()
                .method(call.method.clone())
                .uri(&call.path);
            if let Some(t) = &call.error_type {
                if let Ok(value) = HeaderValue::from_bytes(t) {
                    request = request.header(ERROR_TYPE, value);
                }
            }
            let request = request.body(Body::from(call.body.clone())).unwrap();
            let answer = runtime.block_on(async {
                let response = tokio::time::timeout(
                    Duration::from_secs(5),
                    router(shared.clone()).oneshot(request),
                )
                .await
                .expect("an answer within 5 s")
                .unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (status, body)
            });
            let (status, body) = answer;
            *counts.borrow_mut().entry(status.as_u16()).or_default() += 1;
            match status {
                // A HEAD's answer is the GET's without its body.
                _ if call.method == Method::HEAD => prop_assert!(body.is_empty()),
                StatusCode::OK => {
                    prop_assert_eq!(&body[..], b"{\"event\":1}");
                    let running = lock(&shared.ids).running.clone();
                    prop_assert_eq!(running.as_deref(), Some("queued-1"));
                }
                StatusCode::ACCEPTED => {
                    prop_assert_eq!(&body[..], br#"{"status":"OK"}"#);
                    prop_assert!(
                        lock(&shared.ids).running.is_none() || call.path.ends_with("init/error")
                    );
                }
                StatusCode::METHOD_NOT_ALLOWED => {}
                s => {
                    prop_assert!(s.is_client_error() || s.is_server_error(), "{}", s);
                    prop_assert!(!body.is_empty(), "{} without a body", s);
                    if s != StatusCode::BAD_REQUEST
                        || serde_json::from_slice::<Value>(&body).is_ok()
                    {
                        let json: Value = serde_json::from_slice(&body)
                            .map_err(|e| TestCaseError::fail(format!("{s}: {e}: {body:?}")))?;
                        prop_assert!(json["errorType"].as_str().is_some_and(|t| !t.is_empty()));
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    let counts = counts.into_inner();
    eprintln!("answers by status: {counts:?}");
    for status in [200, 202, 400, 403, 404, 413, 500] {
        assert!(counts.contains_key(&status), "no {status}: {counts:?}");
    }
}
