//! Aliases (Lambda's): `natsfn alias set|ls|rm`, names in `natsfn-aliases` pointing at
//! versions, optionally weighted or shifting as a canary that a node drives.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use natsfn_protocol::service::METADATA_VERSION;

use anyhow::{anyhow, bail, Context};
use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use natsfn_actors::buckets;
use natsfn_protocol::names::ALIASES_BUCKET;
use natsfn_protocol::version::{
    alias_key, is_valid_alias_name, parse_fraction, Canary, CanaryState, Outcomes, LATEST,
};
use natsfn_protocol::AliasRecord;

use crate::cli::{parse_duration_ms, AliasSetArgs};
use crate::patience;
use crate::published::{aliases_of, check_function_name, read_version};

/// Invocations of the new version a canary waits for before judging it, unless told.
const DEFAULT_MIN_SAMPLE: u64 = 100;

/// Why `name` is not an alias name, in words.
fn check_alias_name(name: &str) -> anyhow::Result<()> {
    if is_valid_alias_name(name) {
        return Ok(());
    }
    if name == LATEST {
        bail!("alias {name:?}: $LATEST names the binding as edited; choose another name");
    }
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        bail!("alias {name:?}: an alias name cannot be all digits (that names a version)");
    }
    bail!("alias {name:?}: expected 1 to 64 letters, digits, '_' or '-', not all digits")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// `VERSION=FRACTION`.
fn parse_weight(text: &str) -> anyhow::Result<(u64, f64)> {
    let (version, fraction) = text
        .split_once('=')
        .with_context(|| format!("--weight {text:?}: expected VERSION=FRACTION, e.g. 3=10%"))?;
    let version: u64 = version
        .trim()
        .parse()
        .ok()
        .filter(|v| *v >= 1)
        .with_context(|| format!("--weight {text:?}: {version:?} is not a version number"))?;
    let fraction = parse_fraction(fraction).map_err(|e| anyhow!("--weight {e}"))?;
    Ok((version, fraction))
}

/// The canary of `--canary STEPS --every D --max-error-rate F [--min-sample N]`, moving
/// an alias from version `from`.
fn canary(args: &AliasSetArgs, steps: &str, from: u64) -> anyhow::Result<Canary> {
    let steps = steps
        .split(',')
        .map(|s| parse_fraction(s).map_err(|e| anyhow!("--canary {e}")))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let every = args.every.as_deref().context("--canary needs --every")?;
    let every_ms = parse_duration_ms(every).map_err(|e| anyhow!("--every {e}"))?;
    let rate = args
        .max_error_rate
        .as_deref()
        .context("--canary needs --max-error-rate")?;
    let max_error_rate = parse_fraction(rate).map_err(|e| anyhow!("--max-error-rate {e}"))?;
    Ok(Canary {
        steps,
        step: 0,
        every_ms,
        max_error_rate,
        min_sample: args.min_sample.unwrap_or(DEFAULT_MIN_SAMPLE),
        from,
        state: CanaryState::Running,
        reason: None,
        step_started_ms: now_ms(),
        baseline: None,
        observed: Outcomes::default(),
        lease: None,
    })
}

pub async fn alias_set(
    nats: &crate::connect::Nats,
    args: AliasSetArgs,
) -> anyhow::Result<ExitCode> {
    let name = args.name.as_str();
    check_function_name(name)?;
    check_alias_name(&args.alias)?;
    if args.version == 0 {
        bail!("version 0: versions are numbered from 1");
    }
    let mut weights = BTreeMap::new();
    for text in &args.weights {
        let (version, fraction) = parse_weight(text)?;
        weights.insert(version.to_string(), fraction);
    }
    let mut record = AliasRecord {
        version: args.version,
        weights,
        subjects: args.subjects.clone(),
        description: args.description.clone(),
        provisioned: args.provisioned,
        canary: None,
    };
    // What can be said without NATS is said first.
    if args.canary.is_none() {
        record
            .validate()
            .map_err(|e| anyhow!("invalid alias: {e}"))?;
    }
    let client = crate::connect::client(nats).await?;
    let js = async_nats::jetstream::new(client.clone());
    let versions = buckets::versions(&js).await?;
    let aliases = buckets::aliases(&js).await?;
    let key = alias_key(name, &args.alias);
    let mut expected = None;
    if let Some(steps) = &args.canary {
        let current = aliases
            .entry(&key)
            .await?
            .filter(|e| e.operation == Operation::Put);
        let Some(current) = current else {
            bail!(
                "{name} has no alias {alias}: a canary moves an alias from its current version, \
                 so set it first (natsfn alias set {name} {alias} VERSION)",
                alias = args.alias
            );
        };
        let from = serde_json::from_slice::<AliasRecord>(&current.value)
            .with_context(|| format!("the alias {key} in {ALIASES_BUCKET} does not parse"))?
            .version;
        if from == args.version {
            bail!(
                "alias {} of {name} already points at version {from}",
                args.alias
            );
        }
        let canary = canary(&args, steps, from)?;
        // The old version keeps what the first step does not give the new one.
        let first = canary.steps.first().copied().unwrap_or(1.0);
        if first < 1.0 {
            record.weights.insert(from.to_string(), 1.0 - first);
        }
        record.canary = Some(canary);
        record
            .validate()
            .map_err(|e| anyhow!("invalid alias: {e}"))?;
        expected = Some(current.revision);
    }
    for version in record.versions() {
        if read_version(&versions, name, version).await?.is_none() {
            bail!("{name} has no version {version} (natsfn version ls {name}; natsfn publish {name} makes one)");
        }
    }
    let value = serde_json::to_vec_pretty(&record)?;
    match expected {
        // Compare-and-swap: the canary starts from the version read, not another one
        // set meanwhile.
        Some(revision) => match aliases.update(&key, value.into(), revision).await {
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                bail!(
                    "alias {} of {name} changed meanwhile; try again",
                    args.alias
                )
            }
            other => other.map(|_| ())?,
        },
        None => {
            aliases.put(&key, value.into()).await?;
        }
    }
    println!("alias {name}:{} -> {}", args.alias, routing(&record));
    match record.provisioned.filter(|n| *n > 0 && !args.no_wait) {
        Some(wanted) => wait_provisioned(&client, name, &args.alias, record.version, wanted).await,
        None => Ok(ExitCode::SUCCESS),
    }
}

/// How long `alias set --provisioned N` waits for the N workers to be warm.
const PROVISION_WITHIN: Duration = Duration::from_secs(120);

/// Waits until the nodes have `wanted` workers of `version` warm between them: the
/// alias is ready then, and says so; past [`PROVISION_WITHIN`], it says how many are.
async fn wait_provisioned(
    client: &async_nats::Client,
    name: &str,
    alias: &str,
    version: u64,
    wanted: u32,
) -> anyhow::Result<ExitCode> {
    let give_up = tokio::time::Instant::now() + PROVISION_WITHIN;
    loop {
        let warm = ready_workers(client, name).await?;
        let warm = warm.get(&version).copied().unwrap_or(0);
        if warm >= u64::from(wanted) {
            println!("alias {name}:{alias} ready: {warm} of {wanted} provisioned workers of version {version} warm");
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() >= give_up {
            eprintln!(
                "alias {name}:{alias} not ready after {} s: {warm} of {wanted} provisioned workers of version {version} warm (natsfn alias ls {name} shows them as they come)",
                PROVISION_WITHIN.as_secs()
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Ready workers of each version of `function` across the nodes, from the service
/// instances' stats (each version's actor on each node is one).
async fn ready_workers(
    client: &async_nats::Client,
    function: &str,
) -> anyhow::Result<BTreeMap<u64, u64>> {
    let mut ready = BTreeMap::new();
    for stats in natsfn_actors::function_stats(client, function).await? {
        let version = stats
            .identity
            .metadata
            .get(METADATA_VERSION)
            .and_then(|v| v.parse::<u64>().ok());
        let Some(version) = version else {
            continue; // $LATEST's
        };
        let warm = stats
            .endpoints
            .iter()
            .filter_map(|e| e.data.map(|d| d.ready_workers))
            .max()
            .unwrap_or(0);
        *ready.entry(version).or_insert(0) += warm;
    }
    Ok(ready)
}

/// `version 2`, `version 2 (version 3 gets 10%)`.
fn routing(record: &AliasRecord) -> String {
    match record.extra() {
        Some((extra, fraction)) => format!(
            "version {} (version {extra} gets {})",
            record.version,
            percent(fraction)
        ),
        None => format!("version {}", record.version),
    }
}

fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round())
    } else {
        format!("{p:.2}%")
    }
}

pub async fn alias_ls(nats: &crate::connect::Nats, name: &str) -> anyhow::Result<ExitCode> {
    check_function_name(name)?;
    let client = crate::connect::client(nats).await?;
    let listed = patience::read(|| listing(client.clone(), name)).await?;
    let warm = if listed.iter().any(|(_, r)| r.provisioned.is_some()) {
        ready_workers(&client, name).await?
    } else {
        BTreeMap::new()
    };
    println!(
        "{:<20} {:>7}  {:<14} {:>16}  SUBJECTS",
        "ALIAS", "VERSION", "WEIGHTS", "PROVISIONED"
    );
    for (alias, record) in listed {
        let weights = record
            .extra()
            .map(|(v, f)| format!("{v}={}", percent(f)))
            .unwrap_or_else(|| "-".into());
        let provisioned = record
            .provisioned
            .map(|p| {
                let warm = warm.get(&record.version).copied().unwrap_or(0);
                format!("{p} ({warm} warm)")
            })
            .unwrap_or_else(|| "-".into());
        let subjects = if record.subjects.is_empty() {
            "-".to_owned()
        } else {
            record.subjects.join(",")
        };
        println!(
            "{alias:<20} {:>7}  {weights:<14} {provisioned:>16}  {subjects}",
            record.version
        );
        if let Some(canary) = &record.canary {
            println!("    canary: {}", canary_line(&record, canary));
        }
        if !record.description.is_empty() {
            println!("    {}", record.description);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `running, step 1/3: version 2 gets 10%, from version 1; observed 40 requests, 1 error`.
fn canary_line(record: &AliasRecord, canary: &Canary) -> String {
    let state = match canary.state {
        CanaryState::Running => "running",
        CanaryState::Promoted => "promoted",
        CanaryState::RolledBack => "rolled back",
    };
    let share = canary.steps.get(canary.step).copied().unwrap_or(1.0);
    let mut line = format!(
        "{state}, step {}/{}: version {} gets {}, from version {}; observed {} requests, {} errors",
        canary.step + 1,
        canary.steps.len(),
        record.version,
        percent(share),
        canary.from,
        canary.observed.requests,
        canary.observed.errors
    );
    if let Some(reason) = &canary.reason {
        line.push_str(&format!("; {reason}"));
    }
    line
}

/// The aliases of `function`, read afresh.
async fn listing(
    client: async_nats::Client,
    function: &str,
) -> anyhow::Result<Vec<(String, AliasRecord)>> {
    let js = patience::jetstream(client);
    match patience::bucket(&js, ALIASES_BUCKET).await? {
        Some(aliases) => aliases_of(&aliases, function).await,
        None => Ok(Vec::new()),
    }
}

pub async fn alias_rm(
    nats: &crate::connect::Nats,
    name: &str,
    alias: &str,
) -> anyhow::Result<ExitCode> {
    check_function_name(name)?;
    check_alias_name(alias)?;
    let client = crate::connect::client(nats).await?;
    let js = async_nats::jetstream::new(client);
    let aliases = buckets::aliases(&js).await?;
    let key = alias_key(name, alias);
    if aliases
        .entry(&key)
        .await?
        .filter(|e| e.operation == Operation::Put)
        .is_none()
    {
        bail!("{name} has no alias {alias}");
    }
    aliases.delete(&key).await?;
    println!("removed alias {name}:{alias}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_are_refused_with_the_reason() {
        assert!(check_alias_name("live").is_ok());
        let digits = check_alias_name("12").unwrap_err().to_string();
        assert!(digits.contains("all digits"), "{digits}");
        let latest = check_alias_name("$LATEST").unwrap_err().to_string();
        assert!(latest.contains("$LATEST"), "{latest}");
        assert!(check_alias_name("a.b").is_err());
    }

    #[test]
    fn weights_and_percentages() {
        assert_eq!(parse_weight("3=10%").unwrap(), (3, 0.1));
        assert!(parse_weight("3").is_err());
        assert!(parse_weight("x=10%").is_err());
        assert!(parse_weight("0=10%").is_err());
        assert_eq!(percent(0.1), "10%");
        assert_eq!(percent(0.125), "12.50%");
    }
}
