//! The gateway's `--http-auth` key file: loaded, or refused with a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub)]
#[path = "../../src/gateway/sigv4.rs"]
mod sigv4;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = sigv4::Keys::parse(data) {
        assert!(!format!("{e:#}").is_empty());
    }
});
