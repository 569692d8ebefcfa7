//! Enforces `memory_mb` on a worker's resident memory by polling: the RSS of its
//! process and every descendant, read from /proc. Never the address space: V8 and the
//! JVM reserve far more than they use and must still start under 128 MB.
//!
//! A cgroup v2 limit would be exact and need no polling, but it needs a delegated
//! cgroup subtree the node can write to; this machine kind (cgroup v1 for memory)
//! has none, so polling is what nodes use, and say so at start-up.

use std::time::{Duration, Instant};

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

/// A reading older than this is refreshed even after short invocations.
const PEAK_FRESH: Duration = Duration::from_secs(1);
/// An invocation shorter than this reuses a fresh reading: touching memory runs at a
/// few GB/s at best, so a sub-millisecond handler can hardly move the peak, and a read
/// of /proc per invocation would cost the hot path a syscall each time.
const PEAK_SHORT_RUN: Duration = Duration::from_millis(1);

/// The peak resident memory of a worker's process tree, for REPORT's Max Memory Used:
/// the worker process's high-water mark (`VmHWM`) plus what its descendants hold now
/// (their own peaks are not kept once they exit). Never decreases.
pub(crate) struct PeakMemory {
    pid: u32,
    bytes: u64,
    read_at: Option<Instant>,
}

impl PeakMemory {
    pub(crate) fn new(pid: u32) -> PeakMemory {
        PeakMemory {
            pid,
            bytes: 0,
            read_at: None,
        }
    }

    /// The peak after an invocation that ran for `ran`.
    pub(crate) fn after(&mut self, ran: Duration) -> u64 {
        let fresh = self.read_at.is_some_and(|t| t.elapsed() < PEAK_FRESH);
        if !fresh || ran >= PEAK_SHORT_RUN {
            // A process already gone keeps the last reading.
            if let Some(bytes) = tree_peak(self.pid) {
                self.bytes = self.bytes.max(bytes);
            }
            self.read_at = Some(Instant::now());
        }
        self.bytes
    }
}

/// `VmHWM` of `pid` plus the resident bytes of its descendants.
fn tree_peak(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(hwm_kb * 1024 + descendants_rss(pid, 0))
}

/// Resident bytes of `pid` and its descendants; `None` once `pid` is gone.
fn tree_rss(pid: u32) -> Option<u64> {
    let own = rss_pages(pid)? * page_size();
    Some(descendants_rss(pid, own))
}

/// `total` plus the resident bytes of every descendant of `pid`.
fn descendants_rss(pid: u32, mut total: u64) -> u64 {
    let page = page_size();
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
    total
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

    #[test]
    fn the_peak_sees_memory_that_was_freed_again_and_never_falls() {
        let mut peak = PeakMemory::new(std::process::id());
        let before = peak.after(Duration::ZERO);
        assert!(before > 1024 * 1024, "{before}");
        let mut big = vec![0u8; 64 * 1024 * 1024];
        // Touch every page so that it is resident, then give it back.
        for i in (0..big.len()).step_by(4096) {
            big[i] = 1;
        }
        drop(std::hint::black_box(big));
        // A short run within the fresh period reuses the reading...
        assert_eq!(peak.after(Duration::ZERO), before);
        // ...a long one reads again and sees the high-water mark.
        let after = peak.after(PEAK_SHORT_RUN);
        assert!(after >= before + 60 * 1024 * 1024, "{before} -> {after}");
        assert_eq!(PeakMemory::new(u32::MAX).after(Duration::ZERO), 0);
    }
}
