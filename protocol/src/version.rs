//! Versions and aliases (Lambda's): the values of `natsfn-versions` and
//! `natsfn-aliases`, qualifiers, and the weighted choice an alias makes per invocation.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::{check_subject, BindingSpec, SpecError};

/// The qualifier of the binding as edited.
pub const LATEST: &str = "$LATEST";
/// Lambda's limit on an alias name's length.
const MAX_ALIAS_LEN: usize = 64;

/// What an invocation names besides the function: the binding as edited, a version,
/// or an alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qualifier {
    Latest,
    Version(u64),
    Alias(String),
}

impl Qualifier {
    /// `$LATEST`, a version number (1 and up) or an alias name.
    pub fn parse(text: &str) -> Result<Qualifier, String> {
        if text == LATEST {
            return Ok(Qualifier::Latest);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(Qualifier::Version(n)),
                _ => Err(format!(
                    "qualifier {text:?}: a version is a number from 1 up"
                )),
            };
        }
        if is_valid_alias_name(text) {
            Ok(Qualifier::Alias(text.to_owned()))
        } else {
            Err(format!(
                "qualifier {text:?}: expected $LATEST, a version number or an alias name \
                 (1 to {MAX_ALIAS_LEN} letters, digits, '_' or '-', not all digits)"
            ))
        }
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Qualifier::Latest => f.write_str(LATEST),
            Qualifier::Version(n) => write!(f, "{n}"),
            Qualifier::Alias(a) => f.write_str(a),
        }
    }
}

/// Alias names: 1 to 64 of `A-Za-z0-9_-`, not all digits (that is a version), so that
/// they are one NATS subject token and a KV key part.
pub fn is_valid_alias_name(name: &str) -> bool {
    (1..=MAX_ALIAS_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.bytes().all(|b| b.is_ascii_digit())
}

/// The key of version `n` of `function` in `natsfn-versions`.
pub fn version_key(function: &str, n: u64) -> String {
    format!("{function}.{n}")
}

/// The key of `alias` of `function` in `natsfn-aliases`.
pub fn alias_key(function: &str, alias: &str) -> String {
    format!("{function}.{alias}")
}

/// A key of `natsfn-versions` read back: (function, version). The counter key (the
/// function's name alone) and anything else give `None`.
pub fn parse_version_key(key: &str) -> Option<(&str, u64)> {
    let (function, n) = key.split_once('.')?;
    let n: u64 = n.parse().ok().filter(|n| *n >= 1)?;
    crate::names::is_valid_function_name(function).then_some((function, n))
}

/// A key of `natsfn-aliases` read back: (function, alias).
pub fn parse_alias_key(key: &str) -> Option<(&str, &str)> {
    let (function, alias) = key.split_once('.')?;
    (crate::names::is_valid_function_name(function) && is_valid_alias_name(alias))
        .then_some((function, alias))
}

/// The value of `<fn>` (the function's name alone) in `natsfn-versions`: the last
/// version number given out, so that numbers are never reused, also after `version rm`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCounter {
    pub last: u64,
}

/// The value of `<fn>.<N>` in `natsfn-versions`: an immutable copy of the binding, its
/// code (and layers) pinned to objects no deploy overwrites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    #[serde(default)]
    pub description: String,
    /// RFC 3339.
    #[serde(default)]
    pub created: String,
    /// The binding revision it was published from.
    #[serde(default)]
    pub from_revision: u64,
    /// The binding's JSON as published, code pinned.
    pub binding: Value,
}

impl VersionRecord {
    /// The version's spec: its frozen binding, validated as any binding is.
    pub fn spec(&self, function: &str) -> Result<BindingSpec, SpecError> {
        let json = serde_json::to_vec(&self.binding).unwrap_or_default();
        BindingSpec::parse(function, &json)
    }
}

/// A canary's progress, kept in its alias' value so that any node continues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryState {
    Running,
    Promoted,
    RolledBack,
}

/// Invocation counts of a version on one service instance (a node's FunctionActor of
/// that version), as its `$SRV.STATS` reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    pub requests: u64,
    /// 5xx outcomes: the handler failed, the worker died, timed out or could not start.
    pub errors: u64,
}

/// The lease of the node driving a canary: renewed by compare-and-swap on the alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: String,
    /// Unix ms; past it another node may take the canary over.
    pub until_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// Fractions of invocations the new version gets, step by step; the last is 1.
    pub steps: Vec<f64>,
    /// The step running (index into `steps`).
    pub step: usize,
    pub every_ms: u64,
    /// Above this fraction of 5xx outcomes the alias goes back to `from`.
    pub max_error_rate: f64,
    /// Invocations of the new version before its error rate is judged.
    pub min_sample: u64,
    /// The version the alias pointed at before.
    pub from: u64,
    pub state: CanaryState,
    /// Why it was rolled back (rate, sample), or how it ended.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix ms when the current step began.
    #[serde(default)]
    pub step_started_ms: u64,
    /// What the new version had served on each service instance when last counted
    /// (first when the canary began): only invocations past it are added to
    /// `observed`, and an instance that stops answering keeps what it served counted.
    /// Instances that served nothing are left out. `None` until the driving node has
    /// read it (on its first turn).
    #[serde(default)]
    pub baseline: Option<BTreeMap<String, Outcomes>>,
    /// The new version's invocations and 5xx outcomes since the canary began, as last
    /// judged.
    #[serde(default)]
    pub observed: Outcomes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// The value of `<fn>.<alias>` in `natsfn-aliases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasRecord {
    pub version: u64,
    /// At most one extra version and the fraction (0 < f < 1) of invocations it gets.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
    /// NATS subjects bound to the alias (its production subjects).
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Workers of the alias' version kept warm across the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// Most provisioned workers an alias may ask for.
pub const MAX_PROVISIONED: u32 = 1_024;

impl AliasRecord {
    /// Parses and validates an alias' value; the error names the field.
    pub fn parse(json: &[u8]) -> Result<AliasRecord, String> {
        let record: AliasRecord =
            serde_json::from_slice(json).map_err(|e| format!("invalid alias: {e}"))?;
        record.validate()?;
        Ok(record)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.version == 0 {
            return Err("version: expected a version number from 1 up".into());
        }
        if self.weights.len() > 1 {
            return Err("weights: an alias has at most one extra weighted version".into());
        }
        for (version, fraction) in &self.weights {
            match version.parse::<u64>() {
                Ok(n) if n >= 1 && n != self.version => {}
                _ => {
                    return Err(format!(
                        "weights: {version:?} is not a version other than the alias' own"
                    ))
                }
            }
            if !(fraction.is_finite() && *fraction > 0.0 && *fraction < 1.0) {
                return Err(format!(
                    "weights.{version}: expected a fraction between 0 and 1 (exclusive), got {fraction}"
                ));
            }
        }
        for (i, subject) in self.subjects.iter().enumerate() {
            check_subject(subject).map_err(|why| format!("subjects[{i}]: {why}"))?;
        }
        if self.provisioned.is_some_and(|p| p > MAX_PROVISIONED) {
            return Err(format!("provisioned: at most {MAX_PROVISIONED} workers"));
        }
        if let Some(canary) = &self.canary {
            canary.validate()?;
        }
        Ok(())
    }

    /// The extra weighted version and its fraction, if any.
    pub fn extra(&self) -> Option<(u64, f64)> {
        self.weights
            .iter()
            .find_map(|(v, f)| v.parse::<u64>().ok().map(|v| (v, *f)))
    }

    /// Every version the alias routes to.
    pub fn versions(&self) -> Vec<u64> {
        std::iter::once(self.version)
            .chain(self.extra().map(|(v, _)| v))
            .collect()
    }

    /// Which version an invocation goes to, given `roll` uniform in [0, 1).
    pub fn choose(&self, roll: f64) -> u64 {
        match self.extra() {
            Some((extra, fraction)) if roll < fraction => extra,
            _ => self.version,
        }
    }
}

impl Canary {
    fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() || self.steps.len() > 100 {
            return Err("canary.steps: expected 1 to 100 steps".into());
        }
        let mut last = 0.0;
        for step in &self.steps {
            if !(step.is_finite() && *step > last && *step <= 1.0) {
                return Err(format!(
                    "canary.steps: expected rising fractions above 0 up to 1, got {step}"
                ));
            }
            last = *step;
        }
        if last != 1.0 {
            return Err("canary.steps: the last step must be 100%".into());
        }
        if self.step >= self.steps.len() {
            return Err("canary.step: past the last step".into());
        }
        if self.every_ms == 0 {
            return Err("canary.every_ms: expected a positive duration".into());
        }
        if !(self.max_error_rate.is_finite() && (0.0..=1.0).contains(&self.max_error_rate)) {
            return Err("canary.max_error_rate: expected a fraction from 0 to 1".into());
        }
        Ok(())
    }
}

/// `10%`, `0.1` or `10`: a fraction. Percent signs and numbers above 1 read as percent.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, percent) = match trimmed.strip_suffix('%') {
        Some(n) => (n, true),
        None => (trimmed, false),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a fraction like 10% or 0.1"))?;
    let fraction = if percent || value > 1.0 {
        value / 100.0
    } else {
        value
    };
    if fraction.is_finite() && (0.0..=1.0).contains(&fraction) {
        Ok(fraction)
    } else {
        Err(format!("{text:?}: expected a fraction from 0% to 100%"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifiers() {
        assert_eq!(Qualifier::parse("$LATEST"), Ok(Qualifier::Latest));
        assert_eq!(Qualifier::parse("7"), Ok(Qualifier::Version(7)));
        assert_eq!(
            Qualifier::parse("live"),
            Ok(Qualifier::Alias("live".into()))
        );
        assert_eq!(
            Qualifier::parse("v2-beta"),
            Ok(Qualifier::Alias("v2-beta".into()))
        );
        assert!(Qualifier::parse("0").is_err());
        assert!(Qualifier::parse("").is_err());
        assert!(Qualifier::parse("a.b").is_err());
        assert!(Qualifier::parse("99999999999999999999999").is_err());
        assert_eq!(Qualifier::Version(3).to_string(), "3");
        assert_eq!(Qualifier::Latest.to_string(), "$LATEST");
    }

    #[test]
    fn keys() {
        assert_eq!(parse_version_key("f.3"), Some(("f", 3)));
        assert_eq!(parse_version_key("f"), None);
        assert_eq!(parse_version_key("f.live"), None);
        assert_eq!(parse_alias_key("f.live"), Some(("f", "live")));
        assert_eq!(parse_alias_key("f.3"), None);
        assert_eq!(version_key("f", 2), "f.2");
        assert_eq!(alias_key("f", "live"), "f.live");
    }

    #[test]
    fn aliases_validate_and_choose() {
        let alias = AliasRecord::parse(br#"{"version": 2, "weights": {"3": 0.1}}"#).unwrap();
        assert_eq!(alias.versions(), vec![2, 3]);
        assert_eq!(alias.choose(0.05), 3);
        assert_eq!(alias.choose(0.1), 2);
        assert_eq!(alias.choose(0.99), 2);
        assert!(
            AliasRecord::parse(br#"{"version": 2, "weights": {"3": 0.1, "4": 0.1}}"#)
                .unwrap_err()
                .contains("at most one")
        );
        assert!(AliasRecord::parse(br#"{"version": 2, "weights": {"2": 0.1}}"#).is_err());
        assert!(AliasRecord::parse(br#"{"version": 2, "weights": {"3": 1.0}}"#).is_err());
        assert!(AliasRecord::parse(br#"{"version": 0}"#).is_err());
        assert!(AliasRecord::parse(br#"{"version": 1, "subjects": ["natsfn.x"]}"#).is_err());
        assert!(AliasRecord::parse(br#"{"version": 1, "extra": 1}"#)
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("10%"), Ok(0.1));
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert_eq!(parse_fraction("100%"), Ok(1.0));
        assert_eq!(parse_fraction("1"), Ok(1.0));
        assert!(parse_fraction("150%").is_err());
        assert!(parse_fraction("ten").is_err());
    }

    #[test]
    fn alias_names() {
        assert!(is_valid_alias_name("live"));
        assert!(is_valid_alias_name("2live"));
        assert!(!is_valid_alias_name("12"));
        assert!(!is_valid_alias_name("$LATEST"));
        assert!(!is_valid_alias_name(&"a".repeat(65)));
    }
}
