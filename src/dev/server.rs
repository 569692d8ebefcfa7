//! The nats-server processes `natsfn dev` starts, one or a cluster: finding the
//! binary, waiting until one accepts connections, stopping one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::connect::Nats;

const SERVER_START_WITHIN: Duration = Duration::from_secs(15);

pub(super) fn find_nats_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATSFN_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .context("nats-server is not on PATH")
}

/// Polls until the server accepts a connection, failing early if it exits.
pub(super) async fn connect_when_up(
    server: &Nats,
    nats: &mut tokio::process::Child,
) -> anyhow::Result<(async_nats::Client, UnboundedReceiver<String>)> {
    let started = Instant::now();
    let url = server.urls();
    loop {
        if let Some(status) = nats.try_wait()? {
            bail!("nats-server exited ({status}); see its output above (is {url} already in use?)");
        }
        match crate::connect::node(server).await {
            Ok(connected) => return Ok(connected),
            // A server that is up but refuses the node will not change its mind.
            Err(e) if format!("{e:#}").contains("authorization violation") => return Err(e),
            Err(_) => {}
        }
        if started.elapsed() > SERVER_START_WITHIN {
            bail!("nats-server did not accept connections on {url} within {SERVER_START_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn stop(nats: &mut tokio::process::Child) {
    if let Some(pid) = nats.id() {
        // SIGTERM lets JetStream flush; kill_on_drop covers the rest.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.wait()).await;
}
