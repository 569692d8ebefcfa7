//! The binding's `async` section: how async invocations are retried, how old one may
//! get, and where their outcome is recorded; and the policy that follows from it, as
//! plain functions of an event's attempt and age.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::check::{got, int_in, reject, SpecError};
use crate::names::is_valid_function_name;

const FIELDS: [&str; 5] = [
    "max_retries",
    "retry_delay_ms",
    "max_event_age_s",
    "on_success",
    "on_failure",
];
/// Lambda's limits: 0 to 2 retries, events from a minute to six hours old.
const MAX_RETRIES: u64 = 2;
const EVENT_AGE_S: (u64, u64) = (60, 21_600);
/// An hour: Lambda's own delays (1 and 2 minutes) fit, a typo of a day does not.
const MAX_RETRY_DELAY_MS: u64 = 3_600_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsyncSpec {
    /// Runs after the first that fails, before the event is a dead letter.
    pub max_retries: u32,
    /// Pause before the first retry; each next one waits twice as long.
    pub retry_delay_ms: u64,
    /// An event older than this is not run again: it is a dead letter.
    pub max_event_age_s: u64,
    /// Subjects that get a destination record of each success / final failure.
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
}

impl Default for AsyncSpec {
    fn default() -> Self {
        AsyncSpec {
            max_retries: 2,
            retry_delay_ms: 1_000,
            max_event_age_s: EVENT_AGE_S.1,
            on_success: None,
            on_failure: None,
        }
    }
}

/// What becomes of an async event whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Enqueue it again, to run as attempt `attempt` after `delay`.
    Retry { attempt: u32, delay: Duration },
    /// A dead letter, for this reason.
    DeadLetter(Condition),
}

/// Why an async invocation ended as it did (Lambda's destination `condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Condition {
    Success,
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Success => "Success",
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

impl AsyncSpec {
    pub(crate) fn parse(value: Option<&Value>) -> Result<AsyncSpec, SpecError> {
        let obj = match value {
            None | Some(Value::Null) => return Ok(AsyncSpec::default()),
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                return Err(reject(
                    "async",
                    format!(
                        "expected an object like {{\"max_retries\": 2}}, {}",
                        got(other)
                    ),
                ))
            }
        };
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(reject(
                format!("async.{unknown}"),
                format!("unknown field; expected one of {}", FIELDS.join(", ")),
            ));
        }
        let defaults = AsyncSpec::default();
        let int = |field: &str, what: &str, lo: u64, hi: u64, default: u64| match obj.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => int_in(v, &format!("async.{field}"), what, lo, hi),
        };
        Ok(AsyncSpec {
            max_retries: int(
                "max_retries",
                "an integer number of retries",
                0,
                MAX_RETRIES,
                u64::from(defaults.max_retries),
            )? as u32,
            retry_delay_ms: int(
                "retry_delay_ms",
                "an integer of milliseconds",
                0,
                MAX_RETRY_DELAY_MS,
                defaults.retry_delay_ms,
            )?,
            max_event_age_s: int(
                "max_event_age_s",
                "an integer of seconds",
                EVENT_AGE_S.0,
                EVENT_AGE_S.1,
                defaults.max_event_age_s,
            )?,
            on_success: destination(obj, "on_success")?,
            on_failure: destination(obj, "on_failure")?,
        })
    }

    /// An attempt of an event failed (not a throttle: those are not attempts); `age` is
    /// how long ago it was first enqueued.
    pub fn after_failure(&self, attempt: u32, age: Duration) -> AfterFailure {
        if attempt > self.max_retries {
            return AfterFailure::DeadLetter(Condition::RetriesExhausted);
        }
        let delay = Duration::from_millis(
            self.retry_delay_ms
                .saturating_mul(1 << (attempt - 1).min(16)),
        );
        if age + delay >= self.max_event_age() {
            return AfterFailure::DeadLetter(Condition::EventAgeExceeded);
        }
        AfterFailure::Retry {
            attempt: attempt + 1,
            delay,
        }
    }

    pub fn max_event_age(&self) -> Duration {
        Duration::from_secs(self.max_event_age_s)
    }
}

/// A subject one message is published to: no wildcards, nothing of the server's, and
/// of natsfn's own only another function's async subject (a chain of functions).
fn destination(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, SpecError> {
    let name = format!("async.{field}");
    let subject = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(reject(
                name,
                format!("expected a NATS subject, {}", got(other)),
            ))
        }
    };
    let quoted = Value::String(subject.clone());
    let tokens: Vec<&str> = subject.split('.').collect();
    let plain = !subject.is_empty()
        && tokens.iter().all(|t| {
            !t.is_empty()
                && !t
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
        });
    if !plain {
        return Err(reject(
            name,
            format!("expected a NATS subject to publish to (dot-separated tokens, no spaces or wildcards), got {quoted}"),
        ));
    }
    let chained = tokens.len() == 3
        && tokens[0] == "natsfn"
        && tokens[1] == "async"
        && is_valid_function_name(tokens[2]);
    if tokens[0].starts_with('$') || tokens[0] == "_INBOX" || (tokens[0] == "natsfn" && !chained) {
        return Err(reject(
            name,
            format!("{quoted} is the server's or natsfn's own; of natsfn's subjects only another function's \"natsfn.async.<function>\" may be a destination"),
        ));
    }
    Ok(Some(subject.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<AsyncSpec, SpecError> {
        let value: Value = serde_json::from_str(json).expect("json");
        AsyncSpec::parse(Some(&value))
    }

    #[test]
    fn defaults_are_lambdas_and_bad_values_name_their_field() {
        assert_eq!(AsyncSpec::parse(None), Ok(AsyncSpec::default()));
        let spec = parse(r#"{"max_retries": 0, "on_failure": "orders.failed"}"#).expect("valid");
        assert_eq!(spec.max_retries, 0);
        assert_eq!(spec.on_failure.as_deref(), Some("orders.failed"));
        let err = |json: &str| parse(json).expect_err("rejected").to_string();
        assert_eq!(
            err(r#"{"max_retries": 3}"#),
            "async.max_retries: expected an integer number of retries from 0 to 2, got 3"
        );
        assert!(err(r#"{"retries": 1}"#).starts_with("async.retries: unknown field"));
        assert!(err(r#"{"max_event_age_s": 10}"#).contains("from 60 to 21600"));
        assert!(err(r#"{"on_success": "a.*"}"#)
            .starts_with("async.on_success: expected a NATS subject"));
        assert!(err(r#"{"on_success": "natsfn.logs.x"}"#).contains("natsfn's own"));
        assert!(
            parse(r#"{"on_success": "natsfn.async.next-step"}"#).is_ok(),
            "a chain"
        );
    }

    #[test]
    fn failures_retry_with_doubling_delays_then_are_dead_letters() {
        let spec = AsyncSpec {
            retry_delay_ms: 100,
            ..AsyncSpec::default()
        };
        let age = Duration::from_secs(1);
        assert_eq!(
            spec.after_failure(1, age),
            AfterFailure::Retry {
                attempt: 2,
                delay: Duration::from_millis(100)
            }
        );
        assert_eq!(
            spec.after_failure(2, age),
            AfterFailure::Retry {
                attempt: 3,
                delay: Duration::from_millis(200)
            }
        );
        assert_eq!(
            spec.after_failure(3, age),
            AfterFailure::DeadLetter(Condition::RetriesExhausted),
            "1 + max_retries attempts"
        );
        let none = AsyncSpec {
            max_retries: 0,
            ..spec.clone()
        };
        assert_eq!(
            none.after_failure(1, age),
            AfterFailure::DeadLetter(Condition::RetriesExhausted)
        );
        let old = Duration::from_secs(spec.max_event_age_s);
        assert_eq!(
            spec.after_failure(1, old),
            AfterFailure::DeadLetter(Condition::EventAgeExceeded)
        );
    }
}
