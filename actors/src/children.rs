//! Stopping an actor's children and waiting for every one of them. ractor's
//! `stop_children_and_wait` does not wait for a child that was already stopping (its
//! stop cannot be sent twice), and a worker stopping is still reaping its process:
//! a node that exited before that would leave the process defunct.

use std::time::{Duration, Instant};

use ractor::ActorCell;

pub(crate) async fn stop_all(parent: &ActorCell, within: Duration) {
    let children = parent.get_children();
    for child in &children {
        child.stop(None);
    }
    let deadline = Instant::now() + within;
    for child in children {
        let left = deadline.saturating_duration_since(Instant::now());
        if child.wait(Some(left)).await.is_err() {
            tracing::warn!(actor = %child.get_id(), "did not stop within {within:?}");
        }
    }
}
