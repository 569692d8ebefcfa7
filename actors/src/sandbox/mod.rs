//! The worker sandbox (`natsfn node --isolation sandbox`, the default): every worker
//! starts inside bubblewrap with its own PID, IPC and UTS namespaces and a mount
//! namespace holding only what it runs (the system's `/usr` and `/etc`, its runtime,
//! code and layers, all read-only) and a private writable `/tmp`; as a uid of its
//! function's own with no capabilities and `no_new_privs`; in cgroups that bound its
//! memory, processes and CPU weight (cgroup.rs); on the network its binding asks for
//! (net.rs).
//!
//! Why bubblewrap and not namespaces of our own making: it is the sandbox Flatpak ships,
//! kept and audited, and it is one exec (about 6 ms on this machine kind, most of it
//! the mount namespace) between the node's fork and the runtime.

pub(crate) mod cgroup;
pub(crate) mod net;
mod storage;

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cgroup::{NodeGroups, WorkerGroups};
use natsfn_protocol::Network;
use net::WorkerNet;
pub(crate) use storage::{StorageWatch, WorkerTmp};

/// Function uids (when the node runs as root) are taken from this range, by a hash of
/// the function's name: the same function has the same uid on every node.
const UID_BASE: u32 = 0x4000_0000;
const UID_RANGE: u32 = 0x3fff_0000;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("bubblewrap (bwrap) is not installed: install it (Debian: apt-get install bubblewrap) or start the node with --isolation none")]
    NoBubblewrap,
    #[error("{0} is not installed (util-linux): it is needed to give workers their own uid; install it or start the node with --isolation none")]
    NoSetpriv(&'static str),
    #[error("bubblewrap cannot build a sandbox here: {0}; start the node with --isolation none to run workers without one")]
    Unusable(String),
    #[error("cannot make the directory for workers' /tmp ({0}): {1}")]
    TmpRoot(PathBuf, std::io::Error),
}

/// What every worker's sandbox is built from, found and checked once at start-up.
pub struct Sandbox {
    bwrap: PathBuf,
    /// Switches to the function's uid inside the sandbox when the node runs as root;
    /// `None`: the uid is mapped in a user namespace instead.
    setpriv: Option<PathBuf>,
    cgroups: Option<NodeGroups>,
    /// Holds each worker's `/tmp` (removed with the node).
    tmp_root: PathBuf,
    /// `/bin`, `/lib`... as the host has them: symlinks into `/usr` or directories.
    system: Vec<(PathBuf, Option<PathBuf>)>,
    /// The node's NATS servers, which a worker with `network: "nats"` reaches through
    /// the node's relay (resolved once, here).
    nats: Vec<SocketAddr>,
}

impl Sandbox {
    /// Finds bubblewrap, makes the node's cgroups, and starts one sandbox to prove it
    /// can: a node that cannot build one refuses to start. `nats_urls`: the node's
    /// servers (comma-separated), for workers with `network: "nats"`.
    pub async fn prepare(nats_urls: &str) -> Result<Sandbox, SandboxError> {
        let bwrap = find("bwrap").ok_or(SandboxError::NoBubblewrap)?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let setpriv = match root {
            true => Some(find("setpriv").ok_or(SandboxError::NoSetpriv("setpriv"))?),
            false => None,
        };
        let tmp_root = std::env::temp_dir().join(format!("natsfn-workers-{}", std::process::id()));
        remove_stale_tmp_roots();
        std::fs::create_dir_all(&tmp_root)
            .and_then(|()| {
                std::fs::set_permissions(&tmp_root, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| SandboxError::TmpRoot(tmp_root.clone(), e))?;
        let system = ["/bin", "/sbin", "/lib", "/lib32", "/lib64"]
            .into_iter()
            .filter_map(|dir| {
                let meta = std::fs::symlink_metadata(dir).ok()?;
                let link = meta
                    .file_type()
                    .is_symlink()
                    .then(|| std::fs::read_link(dir).ok())
                    .flatten();
                Some((PathBuf::from(dir), link))
            })
            .collect();
        let sandbox = Sandbox {
            bwrap,
            setpriv,
            cgroups: NodeGroups::create(),
            tmp_root,
            system,
            nats: resolve(nats_urls),
        };
        sandbox.probe().await?;
        // A network namespace of its own is made by the node (it must be root).
        net::WorkerNet::create(None, false).map_err(|e| {
            SandboxError::Unusable(format!("cannot make a worker's network namespace: {e}"))
        })?;
        Ok(sandbox)
    }

    /// Runs `true` in a sandbox as a worker would be.
    async fn probe(&self) -> Result<(), SandboxError> {
        let tmp = self.tmp_root.join("probe");
        let _ = std::fs::create_dir_all(&tmp);
        let uid = function_uid("probe");
        let mut argv = self.argv(&tmp, &[], Path::new("/"), uid);
        argv.push("/bin/true".into());
        let out = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| SandboxError::Unusable(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&tmp);
        if out.status.success() {
            Ok(())
        } else {
            let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(SandboxError::Unusable(format!("{} ({said})", out.status)))
        }
    }

    /// What the node says at start-up about its workers' isolation.
    pub fn describe(&self) -> String {
        let uid = match self.setpriv {
            Some(_) => format!(
                "a host uid of their function's own ({UID_BASE} and up, by the function's name)"
            ),
            None => "their function's uid mapped in a user namespace (the node is not root: on the host they keep its uid)".to_owned(),
        };
        let cgroups = match &self.cgroups {
            Some(groups) => groups.describe(),
            None => "no writable cgroup v1 memory hierarchy: memory_mb enforced by polling each worker's resident memory every 100 ms, no process limit".to_owned(),
        };
        format!(
            "workers run in bubblewrap ({}) as {uid}; {cgroups}",
            self.bwrap.display()
        )
    }

    /// Everything one worker's sandbox needs before its spawn: its cgroups, its `/tmp`
    /// and the command line that runs `program` inside.
    pub(crate) fn worker(&self, spec: WorkerSpec<'_>) -> std::io::Result<WorkerJail> {
        let uid = function_uid(spec.function);
        let groups = match &self.cgroups {
            Some(groups) => Some(groups.worker(spec.function, spec.worker, spec.memory_mb)?),
            None => None,
        };
        let tmp = WorkerTmp::create(&self.tmp_root.join(spec.worker), uid)?;
        let mut argv = self.argv(tmp.path(), spec.reads, spec.cwd, uid);
        if let Some(creds) = spec.credentials {
            // Before the command: its own credentials, and none of its neighbours'
            // (their directory sits in the runtime directory, which is mounted whole).
            let at = argv
                .iter()
                .position(|a| a == "--chdir")
                .unwrap_or(argv.len());
            let mut extra: Vec<OsString> = Vec::new();
            if let Some(parent) = creds.parent() {
                extra.extend(["--perms".into(), "0755".into(), "--tmpfs".into()]);
                extra.push(parent.into());
            }
            extra.extend(["--ro-bind".into(), creds.into(), creds.into()]);
            argv.splice(at..at, extra);
        }
        // `full`: the node's own network; its Runtime API then takes only this uid.
        let net = match spec.network {
            Network::Full => None,
            Network::None => Some(WorkerNet::create(None, spec.runtime_api)?),
            Network::Nats => Some(WorkerNet::create(Some(&self.nats), spec.runtime_api)?),
        };
        Ok(WorkerJail {
            argv,
            uid,
            groups,
            tmp,
            net,
        })
    }

    /// `bwrap … -- [setpriv …] --` (the program and its arguments follow).
    fn argv(&self, tmp: &Path, reads: &[PathBuf], cwd: &Path, uid: u32) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![self.bwrap.clone().into()];
        let mut arg = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            argv.extend(items.iter().map(|i| i.as_ref().to_owned()));
        };
        arg(&[
            &"--die-with-parent",
            &"--unshare-pid",
            &"--unshare-ipc",
            &"--unshare-uts",
            &"--unshare-cgroup-try",
        ]);
        arg(&[
            &"--ro-bind",
            &"/usr",
            &"/usr",
            &"--ro-bind",
            &"/etc",
            &"/etc",
        ]);
        for (dir, link) in &self.system {
            match link {
                Some(target) => arg(&[&"--symlink", target, dir]),
                None => arg(&[&"--ro-bind", dir, dir]),
            }
        }
        arg(&[
            &"--proc", &"/proc", &"--dev", &"/dev", &"--bind", &tmp, &"/tmp",
        ]);
        let mut mounted: Vec<&Path> = Vec::new();
        let mut made: Vec<&Path> = Vec::new();
        for path in reads {
            let covered = |p: &Path| path.starts_with(p);
            if path.starts_with("/usr")
                || path.starts_with("/etc")
                || mounted.iter().any(|p| covered(p))
                || !path.exists()
            {
                continue;
            }
            mounted.push(path);
            // The directories leading to it: bubblewrap would make them mode 0700 (of
            // root), which the function's uid could not pass through.
            let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
            ancestors.reverse();
            for dir in ancestors {
                if dir == Path::new("/") || dir == Path::new("/tmp") || made.contains(&dir) {
                    continue;
                }
                made.push(dir);
                arg(&[&"--perms", &"0755", &"--dir", &dir]);
            }
            arg(&[&"--ro-bind", path, path]);
        }
        arg(&[&"--chdir", &cwd]);
        let id = uid.to_string();
        match &self.setpriv {
            Some(setpriv) => {
                arg(&[&"--", setpriv]);
                arg(&[
                    &format!("--reuid={id}"),
                    &format!("--regid={id}"),
                    &"--clear-groups",
                    &"--inh-caps=-all",
                    &"--bounding-set=-all",
                    &"--no-new-privs",
                    &"--",
                ]);
            }
            None => {
                arg(&[
                    &"--unshare-user",
                    &"--uid",
                    &id,
                    &"--gid",
                    &id,
                    &"--cap-drop",
                    &"ALL",
                    &"--",
                ]);
            }
        }
        argv
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp_root);
    }
}

/// What a worker's sandbox is made of.
pub(crate) struct WorkerSpec<'a> {
    pub(crate) function: &'a str,
    /// Unique among the node's workers.
    pub(crate) worker: &'a str,
    pub(crate) memory_mb: u32,
    /// Directories and files the worker reads (mounted read-only where they are).
    pub(crate) reads: &'a [PathBuf],
    pub(crate) cwd: &'a Path,
    /// The worker's own NATS credentials directory (binding field `nats`).
    pub(crate) credentials: Option<&'a Path>,
    pub(crate) network: Network,
    /// A `provided` worker: its Runtime API listens in its network namespace.
    pub(crate) runtime_api: bool,
}

/// One worker's sandbox: dropping it removes its cgroups, its `/tmp` and its network
/// namespace (with the relays into it).
pub(crate) struct WorkerJail {
    /// bwrap and its arguments, up to the program.
    pub(crate) argv: Vec<OsString>,
    pub(crate) uid: u32,
    pub(crate) groups: Option<WorkerGroups>,
    pub(crate) tmp: WorkerTmp,
    /// `None` with `network: "full"`.
    pub(crate) net: Option<WorkerNet>,
}

impl WorkerJail {
    /// The network namespace the child enters before exec.
    pub(crate) fn netns_fd(&self) -> Option<RawFd> {
        self.net.as_ref().map(WorkerNet::netns_fd)
    }

    /// The descriptors the child writes itself into before exec (cgroup.rs `join`).
    pub(crate) fn cgroup_fds(&self) -> Vec<RawFd> {
        self.groups
            .as_ref()
            .map_or_else(Vec::new, WorkerGroups::procs_fds)
    }
}

/// The uid a function's workers run as.
pub(crate) fn function_uid(function: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in function.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    UID_BASE + (hash % u64::from(UID_RANGE)) as u32
}

/// Whether the function's uid can enter `dir` (it is mounted with its own mode).
pub(crate) fn readable_by_others(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005)
}

/// `nats://a:4222,b:4222` as addresses (a name resolves to all of its addresses).
fn resolve(urls: &str) -> Vec<SocketAddr> {
    urls.split(',')
        .filter_map(|url| {
            let rest = url.trim().split_once("://").map_or(url.trim(), |(_, r)| r);
            let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
            let host_port = host_port.split('/').next()?;
            let with_port = match host_port.rsplit_once(':') {
                Some((_, port)) if port.parse::<u16>().is_ok() => host_port.to_owned(),
                _ => format!("{host_port}:4222"),
            };
            with_port.to_socket_addrs().ok()
        })
        .flatten()
        .fold(Vec::new(), |mut all, addr| {
            if !all.contains(&addr) {
                all.push(addr);
            }
            all
        })
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `/tmp` directories of nodes that were killed (their pid no longer runs).
fn remove_stale_tmp_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("natsfn-workers-"))
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_resolve_to_addresses_with_the_default_port() {
        assert_eq!(
            resolve("nats://127.0.0.1:4223, nats://u:p@127.0.0.1 ,127.0.0.1:4223"),
            vec![
                "127.0.0.1:4223".parse::<SocketAddr>().expect("addr"),
                "127.0.0.1:4222".parse().expect("addr"),
            ]
        );
    }

    #[test]
    fn a_function_keeps_its_uid_and_uids_stay_in_their_range() {
        assert_eq!(function_uid("orders"), function_uid("orders"));
        assert_ne!(function_uid("orders"), function_uid("orders2"));
        for name in ["a", "orders", "x".repeat(64).as_str()] {
            let uid = function_uid(name);
            assert!((UID_BASE..UID_BASE + UID_RANGE).contains(&uid), "{uid}");
        }
    }
}
