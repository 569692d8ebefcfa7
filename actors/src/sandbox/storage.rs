//! A worker's private `/tmp` (Lambda's ephemeral storage): a directory on disk of its
//! own, owned by its function's uid, mounted at `/tmp` and removed when it ends.
//!
//! `ephemeral_storage_mb` is enforced by a size check, not a tmpfs: a tmpfs is charged
//! to the memory cgroup of whoever writes it, so a 128 MB function could never fill the
//! 512 MB Lambda gives it. The check walks the directory every [`CHECK_EVERY`]; a worker
//! past its size is stopped (the invocation gets a 502 saying why), so a fast writer can
//! overshoot by what it writes in that time.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::task::AbortOnDrop;

pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Entries the size check looks at, at most, per walk.
const MAX_ENTRIES: usize = 100_000;

pub(crate) struct WorkerTmp {
    dir: PathBuf,
}

impl WorkerTmp {
    pub(crate) fn create(dir: &Path, uid: u32) -> std::io::Result<WorkerTmp> {
        std::fs::create_dir(dir)?;
        let tmp = WorkerTmp {
            dir: dir.to_owned(),
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        // Mapped in a user namespace (node not root), the node's own uid is the owner.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            chown(dir, Some(uid), Some(uid))?;
        }
        Ok(tmp)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for WorkerTmp {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        // A full /tmp takes a while to remove: never on the actor's thread.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || std::fs::remove_dir_all(dir));
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Watches a worker's `/tmp`; stopped when dropped.
pub(crate) struct StorageWatch {
    _task: AbortOnDrop,
}

impl StorageWatch {
    /// Calls `over(bytes)` once the directory holds more than `limit_bytes`.
    pub(crate) fn spawn(
        dir: &Path,
        limit_bytes: u64,
        over: impl FnOnce(u64) + Send + 'static,
    ) -> StorageWatch {
        let dir = dir.to_owned();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let walked = dir.clone();
                let Ok(bytes) = tokio::task::spawn_blocking(move || size(&walked)).await else {
                    return;
                };
                if bytes > limit_bytes {
                    over(bytes);
                    return;
                }
            }
        });
        StorageWatch {
            _task: AbortOnDrop::new(task.abort_handle()),
        }
    }
}

/// Bytes allocated on disk under `dir` (holes in sparse files do not count, as they
/// take no space), never following symlinks.
fn size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    let mut seen = 0;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return total;
            }
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_counts_what_files_take_on_disk_below_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("a")).expect("mkdir");
        std::fs::write(dir.path().join("a/big"), vec![1u8; 3 * 1024 * 1024]).expect("write");
        let sparse = std::fs::File::create(dir.path().join("sparse")).expect("create");
        sparse.set_len(1 << 30).expect("set_len");
        let bytes = size(dir.path());
        assert!(
            (3 * 1024 * 1024..4 * 1024 * 1024).contains(&bytes),
            "{bytes}"
        );
    }
}
