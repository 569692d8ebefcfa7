//! What the pool is asked to be: the binding's `pool` section, the revision whose code
//! new workers run, and the questions the pool's policy asks of them.

use std::time::Duration;

use natsfn_protocol::PoolSpec;

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
    pub(super) fn dispatching(&self) -> u64 {
        self.previous.unwrap_or(self.revision)
    }

    /// Whether workers of `revision` still have a use.
    pub(super) fn wants(&self, revision: u64) -> bool {
        revision == self.revision || Some(revision) == self.previous
    }

    /// Workers of the new revision warm before a rolling update switches to them:
    /// the standby, and at least one, so that the switch costs no cold start.
    pub(crate) fn warm_up(&self) -> usize {
        self.min.max(1).min(self.max)
    }

    pub(super) fn floor(&self) -> usize {
        if self.retiring {
            0
        } else {
            self.min
        }
    }

    pub(super) fn used_up(&self, served: u64) -> bool {
        self.max_invocations > 0 && served >= self.max_invocations
    }
}
