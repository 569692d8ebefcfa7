//! What is published of a function, as the version and alias commands (and `package
//! rm`) read it: its version numbers and records, its aliases, and which alias uses a
//! version.

use anyhow::{bail, Context};
use async_nats::jetstream::kv::{Operation, Store};
use futures::TryStreamExt;
use natsfn_protocol::names::{is_valid_function_name, VERSIONS_BUCKET};
use natsfn_protocol::version::{
    alias_key, parse_alias_key, parse_version_key, version_key, CanaryState,
};
use natsfn_protocol::{AliasRecord, VersionRecord};

pub(crate) fn check_function_name(name: &str) -> anyhow::Result<()> {
    if !is_valid_function_name(name) {
        bail!("function name {name:?}: expected 1 to 64 letters, digits, '_' or '-'");
    }
    Ok(())
}

/// The version numbers of `function` there are, ascending.
pub(crate) async fn version_numbers(versions: &Store, function: &str) -> anyhow::Result<Vec<u64>> {
    let keys: Vec<String> = versions.keys().await?.try_collect().await?;
    let mut numbers: Vec<u64> = keys
        .iter()
        .filter_map(|k| parse_version_key(k))
        .filter(|(f, _)| *f == function)
        .map(|(_, n)| n)
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Version `n` of `function`, if there is one.
pub(crate) async fn read_version(
    versions: &Store,
    function: &str,
    n: u64,
) -> anyhow::Result<Option<VersionRecord>> {
    let key = version_key(function, n);
    let Some(entry) = versions
        .entry(&key)
        .await?
        .filter(|e| e.operation == Operation::Put)
    else {
        return Ok(None);
    };
    let record = serde_json::from_slice(&entry.value)
        .with_context(|| format!("{key} in {VERSIONS_BUCKET} is not a version record"))?;
    Ok(Some(record))
}

/// The object a version's code runs from.
pub(crate) fn code_object(record: &VersionRecord) -> String {
    record.binding["code"]["package"]
        .as_str()
        .unwrap_or("-")
        .to_owned()
}

/// Every alias of `function` (key prefix `<function>.`), by name. One that does not
/// parse is left out: a node ignores it too.
pub(crate) async fn aliases_of(
    aliases: &Store,
    function: &str,
) -> anyhow::Result<Vec<(String, AliasRecord)>> {
    let keys: Vec<String> = aliases.keys().await?.try_collect().await?;
    let mut names: Vec<String> = keys
        .iter()
        .filter_map(|k| parse_alias_key(k))
        .filter(|(f, _)| *f == function)
        .map(|(_, a)| a.to_owned())
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for alias in names {
        let entry = aliases.entry(alias_key(function, &alias)).await?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            continue;
        };
        match serde_json::from_slice::<AliasRecord>(&entry.value) {
            Ok(record) => out.push((alias, record)),
            Err(e) => tracing::warn!(alias, error = %e, "an alias that does not parse is ignored"),
        }
    }
    Ok(out)
}

/// How `record` uses `version`, if it does: the version it points at, its weighted
/// extra, or (while a canary runs) the version a rollback returns to.
pub(crate) fn uses(record: &AliasRecord, version: u64) -> Option<&'static str> {
    if record.version == version {
        return Some("its version");
    }
    if record.extra().is_some_and(|(v, _)| v == version) {
        return Some("weighted");
    }
    match &record.canary {
        Some(c) if c.state == CanaryState::Running && c.from == version => {
            Some("a running canary's rollback target")
        }
        _ => None,
    }
}
