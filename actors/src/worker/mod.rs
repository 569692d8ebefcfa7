//! WorkerActor: owns one runtime process and the private channel to it. Runs the
//! invocations its FunctionActor hands it one at a time (the next may already wait in
//! the channel), enforces `timeout_ms` and `memory_mb`, answers the callers, and turns
//! the process's output into log lines of the running invocation. It never waits on
//! the process: frames go out through its writer (writer.rs: gathered per turn of the
//! mailbox, a task only for what a full socket does not take), and everything the
//! process says comes in as messages.

mod channel;
mod credentials;
mod exit;
mod memory;
mod platform_log;
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
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, DerivedActorRef};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;

use crate::clock::now_ms;
use crate::context::NodeContext;
use crate::invocation::{EndpointId, Invocation};
use crate::launch::LaunchPlan;
use crate::sandbox::{StorageWatch, WorkerJail, WorkerSpec};
use channel::{spawn_reader, OutputStream};
use credentials::WorkerCredentials;
use memory::{MemoryWatch, PeakMemory};
use platform_log::{LogFraming, Ran};
use process::{ProcessGroup, Reaped};
pub(crate) use report::{Finished, Outcome, WorkerReport};
pub(crate) use runtime_api::error_fields as runtime_api_error_fields;
use runtime_api::{RuntimeApi, RuntimeApiListen};
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
    /// Where the worker reports (its FunctionActor, which converts the reports).
    pub(crate) parent: DerivedActorRef<WorkerReport>,
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
    /// The worker's `/tmp` holds more than `ephemeral_storage_mb` (bytes).
    OutOfStorage(u64),
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
    /// `None` where the kernel enforces `memory_mb` (the sandbox's memory cgroup).
    _memory: Option<MemoryWatch>,
    _storage: Option<StorageWatch>,
    exit: ExitNews,
    /// The worker's NATS credentials (binding field `nats`): removed when it stops.
    _credentials: Option<WorkerCredentials>,
    /// Its sandbox (`None` with `--isolation none`): its cgroups and `/tmp` go with it,
    /// after the process has been reaped.
    jail: Option<WorkerJail>,
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
        // As Lambda names an execution environment's: unique across nodes and restarts.
        let log_stream = format!(
            "{}/[{version}]{}",
            time::OffsetDateTime::now_utc().date(),
            uuid::Uuid::new_v4().simple()
        );
        let uid = args
            .ctx
            .sandbox
            .as_ref()
            .map(|_| crate::sandbox::function_uid(&args.function));
        // Minted per worker at its start, never per invocation.
        let credentials = match &args.plan.nats {
            Some(grant) => Some(WorkerCredentials::issue(grant, &args.function, uid)?),
            None => None,
        };
        let mut jail = match &args.ctx.sandbox {
            Some(sandbox) => Some(sandbox.worker(WorkerSpec {
                function: &args.function,
                worker: &format!("w{}", myself.get_id().pid()),
                memory_mb: args.memory_mb,
                reads: &args.plan.reads,
                cwd: &args.plan.cwd,
                credentials: credentials.as_ref().map(WorkerCredentials::dir),
                network: args.plan.network,
                runtime_api: args.plan.runtime_api,
            })?),
            None => None,
        };
        let api = match args.plan.runtime_api {
            true => {
                // Only its worker reaches it: inside its network namespace, or on the
                // host's loopback from its uid alone.
                let inside = jail
                    .as_mut()
                    .and_then(|j| j.net.as_mut())
                    .and_then(|net| net.take_runtime_api());
                let listen = match inside {
                    Some(listener) => RuntimeApiListen::Bound(listener),
                    None => RuntimeApiListen::Loopback {
                        peer_uid: jail.as_ref().map(|j| j.uid),
                    },
                };
                Some(
                    RuntimeApi::start(
                        myself.clone(),
                        &args.arn,
                        args.timeout,
                        args.ctx.max_payload,
                        listen,
                    )
                    .await?,
                )
            }
            false => None,
        };
        let mut env: Vec<(&'static str, String)> = credentials
            .as_ref()
            .map_or_else(Vec::new, |c| c.env().to_vec());
        // `network: "nats"`: the servers are reached through the relay in its namespace.
        if let Some(relayed) = jail
            .as_ref()
            .and_then(|j| j.net.as_ref())
            .and_then(|net| net.nats_url())
        {
            env.retain(|(k, _)| *k != "NATS_URL");
            env.push(("NATS_URL", relayed.to_owned()));
        }
        // Off the actor's thread: a sandboxed child joins its cgroups before exec, and
        // a v1 cgroup migration waits for an RCU grace period (about 10 ms here), which
        // the spawn waits for in turn. Nothing else on this thread should.
        let (plan, api_addr) = (args.plan.clone(), api.as_ref().map(RuntimeApi::addr));
        let (proc, jail) = tokio::task::spawn_blocking(move || {
            let proc = process::spawn(&plan, &log_stream, api_addr, &env, jail.as_ref());
            (proc, jail)
        })
        .await
        .map_err(|e| std::io::Error::other(format!("the worker's spawn failed: {e}")))?;
        let proc = proc?;
        let (reader, writer) = InvokeWriter::new(api, proc.channel, &myself)?;
        // Without a channel, the exit status is the whole news of an exit.
        let exit = ExitNews {
            channel_closed: reader.is_none(),
            ..ExitNews::default()
        };
        let cgroup = jail.as_ref().and_then(|j| j.groups.as_ref());
        let peak = match cgroup.and_then(|g| g.peak_file()) {
            Some(file) => PeakMemory::of_cgroup(&file),
            None => PeakMemory::new(proc.pid),
        };
        let framing = LogFraming::new(version, args.memory_mb, peak);
        spawn_reader(myself.clone(), reader, proc.stdout, proc.stderr);
        let mut child = proc.child;
        let memory = cgroup.is_none().then(|| {
            MemoryWatch::spawn(
                proc.pid,
                u64::from(args.memory_mb) * 1024 * 1024,
                myself.clone(),
            )
        });
        let storage = jail.as_ref().map(|jail| {
            let me = myself.clone();
            StorageWatch::spawn(
                jail.tmp.path(),
                u64::from(args.plan.ephemeral_storage_mb) * 1024 * 1024,
                move |bytes| {
                    let _ = me.cast(WorkerMsg::OutOfStorage(bytes));
                },
            )
        });
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
            _storage: storage,
            exit,
            _credentials: credentials,
            jail,
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
            WorkerMsg::OutOfStorage(bytes) => state.out_of_storage(&myself, bytes).await,
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

impl WorkerState {
    async fn invoke(&mut self, myself: &ActorRef<WorkerMsg>, invocation: Invocation, cold: bool) {
        if self.phase != Phase::Ready {
            // The FunctionActor's view was stale (this worker just failed): hand the
            // invocation back rather than lose it.
            let _ = self
                .args
                .parent
                .send_message(WorkerReport::Requeue(vec![invocation]));
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
                Outcome::failed(ErrorCode::PayloadTooLarge, &error),
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
                let _ = self.args.parent.send_message(WorkerReport::Ready(self.id));
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
                Err((code, error)) => Outcome::failed(code, &error),
            },
            Err((code, error)) => {
                caller.fail(&self.args.ctx, code, &error).await;
                Outcome::failed(code, &error)
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
            .send_message(WorkerReport::Finished(Finished {
                worker: self.id,
                endpoint,
                outcome,
                ran,
                since_received,
            }));
    }
}
