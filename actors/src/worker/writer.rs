//! Writes frames to a worker's channel without ever making the WorkerActor wait on the
//! socket: a handler that stops reading (hung, or busy with a long invocation while
//! large ones are pipelined behind it) fills the socket buffer, and an actor blocked in
//! that write could not see its own timeout.
//!
//! Frames are gathered and written together when the WorkerActor flushes (after the
//! invocations that reached its mailbox in one turn, so several cost one syscall), with
//! a non-blocking write when nothing is pending (the usual case, no task hop on the
//! hot path); what the socket does not take, and every frame after it until the
//! backlog is written, goes to a task of its own.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use natsfn_protocol::frame::{self, FrameError};
use natsfn_protocol::{Invoke, ToWorker};
use ractor::ActorRef;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDrop;

use super::runtime_api::RuntimeApi;
use super::WorkerMsg;

/// How an invocation reaches the worker process: a frame on the private channel, or
/// the Runtime API's `/next` for a provided worker.
pub(crate) enum InvokeWriter {
    Channel {
        writer: ChannelWriter,
        /// Frames not yet flushed; reused for every batch.
        buf: BytesMut,
    },
    RuntimeApi(RuntimeApi),
}

pub(crate) enum SendError {
    /// The invocation cannot be framed (it is past the frame limit).
    TooLarge(FrameError),
    /// The channel or the server is gone.
    Io(std::io::Error),
}

impl InvokeWriter {
    /// The writer for a worker spawned with `api` (a provided one) or else `channel`;
    /// with the channel's read half, if there is one.
    pub(crate) fn new(
        api: Option<RuntimeApi>,
        channel: Option<UnixStream>,
        worker: &ActorRef<WorkerMsg>,
    ) -> std::io::Result<(Option<OwnedReadHalf>, InvokeWriter)> {
        match (api, channel) {
            (Some(api), _) => Ok((None, InvokeWriter::RuntimeApi(api))),
            (None, Some(channel)) => {
                let (reader, writer) = channel.into_split();
                let writer = InvokeWriter::Channel {
                    writer: ChannelWriter::spawn(writer, worker.clone()),
                    buf: BytesMut::with_capacity(4096),
                };
                Ok((Some(reader), writer))
            }
            (None, None) => Err(std::io::Error::other("worker spawned without its channel")),
        }
    }

    /// Hands `invoke` to the worker; never waits. `payload` is `invoke.payload`, shared.
    /// `Ok(true)`: the frame waits for [`InvokeWriter::flush`], and it is the first
    /// since the last one.
    pub(crate) fn send(&mut self, invoke: Invoke<'_>, payload: &Bytes) -> Result<bool, SendError> {
        match self {
            InvokeWriter::Channel { buf, .. } => {
                let first = buf.is_empty();
                frame::encode(&ToWorker::Invoke(invoke), buf).map_err(SendError::TooLarge)?;
                Ok(first)
            }
            InvokeWriter::RuntimeApi(api) => {
                api.send(invoke.id, payload).map_err(SendError::Io)?;
                Ok(false)
            }
        }
    }

    /// Writes the frames sent since the last flush, with one write when it can.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        match self {
            InvokeWriter::Channel { writer, buf } if !buf.is_empty() => {
                let written = writer.send(buf);
                buf.clear();
                written
            }
            _ => Ok(()),
        }
    }
}

pub(crate) struct ChannelWriter {
    socket: Arc<OwnedWriteHalf>,
    backlog: mpsc::UnboundedSender<Bytes>,
    /// Frames handed to the task and not yet written whole: while any are, a new
    /// frame must queue behind them.
    pending: Arc<AtomicUsize>,
    /// The backlog task, stopped when this is dropped.
    _task: AbortOnDrop,
}

impl ChannelWriter {
    /// The worker gets `WriteFailed` if the channel cannot be written to.
    fn spawn(socket: OwnedWriteHalf, worker: ActorRef<WorkerMsg>) -> ChannelWriter {
        let socket = Arc::new(socket);
        let pending = Arc::new(AtomicUsize::new(0));
        let (backlog, mut queued) = mpsc::unbounded_channel::<Bytes>();
        let task = tokio::spawn({
            let socket = socket.clone();
            let pending = pending.clone();
            async move {
                while let Some(frame) = queued.recv().await {
                    if let Err(e) = write_all(&socket, &frame).await {
                        let _ = worker.cast(WorkerMsg::WriteFailed(e.to_string()));
                        return;
                    }
                    pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        });
        ChannelWriter {
            socket,
            backlog,
            pending,
            _task: AbortOnDrop::new(task.abort_handle()),
        }
    }

    /// Writes `frame` now, or queues (a copy of) what the socket does not take;
    /// never waits.
    fn send(&self, mut frame: &[u8]) -> std::io::Result<()> {
        if self.pending.load(Ordering::Acquire) == 0 {
            match self.socket.try_write(frame) {
                Ok(n) if n == frame.len() => return Ok(()),
                Ok(n) => frame = &frame[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        // A closed queue means the task ended on a write error, already reported.
        let _ = self.backlog.send(Bytes::copy_from_slice(frame));
        Ok(())
    }
}

async fn write_all(socket: &OwnedWriteHalf, mut frame: &[u8]) -> std::io::Result<()> {
    while !frame.is_empty() {
        socket.writable().await?;
        match socket.try_write(frame) {
            Ok(n) => frame = &frame[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
