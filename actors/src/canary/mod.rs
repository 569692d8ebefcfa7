//! Canary releases that roll themselves back (issue 22 §4): an alias whose value holds
//! a running canary shifts its invocations to the new version step by step, and goes
//! back to the old one when the new version's 5xx rate passes the limit. The canary's
//! whole state is in the alias' KV value, so any node continues it; a lease in that
//! value lets exactly one node drive it at a time.
//!
//! `policy.rs` decides (plain data, unit-tested), `stats.rs` reads the new version's
//! counts from its service instances (`$SRV.STATS.<fn>`), `driver.rs` is the task that
//! holds the lease, gathers, judges and writes.

mod driver;
mod policy;
mod stats;

pub(crate) use driver::CanaryDriver;
pub use stats::{function_stats, GatherError};
