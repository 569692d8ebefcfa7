//! What every actor of a node shares: the NATS connection and a few facts fixed at
//! start-up. Immutable; state lives in the actors.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::logs::LogShipper;
use crate::metrics::Metrics;
use crate::status::StatusReporter;

#[derive(Clone)]
pub(crate) struct NodeContext {
    pub(crate) client: async_nats::Client,
    /// The same connection behind one pointer, which every invocation's `Caller`
    /// keeps for its reply of last resort: cheaper to clone and to carry through the
    /// mailboxes than a `Client`.
    pub(crate) shared_client: Arc<async_nats::Client>,
    /// This node's id (`--node-id`), as the status and the service metadata name it.
    pub(crate) node_id: Arc<str>,
    /// The server's `max_payload`: a reply larger than this cannot be sent.
    pub(crate) max_payload: usize,
    /// Where the bootstraps were written (`LAMBDA_RUNTIME_DIR`).
    pub(crate) runtime_dir: Arc<Path>,
    pub(crate) interpreters: Arc<Interpreters>,
    pub(crate) status: StatusReporter,
    pub(crate) logs: LogShipper,
    /// The node's `--max-workers` slots: every WorkerActor holds one while it lives,
    /// so the count cannot drift from the workers there are.
    pub(crate) worker_slots: Arc<Semaphore>,
    /// How many slots there are.
    pub(crate) max_workers: usize,
    pub(crate) metrics: Arc<Metrics>,
    /// Unpacked packages under the node's data dir.
    pub(crate) packages: crate::package::PackageCache,
    /// Mints handlers' NATS credentials; `None` without `--signing-key`.
    pub(crate) credentials: Option<Arc<crate::credentials::CredentialIssuer>>,
    /// This node's gateway refuses function URLs with `url.auth` `AWS_IAM` (no
    /// `--http-auth`).
    pub(crate) url_auth_refused: bool,
    /// Builds each worker's sandbox; `None` with `--isolation none`.
    pub(crate) sandbox: Option<Arc<crate::sandbox::Sandbox>>,
}

/// Absolute paths of the language interpreters, found once at start-up so that a
/// worker's clean environment does not need the node's PATH (or a pyenv shim's).
#[derive(Debug, Clone)]
pub struct Interpreters {
    pub python3: Option<PathBuf>,
    pub node: Option<PathBuf>,
    /// The JDK for `java` functions, or why there is none usable (in words).
    pub java: Result<crate::java::Jdk, String>,
}

impl Interpreters {
    /// Asks `python3` and `node` on PATH (or `NATSFN_PYTHON3` / `NATSFN_NODE`) for their
    /// real executable; finds `java` (or `NATSFN_JAVA`), a JDK 17+, and Jackson.
    pub async fn discover() -> Interpreters {
        let python3 = Self::ask(
            std::env::var("NATSFN_PYTHON3").unwrap_or_else(|_| "python3".into()),
            &["-c", "import sys; print(sys.executable)"],
        )
        .await;
        let node = Self::ask(
            std::env::var("NATSFN_NODE").unwrap_or_else(|_| "node".into()),
            &["-p", "process.execPath"],
        )
        .await;
        let java = crate::java::Jdk::discover().await;
        Interpreters {
            python3,
            node,
            java,
        }
    }

    async fn ask(program: String, args: &[&str]) -> Option<PathBuf> {
        let out = tokio::process::Command::new(&program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .ok()?;
        let path = String::from_utf8(out.stdout).ok()?;
        let path = PathBuf::from(path.trim());
        (out.status.success() && path.is_absolute()).then_some(path)
    }
}
