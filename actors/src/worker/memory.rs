//! Enforces `memory_mb` on a worker's resident memory by polling: the RSS of its
//! process and every descendant, read from /proc. Never the address space: V8 and the
//! JVM reserve far more than they use and must still start under 128 MB.
//!
//! Polling is the fallback: a sandboxed worker has a memory cgroup whose limit the
//! kernel enforces (sandbox/cgroup.rs); only where none can be had (`--isolation none`,
//! or no writable hierarchy) is the RSS polled, and the node says so at start-up.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use tokio_util::task::AbortOnDrop;

use super::WorkerMsg;

/// How often the RSS is read: a handler that allocates quickly can overshoot its
/// limit for up to this long before it is killed.
const POLL: Duration = Duration::from_millis(100);
/// Descendants followed below the worker process, bounding the walk.
const MAX_PROCESSES: usize = 256;

pub(crate) struct MemoryWatch {
    /// The polling task, stopped when this is dropped.
    _task: AbortOnDrop,
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
            _task: AbortOnDrop::new(task.abort_handle()),
        }
    }
}

/// A reading older than this is refreshed even after short invocations.
const PEAK_FRESH: Duration = Duration::from_secs(1);
/// An invocation shorter than this reuses a fresh reading: page faults run at a few
/// GB/s at best, so a sub-millisecond handler can move the peak by a few MB at most,
/// and reading /proc after every invocation would cost the hot path a syscall each.
const PEAK_SHORT_RUN: Duration = Duration::from_millis(1);

/// The peak resident memory of a worker's process tree, for REPORT's Max Memory Used:
/// the worker process's high-water mark (`VmHWM`) plus what its descendants hold (their
/// own peaks are not kept once they exit). Never decreases.
///
/// Cheap enough for the hot path: /proc/PID/status stays open and is re-read with one
/// `pread`, only after an invocation that ran for [`PEAK_SHORT_RUN`] or more (or once
/// the last reading is [`PEAK_FRESH`] old); the descendants' walk (a few syscalls per
/// thread) only on the latter.
pub(crate) struct PeakMemory {
    source: PeakSource,
    buf: Vec<u8>,
    hwm: u64,
    descendants: u64,
    peak: u64,
    walked_at: Option<Instant>,
}

enum PeakSource {
    /// The worker process's `/proc/PID/status` (its `VmHWM`) and its descendants.
    Process {
        pid: u32,
        status: Option<std::fs::File>,
    },
    /// The worker's memory cgroup's `memory.max_usage_in_bytes`: the kernel keeps the
    /// high-water mark of the whole tree, children that exited included.
    Cgroup(Option<std::fs::File>),
}

impl PeakMemory {
    pub(crate) fn new(pid: u32) -> PeakMemory {
        Self::with(PeakSource::Process {
            pid,
            status: std::fs::File::open(format!("/proc/{pid}/status")).ok(),
        })
    }

    /// Read from the worker's memory cgroup (its `memory.max_usage_in_bytes`).
    pub(crate) fn of_cgroup(max_usage: &std::path::Path) -> PeakMemory {
        Self::with(PeakSource::Cgroup(std::fs::File::open(max_usage).ok()))
    }

    fn with(source: PeakSource) -> PeakMemory {
        PeakMemory {
            source,
            buf: Vec::with_capacity(4096),
            hwm: 0,
            descendants: 0,
            peak: 0,
            walked_at: None,
        }
    }

    /// The peak after an invocation that ran for `ran`, in bytes.
    pub(crate) fn after(&mut self, ran: Duration) -> u64 {
        let stale = self.walked_at.is_none_or(|t| t.elapsed() >= PEAK_FRESH);
        if stale || ran >= PEAK_SHORT_RUN {
            // A process already gone keeps the last reading.
            if let Some(bytes) = self.read_hwm() {
                self.hwm = self.hwm.max(bytes);
            }
        }
        if stale {
            if let PeakSource::Process { pid, .. } = self.source {
                self.descendants = descendants_rss(pid, 0);
            }
            self.walked_at = Some(Instant::now());
        }
        self.peak = self.peak.max(self.hwm + self.descendants);
        self.peak
    }

    fn read_hwm(&mut self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let file = match &self.source {
            PeakSource::Process { status, .. } => status.as_ref()?,
            PeakSource::Cgroup(file) => file.as_ref()?,
        };
        self.buf.resize(4096, 0);
        let n = file.read_at(&mut self.buf, 0).ok()?;
        let text = std::str::from_utf8(&self.buf[..n]).ok()?;
        match self.source {
            PeakSource::Cgroup(_) => text.trim().parse().ok(),
            PeakSource::Process { .. } => text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024),
        }
    }
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
