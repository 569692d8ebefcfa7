//! Bytes from a worker process, fed to the frame decoder in chunks whose sizes the
//! first byte picks: frames, or typed errors; a too-large frame ends the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use natsfn_protocol::frame::MAX_FRAME_BYTES;
use natsfn_protocol::{FrameDecoder, FrameError};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, wire)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(FrameError::Malformed(m)) => assert!(!m.is_empty()),
                Err(FrameError::TooLarge(len)) => {
                    assert!(len > MAX_FRAME_BYTES);
                    return;
                }
                Err(e @ FrameError::Encode(_)) => panic!("decode said {e}"),
            }
        }
    }
});
