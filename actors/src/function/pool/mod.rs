//! A function's workers as its FunctionActor sees them, and the pool's policy as plain
//! functions of that data: which worker takes the next invocation, how many to start,
//! which to retire and when. No actors or processes here; `H` is the handle the actor
//! stops a worker with (its `ActorRef`, or `()` in the tests).

use std::time::{Duration, Instant};

use natsfn_protocol::PoolSpec;
use ractor::ActorId;

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

/// What the pool is asked to be: the binding's `pool` section and the revision whose
/// code new workers run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub(crate) revision: u64,
    /// During a rolling update, the revision that still takes new invocations until
    /// enough workers of `revision` are warm; only those start meanwhile.
    pub(crate) previous: Option<u64>,
    pub(crate) min: usize,
    pub(crate) max: usize,
    /// Invocations that may wait on top of the `max` that run.
    pub(crate) queue: usize,
    pub(crate) idle: Duration,
    /// 0: no limit.
    pub(crate) max_invocations: u64,
    /// The function is going away: no standby, nothing new.
    pub(crate) retiring: bool,
}

impl Target {
    pub(crate) fn new(
        revision: u64,
        previous: Option<u64>,
        pool: &PoolSpec,
        retiring: bool,
    ) -> Target {
        Target {
            revision,
            previous,
            min: pool.min as usize,
            max: pool.max as usize,
            queue: pool.queue as usize,
            idle: Duration::from_millis(pool.idle_ms),
            max_invocations: pool.max_invocations,
            retiring,
        }
    }

    /// The revision new invocations go to.
    fn dispatching(&self) -> u64 {
        self.previous.unwrap_or(self.revision)
    }

    /// Whether workers of `revision` still have a use.
    fn wants(&self, revision: u64) -> bool {
        revision == self.revision || Some(revision) == self.previous
    }

    /// Workers of the new revision warm before a rolling update switches to them:
    /// the standby, and at least one, so that the switch costs no cold start.
    pub(crate) fn warm_up(&self) -> usize {
        self.min.max(1).min(self.max)
    }

    fn floor(&self) -> usize {
        if self.retiring {
            0
        } else {
            self.min
        }
    }

    fn used_up(&self, served: u64) -> bool {
        self.max_invocations > 0 && served >= self.max_invocations
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
mod tests {
    use super::*;

    fn target(min: usize, max: usize) -> Target {
        Target {
            revision: 1,
            previous: None,
            min,
            max,
            queue: 0,
            idle: Duration::from_secs(60),
            max_invocations: 0,
            retiring: false,
        }
    }

    /// A pool of `n` ready workers of revision 1, ids 0..n, ready at `t0`.
    fn ready_pool(n: u64, t0: Instant) -> WorkerPool<u64> {
        let mut pool = WorkerPool::default();
        for id in 0..n {
            pool.started(ActorId::Local(id), id, 1, t0);
            assert!(pool
                .ready(ActorId::Local(id), &target(0, 8), t0 + ms(id))
                .is_ok());
        }
        pool
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn assign(pool: &mut WorkerPool<u64>, t: &Target) -> Option<u64> {
        pool.assign(t).map(|a| *a.handle)
    }

    #[test]
    fn counts_say_how_many_workers_start_wait_and_run() {
        let t0 = Instant::now();
        let t = target(0, 4);
        let mut pool = ready_pool(3, t0);
        pool.started(ActorId::Local(9), 9, 1, t0);
        assert_eq!(pool.counts(), (1, 3, 0));
        assign(&mut pool, &t);
        assign(&mut pool, &t);
        assert_eq!(pool.counts(), (1, 1, 2));
        pool.finished(ActorId::Local(2), Some(ms(5)), &t, t0 + ms(10));
        assert_eq!(pool.counts(), (1, 2, 1));
    }

    #[test]
    fn idle_worker_used_last_goes_first_and_slow_functions_never_pipeline() {
        let t0 = Instant::now();
        let t = target(0, 4);
        let mut pool = ready_pool(3, t0);
        // Worker 2 became idle last.
        assert_eq!(assign(&mut pool, &t), Some(2));
        assert_eq!(assign(&mut pool, &t), Some(1));
        assert_eq!(assign(&mut pool, &t), Some(0));
        // Nothing is known of the function's speed yet: one invocation per worker.
        assert_eq!(assign(&mut pool, &t), None);
        pool.finished(ActorId::Local(1), Some(ms(50)), &t, t0 + ms(100));
        assert_eq!(assign(&mut pool, &t), Some(1));
        assert_eq!(assign(&mut pool, &t), None, "50 ms calls are not pipelined");
    }

    #[test]
    fn quick_functions_pipeline_up_to_the_depth_on_the_least_loaded_worker() {
        let t0 = Instant::now();
        let t = target(0, 2);
        let mut pool = ready_pool(2, t0);
        assert_eq!(assign(&mut pool, &t), Some(1));
        pool.finished(ActorId::Local(1), Some(Duration::from_micros(300)), &t, t0);
        let mut per_worker = [0usize; 2];
        while let Some(w) = assign(&mut pool, &t) {
            per_worker[w as usize] += 1;
        }
        assert_eq!(per_worker, [PIPELINE_DEPTH, PIPELINE_DEPTH]);
    }

    #[test]
    fn what_runs_pipelined_and_waits_together_stays_within_max_plus_queue() {
        let t0 = Instant::now();
        let t = Target {
            queue: 2,
            ..target(0, 2)
        };
        // Warm and quick: one worker holds the one it runs and three behind it.
        let mut pool = ready_pool(1, t0);
        pool.finished(ActorId::Local(0), Some(Duration::from_micros(300)), &t, t0);
        let mut admitted = 0;
        while pool.admits(0, &t) {
            assert!(assign(&mut pool, &t).is_some());
            admitted += 1;
        }
        assert_eq!(admitted, 4, "2 run (or would) and 2 wait, pipelined or not");
        // Cold: nothing ready, everything waits in the queue.
        let mut cold: WorkerPool<u64> = WorkerPool::default();
        cold.started(ActorId::Local(0), 0, 1, t0);
        assert!(cold.admits(3, &t));
        assert!(!cold.admits(4, &t));
        // Some held, some queued.
        let mut pool = ready_pool(2, t0);
        assign(&mut pool, &t);
        assign(&mut pool, &t);
        assert!(pool.admits(1, &t));
        assert!(!pool.admits(2, &t));
    }

    #[test]
    fn workers_start_for_demand_and_the_floor_up_to_max() {
        let t0 = Instant::now();
        let mut pool: WorkerPool<u64> = WorkerPool::default();
        let t = target(2, 4);
        assert_eq!(pool.to_start(&t, 0), 2, "the standby floor");
        assert_eq!(pool.for_demand(&t, 0), 0);
        assert_eq!(pool.to_start(&t, 3), 3);
        assert_eq!(
            pool.for_demand(&t, 3),
            3,
            "the floor does not make them standby"
        );
        assert_eq!(pool.to_start(&t, 100), 4, "never beyond max");
        pool.started(ActorId::Local(7), 7, 1, t0);
        assert_eq!(pool.to_start(&t, 100), 3, "a starting worker counts");
        let retiring = Target {
            retiring: true,
            ..t
        };
        assert_eq!(pool.to_start(&retiring, 0), 0, "no standby while retiring");
    }

    #[test]
    fn idle_workers_above_the_floor_are_reaped_least_recently_used_first() {
        let t0 = Instant::now();
        let t = Target {
            idle: ms(1000),
            ..target(1, 4)
        };
        let mut pool = ready_pool(3, t0);
        assert!(pool.retire_idle(&t, t0 + ms(500)).is_empty());
        assert_eq!(
            pool.next_reap(&t),
            Some(t0 + ms(1000)),
            "worker 0, idle since t0"
        );
        // At 1001 ms workers 0 and 1 (idle since t0, t0+1) have expired; 2 is kept
        // as the floor even though it has expired too.
        let mut reaped: Vec<u64> = pool
            .retire_idle(&t, t0 + ms(1005))
            .into_iter()
            .copied()
            .collect();
        reaped.sort_unstable();
        assert_eq!(reaped, vec![0, 1]);
        assert_eq!(assign(&mut pool, &t), Some(2));
        assert_eq!(pool.next_reap(&t), None, "only the floor is left");
        // Scale to zero.
        let zero = Target { min: 0, ..t };
        assert_eq!(
            pool.finished(ActorId::Local(2), None, &zero, t0 + ms(2000)),
            None
        );
        assert_eq!(pool.next_reap(&zero), Some(t0 + ms(3000)));
        assert_eq!(pool.retire_idle(&zero, t0 + ms(3000)), vec![&2]);
    }

    #[test]
    fn old_revisions_used_up_workers_and_those_beyond_max_retire_when_idle() {
        let t0 = Instant::now();
        let mut pool = ready_pool(3, t0);
        let busy = target(0, 8);
        assert_eq!(assign(&mut pool, &busy), Some(2));
        // A new revision: idle workers of the old one stop, the busy one later.
        let new = Target {
            revision: 2,
            ..busy
        };
        let mut old: Vec<u64> = pool.retire_idle(&new, t0).into_iter().copied().collect();
        old.sort_unstable();
        assert_eq!(old, vec![0, 1]);
        assert_eq!(
            pool.finished(ActorId::Local(2), Some(ms(5)), &new, t0),
            Some(&2),
            "the old revision's busy worker stops once done"
        );

        // max lowered from 3 to 1: two idle workers go.
        let mut pool = ready_pool(3, t0);
        assert_eq!(pool.retire_idle(&target(0, 1), t0).len(), 2);

        // max_invocations 2: a worker that served two is replaced once idle.
        let mut pool = ready_pool(1, t0);
        let recycle = Target {
            max_invocations: 2,
            ..target(1, 1)
        };
        assert_eq!(assign(&mut pool, &recycle), Some(0));
        assert_eq!(
            pool.finished(ActorId::Local(0), Some(ms(5)), &recycle, t0),
            None
        );
        assert_eq!(assign(&mut pool, &recycle), Some(0));
        assert_eq!(assign(&mut pool, &recycle), None, "used up");
        assert_eq!(
            pool.finished(ActorId::Local(0), Some(ms(5)), &recycle, t0),
            Some(&0)
        );
        assert_eq!(pool.to_start(&recycle, 1), 1, "its replacement");
    }

    #[test]
    fn a_rolling_update_serves_on_the_old_revision_while_the_new_one_warms_up() {
        let t0 = Instant::now();
        let mut pool = ready_pool(2, t0);
        let rolling = Target {
            revision: 2,
            previous: Some(1),
            ..target(2, 4)
        };
        assert_eq!(pool.to_start(&rolling, 10), 2, "the new standby only");
        assert_eq!(pool.for_demand(&rolling, 10), 0, "the warm-up never evicts");
        assert!(
            pool.retire_idle(&rolling, t0).is_empty(),
            "the old ones serve"
        );
        pool.started(ActorId::Local(5), 5, 2, t0);
        pool.started(ActorId::Local(6), 6, 2, t0);
        assert!(pool.ready(ActorId::Local(5), &rolling, t0).is_ok());
        assert!(pool.ready(ActorId::Local(6), &rolling, t0).is_ok());
        assert_eq!(pool.ready_count(2), 2);
        let first = assign(&mut pool, &rolling).expect("an old worker takes it");
        assert!(first < 2, "still the old revision until the switch");
        assert!(
            pool.retire_idle(&rolling, t0).is_empty(),
            "the warm-up is kept"
        );

        // The switch: new invocations go to revision 2, idle old workers stop, the
        // busy one once it is done.
        let switched = Target {
            previous: None,
            ..rolling
        };
        assert!(assign(&mut pool, &switched).is_some_and(|w| w >= 5));
        let retired: Vec<u64> = pool
            .retire_idle(&switched, t0)
            .into_iter()
            .copied()
            .collect();
        assert_eq!(retired, vec![1 - first]);
        assert_eq!(
            pool.finished(ActorId::Local(first), Some(ms(5)), &switched, t0),
            Some(&first)
        );
    }

    #[test]
    fn eviction_takes_the_least_recently_used_idle_worker() {
        let t0 = Instant::now();
        let t = target(0, 4);
        let mut pool = ready_pool(3, t0);
        assert_eq!(assign(&mut pool, &t), Some(2));
        assert_eq!(pool.least_recently_used(), Some((ActorId::Local(0), t0)));
        assert_eq!(pool.evict(ActorId::Local(2)), None, "busy: not evicted");
        assert_eq!(pool.evict(ActorId::Local(0)), Some(&0));
        assert_eq!(
            pool.least_recently_used().map(|(id, _)| id),
            Some(ActorId::Local(1)),
            "the evicted one is on its way out"
        );
    }
}
