//! A `provided` runtime's error report: the first line is its
//! `Lambda-Runtime-Function-Error-Type` header, the rest its body.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(first) {
        headers.insert("lambda-runtime-function-error-type", value);
    }
    natsfn_actors::fuzzing::runtime_api_error(&headers, body);
});
