//! The binding spec: the JSON value of a key in `natsfn-bindings`, written by hand or by
//! the CLI. Parsing walks the JSON itself so that every rejection names the field and
//! what was expected, in the words a person editing the JSON needs.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

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
#[serde(rename_all = "lowercase")]
pub enum CodeSource {
    /// An object in the `natsfn-packages` Object Store.
    Package(String),
    /// A local absolute directory (development on one machine).
    Dir(String),
}

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

fn reject(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// `got "soon"`, `got 3.5`, `got an object`: how a wrong value is quoted back.
fn got(value: &Value) -> String {
    match value {
        Value::Null => "got null".into(),
        Value::Bool(b) => format!("got {b}"),
        Value::Number(n) => format!("got {n}"),
        Value::String(s) => format!("got {}", Value::String(s.clone())),
        Value::Array(_) => "got an array".into(),
        Value::Object(_) => "got an object".into(),
    }
}

const FIELDS: [&str; 8] = [
    "runtime",
    "handler",
    "code",
    "subjects",
    "env",
    "timeout_ms",
    "memory_mb",
    "pool",
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
        Ok(BindingSpec {
            runtime,
            handler,
            code,
            subjects,
            env,
            timeout_ms,
            memory_mb,
            pool,
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
    let form = "{\"dir\": \"/absolute/path\"} or {\"package\": \"name\"}";
    let obj = match value {
        None => return Err(reject("code", format!("required; expected {form}"))),
        Some(Value::Object(obj)) => obj,
        Some(other) => return Err(reject("code", format!("expected {form}, {}", got(other)))),
    };
    if let Some(unknown) = obj.keys().find(|k| *k != "dir" && *k != "package") {
        return Err(reject(
            format!("code.{unknown}"),
            "unknown field; expected \"dir\" or \"package\"",
        ));
    }
    match (obj.get("dir"), obj.get("package")) {
        (Some(_), Some(_)) => Err(reject(
            "code",
            "give either \"dir\" or \"package\", not both",
        )),
        (Some(Value::String(dir)), None) if dir.starts_with('/') => {
            Ok(CodeSource::Dir(dir.clone()))
        }
        (Some(dir), None) => Err(reject(
            "code.dir",
            format!("expected an absolute path, {}", got(dir)),
        )),
        (None, Some(Value::String(p))) if is_valid_function_name(p) => {
            Ok(CodeSource::Package(p.clone()))
        }
        (None, Some(p)) => Err(reject(
            "code.package",
            format!(
                "expected a package name (letters, digits, '_' or '-'), {}",
                got(p)
            ),
        )),
        (None, None) => Err(reject(
            "code",
            format!("expected {form}, got an empty object"),
        )),
    }
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
fn check_subject(s: &str) -> Result<(), String> {
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

fn int_in(value: &Value, field: &str, what: &str, lo: u64, hi: u64) -> Result<u64, SpecError> {
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
        assert_eq!(spec.code, CodeSource::Dir("/srv/hello".into()));
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
            "colour: unknown field; expected one of runtime, handler, code, subjects, env, timeout_ms, memory_mb, pool"
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

    #[test]
    fn provided_needs_no_handler() {
        let spec = parse(r#"{"runtime":"provided","code":{"dir":"/x"}}"#).unwrap();
        assert_eq!(spec.handler, None);
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
