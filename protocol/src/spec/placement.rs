//! `placement`: the node labels a function asks for.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::check::{got, reject, SpecError};

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

pub(super) fn parse_placement(value: &Value) -> Result<Placement, SpecError> {
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
