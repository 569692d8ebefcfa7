//! Opening natsfn's KV buckets, creating them on first use with the same settings
//! whoever comes first (a node or the CLI).

use std::time::Duration;

use async_nats::jetstream::kv::{Config, Store};
use async_nats::jetstream::Context;
use natsfn_protocol::names::{BINDINGS_BUCKET, NODES_BUCKET, STATUS_BUCKET};

#[derive(Debug, thiserror::Error)]
#[error("cannot open or create the KV bucket {bucket}: {source}")]
pub struct BucketError {
    bucket: &'static str,
    source: async_nats::jetstream::context::CreateKeyValueError,
}

/// `natsfn-bindings`, with some history so that an edit can be looked back on.
pub async fn bindings(js: &Context) -> Result<Store, BucketError> {
    open(js, BINDINGS_BUCKET, 16, None).await
}

pub async fn status(js: &Context) -> Result<Store, BucketError> {
    open(js, STATUS_BUCKET, 1, None).await
}

/// `natsfn-nodes`: per-key TTLs (nats-server 2.11+), so that a node that dies without
/// a word leaves it; the server's marker for an expired key lives as long as a key.
pub async fn nodes(js: &Context) -> Result<Store, BucketError> {
    open(js, NODES_BUCKET, 1, Some(crate::registry::NODE_TTL)).await
}

async fn open(
    js: &Context,
    bucket: &'static str,
    history: i64,
    limit_markers: Option<Duration>,
) -> Result<Store, BucketError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(Config {
            bucket: bucket.to_owned(),
            history,
            limit_markers,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another node may have created it meanwhile.
        Err(source) => js
            .get_key_value(bucket)
            .await
            .map_err(|_| BucketError { bucket, source }),
    }
}
