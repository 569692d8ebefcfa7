//! Frames on the private channel between a WorkerActor and its process (see
//! runtimes/README.md): a 4-byte big-endian length, then a MessagePack body that is a
//! one-entry map `{type: {fields}}` — serde's externally tagged enum as rmp-serde
//! writes it with named fields.

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::LambdaError;

/// Largest frame body either side accepts: room for the largest NATS payload a server
/// can be configured for (64 MiB) plus the frame's own fields.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024 + 64 * 1024;
const HEAD_BYTES: usize = 4;

/// Dispatcher -> worker. Borrows: the payload is written from the NATS message as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker<'a> {
    #[serde(borrow)]
    Invoke(Invoke<'a>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoke<'a> {
    pub id: &'a str,
    /// Unix ms when the invocation times out if it starts at once.
    pub deadline_ms: u64,
    /// The time the handler has from when it starts: the invocation may wait in the
    /// channel behind the one running.
    #[serde(default)]
    pub timeout_ms: u64,
    pub invoked_function_arn: &'a str,
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
}

/// Worker -> dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The handler was loaded; the worker takes invocations.
    Ready {},
    /// The handler cannot be loaded; the process exits next.
    InitError(ErrorFields),
    /// The handler's result as JSON text.
    Response {
        id: String,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The handler raised or returned an error.
    Error(InvocationError),
    /// The event was unusable (not JSON).
    RequestError(InvocationError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFields {
    pub error_type: String,
    pub error_message: String,
    #[serde(default)]
    pub stack_trace: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationError {
    pub id: String,
    pub error_type: String,
    pub error_message: String,
    #[serde(default)]
    pub stack_trace: Vec<String>,
}

impl From<ErrorFields> for LambdaError {
    fn from(e: ErrorFields) -> Self {
        LambdaError {
            error_type: e.error_type,
            error_message: e.error_message,
            stack_trace: e.stack_trace,
        }
    }
}

impl From<InvocationError> for LambdaError {
    fn from(e: InvocationError) -> Self {
        LambdaError {
            error_type: e.error_type,
            error_message: e.error_message,
            stack_trace: e.stack_trace,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is beyond [`MAX_FRAME_BYTES`]: the stream cannot be trusted.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge(usize),
    /// The body is not a frame this side understands; the stream stays in step.
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Appends one frame to `dst`.
pub fn encode<T: Serialize>(frame: &T, dst: &mut BytesMut) -> Result<(), FrameError> {
    let start = dst.len();
    dst.put_u32(0);
    let mut writer = dst.writer();
    let written = rmp_serde::encode::write_named(&mut writer, frame);
    let dst = writer.into_inner();
    if let Err(e) = written {
        dst.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    let len = dst.len() - start - HEAD_BYTES;
    if len > MAX_FRAME_BYTES {
        dst.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    dst[start..start + HEAD_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Splits a byte stream into frames. Explicit states so a partial read resumes where
/// it stopped; a malformed body is returned as an error after it was consumed, so the
/// caller decides whether the stream is still worth reading.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    state: DecodeState,
}

#[derive(Debug, Default, Clone, Copy)]
enum DecodeState {
    #[default]
    Head,
    Data(usize),
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ok(None)`: more bytes are needed.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<FromWorker>, FrameError> {
        let len = match self.state {
            DecodeState::Head => {
                if src.len() < HEAD_BYTES {
                    return Ok(None);
                }
                let len = src.get_u32() as usize;
                if len > MAX_FRAME_BYTES {
                    return Err(FrameError::TooLarge(len));
                }
                src.reserve(len);
                self.state = DecodeState::Data(len);
                len
            }
            DecodeState::Data(len) => len,
        };
        if src.len() < len {
            return Ok(None);
        }
        self.state = DecodeState::Head;
        let body = src.split_to(len);
        rmp_serde::from_slice(&body)
            .map(Some)
            .map_err(|e| FrameError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded<T: Serialize>(frame: &T) -> BytesMut {
        let mut buf = BytesMut::new();
        encode(frame, &mut buf).unwrap();
        buf
    }

    #[test]
    fn wire_shape_is_a_one_entry_map() {
        let buf = encoded(&FromWorker::Ready {});
        // length 8, fixmap(1), fixstr(5) "Ready", fixmap(0)
        assert_eq!(&buf[..], b"\0\0\0\x08\x81\xa5Ready\x80");
        let invoke = ToWorker::Invoke(Invoke {
            id: "r",
            deadline_ms: 1,
            timeout_ms: 3000,
            invoked_function_arn: "a",
            payload: b"{}",
        });
        let buf = encoded(&invoke);
        assert_eq!(&buf[4..12], b"\x81\xa6Invoke");
        let back: ToWorker = rmp_serde::from_slice(&buf[4..]).unwrap();
        assert_eq!(back, invoke);
    }

    #[test]
    fn unknown_fields_and_missing_stack_traces_are_accepted() {
        // {"Error": {"id": "x", "error_type": "E", "error_message": "m", "extra": 1}}
        let mut body = vec![0x81, 0xa5];
        body.extend_from_slice(b"Error");
        body.push(0x84);
        for (k, v) in [("id", "x"), ("error_type", "E"), ("error_message", "m")] {
            body.push(0xa0 | k.len() as u8);
            body.extend_from_slice(k.as_bytes());
            body.push(0xa0 | v.len() as u8);
            body.extend_from_slice(v.as_bytes());
        }
        body.extend_from_slice(b"\xa5extra\x01");
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        let frame = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            frame,
            FromWorker::Error(InvocationError {
                id: "x".into(),
                error_type: "E".into(),
                error_message: "m".into(),
                stack_trace: vec![],
            })
        );
    }

    #[test]
    fn oversized_length_is_fatal_without_allocating() {
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        assert!(matches!(
            FrameDecoder::new().decode(&mut buf),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn malformed_body_is_consumed_and_the_stream_continues() {
        let mut buf = BytesMut::new();
        buf.put_u32(3);
        buf.extend_from_slice(b"\xc1\xc1\xc1");
        buf.extend_from_slice(&encoded(&FromWorker::Ready {}));
        let mut dec = FrameDecoder::new();
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(FromWorker::Ready {}));
    }

    fn from_worker() -> impl Strategy<Value = FromWorker> {
        let text = ".{0,40}";
        prop_oneof![
            Just(FromWorker::Ready {}),
            (text, text, proptest::collection::vec(text, 0..4)).prop_map(|(t, m, s)| {
                FromWorker::InitError(ErrorFields {
                    error_type: t,
                    error_message: m,
                    stack_trace: s,
                })
            }),
            (text, proptest::collection::vec(any::<u8>(), 0..2048))
                .prop_map(|(id, payload)| FromWorker::Response { id, payload }),
            (text, text, text).prop_map(|(id, t, m)| FromWorker::Error(InvocationError {
                id,
                error_type: t,
                error_message: m,
                stack_trace: vec![],
            })),
            (text, text).prop_map(|(id, m)| FromWorker::RequestError(InvocationError {
                id,
                error_type: "Runtime.UnmarshalError".into(),
                error_message: m,
                stack_trace: vec![],
            })),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_chunking(
            frames in proptest::collection::vec(from_worker(), 1..6),
            chunk in 1usize..64,
        ) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode(f, &mut wire).unwrap();
            }
            let mut dec = FrameDecoder::new();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = dec.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn invoke_round_trips(id in ".{0,40}", arn in ".{0,80}", deadline in any::<u64>(),
                              payload in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let frame = ToWorker::Invoke(Invoke { id: &id, deadline_ms: deadline, timeout_ms: deadline / 2, invoked_function_arn: &arn, payload: &payload });
            let buf = encoded(&frame);
            let back: ToWorker = rmp_serde::from_slice(&buf[4..]).unwrap();
            prop_assert_eq!(back, frame);
        }

        #[test]
        fn truncated_frames_never_yield_and_never_panic(frame in from_worker(), cut in 0usize..4096) {
            let wire = encoded(&frame);
            let cut = cut % wire.len();
            let mut buf = BytesMut::from(&wire[..cut]);
            prop_assert!(FrameDecoder::new().decode(&mut buf).unwrap().is_none());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut dec = FrameDecoder::new();
            // Keep decoding until it needs more input or gives up: any outcome but a panic.
            for _ in 0..64 {
                match dec.decode(&mut buf) {
                    Ok(Some(_)) | Err(FrameError::Malformed(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn garbage_bodies_with_valid_lengths_are_rejected_not_panicked(
            body in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            let mut buf = BytesMut::new();
            buf.put_u32(body.len() as u32);
            buf.extend_from_slice(&body);
            let _ = FrameDecoder::new().decode(&mut buf);
            prop_assert!(buf.is_empty());
        }
    }
}
