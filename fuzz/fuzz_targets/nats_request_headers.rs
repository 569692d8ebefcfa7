//! A request's NATS headers (`Name: value` lines): `Natsfn-Request-Id` and
//! `Natsfn-Deadline-Ms` read, or refused with a 400 naming the header.
#![no_main]

use async_nats::HeaderMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut headers = HeaderMap::new();
    for line in text.split(['\r', '\n']) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            name.trim().parse::<async_nats::HeaderName>(),
            value.trim_start().parse::<async_nats::HeaderValue>(),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    natsfn_actors::fuzzing::request_headers(Some(&headers));
});
