//! Enforces `memory_mb` on a worker's resident memory by polling: the RSS of its
//! process and every descendant, read from /proc. Never the address space: V8 and the
//! JVM reserve far more than they use and must still start under 128 MB.
//!
//! A cgroup v2 limit would be exact and need no polling, but it needs a delegated
//! cgroup subtree the node can write to; this machine kind (cgroup v1 for memory)
//! has none, so polling is what nodes use, and say so at start-up.

use std::time::Duration;

use ractor::ActorRef;
use tokio::task::AbortHandle;

use super::WorkerMsg;

/// How often the RSS is read: a handler that allocates quickly can overshoot its
/// limit for up to this long before it is killed.
const POLL: Duration = Duration::from_millis(100);
/// Descendants followed below the worker process, bounding the walk.
const MAX_PROCESSES: usize = 256;

pub(crate) struct MemoryWatch {
    task: AbortHandle,
}

impl MemoryWatch {
    /// The worker gets `OutOfMemory(rss)` once the tree of `pid` uses more than
    /// `limit_bytes` resident.
    pub(crate) fn spawn(pid: u32, limit_bytes: u64, worker: ActorRef<WorkerMsg>) -> MemoryWatch {
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(rss) = tree_rss(pid) else { return };
                if rss > limit_bytes {
                    let _ = worker.cast(WorkerMsg::OutOfMemory(rss));
                    return;
                }
            }
        });
        MemoryWatch {
            task: task.abort_handle(),
        }
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resident bytes of `pid` and its descendants; `None` once `pid` is gone.
fn tree_rss(pid: u32) -> Option<u64> {
    let page = page_size();
    let mut total = rss_pages(pid)? * page;
    let mut pending = children(pid);
    let mut seen = 1;
    while let Some(child) = pending.pop() {
        if seen >= MAX_PROCESSES {
            break;
        }
        seen += 1;
        total += rss_pages(child).unwrap_or(0) * page;
        pending.extend(children(child));
    }
    Some(total)
}

/// The second field of /proc/PID/statm: resident pages.
fn rss_pages(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// Children of every thread of `pid` (/proc/PID/task/TID/children).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_nothing_for_a_missing_one() {
        let rss = tree_rss(std::process::id()).expect("this process exists");
        assert!(
            rss > 1024 * 1024,
            "a test binary uses more than 1 MB: {rss}"
        );
        assert_eq!(tree_rss(u32::MAX), None);
    }
}
