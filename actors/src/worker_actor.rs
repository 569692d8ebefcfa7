//! WorkerActor: owns one runtime process and the private channel to it. Takes one
//! invocation at a time from its FunctionActor, enforces `timeout_ms`, answers the
//! caller, and turns the process's output into log lines of the current invocation.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, Subject};
use bytes::{Bytes, BytesMut};
use natsfn_protocol::names::{HEADER_LOG_STREAM, HEADER_REQUEST_ID};
use natsfn_protocol::{frame, ErrorCode, FromWorker, Invoke, LambdaError, ToWorker};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::task::AbortHandle;

use crate::channel::{spawn_reader, OutputStream};
use crate::context::NodeContext;
use crate::function_actor::FunctionMsg;
use crate::invocation::{now_ms, Caller, Invocation};
use crate::launch::LaunchPlan;
use crate::process::{self, ProcessGroup};
use crate::watchdog::Watchdog;

/// Lambda's init phase limit.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the process or its channel is gone, how long to wait for the other half of
/// the news (the last frames, or the exit status) before giving up on it.
const EXIT_SETTLE: Duration = Duration::from_secs(2);

pub struct WorkerActor;

pub struct WorkerArgs {
    pub(crate) ctx: NodeContext,
    pub(crate) function: Arc<str>,
    pub(crate) plan: Arc<LaunchPlan>,
    pub(crate) timeout: Duration,
    pub(crate) arn: Arc<str>,
    pub(crate) logs_subject: Subject,
    pub(crate) parent: ActorRef<FunctionMsg>,
}

pub enum WorkerMsg {
    /// Run this invocation (the FunctionActor only sends one to an idle worker).
    Invoke { invocation: Invocation, cold: bool },
    /// A frame arrived on the channel.
    Frame(FromWorker),
    /// A line the process printed.
    Output { stream: OutputStream, line: String },
    /// The process wrote something that is not a frame.
    ProtocolViolation(String),
    /// The channel reached end-of-file.
    ChannelClosed,
    /// The process exited (with this description of its status).
    ProcessExited(String),
    /// The invocation with this sequence number ran past `timeout_ms`.
    TimedOut(u64),
    /// The handler did not become ready within the init limit.
    InitTimedOut,
    /// The process is gone and the last of its news has had time to arrive.
    Settle,
}

pub struct WorkerState {
    id: ActorId,
    args: WorkerArgs,
    group: Option<ProcessGroup>,
    writer: OwnedWriteHalf,
    frame_buf: BytesMut,
    phase: Phase,
    current: Option<InFlight>,
    /// Request id that output lines are attributed to: the current invocation's, or
    /// the last one's for lines that trail its result.
    log_request_id: Option<String>,
    invocations: u64,
    init_timer: Option<AbortHandle>,
    watchdog: Watchdog,
    exit: ExitNews,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    /// The worker reported its end to the FunctionActor and only waits to stop.
    Done,
}

struct InFlight {
    caller: Caller,
    cold: bool,
    seq: u64,
}

#[derive(Default)]
struct ExitNews {
    channel_closed: bool,
    status: Option<String>,
    settle_timer: bool,
}

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let log_stream = format!(
            "{}/[{}]{}",
            time::OffsetDateTime::now_utc().date(),
            args.plan
                .env
                .iter()
                .find(|(k, _)| k == "AWS_LAMBDA_FUNCTION_VERSION")
                .map_or("", |(_, v)| v.as_str()),
            myself.get_id()
        );
        let proc = process::spawn(&args.plan, &log_stream)?;
        let (reader, writer) = proc.channel.into_split();
        spawn_reader(myself.clone(), reader, proc.stdout, proc.stderr);
        let mut child = proc.child;
        let me = myself.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown status ({e})"),
            };
            let _ = me.cast(WorkerMsg::ProcessExited(status));
        });
        let init_timer = myself
            .send_after(INIT_TIMEOUT, || WorkerMsg::InitTimedOut)
            .abort_handle();
        tracing::debug!(function = %args.function, worker = %myself.get_id(), "worker process started");
        Ok(WorkerState {
            id: myself.get_id(),
            args,
            group: Some(proc.group),
            writer,
            frame_buf: BytesMut::with_capacity(4096),
            phase: Phase::Starting,
            current: None,
            log_request_id: None,
            invocations: 0,
            init_timer: Some(init_timer),
            watchdog: Watchdog::spawn(myself.clone()),
            exit: ExitNews::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Invoke { invocation, cold } => state.invoke(&myself, invocation, cold).await,
            WorkerMsg::Frame(frame) => state.on_frame(&myself, frame).await,
            WorkerMsg::Output { stream, line } => state.on_output(stream, line).await,
            WorkerMsg::ProtocolViolation(why) => {
                state
                    .fail(
                        &myself,
                        format!("the worker answered garbage: {why}"),
                        "Runtime.InvalidResponse",
                    )
                    .await
            }
            WorkerMsg::ChannelClosed => {
                state.exit.channel_closed = true;
                state.on_exit_news(&myself).await
            }
            WorkerMsg::ProcessExited(status) => {
                state.exit.status = Some(status);
                state.on_exit_news(&myself).await
            }
            WorkerMsg::TimedOut(seq) => state.on_timeout(&myself, seq).await,
            WorkerMsg::InitTimedOut => {
                if state.phase == Phase::Starting {
                    let error = LambdaError::new(
                        "Sandbox.Timedout",
                        format!(
                            "Init phase did not finish within {} seconds",
                            INIT_TIMEOUT.as_secs()
                        ),
                    );
                    state.init_failed(&myself, error);
                }
            }
            WorkerMsg::Settle => state.finish_exit(&myself).await,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped mid-invocation only when the node shuts down: say so, do not go silent.
        if let Some(call) = state.current.take() {
            let error = LambdaError::new("ServiceException", "the node stopped this worker");
            call.caller
                .fail(&state.args.ctx, ErrorCode::Unavailable, &error)
                .await;
        }
        // A retired worker gets SIGTERM and a grace period; one that already failed
        // is killed by the group's Drop.
        if let Some(group) = state.group.take() {
            group.terminate();
        }
        Ok(())
    }
}

impl WorkerState {
    async fn invoke(&mut self, myself: &ActorRef<WorkerMsg>, invocation: Invocation, cold: bool) {
        if self.phase != Phase::Ready || self.current.is_some() {
            // The FunctionActor's view was stale (this worker just failed): hand the
            // invocation back rather than lose it.
            let _ = self.args.parent.cast(FunctionMsg::Requeue(invocation));
            return;
        }
        self.invocations += 1;
        let seq = self.invocations;
        let deadline_ms = now_ms() + self.args.timeout.as_millis() as u64;
        let frame = ToWorker::Invoke(Invoke {
            id: &invocation.caller.request_id,
            deadline_ms,
            invoked_function_arn: &self.args.arn,
            payload: &invocation.payload,
        });
        self.frame_buf.clear();
        if let Err(e) = frame::encode(&frame, &mut self.frame_buf) {
            let error = LambdaError::new("Function.RequestTooLarge", e.to_string());
            invocation
                .caller
                .fail(&self.args.ctx, ErrorCode::PayloadTooLarge, &error)
                .await;
            self.report_finished(false);
            return;
        }
        self.watchdog
            .arm(seq, tokio::time::Instant::now() + self.args.timeout);
        self.log_request_id = Some(invocation.caller.request_id.clone());
        self.current = Some(InFlight {
            caller: invocation.caller,
            cold,
            seq,
        });
        if let Err(e) = self.writer.write_all(&self.frame_buf).await {
            self.fail(
                myself,
                format!("cannot write to the worker: {e}"),
                "Runtime.ExitError",
            )
            .await;
        }
    }

    async fn on_frame(&mut self, myself: &ActorRef<WorkerMsg>, frame: FromWorker) {
        match (self.phase, frame) {
            (Phase::Starting, FromWorker::Ready {}) => {
                if let Some(t) = self.init_timer.take() {
                    t.abort();
                }
                self.phase = Phase::Ready;
                let _ = self
                    .args
                    .parent
                    .cast(FunctionMsg::WorkerReady(myself.get_id()));
            }
            (Phase::Starting, FromWorker::InitError(e)) => self.init_failed(myself, e.into()),
            (Phase::Ready, FromWorker::Response { id, payload }) => {
                if let Some(call) = self.take_current(&id) {
                    call.caller
                        .succeed(&self.args.ctx, Bytes::from(payload), call.cold)
                        .await;
                    self.report_finished(true);
                } else {
                    self.fail(
                        myself,
                        format!("a response for request {id:?}, which is not in flight"),
                        "Runtime.InvalidResponse",
                    )
                    .await;
                }
            }
            (Phase::Ready, FromWorker::Error(e) | FromWorker::RequestError(e))
                if self
                    .current
                    .as_ref()
                    .is_some_and(|c| c.caller.request_id == e.id) =>
            {
                // Both kinds carry the same fields; RequestError means the event itself.
                let code = if e.error_type == "Runtime.UnmarshalError" {
                    ErrorCode::BadRequest
                } else {
                    ErrorCode::FunctionError
                };
                if let Some(call) = self.take_current(&e.id.clone()) {
                    call.caller.fail(&self.args.ctx, code, &e.into()).await;
                }
                self.report_finished(true);
            }
            (Phase::Done, _) => {}
            (_, other) => {
                self.fail(
                    myself,
                    format!("unexpected frame {other:?}"),
                    "Runtime.InvalidResponse",
                )
                .await
            }
        }
    }

    fn take_current(&mut self, id: &str) -> Option<InFlight> {
        if self.current.as_ref()?.caller.request_id != id {
            return None;
        }
        self.current.take()
    }

    async fn on_output(&self, stream: OutputStream, line: String) {
        let request_id = self.log_request_id.as_deref().unwrap_or("");
        tracing::info!(
            target: "natsfn::function",
            function = %self.args.function,
            request_id,
            stream = stream.as_str(),
            "{line}"
        );
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REQUEST_ID, request_id);
        headers.insert(HEADER_LOG_STREAM, stream.as_str());
        let _ = self
            .args
            .ctx
            .client
            .publish_with_headers(self.args.logs_subject.clone(), headers, line.into())
            .await;
    }

    async fn on_timeout(&mut self, myself: &ActorRef<WorkerMsg>, seq: u64) {
        let Some(call) = self.current.take_if(|c| c.seq == seq) else {
            return;
        };
        self.kill();
        let secs = self.args.timeout.as_secs_f64();
        let error = LambdaError::new(
            "Sandbox.Timedout",
            format!(
                "RequestId: {} Error: Task timed out after {secs:.2} seconds",
                call.caller.request_id
            ),
        );
        call.caller
            .fail(&self.args.ctx, ErrorCode::TimedOut, &error)
            .await;
        self.report_exit(myself, format!("timed out after {secs:.2} seconds"));
    }

    /// The process said something it should not have: it cannot be trusted further.
    async fn fail(&mut self, myself: &ActorRef<WorkerMsg>, why: String, error_type: &str) {
        if self.phase == Phase::Done {
            return;
        }
        self.kill();
        if let Some(call) = self.current.take() {
            let error = LambdaError::new(error_type, why.clone());
            call.caller
                .fail(&self.args.ctx, ErrorCode::WorkerFailed, &error)
                .await;
        }
        if self.phase == Phase::Starting {
            self.init_failed(myself, LambdaError::new(error_type, why));
        } else {
            self.report_exit(myself, why);
        }
    }

    /// The process or its channel is gone. Kill the rest of the group (so inherited
    /// pipes close too) and wait for the other half of the news before reporting, so
    /// an InitError written just before exiting is not mistaken for a crash.
    async fn on_exit_news(&mut self, myself: &ActorRef<WorkerMsg>) {
        if self.phase == Phase::Done {
            return;
        }
        self.kill();
        if self.exit.channel_closed && self.exit.status.is_some() {
            self.finish_exit(myself).await;
        } else if !self.exit.settle_timer {
            self.exit.settle_timer = true;
            myself.send_after(EXIT_SETTLE, || WorkerMsg::Settle);
        }
    }

    async fn finish_exit(&mut self, myself: &ActorRef<WorkerMsg>) {
        if self.phase == Phase::Done {
            return;
        }
        let status = self
            .exit
            .status
            .clone()
            .unwrap_or_else(|| "its channel closed".into());
        let why = format!("Runtime exited with error: {status}");
        if let Some(call) = self.current.take() {
            let error = LambdaError::new(
                "Runtime.ExitError",
                format!("RequestId: {} Error: {why}", call.caller.request_id),
            );
            call.caller
                .fail(&self.args.ctx, ErrorCode::WorkerFailed, &error)
                .await;
        }
        if self.phase == Phase::Starting {
            self.init_failed(myself, LambdaError::new("Runtime.ExitError", why));
        } else {
            self.report_exit(myself, why);
        }
    }

    fn init_failed(&mut self, myself: &ActorRef<WorkerMsg>, error: LambdaError) {
        self.kill();
        self.phase = Phase::Done;
        let _ = self.args.parent.cast(FunctionMsg::WorkerInitFailed {
            worker: myself.get_id(),
            error,
        });
        myself.stop(None);
    }

    fn report_exit(&mut self, myself: &ActorRef<WorkerMsg>, reason: String) {
        self.phase = Phase::Done;
        let _ = self.args.parent.cast(FunctionMsg::WorkerExited {
            worker: myself.get_id(),
            reason,
        });
        myself.stop(None);
    }

    fn report_finished(&self, completed: bool) {
        let _ = self.args.parent.cast(FunctionMsg::InvocationFinished {
            worker: self.id,
            completed,
        });
    }

    fn kill(&mut self) {
        if let Some(group) = &self.group {
            group.kill();
        }
    }
}
