//! Versions and aliases on this node. The watches of `natsfn-versions` and
//! `natsfn-aliases` tell the NodeActor what is published ([`Published`], per function);
//! a function this node serves gets one FunctionActor per version (no workers until
//! invoked, or the provisioned ones), the routes of its qualifiers and aliases
//! (`route/`), and the subscriptions of its aliases' subjects ([`Served`]).

use std::collections::BTreeMap;

use natsfn_protocol::version::{parse_alias_key, parse_version_key, CanaryState};
use natsfn_protocol::{AliasRecord, BindingSpec, PoolSpec, VersionRecord};
use ractor::ActorRef;

use super::{NodeMsg, NodeState};
use crate::canary::CanaryDriver;
use crate::context::NodeContext;
use crate::function::FunctionMsg;
use crate::reserved::ReservedShare;
use crate::route::{self, AliasSubjects, QualifiedSubscription, Routes, SharedRoutes};

/// What is published of one function, as the watches last said.
#[derive(Default)]
pub(super) struct Published {
    versions: BTreeMap<u64, VersionRecord>,
    /// Each alias with the KV revision it was read at.
    aliases: BTreeMap<String, (AliasRecord, u64)>,
}

/// What a function's actors on this node share: the routes of its qualifiers, and
/// this node's share of its `reserved_concurrency`. Both written by the NodeActor only.
#[derive(Clone)]
pub(super) struct Family {
    pub(super) routes: SharedRoutes<ActorRef<FunctionMsg>>,
    pub(super) reserved: ReservedShare,
}

impl Family {
    pub(super) fn new(function: &str) -> Family {
        Family {
            routes: Routes::shared(function.into()),
            reserved: ReservedShare::default(),
        }
    }
}

/// A served function's versions, routes and alias subscriptions on this node.
pub(super) struct Served {
    pub(super) family: Family,
    /// `natsfn.invoke.<fn>.*`; `None` if the server refused it (logged).
    _qualified: Option<QualifiedSubscription>,
    pub(super) versions: BTreeMap<u64, ActorRef<FunctionMsg>>,
    alias_subjects: BTreeMap<String, AliasSubjects>,
    /// A driver per alias with a running canary (the lease in the alias lets one
    /// node's drive at a time).
    canaries: BTreeMap<String, CanaryDriver>,
    /// Counts the changes given to the version actors (their `revision`), so that
    /// each is newer than the last.
    generation: u64,
}

impl Served {
    pub(super) async fn start(ctx: &NodeContext, function: &str, family: Family) -> Served {
        let routes = family.routes.clone();
        let qualified = match QualifiedSubscription::start(ctx, function, routes).await {
            Ok(sub) => Some(sub),
            Err(e) => {
                tracing::warn!(function, error = %e, "cannot subscribe to the qualified subjects");
                None
            }
        };
        Served {
            family,
            _qualified: qualified,
            versions: BTreeMap::new(),
            alias_subjects: BTreeMap::new(),
            canaries: BTreeMap::new(),
            generation: 0,
        }
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Stops listening and retires every version actor (the function leaves the node).
    pub(super) fn retire(self) {
        for actor in self.versions.values() {
            let _ = actor.cast(FunctionMsg::Retire);
        }
    }
}

/// How version `version` runs on this node: its frozen spec, with what is the
/// function's (not the version's) read from `$LATEST`: placement and
/// `reserved_concurrency`; its standby is what aliases provision here, never
/// `$LATEST`'s `pool.min` (a version starts workers on demand); it listens on no
/// subject of its own (its qualified subject and its aliases' are routed to it).
pub(super) fn version_spec(
    frozen: &BindingSpec,
    latest: &BindingSpec,
    standby: u32,
) -> BindingSpec {
    BindingSpec {
        subjects: Vec::new(),
        placement: latest.placement.clone(),
        reserved_concurrency: latest.reserved_concurrency,
        pool: PoolSpec {
            min: standby.min(frozen.pool.max),
            ..frozen.pool
        },
        ..frozen.clone()
    }
}

impl NodeState {
    /// A key of `natsfn-versions` was put or deleted.
    pub(super) async fn version_changed(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        key: &str,
        value: Option<&[u8]>,
    ) {
        let Some((function, n)) = parse_version_key(key) else {
            return; // the counter key, or not ours
        };
        let function = function.to_owned();
        let Some(value) = value else {
            if let Some(published) = self.published.get_mut(&function) {
                published.versions.remove(&n);
            }
            self.stop_version(&function, n);
            return;
        };
        let record = match serde_json::from_slice::<VersionRecord>(value) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(function, version = n, error = %e, "invalid version record; ignored");
                return;
            }
        };
        let published = self.published.entry(function.clone()).or_default();
        // Versions are immutable: the first record read is the version.
        if published.versions.contains_key(&n) {
            return;
        }
        published.versions.insert(n, record);
        self.start_version(myself, &function, n).await;
    }

    /// A key of `natsfn-aliases` was put or deleted.
    pub(super) async fn alias_changed(&mut self, key: &str, value: Option<&[u8]>, revision: u64) {
        let Some((function, alias)) = parse_alias_key(key) else {
            return;
        };
        let (function, alias) = (function.to_owned(), alias.to_owned());
        let published = self.published.entry(function.clone()).or_default();
        let before = published.aliases.get(&alias);
        if before.is_some_and(|(_, seen)| *seen >= revision) {
            return;
        }
        // What the versions' standby depends on; a canary's turns change neither.
        let provisioning =
            |record: Option<&AliasRecord>| record.map(|r| (r.version, r.provisioned));
        let provisioned_before = provisioning(before.map(|(r, _)| r));
        match value.map(AliasRecord::parse) {
            None => {
                published.aliases.remove(&alias);
            }
            Some(Ok(record)) => {
                published.aliases.insert(alias.clone(), (record, revision));
            }
            Some(Err(why)) => {
                tracing::warn!(function, alias, %why, "invalid alias; the last good one stays");
                return;
            }
        }
        let provisioned_after = provisioning(published.aliases.get(&alias).map(|(r, _)| r));
        self.apply_alias(&function, &alias).await;
        if provisioned_after != provisioned_before {
            self.reconfigure_versions(&function);
        }
    }

    /// Serves what is published of `function`, which this node has just started
    /// serving.
    pub(super) async fn serve_published(&mut self, myself: &ActorRef<NodeMsg>, function: &str) {
        let Some(published) = self.published.get(function) else {
            return;
        };
        let versions: Vec<u64> = published.versions.keys().copied().collect();
        let aliases: Vec<String> = published.aliases.keys().cloned().collect();
        for n in versions {
            self.start_version(myself, function, n).await;
        }
        for alias in aliases {
            self.apply_alias(function, &alias).await;
        }
    }

    /// Spawns the actor of version `n` if the function is served here and it has none.
    pub(super) async fn start_version(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        function: &str,
        n: u64,
    ) {
        let Some(spec) = self.version_spec_here(function, n) else {
            return;
        };
        let Some(f) = self.functions.get_mut(function) else {
            return;
        };
        if f.served.versions.contains_key(&n) {
            return;
        }
        let (family, revision) = (f.served.family.clone(), f.served.next_generation());
        if let Some(actor) = self
            .spawn_actor(myself, function, spec, revision, Some(n), family.clone())
            .await
        {
            route::write(&family.routes).set_version(n, Some(actor.clone()));
            if let Some(f) = self.functions.get_mut(function) {
                f.served.versions.insert(n, actor);
            }
        }
    }

    /// Version `n` was removed: its actor finishes what it holds and stops.
    fn stop_version(&mut self, function: &str, n: u64) {
        if let Some(f) = self.functions.get_mut(function) {
            route::write(&f.served.family.routes).set_version(n, None);
            if let Some(actor) = f.served.versions.remove(&n) {
                let _ = actor.cast(FunctionMsg::Retire);
            }
        }
    }

    /// Routes and subjects of `alias` as published now.
    async fn apply_alias(&mut self, function: &str, alias: &str) {
        let record = self
            .published
            .get(function)
            .and_then(|p| p.aliases.get(alias))
            .map(|(record, _)| record.clone());
        let Some(f) = self.functions.get_mut(function) else {
            return;
        };
        let subjects = record
            .as_ref()
            .map(|r| r.subjects.clone())
            .unwrap_or_default();
        let running = record
            .as_ref()
            .and_then(|r| r.canary.as_ref())
            .is_some_and(|c| c.state == CanaryState::Running);
        route::write(&f.served.family.routes).set_alias(alias, record);
        let routes = f.served.family.routes.clone();
        let entry = f
            .served
            .alias_subjects
            .entry(alias.to_owned())
            .or_insert_with(|| AliasSubjects::new(alias));
        if let Err(e) = entry.set(&self.ctx, function, &subjects, &routes).await {
            tracing::warn!(function, alias, error = %e, "cannot subscribe to the alias' subjects");
        }
        if subjects.is_empty() {
            f.served.alias_subjects.remove(alias);
        }
        if !running {
            f.served.canaries.remove(alias);
        } else if f
            .served
            .canaries
            .get(alias)
            .is_none_or(CanaryDriver::is_finished)
        {
            let driver = CanaryDriver::start(
                self.ctx.client.clone(),
                self.aliases.clone(),
                function.into(),
                alias.to_owned(),
                self.ctx.node_id.clone(),
            );
            f.served.canaries.insert(alias.to_owned(), driver);
        }
    }

    /// The spec version `n` runs with here, if the function is served and the version
    /// published (and valid).
    fn version_spec_here(&self, function: &str, n: u64) -> Option<BindingSpec> {
        let latest = &self.functions.get(function)?.spec;
        let published = self.published.get(function)?;
        let record = published.versions.get(&n)?;
        let frozen = match record.spec(function) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(function, version = n, error = %e, "version's binding is invalid");
                return None;
            }
        };
        let standby = super::shares::share_of(
            provisioned(published, n),
            &self.ctx.node_id,
            &self.serving(function),
        );
        Some(version_spec(&frozen, latest, standby))
    }

    /// Tells every version actor of `function` the spec it runs with now (after a
    /// change of `$LATEST`'s function-level fields or of what aliases provision).
    pub(super) fn reconfigure_versions(&mut self, function: &str) {
        let Some(versions) = self
            .functions
            .get(function)
            .map(|f| f.served.versions.keys().copied().collect::<Vec<u64>>())
        else {
            return;
        };
        for n in versions {
            let Some(spec) = self.version_spec_here(function, n) else {
                continue;
            };
            if let Some(f) = self.functions.get_mut(function) {
                let revision = f.served.next_generation();
                if let Some(actor) = f.served.versions.get(&n) {
                    let _ = actor.cast(FunctionMsg::Reconfigure {
                        spec: Box::new(spec),
                        revision,
                    });
                }
            }
        }
    }
}

/// Workers of version `n` its aliases ask the cluster to keep warm.
fn provisioned(published: &Published, n: u64) -> u32 {
    published
        .aliases
        .values()
        .filter(|(alias, _)| alias.version == n)
        .filter_map(|(alias, _)| alias.provisioned)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> BindingSpec {
        BindingSpec::parse("f", json.as_bytes()).expect("valid spec")
    }

    #[test]
    fn a_version_takes_the_function_level_fields_from_latest() {
        let frozen = spec(
            r#"{"runtime": "python3", "handler": "app.handler", "code": {"dir": "/v1"},
                "subjects": ["old.subject"], "pool": {"min": 2, "max": 3}, "timeout_ms": 1000}"#,
        );
        let latest = spec(
            r#"{"runtime": "python3", "handler": "app.handler", "code": {"dir": "/v2"},
                "subjects": ["new.subject"], "reserved_concurrency": 5,
                "placement": {"labels": {"region": "eu"}}, "timeout_ms": 9000}"#,
        );
        let version = version_spec(&frozen, &latest, 0);
        assert_eq!(version.code, frozen.code);
        assert_eq!(version.timeout_ms, 1000);
        assert!(version.subjects.is_empty());
        assert_eq!(version.pool.min, 0, "versions start workers on demand");
        assert_eq!(version.pool.max, 3);
        assert_eq!(version.reserved_concurrency, Some(5));
        assert_eq!(version.placement, latest.placement);
        assert_eq!(
            version_spec(&frozen, &latest, 7).pool.min,
            3,
            "within pool.max"
        );
    }
}
