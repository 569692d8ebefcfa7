//! `natsfn dev --cluster N`: N clustered nats-servers with JetStream
//! (`sync_interval: always`, as in nats-cluster/) and N nodes on this machine. The
//! first node runs in this process; the others are child processes. Every pid is
//! printed, so that a person can kill one and watch the rest carry on.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::secure::Secure;
use super::server::{connect_when_up, stop};
use crate::cli::DevArgs;
use crate::connect::{Auth, Nats};

const READY_WITHIN: Duration = Duration::from_secs(20);
/// Route ports are the client ports plus this.
const ROUTE_OFFSET: u16 = 2000;

pub(super) async fn run(
    server: PathBuf,
    data_dir: PathBuf,
    n: usize,
    secure: Option<Secure>,
    args: DevArgs,
) -> anyhow::Result<ExitCode> {
    let names: Vec<String> = (0..n)
        .map(|i| format!("dev-{}", (b'a' + i as u8) as char))
        .collect();
    let ports: Vec<u16> = (0..n as u16).map(|i| args.port + i).collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{}", p + ROUTE_OFFSET))
        .collect();
    let mut servers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let dir = data_dir.join("cluster").join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let conf = dir.join("nats.conf");
        let auth = match &secure {
            Some(secure) => secure.config_in(&dir)?,
            None => String::new(),
        };
        std::fs::write(&conf, config(name, ports[i], &dir, &routes) + &auth)
            .with_context(|| format!("cannot write {}", conf.display()))?;
        let child = tokio::process::Command::new(&server)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", server.display()))?;
        eprintln!(
            "natsfn dev: nats-server {name} pid {} on {} (data in {})",
            child.id().unwrap_or_default(),
            urls[i],
            dir.display()
        );
        servers.push(child);
    }
    let all = urls.join(",");
    let result = serve(&all, &mut servers, &names, secure.as_ref(), args).await;
    for nats in &mut servers {
        stop(nats).await;
    }
    result
}

async fn serve(
    all: &str,
    servers: &mut [tokio::process::Child],
    names: &[String],
    secure: Option<&Secure>,
    args: DevArgs,
) -> anyhow::Result<ExitCode> {
    let local = |urls: &str| match secure {
        Some(secure) => secure.node_nats(urls),
        None => Nats::local(urls, Auth::None),
    };
    let first = format!("nats://127.0.0.1:{}", args.port);
    connect_when_up(&local(&first)?, &mut servers[0]).await?;
    let nats = local(all)?;
    wait_for_jetstream(&nats).await?;
    let exe = std::env::current_exe().context("cannot find the natsfn binary")?;
    let mut others = Vec::new();
    for name in &names[1..] {
        let id = format!("node-{}", name.trim_start_matches("dev-"));
        let child = tokio::process::Command::new(&exe)
            .args(["--nats", all, "node", "--node-id", &id])
            .args(secure.map(Secure::node_args).into_iter().flatten())
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a node")?;
        eprintln!(
            "natsfn dev: node {id} pid {}",
            child.id().unwrap_or_default()
        );
        others.push(child);
    }
    eprintln!(
        "natsfn dev: node node-a pid {} (this process); Ctrl-C stops every node and server",
        std::process::id()
    );
    eprintln!("natsfn dev: point clients at --nats {all}");
    let mut node = args.node;
    node.node_id.get_or_insert_with(|| "node-a".into());
    if let Some(secure) = secure {
        eprintln!("{}", secure.how_to_connect(all));
    }
    let (client, denials) = crate::connect::node(&nats).await?;
    let served = crate::node::serve(client, denials, all, node).await;
    for child in &mut others {
        stop(child).await;
    }
    served.map(|()| ExitCode::SUCCESS)
}

/// Until the cluster's JetStream has a leader and takes an R3 stream (else the node
/// would create its buckets with one replica).
async fn wait_for_jetstream(nats: &Nats) -> anyhow::Result<()> {
    let client = crate::connect::client(nats).await?;
    let js = async_nats::jetstream::new(client);
    let started = Instant::now();
    loop {
        let probe = async_nats::jetstream::stream::Config {
            name: "NATSFN_DEV_READY".into(),
            subjects: vec!["natsfn.dev.ready".into()],
            num_replicas: 3,
            ..Default::default()
        };
        if js.get_or_create_stream(probe).await.is_ok() {
            let _ = js.delete_stream("NATSFN_DEV_READY").await;
            return Ok(());
        }
        if started.elapsed() > READY_WITHIN {
            bail!("the cluster's JetStream was not ready within {READY_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The settings of nats-cluster/cluster.conf, on loopback ports.
fn config(name: &str, port: u16, dir: &Path, routes: &[String]) -> String {
    format!(
        "server_name: {name}\nlisten: 127.0.0.1:{port}\nmax_payload: 1MB\n\
         jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n  sync_interval: always\n}}\n\
         cluster {{\n  name: natsfn-dev\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
        store = dir.join("jetstream").display(),
        route = port + ROUTE_OFFSET,
        routes = routes.join(", "),
    )
}
