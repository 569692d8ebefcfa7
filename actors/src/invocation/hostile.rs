//! Issue 21 §3: the NATS headers a request may carry (`Natsfn-Request-Id`,
//! `Natsfn-Deadline-Ms`), 100,000 seeded cases: each is read, or refused with the 400
//! that names the header; never a panic.

use async_nats::HeaderMap;
use natsfn_protocol::names::{is_valid_request_id, HEADER_DEADLINE_MS, HEADER_REQUEST_ID};
use proptest::prelude::*;

use super::{chosen_request_id, deadline_ms};
use crate::hostile::{header_text, runner, CASES};

fn request_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("0f8e6b7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b".to_owned()),
        2 => "[A-Za-z0-9-]{0,66}",
        1 => Just("a".repeat(64)),
        1 => Just("a".repeat(65)),
        2 => header_text(70),
    ]
}

fn deadline() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| format!(" {n}\t")),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => Just("18446744073709551616".to_owned()),
        1 => Just("+1".to_owned()),
        2 => header_text(24),
    ]
}

/// Absent, once, or several times (only the first counts), among unrelated headers.
fn headers() -> impl Strategy<Value = Option<HeaderMap>> {
    let values = |s: BoxedStrategy<String>| proptest::collection::vec(s, 0..3);
    proptest::option::weighted(
        0.95,
        (
            values(request_id().boxed()),
            values(deadline().boxed()),
            proptest::collection::vec(("[A-Za-z-]{1,12}", header_text(16)), 0..3),
        )
            .prop_map(|(ids, deadlines, others)| {
                let mut headers = HeaderMap::new();
                for (name, value) in others {
                    headers.append(name.as_str(), value.as_str());
                }
                for id in ids {
                    headers.append(HEADER_REQUEST_ID, id.as_str());
                }
                for d in deadlines {
                    headers.append(HEADER_DEADLINE_MS, d.as_str());
                }
                headers
            }),
    )
}

#[test]
fn hostile_request_headers_are_read_or_refused_400() {
    runner(CASES, b"natsfn nats hdrs")
        .run(&headers(), |headers| {
            let first = |name: &str| {
                headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            match chosen_request_id(headers.as_ref()) {
                Ok(id) => {
                    prop_assert_eq!(&id, &first(HEADER_REQUEST_ID));
                    prop_assert!(id.as_deref().is_none_or(is_valid_request_id));
                }
                Err(e) => {
                    prop_assert!(e.error_message.contains(HEADER_REQUEST_ID));
                    prop_assert!(first(HEADER_REQUEST_ID).is_some());
                }
            }
            match deadline_ms(headers.as_ref()) {
                Ok(ms) => prop_assert_eq!(
                    ms,
                    first(HEADER_DEADLINE_MS).map(|d| d.trim().parse::<u64>().unwrap())
                ),
                Err(e) => {
                    prop_assert!(e.error_message.contains(HEADER_DEADLINE_MS));
                    prop_assert_eq!(e.error_type.as_str(), "InvalidRequestContentException");
                }
            }
            Ok(())
        })
        .unwrap();
}
