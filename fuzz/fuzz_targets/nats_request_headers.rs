//! A request's NATS headers (`Name: value` lines): `Natsfn-Request-Id` and
//! `Natsfn-Deadline-Ms` read, or refused with a 400 naming the header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let headers = natsfn_actors::fuzzing::headers(&text);
    natsfn_actors::fuzzing::request_headers(Some(&headers));
});
