//! The golden worker frames (frames/golden.json) both ways in Rust: each canonical
//! vector's frame encodes to exactly its bytes, and every vector's bytes decode to its
//! frame (a to_worker frame as a worker reads it, a from_worker frame with the node's
//! own FrameDecoder). The runtimes' codecs are held to the same file by their own tests
//! (run by the integration test golden_frames).

use bytes::BytesMut;
use natsfn_protocol::frame::{encode, ErrorFields, InvocationError};
use natsfn_protocol::{FrameDecoder, FromWorker, Invoke, ToWorker};
use serde_json::{Map, Value};

const GOLDEN: &str = include_str!("frames/golden.json");

struct Vector {
    name: String,
    to_worker: bool,
    canonical: bool,
    frame: Value,
    bytes: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let doc: Value = serde_json::from_str(GOLDEN).expect("golden.json is JSON");
    doc["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|v| {
            let name = v["name"].as_str().expect("name").to_owned();
            let to_worker = match v["direction"].as_str() {
                Some("to_worker") => true,
                Some("from_worker") => false,
                other => panic!("{name}: direction {other:?}"),
            };
            Vector {
                to_worker,
                canonical: v["canonical"].as_bool().expect("canonical"),
                frame: v["frame"].clone(),
                bytes: unhex(v["hex"].as_str().expect("hex")),
                name,
            }
        })
        .collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).expect("hex"))
        .collect()
}

/// `{"$bin": hex}` as the bytes it stands for.
fn bin(value: &Value) -> Vec<u8> {
    unhex(value["$bin"].as_str().expect("a {\"$bin\": hex} value"))
}

/// The one `{type: fields}` entry of a frame's meaning.
fn entry(frame: &Value) -> (&str, &Map<String, Value>) {
    let map = frame.as_object().expect("frame is an object");
    assert_eq!(map.len(), 1, "a frame has exactly one type: {frame}");
    let (kind, fields) = map.iter().next().expect("one entry");
    (kind.as_str(), fields.as_object().expect("fields object"))
}

fn text(fields: &Map<String, Value>, name: &str) -> String {
    fields[name].as_str().expect(name).to_owned()
}

fn texts(fields: &Map<String, Value>, name: &str) -> Vec<String> {
    fields[name]
        .as_array()
        .expect(name)
        .iter()
        .map(|t| t.as_str().expect("text").to_owned())
        .collect()
}

/// The fields of an Invoke frame, owned (the frame itself borrows them).
struct InvokeFields {
    id: String,
    deadline_ms: u64,
    timeout_ms: u64,
    arn: String,
    payload: Vec<u8>,
}

impl InvokeFields {
    fn of(frame: &Value) -> InvokeFields {
        let (kind, f) = entry(frame);
        assert_eq!(kind, "Invoke", "the only to_worker frame");
        InvokeFields {
            id: text(f, "id"),
            deadline_ms: f["deadline_ms"].as_u64().expect("deadline_ms"),
            timeout_ms: f["timeout_ms"].as_u64().expect("timeout_ms"),
            arn: text(f, "invoked_function_arn"),
            payload: bin(&f["payload"]),
        }
    }

    fn frame(&self) -> ToWorker<'_> {
        ToWorker::Invoke(Invoke {
            id: &self.id,
            deadline_ms: self.deadline_ms,
            timeout_ms: self.timeout_ms,
            invoked_function_arn: &self.arn,
            payload: &self.payload,
        })
    }
}

fn from_worker(frame: &Value) -> FromWorker {
    let (kind, f) = entry(frame);
    let invocation_error = || InvocationError {
        id: text(f, "id"),
        error_type: text(f, "error_type"),
        error_message: text(f, "error_message"),
        stack_trace: texts(f, "stack_trace"),
    };
    match kind {
        "Ready" => {
            assert!(f.is_empty(), "Ready has no fields");
            FromWorker::Ready {}
        }
        "InitError" => FromWorker::InitError(ErrorFields {
            error_type: text(f, "error_type"),
            error_message: text(f, "error_message"),
            stack_trace: texts(f, "stack_trace"),
        }),
        "Response" => FromWorker::Response {
            id: text(f, "id"),
            payload: bin(&f["payload"]),
        },
        "Error" => FromWorker::Error(invocation_error()),
        "RequestError" => FromWorker::RequestError(invocation_error()),
        other => panic!("no from_worker frame is called {other}"),
    }
}

/// Which frame type a value is: a match that stops compiling when a frame type is
/// added, so that it gets vectors too.
fn kind_of(frame: &FromWorker) -> &'static str {
    match frame {
        FromWorker::Ready {} => "Ready",
        FromWorker::InitError(_) => "InitError",
        FromWorker::Response { .. } => "Response",
        FromWorker::Error(_) => "Error",
        FromWorker::RequestError(_) => "RequestError",
    }
}

fn encoded(frame: &impl serde::Serialize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(frame, &mut buf).expect("encode");
    buf.to_vec()
}

#[test]
fn canonical_frames_encode_to_their_golden_bytes() {
    let mut checked = 0;
    for v in vectors().iter().filter(|v| v.canonical) {
        let bytes = if v.to_worker {
            encoded(&InvokeFields::of(&v.frame).frame())
        } else {
            encoded(&from_worker(&v.frame))
        };
        assert_eq!(
            hex(&bytes),
            hex(&v.bytes),
            "{}: the encoding differs from the golden bytes",
            v.name
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} canonical vectors");
}

#[test]
fn every_golden_frame_decodes_to_its_meaning() {
    for v in vectors() {
        let length = u32::from_be_bytes(v.bytes[..4].try_into().expect("a length prefix"));
        assert_eq!(
            length as usize,
            v.bytes.len() - 4,
            "{}: the length prefix",
            v.name
        );
        if v.to_worker {
            let fields = InvokeFields::of(&v.frame);
            let read: ToWorker =
                rmp_serde::from_slice(&v.bytes[4..]).unwrap_or_else(|e| panic!("{}: {e}", v.name));
            assert_eq!(read, fields.frame(), "{}", v.name);
        } else {
            let mut buf = BytesMut::from(&v.bytes[..]);
            let read = FrameDecoder::new()
                .decode(&mut buf)
                .unwrap_or_else(|e| panic!("{}: {e}", v.name))
                .unwrap_or_else(|| panic!("{}: a whole frame", v.name));
            assert!(buf.is_empty(), "{}: bytes left over", v.name);
            assert_eq!(read, from_worker(&v.frame), "{}", v.name);
        }
    }
}

#[test]
fn every_frame_type_has_a_canonical_vector() {
    let mut kinds: Vec<&str> = vectors()
        .iter()
        .filter(|v| v.canonical)
        .map(|v| {
            if v.to_worker {
                "Invoke"
            } else {
                kind_of(&from_worker(&v.frame))
            }
        })
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "Error",
            "InitError",
            "Invoke",
            "Ready",
            "RequestError",
            "Response"
        ]
    );
}

#[test]
fn vector_names_are_unique() {
    let vectors = vectors();
    let mut names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "duplicate vector names");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
