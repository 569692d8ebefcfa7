//! A request under `--http-auth`: lines of `Name: value` headers (its
//! `Authorization`, `X-Amz-Date`, and whatever it signs), a blank line, its body.
//! Claimed and verified, or refused with a named exception.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub)]
#[path = "../../src/gateway/sigv4.rs"]
mod sigv4;

const KEYS: &str = r#"{"keys": [{"access_key_id": "AKIDEXAMPLE",
  "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "functions": ["hello"]}]}"#;

fuzz_target!(|data: &[u8]| {
    let keys = sigv4::Keys::parse(KEYS.as_bytes()).expect("keys");
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &data[..0]),
    };
    let mut request = Request::builder()
        .method("POST")
        .uri("/2015-03-31/functions/hello/invocations");
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii_start()),
        ) else {
            continue;
        };
        request = request.header(name, value);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    // 2015-08-30T12:36:00Z, the date of AWS's test suite.
    let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    match keys.claim(&parts.headers, now) {
        Ok(claim) => {
            if let Err(refusal) = claim.verify(&parts, body, "hello", "lambda:InvokeFunction") {
                assert!(!refusal.error_type.is_empty());
            }
        }
        Err(refusal) => assert!(!refusal.error_message.is_empty()),
    }
});
