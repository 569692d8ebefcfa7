//! `nats`: the NATS subjects a handler's own credentials may publish and subscribe to.

use serde::Serialize;
use serde_json::Value;

use super::check::{got, reject, SpecError};
use super::is_subject_pattern;

/// At most this many subjects in each of `publish` and `subscribe`.
const MAX_NATS_SUBJECTS: usize = 32;
/// The longest subject (in bytes) either list takes.
const MAX_NATS_SUBJECT_BYTES: usize = 128;
/// The subjects of both lists together, in bytes. They travel in the handler's user
/// JWT, which its client sends in its CONNECT: that line must fit nats-server's
/// `max_control_line` (4 KB unless configured), base64 and all.
const MAX_NATS_ACCESS_BYTES: usize = 1_536;
const NATS_FIELDS: [&str; 2] = ["publish", "subscribe"];

/// What the handler's NATS user may do besides its private inbox: publish to these
/// subjects and subscribe to those (wildcards allowed), nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatsAccess {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

pub(super) fn parse_nats_access(value: &Value) -> Result<NatsAccess, SpecError> {
    let Value::Object(obj) = value else {
        return Err(reject(
            "nats",
            format!(
                "expected an object such as {{\"publish\": [\"orders.>\"], \"subscribe\": [\"prices.>\"]}}, {}",
                got(value)
            ),
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| !NATS_FIELDS.contains(&k.as_str())) {
        return Err(reject(
            format!("nats.{unknown}"),
            "unknown field; expected publish, subscribe",
        ));
    }
    let access = NatsAccess {
        publish: subject_list(obj.get("publish"), "nats.publish")?,
        subscribe: subject_list(obj.get("subscribe"), "nats.subscribe")?,
    };
    let bytes: usize = access
        .publish
        .iter()
        .chain(&access.subscribe)
        .map(String::len)
        .sum();
    if bytes > MAX_NATS_ACCESS_BYTES {
        return Err(reject(
            "nats",
            format!(
                "the subjects take {bytes} bytes together, at most {MAX_NATS_ACCESS_BYTES} (they travel in the handler's JWT, which must fit a NATS control line; use wildcards)"
            ),
        ));
    }
    Ok(access)
}

fn subject_list(value: Option<&Value>, field: &str) -> Result<Vec<String>, SpecError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(reject(
                field,
                format!("expected an array of NATS subjects, {}", got(other)),
            ))
        }
    };
    if items.len() > MAX_NATS_SUBJECTS {
        return Err(reject(
            field,
            format!(
                "at most {MAX_NATS_SUBJECTS} subjects, got {} (use wildcards)",
                items.len()
            ),
        ));
    }
    let mut subjects: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let Value::String(s) = item else {
            return Err(reject(
                field,
                format!("expected a NATS subject, {}", got(item)),
            ));
        };
        if s.len() > MAX_NATS_SUBJECT_BYTES {
            return Err(reject(
                field,
                format!(
                    "a subject of at most {MAX_NATS_SUBJECT_BYTES} bytes, got {}",
                    s.len()
                ),
            ));
        }
        if !is_subject_pattern(s) {
            return Err(reject(
                field,
                format!(
                    "expected a NATS subject (dot-separated tokens without spaces; '*' or a final '>' as whole tokens), {}",
                    got(item)
                ),
            ));
        }
        if !subjects.contains(s) {
            subjects.push(s.clone());
        }
    }
    Ok(subjects)
}

#[cfg(test)]
mod tests {
    use crate::spec::BindingSpec;

    fn with_nats(nats: &str) -> Result<BindingSpec, String> {
        let json = format!(r#"{{"runtime":"provided","code":{{"dir":"/x"}},"nats":{nats}}}"#);
        BindingSpec::parse("f", json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn subjects_and_wildcards_are_kept_once_each() {
        let spec = with_nats(
            r#"{"publish":["orders.>","orders.>","$KV.prices.*"],"subscribe":["prices.*.eu"]}"#,
        )
        .expect("valid");
        let access = spec.nats.expect("nats");
        assert_eq!(access.publish, ["orders.>", "$KV.prices.*"]);
        assert_eq!(access.subscribe, ["prices.*.eu"]);
        let again = BindingSpec::parse("f", &spec_json(&access)).expect("round trip");
        assert_eq!(again.nats, Some(access));
    }

    fn spec_json(access: &super::NatsAccess) -> Vec<u8> {
        let nats = serde_json::to_string(access).expect("json");
        format!(r#"{{"runtime":"provided","code":{{"dir":"/x"}},"nats":{nats}}}"#).into_bytes()
    }

    #[test]
    fn lists_are_optional_and_no_field_means_no_credentials() {
        let spec = with_nats("{}").expect("valid");
        let access = spec.nats.expect("nats");
        assert!(access.publish.is_empty() && access.subscribe.is_empty());
        let none = BindingSpec::parse("f", br#"{"runtime":"provided","code":{"dir":"/x"}}"#)
            .expect("valid");
        assert_eq!(none.nats, None);
    }

    #[test]
    fn every_rejection_names_the_field() {
        let cases = [
            (r#"["a"]"#, "nats: expected an object"),
            (r#"{"pub":["a"]}"#, "nats.pub: unknown field"),
            (r#"{"publish":"a"}"#, "nats.publish: expected an array"),
            (
                r#"{"publish":[1]}"#,
                "nats.publish[0]: expected a NATS subject, got 1",
            ),
            (
                r#"{"subscribe":["a..b"]}"#,
                "nats.subscribe[0]: expected a NATS subject",
            ),
            (
                r#"{"subscribe":["a.>.b"]}"#,
                "nats.subscribe[0]: expected a NATS subject",
            ),
            (
                r#"{"publish":["a.b*"]}"#,
                "nats.publish[0]: expected a NATS subject",
            ),
            (
                r#"{"publish":["a b"]}"#,
                "nats.publish[0]: expected a NATS subject",
            ),
            (
                r#"{"publish":[""]}"#,
                "nats.publish[0]: expected a NATS subject",
            ),
        ];
        for (nats, expected) in cases {
            let err = with_nats(nats).expect_err(nats);
            assert!(err.starts_with(expected), "{nats}: {err}");
        }
    }

    #[test]
    fn a_binding_env_cannot_give_nats_credentials() {
        for name in ["NATS_URL", "NATS_CREDS", "NATS_TOKEN", "NATS_CONTEXT"] {
            let json =
                format!(r#"{{"runtime":"provided","code":{{"dir":"/x"}},"env":{{"{name}":"x"}}}}"#);
            let err = BindingSpec::parse("f", json.as_bytes()).expect_err(name);
            assert_eq!(
                err.to_string(),
                format!("env.{name}: reserved: a handler gets NATS credentials only through the binding's `nats` field")
            );
        }
    }

    #[test]
    fn counts_and_lengths_are_bounded() {
        let many: Vec<String> = (0..=super::MAX_NATS_SUBJECTS)
            .map(|i| format!("\"s{i}\""))
            .collect();
        let err = with_nats(&format!(r#"{{"publish":[{}]}}"#, many.join(","))).expect_err("many");
        assert!(
            err.starts_with("nats.publish: at most 32 subjects, got 33"),
            "{err}"
        );
        let long = "a".repeat(super::MAX_NATS_SUBJECT_BYTES + 1);
        let err = with_nats(&format!(r#"{{"subscribe":["{long}"]}}"#)).expect_err("long");
        assert!(
            err.starts_with("nats.subscribe[0]: a subject of at most 128 bytes"),
            "{err}"
        );
    }
}
