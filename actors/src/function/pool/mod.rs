//! A function's workers as its FunctionActor sees them, and the pool's policy as plain
//! functions of that data: which worker takes the next invocation, how many to start,
//! which to retire and when. No actors or processes here; `H` is the handle the actor
//! stops a worker with (its `ActorRef`, or `()` in the tests).

mod target;

use std::time::{Duration, Instant};

use ractor::ActorId;

pub(crate) use target::Target;

/// Invocations a worker may hold at once when pipelining: the one it runs, and the
/// next ones, already in its channel so that each starts without a round trip and the
/// worker reads several per read. 4 measured 1.25× the throughput of 2 at 64 in
/// flight (python3 echo, 2 workers); 8 was no clearer gain.
const PIPELINE_DEPTH: usize = 4;
/// Pipelining only pays, and only stays fair, for invocations this quick: a queued
/// request never waits behind a slow one on one worker while another frees up.
const PIPELINE_BELOW: Duration = Duration::from_millis(2);

pub(crate) struct Worker<H> {
    id: ActorId,
    handle: H,
    /// The binding revision whose code it runs.
    revision: u64,
    /// When it became ready; `None` while it starts.
    ready_at: Option<Instant>,
    /// Invocations handed to it so far.
    served: u64,
    /// Invocations handed to it and not finished. A count, not the callers: the
    /// WorkerActor owns those.
    held: usize,
    /// When it last had nothing to do (or started): what idle reaping and eviction
    /// go by.
    idle_since: Instant,
    /// Told to stop: it stays in the pool until it is gone, but gets nothing more (an
    /// invocation sent to a stopping actor would be dropped with its mailbox).
    retired: bool,
}

impl<H> Worker<H> {
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    fn serves(&self, revision: u64) -> bool {
        self.revision == revision && !self.retired
    }

    fn idle(&self) -> bool {
        self.held == 0 && self.ready_at.is_some() && !self.retired
    }
}

/// Where an invocation goes: the worker's handle, and whether this is the worker's
/// first invocation since it became ready at `ready_at`.
pub(crate) struct Assignment<'a, H> {
    pub(crate) id: ActorId,
    pub(crate) handle: &'a H,
    pub(crate) first: bool,
    pub(crate) ready_at: Instant,
}

pub(crate) struct WorkerPool<H> {
    workers: Vec<Worker<H>>,
    /// Moving average of how long invocations take, once one has finished.
    typical: Option<Duration>,
}

impl<H> Default for WorkerPool<H> {
    fn default() -> Self {
        WorkerPool {
            workers: Vec::new(),
            typical: None,
        }
    }
}

impl<H> WorkerPool<H> {
    pub(crate) fn started(&mut self, id: ActorId, handle: H, revision: u64, now: Instant) {
        self.workers.push(Worker {
            id,
            handle,
            revision,
            ready_at: None,
            served: 0,
            held: 0,
            idle_since: now,
            retired: false,
        });
    }

    /// Marks worker `id` ready; false when it should not serve (an old revision, or
    /// the function is retiring): it is retired instead, its handle returned.
    pub(crate) fn ready(&mut self, id: ActorId, target: &Target, now: Instant) -> Result<(), &H> {
        let Some(worker) = self.workers.iter_mut().find(|w| w.id == id) else {
            return Ok(());
        };
        if !target.wants(worker.revision) || (target.retiring && worker.held == 0) {
            worker.retired = true;
            return Err(&worker.handle);
        }
        worker.ready_at = Some(now);
        worker.idle_since = now;
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: ActorId) -> Option<Worker<H>> {
        let index = self.workers.iter().position(|w| w.id == id)?;
        Some(self.workers.swap_remove(index))
    }

    /// Hands the next invocation to a worker of the dispatching revision: the idle one used
    /// last (so the others age out and can be reaped), else, for quick functions, the
    /// busy one holding the fewest with room behind what it runs.
    pub(crate) fn assign(&mut self, target: &Target) -> Option<Assignment<'_, H>> {
        let depth = match self.typical {
            Some(typical) if typical < PIPELINE_BELOW => PIPELINE_DEPTH,
            _ => 1,
        };
        let revision = target.dispatching();
        let usable = |w: &Worker<H>| {
            w.serves(revision)
                && w.ready_at.is_some()
                && !(target.max_invocations > 0 && w.served >= target.max_invocations)
        };
        let index = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| usable(w) && w.held == 0)
            .max_by_key(|(_, w)| w.idle_since)
            .or_else(|| {
                self.workers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| usable(w) && w.held < depth)
                    .min_by_key(|(_, w)| w.held)
            })
            .map(|(i, _)| i)?;
        let worker = &mut self.workers[index];
        let first = worker.served == 0;
        worker.served += 1;
        worker.held += 1;
        Some(Assignment {
            id: worker.id,
            handle: &worker.handle,
            first,
            ready_at: worker.ready_at.unwrap_or(worker.idle_since),
        })
    }

    /// The worker an assignment went to is gone before it took it: it is retired and
    /// the count undone.
    pub(crate) fn undo_assign(&mut self, id: ActorId) {
        if let Some(worker) = self.workers.iter_mut().find(|w| w.id == id) {
            worker.held = worker.held.saturating_sub(1);
            worker.retired = true;
        }
    }

    /// Worker `id` finished one invocation (in `took`, when it ran to an answer). When
    /// that leaves it idle and it should not serve on (a revision no longer wanted, used
    /// up, or beyond `max`), it is retired and its handle returned.
    pub(crate) fn finished(
        &mut self,
        id: ActorId,
        took: Option<Duration>,
        target: &Target,
        now: Instant,
    ) -> Option<&H> {
        if let Some(took) = took {
            self.typical = Some(match self.typical {
                Some(typical) => (typical * 7 + took) / 8,
                None => took,
            });
        }
        let revision = self.workers.iter().find(|w| w.id == id)?.revision;
        let serving = self.workers.iter().filter(|w| w.serves(revision)).count();
        let worker = self.workers.iter_mut().find(|w| w.id == id)?;
        worker.held = worker.held.saturating_sub(1);
        if worker.held > 0 {
            return None;
        }
        worker.idle_since = now;
        let stale = !target.wants(worker.revision) || target.used_up(worker.served);
        let beyond_max = serving > target.max;
        if worker.retired || !(stale || beyond_max || target.retiring) {
            return None;
        }
        worker.retired = true;
        Some(&worker.handle)
    }

    /// How many workers to start now: enough for the invocations waiting and those
    /// held, at least the standby floor, never more than `max`; during a rolling
    /// update, the new revision's warm-up (the old workers serve the demand).
    pub(crate) fn to_start(&self, target: &Target, waiting: usize) -> usize {
        let (live, held) = self.load(target.revision);
        if target.previous.is_some() {
            return if target.retiring {
                0
            } else {
                target.warm_up().saturating_sub(live)
            };
        }
        let wanted = (held + waiting).max(target.floor()).min(target.max);
        wanted.saturating_sub(live)
    }

    /// How many of the workers `to_start` asks for the waiting invocations need (the
    /// rest are standby, as is a rolling update's warm-up): only those may evict other
    /// functions' workers.
    pub(crate) fn for_demand(&self, target: &Target, waiting: usize) -> usize {
        if target.previous.is_some() {
            return 0;
        }
        let (live, held) = self.load(target.revision);
        (held + waiting).min(target.max).saturating_sub(live)
    }

    /// Workers of `revision` in service (starting or ready), and the invocations they
    /// hold.
    fn load(&self, revision: u64) -> (usize, usize) {
        self.workers
            .iter()
            .filter(|w| w.serves(revision))
            .fold((0, 0), |(live, held), w| (live + 1, held + w.held))
    }

    /// Idle workers that should stop now: those of a revision no longer wanted, those
    /// past `max_invocations`, those beyond `max` (after it was lowered), and those
    /// above the standby floor idle for `target.idle` (the least recently used go
    /// first). A rolling update's warm-up is kept whole. They are marked retired; the
    /// caller stops them.
    pub(crate) fn retire_idle(&mut self, target: &Target, now: Instant) -> Vec<&H> {
        let mut idle: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].idle())
            .collect();
        // Most recently used first: those are the ones to keep.
        idle.sort_by_key(|&i| std::cmp::Reverse(self.workers[i].idle_since));
        let serving = target.dispatching();
        let busy = self.busy_serving(serving);
        let room = target.max.saturating_sub(busy);
        let floor = target.floor().saturating_sub(busy);
        let mut kept = 0;
        let mut retire = Vec::new();
        for i in idle {
            let w = &self.workers[i];
            let warming = target.previous.is_some() && w.revision == target.revision;
            if warming && !target.used_up(w.served) {
                continue;
            }
            let stale = w.revision != serving || target.used_up(w.served);
            let expired = now.duration_since(w.idle_since) >= target.idle;
            if !stale && kept < room && (kept < floor || !expired) {
                kept += 1;
            } else {
                retire.push(i);
            }
        }
        for &i in &retire {
            self.workers[i].retired = true;
        }
        self.workers
            .iter()
            .enumerate()
            .filter(|(i, _)| retire.contains(i))
            .map(|(_, w)| &w.handle)
            .collect()
    }

    /// Workers of `revision` in service and not idle (starting or busy).
    fn busy_serving(&self, revision: u64) -> usize {
        self.workers
            .iter()
            .filter(|w| w.serves(revision) && !w.idle())
            .count()
    }

    /// Every worker that holds nothing is retired (the function is retiring).
    pub(crate) fn retire_all_idle(&mut self) -> Vec<&H> {
        self.workers
            .iter_mut()
            .filter(|w| w.held == 0 && !w.retired)
            .map(|w| {
                w.retired = true;
                &w.handle
            })
            .collect()
    }

    /// When the next idle worker above the floor would be reaped, if any is idle.
    pub(crate) fn next_reap(&self, target: &Target) -> Option<Instant> {
        let serving = target.dispatching();
        let floor = target.floor().saturating_sub(self.busy_serving(serving));
        let idle = |w: &&Worker<H>| w.idle() && w.serves(serving);
        // Called after every invocation: no allocation unless there is one to reap.
        if self.workers.iter().filter(idle).count() <= floor {
            return None;
        }
        let mut idle: Vec<Instant> = self
            .workers
            .iter()
            .filter(idle)
            .map(|w| w.idle_since)
            .collect();
        idle.sort_unstable_by(|a, b| b.cmp(a));
        idle.get(floor..)?
            .iter()
            .min()
            .map(|since| *since + target.idle)
    }

    /// The idle worker used least recently, and since when it is idle: what the node
    /// evicts when it is out of worker slots.
    pub(crate) fn least_recently_used(&self) -> Option<(ActorId, Instant)> {
        self.workers
            .iter()
            .filter(|w| w.idle())
            .min_by_key(|w| w.idle_since)
            .map(|w| (w.id, w.idle_since))
    }

    /// Retires idle worker `id` (evicted for another function); its handle, if it is
    /// still idle.
    pub(crate) fn evict(&mut self, id: ActorId) -> Option<&H> {
        let worker = self.workers.iter_mut().find(|w| w.id == id && w.idle())?;
        worker.retired = true;
        Some(&worker.handle)
    }

    pub(crate) fn revision_of(&self, id: ActorId) -> Option<u64> {
        self.workers.iter().find(|w| w.id == id).map(|w| w.revision)
    }

    pub(crate) fn has_live(&self, revision: u64) -> bool {
        self.workers.iter().any(|w| w.serves(revision))
    }

    /// Workers of `revision` ready to serve.
    pub(crate) fn ready_count(&self, revision: u64) -> usize {
        self.workers
            .iter()
            .filter(|w| w.serves(revision) && w.ready_at.is_some())
            .count()
    }

    /// Whether one more invocation may come in, `waiting` being those in the
    /// FunctionActor's queue. At most `max` run and `queue` wait, and what a worker
    /// holds behind the invocation it runs (pipelined) waits too: so what the workers
    /// hold and the queue together stay within `max + queue`, whether the workers are
    /// warm or still starting.
    pub(crate) fn admits(&self, waiting: usize, target: &Target) -> bool {
        let held: usize = self.workers.iter().map(|w| w.held).sum();
        held + waiting < target.max + target.queue
    }

    pub(crate) fn any_busy(&self) -> bool {
        self.workers.iter().any(|w| w.held > 0)
    }

    /// Workers starting, idle and busy; retired ones still running count too (they
    /// hold a worker slot of the node until they are gone).
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        self.workers
            .iter()
            .fold((0, 0, 0), |(starting, idle, busy), w| {
                match (w.ready_at, w.held) {
                    (None, _) => (starting + 1, idle, busy),
                    (Some(_), 0) => (starting, idle + 1, busy),
                    _ => (starting, idle, busy + 1),
                }
            })
    }
}

#[cfg(test)]
mod tests;
