//! Wall-clock time as the wire carries it: Unix milliseconds (deadlines, enqueue
//! times, the Runtime API's `Lambda-Runtime-Deadline-Ms`).

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
