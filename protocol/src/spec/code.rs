//! `code` and `layers`: a local directory or packages of `natsfn-packages`, pinned by
//! digest.

use serde::Serialize;
use serde_json::{Map, Value};

use super::check::{got, reject, SpecError};
use crate::names::is_valid_function_name;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CodeSource {
    /// An object in the `natsfn-packages` Object Store.
    Package(PackageRef),
    /// A local absolute directory (development on one machine).
    Dir { dir: String },
}

/// A package of `natsfn-packages`, as code or as a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageRef {
    pub package: String,
    /// `sha256:<64 lowercase hex>` of the object's bytes; none: whatever the object
    /// holds when the binding is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Lambda's limit of layers per function.
pub const MAX_LAYERS: usize = 5;

pub(super) fn parse_code(value: Option<&Value>) -> Result<CodeSource, SpecError> {
    let form =
        "{\"dir\": \"/absolute/path\"} or {\"package\": \"name\", \"digest\": \"sha256:...\"}";
    let obj = match value {
        None => return Err(reject("code", format!("required; expected {form}"))),
        Some(Value::Object(obj)) => obj,
        Some(other) => return Err(reject("code", format!("expected {form}, {}", got(other)))),
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !["dir", "package", "digest"].contains(&k.as_str()))
    {
        return Err(reject(
            format!("code.{unknown}"),
            "unknown field; expected \"dir\", or \"package\" and \"digest\"",
        ));
    }
    match (obj.get("dir"), obj.get("package")) {
        (Some(_), Some(_)) => Err(reject(
            "code",
            "give either \"dir\" or \"package\", not both",
        )),
        (Some(_), None) if obj.contains_key("digest") => Err(reject(
            "code.digest",
            "a digest pins a package; \"dir\" has none",
        )),
        (Some(Value::String(dir)), None) if dir.starts_with('/') => {
            Ok(CodeSource::Dir { dir: dir.clone() })
        }
        (Some(dir), None) => Err(reject(
            "code.dir",
            format!("expected an absolute path, {}", got(dir)),
        )),
        (None, Some(_)) => parse_package_ref(obj, "code").map(CodeSource::Package),
        (None, None) => Err(reject(
            "code",
            format!("expected {form}, got an empty object"),
        )),
    }
}

/// `{"package": NAME, "digest": "sha256:<hex>"}` (digest optional) at `field`.
fn parse_package_ref(obj: &Map<String, Value>, field: &str) -> Result<PackageRef, SpecError> {
    let package = match obj.get("package") {
        Some(Value::String(p)) if is_valid_package_object(p) => p.clone(),
        Some(p) => {
            return Err(reject(
                format!("{field}.package"),
                format!(
                    "expected a package name (1 to 64 letters, digits, '_' or '-'), or a version's frozen copy NAME@sha256:HEX, {}",
                    got(p)
                ),
            ))
        }
        None => return Err(reject(format!("{field}.package"), "required")),
    };
    let digest = match obj.get("digest") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if is_sha256_digest(d) => Some(d.clone()),
        Some(d) => {
            return Err(reject(
                format!("{field}.digest"),
                format!(
                    "expected \"sha256:\" and 64 lowercase hex digits, {}",
                    got(d)
                ),
            ))
        }
    };
    Ok(PackageRef { package, digest })
}

/// A package's object in `natsfn-packages`: a package name, or the frozen copy
/// `natsfn publish` keeps for a version, `<name>@sha256:<hex>`, which no deploy writes.
pub fn is_valid_package_object(text: &str) -> bool {
    match text.split_once('@') {
        None => is_valid_function_name(text),
        Some((name, digest)) => is_valid_function_name(name) && is_sha256_digest(digest),
    }
}

/// The object `natsfn publish` freezes a package's bytes in: `<name>@sha256:<hex>`.
pub fn frozen_package_object(name: &str, digest: &str) -> String {
    let base = name.split_once('@').map_or(name, |(base, _)| base);
    format!("{base}@{digest}")
}

/// `sha256:` and 64 lowercase hex digits, as `natsfn deploy` writes it.
pub fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

pub(super) fn parse_layers(value: &Value) -> Result<Vec<PackageRef>, SpecError> {
    let form = "an array of {\"package\": \"name\", \"digest\": \"sha256:...\"}";
    let Value::Array(items) = value else {
        return Err(reject("layers", format!("expected {form}, {}", got(value))));
    };
    if items.len() > MAX_LAYERS {
        return Err(reject(
            "layers",
            format!("at most {MAX_LAYERS} layers, got {}", items.len()),
        ));
    }
    let mut layers: Vec<PackageRef> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("layers[{i}]");
        let Value::Object(obj) = item else {
            return Err(reject(
                field,
                format!("expected {{\"package\": \"name\"}}, {}", got(item)),
            ));
        };
        if let Some(unknown) = obj.keys().find(|k| *k != "package" && *k != "digest") {
            return Err(reject(
                format!("{field}.{unknown}"),
                "unknown field; expected \"package\" and \"digest\"",
            ));
        }
        let layer = parse_package_ref(obj, &field)?;
        if layers.iter().any(|l| l.package == layer.package) {
            return Err(reject(
                format!("{field}.package"),
                format!("{:?} is already a layer of this binding", layer.package),
            ));
        }
        layers.push(layer);
    }
    Ok(layers)
}
