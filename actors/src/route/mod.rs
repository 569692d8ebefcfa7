//! Qualified invocations: which FunctionActor on this node runs `natsfn.invoke.<fn>.<q>`
//! (a version, an alias, `$LATEST`) and the subjects of an alias. The table of a
//! function ([`Routes`]) is written only by the NodeActor, which spawns the version
//! actors and hears of aliases; the subscription tasks read it per message, so that
//! moving an alias takes effect on this node at once, between two messages.

mod subscription;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use natsfn_protocol::{AliasRecord, LambdaError, Qualifier};

pub(crate) use subscription::{AliasSubjects, QualifiedSubscription};

/// A function's routes on this node, shared with its subscription tasks.
pub(crate) type SharedRoutes<A> = Arc<RwLock<Routes<A>>>;

/// Where each qualifier of one function goes on this node. `A` is the actor handle
/// (generic so that the choice is unit-tested without actors).
pub(crate) struct Routes<A> {
    function: Arc<str>,
    latest: Option<A>,
    versions: BTreeMap<u64, A>,
    aliases: BTreeMap<String, AliasRecord>,
}

impl<A: Clone> Routes<A> {
    pub(crate) fn new(function: Arc<str>) -> Routes<A> {
        Routes {
            function,
            latest: None,
            versions: BTreeMap::new(),
            aliases: BTreeMap::new(),
        }
    }

    pub(crate) fn shared(function: Arc<str>) -> SharedRoutes<A> {
        Arc::new(RwLock::new(Routes::new(function)))
    }

    pub(crate) fn set_latest(&mut self, actor: Option<A>) {
        self.latest = actor;
    }

    pub(crate) fn set_version(&mut self, version: u64, actor: Option<A>) {
        match actor {
            Some(actor) => self.versions.insert(version, actor),
            None => self.versions.remove(&version),
        };
    }

    pub(crate) fn set_alias(&mut self, alias: &str, record: Option<AliasRecord>) {
        match record {
            Some(record) => self.aliases.insert(alias.to_owned(), record),
            None => self.aliases.remove(alias),
        };
    }

    /// The actor for the last token of a qualified subject, `roll` uniform in [0, 1)
    /// deciding a weighted alias. An unknown qualifier is refused in words.
    pub(crate) fn resolve(&self, qualifier: &str, roll: f64) -> Result<A, LambdaError> {
        match Qualifier::parse(qualifier) {
            Ok(Qualifier::Latest) => self.latest(),
            Ok(Qualifier::Version(n)) => self.version(n),
            Ok(Qualifier::Alias(alias)) => self.alias(&alias, roll),
            Err(why) => Err(LambdaError::resource_not_found(format!(
                "function {}: {why}",
                self.function
            ))),
        }
    }

    /// The actor an alias sends this invocation to.
    pub(crate) fn alias(&self, alias: &str, roll: f64) -> Result<A, LambdaError> {
        let record = self.aliases.get(alias).ok_or_else(|| {
            LambdaError::resource_not_found(format!(
                "function {} has no alias {alias:?}",
                self.function
            ))
        })?;
        self.version(record.choose(roll))
    }

    fn latest(&self) -> Result<A, LambdaError> {
        self.latest.clone().ok_or_else(|| {
            LambdaError::resource_not_found(format!(
                "function {} is not served on this node",
                self.function
            ))
        })
    }

    fn version(&self, n: u64) -> Result<A, LambdaError> {
        self.versions.get(&n).cloned().ok_or_else(|| {
            LambdaError::resource_not_found(format!(
                "function {} has no version {n}",
                self.function
            ))
        })
    }
}

/// Reads a function's routes; a writer that panicked left them whole (each write is
/// one insert or remove), so its poison is ignored.
pub(crate) fn read<A>(routes: &RwLock<Routes<A>>) -> std::sync::RwLockReadGuard<'_, Routes<A>> {
    routes
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Changes a function's routes (the NodeActor only).
pub(crate) fn write<A>(routes: &RwLock<Routes<A>>) -> std::sync::RwLockWriteGuard<'_, Routes<A>> {
    routes
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes<&'static str> {
        let mut routes = Routes::new("f".into());
        routes.set_latest(Some("latest"));
        routes.set_version(1, Some("v1"));
        routes.set_version(2, Some("v2"));
        let alias = AliasRecord::parse(br#"{"version": 1, "weights": {"2": 0.25}}"#).unwrap();
        routes.set_alias("live", Some(alias));
        routes
    }

    #[test]
    fn qualifiers_resolve_to_their_actor() {
        let routes = routes();
        assert_eq!(routes.resolve("$LATEST", 0.0).unwrap(), "latest");
        assert_eq!(routes.resolve("2", 0.0).unwrap(), "v2");
        assert_eq!(routes.resolve("live", 0.5).unwrap(), "v1");
        assert_eq!(routes.resolve("live", 0.1).unwrap(), "v2");
    }

    #[test]
    fn unknown_qualifiers_are_named() {
        let routes = routes();
        let err = routes.resolve("3", 0.0).err().unwrap();
        assert_eq!(err.error_type, "ResourceNotFoundException");
        assert!(err.error_message.contains("no version 3"), "{err}");
        let err = routes.resolve("beta", 0.0).err().unwrap();
        assert!(err.error_message.contains("no alias \"beta\""), "{err}");
        assert!(routes.resolve("a*b", 0.0).is_err());
    }

    #[test]
    fn a_weighted_alias_splits_by_its_weight() {
        let routes = routes();
        let n = 10_000;
        let extra = (0..n)
            .filter(|i| routes.resolve("live", *i as f64 / n as f64).unwrap() == "v2")
            .count();
        assert_eq!(extra, 2_500);
    }

    #[test]
    fn an_alias_to_a_version_not_here_is_refused() {
        let mut routes = routes();
        routes.set_version(2, None);
        assert!(routes.resolve("live", 0.1).is_err());
        assert!(routes.resolve("live", 0.9).is_ok());
    }
}
