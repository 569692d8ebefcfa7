//! Workers' cgroups (v1: `memory`, `pids`, `cpu`), made under the node's own group of
//! each hierarchy, never beside it: `<node's group>/natsfn-<pid>/<function>/<worker>`.
//! The kernel enforces `memory_mb` (an OOM kill is read back from `memory.oom_control`),
//! at most [`MAX_PIDS`] processes and threads, and a CPU weight proportional to
//! `memory_mb` among the node's workers (`cpu` has no function level: the node's
//! group weighs one busy process per CPU against the rest of the machine, and its
//! workers share that by `memory_mb`). A worker joins its groups between fork and
//! exec, before it can fork.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Lambda's limit on a function's processes and threads.
pub(crate) const MAX_PIDS: u32 = 1024;
/// `cpu.shares` of a worker with this much memory equals a default (1024) group: as in
/// Lambda, 1,769 MB is one vCPU's worth.
const MB_PER_CPU: u64 = 1769;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// The node's group in each v1 hierarchy it may write to.
#[derive(Debug)]
pub(crate) struct NodeGroups {
    groups: Vec<(Controller, PathBuf)>,
}

impl NodeGroups {
    /// Makes `natsfn-<pid>` under the node's own group of each hierarchy; `None` where
    /// the machine has no writable v1 hierarchy for memory (then memory is polled).
    pub(crate) fn create() -> Option<NodeGroups> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let name = format!("natsfn-{}", std::process::id());
        let mut groups = Vec::new();
        for controller in Controller::ALL {
            let Some(mount) = v1_mount(&mounts, controller.name()) else {
                continue;
            };
            let Some(path) = own_group(&own, controller.name()) else {
                continue;
            };
            let dir = mount.join(path.trim_start_matches('/')).join(&name);
            remove_stale_siblings(dir.parent());
            if std::fs::create_dir_all(&dir).is_err() {
                continue;
            }
            if controller == Controller::Cpu {
                // The node's workers together weigh as much as a busy process per CPU
                // against the rest of the machine; their weights share that.
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                if write(&dir, "cpu.shares", 1024 * cpus as u64).is_err() {
                    continue;
                }
            }
            groups.push((controller, dir));
        }
        groups
            .iter()
            .any(|(c, _)| *c == Controller::Memory)
            .then_some(NodeGroups { groups })
    }

    /// What the node says at start-up.
    pub(crate) fn describe(&self) -> String {
        let names: Vec<&str> = self.groups.iter().map(|(c, _)| c.name()).collect();
        let memory = self
            .groups
            .iter()
            .find(|(c, _)| *c == Controller::Memory)
            .map_or_else(String::new, |(_, d)| d.display().to_string());
        let expedited =
            std::fs::read_to_string("/sys/kernel/rcu_expedited").is_ok_and(|v| v.trim() == "1");
        let slow = match expedited {
            true => "",
            false => " (a worker joins its cgroups after an RCU grace period, about 10 ms of each cold start: /sys/kernel/rcu_expedited=1 makes it a few ms)",
        };
        format!(
            "cgroup v1 ({}) under {memory}: memory_mb enforced by the kernel, at most {MAX_PIDS} processes per worker{slow}",
            names.join(", ")
        )
    }

    /// The worker's groups, made and limited; it joins them through
    /// [`WorkerGroups::procs_fds`] before exec.
    pub(crate) fn worker(
        &self,
        function: &str,
        worker: &str,
        memory_mb: u32,
    ) -> std::io::Result<WorkerGroups> {
        let mut made = WorkerGroups {
            dirs: Vec::new(),
            procs: Vec::new(),
            memory: None,
        };
        for (controller, node_dir) in &self.groups {
            // CPU weights are shared among all the node's workers, not per function
            // first (a function of many workers would weigh as much as one of one).
            let dir = match controller {
                Controller::Cpu => node_dir.join(worker),
                _ => node_dir.join(function).join(worker),
            };
            std::fs::create_dir_all(&dir)?;
            made.dirs.push(dir.clone());
            match controller {
                Controller::Memory => {
                    let bytes = u64::from(memory_mb) * 1024 * 1024;
                    write(&dir, "memory.limit_in_bytes", bytes)?;
                    // No swapping past the limit, where swap is accounted.
                    let _ = write(&dir, "memory.memsw.limit_in_bytes", bytes);
                    made.memory = Some(dir.clone());
                }
                Controller::Pids => write(&dir, "pids.max", MAX_PIDS.into())?,
                Controller::Cpu => {
                    let shares = (u64::from(memory_mb) * 1024 / MB_PER_CPU).max(2);
                    write(&dir, "cpu.shares", shares)?;
                }
            }
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            made.procs.push(procs.into());
        }
        Ok(made)
    }
}

impl Drop for NodeGroups {
    fn drop(&mut self) {
        for (_, dir) in &self.groups {
            remove_tree(dir);
        }
    }
}

/// One worker's groups; removed when dropped (once its processes are gone).
pub(crate) struct WorkerGroups {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each group, open for the child to write itself into.
    procs: Vec<OwnedFd>,
    memory: Option<PathBuf>,
}

impl WorkerGroups {
    pub(crate) fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// How many times the kernel's OOM killer killed a process of the worker.
    pub(crate) fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory else { return 0 };
        std::fs::read_to_string(dir.join("memory.oom_control"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The file holding the most memory the worker's processes were charged (bytes).
    pub(crate) fn peak_file(&self) -> Option<PathBuf> {
        Some(self.memory.as_ref()?.join("memory.max_usage_in_bytes"))
    }
}

impl Drop for WorkerGroups {
    fn drop(&mut self) {
        self.procs.clear();
        let dirs = std::mem::take(&mut self.dirs);
        // The processes of a killed worker may take a moment to leave the group.
        if dirs.iter().all(|d| std::fs::remove_dir(d).is_ok()) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for _ in 0..50 {
                    if dirs
                        .iter()
                        .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tracing::debug!("a worker's cgroups could not be removed: {dirs:?}");
            });
        }
    }
}

/// Writes the child's own pid into each group (`0` means "the writer"). Called between
/// fork and exec: only `write`, which is async-signal-safe.
pub(crate) fn join(procs: &[RawFd]) -> std::io::Result<()> {
    for fd in procs {
        // SAFETY: writing two bytes from a static buffer to an open descriptor.
        if unsafe { libc::write(*fd, b"0\n".as_ptr().cast(), 2) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn write(dir: &Path, file: &str, value: u64) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(file))?;
    f.write_all(value.to_string().as_bytes())
        .map_err(|e| std::io::Error::new(e.kind(), format!("{file}: {e}")))
}

/// The mount point of the v1 hierarchy holding `controller`, from mountinfo.
fn v1_mount(mountinfo: &str, controller: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let mut fs = fs.split_whitespace();
        if fs.next()? != "cgroup" {
            return None;
        }
        let options = fs.nth(1)?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        mount.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This process's group in the v1 hierarchy of `controller` (/proc/self/cgroup).
fn own_group(cgroups: &str, controller: &str) -> Option<String> {
    cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })
}

/// Groups a node left behind when it was killed (its pid no longer runs).
fn remove_stale_siblings(parent: Option<&Path>) {
    let Some(Ok(entries)) = parent.map(std::fs::read_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("natsfn-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            remove_tree(&entry.path());
        }
    }
}

/// Removes a group and the groups below it (cgroup directories go bottom-up).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_hierarchy_and_the_group_of_a_controller() {
        let mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                         32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v1_mount(mountinfo, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            v1_mount(mountinfo, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(v1_mount(mountinfo, "pids"), None);
        let own = "4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            own_group(own, "memory").as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(own_group(own, "cpu").as_deref(), Some("/"));
        assert_eq!(own_group(own, "pids"), None);
    }
}
