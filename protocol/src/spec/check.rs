//! The helpers every part of the spec's validation shares: the error naming a field,
//! and how a wrong value is quoted back.

use std::fmt;

use serde_json::Value;

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
