//! The task that drives one alias' canary: every node that serves the function may run
//! one, and the lease in the alias value (taken and renewed by compare-and-swap) lets
//! exactly one of them gather, judge and write at a time. Every write is conditional on
//! the revision read, so a node whose lease ran out while it was gathering can never
//! overwrite the node that took over: its write fails and it reads again.
//!
//! Leases compare Unix milliseconds of different nodes: a clock skew well under
//! `LEASE_FOR - RENEW_EVERY` (2 s) is harmless, since the holder renews long before
//! anyone else's clock says its lease is over.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use natsfn_protocol::version::{alias_key, AliasRecord, CanaryState, Lease};
use tokio_util::task::AbortOnDrop;

use super::policy::{self, Change, Judgement};
use super::stats;
use crate::clock::now_ms;

/// How often the driving node gathers the new version's counts, judges and writes.
const TURN: Duration = Duration::from_millis(250);
/// How long a lease lasts past its last renewal; after it another node takes over.
const LEASE_FOR: Duration = Duration::from_secs(3);
/// The driving node renews its lease when it has not written for this long (a write
/// that changes the canary renews it too).
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a node that does not drive looks whether the lease is free.
const LOOK_FOR_LEASE_EVERY: Duration = Duration::from_secs(1);
/// After a failed read or write of the alias.
const RETRY: Duration = Duration::from_secs(1);

/// A running canary driver for one alias. Dropping it stops the task; the lease it
/// held runs out and another node's driver takes over.
pub(crate) struct CanaryDriver {
    task: AbortOnDrop,
}

impl CanaryDriver {
    /// Drives the canary of `function`'s `alias` (in `aliases`, `natsfn-aliases`)
    /// whenever this node (`node_id`) holds its lease, until the canary is promoted,
    /// rolled back or ended by another write, or the alias goes away.
    pub(crate) fn start(
        client: async_nats::Client,
        aliases: Store,
        function: Arc<str>,
        alias: String,
        node_id: Arc<str>,
    ) -> CanaryDriver {
        let driver = Driver {
            key: alias_key(&function, &alias),
            client,
            aliases,
            function,
            alias,
            node: node_id,
        };
        let task = tokio::spawn(driver.run()).abort_handle();
        CanaryDriver {
            task: AbortOnDrop::new(task),
        }
    }

    /// Whether the task ended: the canary is over (or the alias gone). A canary started
    /// later on the same alias needs a new driver.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

struct Driver {
    client: async_nats::Client,
    aliases: Store,
    function: Arc<str>,
    alias: String,
    key: String,
    node: Arc<str>,
}

/// The alias as read.
enum Read {
    /// A canary runs: the record and its revision.
    Running(Box<AliasRecord>, u64),
    /// Nothing left to drive, and why.
    Over(String),
    Failed,
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("the alias changed since it was read")]
    Conflict,
    #[error("cannot encode the alias: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot write the alias: {0}")]
    Update(async_nats::jetstream::kv::UpdateError),
}

impl Driver {
    async fn run(self) {
        let mut driving = false;
        loop {
            let (record, revision) = match self.read().await {
                Read::Running(record, revision) => (*record, revision),
                Read::Over(why) => {
                    tracing::debug!(function = %self.function, alias = %self.alias, "canary driver stops: {why}");
                    return;
                }
                Read::Failed => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let lease = record.canary.as_ref().and_then(|c| c.lease.clone());
            let mine = lease.as_ref().is_some_and(|l| *l.node == *self.node);
            let free = lease.as_ref().is_none_or(|l| l.until_ms <= now_ms());
            if !mine && !free {
                if driving {
                    tracing::info!(function = %self.function, alias = %self.alias, "another node drives the canary now");
                    driving = false;
                }
                tokio::time::sleep(LOOK_FOR_LEASE_EVERY).await;
                continue;
            }
            let counts = match stats::gather(&self.client, &self.function, record.version).await {
                Ok(counts) => Some(counts),
                Err(e) => {
                    tracing::warn!(function = %self.function, alias = %self.alias, error = %e, "canary: cannot gather the new version's stats");
                    None
                }
            };
            let now = now_ms();
            let judgement = counts.and_then(|counts| policy::judge(&record, &counts, now));
            let renew_due = !mine
                || lease.as_ref().is_some_and(|l| {
                    l.until_ms < now + millis(LEASE_FOR).saturating_sub(millis(RENEW_EVERY))
                });
            let (next, change) = match judgement {
                Some(Judgement { record, change }) => (record, Some(change)),
                None if renew_due => (record.clone(), None),
                None => {
                    tokio::time::sleep(TURN).await;
                    continue;
                }
            };
            match self.write(next, revision, now).await {
                Ok(written) => {
                    if !driving {
                        tracing::info!(function = %self.function, alias = %self.alias, node = %self.node, "driving the canary");
                        driving = true;
                    }
                    if let Some(change) = change {
                        self.log(record.version, &written, change);
                    }
                    if !is_running(&written) {
                        return;
                    }
                }
                Err(WriteError::Conflict) => {
                    // Someone else wrote (a renewal, a takeover, `alias set`): read again.
                    tracing::debug!(function = %self.function, alias = %self.alias, "canary: the alias changed under this write");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(function = %self.function, alias = %self.alias, error = %e, "canary: cannot write the alias");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
            tokio::time::sleep(TURN).await;
        }
    }

    async fn read(&self) -> Read {
        let entry = match self.aliases.entry(self.key.as_str()).await {
            Ok(Some(entry)) if entry.operation == Operation::Put => entry,
            Ok(_) => return Read::Over("the alias is gone".into()),
            Err(e) => {
                tracing::warn!(function = %self.function, alias = %self.alias, error = %e, "canary: cannot read the alias");
                return Read::Failed;
            }
        };
        match AliasRecord::parse(&entry.value) {
            Ok(record) if is_running(&record) => Read::Running(Box::new(record), entry.revision),
            Ok(_) => Read::Over("no canary runs".into()),
            Err(why) => {
                // Whoever writes it next (`alias set`) starts a new driver if need be.
                tracing::warn!(function = %self.function, alias = %self.alias, "canary: the alias cannot be read: {why}");
                Read::Over(why)
            }
        }
    }

    /// Writes `record` over `revision`, with this node's lease while the canary runs
    /// (and none once it ended). What was written.
    async fn write(
        &self,
        mut record: AliasRecord,
        revision: u64,
        now: u64,
    ) -> Result<AliasRecord, WriteError> {
        let running = is_running(&record);
        if let Some(canary) = record.canary.as_mut() {
            canary.lease = running.then(|| Lease {
                node: self.node.to_string(),
                until_ms: now + millis(LEASE_FOR),
            });
        }
        let value = serde_json::to_vec(&record)?;
        match self
            .aliases
            .update(self.key.as_str(), value.into(), revision)
            .await
        {
            Ok(_) => Ok(record),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(WriteError::Conflict),
            Err(e) => Err(WriteError::Update(e)),
        }
    }

    /// A written change, with the rate and sample it was decided on. `new_version` is
    /// the canary's version (the record's own is `from` again after a rollback).
    fn log(&self, new_version: u64, record: &AliasRecord, change: Change) {
        let Some(canary) = &record.canary else {
            return;
        };
        let function = &*self.function;
        let alias = &self.alias;
        let from = canary.from;
        let error_rate = policy::rate_and_sample(canary.observed);
        match change {
            Change::BaselineTaken => {
                let instances = canary.baseline.as_ref().map_or(0, |b| b.len());
                tracing::info!(
                    function,
                    alias,
                    new_version,
                    from,
                    instances,
                    "canary: baseline taken"
                );
            }
            Change::Counted => {
                tracing::debug!(function, alias, new_version, %error_rate, "canary: counted");
            }
            Change::Stepped => {
                let share = policy::new_version_share(canary);
                tracing::info!(
                    function, alias, new_version, from,
                    step = canary.step + 1, steps = canary.steps.len(), share, %error_rate,
                    "canary: next step"
                );
            }
            Change::Promoted => {
                let reason = canary.reason.as_deref().unwrap_or_default();
                tracing::info!(function, alias, new_version, from, %error_rate, reason, "canary promoted");
            }
            Change::RolledBack => {
                let reason = canary.reason.as_deref().unwrap_or_default();
                tracing::warn!(function, alias, new_version, from, %error_rate, reason, "canary rolled back");
            }
        }
    }
}

fn is_running(record: &AliasRecord) -> bool {
    record
        .canary
        .as_ref()
        .is_some_and(|c| c.state == CanaryState::Running)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
