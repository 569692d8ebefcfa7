//! An async event's NATS headers (`Name: value` lines after 16 bytes of stream
//! sequence and clock): always a usable stamp that the retry policy takes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (numbers, rest) = data.split_at(16);
    let sequence = u64::from_le_bytes(numbers[..8].try_into().unwrap());
    let now_ms = u64::from_le_bytes(numbers[8..].try_into().unwrap());
    let text = String::from_utf8_lossy(rest);
    let headers = natsfn_actors::fuzzing::headers(&text);
    natsfn_actors::fuzzing::event_headers(Some(&headers), sequence, now_ms);
});
