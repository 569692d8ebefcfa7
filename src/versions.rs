//! Versions (Lambda's): `natsfn publish` freezes a binding and its code into version
//! N of `natsfn-versions`; `natsfn version ls|rm`. Aliases are in `aliases.rs`.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::object_store::ObjectStore;
use natsfn_actors::buckets;
use natsfn_protocol::names::VERSIONS_BUCKET;
use natsfn_protocol::spec::frozen_package_object;
use natsfn_protocol::version::{version_key, VersionCounter};
use natsfn_protocol::{BindingSpec, VersionRecord};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::cli::PublishArgs;
use crate::package;
use crate::patience;
use crate::published::{check_function_name, code_object, read_version, version_numbers};

/// Attempts at taking the next version number before giving up on a busy counter.
const CAS_ATTEMPTS: usize = 20;

pub async fn publish(nats: &crate::connect::Nats, args: PublishArgs) -> anyhow::Result<ExitCode> {
    let name = args.name.as_str();
    check_function_name(name)?;
    let client = crate::connect::client(nats).await?;
    let js = async_nats::jetstream::new(client.clone());
    let bindings = buckets::bindings(&js).await?;
    let entry = bindings
        .entry(name)
        .await?
        .filter(|e| e.operation == Operation::Put)
        .with_context(|| format!("no function {name} is bound: nothing to publish"))?;
    // A version of a binding no node would run could never serve.
    BindingSpec::parse(name, &entry.value)
        .map_err(|e| anyhow!("the binding of {name} is invalid, fix it first: {e}"))?;
    let Ok(Value::Object(mut binding)) = serde_json::from_slice::<Value>(&entry.value) else {
        bail!("the binding of {name} is not a JSON object");
    };
    let store = package::open_store(&client).await?;
    let code = binding
        .get("code")
        .cloned()
        .with_context(|| format!("the binding of {name} has no code"))?;
    binding.insert("code".into(), freeze_code(&store, name, &code).await?);
    if let Some(Value::Array(layers)) = binding.get("layers").cloned() {
        let mut frozen = Vec::with_capacity(layers.len());
        for layer in &layers {
            frozen.push(freeze_package(&store, layer, "layer").await?);
        }
        binding.insert("layers".into(), Value::Array(frozen));
    }
    let binding = Value::Object(binding);
    BindingSpec::parse(name, &serde_json::to_vec(&binding)?)
        .map_err(|e| anyhow!("the frozen binding of {name} is invalid: {e}"))?;
    let versions = buckets::versions(&js).await?;
    let version = next_number(&versions, name).await?;
    let record = VersionRecord {
        version,
        description: args.description,
        // Whole seconds: read by people, and ordered by the version number anyway.
        created: OffsetDateTime::now_utc()
            .replace_nanosecond(0)?
            .format(&Rfc3339)?,
        from_revision: entry.revision,
        binding,
    };
    let key = version_key(name, version);
    versions
        .create(&key, serde_json::to_vec_pretty(&record)?.into())
        .await
        .with_context(|| format!("cannot write {key} in {VERSIONS_BUCKET}"))?;
    println!("published {name} version {version}");
    Ok(ExitCode::SUCCESS)
}

/// The binding's `code` as a version keeps it: `{"package": "<p>@sha256:<hex>",
/// "digest": "sha256:<hex>"}`, its bytes copied to that object if not there yet.
async fn freeze_code(store: &ObjectStore, function: &str, code: &Value) -> anyhow::Result<Value> {
    let Some(dir) = code.get("dir").and_then(Value::as_str) else {
        return freeze_package(store, code, "code").await;
    };
    // Packed here, as `deploy` would: the version then runs on any node, not only on
    // the machine that has the directory.
    let packed = package::pack(std::path::Path::new(dir))
        .with_context(|| format!("cannot pack the code directory {dir}"))?;
    check_size(packed.archive.len() as u64, dir)?;
    let object = frozen_package_object(function, &packed.digest);
    store_frozen(store, &object, &packed.archive, &packed.digest).await?;
    Ok(json!({"package": object, "digest": packed.digest}))
}

/// A `{"package": P, "digest": D}` reference frozen: P's bytes (which must still hash
/// to D, when D is given) copied to `P@D`.
async fn freeze_package(
    store: &ObjectStore,
    reference: &Value,
    what: &str,
) -> anyhow::Result<Value> {
    let package = reference
        .get("package")
        .and_then(Value::as_str)
        .with_context(|| format!("{what}: expected {{\"package\": ..}} or {{\"dir\": ..}}"))?;
    let pinned = reference.get("digest").and_then(Value::as_str);
    if let Some(digest) = pinned {
        // Frozen by an earlier publish: those bytes are the ones pinned, whatever P
        // holds now.
        let object = frozen_package_object(package, digest);
        if stored_digest(store, &object).await.as_deref() == Some(digest) {
            return Ok(json!({"package": object, "digest": digest}));
        }
    }
    let bytes = read_object(store, package).await?;
    let digest = package::sha256_digest(&bytes);
    if let Some(pinned) = pinned {
        if pinned != digest {
            bail!(
                "{what} package {package} now holds {digest}, not the {pinned} the binding pins: \
                 bind the function to it again (or push the pinned code) before publishing"
            );
        }
    }
    let object = frozen_package_object(package, &digest);
    if object != package {
        store_frozen(store, &object, &bytes, &digest).await?;
    }
    Ok(json!({"package": object, "digest": digest}))
}

fn check_size(size: u64, what: &str) -> anyhow::Result<()> {
    let limit = natsfn_actors::MAX_PACKAGE_BYTES;
    if size > limit {
        bail!("{what} is {size} bytes compressed; nodes fetch at most {limit}");
    }
    Ok(())
}

/// The whole of object `name`.
async fn read_object(store: &ObjectStore, name: &str) -> anyhow::Result<Vec<u8>> {
    let info = store
        .info(name)
        .await
        .with_context(|| format!("no package {name} in natsfn-packages"))?;
    check_size(info.size as u64, &format!("package {name}"))?;
    let mut object = store
        .get(name)
        .await
        .with_context(|| format!("cannot read package {name}"))?;
    let mut bytes = Vec::with_capacity(info.size);
    object
        .read_to_end(&mut bytes)
        .await
        .with_context(|| format!("cannot read package {name}"))?;
    Ok(bytes)
}

/// The `sha256:<hex>` digest natsfn-packages keeps for `object`; `None` if there is no
/// such object.
async fn stored_digest(store: &ObjectStore, object: &str) -> Option<String> {
    let info = store.info(object).await.ok()?;
    info.digest.as_deref().and_then(package::nats_digest)
}

/// Writes `bytes` as `object` unless it holds them already (a republish of the same
/// code copies nothing).
async fn store_frozen(
    store: &ObjectStore,
    object: &str,
    bytes: &[u8],
    digest: &str,
) -> anyhow::Result<()> {
    if stored_digest(store, object).await.as_deref() == Some(digest) {
        return Ok(());
    }
    let info = store
        .put(object, &mut &bytes[..])
        .await
        .with_context(|| format!("cannot store {object} in natsfn-packages"))?;
    let stored = info.digest.as_deref().and_then(package::nats_digest);
    if stored.as_deref() != Some(digest) {
        bail!(
            "natsfn-packages stored {object} with digest {:?}, not {digest}; publish again",
            info.digest
        );
    }
    Ok(())
}

/// Takes the next version number of `function` by compare-and-swap on its counter,
/// so that two publishes never get the same number and a removed one is never reused.
async fn next_number(versions: &Store, function: &str) -> anyhow::Result<u64> {
    for _ in 0..CAS_ATTEMPTS {
        let entry = versions
            .entry(function)
            .await?
            .filter(|e| e.operation == Operation::Put);
        let taken = match entry {
            Some(entry) => {
                let counter: VersionCounter =
                    serde_json::from_slice(&entry.value).with_context(|| {
                        format!("the version counter {function} in {VERSIONS_BUCKET} is not {{\"last\": N}}")
                    })?;
                let next = counter.last + 1;
                let value = serde_json::to_vec(&VersionCounter { last: next })?;
                match versions
                    .update(function, value.into(), entry.revision)
                    .await
                {
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                    other => other.map(|_| next).map(Some)?,
                }
            }
            None => {
                // No counter (first publish, or removed by hand): past every version
                // there is, so that none is written over.
                let next = highest_version(versions, function).await? + 1;
                let value = serde_json::to_vec(&VersionCounter { last: next })?;
                match versions.create(function, value.into()).await {
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => None,
                    other => other.map(|_| next).map(Some)?,
                }
            }
        };
        if let Some(n) = taken {
            return Ok(n);
        }
    }
    bail!("the version counter of {function} kept changing; publish again")
}

async fn highest_version(versions: &Store, function: &str) -> anyhow::Result<u64> {
    Ok(version_numbers(versions, function)
        .await?
        .into_iter()
        .max()
        .unwrap_or(0))
}

pub async fn ls(nats: &crate::connect::Nats, name: &str) -> anyhow::Result<ExitCode> {
    check_function_name(name)?;
    let client = crate::connect::client(nats).await?;
    let records = patience::read(|| listing(client.clone(), name)).await?;
    // The code object last: it is long, and what `package rm` is told.
    println!(
        "{:>7}  {:<20}  {:<24} CODE",
        "VERSION", "CREATED", "DESCRIPTION"
    );
    for record in records {
        println!(
            "{:>7}  {:<20}  {:<24} {}",
            record.version,
            record.created,
            record.description,
            code_object(&record)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every version of `function`, read afresh.
async fn listing(client: async_nats::Client, function: &str) -> anyhow::Result<Vec<VersionRecord>> {
    let js = patience::jetstream(client);
    let Some(versions) = patience::bucket(&js, VERSIONS_BUCKET).await? else {
        return Ok(Vec::new());
    };
    let mut records = Vec::new();
    for n in version_numbers(&versions, function).await? {
        // Removed since the listing.
        if let Some(record) = read_version(&versions, function, n).await? {
            records.push(record);
        }
    }
    Ok(records)
}

pub async fn rm(nats: &crate::connect::Nats, name: &str, version: u64) -> anyhow::Result<ExitCode> {
    check_function_name(name)?;
    let client = crate::connect::client(nats).await?;
    let js = async_nats::jetstream::new(client);
    let versions = buckets::versions(&js).await?;
    if read_version(&versions, name, version).await?.is_none() {
        bail!("{name} has no version {version}");
    }
    let aliases = buckets::aliases(&js).await?;
    for (alias, record) in crate::published::aliases_of(&aliases, name).await? {
        if let Some(how) = crate::published::uses(&record, version) {
            bail!(
                "version {version} of {name} is in use by alias {alias} ({how}): \
                 move the alias (natsfn alias set) or remove it first"
            );
        }
    }
    versions.delete(version_key(name, version)).await?;
    println!("removed {name} version {version}");
    Ok(ExitCode::SUCCESS)
}
