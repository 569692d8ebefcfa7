//! The invocations of a function waiting on this node for a worker, oldest first
//! (how many may wait is the pool's to say: `WorkerPool::admits`); those whose caller
//! stopped waiting (`Natsfn-Deadline-Ms`) are dropped unrun.

use std::collections::VecDeque;

use crate::clock::now_ms;
use crate::invocation::Invocation;

#[derive(Default)]
pub(crate) struct WaitQueue {
    waiting: VecDeque<Invocation>,
}

impl WaitQueue {
    pub(crate) fn push(&mut self, invocation: Invocation) {
        self.waiting.push_back(invocation);
    }

    /// Invocations a worker took but never started go back to the front, oldest first:
    /// they were admitted already.
    pub(crate) fn requeue(&mut self, invocations: Vec<Invocation>) {
        for invocation in invocations.into_iter().rev() {
            self.waiting.push_front(invocation);
        }
    }

    /// Puts back the invocation `next` returned (the worker it was meant for is gone).
    pub(crate) fn put_back(&mut self, invocation: Invocation) {
        self.waiting.push_front(invocation);
    }

    /// The oldest invocation whose caller still waits.
    pub(crate) fn next(&mut self) -> Option<Invocation> {
        let now = now_ms();
        while let Some(invocation) = self.waiting.pop_front() {
            if !invocation.expired(now) {
                return Some(invocation);
            }
            tracing::info!(request_id = %invocation.caller.request_id,
                "dropped: its caller's deadline passed while it was queued");
            invocation.caller.abandon();
        }
        None
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Invocation> + '_ {
        self.waiting.drain(..)
    }
}
