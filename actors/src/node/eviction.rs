//! Worker slots across functions: when one function has invocations waiting and the
//! node is at `--max-workers`, the least recently used idle worker of another function
//! makes room.

use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{ActorId, ActorRef};

use super::NodeState;
use crate::function::FunctionMsg;

/// How long a function may take to say which of its workers is idle.
const ASK_IDLE_WITHIN: Duration = Duration::from_millis(200);

impl NodeState {
    /// Evicts the idle worker, of any function but `by`, that was used least recently.
    pub(super) async fn evict_for(&self, by: ActorId) {
        if self.ctx.worker_slots.available_permits() > 0 {
            return;
        }
        let mut oldest: Option<(&ActorRef<FunctionMsg>, ActorId, Instant)> = None;
        // Every actor of every function: `$LATEST`'s and each version's.
        let mut actors: Vec<&ActorRef<FunctionMsg>> = Vec::new();
        for f in self.functions.values() {
            actors.push(&f.actor);
            actors.extend(f.served.versions.values());
        }
        for actor in actors {
            if actor.get_id() == by {
                continue;
            }
            let asked = actor
                .call(FunctionMsg::LeastRecentlyUsed, Some(ASK_IDLE_WITHIN))
                .await;
            if let Ok(CallResult::Success(Some((worker, since)))) = asked {
                if oldest.is_none_or(|(_, _, t)| since < t) {
                    oldest = Some((actor, worker, since));
                }
            }
        }
        if let Some((function, worker, _)) = oldest {
            let _ = function.cast(FunctionMsg::Evict(worker));
        }
    }
}
