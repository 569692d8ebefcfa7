//! One worker's NATS credentials: a `.creds` file in a directory only the node's user
//! can enter, re-minted into the same path at half its lifetime (a client reads the
//! file again when it reconnects, which the server makes it do when the JWT it
//! connected with expires), and removed with the directory when the worker ends.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nkeys::KeyPair;
use tokio_util::task::AbortOnDrop;

use crate::credentials::HandlerGrant;

const CREDS_FILE: &str = "nats.creds";

/// Dropping it stops the renewal and removes the file.
pub(crate) struct WorkerCredentials {
    dir: PathBuf,
    /// `NATS_URL`, `NATS_CREDS` and `NATS_INBOX_PREFIX` of the worker.
    env: Vec<(&'static str, String)>,
    /// Set once the directory is removed, under the lock a renewal writes under, so
    /// that a renewal never writes the file back.
    removed: Arc<Mutex<bool>>,
    _renewal: AbortOnDrop,
}

impl WorkerCredentials {
    /// Mints the worker's credentials and writes them; renews them until dropped.
    /// `owner`: the sandboxed worker's uid, which must read them (the node's user
    /// otherwise).
    pub(crate) fn issue(
        grant: &Arc<HandlerGrant>,
        function: &str,
        owner: Option<u32>,
    ) -> std::io::Result<Self> {
        let worker = uuid::Uuid::new_v4().simple().to_string();
        let dir = grant.issuer.dir.join(&worker);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&grant.issuer.dir)?;
        DirBuilder::new().mode(0o700).create(&dir)?;
        if let Err(e) = std::os::unix::fs::chown(&dir, owner, owner) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let path = dir.join(CREDS_FILE);
        let inbox_prefix = format!("_INBOX_natsfn.{function}.{worker}");
        let user = KeyPair::new_user();
        let mint = {
            let (grant, function, prefix) =
                (grant.clone(), function.to_owned(), inbox_prefix.clone());
            move |user: &KeyPair| grant.issuer.mint(user, &grant.access, &prefix, &function)
        };
        if let Err(e) = write_private(&path, &mint(&user), owner) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let removed = Arc::new(Mutex::new(false));
        let renewal = {
            let (path, removed) = (path.clone(), removed.clone());
            let every = grant.issuer.lifetime / 2;
            tokio::spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    ticks.tick().await;
                    let creds = mint(&user);
                    let Ok(removed) = removed.lock() else { return };
                    if *removed {
                        return;
                    }
                    if let Err(e) = write_private(&path, &creds, owner) {
                        tracing::warn!(path = %path.display(), error = %e,
                            "cannot renew a handler's NATS credentials");
                    }
                }
            })
        };
        let env = vec![
            ("NATS_URL", grant.issuer.nats_url.clone()),
            ("NATS_CREDS", path.display().to_string()),
            ("NATS_INBOX_PREFIX", inbox_prefix),
        ];
        Ok(WorkerCredentials {
            dir,
            env,
            removed,
            _renewal: AbortOnDrop::new(renewal.abort_handle()),
        })
    }

    pub(crate) fn env(&self) -> &[(&'static str, String)] {
        &self.env
    }

    /// The directory holding the file (a sandboxed worker gets it mounted).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for WorkerCredentials {
    fn drop(&mut self) {
        let mut removed = match self.removed.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *removed = true;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "cannot remove a handler's NATS credentials");
        }
    }
}

/// Writes `text` to `path` as a new file of mode 0600 (of `owner`) renamed into place,
/// so a reader sees the old file or the new one, whole.
fn write_private(path: &Path, text: &str, owner: Option<u32>) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    std::os::unix::fs::chown(&tmp, owner, owner)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::time::Duration;

    use natsfn_protocol::NatsAccess;

    use super::WorkerCredentials;
    use crate::credentials::{CredentialIssuer, HandlerGrant};

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[tokio::test]
    async fn the_file_is_private_renewed_in_place_and_removed_with_the_worker() {
        let root = tempfile::tempdir().expect("temp dir");
        let issuer = CredentialIssuer::for_tests(root.path().join("creds"), Duration::from_secs(2));
        let grant = Arc::new(HandlerGrant {
            issuer: Arc::new(issuer),
            access: NatsAccess {
                publish: vec!["orders.>".into()],
                subscribe: vec![],
            },
        });
        let creds = WorkerCredentials::issue(&grant, "f", None).expect("issued");
        let env: std::collections::HashMap<_, _> = creds.env().iter().cloned().collect();
        let path = std::path::PathBuf::from(&env["NATS_CREDS"]);
        assert!(env["NATS_INBOX_PREFIX"].starts_with("_INBOX_natsfn.f."));
        assert_eq!(env["NATS_URL"], "nats://127.0.0.1:4222");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        let first = std::fs::read_to_string(&path).expect("creds");

        // Renewed after half the lifetime: a new JWT for the same user key.
        let started = std::time::Instant::now();
        let renewed = loop {
            let now = std::fs::read_to_string(&path).expect("creds stay readable");
            if now != first {
                break now;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never renewed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let seed = |text: &str| text.lines().nth(9).map(str::to_owned);
        assert_eq!(seed(&renewed), seed(&first));
        assert!(seed(&first).is_some_and(|s| s.starts_with("SU")));
        assert_eq!(mode(&path), 0o600);

        drop(creds);
        assert!(!path.exists());
        assert!(!path.parent().expect("dir").exists());
    }
}
