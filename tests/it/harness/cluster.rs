//! A three-server NATS cluster with JetStream on this machine (the settings of the
//! repo's nats-cluster/ on free loopback ports), each server restartable with its own
//! store, and a bounded load that counts what its callers saw.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, nats_server_binary, try_read_port, DEADLINE};

/// One server of a [`Cluster`]: its ports and store stay the same across restarts.
struct Member {
    child: Option<Child>,
    name: String,
    port: u16,
    /// The HTTP monitoring port (`/jsz` names the JetStream meta leader).
    monitor: u16,
    dir: TempDir,
}

pub struct Cluster {
    members: Vec<Member>,
}

impl Cluster {
    /// Three servers that advertise each other to their clients (as the shipped
    /// config does).
    pub async fn start() -> Cluster {
        Self::start_with(false, true).await
    }

    /// `no_advertise`: clients learn no other server than those they were given, so a
    /// client given one server is cut off when that one is down. `sync_always`: the
    /// shipped `sync_interval: always` (else JetStream's default, for comparison).
    pub async fn start_with(no_advertise: bool, sync_always: bool) -> Cluster {
        // Ports are picked before the servers bind them: another test may take one
        // meanwhile, and then the cluster is made again on fresh ones.
        for _ in 0..3 {
            if let Some(mut cluster) = Self::try_start(no_advertise, sync_always) {
                if cluster.wait_ready().await {
                    return cluster;
                }
            }
        }
        panic!("a 3-server cluster did not start on three tries");
    }

    fn try_start(no_advertise: bool, sync_always: bool) -> Option<Cluster> {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut members = Vec::new();
        for (i, (port, route, monitor)) in ports.iter().enumerate() {
            let dir = tempfile::tempdir().expect("temp dir");
            let name = format!("n{}", (b'a' + i as u8) as char);
            let roles = if super::roles::roles() {
                super::roles::suite_config(dir.path())
            } else {
                String::new()
            };
            let conf = format!(
                "{roles}server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  {sync}\n}}\n\
                 cluster {{\n  name: natsfn\n  listen: 127.0.0.1:{route}\n  no_advertise: {no_advertise}\n  routes: [{routes}]\n}}\n",
                store = dir.path().join("js").display(),
                routes = routes.join(", "),
                sync = if sync_always { "sync_interval: always" } else { "" },
            );
            std::fs::write(dir.path().join("nats.conf"), conf).expect("write nats.conf");
            members.push(Member {
                child: None,
                name,
                port: *port,
                monitor: *monitor,
                dir,
            });
        }
        let mut cluster = Cluster { members };
        for i in 0..3 {
            if !cluster.try_spawn(i) {
                return None; // the others are stopped as `cluster` drops
            }
        }
        Some(cluster)
    }

    fn spawn(&mut self, i: usize) {
        assert!(
            self.try_spawn(i),
            "server {} did not start",
            self.members[i].name
        );
    }

    /// Starts server `i`; false if it did not come up on its port.
    fn try_spawn(&mut self, i: usize) -> bool {
        let member = &mut self.members[i];
        let mut child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(member.dir.path().join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start nats-server");
        if try_read_port(&mut child) != Some(member.port) {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        member.child = Some(child);
        true
    }

    /// Until JetStream has a leader and an R3 stream can be made: then every bucket
    /// a node creates gets its three replicas. False if a server exited meanwhile: one
    /// that bound its client port may still find its route or monitor port taken.
    async fn wait_ready(&mut self) -> bool {
        let client = self.client().await;
        let js = async_nats::jetstream::new(client);
        // A meta leader is elected within seconds, longer on a machine busy with other
        // tests.
        let started = std::time::Instant::now();
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(60) {
            let exited = self.members.iter_mut().any(|m| {
                m.child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
            });
            if exited {
                return false;
            }
            let config = async_nats::jetstream::stream::Config {
                name: "HARNESS_READY".into(),
                subjects: vec!["harness.ready".into()],
                num_replicas: 3,
                ..Default::default()
            };
            match js.get_or_create_stream(config).await {
                Ok(_) => match js.delete_stream("HARNESS_READY").await {
                    Ok(_) => return true,
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster's JetStream did not accept an R3 stream within 60 s: {last}");
    }

    /// `nats://…` of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[i].port)
    }

    /// All three, comma-separated, as `--nats` takes them.
    pub fn urls(&self) -> String {
        (0..3).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    pub fn name(&self, i: usize) -> &str {
        &self.members[i].name
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// A client of all three servers, reconnecting without limit.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .connect((0..3).map(|i| self.url(i)).collect::<Vec<_>>())
            .await
            .expect("connect to the test cluster")
    }

    /// A client of server `i` only.
    pub async fn client_of(&self, i: usize) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .ignore_discovered_servers()
            .connect(self.url(i))
            .await
            .expect("connect to a test server")
    }

    /// The server that leads JetStream's meta group now, as a live server's `/jsz` says.
    pub async fn meta_leader(&self) -> Option<String> {
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/jsz", member.monitor);
            let Ok(response) = reqwest::get(&url).await else {
                continue;
            };
            let Ok(jsz) = response.json::<serde_json::Value>().await else {
                continue;
            };
            if let Some(leader) = jsz["meta_cluster"]["leader"].as_str() {
                return Some(leader.to_owned());
            }
        }
        None
    }

    /// SIGKILL server `i`: no goodbye to its clients or peers.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its port with its store.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// What the callers of a [`Load`] saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub succeeded: u64,
    pub failed: u64,
    /// Requests whose first try failed and whose retry succeeded.
    pub retried: u64,
    /// Replies by payload (e.g. by the version a function answers with).
    pub answers: BTreeMap<String, u64>,
    /// When first tries failed, since the load started.
    pub first_failures: Vec<Duration>,
    pub failures: Vec<String>,
    pub ran_for: Duration,
}

impl LoadReport {
    pub fn success_ratio(&self) -> f64 {
        let total = self.succeeded + self.failed;
        if total == 0 {
            0.0
        } else {
            self.succeeded as f64 / total as f64
        }
    }

    /// From the first failed first try to the last: how long callers saw trouble.
    pub fn trouble_window(&self) -> Duration {
        match (
            self.first_failures.iter().min(),
            self.first_failures.iter().max(),
        ) {
            (Some(first), Some(last)) => *last - *first,
            _ => Duration::ZERO,
        }
    }

    /// One line for the test output, which the README's figures quote.
    pub fn print(&self, scenario: &str) {
        let total = self.succeeded + self.failed;
        println!(
            "cluster scenario {scenario:?}: {}/{total} succeeded ({:.3}%), {} after one retry, \
             {} failed; first tries failed over {:?}; ran {:?}; answers {:?}",
            self.succeeded,
            self.success_ratio() * 100.0,
            self.retried,
            self.failed,
            self.trouble_window(),
            self.ran_for,
            self.answers,
        );
    }
}

/// A bounded load on loopback: `callers` loops, each sending one request at a time on
/// `subject` with a pause between them, for `duration` (at most 60 s). A failed
/// request (no reply within 2 s, or an error reply) is tried once more after 100 ms.
pub struct Load {
    task: tokio::task::JoinHandle<LoadReport>,
    pub started: Instant,
}

const LOAD_TIMEOUT: Duration = Duration::from_secs(2);
const LOAD_RETRY_AFTER: Duration = Duration::from_millis(100);
const LOAD_PAUSE: Duration = Duration::from_millis(5);

impl Load {
    pub fn start(
        client: async_nats::Client,
        subject: &str,
        callers: usize,
        duration: Duration,
    ) -> Load {
        assert!(
            duration <= Duration::from_secs(60),
            "a load runs 60 s at most"
        );
        let started = Instant::now();
        let subject: Arc<str> = subject.into();
        let task = tokio::spawn(async move {
            let loops: Vec<_> = (0..callers)
                .map(|_| tokio::spawn(caller(client.clone(), subject.clone(), started, duration)))
                .collect();
            let mut report = LoadReport::default();
            for one in loops {
                let part = one.await.expect("load caller");
                report.succeeded += part.succeeded;
                report.failed += part.failed;
                report.retried += part.retried;
                for (answer, n) in part.answers {
                    *report.answers.entry(answer).or_default() += n;
                }
                report.first_failures.extend(part.first_failures);
                report.failures.extend(part.failures);
            }
            report.ran_for = started.elapsed();
            report
        });
        Load { task, started }
    }

    pub async fn finish(self) -> LoadReport {
        tokio::time::timeout(Duration::from_secs(60) + DEADLINE, self.task)
            .await
            .expect("the load to end")
            .expect("load task")
    }
}

async fn caller(
    client: async_nats::Client,
    subject: Arc<str>,
    started: Instant,
    duration: Duration,
) -> LoadReport {
    let mut report = LoadReport::default();
    while started.elapsed() < duration {
        match try_once(&client, &subject).await {
            Ok(answer) => {
                report.succeeded += 1;
                *report.answers.entry(version(&answer)).or_default() += 1;
            }
            Err(first) => {
                report.first_failures.push(started.elapsed());
                tokio::time::sleep(LOAD_RETRY_AFTER).await;
                match try_once(&client, &subject).await {
                    Ok(answer) => {
                        report.succeeded += 1;
                        report.retried += 1;
                        *report.answers.entry(version(&answer)).or_default() += 1;
                    }
                    Err(second) => {
                        report.failed += 1;
                        report.failures.push(format!(
                            "at {:?}: {first}; retry: {second}",
                            started.elapsed()
                        ));
                    }
                }
            }
        }
        tokio::time::sleep(LOAD_PAUSE).await;
    }
    report
}

async fn try_once(client: &async_nats::Client, subject: &str) -> Result<String, String> {
    let request = async_nats::Request::new()
        .payload("{}".into())
        .timeout(Some(LOAD_TIMEOUT));
    let reply = client
        .send_request(subject.to_owned(), request)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(code) = super::error_code(&reply) {
        return Err(format!(
            "error {code}: {}",
            String::from_utf8_lossy(&reply.payload)
        ));
    }
    Ok(String::from_utf8_lossy(&reply.payload).into_owned())
}

/// The `"v"` of a JSON answer (the version a test function reports), else the answer.
fn version(answer: &str) -> String {
    serde_json::from_str::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v.get("v").map(|v| v.to_string()))
        .unwrap_or_else(|| answer.to_owned())
}
