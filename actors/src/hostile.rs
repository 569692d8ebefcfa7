//! Issue 21 §3, hostile input: what the crate's own parsers of outside bytes are fed
//! (`invocation/hostile.rs`, `events/event/hostile.rs`, `worker/runtime_api/hostile.rs`,
//! `package/unpack/hostile.rs`). Every target runs on a fixed XorShift seed so that a
//! failure in CI replays bit for bit; budgets in docs/security.md, "Hostile input".

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The cases of an in-memory parser's target.
pub(crate) const CASES: u32 = 100_000;

/// A seeded runner of `cases` cases.
pub(crate) fn runner(cases: u32, seed: &[u8; 16]) -> TestRunner {
    let config = Config {
        cases,
        // Seeded, so there is nothing to persist; shrinking still names a minimal input.
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::XorShift, seed))
}

/// What a NATS header value may carry (no CR or LF): mostly printable ASCII, digits and
/// signs (numbers' near misses), sometimes any other character.
pub(crate) fn header_text(max: usize) -> impl Strategy<Value = String> + Clone {
    let ch = prop_oneof![
        6 => proptest::char::range(' ', '~'),
        3 => proptest::sample::select(vec!['0', '1', '9', '-', '+', ' ', '\t', '.', 'e']),
        1 => any::<char>().prop_filter("no line breaks", |c| *c != '\r' && *c != '\n'),
    ];
    proptest::collection::vec(ch, 0..=max).prop_map(String::from_iter)
}
