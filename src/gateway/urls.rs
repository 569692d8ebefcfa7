//! The `url` settings of every bound function (auth, CORS), as each function URL request
//! needs them: read from a watch of `natsfn-bindings`, never asked per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use natsfn_protocol::{BindingSpec, UrlSpec};
use tokio::sync::oneshot;

/// How long start-up waits for the bindings there are; past it the gateway serves
/// anyway, and a function it has not read yet answers 404.
const READ_WITHIN: Duration = Duration::from_secs(5);

/// Function name → its `url` (defaults if the binding has none). A function missing
/// here is answered 404 without a request over NATS: a binding the gateway has not read
/// yet must not be served as if its `url.auth` were `NONE`.
#[derive(Clone, Default)]
pub(super) struct Urls(Arc<RwLock<HashMap<String, Arc<UrlSpec>>>>);

impl Urls {
    pub(super) fn get(&self, function: &str) -> Option<Arc<UrlSpec>> {
        let map = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(function).cloned()
    }

    /// Reads the bindings there are (for up to `READ_WITHIN`), then keeps following
    /// them in the returned task.
    pub(super) async fn follow(bindings: Store) -> (Urls, tokio::task::JoinHandle<()>) {
        let urls = Urls::default();
        let (read, was_read) = oneshot::channel();
        let empty = bindings.status().await.is_ok_and(|s| s.values() == 0);
        let task = tokio::spawn(urls.clone().watch(bindings, (!empty).then_some(read)));
        if !empty && tokio::time::timeout(READ_WITHIN, was_read).await.is_err() {
            tracing::warn!("the HTTP gateway has not read every binding yet: function URLs not read answer 404 until they are");
        }
        (urls, task)
    }

    /// Follows `natsfn-bindings` for ever, again from the next revision after a failure.
    /// A binding that does not parse leaves its last good `url` in place, as nodes keep
    /// serving its last good revision.
    async fn watch(self, bindings: Store, mut read: Option<oneshot::Sender<()>>) {
        let mut last_seen = 0;
        loop {
            let watch = if last_seen == 0 {
                bindings.watch_with_history(">").await
            } else {
                bindings.watch_all_from_revision(last_seen + 1).await
            };
            let mut watch = match watch {
                Ok(watch) => watch,
                Err(e) => {
                    tracing::warn!(error = %e, "the HTTP gateway cannot watch the bindings");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(entry) = watch.next().await {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        tracing::warn!(error = %e, "the HTTP gateway's bindings watch failed");
                        break;
                    }
                };
                last_seen = last_seen.max(entry.revision);
                self.apply(&entry.key, entry.operation, &entry.value);
                if entry.delta == 0 {
                    if let Some(read) = read.take() {
                        let _ = read.send(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn apply(&self, name: &str, operation: Operation, value: &[u8]) {
        let url = match operation {
            Operation::Put => match BindingSpec::parse(name, value) {
                Ok(spec) => Some(Arc::new(spec.url.unwrap_or_default())),
                Err(_) => return,
            },
            Operation::Delete | Operation::Purge => None,
        };
        let mut map = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match url {
            Some(url) => map.insert(name.to_owned(), url),
            None => map.remove(name),
        };
    }
}
