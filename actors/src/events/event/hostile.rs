//! Issue 21 §3: the headers of an async event (`Natsfn-Request-Id`, `Nats-Msg-Id`,
//! `Natsfn-Attempt`, `Natsfn-Enqueued-At`, `Natsfn-Not-Before`), which any publisher on
//! `natsfn.async.<fn>` may set, 100,000 seeded cases: each reads to a usable stamp (a
//! valid request id, an attempt of at least 1) that the retry policy then takes
//! without a panic.

use std::time::Duration;

use async_nats::HeaderMap;
use natsfn_protocol::names::{
    is_valid_request_id, HEADER_ATTEMPT, HEADER_ENQUEUED_AT, HEADER_MSG_ID, HEADER_NOT_BEFORE,
    HEADER_REQUEST_ID,
};
use natsfn_protocol::AsyncSpec;
use proptest::prelude::*;

use super::{backoff_left, Stamp};
use crate::hostile::{header_text, runner, CASES};

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => (0u64..10).prop_map(|n| n.to_string()),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => Just(u32::MAX.to_string()),
        1 => Just((u64::from(u32::MAX) + 1).to_string()),
        1 => Just("18446744073709551616".to_owned()),
        1 => any::<i64>().prop_map(|n| format!(" {n} ")),
        2 => header_text(24),
    ]
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[A-Za-z0-9-]{0,66}",
        1 => "[A-Za-z0-9-]{8}\\.[0-9]",
        2 => header_text(70),
    ]
}

fn headers() -> impl Strategy<Value = Option<HeaderMap>> {
    let one = |s: BoxedStrategy<String>| proptest::option::of(s);
    proptest::option::weighted(
        0.95,
        (
            one(id().boxed()),
            one(id().boxed()),
            one(number().boxed()),
            one(number().boxed()),
            one(number().boxed()),
        )
            .prop_map(|(request_id, msg_id, attempt, enqueued, not_before)| {
                let mut headers = HeaderMap::new();
                for (name, value) in [
                    (HEADER_REQUEST_ID, request_id),
                    (HEADER_MSG_ID, msg_id),
                    (HEADER_ATTEMPT, attempt),
                    (HEADER_ENQUEUED_AT, enqueued),
                    (HEADER_NOT_BEFORE, not_before),
                ] {
                    if let Some(value) = value {
                        headers.insert(name, value.as_str());
                    }
                }
                headers
            }),
    )
}

#[test]
fn hostile_event_headers_read_to_a_usable_stamp() {
    let policies = [
        AsyncSpec::default(),
        AsyncSpec {
            max_retries: 0,
            retry_delay_ms: 3_600_000,
            max_event_age_s: 60,
            ..AsyncSpec::default()
        },
    ];
    let strategy = (
        headers(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    );
    runner(CASES, b"natsfn async hdr")
        .run(&strategy, |(headers, sequence, published, now, strict)| {
            let stamp = Stamp::read(headers.as_ref(), sequence, published);
            prop_assert!(is_valid_request_id(&stamp.id), "id {:?}", stamp.id);
            prop_assert!(stamp.attempt >= 1);
            if let Some(left) = backoff_left(headers.as_ref(), now) {
                prop_assert!(left > Duration::ZERO);
            }
            // What the event's outcome does with the stamp: its age, then the policy.
            let age = Duration::from_millis(now.saturating_sub(stamp.enqueued_ms));
            let _ = policies[usize::from(strict)].after_failure(stamp.attempt, age);
            Ok(())
        })
        .unwrap();
}
