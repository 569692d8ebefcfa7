//! `pool`: how many workers a node keeps and starts, and how many invocations wait.

use serde::Serialize;
use serde_json::Value;

use super::check::{got, int_in, reject, SpecError};

pub const DEFAULT_POOL: PoolSpec = PoolSpec {
    min: 1,
    max: 4,
    queue: 64,
    idle_ms: 60_000,
    max_invocations: 0,
};
/// Lambda's own limits.
const MAX_POOL: u64 = 1_024;
const MAX_QUEUE: u64 = 100_000;
/// A day: an idle worker kept longer is a standby, which is what `min` is for.
const MAX_IDLE_MS: u64 = 86_400_000;
const POOL_FIELDS: [&str; 5] = ["min", "max", "queue", "idle_ms", "max_invocations"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolSpec {
    /// Workers kept started and initialised (the standby pool).
    pub min: u32,
    /// Invocations running at once on a node.
    pub max: u32,
    /// Invocations that may wait on a node for a worker; beyond them: 429.
    pub queue: u32,
    /// After this long without an invocation a worker above `min` stops.
    pub idle_ms: u64,
    /// A worker is replaced after this many invocations; 0: never.
    pub max_invocations: u64,
}

pub(super) fn parse_pool(value: &Value) -> Result<PoolSpec, SpecError> {
    let Value::Object(obj) = value else {
        return Err(reject(
            "pool",
            format!("expected {{\"min\": N, \"max\": N}}, {}", got(value)),
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| !POOL_FIELDS.contains(&k.as_str())) {
        return Err(reject(
            format!("pool.{unknown}"),
            format!("unknown field; expected one of {}", POOL_FIELDS.join(", ")),
        ));
    }
    let what = "an integer number of worker processes";
    let min = match obj.get("min") {
        None => u64::from(DEFAULT_POOL.min),
        Some(v) => int_in(v, "pool.min", what, 0, MAX_POOL)?,
    };
    let max = match obj.get("max") {
        None => u64::from(DEFAULT_POOL.max).max(min),
        Some(v) => int_in(v, "pool.max", what, 1, MAX_POOL)?,
    };
    if min > max {
        return Err(reject(
            "pool",
            format!("min ({min}) may not be larger than max ({max})"),
        ));
    }
    let queue = match obj.get("queue") {
        None => u64::from(DEFAULT_POOL.queue),
        Some(v) => int_in(
            v,
            "pool.queue",
            "an integer number of waiting invocations",
            0,
            MAX_QUEUE,
        )?,
    };
    let idle_ms = match obj.get("idle_ms") {
        None => DEFAULT_POOL.idle_ms,
        Some(v) => int_in(
            v,
            "pool.idle_ms",
            "an integer of milliseconds",
            1,
            MAX_IDLE_MS,
        )?,
    };
    let max_invocations = match obj.get("max_invocations") {
        None | Some(Value::Null) => DEFAULT_POOL.max_invocations,
        Some(v) => int_in(
            v,
            "pool.max_invocations",
            "an integer number of invocations (0: no limit)",
            0,
            u64::from(u32::MAX),
        )?,
    };
    Ok(PoolSpec {
        min: min as u32,
        max: max as u32,
        queue: queue as u32,
        idle_ms,
        max_invocations,
    })
}
