//! Binding specs built in code rather than written out as JSON in every test:
//!
//! ```text
//! Binding::python("app.handler", &code)      // runtime, handler, code.dir
//!     .pool(1, 2).queue(8).idle_ms(300)        // pool.min/max/queue/idle_ms
//!     .timeout_ms(500).memory_mb(256)
//!     .subjects(["orders.new"]).env("GREETING", "hi")
//!     .max_retries(0).on_failure("orders.failed") // async.*
//!     .layer("scaffolding").label("region", "eu") // layers, placement.labels
//!     .with("recursion", "Allow")                // any other field, as given
//! ```
//!
//! A builder sets only the fields it is told to, so the JSON it makes is the one a
//! person would have written by hand (`.json()`, or `Into<serde_json::Value>` where the
//! harness takes a spec). Tests about malformed bindings write their JSON themselves.

use std::path::Path;

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// A function's `code`: a local directory or a package of `natsfn-packages`.
#[derive(Debug, Clone, PartialEq)]
pub struct Code(Value);

impl Code {
    /// `{"dir": path}`.
    pub fn dir(path: impl AsRef<Path>) -> Code {
        Code(json!({"dir": super::dir_str(path.as_ref())}))
    }

    /// `{"package": name}`: whatever the object holds when the binding is read.
    pub fn package(name: &str) -> Code {
        Code(json!({"package": name}))
    }

    /// `{"package": name, "digest": digest}`: that version of the object.
    pub fn pinned(name: &str, digest: &str) -> Code {
        Code(json!({"package": name, "digest": digest}))
    }
}

/// What a builder takes as code: a [`Code`], or a directory (a `TempDir` from
/// [`super::code_dir`], a path, a string).
pub trait IntoCode {
    fn into_code(self) -> Code;
}

impl IntoCode for Code {
    fn into_code(self) -> Code {
        self
    }
}

impl<P: AsRef<Path>> IntoCode for P {
    fn into_code(self) -> Code {
        Code::dir(self)
    }
}

/// A binding spec under construction; see the module's documentation.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Binding(Map<String, Value>);

impl Binding {
    /// Only `{"runtime": runtime}`; the handler and the code are for the caller to add.
    pub fn runtime(runtime: &str) -> Binding {
        let mut spec = Map::new();
        spec.insert("runtime".into(), runtime.into());
        Binding(spec)
    }

    pub fn python(handler: &str, code: impl IntoCode) -> Binding {
        Binding::runtime("python3").handler(handler).code(code)
    }

    pub fn nodejs(handler: &str, code: impl IntoCode) -> Binding {
        Binding::runtime("nodejs").handler(handler).code(code)
    }

    pub fn java(handler: &str, code: impl IntoCode) -> Binding {
        Binding::runtime("java").handler(handler).code(code)
    }

    /// Runtime `provided`, without a handler (it is optional there).
    pub fn provided(code: impl IntoCode) -> Binding {
        Binding::runtime("provided").code(code)
    }

    pub fn handler(self, handler: &str) -> Binding {
        self.with("handler", handler)
    }

    pub fn code(self, code: impl IntoCode) -> Binding {
        self.with("code", code.into_code().0)
    }

    /// `subjects`, replacing any given before (`[]` stays in the JSON).
    pub fn subjects<S: AsRef<str>>(self, subjects: impl IntoIterator<Item = S>) -> Binding {
        let subjects: Vec<Value> = subjects
            .into_iter()
            .map(|s| Value::from(s.as_ref()))
            .collect();
        self.with("subjects", subjects)
    }

    /// One variable of `env`, next to those given before.
    pub fn env(self, name: &str, value: impl Into<String>) -> Binding {
        self.nested("env", name, Value::String(value.into()))
    }

    pub fn timeout_ms(self, ms: u64) -> Binding {
        self.with("timeout_ms", ms)
    }

    pub fn memory_mb(self, mb: u64) -> Binding {
        self.with("memory_mb", mb)
    }

    /// `pool.min` and `pool.max`.
    pub fn pool(self, min: u64, max: u64) -> Binding {
        self.pool_min(min).pool_max(max)
    }

    pub fn pool_min(self, min: u64) -> Binding {
        self.nested("pool", "min", min.into())
    }

    pub fn pool_max(self, max: u64) -> Binding {
        self.nested("pool", "max", max.into())
    }

    /// `pool.queue`.
    pub fn queue(self, queue: u64) -> Binding {
        self.nested("pool", "queue", queue.into())
    }

    /// `pool.idle_ms`.
    pub fn idle_ms(self, ms: u64) -> Binding {
        self.nested("pool", "idle_ms", ms.into())
    }

    /// `reserved_concurrency`: the function's cap across all nodes.
    pub fn reserved_concurrency(self, n: u64) -> Binding {
        self.with("reserved_concurrency", n)
    }

    /// `pool.max_invocations`.
    pub fn max_invocations(self, n: u64) -> Binding {
        self.nested("pool", "max_invocations", n.into())
    }

    /// `async.max_retries`.
    pub fn max_retries(self, n: u64) -> Binding {
        self.nested("async", "max_retries", n.into())
    }

    /// `async.retry_delay_ms`.
    pub fn retry_delay_ms(self, ms: u64) -> Binding {
        self.nested("async", "retry_delay_ms", ms.into())
    }

    /// `async.max_event_age_s`.
    pub fn max_event_age_s(self, s: u64) -> Binding {
        self.nested("async", "max_event_age_s", s.into())
    }

    /// `async.on_success`: the subject of success records.
    pub fn on_success(self, subject: &str) -> Binding {
        self.nested("async", "on_success", subject.into())
    }

    /// `async.on_failure`: the subject of failure records.
    pub fn on_failure(self, subject: &str) -> Binding {
        self.nested("async", "on_failure", subject.into())
    }

    /// One more entry of `layers`: `{"package": name}`.
    pub fn layer(self, package: &str) -> Binding {
        self.push_layer(json!({"package": package}))
    }

    /// One more entry of `layers`, pinned: `{"package": name, "digest": digest}`.
    pub fn layer_pinned(self, package: &str, digest: &str) -> Binding {
        self.push_layer(json!({"package": package, "digest": digest}))
    }

    /// One label of `placement.labels`, next to those given before.
    pub fn label(mut self, key: &str, value: &str) -> Binding {
        let placement = object(&mut self.0, "placement");
        object(placement, "labels").insert(key.into(), value.into());
        self
    }

    /// The escape hatch: sets the top-level `field` to `value` as given, replacing
    /// whatever the builder had there.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Binding {
        self.0.insert(field.into(), value.into());
        self
    }

    /// The spec as JSON.
    pub fn json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// The spec as the bytes of a `natsfn-bindings` value.
    pub fn bytes(&self) -> Bytes {
        serde_json::to_vec(&self.0).expect("json").into()
    }

    fn nested(mut self, field: &str, key: &str, value: Value) -> Binding {
        object(&mut self.0, field).insert(key.into(), value);
        self
    }

    fn push_layer(mut self, layer: Value) -> Binding {
        let layers = self
            .0
            .entry("layers")
            .or_insert_with(|| Value::Array(Vec::new()));
        match layers {
            Value::Array(layers) => layers.push(layer),
            other => panic!("layers is not an array: {other}"),
        }
        self
    }
}

/// The object under `field` of `map`, made if missing.
fn object<'a>(map: &'a mut Map<String, Value>, field: &str) -> &'a mut Map<String, Value> {
    match map
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(object) => object,
        other => panic!("{field} is not an object: {other}"),
    }
}

impl From<Binding> for Value {
    fn from(binding: Binding) -> Value {
        Value::Object(binding.0)
    }
}

impl From<&Binding> for Value {
    fn from(binding: &Binding) -> Value {
        binding.json()
    }
}
