//! Issue 21 §3, "hostile input, fuzzed": the protocol parsers that take outside bytes
//! (a binding from the KV bucket, frames from a worker process) get 100,000 generated
//! inputs each and must answer every one with Ok or their typed error, never a panic.
//!
//! Every target runs on a fixed XorShift seed so a failure in CI replays bit for bit;
//! change `SEED` locally to explore further. (XorShift, not ChaCha: unoptimised
//! ChaCha was a third of the run time in a debug build.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use bytes::{BufMut, BytesMut};
use natsfn_protocol::frame::{encode, MAX_FRAME_BYTES};
use natsfn_protocol::frame::{ErrorFields, InvocationError};
use natsfn_protocol::SpecError;
use natsfn_protocol::{BindingSpec, FrameDecoder, FrameError, FromWorker};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};

const CASES: u32 = 100_000;
const SEED: [u8; 16] = *b"natsfn issue 21!";

fn runner() -> TestRunner {
    let config = Config {
        cases: CASES,
        // Seeded, so there is nothing to persist; shrinking still names a minimal input.
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::XorShift, &SEED))
}

// ---------------------------------------------------------------------------------
// Allocation bound: the largest single allocation a thread asked for, so the frame
// target can check a hostile length prefix never buys more than the stated limit.

struct PeakAlloc;

thread_local! {
    // Const-initialised Cell: no destructor, no lazy allocation inside the allocator.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| {
        if size > p.get() {
            p.set(size);
        }
    });
}

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

fn reset_peak() {
    PEAK.with(|p| p.set(0));
}

fn peak() -> usize {
    PEAK.with(|p| p.get())
}

// ---------------------------------------------------------------------------------
// 1. Binding JSON.

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A binding using every section, so a mutation anywhere lands in a parser that
/// would otherwise accept it: the errors come from deep, not from JSON syntax.
fn valid_binding() -> Value {
    json!({
        "runtime": "python3",
        "handler": "app.handler",
        "code": {"package": "hello", "digest": DIGEST},
        "subjects": ["hello.lambda", "orders.*"],
        "env": {"GREETING": "hi"},
        "timeout_ms": 500,
        "memory_mb": 256,
        "pool": {"min": 0, "max": 2, "queue": 5, "idle_ms": 250, "max_invocations": 9},
        "async": {"max_retries": 1, "retry_delay_ms": 1000, "max_event_age_s": 600,
                  "on_success": "orders.done", "on_failure": "orders.failed"},
        "layers": [{"package": "deps"}, {"package": "tools", "digest": DIGEST}],
        "placement": {"labels": {"region": "eu", "gpu": "false"}},
        "nats": {"publish": ["orders.>"], "subscribe": ["prices.*.eu"]},
        "url": {"auth": "AWS_IAM", "invoke_mode": "BUFFERED",
                "cors": {"allow_origins": ["https://example.com", "*"],
                         "allow_methods": ["GET", "POST"], "allow_headers": ["content-type"],
                         "expose_headers": ["x-custom"], "max_age": 600,
                         "allow_credentials": true}},
        "network": "nats",
        "ephemeral_storage_mb": 1024
    })
}

/// Every key the binding knows at any depth, so renames and inserts hit real fields.
const KNOWN_KEYS: &[&str] = &[
    "runtime",
    "handler",
    "code",
    "subjects",
    "env",
    "timeout_ms",
    "memory_mb",
    "pool",
    "async",
    "layers",
    "placement",
    "nats",
    "url",
    "network",
    "ephemeral_storage_mb",
    "dir",
    "package",
    "digest",
    "min",
    "max",
    "queue",
    "idle_ms",
    "max_invocations",
    "max_retries",
    "retry_delay_ms",
    "max_event_age_s",
    "on_success",
    "on_failure",
    "labels",
    "publish",
    "subscribe",
    "auth",
    "invoke_mode",
    "cors",
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credentials",
];

/// Strings the parsers compare against, plus their near misses and random text.
const KNOWN_STRINGS: &[&str] = &[
    "python3",
    "nodejs",
    "provided",
    "java",
    "ruby",
    "app.handler",
    "a.b",
    "app",
    "/x",
    "rel/x",
    "",
    " ",
    "hello",
    DIGEST,
    "sha256:",
    "sha256:xyz",
    "orders.>",
    "orders.*",
    ">",
    "*",
    "a..b",
    ".a",
    "a.",
    "$KV.prices.*",
    "_INBOX.x",
    "AWS_IAM",
    "NONE",
    "BUFFERED",
    "RESPONSE_STREAM",
    "full",
    "none",
    "GET",
    "*",
    "https://example.com",
    "AWS_LAMBDA_X",
    "NATS_URL",
    "_HANDLER",
    "NATSFN_X",
    "a b",
    "é",
    "\u{0}",
    "\u{feff}",
];

/// Any text up to `max` chars; cheaper to generate than a `.{0,n}` regex strategy.
fn text(max: usize) -> impl Strategy<Value = String> + Clone {
    proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KNOWN_KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{0,12}",
        1 => text(8),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        // Integers near every range edge the spec checks, and far outside them.
        prop_oneof![
            0u64..=3,
            100u64..=20_000,
            Just(900_000u64),
            Just(900_001u64),
            Just(u32::MAX as u64 + 1),
            any::<u64>(),
        ]
        .prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        proptest::sample::select(KNOWN_STRINGS).prop_map(|s| json!(s)),
        text(24).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(Value),
    Remove,
    Rename(String),
    Insert(String, Value),
}

fn mutation() -> impl Strategy<Value = (Vec<Index>, Index, Mutation)> {
    let m = prop_oneof![
        4 => json_value().prop_map(Mutation::Replace),
        2 => Just(Mutation::Remove),
        1 => key().prop_map(Mutation::Rename),
        2 => (key(), json_value()).prop_map(|(k, v)| Mutation::Insert(k, v)),
    ];
    (
        proptest::collection::vec(any::<Index>(), 0..4),
        any::<Index>(),
        m,
    )
}

/// Walks down `path` (stopping early at a leaf) and applies `m` to a child there.
fn apply(node: &mut Value, path: &[Index], child: Index, m: Mutation) {
    if let Some((ix, rest)) = path.split_first() {
        let next = match node {
            Value::Object(o) if !o.is_empty() => {
                let i = ix.index(o.len());
                o.values_mut().nth(i)
            }
            Value::Array(a) if !a.is_empty() => {
                let i = ix.index(a.len());
                a.get_mut(i)
            }
            _ => None,
        };
        if let Some(n) = next.filter(|n| n.is_object() || n.is_array()) {
            return apply(n, rest, child, m);
        }
    }
    match (node, m) {
        (Value::Object(o), Mutation::Insert(k, v)) => {
            o.insert(k, v);
        }
        (Value::Array(a), Mutation::Insert(_, v)) => a.push(v),
        (Value::Object(o), m) if !o.is_empty() => {
            let Some(k) = o.keys().nth(child.index(o.len())).cloned() else {
                return;
            };
            match m {
                Mutation::Replace(v) => {
                    o.insert(k, v);
                }
                Mutation::Remove => {
                    o.remove(&k);
                }
                Mutation::Rename(to) => {
                    if let Some(v) = o.remove(&k) {
                        o.insert(to, v);
                    }
                }
                Mutation::Insert(..) => unreachable!("handled above"),
            }
        }
        (Value::Array(a), m) if !a.is_empty() => {
            let i = child.index(a.len());
            match m {
                Mutation::Replace(v) => a[i] = v,
                _ => {
                    a.remove(i);
                }
            }
        }
        (node, Mutation::Replace(v)) => *node = v,
        _ => {}
    }
}

fn function_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("hello".to_owned()),
        1 => "[a-zA-Z0-9_-]{0,70}",
        1 => text(10),
    ]
}

/// The contract every input must meet: a typed answer, and an accepted spec that
/// survives its own `to_json` (what the control plane writes back).
fn check_binding(name: &str, bytes: &[u8]) -> Result<Result<(), SpecError>, TestCaseError> {
    match BindingSpec::parse(name, bytes) {
        Ok(spec) => {
            let again = BindingSpec::parse(name, &spec.to_json());
            prop_assert_eq!(again.as_ref(), Ok(&spec), "to_json of an accepted spec");
            Ok(Ok(()))
        }
        Err(e) => {
            prop_assert!(!e.message.is_empty(), "an error must say why: {:?}", e);
            Ok(Err(e))
        }
    }
}

#[test]
fn binding_mutations_of_a_valid_spec_get_a_typed_answer() {
    let base = valid_binding();
    let base_bytes = serde_json::to_vec(&base).unwrap();
    BindingSpec::parse("hello", &base_bytes).expect("the seed binding is valid");

    // Which field each rejection named, so the test proves it reached past JSON syntax.
    let fields = RefCell::new(BTreeMap::<String, u32>::new());
    let strategy = (function_name(), proptest::collection::vec(mutation(), 1..4));
    runner()
        .run(&strategy, |(name, muts)| {
            let mut v = base.clone();
            for (path, child, m) in muts {
                apply(&mut v, &path, child, m);
            }
            let bytes = serde_json::to_vec(&v).unwrap();
            let top = match check_binding(&name, &bytes)? {
                Ok(()) => "(accepted)".to_owned(),
                Err(e) => match e.field.split(['.', '[']).next().unwrap_or("") {
                    "" => "(whole value)".to_owned(),
                    // The first 13 known keys are the top-level fields.
                    f if KNOWN_KEYS[..13].contains(&f) => f.to_owned(),
                    _ => "(unknown field)".to_owned(),
                },
            };
            *fields.borrow_mut().entry(top).or_default() += 1;
            Ok(())
        })
        .unwrap();

    let fields = fields.into_inner();
    eprintln!("rejections by field: {fields:?}");
    for section in [
        "(accepted)",
        "code",
        "pool",
        "async",
        "url",
        "nats",
        "placement",
    ] {
        assert!(
            fields.contains_key(section),
            "no case reached {section}: {fields:?}"
        );
    }
}

#[test]
fn binding_arbitrary_bytes_get_a_typed_answer() {
    let valid = serde_json::to_vec(&valid_binding()).unwrap();
    // Raw noise, and the valid binding with bytes overwritten or cut: near-JSON.
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (
            proptest::collection::vec((any::<Index>(), any::<u8>()), 1..8),
            any::<Index>()
        )
            .prop_map(move |(flips, cut)| {
                let mut b = valid.clone();
                for (ix, byte) in flips {
                    let i = ix.index(b.len());
                    b[i] = byte;
                }
                b.truncate(cut.index(b.len() + 1));
                b
            }),
    ];
    runner()
        .run(&(function_name(), strategy), |(name, bytes)| {
            check_binding(&name, &bytes)?.ok();
            Ok(())
        })
        .unwrap();
}

/// Aliases, versions and qualifiers (issue 22) as anyone may write them into
/// `natsfn-aliases`, `natsfn-versions` or a subject: mutations of a valid alias and of
/// a valid version record, and arbitrary qualifier tokens, get a typed answer (a
/// record or the reason), never a panic.
#[test]
fn aliases_versions_and_qualifiers_get_a_typed_answer() {
    let alias = json!({"version": 2, "weights": {"3": 0.1}, "subjects": ["fn.live"],
        "provisioned": 2, "canary": {"steps": [0.1, 1.0], "step": 0, "every_ms": 60000,
        "max_error_rate": 0.01, "min_sample": 100, "from": 1, "state": "running",
        "reason": null, "step_started_ms": 1, "baseline": {"i": {"requests": 1, "errors": 0}},
        "observed": {"requests": 0, "errors": 0}}});
    let version = json!({"version": 1, "description": "d", "created": "2026-12-06T00:00:00Z",
        "from_revision": 3, "binding": valid_binding()});
    runner()
        .run(
            &(mutation(), mutation(), text(80)),
            |((path, child, m), (vpath, vchild, vm), token)| {
                let mut a = alias.clone();
                apply(&mut a, &path, child, m);
                let bytes = serde_json::to_vec(&a).unwrap_or_default();
                if let Ok(record) = natsfn_protocol::AliasRecord::parse(&bytes) {
                    // A record that parsed routes every roll somewhere it names.
                    for roll in [0.0, 0.05, 0.5, 0.999] {
                        prop_assert!(record.versions().contains(&record.choose(roll)));
                    }
                }
                let mut v = version.clone();
                apply(&mut v, &vpath, vchild, vm);
                if let Ok(record) = serde_json::from_value::<natsfn_protocol::VersionRecord>(v) {
                    let _ = record.spec("f");
                }
                let _ = natsfn_protocol::Qualifier::parse(&token);
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------
// 2. Worker frames.

#[derive(Debug, Clone)]
enum Piece {
    /// A frame a correct worker would send.
    Frame(FromWorker),
    /// A well-formed length prefix around noise.
    Garbage(Vec<u8>),
    /// A bare length prefix, biased to the limit's edges, then whatever follows.
    Head(u32),
    /// Noise with no framing at all.
    Raw(Vec<u8>),
}

fn from_worker() -> impl Strategy<Value = FromWorker> {
    let text = text(16);
    prop_oneof![
        Just(FromWorker::Ready {}),
        (text.clone(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(id, payload)| FromWorker::Response { id, payload }),
        (text.clone(), text.clone(), text.clone()).prop_map(|(id, t, m)| FromWorker::Error(
            InvocationError {
                id,
                error_type: t,
                error_message: m,
                stack_trace: vec![],
            }
        )),
        (text.clone(), text).prop_map(|(t, m)| FromWorker::InitError(ErrorFields {
            error_type: t,
            error_message: m,
            stack_trace: vec![],
        })),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    let limit = MAX_FRAME_BYTES as u32;
    prop_oneof![
        3 => from_worker().prop_map(Piece::Frame),
        3 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Garbage),
        2 => prop_oneof![
            0..=16u32,
            Just(limit),
            Just(limit + 1),
            (limit - 4)..=(limit + 4),
            any::<u32>(),
        ]
        .prop_map(Piece::Head),
        2 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Raw),
    ]
}

#[test]
fn frame_streams_in_any_chunking_get_a_typed_answer_within_the_limit() {
    let strategy = (
        proptest::collection::vec(piece(), 1..8),
        proptest::collection::vec(1usize..48, 1..8),
    );
    // Cases where a length prefix did reserve near the limit: the bound is exercised.
    let big = Cell::new(0u32);
    runner()
        .run(&strategy, |(pieces, chunks)| {
            let mut wire = BytesMut::new();
            for p in &pieces {
                match p {
                    Piece::Frame(f) => encode(f, &mut wire).unwrap(),
                    Piece::Garbage(b) => {
                        wire.put_u32(b.len() as u32);
                        wire.extend_from_slice(b);
                    }
                    Piece::Head(n) => wire.put_u32(*n),
                    Piece::Raw(b) => wire.extend_from_slice(b),
                }
            }
            let mut dec = FrameDecoder::new();
            let mut buf = BytesMut::new();
            let mut fed = 0usize;
            let mut at = 0usize;
            let mut sizes = chunks.iter().cycle();
            reset_peak();
            'stream: while at < wire.len() {
                let n = (*sizes.next().unwrap()).min(wire.len() - at);
                buf.extend_from_slice(&wire[at..at + n]);
                at += n;
                fed += n;
                loop {
                    match dec.decode(&mut buf) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        // The body was consumed; the stream stays in step.
                        Err(FrameError::Malformed(m)) => prop_assert!(!m.is_empty()),
                        // The caller drops the stream: nothing after it can be trusted.
                        Err(FrameError::TooLarge(len)) => {
                            prop_assert!(len > MAX_FRAME_BYTES);
                            break 'stream;
                        }
                        Err(e @ FrameError::Encode(_)) => {
                            return Err(TestCaseError::fail(format!("decode said {e}")))
                        }
                    }
                }
            }
            // A length prefix may reserve room for one whole frame ahead of its bytes,
            // but never more than the limit beyond what was actually received.
            let bound = MAX_FRAME_BYTES + 4 + fed;
            prop_assert!(
                peak() <= bound,
                "largest allocation {} > {} (limit + bytes fed)",
                peak(),
                bound
            );
            big.set(big.get() + u32::from(peak() > MAX_FRAME_BYTES / 2));
            Ok(())
        })
        .unwrap();
    assert!(big.get() > 1_000, "only {} near-limit reserves", big.get());
}
