//! A function's workers as its FunctionActor sees them: which are ready, what each was
//! handed, how long invocations take, and when a failed start may be tried again.
//! Plain state owned by the FunctionActor; the actor does the I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};

use crate::invocation::Caller;
use crate::worker_actor::WorkerMsg;

/// Invocations a worker may hold at once when pipelining: the one it runs, and the
/// next ones, already in its channel so that each starts without a round trip and the
/// worker reads several per read. 4 measured 1.25× the throughput of 2 at 64 in
/// flight (python3 echo, 2 workers); 8 was no clearer gain.
const PIPELINE_DEPTH: usize = 4;
/// Pipelining only pays, and only stays fair, for invocations this quick: a queued
/// request never waits behind a slow one on one worker while another frees up.
const PIPELINE_BELOW: Duration = Duration::from_millis(2);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub(crate) struct Worker {
    pub(crate) actor: ActorRef<WorkerMsg>,
    /// The binding revision it was started for.
    pub(crate) revision: u64,
    /// When it became ready; `None` while it starts.
    pub(crate) ready_at: Option<Instant>,
    pub(crate) served: u64,
    /// Invocations handed to it, the running one first. The callers are kept so that a
    /// worker actor that panics still gets them a 502.
    pub(crate) assigned: VecDeque<Caller>,
    /// Told to stop: it stays in the pool until it is gone, but gets nothing more (an
    /// invocation sent to a stopping actor would be dropped with its mailbox).
    retired: bool,
}

impl Worker {
    pub(crate) fn retire(&mut self) {
        self.retired = true;
        self.actor.stop(None);
    }

    /// In service for `revision`: started for it and not retired.
    fn serves(&self, revision: u64) -> bool {
        self.revision == revision && !self.retired
    }
}

#[derive(Default)]
pub(crate) struct WorkerPool {
    workers: Vec<Worker>,
    /// Moving average of how long invocations take, once one has finished.
    typical: Option<Duration>,
}

impl WorkerPool {
    pub(crate) fn started(&mut self, actor: ActorRef<WorkerMsg>, revision: u64) {
        self.workers.push(Worker {
            actor,
            revision,
            ready_at: None,
            served: 0,
            assigned: VecDeque::new(),
            retired: false,
        });
    }

    pub(crate) fn remove(&mut self, id: ActorId) -> Option<Worker> {
        let index = self.workers.iter().position(|w| w.actor.get_id() == id)?;
        Some(self.workers.swap_remove(index))
    }

    pub(crate) fn get_mut(&mut self, id: ActorId) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.actor.get_id() == id)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Worker> {
        self.workers.iter_mut()
    }

    /// The worker of `revision` to hand the next invocation: an idle one first; for
    /// quick functions, a busy one with room behind the invocation it runs.
    pub(crate) fn next_for(&mut self, revision: u64) -> Option<&mut Worker> {
        let depth = match self.typical {
            Some(typical) if typical < PIPELINE_BELOW => PIPELINE_DEPTH,
            _ => 1,
        };
        self.workers
            .iter_mut()
            .filter(|w| w.serves(revision) && w.ready_at.is_some())
            .filter(|w| w.assigned.len() < depth)
            .min_by_key(|w| w.assigned.len())
    }

    /// Workers of `revision` (starting or not) and the invocations they hold.
    pub(crate) fn load(&self, revision: u64) -> (usize, usize) {
        self.workers
            .iter()
            .filter(|w| w.serves(revision))
            .fold((0, 0), |(live, held), w| {
                (live + 1, held + w.assigned.len())
            })
    }

    pub(crate) fn has_live(&self, revision: u64) -> bool {
        self.workers.iter().any(|w| w.serves(revision))
    }

    /// Keeps at most `max` workers serving `revision` (after `pool.max` was lowered):
    /// idle ones beyond it stop; busy ones are stopped by a later call, once idle.
    pub(crate) fn trim(&mut self, revision: u64, max: usize) {
        let mut serving = self.load(revision).0;
        for worker in &mut self.workers {
            if serving <= max {
                break;
            }
            if worker.serves(revision) && worker.assigned.is_empty() {
                worker.retire();
                serving -= 1;
            }
        }
    }

    pub(crate) fn has_ready(&self, revision: u64) -> bool {
        self.workers
            .iter()
            .any(|w| w.serves(revision) && w.ready_at.is_some())
    }

    pub(crate) fn any_busy(&self) -> bool {
        self.workers.iter().any(|w| !w.assigned.is_empty())
    }

    /// Worker `id` finished its running invocation (in `took`, when it completed).
    pub(crate) fn finished(&mut self, id: ActorId, took: Option<Duration>) -> Option<&mut Worker> {
        if let Some(took) = took {
            self.typical = Some(match self.typical {
                Some(typical) => (typical * 7 + took) / 8,
                None => took,
            });
        }
        let worker = self.get_mut(id)?;
        worker.assigned.pop_front();
        Some(worker)
    }
}

/// Consecutive failed worker starts or crashes, and the pause they earn: 100 ms,
/// doubling up to 10 s, so that code that cannot start never spins the CPU.
#[derive(Default)]
pub(crate) struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// Counts a failure; returns how many there have been in a row.
    pub(crate) fn failed(&mut self) -> u32 {
        self.failures += 1;
        let pause = BACKOFF_FIRST
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(BACKOFF_MAX);
        self.retry_at = Some(Instant::now() + pause);
        self.failures
    }

    pub(crate) fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// When the next start may be tried, if that is still ahead.
    pub(crate) fn pending(&self) -> Option<Instant> {
        self.retry_at.filter(|at| *at > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.pending(), None);
        let mut pauses = Vec::new();
        for n in 1..=12 {
            let before = Instant::now();
            assert_eq!(backoff.failed(), n);
            let at = backoff.pending().expect("a pause after a failure");
            pauses.push(at - before);
        }
        // Measured from just before each failure: at least the pause, never much more.
        let slack = Duration::from_millis(50);
        let expected = |n: u32| (BACKOFF_FIRST * 2u32.pow(n)).min(BACKOFF_MAX);
        for (n, pause) in pauses.iter().enumerate() {
            let want = expected(n as u32);
            assert!(
                *pause >= want && *pause < want + slack,
                "pause {n}: {pause:?}, want {want:?}"
            );
        }
        assert_eq!(expected(11), BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.pending(), None);
        assert_eq!(backoff.failed(), 1);
    }
}
