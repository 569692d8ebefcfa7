//! The binding spec: the JSON value of a key in `natsfn-bindings`, written by hand or by
//! the CLI. Parsing walks the JSON itself so that every rejection names the field and
//! what was expected, in the words a person editing the JSON needs.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

pub use crate::async_spec::AsyncSpec;
use crate::names::is_valid_function_name;

pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
pub const DEFAULT_MEMORY_MB: u32 = 128;
pub const DEFAULT_POOL: PoolSpec = PoolSpec {
    min: 1,
    max: 4,
    queue: 64,
    idle_ms: 60_000,
    max_invocations: 0,
};
/// Lambda's own limits.
const MAX_TIMEOUT_MS: u64 = 900_000;
const MEMORY_MB_RANGE: (u64, u64) = (128, 10_240);
const MAX_POOL: u64 = 1_024;
const MAX_QUEUE: u64 = 100_000;
/// A day: an idle worker kept longer is a standby, which is what `min` is for.
const MAX_IDLE_MS: u64 = 86_400_000;
const POOL_FIELDS: [&str; 5] = ["min", "max", "queue", "idle_ms", "max_invocations"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Python3,
    Nodejs,
    Java,
    Provided,
}

impl Runtime {
    const ALL: [(&'static str, Runtime); 4] = [
        ("python3", Runtime::Python3),
        ("nodejs", Runtime::Nodejs),
        ("java", Runtime::Java),
        ("provided", Runtime::Provided),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python3 => "python3",
            Runtime::Nodejs => "nodejs",
            Runtime::Java => "java",
            Runtime::Provided => "provided",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CodeSource {
    /// An object in the `natsfn-packages` Object Store.
    Package(PackageRef),
    /// A local absolute directory (development on one machine).
    Dir { dir: String },
}

/// A package of `natsfn-packages`, as code or as a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageRef {
    pub package: String,
    /// `sha256:<64 lowercase hex>` of the object's bytes; none: whatever the object
    /// holds when the binding is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Lambda's limit of layers per function.
pub const MAX_LAYERS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolSpec {
    /// Workers kept started and initialised (the standby pool).
    pub min: u32,
    /// Invocations running at once on a node.
    pub max: u32,
    /// Invocations that may wait on a node for a worker; beyond them: 429.
    pub queue: u32,
    /// After this long without an invocation a worker above `min` stops.
    pub idle_ms: u64,
    /// A worker is replaced after this many invocations; 0: never.
    pub max_invocations: u64,
}

/// Where a function runs: only on nodes started with every one of these `--label k=v`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub labels: BTreeMap<String, String>,
}

impl Placement {
    /// Whether a node with `labels` may serve the function: it has every one asked for.
    pub fn admits(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A label key or value (`--label k=v`, `placement.labels`): 1 to 63 letters, digits
/// and `-_./`, like a Kubernetes label.
pub fn is_valid_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingSpec {
    pub runtime: Runtime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    pub code: CodeSource,
    pub subjects: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub memory_mb: u32,
    pub pool: PoolSpec,
    #[serde(rename = "async")]
    pub async_invocations: AsyncSpec,
    /// Shared packages seen like Lambda's `/opt`, earliest first (a later one wins).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<PackageRef>,
    /// `None`: every node serves the function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// Why a binding was rejected: the offending field (dotted path, empty for the whole
/// value) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

pub(crate) fn reject(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// `got "soon"`, `got 3.5`, `got an object`: how a wrong value is quoted back.
pub(crate) fn got(value: &Value) -> String {
    match value {
        Value::Null => "got null".into(),
        Value::Bool(b) => format!("got {b}"),
        Value::Number(n) => format!("got {n}"),
        Value::String(s) => format!("got {}", Value::String(s.clone())),
        Value::Array(_) => "got an array".into(),
        Value::Object(_) => "got an object".into(),
    }
}

const FIELDS: [&str; 11] = [
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
];

/// Environment variables the runtime sets itself; a binding may not override them.
const RESERVED_ENV_PREFIXES: [&str; 4] = ["AWS_LAMBDA_", "LAMBDA_", "NATSFN_", "_HANDLER"];
const RESERVED_ENV: [&str; 2] = ["AWS_EXECUTION_ENV", "AWS_LAMBDA_RUNTIME_API"];

impl BindingSpec {
    /// Parses and validates the value stored under `name` in `natsfn-bindings`.
    pub fn parse(name: &str, json: &[u8]) -> Result<BindingSpec, SpecError> {
        if !is_valid_function_name(name) {
            return Err(reject(
                "",
                format!(
                    "function name {}: expected 1 to 64 letters, digits, '_' or '-', starting with a letter or digit",
                    Value::String(name.to_owned())
                ),
            ));
        }
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| reject("", format!("the binding is not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(reject(
                "",
                format!("the binding must be a JSON object, {}", got(&value)),
            ));
        };
        Self::from_object(&obj)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<BindingSpec, SpecError> {
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(reject(
                unknown.as_str(),
                format!("unknown field; expected one of {}", FIELDS.join(", ")),
            ));
        }
        let runtime = parse_runtime(obj.get("runtime"))?;
        let handler = parse_handler(runtime, obj.get("handler"))?;
        let code = parse_code(obj.get("code"))?;
        let subjects = match obj.get("subjects") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => parse_subjects(v)?,
        };
        let env = match obj.get("env") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => parse_env(v)?,
        };
        let timeout_ms = match obj.get("timeout_ms") {
            None => DEFAULT_TIMEOUT_MS,
            Some(v) => int_in(
                v,
                "timeout_ms",
                "an integer of milliseconds",
                1,
                MAX_TIMEOUT_MS,
            )?,
        };
        let memory_mb = match obj.get("memory_mb") {
            None => DEFAULT_MEMORY_MB,
            Some(v) => int_in(
                v,
                "memory_mb",
                "an integer of megabytes",
                MEMORY_MB_RANGE.0,
                MEMORY_MB_RANGE.1,
            )? as u32,
        };
        let pool = match obj.get("pool") {
            None => DEFAULT_POOL,
            Some(v) => parse_pool(v)?,
        };
        let async_invocations = AsyncSpec::parse(obj.get("async"))?;
        let layers = match obj.get("layers") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => parse_layers(v)?,
        };
        let placement = match obj.get("placement") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_placement(v)?),
        };
        Ok(BindingSpec {
            runtime,
            handler,
            code,
            subjects,
            env,
            timeout_ms,
            memory_mb,
            pool,
            async_invocations,
            layers,
            placement,
        })
    }

    /// The spec as JSON, every default written out.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and maps of strings always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn parse_runtime(value: Option<&Value>) -> Result<Runtime, SpecError> {
    let expected = || {
        Runtime::ALL
            .iter()
            .map(|(n, _)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match value {
        None => Err(reject(
            "runtime",
            format!("required; expected one of {}", expected()),
        )),
        Some(Value::String(s)) => Runtime::ALL
            .iter()
            .find(|(n, _)| n == s)
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                reject(
                    "runtime",
                    format!(
                        "expected one of {}, {}",
                        expected(),
                        got(&Value::String(s.clone()))
                    ),
                )
            }),
        Some(other) => Err(reject(
            "runtime",
            format!("expected one of {}, {}", expected(), got(other)),
        )),
    }
}

fn parse_handler(runtime: Runtime, value: Option<&Value>) -> Result<Option<String>, SpecError> {
    let form = if runtime == Runtime::Java {
        JAVA_HANDLER_FORM
    } else {
        "a handler string \"file.function\" (e.g. \"app.handler\")"
    };
    match value {
        None | Some(Value::Null) if runtime == Runtime::Provided => Ok(None),
        None | Some(Value::Null) => Err(reject(
            "handler",
            format!("required for runtime {}; expected {form}", runtime.as_str()),
        )),
        Some(Value::String(h)) if runtime == Runtime::Java => {
            if is_java_handler(h) {
                Ok(Some(h.clone()))
            } else {
                Err(reject(
                    "handler",
                    format!("expected {form}, {}", got(&Value::String(h.clone()))),
                ))
            }
        }
        Some(Value::String(h)) => {
            let well_formed = h
                .rsplit_once('.')
                .is_some_and(|(module, function)| !module.is_empty() && !function.is_empty())
                && !h.chars().any(|c| c.is_whitespace() || c.is_control());
            if well_formed {
                Ok(Some(h.clone()))
            } else {
                Err(reject(
                    "handler",
                    format!("expected {form}, {}", got(&Value::String(h.clone()))),
                ))
            }
        }
        Some(other) => Err(reject(
            "handler",
            format!("expected {form}, {}", got(other)),
        )),
    }
}

const JAVA_HANDLER_FORM: &str =
    "a Java handler \"package.Class\" or \"package.Class::method\" (e.g. \"example.Hello\")";

/// `package.Class` or `package.Class::method`, every part a Java identifier (the
/// package may be empty: a class of the unnamed package).
fn is_java_handler(handler: &str) -> bool {
    let identifier = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
            && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    };
    let (class, method) = match handler.split_once("::") {
        Some((class, method)) => (class, Some(method)),
        None => (handler, None),
    };
    class.split('.').all(identifier) && method.is_none_or(identifier)
}

fn parse_code(value: Option<&Value>) -> Result<CodeSource, SpecError> {
    let form =
        "{\"dir\": \"/absolute/path\"} or {\"package\": \"name\", \"digest\": \"sha256:...\"}";
    let obj = match value {
        None => return Err(reject("code", format!("required; expected {form}"))),
        Some(Value::Object(obj)) => obj,
        Some(other) => return Err(reject("code", format!("expected {form}, {}", got(other)))),
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !["dir", "package", "digest"].contains(&k.as_str()))
    {
        return Err(reject(
            format!("code.{unknown}"),
            "unknown field; expected \"dir\", or \"package\" and \"digest\"",
        ));
    }
    match (obj.get("dir"), obj.get("package")) {
        (Some(_), Some(_)) => Err(reject(
            "code",
            "give either \"dir\" or \"package\", not both",
        )),
        (Some(_), None) if obj.contains_key("digest") => Err(reject(
            "code.digest",
            "a digest pins a package; \"dir\" has none",
        )),
        (Some(Value::String(dir)), None) if dir.starts_with('/') => {
            Ok(CodeSource::Dir { dir: dir.clone() })
        }
        (Some(dir), None) => Err(reject(
            "code.dir",
            format!("expected an absolute path, {}", got(dir)),
        )),
        (None, Some(_)) => parse_package_ref(obj, "code").map(CodeSource::Package),
        (None, None) => Err(reject(
            "code",
            format!("expected {form}, got an empty object"),
        )),
    }
}

/// `{"package": NAME, "digest": "sha256:<hex>"}` (digest optional) at `field`.
fn parse_package_ref(obj: &Map<String, Value>, field: &str) -> Result<PackageRef, SpecError> {
    let package = match obj.get("package") {
        Some(Value::String(p)) if is_valid_function_name(p) => p.clone(),
        Some(p) => {
            return Err(reject(
                format!("{field}.package"),
                format!(
                    "expected a package name (1 to 64 letters, digits, '_' or '-'), {}",
                    got(p)
                ),
            ))
        }
        None => return Err(reject(format!("{field}.package"), "required")),
    };
    let digest = match obj.get("digest") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if is_sha256_digest(d) => Some(d.clone()),
        Some(d) => {
            return Err(reject(
                format!("{field}.digest"),
                format!(
                    "expected \"sha256:\" and 64 lowercase hex digits, {}",
                    got(d)
                ),
            ))
        }
    };
    Ok(PackageRef { package, digest })
}

/// `sha256:` and 64 lowercase hex digits, as `natsfn deploy` writes it.
pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn parse_layers(value: &Value) -> Result<Vec<PackageRef>, SpecError> {
    let form = "an array of {\"package\": \"name\", \"digest\": \"sha256:...\"}";
    let Value::Array(items) = value else {
        return Err(reject("layers", format!("expected {form}, {}", got(value))));
    };
    if items.len() > MAX_LAYERS {
        return Err(reject(
            "layers",
            format!("at most {MAX_LAYERS} layers, got {}", items.len()),
        ));
    }
    let mut layers: Vec<PackageRef> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("layers[{i}]");
        let Value::Object(obj) = item else {
            return Err(reject(
                field,
                format!("expected {{\"package\": \"name\"}}, {}", got(item)),
            ));
        };
        if let Some(unknown) = obj.keys().find(|k| *k != "package" && *k != "digest") {
            return Err(reject(
                format!("{field}.{unknown}"),
                "unknown field; expected \"package\" and \"digest\"",
            ));
        }
        let layer = parse_package_ref(obj, &field)?;
        if layers.iter().any(|l| l.package == layer.package) {
            return Err(reject(
                format!("{field}.package"),
                format!("{:?} is already a layer of this binding", layer.package),
            ));
        }
        layers.push(layer);
    }
    Ok(layers)
}

fn parse_subjects(value: &Value) -> Result<Vec<String>, SpecError> {
    let Value::Array(items) = value else {
        return Err(reject(
            "subjects",
            format!("expected an array of NATS subjects, {}", got(value)),
        ));
    };
    let mut subjects = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("subjects[{i}]");
        let Value::String(s) = item else {
            return Err(reject(
                field,
                format!("expected a NATS subject, {}", got(item)),
            ));
        };
        check_subject(s).map_err(|why| reject(field, why))?;
        if !subjects.contains(s) {
            subjects.push(s.clone());
        }
    }
    Ok(subjects)
}

/// A subject a function may listen on: valid NATS syntax, and unable to catch natsfn's
/// own traffic (its logs, replies, JetStream API) which would loop.
pub(crate) fn check_subject(s: &str) -> Result<(), String> {
    let quoted = Value::String(s.to_owned());
    let tokens: Vec<&str> = s.split('.').collect();
    let valid_syntax = !s.is_empty()
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.chars().any(|c| c.is_whitespace() || c.is_control())
                && (!t.contains(['*', '>']) || *t == "*" || *t == ">")
                && (*t != ">" || i == tokens.len() - 1)
        });
    if !valid_syntax {
        return Err(format!(
            "expected a NATS subject (dot-separated tokens without spaces; '*' or a final '>' as whole tokens), got {quoted}"
        ));
    }
    let first = tokens[0];
    if first == "*"
        || first == ">"
        || first == "natsfn"
        || first.starts_with('$')
        || first == "_INBOX"
    {
        return Err(format!(
            "{quoted} would also receive natsfn's or the server's own traffic; a subject may not start with a wildcard, \"natsfn.\", \"$\" or \"_INBOX.\""
        ));
    }
    Ok(())
}

fn parse_env(value: &Value) -> Result<BTreeMap<String, String>, SpecError> {
    let Value::Object(obj) = value else {
        return Err(reject(
            "env",
            format!("expected an object of string values, {}", got(value)),
        ));
    };
    let mut env = BTreeMap::new();
    for (key, v) in obj {
        let field = format!("env.{key}");
        let valid_name = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(reject(
                field,
                "expected a variable name of letters, digits and '_', not starting with a digit",
            ));
        }
        if RESERVED_ENV.contains(&key.as_str())
            || RESERVED_ENV_PREFIXES.iter().any(|p| key.starts_with(p))
        {
            return Err(reject(
                field,
                "reserved: the runtime sets this variable itself",
            ));
        }
        let Value::String(s) = v else {
            return Err(reject(field, format!("expected a string, {}", got(v))));
        };
        if s.contains('\0') {
            return Err(reject(field, "a value may not contain a NUL character"));
        }
        env.insert(key.clone(), s.clone());
    }
    Ok(env)
}

fn parse_placement(value: &Value) -> Result<Placement, SpecError> {
    let Value::Object(obj) = value else {
        return Err(reject(
            "placement",
            format!(
                "expected an object such as {{\"labels\": {{\"region\": \"eu\"}}}}, {}",
                got(value)
            ),
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| k.as_str() != "labels") {
        return Err(reject(
            format!("placement.{unknown}"),
            "unknown field; expected labels",
        ));
    }
    let mut labels = BTreeMap::new();
    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (key, v) in given {
                let field = format!("placement.labels.{key}");
                if !is_valid_label(key) {
                    return Err(reject(
                        field,
                        "expected a label name of 1 to 63 letters, digits and -_./",
                    ));
                }
                let Value::String(text) = v else {
                    return Err(reject(field, format!("expected a string, {}", got(v))));
                };
                if !is_valid_label(text) {
                    return Err(reject(
                        field,
                        format!(
                            "expected a label value of 1 to 63 letters, digits and -_./, {}",
                            got(v)
                        ),
                    ));
                }
                labels.insert(key.clone(), text.clone());
            }
        }
        Some(other) => {
            return Err(reject(
                "placement.labels",
                format!("expected an object of string values, {}", got(other)),
            ))
        }
    }
    Ok(Placement { labels })
}

fn parse_pool(value: &Value) -> Result<PoolSpec, SpecError> {
    let Value::Object(obj) = value else {
        return Err(reject(
            "pool",
            format!("expected {{\"min\": N, \"max\": N}}, {}", got(value)),
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| !POOL_FIELDS.contains(&k.as_str())) {
        return Err(reject(
            format!("pool.{unknown}"),
            format!("unknown field; expected one of {}", POOL_FIELDS.join(", ")),
        ));
    }
    let what = "an integer number of worker processes";
    let min = match obj.get("min") {
        None => u64::from(DEFAULT_POOL.min),
        Some(v) => int_in(v, "pool.min", what, 0, MAX_POOL)?,
    };
    let max = match obj.get("max") {
        None => u64::from(DEFAULT_POOL.max).max(min),
        Some(v) => int_in(v, "pool.max", what, 1, MAX_POOL)?,
    };
    if min > max {
        return Err(reject(
            "pool",
            format!("min ({min}) may not be larger than max ({max})"),
        ));
    }
    let queue = match obj.get("queue") {
        None => u64::from(DEFAULT_POOL.queue),
        Some(v) => int_in(
            v,
            "pool.queue",
            "an integer number of waiting invocations",
            0,
            MAX_QUEUE,
        )?,
    };
    let idle_ms = match obj.get("idle_ms") {
        None => DEFAULT_POOL.idle_ms,
        Some(v) => int_in(
            v,
            "pool.idle_ms",
            "an integer of milliseconds",
            1,
            MAX_IDLE_MS,
        )?,
    };
    let max_invocations = match obj.get("max_invocations") {
        None | Some(Value::Null) => DEFAULT_POOL.max_invocations,
        Some(v) => int_in(
            v,
            "pool.max_invocations",
            "an integer number of invocations (0: no limit)",
            0,
            u64::from(u32::MAX),
        )?,
    };
    Ok(PoolSpec {
        min: min as u32,
        max: max as u32,
        queue: queue as u32,
        idle_ms,
        max_invocations,
    })
}

pub(crate) fn int_in(
    value: &Value,
    field: &str,
    what: &str,
    lo: u64,
    hi: u64,
) -> Result<u64, SpecError> {
    match value.as_u64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        Some(n) => Err(reject(
            field,
            format!("expected {what} from {lo} to {hi}, got {n}"),
        )),
        None => Err(reject(field, format!("expected {what}, {}", got(value)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BindingSpec, SpecError> {
        BindingSpec::parse("hello", json.as_bytes())
    }

    fn rejection(json: &str) -> String {
        parse(json).expect_err("should be rejected").to_string()
    }

    const MINIMAL: &str =
        r#"{"runtime":"python3","handler":"app.handler","code":{"dir":"/srv/hello"}}"#;

    #[test]
    fn defaults_fill_in() {
        let spec = parse(MINIMAL).unwrap();
        assert_eq!(spec.runtime, Runtime::Python3);
        assert_eq!(spec.handler.as_deref(), Some("app.handler"));
        assert_eq!(
            spec.code,
            CodeSource::Dir {
                dir: "/srv/hello".into()
            }
        );
        assert!(spec.subjects.is_empty());
        assert!(spec.env.is_empty());
        assert_eq!(spec.timeout_ms, 3000);
        assert_eq!(spec.memory_mb, 128);
        assert_eq!(spec.pool, DEFAULT_POOL);
        assert_eq!((spec.pool.queue, spec.pool.idle_ms), (64, 60_000));
    }

    #[test]
    fn full_spec_round_trips_through_to_json() {
        let spec = parse(
            r#"{"runtime":"nodejs","handler":"index.handler","code":{"package":"hello"},
                "subjects":["myfunction.lambda","orders.*"],"env":{"GREETING":"hi"},
                "timeout_ms":500,"memory_mb":256,
                "pool":{"min":0,"max":2,"queue":5,"idle_ms":250,"max_invocations":9}}"#,
        )
        .unwrap();
        let again = BindingSpec::parse("hello", &spec.to_json()).unwrap();
        assert_eq!(spec, again);
        assert_eq!(
            again.pool,
            PoolSpec {
                min: 0,
                max: 2,
                queue: 5,
                idle_ms: 250,
                max_invocations: 9
            }
        );
        assert_eq!(again.subjects, vec!["myfunction.lambda", "orders.*"]);
    }

    #[test]
    fn messages_name_the_field_and_the_expectation() {
        assert_eq!(
            rejection(
                r#"{"runtime":"python3","handler":"app.handler","code":{"dir":"/x"},"timeout_ms":"soon"}"#
            ),
            r#"timeout_ms: expected an integer of milliseconds, got "soon""#
        );
        assert_eq!(
            rejection(r#"{"runtime":"python3","handler":"app.handler","code":{"dir":"/x"},"colour":"red"}"#),
            "colour: unknown field; expected one of runtime, handler, code, subjects, env, timeout_ms, memory_mb, pool, async, layers, placement"
        );
        assert_eq!(
            rejection(r#"{"runtime":"ruby","handler":"app.handler","code":{"dir":"/x"}}"#),
            r#"runtime: expected one of "python3", "nodejs", "java", "provided", got "ruby""#
        );
        assert!(rejection(r#"{"runtime":"python3","code":{"dir":"/x"}}"#)
            .starts_with("handler: required"));
        assert!(
            rejection(r#"{"runtime":"python3","handler":"app","code":{"dir":"/x"}}"#)
                .starts_with("handler: expected")
        );
        assert!(
            rejection(r#"{"runtime":"python3","handler":"a.b","code":{"dir":"rel/x"}}"#)
                .starts_with("code.dir: expected an absolute path")
        );
        assert!(rejection(
            r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x","package":"p"}}"#
        )
        .starts_with("code: give either"));
        assert!(rejection(
            r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"pool":{"min":3,"max":2}}"#
        )
        .starts_with("pool: min (3)"));
        assert_eq!(
            rejection(
                r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"pool":{"idle_ms":"1m"}}"#
            ),
            r#"pool.idle_ms: expected an integer of milliseconds, got "1m""#
        );
        assert!(rejection(
            r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"pool":{"size":2}}"#
        )
        .starts_with("pool.size: unknown field; expected one of min, max, queue"));
        assert!(rejection(
            r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"timeout_ms":0}"#
        )
        .contains("from 1 to 900000, got 0"));
        assert!(rejection(
            r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"timeout_ms":1.5}"#
        )
        .contains("got 1.5"));
        assert!(rejection(
            r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"env":{"A":1}}"#
        )
        .starts_with("env.A: expected a string, got 1"));
        assert!(rejection(r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"env":{"AWS_LAMBDA_FUNCTION_NAME":"x"}}"#).contains("reserved"));
        assert!(rejection(
            r#"{"runtime":"python3","handler":"a.b","code":{"dir":"/x"},"env":{"1A":"x"}}"#
        )
        .starts_with("env.1A:"));
        assert!(rejection("not json").starts_with("the binding is not valid JSON"));
        assert!(rejection("[1]").contains("must be a JSON object, got an array"));
    }

    #[test]
    fn subjects_are_checked() {
        let with = |s: &str| {
            parse(&format!(
                r#"{{"runtime":"python3","handler":"a.b","code":{{"dir":"/x"}},"subjects":[{s}]}}"#
            ))
        };
        assert!(with(r#""orders.>""#).is_ok());
        assert!(with(r#""a.*.c""#).is_ok());
        for bad in [
            r#""""#,
            r#""a..b""#,
            r#""a b""#,
            r#""a.>.b""#,
            r#""a.b*""#,
            r#"">""#,
            r#""*.x""#,
            r#""natsfn.logs.x""#,
            r#""$JS.API.x""#,
            r#""_INBOX.x""#,
            "1",
        ] {
            let err = with(bad).expect_err(bad);
            assert_eq!(err.field, "subjects[0]", "{bad}: {err}");
        }
        assert_eq!(with(r#""a","a""#).unwrap().subjects, vec!["a"]);
    }

    #[test]
    fn bad_names_are_rejected() {
        let err = BindingSpec::parse("a.b", MINIMAL.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("function name \"a.b\""), "{err}");
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn packages_and_layers() {
        let spec = parse(&format!(
            r#"{{"runtime":"python3","handler":"a.b","code":{{"package":"hello","digest":"{DIGEST}"}},
                "layers":[{{"package":"deps"}},{{"package":"tools","digest":"{DIGEST}"}}]}}"#
        ))
        .unwrap();
        assert_eq!(
            spec.code,
            CodeSource::Package(PackageRef {
                package: "hello".into(),
                digest: Some(DIGEST.into())
            })
        );
        assert_eq!(spec.layers.len(), 2);
        assert_eq!(spec.layers[0].digest, None);
        assert_eq!(BindingSpec::parse("hello", &spec.to_json()).unwrap(), spec);
        let json: Value = serde_json::from_slice(&spec.to_json()).unwrap();
        assert_eq!(
            json["code"],
            serde_json::json!({"package": "hello", "digest": DIGEST})
        );
        assert_eq!(json["layers"][0], serde_json::json!({"package": "deps"}));
        let dir: Value = serde_json::from_slice(&parse(MINIMAL).unwrap().to_json()).unwrap();
        assert_eq!(dir["code"], serde_json::json!({"dir": "/srv/hello"}));
        assert!(dir.get("layers").is_none());
    }

    #[test]
    fn bad_packages_and_layers_are_named() {
        let with = |code: &str, layers: &str| {
            rejection(&format!(
                r#"{{"runtime":"python3","handler":"a.b","code":{code},"layers":{layers}}}"#
            ))
        };
        assert!(with(r#"{"package":"p","digest":"sha256:abc"}"#, "[]")
            .starts_with("code.digest: expected \"sha256:\" and 64"));
        assert!(with(r#"{"package":"p","digest":"md5:x"}"#, "[]").starts_with("code.digest:"));
        assert!(with(r#"{"package":"a/b"}"#, "[]").starts_with("code.package: expected"));
        assert!(with(r#"{"digest":"sha256:abc"}"#, "[]").starts_with("code: expected"));
        assert!(
            with(&format!(r#"{{"dir":"/x","digest":"{DIGEST}"}}"#), "[]")
                .starts_with("code.digest: a digest pins a package")
        );
        assert!(with(r#"{"package":"p","tag":"v1"}"#, "[]").starts_with("code.tag: unknown field"));
        let six = (0..6)
            .map(|i| format!(r#"{{"package":"l{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            with(r#"{"package":"p"}"#, &format!("[{six}]")),
            "layers: at most 5 layers, got 6"
        );
        assert!(
            with(r#"{"package":"p"}"#, r#"[{"package":"a"},{"package":"a"}]"#)
                .starts_with("layers[1].package: \"a\" is already a layer")
        );
        assert!(with(r#"{"package":"p"}"#, r#"["a"]"#).starts_with("layers[0]: expected"));
        assert!(with(r#"{"package":"p"}"#, r#"[{"digest":"x"}]"#)
            .starts_with("layers[0].package: required"));
        assert!(with(
            r#"{"package":"p"}"#,
            r#"[{"package":"a","digest":"sha256:"}]"#
        )
        .starts_with("layers[0].digest: expected"));
        assert!(with(r#"{"package":"p"}"#, r#"{"package":"a"}"#).starts_with("layers: expected"));
    }

    #[test]
    fn provided_needs_no_handler() {
        let spec = parse(r#"{"runtime":"provided","code":{"dir":"/x"}}"#).unwrap();
        assert_eq!(spec.handler, None);
    }

    #[test]
    fn placement_labels_all_must_match() {
        let spec = parse(
            r#"{"runtime":"provided","code":{"dir":"/x"},"placement":{"labels":{"region":"eu","gpu":"false"}}}"#,
        )
        .unwrap();
        let placement = spec.placement.expect("placement");
        let node = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(placement.admits(&node(&[("region", "eu"), ("gpu", "false"), ("x", "y")])));
        assert!(!placement.admits(&node(&[("region", "eu")])));
        assert!(!placement.admits(&node(&[("region", "us"), ("gpu", "false")])));
        let none = parse(r#"{"runtime":"provided","code":{"dir":"/x"}}"#).unwrap();
        assert_eq!(none.placement, None);
    }

    #[test]
    fn placement_errors_name_the_field() {
        let err = |json: &str| parse(json).unwrap_err().to_string();
        assert_eq!(
            err(
                r#"{"runtime":"provided","code":{"dir":"/x"},"placement":{"labels":{"region":1}}}"#
            ),
            "placement.labels.region: expected a string, got 1"
        );
        assert_eq!(
            err(r#"{"runtime":"provided","code":{"dir":"/x"},"placement":{"region":"eu"}}"#),
            "placement.region: unknown field; expected labels"
        );
        assert!(
            err(r#"{"runtime":"provided","code":{"dir":"/x"},"placement":"eu"}"#)
                .starts_with("placement: expected an object")
        );
        assert!(err(
            r#"{"runtime":"provided","code":{"dir":"/x"},"placement":{"labels":{"a b":"c"}}}"#
        )
        .starts_with("placement.labels.a b: expected a label name"));
    }

    #[test]
    fn java_handlers_are_a_class_or_a_class_and_method() {
        let with = |h: &str| {
            parse(&format!(
                r#"{{"runtime":"java","handler":"{h}","code":{{"dir":"/x"}}}}"#
            ))
        };
        for good in [
            "example.Hello",
            "Hello",
            "a.b.C$Inner::handle",
            "ex.Hello::handleRequest",
        ] {
            let spec = with(good).expect(good);
            assert_eq!(spec.runtime, Runtime::Java);
            assert_eq!(spec.handler.as_deref(), Some(good));
        }
        for bad in [
            "",
            "example.",
            ".Hello",
            "example.Hello::",
            "example.Hello:handle",
            "a b.C",
            "1a.B",
            "a.B::c::d",
        ] {
            let err = with(bad).expect_err(bad);
            assert_eq!(err.field, "handler", "{bad}: {err}");
            assert!(
                err.message.contains("\"package.Class::method\""),
                "{bad}: {err}"
            );
        }
        let err = parse(r#"{"runtime":"java","code":{"dir":"/x"}}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("handler: required for runtime java"),
            "{err}"
        );
    }
}
