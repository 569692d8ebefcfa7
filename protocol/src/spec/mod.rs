//! The binding spec: the JSON value of a key in `natsfn-bindings`, written by hand or by
//! the CLI. Parsing walks the JSON itself so that every rejection names the field and
//! what was expected, in the words a person editing the JSON needs.

pub mod async_spec;
mod check;
mod code;
mod nats_access;
mod placement;
mod pool;
mod runtime;
mod url;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::names::is_valid_function_name;
pub use async_spec::AsyncSpec;
pub use check::SpecError;
use check::{got, int_in, reject};
pub use code::{
    frozen_package_object, is_sha256_digest, is_valid_package_object, CodeSource, PackageRef,
    MAX_LAYERS,
};
use code::{parse_code, parse_layers};
use nats_access::parse_nats_access;
pub use nats_access::NatsAccess;
use placement::parse_placement;
pub use placement::{is_valid_label, Placement};
use pool::parse_pool;
pub use pool::{PoolSpec, DEFAULT_POOL};
pub use runtime::Runtime;
use runtime::{parse_handler, parse_runtime};
use url::parse_url;
pub use url::{Cors, UrlAuth, UrlSpec};

pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// Lambda's own limits.
const MAX_TIMEOUT_MS: u64 = 900_000;
const MEMORY_MB_RANGE: (u64, u64) = (128, 10_240);
/// The largest `reserved_concurrency`.
pub const MAX_RESERVED_CONCURRENCY: u64 = 100_000;
pub const DEFAULT_EPHEMERAL_STORAGE_MB: u32 = 512;
const EPHEMERAL_STORAGE_MB_RANGE: (u64, u64) = (512, 10_240);

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
    /// `None`: the handler gets no NATS credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsAccess>,
    /// The function URL's auth and CORS; `None`: no auth, no CORS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlSpec>,
    /// What the worker's sandbox lets it reach.
    pub network: Network,
    /// The size of the worker's private `/tmp`.
    pub ephemeral_storage_mb: u32,
    /// Invocations running at once across every node and version; `None`: no cap but
    /// each node's `pool.max`; `0` throttles every invocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_concurrency: Option<u32>,
}

/// A worker's network (binding field `network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The node's own network.
    #[default]
    Full,
    /// Only the NATS servers (through the node's relay).
    Nats,
    /// Loopback only, its own.
    None,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Full => "full",
            Network::Nats => "nats",
            Network::None => "none",
        }
    }
}

const FIELDS: [&str; 16] = [
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
    "reserved_concurrency",
];

/// Environment variables the runtime sets itself; a binding may not override them.
const RESERVED_ENV_PREFIXES: [&str; 4] = ["AWS_LAMBDA_", "LAMBDA_", "NATSFN_", "_HANDLER"];
const RESERVED_ENV: [&str; 2] = ["AWS_EXECUTION_ENV", "AWS_LAMBDA_RUNTIME_API"];
/// What a handler's NATS connection could be told through: natsfn sets the first three
/// from the binding's `nats` and never any of the others.
const RESERVED_NATS_ENV: [&str; 10] = [
    "NATS_URL",
    "NATS_CREDS",
    "NATS_INBOX_PREFIX",
    "NATS_NKEY",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_CERT",
    "NATS_KEY",
    "NATS_CONTEXT",
];

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
        let nats = match obj.get("nats") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_nats_access(v)?),
        };
        let url = match obj.get("url") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_url(v)?),
        };
        let network = match obj.get("network") {
            None | Some(Value::Null) => Network::Full,
            Some(Value::String(s)) if s == "full" => Network::Full,
            Some(Value::String(s)) if s == "nats" => Network::Nats,
            Some(Value::String(s)) if s == "none" => Network::None,
            Some(v) => {
                return Err(reject(
                    "network",
                    format!("expected \"full\", \"nats\" or \"none\", {}", got(v)),
                ))
            }
        };
        let ephemeral_storage_mb = match obj.get("ephemeral_storage_mb") {
            None => DEFAULT_EPHEMERAL_STORAGE_MB,
            Some(v) => int_in(
                v,
                "ephemeral_storage_mb",
                "an integer of megabytes",
                EPHEMERAL_STORAGE_MB_RANGE.0,
                EPHEMERAL_STORAGE_MB_RANGE.1,
            )? as u32,
        };
        let reserved_concurrency = match obj.get("reserved_concurrency") {
            None | Some(Value::Null) => None,
            Some(v) => Some(int_in(
                v,
                "reserved_concurrency",
                "an integer of invocations at once",
                0,
                MAX_RESERVED_CONCURRENCY,
            )? as u32),
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
            nats,
            url,
            network,
            ephemeral_storage_mb,
            reserved_concurrency,
        })
    }

    /// The spec as JSON, every default written out.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and maps of strings always serialise.
        serde_json::to_vec(self).unwrap_or_default()
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
pub(crate) fn check_subject(s: &str) -> Result<(), String> {
    let quoted = Value::String(s.to_owned());
    if !is_subject_pattern(s) {
        return Err(format!(
            "expected a NATS subject (dot-separated tokens without spaces; '*' or a final '>' as whole tokens), got {quoted}"
        ));
    }
    let first = s.split('.').next().unwrap_or_default();
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

/// NATS subject syntax: dot-separated tokens without spaces, `*` or a final `>` as
/// whole tokens.
pub(crate) fn is_subject_pattern(s: &str) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    !s.is_empty()
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.chars().any(|c| c.is_whitespace() || c.is_control())
                && (!t.contains(['*', '>']) || *t == "*" || *t == ">")
                && (*t != ">" || i == tokens.len() - 1)
        })
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
        if RESERVED_NATS_ENV.contains(&key.as_str()) {
            return Err(reject(
                field,
                "reserved: a handler gets NATS credentials only through the binding's `nats` field",
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

#[cfg(test)]
mod tests;
