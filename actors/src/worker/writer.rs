//! Writes frames to a worker's channel from a task of its own, so that the WorkerActor
//! never waits on the socket: a handler that stops reading (hung, or busy with a long
//! invocation while large ones are pipelined behind it) fills the socket buffer, and
//! an actor blocked in that write could not see its own timeout.

use bytes::{Bytes, BytesMut};
use ractor::ActorRef;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::WorkerMsg;

/// Frames queued together are written in one call up to this size (a pipelined burst
/// then costs one syscall); a larger frame is written on its own.
const COALESCE_BYTES: usize = 64 * 1024;

pub(crate) struct ChannelWriter {
    frames: mpsc::UnboundedSender<Bytes>,
    task: AbortHandle,
}

impl ChannelWriter {
    /// The worker gets `WriteFailed` if the channel cannot be written to.
    pub(crate) fn spawn(mut socket: OwnedWriteHalf, worker: ActorRef<WorkerMsg>) -> ChannelWriter {
        let (frames, mut queued) = mpsc::unbounded_channel::<Bytes>();
        let task = tokio::spawn(async move {
            let mut batch = BytesMut::new();
            while let Some(frame) = queued.recv().await {
                let result = if frame.len() >= COALESCE_BYTES {
                    socket.write_all(&frame).await
                } else {
                    batch.extend_from_slice(&frame);
                    while batch.len() < COALESCE_BYTES {
                        match queued.try_recv() {
                            Ok(next) => batch.extend_from_slice(&next),
                            Err(_) => break,
                        }
                    }
                    let result = socket.write_all(&batch).await;
                    batch.clear();
                    result
                };
                if let Err(e) = result {
                    let _ = worker.cast(WorkerMsg::WriteFailed(e.to_string()));
                    return;
                }
            }
        });
        ChannelWriter {
            frames,
            task: task.abort_handle(),
        }
    }

    /// Queues a frame; never waits.
    pub(crate) fn send(&self, frame: Bytes) {
        // A closed queue means the task ended on a write error, already reported.
        let _ = self.frames.send(frame);
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
