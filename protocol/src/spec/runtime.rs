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
    let form = match runtime {
        Runtime::Java => JAVA_HANDLER_FORM,
        Runtime::Provided => PROVIDED_HANDLER_FORM,
        Runtime::Python3 | Runtime::Nodejs => {
            "a handler string \"file.function\" (e.g. \"app.handler\")"
        }
    };
    match value {
        None | Some(Value::Null) if runtime == Runtime::Provided => Ok(None),
        None | Some(Value::Null) => Err(reject(
            "handler",
            format!("required for runtime {}; expected {form}", runtime.as_str()),
        )),
        Some(Value::String(h)) => {
            let well_formed = match runtime {
                Runtime::Java => is_java_handler(h),
                Runtime::Provided => is_provided_handler(h),
                Runtime::Python3 | Runtime::Nodejs => is_file_function_handler(h),
            };
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

/// Lambda's limit on a handler string (`Handler` of CreateFunction).
const MAX_HANDLER_LEN: usize = 128;

const PROVIDED_HANDLER_FORM: &str =
    "a handler string of 1 to 128 characters without spaces or control characters, handed to the bootstrap as _HANDLER (e.g. \"bootstrap\")";

/// `file.function` (python3, nodejs): a module and a function, neither empty.
fn is_file_function_handler(handler: &str) -> bool {
    handler
        .rsplit_once('.')
        .is_some_and(|(module, function)| !module.is_empty() && !function.is_empty())
        && !handler.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A `provided` handler means nothing to natsfn: the bootstrap gets it as `_HANDLER`
/// and reads it as it likes. Lambda's own rule: 1 to 128 characters, none of them
/// white space (nor, here, a control character).
fn is_provided_handler(handler: &str) -> bool {
    (1..=MAX_HANDLER_LEN).contains(&handler.chars().count())
        && !handler.chars().any(|c| c.is_whitespace() || c.is_control())
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
