//! Editing and reading bindings: `bind`, `nats bind|unbind`, `ls`, `get`, `rm`; and
//! listing the live nodes: `nodes`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::object_store::ObjectStore;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use natsfn_actors::buckets;
use natsfn_protocol::names::{BINDINGS_BUCKET, NODES_BUCKET, STATUS_BUCKET};
use natsfn_protocol::{BindingSpec, FunctionState, FunctionStatus, NodeInfo};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::{parse_duration_ms, BindArgs, DeployArgs, SubjectArgs};
use crate::patience;

/// Attempts at a compare-and-swap edit before giving up on a busy key.
const CAS_ATTEMPTS: usize = 20;

struct Buckets {
    bindings: Store,
    status: Store,
}

async fn open(nats: &crate::connect::Nats) -> anyhow::Result<Buckets> {
    open_on(crate::connect::client(nats).await?).await
}

async fn open_on(client: async_nats::Client) -> anyhow::Result<Buckets> {
    let js = async_nats::jetstream::new(client);
    Ok(Buckets {
        bindings: buckets::bindings(&js).await?,
        status: buckets::status(&js).await?,
    })
}

/// The buckets as they are, for a read that [`patience::read`] tries again; `None`
/// for one that does not exist.
struct Reading {
    js: async_nats::jetstream::Context,
    bindings: Option<Store>,
    status: Option<Store>,
}

async fn open_reading(client: async_nats::Client) -> anyhow::Result<Reading> {
    let js = patience::jetstream(client);
    Ok(Reading {
        bindings: patience::bucket(&js, BINDINGS_BUCKET).await?,
        status: patience::bucket(&js, STATUS_BUCKET).await?,
        js,
    })
}

pub async fn bind(nats: &crate::connect::Nats, args: BindArgs) -> anyhow::Result<ExitCode> {
    if let Some(package) = args.package.clone() {
        let client = crate::connect::client(nats).await?;
        let store = crate::package::open_store(&client).await?;
        let digest = crate::package::current_digest(&store, &package).await?;
        return bind_package(&client, &store, args, package, digest).await;
    }
    if args.code.is_none() {
        bail!("give --code DIR (a directory on the node's machine) or -p PACKAGE");
    }
    if args.runtime.is_none() {
        bail!("--runtime is required with --code");
    }
    let client = crate::connect::client(nats).await?;
    let mut value = binding_json(&args)?;
    if !args.layers.is_empty() {
        let store = crate::package::open_store(&client).await?;
        value["layers"] = layers_json(&store, &args.layers).await?;
    }
    let bytes = serde_json::to_vec_pretty(&value)?;
    BindingSpec::parse(&args.name, &bytes).map_err(|e| anyhow!("invalid binding: {e}"))?;
    let b = open_on(client).await?;
    // Watch first, so a node that is quick to report is not missed.
    let status = b.status.watch_with_history(&args.name).await?;
    let revision = b.bindings.put(&args.name, bytes.into()).await?;
    println!("bound {} (revision {revision})", args.name);
    wait_ready(status, &args.name, revision, args.wait).await
}

/// `natsfn deploy`: push DIR as a package, then bind the function to it.
pub async fn deploy(nats: &crate::connect::Nats, args: DeployArgs) -> anyhow::Result<ExitCode> {
    if args.bind.code.is_some() {
        bail!("deploy packs DIR and runs it as a package; --code belongs to natsfn bind");
    }
    let client = crate::connect::client(nats).await?;
    let store = crate::package::open_store(&client).await?;
    let package = args
        .bind
        .package
        .clone()
        .unwrap_or_else(|| args.bind.name.clone());
    let digest = crate::package::push(&store, &args.dir, &package).await?;
    bind_package(&client, &store, args.bind, package, digest).await
}

/// Points `args.name` at `package` (pinned to `digest`) by compare-and-swap: an
/// existing binding keeps everything but its code and the flags given.
async fn bind_package(
    client: &async_nats::Client,
    store: &ObjectStore,
    args: BindArgs,
    package: String,
    digest: String,
) -> anyhow::Result<ExitCode> {
    let Value::Object(mut changes) = binding_json(&args)? else {
        bail!("the binding flags did not make an object");
    };
    changes.insert("code".into(), json!({"package": package, "digest": digest}));
    if !args.layers.is_empty() {
        changes.insert("layers".into(), layers_json(store, &args.layers).await?);
    }
    let b = open_on(client.clone()).await?;
    let status = b.status.watch_with_history(&args.name).await?;
    let revision = upsert(&b, &args.name, &changes).await?;
    println!(
        "bound {} to package {package} ({digest}) (revision {revision})",
        args.name
    );
    wait_ready(status, &args.name, revision, args.wait).await
}

/// `--layer` packages, each pinned to its current digest.
async fn layers_json(store: &ObjectStore, layers: &[String]) -> anyhow::Result<Value> {
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        let digest = crate::package::current_digest(store, layer).await?;
        out.push(json!({"package": layer, "digest": digest}));
    }
    Ok(Value::Array(out))
}

/// Creates the binding from `changes`, or applies them to the existing one (`pool`
/// and `env` merged key by key, everything else replaced), retrying on a concurrent edit.
async fn upsert(b: &Buckets, name: &str, changes: &Map<String, Value>) -> anyhow::Result<u64> {
    for _ in 0..CAS_ATTEMPTS {
        let entry = b
            .bindings
            .entry(name)
            .await?
            .filter(|e| e.operation == Operation::Put);
        let (mut spec, revision) = match entry {
            Some(entry) => match serde_json::from_slice::<Value>(&entry.value) {
                Ok(Value::Object(spec)) => (spec, Some(entry.revision)),
                _ => bail!(
                    "the binding of {name} is not a JSON object; fix it or natsfn rm {name} first"
                ),
            },
            None if !changes.contains_key("runtime") => {
                bail!("{name} is not bound yet: give --runtime (and --handler)")
            }
            None => (Map::new(), None),
        };
        for (key, value) in changes {
            match (spec.get_mut(key), value) {
                (Some(Value::Object(old)), Value::Object(new)) if key == "pool" || key == "env" => {
                    old.extend(new.clone())
                }
                _ => {
                    spec.insert(key.clone(), value.clone());
                }
            }
        }
        let bytes = serde_json::to_vec_pretty(&spec)?;
        BindingSpec::parse(name, &bytes).map_err(|e| anyhow!("invalid binding: {e}"))?;
        let written = match revision {
            Some(revision) => match b.bindings.update(name, bytes.into(), revision).await {
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                other => Some(other?),
            },
            None => match b.bindings.create(name, bytes.into()).await {
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => None,
                other => Some(other?),
            },
        };
        if let Some(revision) = written {
            return Ok(revision);
        }
    }
    bail!("{name} kept changing under this edit; try again")
}

/// Waits until a node reports the function at `revision` (or later) ready or failed.
async fn wait_ready(
    mut status: async_nats::jetstream::kv::Watch,
    name: &str,
    revision: u64,
    wait: u64,
) -> anyhow::Result<ExitCode> {
    if wait == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let waited = tokio::time::timeout(Duration::from_secs(wait), async {
        while let Some(Ok(entry)) = status.next().await {
            if entry.operation != Operation::Put {
                continue;
            }
            let Ok(s) = serde_json::from_slice::<FunctionStatus>(&entry.value) else {
                continue;
            };
            if s.revision < revision || s.state == FunctionState::Starting {
                continue;
            }
            return Some(s);
        }
        None
    })
    .await;
    match waited {
        Ok(Some(s)) if s.state == FunctionState::Ready => {
            println!("{name} is ready on node {}", s.node);
            // Ready, with a caveat (its function URL refused on that node).
            if let Some(reason) = s.reason {
                eprintln!("note: {reason}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some(s)) => {
            eprintln!(
                "{name} cannot run: {} ({})",
                s.reason.unwrap_or_default(),
                serde_json::to_value(s.state)?
            );
            Ok(ExitCode::FAILURE)
        }
        _ => {
            eprintln!(
                "no node reported on {name} within {wait}s: is a node running (natsfn node, or natsfn dev)?"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The binding as the user asked for it: only what was given, defaults left implicit.
fn binding_json(args: &BindArgs) -> anyhow::Result<Value> {
    let mut spec = Map::new();
    if let Some(runtime) = &args.runtime {
        spec.insert("runtime".into(), json!(runtime));
    }
    if let Some(handler) = &args.handler {
        spec.insert("handler".into(), json!(handler));
    }
    if let Some(code) = &args.code {
        let code =
            std::fs::canonicalize(code).with_context(|| format!("--code {}", code.display()))?;
        spec.insert("code".into(), json!({ "dir": code }));
    }
    if !args.subjects.is_empty() {
        spec.insert("subjects".into(), json!(args.subjects));
    }
    if !args.env.is_empty() {
        let mut env = Map::new();
        for pair in &args.env {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--env {pair:?}: expected KEY=VALUE"))?;
            env.insert(k.to_owned(), json!(v));
        }
        spec.insert("env".into(), Value::Object(env));
    }
    if let Some(timeout) = &args.timeout {
        let ms = parse_duration_ms(timeout).map_err(|e| anyhow!("--timeout {e}"))?;
        spec.insert("timeout_ms".into(), json!(ms));
    }
    if let Some(memory) = args.memory {
        spec.insert("memory_mb".into(), json!(memory));
    }
    let mut pool = Map::new();
    for (field, value) in [
        ("min", args.min),
        ("max", args.max),
        ("queue", args.queue),
        ("max_invocations", args.max_invocations),
    ] {
        if let Some(value) = value {
            pool.insert(field.into(), json!(value));
        }
    }
    if let Some(idle) = &args.idle {
        let ms = parse_duration_ms(idle).map_err(|e| anyhow!("--idle {e}"))?;
        pool.insert("idle_ms".into(), json!(ms));
    }
    if !pool.is_empty() {
        spec.insert("pool".into(), Value::Object(pool));
    }
    Ok(Value::Object(spec))
}

pub enum Edit {
    Add,
    Remove,
}

/// Adds or removes one subject with compare-and-swap: a concurrent edit of the same
/// binding makes this one start over on the new value instead of overwriting it.
pub async fn edit_subjects(
    nats: &crate::connect::Nats,
    args: SubjectArgs,
    edit: Edit,
) -> anyhow::Result<ExitCode> {
    let b = open(nats).await?;
    for _ in 0..CAS_ATTEMPTS {
        let entry = b
            .bindings
            .entry(&args.name)
            .await?
            .filter(|e| e.operation == Operation::Put)
            .with_context(|| {
                format!(
                    "no function {} is bound; bind it first with natsfn bind",
                    args.name
                )
            })?;
        let mut value: Value = serde_json::from_slice(&entry.value).with_context(|| {
            format!(
                "the binding of {} is not valid JSON; fix it first",
                args.name
            )
        })?;
        let obj = value
            .as_object_mut()
            .with_context(|| format!("the binding of {} is not a JSON object", args.name))?;
        let subjects = obj.entry("subjects").or_insert_with(|| json!([]));
        let list = subjects
            .as_array_mut()
            .with_context(|| format!("subjects of {} is not an array", args.name))?;
        let present = list.iter().any(|s| s.as_str() == Some(&args.subject));
        match edit {
            Edit::Add if present => {
                println!("{} already serves {}", args.name, args.subject);
                return Ok(ExitCode::SUCCESS);
            }
            Edit::Remove if !present => {
                println!("{} does not serve {}", args.name, args.subject);
                return Ok(ExitCode::SUCCESS);
            }
            Edit::Add => list.push(json!(args.subject)),
            Edit::Remove => list.retain(|s| s.as_str() != Some(&args.subject)),
        }
        let bytes = serde_json::to_vec_pretty(&value)?;
        BindingSpec::parse(&args.name, &bytes).map_err(|e| anyhow!("invalid binding: {e}"))?;
        match b
            .bindings
            .update(&args.name, bytes.into(), entry.revision)
            .await
        {
            Ok(revision) => {
                let verb = match edit {
                    Edit::Add => "now serves",
                    Edit::Remove => "no longer serves",
                };
                println!(
                    "{} {verb} {} (revision {revision})",
                    args.name, args.subject
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{} kept changing under this edit; try again", args.name)
}

/// One line of `natsfn ls`.
struct Listed {
    name: String,
    revision: u64,
    runtime: String,
    subjects: String,
    state: String,
}

pub async fn ls(nats: &crate::connect::Nats) -> anyhow::Result<ExitCode> {
    let client = crate::connect::client(nats).await?;
    let listed = patience::read(|| list(client.clone())).await?;
    println!(
        "{:<24} {:<10} {:>8}  {:<9} SUBJECTS",
        "NAME", "STATE", "REVISION", "RUNTIME"
    );
    for Listed {
        name,
        revision,
        runtime,
        subjects,
        state,
    } in listed
    {
        println!("{name:<24} {state:<10} {revision:>8}  {runtime:<9} {subjects}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Every binding and its status, read afresh.
async fn list(client: async_nats::Client) -> anyhow::Result<Vec<Listed>> {
    let b = open_reading(client).await?;
    let Some(bindings) = &b.bindings else {
        return Ok(Vec::new());
    };
    let mut names = keys(bindings).await?;
    names.sort();
    let mut listed = Vec::with_capacity(names.len());
    for name in names {
        let Some(entry) = bindings.entry(&name).await? else {
            continue;
        };
        let status = read_status(b.status.as_ref(), &name).await?;
        let (runtime, subjects) = match serde_json::from_slice::<Value>(&entry.value) {
            Ok(v) => (
                v["runtime"].as_str().unwrap_or("?").to_owned(),
                v["subjects"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            ),
            Err(_) => ("?".into(), String::new()),
        };
        let state = status
            .as_ref()
            .and_then(|s| serde_json::to_value(s.state).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".into());
        listed.push(Listed {
            name,
            revision: entry.revision,
            runtime,
            subjects,
            state,
        });
    }
    Ok(listed)
}

pub async fn get(nats: &crate::connect::Nats, name: &str) -> anyhow::Result<ExitCode> {
    let client = crate::connect::client(nats).await?;
    let out = patience::read(|| describe(client.clone(), name)).await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// A function's binding, status and async backlog, read afresh.
async fn describe(client: async_nats::Client, name: &str) -> anyhow::Result<Value> {
    let b = open_reading(client).await?;
    let entry = match &b.bindings {
        Some(bindings) => bindings.entry(name).await?,
        None => None,
    };
    let entry = entry
        .filter(|e| e.operation == Operation::Put)
        .with_context(|| format!("no function {name} is bound"))?;
    let spec = serde_json::from_slice::<Value>(&entry.value)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&entry.value).into_owned()));
    let status = read_status(b.status.as_ref(), name).await?;
    let backlog = crate::events::backlog(&b.js, name).await;
    Ok(
        json!({"name": name, "revision": entry.revision, "spec": spec, "status": status,
               "async": backlog}),
    )
}

pub async fn rm(nats: &crate::connect::Nats, name: &str) -> anyhow::Result<ExitCode> {
    let b = open(nats).await?;
    if b.bindings
        .entry(name)
        .await?
        .filter(|e| e.operation == Operation::Put)
        .is_none()
    {
        bail!("no function {name} is bound");
    }
    b.bindings.delete(name).await?;
    println!("removed {name}");
    Ok(ExitCode::SUCCESS)
}

/// The nodes whose key in `natsfn-nodes` is alive (TTL'd: a dead node drops out).
pub async fn nodes(nats: &crate::connect::Nats) -> anyhow::Result<ExitCode> {
    let client = crate::connect::client(nats).await?;
    let records = patience::read(|| node_records(client.clone())).await?;
    println!(
        "{:<32} {:<20} {:>9} {:>9}  UPTIME",
        "ID", "HOST", "FUNCTIONS", "WORKERS"
    );
    let now = OffsetDateTime::now_utc();
    for (id, value) in records {
        let Ok(node) = serde_json::from_slice::<NodeInfo>(&value) else {
            println!("{id:<32} (not a natsfn node record)");
            continue;
        };
        let uptime = OffsetDateTime::parse(&node.started, &Rfc3339)
            .map(|started| uptime(now - started))
            .unwrap_or_else(|_| "?".into());
        let workers = format!("{}/{}", node.workers, node.max_workers);
        println!(
            "{:<32} {:<20} {:>9} {workers:>9}  {uptime}",
            node.id, node.host, node.functions
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Each live node's id and record, read afresh.
async fn node_records(client: async_nats::Client) -> anyhow::Result<Vec<(String, Bytes)>> {
    let js = patience::jetstream(client);
    let Some(store) = patience::bucket(&js, NODES_BUCKET).await? else {
        return Ok(Vec::new());
    };
    let mut ids = keys(&store).await?;
    ids.sort();
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        // Gone since the listing: it stopped or expired.
        if let Some(value) = store.get(&id).await? {
            records.push((id, value));
        }
    }
    Ok(records)
}

/// Every key of `store`; an error reading any of them is the listing's.
async fn keys(store: &Store) -> anyhow::Result<Vec<String>> {
    Ok(store.keys().await?.try_collect().await?)
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`: the two largest units.
fn uptime(elapsed: time::Duration) -> String {
    let s = elapsed.whole_seconds().max(0);
    let (d, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The status a node wrote for `name`; `None` if there is none, or it is not JSON.
async fn read_status(status: Option<&Store>, name: &str) -> anyhow::Result<Option<FunctionStatus>> {
    let Some(status) = status else {
        return Ok(None);
    };
    let value = status.get(name).await?;
    Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
}

#[cfg(test)]
mod tests {
    use super::uptime;

    #[test]
    fn uptimes() {
        assert_eq!(uptime(time::Duration::seconds(12)), "12s");
        assert_eq!(uptime(time::Duration::seconds(250)), "4m10s");
        assert_eq!(uptime(time::Duration::seconds(7_500)), "2h5m");
        assert_eq!(uptime(time::Duration::seconds(273_600)), "3d4h");
        assert_eq!(uptime(time::Duration::seconds(-3)), "0s");
    }
}
