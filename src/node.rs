//! `natsfn node`: a dispatcher node until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use natsfn_actors::buckets::LogRetention;
use natsfn_actors::{Interpreters, Metrics, NodeActor, NodeArgs, NodeMsg, Sandbox, SigningKey};
use ractor::Actor;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cli;

/// How long a stopping node finishes the invocations it received.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(10);

pub async fn run(nats: &crate::connect::Nats, args: cli::NodeArgs) -> anyhow::Result<ExitCode> {
    let (client, denials) = crate::connect::node(nats).await?;
    serve(client, denials, &nats.urls(), args).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a node on `client` (connected to the servers `nats`, given without
/// credentials) until a termination signal, then stops it cleanly; `denials` are the
/// subjects the server refuses it a subscription to.
pub async fn serve(
    client: async_nats::Client,
    denials: UnboundedReceiver<String>,
    nats: &str,
    args: cli::NodeArgs,
) -> anyhow::Result<()> {
    let signing_key = args
        .signing_key
        .as_deref()
        .map(read_signing_key)
        .transpose()?;
    let node_id = args.node_id.unwrap_or_else(default_node_id);
    let interpreters = Interpreters::discover().await;
    if interpreters.python3.is_none() {
        tracing::warn!("python3 not found: python3 functions will not start");
    }
    if interpreters.node.is_none() {
        tracing::warn!("node not found: nodejs functions will not start");
    }
    match &interpreters.java {
        Ok(jdk) => tracing::info!(
            "java: JDK {} at {}, Jackson at {} (the bootstrap is built with it when the first java function starts)",
            jdk.version,
            jdk.java.display(),
            std::env::join_paths(&jdk.jackson)
                .unwrap_or_default()
                .to_string_lossy()
        ),
        Err(reason) => tracing::warn!("java functions will not start: {reason}"),
    }
    let max_workers = args
        .max_workers
        .map_or_else(default_max_workers, |n| n as usize);
    tracing::info!(
        max_workers,
        "worker limits: at most {max_workers} workers on this node (--max-workers)"
    );
    let sandbox = match args.isolation {
        cli::Isolation::Sandbox => {
            let sandbox = Sandbox::prepare(nats)
                .await
                .context("--isolation sandbox")?;
            tracing::info!("isolation: {}", sandbox.describe());
            Some(Arc::new(sandbox))
        }
        cli::Isolation::None => {
            tracing::warn!(
                "isolation: none (--isolation none): workers run as this node's user and see what it sees; \
                 memory_mb enforced by polling each worker's resident memory every 100 ms"
            );
            None
        }
    };
    let labels: std::collections::BTreeMap<String, String> = args.labels.into_iter().collect();
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let metrics = Arc::new(Metrics::new(&client));
    let metrics_server = match args.metrics {
        Some(addr) => Some(crate::metrics::serve(addr, metrics.clone()).await?),
        None => None,
    };
    let gateway = match args.http {
        Some(addr) => {
            let tls = args
                .http_tls_cert
                .as_deref()
                .zip(args.http_tls_key.as_deref());
            let auth = args.http_auth.as_deref();
            Some(crate::gateway::serve(addr, client.clone(), auth, tls).await?)
        }
        None => None,
    };
    let (node, mut handle) = Actor::spawn(
        None,
        NodeActor,
        NodeArgs {
            client: client.clone(),
            node_id: node_id.clone(),
            runtime_dir: args.runtime_dir,
            data_dir: args.data_dir,
            interpreters,
            metrics,
            max_workers,
            logs: LogRetention {
                max_age: args.logs_max_age,
                max_bytes: i64::from(args.logs_max_mb) * 1024 * 1024,
                on_disk: args.logs_storage == cli::LogStorage::File,
            },
            nats_grace: args.nats_grace,
            labels: labels.clone(),
            signing_key,
            nats_url: nats.to_owned(),
            url_auth_refused: args.http.is_some() && args.http_auth.is_none(),
            subscription_denials: denials,
            sandbox,
        },
    )
    .await
    .context("cannot start the node")?;
    let server = client.server_info();
    tracing::info!(
        node = %node_id,
        labels = ?labels,
        server = %server.server_name,
        cluster = server.cluster.as_deref().unwrap_or("-"),
        "natsfn node running"
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
        _ = &mut handle => anyhow::bail!("the node stopped unexpectedly"),
    }
    // Finish what was received; a second signal, or the time limit, stops at once.
    tracing::info!(
        "draining: no new requests, finishing those received (signal again to stop now)"
    );
    let _ = node.cast(NodeMsg::Drain);
    tokio::select! {
        _ = &mut handle => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
        _ = tokio::time::sleep(DRAIN_WITHIN) => tracing::warn!("drain took longer than {DRAIN_WITHIN:?}"),
    }
    let _ = node.stop_and_wait(None, Some(SHUTDOWN_WITHIN)).await;
    for server in [metrics_server, gateway].into_iter().flatten() {
        server.abort();
    }
    let _ = client.flush().await;
    Ok(())
}

/// `--signing-key FILE`: the seed alone.
fn read_signing_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let seed = std::fs::read_to_string(path)
        .with_context(|| format!("--signing-key: cannot read {}", path.display()))?;
    SigningKey::from_seed(&seed).with_context(|| format!("--signing-key {}", path.display()))
}

/// 32 workers per CPU (most are idle standbys or wait on I/O), but no more than one
/// per 128 MB (Lambda's smallest memory size) and no fewer than 4.
fn default_max_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .map_or(usize::MAX, |kb| kb / 1024);
    (cpus * 32).min(memory_mb / 128).max(4)
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}
