//! Reads everything a worker process says: frames on the private channel and lines on
//! stdout/stderr, in one task so that an invocation's output reaches the WorkerActor
//! before its result (the bootstrap flushes its output before writing a frame, and
//! the biased select below drains output first).

use bytes::BytesMut;
use futures::StreamExt;
use natsfn_protocol::frame::FrameError;
use natsfn_protocol::{FrameDecoder, FromWorker};
use ractor::ActorRef;
use tokio::io::AsyncRead;
use tokio::net::unix::OwnedReadHalf;
use tokio_util::codec::{Decoder, FramedRead};

use super::WorkerMsg;

/// Longer lines are cut into pieces of this size rather than buffered without bound.
const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

pub(crate) fn spawn_reader(
    worker: ActorRef<WorkerMsg>,
    channel: Option<OwnedReadHalf>,
    stdout: impl AsyncRead + Send + Unpin + 'static,
    stderr: impl AsyncRead + Send + Unpin + 'static,
) {
    tokio::spawn(async move {
        // A provided worker has no channel: only its output is read here.
        let mut frames_open = channel.is_some();
        let mut frames = channel.map(|c| FramedRead::new(c, FrameCodec(FrameDecoder::new())));
        let mut out = FramedRead::new(stdout, LineCodec);
        let mut err = FramedRead::new(stderr, LineCodec);
        let (mut out_open, mut err_open) = (true, true);
        while frames_open || out_open || err_open {
            let msg = tokio::select! {
                biased;
                line = out.next(), if out_open => match line {
                    Some(Ok(line)) => WorkerMsg::Output { stream: OutputStream::Stdout, line },
                    _ => { out_open = false; continue }
                },
                line = err.next(), if err_open => match line {
                    Some(Ok(line)) => WorkerMsg::Output { stream: OutputStream::Stderr, line },
                    _ => { err_open = false; continue }
                },
                frame = async { frames.as_mut()?.next().await }, if frames_open => match frame {
                    Some(Ok(frame)) => {
                        // Output printed without a final newline still belongs to the
                        // invocation this frame ends.
                        let partials = [
                            take_partial(&mut out, OutputStream::Stdout),
                            take_partial(&mut err, OutputStream::Stderr),
                        ];
                        for line in partials.into_iter().flatten() {
                            let _ = worker.cast(line);
                        }
                        WorkerMsg::Frame(frame)
                    }
                    // A worker that wrote one bad frame is not trusted with another.
                    Some(Err(e)) => {
                        frames_open = false;
                        WorkerMsg::ProtocolViolation(e.to_string())
                    }
                    None => {
                        frames_open = false;
                        WorkerMsg::ChannelClosed
                    }
                },
            };
            if worker.cast(msg).is_err() {
                // The actor is gone; nobody is left to read for.
                break;
            }
        }
    });
}

/// A line begun but not ended, as its own log line.
fn take_partial<T>(
    lines: &mut FramedRead<T, LineCodec>,
    stream: OutputStream,
) -> Option<WorkerMsg> {
    let partial = lines.read_buffer_mut().split();
    (!partial.is_empty()).then(|| WorkerMsg::Output {
        stream,
        line: String::from_utf8_lossy(&partial).into_owned(),
    })
}

struct FrameCodec(FrameDecoder);

impl Decoder for FrameCodec {
    type Item = FromWorker;
    type Error = ChannelError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<FromWorker>, ChannelError> {
        Ok(self.0.decode(src)?)
    }
}

#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("channel read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Lines without their terminator; a line longer than [`MAX_LINE_BYTES`] is split.
struct LineCodec;

impl Decoder for LineCodec {
    type Item = String;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, std::io::Error> {
        let limit = src.len().min(MAX_LINE_BYTES);
        let (take, skip) = match src[..limit].iter().position(|b| *b == b'\n') {
            Some(i) => (i, 1),
            None if src.len() >= MAX_LINE_BYTES => (MAX_LINE_BYTES, 0),
            None => return Ok(None),
        };
        let line = src.split_to(take + skip);
        let mut text = &line[..take];
        if text.last() == Some(&b'\r') {
            text = &text[..text.len() - 1];
        }
        Ok(Some(String::from_utf8_lossy(text).into_owned()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<String>, std::io::Error> {
        match self.decode(src)? {
            Some(line) => Ok(Some(line)),
            None if src.is_empty() => Ok(None),
            None => {
                let rest = src.split();
                Ok(Some(String::from_utf8_lossy(&rest).into_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut codec = LineCodec;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(line) = codec.decode(&mut buf).unwrap() {
                out.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf).unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn lines_resume_across_chunks_and_keep_the_tail() {
        assert_eq!(
            lines(&[b"he", b"llo\r\nwor", b"ld\n", b"{\"json\": 1}\n", b"tail"]),
            vec!["hello", "world", "{\"json\": 1}", "tail"]
        );
    }

    #[test]
    fn long_lines_are_split_not_buffered() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let out = lines(&[&long, b"\n"]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX_LINE_BYTES);
        assert_eq!(out[2].len(), 10);
    }
}
