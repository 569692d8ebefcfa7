//! The content-addressed cache: `<data dir>/packages/<sha256 hex>/` holds one unpacked
//! package. A directory appears whole (unpacked under `.tmp/`, then renamed) and is
//! never changed; it goes when no function uses it any more.
//!
//! Who uses a directory is kept with `flock` on `.locks/<hex>`: every lease holds a
//! shared lock while it lives, and the last lease of a process removes the directory
//! only if it gets the lock exclusively, so that nodes sharing a data dir never remove
//! one another's packages.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind, ObjectStore};
use base64::Engine;
use natsfn_protocol::{LambdaError, PackageRef};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use super::unpack::{unpack, LIMITS};
use super::MAX_PACKAGE_BYTES;

#[derive(Clone)]
pub(crate) struct PackageCache {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    js: async_nats::jetstream::Context,
    store: OnceCell<ObjectStore>,
    /// One slot per digest, so that two functions needing the same package fetch it once.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Weak<Lease>>>>>,
}

/// One unpacked package, kept on disk while this lives (a LaunchPlan holds it, and
/// every worker holds the plan).
#[derive(Debug)]
pub(crate) struct Lease {
    dir: PathBuf,
    /// Holds the shared lock; None only while dropping.
    lock: Option<File>,
    root: PathBuf,
}

impl Lease {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl PackageCache {
    /// The cache under `data_dir/packages`.
    pub(crate) fn new(
        data_dir: &Path,
        js: async_nats::jetstream::Context,
    ) -> std::io::Result<Self> {
        let root = data_dir.join("packages");
        for dir in [root.join(".tmp"), root.join(".locks")] {
            std::fs::create_dir_all(dir)?;
        }
        sweep(&root);
        Ok(PackageCache {
            inner: Arc::new(Inner {
                root,
                js,
                store: OnceCell::new(),
                slots: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The unpacked directory of `package`, fetched and verified first if this node
    /// does not hold it yet. `role` says what the binding uses it as, for the reason.
    pub(crate) async fn lease(
        &self,
        package: &PackageRef,
        role: &str,
    ) -> Result<Arc<Lease>, LambdaError> {
        let name = &package.package;
        let what = format!("{role} package {name:?}");
        let store = self.store(&what).await?;
        // Asked on every revision, even when this node holds the bytes already: the
        // cache is keyed by digest, and the binding also names the object.
        let stored = stored_digest(store, name, &what).await?;
        let (hex, fetched) = match (&package.digest, stored) {
            (Some(digest), Some(stored)) => {
                let pinned = digest.trim_start_matches("sha256:");
                if pinned != stored {
                    return Err(mismatch(&what, pinned, &stored));
                }
                (stored, None)
            }
            // The object's info gives no digest to compare (another tool wrote it):
            // its bytes are what is checked, cached or not.
            (Some(digest), None) => {
                let pinned = digest.trim_start_matches("sha256:").to_owned();
                let fetched = fetch_verified(store, name, &what, &pinned).await?;
                (pinned, Some(fetched))
            }
            // Unpinned: the object as it is now.
            (None, Some(stored)) => (stored, None),
            (None, None) => {
                return Err(LambdaError::invalid_package(format!(
                    "{what}: the object store gives it no SHA-256 digest"
                )))
            }
        };
        let slot = {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1 || s.try_lock().is_ok_and(|w| w.strong_count() > 0)
            });
            slots.entry(hex.clone()).or_default().clone()
        };
        let mut held = slot.lock().await;
        if let Some(lease) = held.upgrade() {
            return Ok(lease);
        }
        let root = self.inner.root.clone();
        let dir = root.join(&hex);
        let lock_path = root.join(".locks").join(&hex);
        let (lock, present) = blocking(move || {
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            flock(&lock, libc::LOCK_SH)?;
            Ok((lock, dir.is_dir()))
        })
        .await
        .map_err(|e| {
            LambdaError::code_unavailable(format!("{what}: cannot use the package cache: {e}"))
        })?;
        let lease = Lease {
            dir: root.join(&hex),
            lock: Some(lock),
            root: root.clone(),
        };
        if !present {
            let Verified {
                bytes,
                fetched,
                verified,
            } = match fetched {
                Some(done) => done,
                None => fetch_verified(store, name, &what, &hex).await?,
            };
            let target = lease.dir.clone();
            let size = bytes.len();
            let unpacked = blocking(move || {
                let started = std::time::Instant::now();
                install(&bytes, &root, &target).map_err(std::io::Error::other)?;
                Ok(started.elapsed())
            })
            .await
            .map_err(|e| LambdaError::invalid_package(format!("{what} (sha256:{hex}): {e}")))?;
            tracing::info!(
                package = %name,
                digest = %hex,
                bytes = size,
                fetch_ms = fetched.as_millis() as u64,
                verify_ms = verified.as_millis() as u64,
                unpack_ms = unpacked.as_millis() as u64,
                "package fetched, verified and unpacked"
            );
        }
        let lease = Arc::new(lease);
        *held = Arc::downgrade(&lease);
        Ok(lease)
    }

    async fn store(&self, what: &str) -> Result<&ObjectStore, LambdaError> {
        self.inner
            .store
            .get_or_try_init(|| async { crate::buckets::packages(&self.inner.js).await })
            .await
            .map_err(|e| LambdaError::code_unavailable(format!("{what}: {e}")))
    }
}

fn not_found(what: &str) -> LambdaError {
    LambdaError::package_not_found(format!(
        "{what}: no such object in natsfn-packages (natsfn package push, or natsfn deploy)"
    ))
}

/// How long a node keeps asking `natsfn-packages` about a package that it cannot get
/// an answer about (a JetStream leader election, a reconnect) before the revision
/// fails as `Runtime.CodeUnavailable`; "not found" is only ever the store's own answer.
const CHECK_WITHIN: Duration = Duration::from_secs(5);

/// The digest (lowercase hex) the object `name` has in the store now; `None` if its
/// info gives none. A deleted object is not found, as the store's `get` has it.
async fn stored_digest(
    store: &ObjectStore,
    name: &str,
    what: &str,
) -> Result<Option<String>, LambdaError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match store.info(name).await {
            Ok(info) if info.deleted => return Err(not_found(what)),
            Ok(info) => return Ok(info.digest.as_deref().and_then(nats_digest_hex)),
            Err(e) => match e.kind() {
                InfoErrorKind::NotFound | InfoErrorKind::InvalidName => {
                    return Err(not_found(what))
                }
                InfoErrorKind::TimedOut | InfoErrorKind::Other => e,
            },
        };
        if started.elapsed() + pause >= CHECK_WITHIN {
            return Err(LambdaError::code_unavailable(format!(
                "{what}: cannot check it in natsfn-packages (tried for {:.1} s): {error}",
                started.elapsed().as_secs_f64()
            )));
        }
        tracing::debug!(package = %name, error = %error, "natsfn-packages did not answer; asking again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

fn mismatch(what: &str, pinned: &str, actual: &str) -> LambdaError {
    LambdaError::package_digest_mismatch(format!(
        "{what}: expected sha256:{pinned}, the object in natsfn-packages is sha256:{actual}"
    ))
}

/// A package's bytes, hashed and found to be those of the digest asked for.
struct Verified {
    bytes: Vec<u8>,
    fetched: Duration,
    verified: Duration,
}

async fn fetch_verified(
    store: &ObjectStore,
    name: &str,
    what: &str,
    hex: &str,
) -> Result<Verified, LambdaError> {
    let started = Instant::now();
    let bytes = fetch(store, name, what).await?;
    let fetched = started.elapsed();
    // Hashing 100s of MB is no work for the node's async threads.
    let (bytes, actual, verified) = blocking(move || {
        let started = Instant::now();
        let actual = hex_of(&Sha256::digest(&bytes));
        Ok((bytes, actual, started.elapsed()))
    })
    .await
    .map_err(|e| LambdaError::code_unavailable(format!("{what}: {e}")))?;
    if actual != hex {
        return Err(mismatch(what, hex, &actual));
    }
    Ok(Verified {
        bytes,
        fetched,
        verified,
    })
}

async fn fetch(store: &ObjectStore, name: &str, what: &str) -> Result<Vec<u8>, LambdaError> {
    let mut object = store.get(name).await.map_err(|e| match e.kind() {
        GetErrorKind::NotFound => not_found(what),
        _ => LambdaError::code_unavailable(format!("{what}: cannot fetch it: {e}")),
    })?;
    let size = object.info().size as u64;
    if size > MAX_PACKAGE_BYTES {
        return Err(LambdaError::invalid_package(format!(
            "{what}: {size} bytes, more than the {MAX_PACKAGE_BYTES} a package may have"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    (&mut object)
        .take(MAX_PACKAGE_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| LambdaError::code_unavailable(format!("{what}: fetching it failed: {e}")))?;
    Ok(bytes)
}

/// Unpacks into a fresh directory under `.tmp/`, then renames it into place; if
/// another node got there first, its copy (of the same digest) stays.
fn install(archive: &[u8], root: &Path, target: &Path) -> Result<(), super::unpack::UnpackError> {
    let tmp = root.join(".tmp").join(format!(
        "{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let write = |e| super::unpack::UnpackError::Write {
        path: tmp.clone(),
        source: e,
    };
    std::fs::create_dir(&tmp).map_err(write)?;
    let result = unpack(archive, &tmp, LIMITS).and_then(|_| match std::fs::rename(&tmp, target) {
        Ok(()) => Ok(()),
        Err(_) if target.is_dir() => Ok(()),
        Err(e) => Err(write(e)),
    });
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else { return };
        let (dir, root) = (self.dir.clone(), self.root.clone());
        let remove = move || {
            // Someone else (another function's slot being filled, or another node)
            // still holds it shared: it stays.
            if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_err() || !dir.is_dir() {
                return;
            }
            let trash = root
                .join(".tmp")
                .join(format!("gone-{}", uuid::Uuid::new_v4().simple()));
            let renamed = std::fs::rename(&dir, &trash).is_ok();
            drop(lock);
            if renamed {
                let _ = std::fs::remove_dir_all(&trash);
                tracing::info!(dir = %dir.display(), "unused package removed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// What a node that died left behind: its half-unpacked temp dirs and the packages no
/// live node holds. A package another node uses is locked, so it stays.
fn sweep(root: &Path) {
    let entries = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect::<Vec<_>>()
    };
    for (name, path) in entries(&root.join(".tmp")) {
        let owner_alive = name
            .split_once('-')
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            // SAFETY: signal 0 only asks whether the process exists.
            .is_some_and(|pid| {
                let alive = unsafe { libc::kill(pid, 0) } == 0;
                alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
            });
        if !owner_alive {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    for (name, path) in entries(root) {
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(".locks").join(&name));
        if let Ok(lock) = lock {
            if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor this File owns.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `SHA-256=<base64>` as the Object Store writes it, as lowercase hex.
fn nats_digest_hex(digest: &str) -> Option<String> {
    let b64 = digest.strip_prefix("SHA-256=")?;
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD,
    ];
    let bytes = engines.iter().find_map(|e| e.decode(b64).ok())?;
    (bytes.len() == 32).then(|| hex_of(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_digests_read_as_hex() {
        let sha = Sha256::digest(b"hello");
        let b64 = base64::engine::general_purpose::URL_SAFE.encode(sha);
        assert_eq!(
            nats_digest_hex(&format!("SHA-256={b64}")),
            Some(hex_of(&sha))
        );
        assert_eq!(nats_digest_hex("MD5=abc"), None);
        assert_eq!(nats_digest_hex("SHA-256=aGk="), None);
    }
}
