//! `reserved_concurrency` on one node: this node's share of the function's cap
//! (`node/shares.rs` splits the cap over the nodes serving the function), shared by the
//! function's actors here (`$LATEST` and every version), each invocation handed to a
//! worker holding one permit until it is answered.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// No cap: every acquire succeeds without counting.
const UNCAPPED: u32 = u32::MAX;

/// This node's share of a function's reserved concurrency. Owned by the NodeActor
/// (which sets the limit); the function's actors acquire from it.
#[derive(Clone)]
pub(crate) struct ReservedShare(Arc<Counts>);

struct Counts {
    limit: AtomicU32,
    running: AtomicU32,
}

/// One invocation's place within the share; given back when dropped (the caller
/// answered, or the invocation lost).
pub(crate) struct SharePermit(Option<Arc<Counts>>);

impl Default for ReservedShare {
    fn default() -> ReservedShare {
        ReservedShare(Arc::new(Counts {
            limit: AtomicU32::new(UNCAPPED),
            running: AtomicU32::new(0),
        }))
    }
}

impl ReservedShare {
    /// `None`: no cap. A lowered limit lets what runs finish.
    pub(crate) fn set_limit(&self, limit: Option<u32>) {
        let limit = limit.map_or(UNCAPPED, |l| l.min(UNCAPPED - 1));
        self.0.limit.store(limit, Ordering::Relaxed);
    }

    pub(crate) fn limit(&self) -> Option<u32> {
        match self.0.limit.load(Ordering::Relaxed) {
            UNCAPPED => None,
            limit => Some(limit),
        }
    }

    /// A permit if the share has room now.
    pub(crate) fn try_acquire(&self) -> Option<SharePermit> {
        let limit = self.0.limit.load(Ordering::Relaxed);
        if limit == UNCAPPED {
            return Some(SharePermit(None));
        }
        self.0
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running < limit).then_some(running + 1)
            })
            .ok()
            .map(|_| SharePermit(Some(self.0.clone())))
    }
}

impl Drop for SharePermit {
    fn drop(&mut self) {
        if let Some(counts) = self.0.take() {
            counts.running.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stay_within_the_limit_and_come_back() {
        let share = ReservedShare::default();
        assert!(share.try_acquire().is_some(), "uncapped");
        share.set_limit(Some(2));
        let a = share.try_acquire().expect("first");
        let _b = share.try_acquire().expect("second");
        assert!(share.try_acquire().is_none(), "a third is over the share");
        drop(a);
        assert!(
            share.try_acquire().is_some(),
            "a permit given back is free again"
        );
    }

    #[test]
    fn a_share_of_zero_admits_nothing_and_a_lowered_one_lets_running_finish() {
        let share = ReservedShare::default();
        share.set_limit(Some(3));
        let held: Vec<_> = (0..3).filter_map(|_| share.try_acquire()).collect();
        share.set_limit(Some(1));
        assert!(share.try_acquire().is_none());
        drop(held);
        assert!(share.try_acquire().is_some());
        share.set_limit(Some(0));
        assert!(share.try_acquire().is_none());
        assert_eq!(share.limit(), Some(0));
    }
}
