//! Opening natsfn's KV buckets, creating them on first use with the same settings
//! whoever comes first (a node or the CLI).

use async_nats::jetstream::kv::{Config, Store};
use async_nats::jetstream::Context;
use natsfn_protocol::names::{BINDINGS_BUCKET, STATUS_BUCKET};

#[derive(Debug, thiserror::Error)]
#[error("cannot open or create the KV bucket {bucket}: {source}")]
pub struct BucketError {
    bucket: &'static str,
    source: async_nats::jetstream::context::CreateKeyValueError,
}

/// `natsfn-bindings`, with some history so that an edit can be looked back on.
pub async fn bindings(js: &Context) -> Result<Store, BucketError> {
    open(js, BINDINGS_BUCKET, 16).await
}

pub async fn status(js: &Context) -> Result<Store, BucketError> {
    open(js, STATUS_BUCKET, 1).await
}

async fn open(js: &Context, bucket: &'static str, history: i64) -> Result<Store, BucketError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(Config {
            bucket: bucket.to_owned(),
            history,
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
