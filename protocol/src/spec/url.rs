//! `url`: the function URL's auth and CORS, with Lambda's names and limits.

use serde::Serialize;
use serde_json::{Map, Value};

use super::check::{got, int_in, reject, SpecError};

const FIELDS: [&str; 3] = ["auth", "invoke_mode", "cors"];
const CORS_FIELDS: [&str; 6] = [
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credentials",
];
/// Lambda's limits on a function URL's CORS settings.
const MAX_ORIGINS: usize = 100;
const MAX_ORIGIN_LEN: usize = 253;
const MAX_HEADERS: usize = 100;
const MAX_HEADER_LEN: usize = 1024;
const MAX_AGE_S: u64 = 86_400;
/// The methods Lambda's `AllowMethods` takes (at most 6 characters each, so no OPTIONS).
const METHODS: [&str; 7] = ["GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "*"];

/// How the gateway treats requests to the function's URL.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct UrlSpec {
    pub auth: UrlAuth,
    /// `None`: no CORS handling; preflights reach the function like any request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum UrlAuth {
    /// Anyone may call the URL.
    #[default]
    #[serde(rename = "NONE")]
    None,
    /// Only requests SigV4-signed by a key of the gateway's `--http-auth` file that may
    /// call the function.
    #[serde(rename = "AWS_IAM")]
    AwsIam,
}

/// Lambda's function URL CORS settings, answered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// Origins (`https://example.com`), or `*` for all.
    pub allow_origins: Vec<String>,
    /// Methods, or `*` for all (the default).
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for, or `*`.
    pub allow_headers: Vec<String>,
    /// Response headers the browser shows the page.
    pub expose_headers: Vec<String>,
    /// Seconds a browser may keep a preflight's answer; 0: not at all.
    pub max_age: u32,
    pub allow_credentials: bool,
}

pub(super) fn parse_url(value: &Value) -> Result<UrlSpec, SpecError> {
    let Value::Object(obj) = value else {
        return Err(reject(
            "url",
            format!(
                "expected an object such as {{\"auth\": \"AWS_IAM\"}}, {}",
                got(value)
            ),
        ));
    };
    unknown_fields(obj, "url", &FIELDS)?;
    let auth = match obj.get("auth") {
        None | Some(Value::Null) => UrlAuth::None,
        Some(Value::String(s)) if s == "NONE" => UrlAuth::None,
        Some(Value::String(s)) if s == "AWS_IAM" => UrlAuth::AwsIam,
        Some(other) => {
            return Err(reject(
                "url.auth",
                format!("expected \"NONE\" or \"AWS_IAM\", {}", got(other)),
            ))
        }
    };
    match obj.get("invoke_mode") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "BUFFERED" => {}
        Some(Value::String(s)) if s == "RESPONSE_STREAM" => {
            return Err(reject(
                "url.invoke_mode",
                "RESPONSE_STREAM is not supported yet; the gateway sends a function's response whole (\"BUFFERED\")",
            ))
        }
        Some(other) => {
            return Err(reject(
                "url.invoke_mode",
                format!("expected \"BUFFERED\", {}", got(other)),
            ))
        }
    }
    let cors = match obj.get("cors") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_cors(v)?),
    };
    Ok(UrlSpec { auth, cors })
}

fn parse_cors(value: &Value) -> Result<Cors, SpecError> {
    let Value::Object(obj) = value else {
        return Err(reject(
            "url.cors",
            format!(
                "expected an object such as {{\"allow_origins\": [\"https://example.com\"]}}, {}",
                got(value)
            ),
        ));
    };
    unknown_fields(obj, "url.cors", &CORS_FIELDS)?;
    let allow_origins = strings(obj, "allow_origins", MAX_ORIGINS, |origin| {
        let valid = origin == "*"
            || (origin.len() <= MAX_ORIGIN_LEN
                && origin.contains("://")
                && origin.bytes().all(|b| b.is_ascii_graphic()));
        valid
            .then_some(())
            .ok_or("expected an origin (scheme://host[:port], at most 253 characters) or \"*\"")
    })?
    .unwrap_or_default();
    let allow_methods = strings(obj, "allow_methods", METHODS.len() - 1, |method| {
        METHODS
            .contains(&method)
            .then_some(())
            .ok_or("expected one of GET, PUT, HEAD, POST, PATCH, DELETE or \"*\"")
    })?
    .unwrap_or_else(|| vec!["*".into()]);
    let header = |name: &str| {
        let valid = name == "*"
            || ((1..=MAX_HEADER_LEN).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)));
        valid
            .then_some(())
            .ok_or("expected a header name (at most 1024 characters) or \"*\"")
    };
    let allow_headers = strings(obj, "allow_headers", MAX_HEADERS, header)?.unwrap_or_default();
    let expose_headers = strings(obj, "expose_headers", MAX_HEADERS, header)?.unwrap_or_default();
    let max_age = match obj.get("max_age") {
        None | Some(Value::Null) => 0,
        Some(v) => int_in(v, "url.cors.max_age", "an integer of seconds", 0, MAX_AGE_S)? as u32,
    };
    let allow_credentials = match obj.get("allow_credentials") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(reject(
                "url.cors.allow_credentials",
                format!("expected true or false, {}", got(other)),
            ))
        }
    };
    Ok(Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
    })
}

fn unknown_fields(obj: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), SpecError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(reject(
            format!("{at}.{unknown}"),
            format!("unknown field; expected one of {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `url.cors.<name>`: an array of at most `max` strings, each passing `check`; `None`
/// when absent.
fn strings(
    obj: &Map<String, Value>,
    name: &str,
    max: usize,
    check: impl Fn(&str) -> Result<(), &'static str>,
) -> Result<Option<Vec<String>>, SpecError> {
    let field = format!("url.cors.{name}");
    let items = match obj.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(reject(
                field,
                format!("expected an array of strings, {}", got(other)),
            ))
        }
    };
    if items.len() > max {
        return Err(reject(
            field,
            format!("at most {max} entries, got {}", items.len()),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Value::String(text) = item else {
            return Err(reject(at, format!("expected a string, {}", got(item))));
        };
        check(text).map_err(|why| reject(at.clone(), format!("{why}, {}", got(item))))?;
        out.push(text.clone());
    }
    Ok(Some(out))
}
