//! Writes frames to a worker's channel without ever making the WorkerActor wait on the
//! socket: a handler that stops reading (hung, or busy with a long invocation while
//! large ones are pipelined behind it) fills the socket buffer, and an actor blocked in
//! that write could not see its own timeout.
//!
//! A frame is written at once with a non-blocking write when nothing is pending (the
//! usual case, no task hop on the hot path); what the socket does not take, and every
//! frame after it until the backlog is written, goes to a task of its own.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ractor::ActorRef;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::WorkerMsg;

pub(crate) struct ChannelWriter {
    socket: Arc<OwnedWriteHalf>,
    backlog: mpsc::UnboundedSender<Bytes>,
    /// Frames handed to the task and not yet written whole: while any are, a new
    /// frame must queue behind them.
    pending: Arc<AtomicUsize>,
    task: AbortHandle,
}

impl ChannelWriter {
    /// The worker gets `WriteFailed` if the channel cannot be written to.
    pub(crate) fn spawn(socket: OwnedWriteHalf, worker: ActorRef<WorkerMsg>) -> ChannelWriter {
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
            task: task.abort_handle(),
        }
    }

    /// Writes `frame` now, or queues (a copy of) what the socket does not take;
    /// never waits.
    pub(crate) fn send(&self, mut frame: &[u8]) -> std::io::Result<()> {
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

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
