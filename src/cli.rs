//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "natsfn",
    version,
    about = "AWS Lambda handlers served over NATS",
    after_help = "The reading commands (ls, get, nodes, logs, package ls, dlq ls, version ls, alias ls) ride out a JetStream \
leader election: a read nobody answered (a request timed out or found no responders, \
JetStream temporarily unavailable) is tried again, each request waiting 1 s, for up to 15 s; \
then the command fails with the reason."
)]
pub struct Cli {
    /// Copies JetStream keeps of each bucket and stream natsfn creates (default: 3 when
    /// the server is in a cluster of at least 3 servers, else 1). An existing one with
    /// fewer is raised to this.
    #[arg(long, global = true, env = "NATSFN_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: Option<u8>,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where and as whom to connect: the nats CLI's flags and variables, same meaning.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Connecting to NATS (as the nats CLI does)")]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated; `user:password@` or `token@` in a URL
    /// authenticate (default: the context's, else nats://127.0.0.1:4222).
    #[arg(
        long = "nats",
        alias = "server",
        global = true,
        env = "NATS_URL",
        value_name = "URLS"
    )]
    pub url: Option<String>,
    /// A user JWT and nkey seed (`.creds`, operator mode).
    #[arg(long, global = true, env = "NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// A file holding a user nkey seed.
    #[arg(long, global = true, env = "NATS_NKEY", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    #[arg(long, global = true, env = "NATS_USER")]
    pub user: Option<String>,
    #[arg(long, global = true, env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[arg(long, global = true, env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Client certificate (with --tlskey).
    #[arg(long, global = true, env = "NATS_CERT", value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Client certificate's private key.
    #[arg(long, global = true, env = "NATS_KEY", value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// CA certificates to trust (`tls://` URLs require TLS).
    #[arg(long, global = true, env = "NATS_CA", value_name = "FILE")]
    pub tlsca: Option<PathBuf>,
    /// A nats CLI context (~/.config/nats/context/NAME.json; default: the selected one).
    #[arg(long, global = true, env = "NATS_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Prefix of this command's reply subjects instead of `_INBOX` (a role may be
    /// allowed only its own `PREFIX.>`).
    #[arg(long, global = true, env = "NATS_INBOX_PREFIX", value_name = "PREFIX")]
    pub inbox_prefix: Option<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a dispatcher node: serve every function bound in natsfn-bindings.
    Node(NodeArgs),
    /// Run a local nats-server (JetStream on) and a node, for development. Ctrl-C stops both.
    Dev(DevArgs),
    /// Bind a function: to a directory (--code, creates or replaces the binding), or to a
    /// package (-p: on an existing binding only the code changes, and the flags given).
    Bind(BindArgs),
    /// Pack DIR, push it as a package and bind the function to it (created or updated),
    /// then wait until a node reports it ready.
    Deploy(DeployArgs),
    /// Packages in natsfn-packages: push, ls, rm.
    Package {
        #[command(subcommand)]
        command: PackageCommand,
    },
    /// Edit the NATS subjects of a binding.
    Nats {
        #[command(subcommand)]
        command: NatsCommand,
    },
    /// Invoke a function and print its result.
    Invoke(InvokeArgs),
    /// List the bound functions and their state (retried for up to 15 s while JetStream
    /// elects a leader).
    Ls,
    /// List the live nodes (retried for up to 15 s while JetStream elects a leader).
    Nodes,
    /// Show a function's binding and status (retried for up to 15 s while JetStream
    /// elects a leader).
    Get { name: String },
    /// Remove a function's binding.
    Rm { name: String },
    /// What each node's instance of each function (or of NAME) has served: requests,
    /// errors, average time, last error, and totals (ADR-32 `$SRV.STATS`).
    Stats { name: Option<String> },
    /// Print a function's recent log (from the NATSFN_LOGS stream); -f follows it. Opening
    /// the history is retried for up to 15 s while JetStream elects a leader.
    Logs(LogsArgs),
    /// A function's dead letters: async events that ran out of retries or age.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Publish a version of a function: an immutable copy of its binding, its code
    /// frozen in natsfn-packages by digest. Prints `published NAME version N`.
    Publish(PublishArgs),
    /// A function's published versions: ls, rm.
    Version {
        #[command(subcommand)]
        command: VersionCommand,
    },
    /// A function's aliases (names pointing at versions, optionally weighted or as a
    /// canary): set, ls, rm.
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
}

#[derive(Args)]
pub struct PublishArgs {
    pub name: String,
    /// What this version is (shown by `version ls`).
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Subcommand)]
pub enum VersionCommand {
    /// List a function's versions (retried for up to 15 s while JetStream elects a
    /// leader).
    Ls { name: String },
    /// Remove version N; refused while an alias points at it or weighs it. Its number
    /// is never given out again.
    Rm { name: String, version: u64 },
}

#[derive(Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS at VERSION, writing the whole alias: weights, subjects and a
    /// canary not given are cleared (a running canary ends).
    Set(AliasSetArgs),
    /// List a function's aliases, with their canaries' progress (retried for up to
    /// 15 s while JetStream elects a leader).
    Ls { name: String },
    /// Remove an alias.
    Rm { name: String, alias: String },
}

#[derive(Args)]
pub struct AliasSetArgs {
    pub name: String,
    /// Letters, digits, '_' or '-', not all digits, not $LATEST.
    pub alias: String,
    pub version: u64,
    /// Send FRACTION (e.g. 10%, 0.1) of invocations to VERSION instead (at most one).
    #[arg(
        long = "weight",
        value_name = "VERSION=FRACTION",
        conflicts_with = "canary"
    )]
    pub weights: Vec<String>,
    /// A NATS subject the alias serves (repeatable).
    #[arg(long = "subject", short = 's', value_name = "S")]
    pub subjects: Vec<String>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Workers of the alias' version kept warm across the cluster; the command waits
    /// (up to 120 s) until they are.
    #[arg(long, value_name = "N")]
    pub provisioned: Option<u32>,
    /// With --provisioned: return once the alias is written, without waiting for the
    /// workers.
    #[arg(long, requires = "provisioned")]
    pub no_wait: bool,
    /// Shift the alias from its current version to VERSION in steps, e.g.
    /// 10%,30%,100% (the last is 100%); the alias must exist already.
    #[arg(long, value_name = "STEPS", requires_all = ["every", "max_error_rate"])]
    pub canary: Option<String>,
    /// With --canary: how long each step runs, e.g. 1m, 30s, 500ms.
    #[arg(long, value_name = "DURATION", requires = "canary")]
    pub every: Option<String>,
    /// With --canary: above this share of 5xx outcomes of the new version (e.g. 1%),
    /// the alias goes back to its old version.
    #[arg(long, value_name = "FRACTION", requires = "canary")]
    pub max_error_rate: Option<String>,
    /// With --canary: invocations of the new version before its error rate is judged.
    #[arg(long, value_name = "N", requires = "canary")]
    pub min_sample: Option<u64>,
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List the dead letters of a function (retried for up to 15 s while JetStream elects
    /// a leader).
    Ls { name: String },
    /// Put a function's dead letters back in its async queue (each once) and remove them.
    Redrive { name: String },
}

#[derive(Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new records as they are logged, until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How far back to start, e.g. 10m, 2h, 30s.
    #[arg(long, default_value = "10m", value_parser = parse_age)]
    pub since: Duration,
}

#[derive(Args)]
pub struct NodeArgs {
    /// This node's id in natsfn-status and its key in natsfn-nodes (default: hostname and a
    /// random suffix).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Where to write the runtime bootstraps (default: a directory under the system temp dir).
    #[arg(long)]
    pub runtime_dir: Option<PathBuf>,
    /// Where the node keeps its package cache, in DIR/packages (default:
    /// $XDG_CACHE_HOME/natsfn or ~/.cache/natsfn). Nodes may share one. `natsfn dev`
    /// also keeps its nats-server's JetStream data here (default ~/.local/share/natsfn/dev).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Dispatcher threads. One keeps every hop of an invocation on one thread, which is
    /// cheapest; more only pay off when a node's own CPU is the bottleneck.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Worker processes this node runs at most, all functions together (default: 32 per
    /// CPU, at most one per 128 MB of memory, at least 4). When it is reached, idle
    /// workers of other functions are evicted, least recently used first.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_workers: Option<u32>,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9090; off unless given).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve the HTTP gateway (function URLs and the Lambda Invoke API) on ADDR, e.g.
    /// 127.0.0.1:8080 (off unless given; `natsfn dev` serves it on 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Require AWS SigV4 signatures (service `lambda`) on the gateway's Invoke API, and on
    /// function URLs whose binding says `url.auth` `AWS_IAM`, by a key of FILE:
    /// {"keys": [{"access_key_id": "AKID…", "secret_access_key": "…", "functions": ["*"]}]}
    /// (`functions`: names, or "*").
    #[arg(long, value_name = "FILE")]
    pub http_auth: Option<PathBuf>,
    /// Serve the gateway over TLS with this PEM certificate chain (with --http-tls-key).
    #[arg(long, value_name = "FILE", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// The PEM private key of --http-tls-cert.
    #[arg(long, value_name = "FILE", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// How long the NATSFN_LOGS stream keeps log records, if this node creates it
    /// (an existing stream keeps its own limits), e.g. 24h, 90m.
    #[arg(long, default_value = "24h", value_parser = parse_age)]
    pub logs_max_age: Duration,
    /// How many MB of log records NATSFN_LOGS keeps, if this node creates it; the
    /// oldest go first.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub logs_max_mb: u32,
    /// Where NATSFN_LOGS keeps records, if this node creates it: memory (cheapest for
    /// the server; history survives node restarts, not a server restart) or file.
    #[arg(long, value_enum, default_value_t = LogStorage::Memory)]
    pub logs_storage: LogStorage,
    /// How long the node may be without any NATS server before it stops taking work
    /// (its functions finish what they hold and stop; they start again once it is
    /// connected), e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_age)]
    pub nats_grace: Duration,
    /// A label of this node, KEY=VALUE (repeatable), e.g. --label region=eu: a binding
    /// with `placement.labels` runs only on nodes that have all of them.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The nkey seed (alone in FILE) of a signing key of the node's own account: the node
    /// then mints each handler whose binding has `nats` a NATS user of that account,
    /// scoped to the binding's subjects (the server must be in operator mode).
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// How workers are kept from each other and from the node: `sandbox` runs each in
    /// bubblewrap (its own namespaces, a uid of its function's own, a private /tmp,
    /// cgroup limits); `none` runs them as the node's own user. A node that cannot
    /// build the sandbox refuses to start.
    #[arg(long, value_enum, default_value_t = Isolation::Sandbox)]
    pub isolation: Isolation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    Sandbox,
    None,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE, e.g. region=eu"))?;
    for part in [key, value] {
        if !natsfn_protocol::is_valid_label(part) {
            return Err(format!(
                "{text:?}: {part:?} is not a label: expected 1 to 63 letters, digits and -_./"
            ));
        }
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogStorage {
    Memory,
    File,
}

#[derive(Args)]
pub struct DevArgs {
    /// Client port of the local nats-server.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// Do not serve the HTTP gateway (by default on 127.0.0.1:8080; --http ADDR moves it).
    #[arg(long, conflicts_with = "http")]
    pub no_http: bool,
    /// Run N clustered nats-servers (client ports PORT, PORT+1, ...; route ports
    /// PORT+2000, ...) and N nodes, one per server, for trying failover by hand.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(3..=5))]
    pub cluster: Option<u16>,
    /// Require credentials: make an nkey per role (node, admin, invoker) in DATA/secure,
    /// give each the permissions of nats-secure/, and print how to connect.
    #[arg(long)]
    pub secure: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Args)]
pub struct BindArgs {
    /// Function name.
    #[arg(short = 'f', long = "function")]
    pub name: String,
    /// python3, nodejs, java or provided (required for a new binding).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Lambda handler, e.g. app.handler.
    #[arg(long)]
    pub handler: Option<String>,
    /// Directory holding the function's code (on the node's machine).
    #[arg(long, conflicts_with = "package")]
    pub code: Option<PathBuf>,
    /// Package (in natsfn-packages) holding the function's code; its current digest is
    /// pinned in the binding. For deploy: the name to push DIR as (default: the function's).
    #[arg(short = 'p', long)]
    pub package: Option<String>,
    /// A package to use as a layer (repeatable, at most 5, later ones win); its current
    /// digest is pinned. Given, they replace the binding's layers.
    #[arg(long = "layer", value_name = "PACKAGE")]
    pub layers: Vec<String>,
    /// A NATS subject to serve (repeatable).
    #[arg(short = 's', long = "subject")]
    pub subjects: Vec<String>,
    /// Run time limit, e.g. 3s, 500ms, 2m.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Memory in MB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Workers kept warm.
    #[arg(long)]
    pub min: Option<u64>,
    /// Most invocations running at once on a node.
    #[arg(long)]
    pub max: Option<u64>,
    /// Invocations that may wait on a node when all workers are busy (then 429).
    #[arg(long)]
    pub queue: Option<u64>,
    /// How long a worker above --min stays idle before it stops, e.g. 60s.
    #[arg(long)]
    pub idle: Option<String>,
    /// Replace a worker after this many invocations (0: never).
    #[arg(long)]
    pub max_invocations: Option<u64>,
    /// Environment variable for the function, KEY=VALUE (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Seconds to wait for a node to report the function ready (0: do not wait).
    #[arg(long, default_value_t = 15)]
    pub wait: u64,
}

#[derive(Args)]
pub struct DeployArgs {
    /// The directory to pack (`.git/` and what `.natsfnignore` names are left out).
    pub dir: PathBuf,
    #[command(flatten)]
    pub bind: BindArgs,
}

#[derive(Subcommand)]
pub enum PackageCommand {
    /// Pack DIR and store it as package P (replacing what P held).
    Push {
        dir: PathBuf,
        #[arg(short = 'p', long)]
        package: String,
    },
    /// List packages: size, digest and which functions use each as code or layer
    /// (retried for up to 15 s while JetStream elects a leader).
    Ls,
    /// Remove a package; refused while a binding uses it, unless --force, and while a
    /// published version uses it, whatever --force says (`version rm` it first).
    Rm {
        package: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum NatsCommand {
    /// Add a subject to a function's binding.
    Bind(SubjectArgs),
    /// Remove a subject from a function's binding.
    Unbind(SubjectArgs),
}

#[derive(Args)]
pub struct SubjectArgs {
    #[arg(short = 's', long = "subject")]
    pub subject: String,
    #[arg(short = 'f', long = "function")]
    pub name: String,
}

#[derive(Args)]
pub struct InvokeArgs {
    /// The function, or NAME:QUALIFIER (a version number, an alias or $LATEST).
    pub name: String,
    /// The event (JSON); `-` reads it from stdin; none sends an empty event ({}).
    pub payload: Option<String>,
    /// How long to wait for the result, e.g. 30s. Sent as the request's
    /// Natsfn-Deadline-Ms: an invocation still queued on a node then is dropped, not run.
    #[arg(long, default_value = "60s")]
    pub timeout: String,
    /// Enqueue the event on NATSFN_ASYNC (Lambda's InvocationType Event) and print its
    /// id once stored, instead of waiting for the result.
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// With --async: the event's id (its Nats-Msg-Id, so a repeat within 2 minutes runs
    /// once, and its request id); default: a new UUID.
    #[arg(long, requires = "asynchronous")]
    pub event_id: Option<String>,
    /// Invoke this version number, alias or $LATEST (as NAME:QUALIFIER does).
    #[arg(long, value_name = "Q")]
    pub qualifier: Option<String>,
}

/// `3s`, `500ms`, `2m`, or plain milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 3s, 500ms or 2m"))?;
    let factor = match unit {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    Ok((number * factor).round() as u64)
}

/// A span of time back or kept: `parse_duration_ms`'s forms, or hours (`24h`); not 0.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let ms = match trimmed.strip_suffix('h') {
        Some(hours) => {
            let hours: f64 = hours
                .parse()
                .map_err(|_| format!("{text:?}: expected a duration such as 10m or 24h"))?;
            (hours * 3_600_000.0).round() as u64
        }
        None => parse_duration_ms(trimmed)?,
    };
    if ms == 0 {
        return Err(format!("{text:?}: must be longer than 0"));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::{parse_age, parse_duration_ms, parse_label};
    use std::time::Duration;

    #[test]
    fn labels() {
        assert_eq!(parse_label("region=eu"), Ok(("region".into(), "eu".into())));
        assert!(parse_label("region")
            .unwrap_err()
            .contains("expected KEY=VALUE"));
        assert!(parse_label("region=")
            .unwrap_err()
            .contains("is not a label"));
        assert!(parse_label("a b=c").unwrap_err().contains("is not a label"));
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_age("1.5h"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_age("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_age("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_age("0s").is_err());
        assert!(parse_age("ah").is_err());
        assert!(parse_age("3d").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("3s"), Ok(3000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("3h").is_err());
    }
}
