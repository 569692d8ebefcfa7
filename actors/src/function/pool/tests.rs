//! The pool's policy, run on plain data: no actors, no processes.

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
