//! WorkerActor: owns one runtime process and the private channel to it. Runs the
//! invocations its FunctionActor hands it one at a time (the next may already wait in
//! the channel), enforces `timeout_ms` and `memory_mb`, answers the callers, and turns
//! the process's output into log lines of the running invocation. It never waits on
//! the process: frames go out through its writer (writer.rs: gathered per turn of the
//! mailbox, a task only for what a full socket does not take), and everything the
//! process says comes in as messages.

mod channel;
mod memory;
mod process;
mod report;
mod runtime_api;
mod watchdog;
mod writer;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Subject;
use bytes::Bytes;
use natsfn_protocol::names::LOG_STREAM_PLATFORM;
use natsfn_protocol::{ErrorCode, FromWorker, Invoke, LambdaError};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;

use crate::context::NodeContext;
use crate::function::{EndpointId, Finished, FunctionMsg, Outcome};
use crate::invocation::{now_ms, Invocation};
use crate::launch::LaunchPlan;
use channel::{spawn_reader, OutputStream};
use memory::MemoryWatch;
use process::{ProcessGroup, Reaped};
use report::{LogFraming, Ran};
use runtime_api::RuntimeApi;
use watchdog::Watchdog;
use writer::{InvokeWriter, SendError};

/// Lambda's init phase limit.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the process or its channel is gone, how long to wait for the other half of
/// the news (the last frames, or the exit status) before giving up on it.
const EXIT_SETTLE: Duration = Duration::from_secs(2);

pub(crate) struct WorkerActor;

pub(crate) struct WorkerArgs {
    pub(crate) ctx: NodeContext,
    pub(crate) function: Arc<str>,
    pub(crate) plan: Arc<LaunchPlan>,
    pub(crate) timeout: Duration,
    pub(crate) memory_mb: u32,
    pub(crate) arn: Arc<str>,
    pub(crate) logs_subject: Subject,
    pub(crate) parent: ActorRef<FunctionMsg>,
    /// One of the node's `--max-workers` slots, held until the worker stops.
    pub(crate) slot: Option<OwnedSemaphorePermit>,
}

pub(crate) enum WorkerMsg {
    /// Run this invocation after those already handed over.
    Invoke { invocation: Invocation, cold: bool },
    /// Write the invocations handed over since the last flush: cast after the first of
    /// them, so it comes after every Invoke already in the mailbox.
    Flush,
    /// A frame arrived on the channel.
    Frame(FromWorker),
    /// A line the process printed.
    Output { stream: OutputStream, line: String },
    /// The process wrote something that is not a frame.
    ProtocolViolation(String),
    /// The channel reached end-of-file.
    ChannelClosed,
    /// The channel could not be written to.
    WriteFailed(String),
    /// The process tree's resident memory (bytes) went past `memory_mb`.
    OutOfMemory(u64),
    /// The process exited (with this description of its status).
    ProcessExited(String),
    /// The invocation with this sequence number ran past `timeout_ms`.
    TimedOut(u64),
    /// The handler did not become ready within the init limit.
    InitTimedOut,
    /// The process is gone and the last of its news has had time to arrive.
    Settle,
}

pub(crate) struct WorkerState {
    id: ActorId,
    args: WorkerArgs,
    group: Option<ProcessGroup>,
    /// Done once the process has been waited for.
    reaped: Reaped,
    writer: InvokeWriter,
    phase: Phase,
    /// Invocations written to the channel, the running one first; the others wait in
    /// the channel and start the moment the one before them answers.
    in_flight: VecDeque<InFlight>,
    /// Request id that output lines are attributed to: the running invocation's, or
    /// the last one's for lines that trail its result.
    log_request_id: Option<String>,
    /// START/END/REPORT of the invocations (report.rs).
    framing: LogFraming,
    invocations: u64,
    init_timer: Option<AbortHandle>,
    watchdog: Watchdog,
    _memory: MemoryWatch,
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
    /// Kept whole until it finishes: one that never started goes back to the queue.
    invocation: Invocation,
    cold: bool,
    seq: u64,
    started: Option<Instant>,
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
        let version = args
            .plan
            .env
            .iter()
            .find(|(k, _)| k == "AWS_LAMBDA_FUNCTION_VERSION")
            .map_or("", |(_, v)| v.as_str());
        let log_stream = format!(
            "{}/[{version}]{}",
            time::OffsetDateTime::now_utc().date(),
            myself.get_id()
        );
        let api = match args.plan.runtime_api {
            true => Some(
                RuntimeApi::start(
                    myself.clone(),
                    &args.arn,
                    args.timeout,
                    args.ctx.max_payload,
                )
                .await?,
            ),
            false => None,
        };
        let proc = process::spawn(&args.plan, &log_stream, api.as_ref().map(RuntimeApi::addr))?;
        let (reader, writer) = InvokeWriter::new(api, proc.channel, &myself)?;
        // Without a channel, the exit status is the whole news of an exit.
        let exit = ExitNews {
            channel_closed: reader.is_none(),
            ..ExitNews::default()
        };
        let framing = LogFraming::new(version, args.memory_mb, proc.pid);
        spawn_reader(myself.clone(), reader, proc.stdout, proc.stderr);
        let mut child = proc.child;
        let memory = MemoryWatch::spawn(
            proc.pid,
            u64::from(args.memory_mb) * 1024 * 1024,
            myself.clone(),
        );
        let me = myself.clone();
        let reaped = tokio::spawn(async move {
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
            reaped,
            writer,
            phase: Phase::Starting,
            in_flight: VecDeque::new(),
            log_request_id: None,
            framing,
            invocations: 0,
            init_timer: Some(init_timer),
            watchdog: Watchdog::spawn(myself.clone()),
            _memory: memory,
            exit,
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
            WorkerMsg::Flush => {
                if let Err(e) = state.writer.flush() {
                    state.write_failed(&myself, e).await;
                }
            }
            WorkerMsg::Frame(frame) => state.on_frame(&myself, frame).await,
            WorkerMsg::Output { stream, line } => state.on_output(stream, line).await,
            WorkerMsg::ProtocolViolation(why) => {
                let why = format!("the worker answered garbage: {why}");
                state
                    .fail(&myself, why, LambdaError::invalid_response)
                    .await
            }
            WorkerMsg::WriteFailed(why) => state.write_failed(&myself, why).await,
            WorkerMsg::OutOfMemory(rss) => state.out_of_memory(&myself, rss).await,
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
                    let error = LambdaError::timed_out(format!(
                        "Init phase did not finish within {} seconds",
                        INIT_TIMEOUT.as_secs()
                    ));
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
        // Stopped with invocations in hand only when the node shuts down: say so, do
        // not go silent.
        let error = LambdaError::service_exception("the node stopped this worker");
        for call in state.in_flight.drain(..) {
            call.invocation
                .caller
                .fail(&state.args.ctx, ErrorCode::Unavailable, &error)
                .await;
        }
        // The slot is free for another worker at once (an evicted one's replacement
        // need not wait out this one's grace period). A retired worker gets SIGTERM
        // and a grace period, then SIGKILL; either way the actor stops only once the
        // process has been reaped.
        drop(state.args.slot.take());
        if let Some(group) = state.group.take() {
            group.terminate(&mut state.reaped).await;
        }
        Ok(())
    }
}

/// One of `LambdaError`'s named constructors of a platform error type.
type PlatformError = fn(String) -> LambdaError;

fn failed(code: ErrorCode, error: &LambdaError) -> Outcome {
    Outcome::Failed(code, error.to_string())
}

impl WorkerState {
    async fn invoke(&mut self, myself: &ActorRef<WorkerMsg>, invocation: Invocation, cold: bool) {
        if self.phase != Phase::Ready {
            // The FunctionActor's view was stale (this worker just failed): hand the
            // invocation back rather than lose it.
            let _ = self
                .args
                .parent
                .cast(FunctionMsg::Requeue(vec![invocation]));
            return;
        }
        self.invocations += 1;
        let seq = self.invocations;
        let invoke = Invoke {
            id: &invocation.caller.request_id,
            deadline_ms: now_ms() + self.args.timeout.as_millis() as u64,
            timeout_ms: self.args.timeout.as_millis() as u64,
            invoked_function_arn: &self.args.arn,
            payload: &invocation.payload,
        };
        let sent = self.writer.send(invoke, &invocation.payload);
        if let Err(SendError::TooLarge(e)) = sent {
            let error = LambdaError::request_too_large(e.to_string());
            let since_received = invocation.received.elapsed();
            let endpoint = invocation.endpoint;
            invocation
                .caller
                .fail(&self.args.ctx, ErrorCode::PayloadTooLarge, &error)
                .await;
            self.report_finished(
                endpoint,
                failed(ErrorCode::PayloadTooLarge, &error),
                None,
                since_received,
            );
            return;
        }
        self.in_flight.push_back(InFlight {
            invocation,
            cold,
            seq,
            started: None,
        });
        if self.in_flight.len() == 1 {
            self.start_next();
        }
        if let Ok(true) = sent {
            let _ = myself.cast(WorkerMsg::Flush);
        }
        if let Err(SendError::Io(e)) = sent {
            self.write_failed(myself, e).await;
        }
    }

    async fn write_failed(&mut self, myself: &ActorRef<WorkerMsg>, why: impl std::fmt::Display) {
        let why = format!("cannot write to the worker: {why}");
        self.fail(myself, why, LambdaError::exit_error).await;
    }

    /// The invocation at the front has the process now: its time starts.
    fn start_next(&mut self) {
        let Some(next) = self.in_flight.front_mut() else {
            return;
        };
        let now = Instant::now();
        next.started = Some(now);
        self.watchdog.arm(next.seq, now + self.args.timeout);
        self.log_request_id = Some(next.invocation.caller.request_id.clone());
        self.framing.started();
    }

    async fn on_frame(&mut self, myself: &ActorRef<WorkerMsg>, frame: FromWorker) {
        let (id, outcome) = match (self.phase, frame) {
            (Phase::Starting, FromWorker::Ready {}) => {
                if let Some(t) = self.init_timer.take() {
                    t.abort();
                }
                self.phase = Phase::Ready;
                self.framing.ready();
                let _ = self.args.parent.cast(FunctionMsg::WorkerReady(self.id));
                return;
            }
            (Phase::Starting, FromWorker::InitError(e)) => {
                return self.init_failed(myself, e.into())
            }
            (Phase::Ready, FromWorker::Response { id, payload }) => (id, Ok(Bytes::from(payload))),
            (Phase::Ready, FromWorker::Error(e)) => {
                (e.id.clone(), Err((ErrorCode::FunctionError, e.into())))
            }
            // The event itself was unusable.
            (Phase::Ready, FromWorker::RequestError(e)) => {
                (e.id.clone(), Err((ErrorCode::BadRequest, e.into())))
            }
            (Phase::Done, _) => return,
            (_, other) => {
                let why = format!("unexpected frame {other:?}");
                return self.fail(myself, why, LambdaError::invalid_response).await;
            }
        };
        let running = self
            .in_flight
            .front()
            .map(|c| c.invocation.caller.request_id.as_str());
        if running != Some(id.as_str()) {
            let why = format!("an answer for request {id:?}, which is not the one running");
            return self.fail(myself, why, LambdaError::invalid_response).await;
        }
        let Some(call) = self.in_flight.pop_front() else {
            return;
        };
        let took = call.started.map_or(Duration::ZERO, |t| t.elapsed());
        let with_start = self.framing.take_start();
        self.start_next();
        let since_received = call.invocation.received.elapsed();
        let endpoint = call.invocation.endpoint;
        let caller = call.invocation.caller;
        let outcome = match outcome {
            Ok(payload) => match caller.succeed(&self.args.ctx, payload, call.cold).await {
                Ok(()) => Outcome::Success,
                Err((code, error)) => failed(code, &error),
            },
            Err((code, error)) => {
                caller.fail(&self.args.ctx, code, &error).await;
                failed(code, &error)
            }
        };
        // Logged after the reply, which is what the caller waits for.
        let ran = Ran {
            duration: took,
            cold: call.cold,
        };
        let record = self.framing.finished(&id, with_start, ran);
        self.publish_log(&id, LOG_STREAM_PLATFORM, record.into());
        self.report_finished(endpoint, outcome, Some(took), since_received);
    }

    async fn on_output(&mut self, stream: OutputStream, line: String) {
        let request_id = self.log_request_id.as_deref().unwrap_or("");
        if let Some(start) = self.framing.start_due(request_id) {
            self.publish_log(request_id, LOG_STREAM_PLATFORM, start.into());
        }
        tracing::info!(
            target: "natsfn::function",
            function = %self.args.function,
            request_id,
            stream = stream.as_str(),
            "{line}"
        );
        self.publish_log(request_id, stream.as_str(), line.into());
    }

    /// A record on `natsfn.logs.<function>`, kept by the NATSFN_LOGS stream; handed to
    /// the node's log shipper, never waited for.
    fn publish_log(&self, request_id: &str, stream: &'static str, record: Bytes) {
        self.args
            .ctx
            .logs
            .send(&self.args.logs_subject, request_id, stream, record);
    }

    async fn on_timeout(&mut self, myself: &ActorRef<WorkerMsg>, seq: u64) {
        if self.phase == Phase::Done || self.in_flight.front().is_none_or(|c| c.seq != seq) {
            return;
        }
        self.kill();
        let secs = self.args.timeout.as_secs_f64();
        let why = format!("Task timed out after {secs:.2} seconds");
        self.end(myself, ErrorCode::TimedOut, LambdaError::timed_out, why)
            .await;
    }

    async fn out_of_memory(&mut self, myself: &ActorRef<WorkerMsg>, rss: u64) {
        if self.phase == Phase::Done {
            return;
        }
        self.kill();
        let why = format!(
            "Runtime exited with error: memory limit exceeded ({} MB resident, memory_mb {})",
            rss / (1024 * 1024),
            self.args.memory_mb
        );
        if self.phase == Phase::Starting {
            self.init_failed(myself, LambdaError::out_of_memory(why));
        } else {
            self.end(
                myself,
                ErrorCode::WorkerFailed,
                LambdaError::out_of_memory,
                why,
            )
            .await;
        }
    }

    /// The process said something it should not have: it cannot be trusted further.
    async fn fail(&mut self, myself: &ActorRef<WorkerMsg>, why: String, error: PlatformError) {
        if self.phase == Phase::Done {
            return;
        }
        self.kill();
        if self.phase == Phase::Starting {
            self.init_failed(myself, error(why));
        } else {
            self.end(myself, ErrorCode::WorkerFailed, error, why).await;
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
        if self.phase == Phase::Starting {
            self.init_failed(myself, LambdaError::exit_error(why));
        } else {
            self.end(
                myself,
                ErrorCode::WorkerFailed,
                LambdaError::exit_error,
                why,
            )
            .await;
        }
    }

    /// The worker is finished: the running invocation gets `code`, the ones waiting
    /// behind it go back to the FunctionActor's queue (they never started).
    async fn end(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        code: ErrorCode,
        error: PlatformError,
        why: String,
    ) {
        self.phase = Phase::Done;
        // The pool hears of the exit before the running invocation's end, so it never
        // hands this worker another invocation.
        let _ = self.args.parent.cast(FunctionMsg::WorkerExited {
            worker: self.id,
            reason: why.clone(),
        });
        let mut waiting = std::mem::take(&mut self.in_flight).into_iter();
        if let Some(running) = waiting.next() {
            let since_received = running.invocation.received.elapsed();
            let endpoint = running.invocation.endpoint;
            let caller = running.invocation.caller;
            let message = format!("RequestId: {} Error: {why}", caller.request_id);
            let error = error(message);
            let ran = Ran {
                duration: running.started.map_or(Duration::ZERO, |t| t.elapsed()),
                cold: running.cold,
            };
            let with_start = self.framing.take_start();
            let record = self.framing.finished(&caller.request_id, with_start, ran);
            let request_id = caller.request_id.clone();
            caller.fail(&self.args.ctx, code, &error).await;
            self.publish_log(&request_id, LOG_STREAM_PLATFORM, record.into());
            self.report_finished(endpoint, failed(code, &error), None, since_received);
        }
        let waiting: Vec<Invocation> = waiting.map(|c| c.invocation).collect();
        if !waiting.is_empty() {
            let _ = self.args.parent.cast(FunctionMsg::Requeue(waiting));
        }
        myself.stop(None);
    }

    fn init_failed(&mut self, myself: &ActorRef<WorkerMsg>, error: LambdaError) {
        self.kill();
        self.phase = Phase::Done;
        let _ = self.args.parent.cast(FunctionMsg::WorkerInitFailed {
            worker: self.id,
            error,
        });
        myself.stop(None);
    }

    fn report_finished(
        &self,
        endpoint: EndpointId,
        outcome: Outcome,
        ran: Option<Duration>,
        since_received: Duration,
    ) {
        let _ = self
            .args
            .parent
            .cast(FunctionMsg::InvocationFinished(Finished {
                worker: self.id,
                endpoint,
                outcome,
                ran,
                since_received,
            }));
    }

    fn kill(&mut self) {
        if let Some(group) = &self.group {
            group.kill();
        }
    }
}
