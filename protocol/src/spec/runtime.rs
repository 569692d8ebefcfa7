//! `runtime` and `handler`: which runtime runs the function, and the handler string in
//! the form that runtime expects.

use serde::Serialize;
use serde_json::Value;

use super::check::{got, reject, SpecError};

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

pub(super) fn parse_runtime(value: Option<&Value>) -> Result<Runtime, SpecError> {
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

pub(super) fn parse_handler(
    runtime: Runtime,
    value: Option<&Value>,
) -> Result<Option<String>, SpecError> {
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
