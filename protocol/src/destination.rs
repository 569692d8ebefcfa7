//! The record an async invocation's destination gets (`async.on_success` /
//! `async.on_failure`), in the shape of Lambda's destination records.

use serde_json::{json, Value};

use crate::async_spec::Condition;

/// What one async invocation came to.
pub struct DestinationRecord<'a> {
    /// RFC 3339.
    pub timestamp: &'a str,
    pub request_id: &'a str,
    pub function_arn: &'a str,
    /// What the invocation named: `$LATEST`, a version or an alias (the ARN's suffix).
    pub qualifier: &'a str,
    /// The version that ran it (`$LATEST` or a number).
    pub executed_version: &'a str,
    pub condition: Condition,
    pub attempts: u32,
    pub request_payload: &'a [u8],
    /// 200 for a success and for the handler's own errors; otherwise the error code.
    pub status_code: u16,
    /// The handler raised or returned an error (Lambda's `functionError`).
    pub function_error: bool,
    /// The result, or the error body.
    pub response_payload: &'a [u8],
}

impl DestinationRecord<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        let mut response_context = json!({
            "statusCode": self.status_code,
            "executedVersion": self.executed_version,
        });
        if self.function_error {
            response_context["functionError"] = json!("Unhandled");
        }
        let record = json!({
            "version": "1.0",
            "timestamp": self.timestamp,
            "requestContext": {
                "requestId": self.request_id,
                "functionArn": format!("{}:{}", self.function_arn, self.qualifier),
                "condition": self.condition.as_str(),
                "approximateInvokeCount": self.attempts,
            },
            "requestPayload": embedded(self.request_payload),
            "responseContext": response_context,
            "responsePayload": embedded(self.response_payload),
        });
        record.to_string().into_bytes()
    }
}

/// A payload as a JSON value when it is JSON (as Lambda embeds it), else as a string.
fn embedded(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_record_embeds_the_event_and_the_error() {
        let record = DestinationRecord {
            timestamp: "2026-12-02T10:00:00Z",
            request_id: "r-1",
            function_arn: "arn:aws:lambda:local:000000000000:function:f",
            qualifier: "$LATEST",
            executed_version: "$LATEST",
            condition: Condition::RetriesExhausted,
            attempts: 3,
            request_payload: br#"{"order": 7}"#,
            status_code: 200,
            function_error: true,
            response_payload: br#"{"errorType": "ValueError", "errorMessage": "no"}"#,
        };
        let value: Value = serde_json::from_slice(&record.to_json()).expect("json");
        assert_eq!(value["requestContext"]["condition"], "RetriesExhausted");
        assert_eq!(value["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(
            value["requestContext"]["functionArn"],
            "arn:aws:lambda:local:000000000000:function:f:$LATEST"
        );
        assert_eq!(value["requestPayload"]["order"], 7);
        assert_eq!(value["responseContext"]["functionError"], "Unhandled");
        assert_eq!(value["responsePayload"]["errorType"], "ValueError");
        let text = DestinationRecord {
            request_payload: b"not json",
            ..record
        };
        let value: Value = serde_json::from_slice(&text.to_json()).expect("json");
        assert_eq!(value["requestPayload"], "not json");
    }
}
