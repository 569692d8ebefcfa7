//! Opening natsfn's KV buckets, creating them on first use with the same settings
//! whoever comes first (a node or the CLI), and the log stream. Every bucket and
//! stream is created with [`replicas`] copies; an existing one with fewer is reported
//! and raised to that number ([`ensure_replicas`]).

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream::kv::{Config, Store};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::Context;
use natsfn_protocol::names::{
    ALIASES_BUCKET, ASYNC_STREAM, ASYNC_SUBJECTS, BINDINGS_BUCKET, DLQ_STREAM, DLQ_SUBJECTS,
    LOGS_STREAM, LOGS_SUBJECTS, NODES_BUCKET, PACKAGES_BUCKET, STATUS_BUCKET, VERSIONS_BUCKET,
};

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

/// `natsfn-versions`: published versions, immutable once written.
pub async fn versions(js: &Context) -> Result<Store, BucketError> {
    open(js, VERSIONS_BUCKET, 1, None).await
}

/// `natsfn-aliases`, with some history so that a move or a canary's steps can be
/// looked back on.
pub async fn aliases(js: &Context) -> Result<Store, BucketError> {
    open(js, ALIASES_BUCKET, 16, None).await
}

pub async fn status(js: &Context) -> Result<Store, BucketError> {
    open(js, STATUS_BUCKET, 1, None).await
}

/// How long a key of `natsfn-nodes` outlives its last refresh.
pub(crate) const NODE_TTL: Duration = Duration::from_secs(15);

/// `natsfn-nodes`: per-key TTLs (nats-server 2.11+), so that a node that dies without
/// a word leaves it; the server's marker for an expired key lives as long as a key.
pub async fn nodes(js: &Context) -> Result<Store, BucketError> {
    open(js, NODES_BUCKET, 1, Some(NODE_TTL)).await
}

/// `--replicas`, if given: fixed once at start-up, before any bucket is opened.
static REPLICAS: OnceLock<usize> = OnceLock::new();

/// Makes every bucket and stream this process creates keep `n` copies (`--replicas`).
pub fn set_replicas(n: usize) {
    let _ = REPLICAS.set(n);
}

/// How many copies of each of natsfn's buckets and streams to keep: `--replicas` if
/// given, else 3 when the server is part of a cluster (its INFO names one), else 1.
/// On a cluster with fewer than 3 JetStream servers JetStream itself refuses R3, and
/// [`create`] then falls back to 1 (only when the number was not given). Every bucket
/// and stream creation of natsfn goes through this.
pub fn replicas(js: &Context) -> usize {
    if let Some(n) = REPLICAS.get() {
        return *n;
    }
    if js.client().server_info().cluster.is_some() {
        3
    } else {
        1
    }
}

/// Runs `make` with [`replicas`]; when that was the default and JetStream refused it
/// (a cluster of fewer than 3 JetStream servers), once more with 1, and says so.
pub async fn create<T, E, F, Fut>(js: &Context, what: &str, make: F) -> Result<T, E>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let wanted = replicas(js);
    match make(wanted).await {
        Err(e) if wanted > 1 && REPLICAS.get().is_none() => {
            tracing::warn!(
                error = %e,
                "cannot create {what} with {wanted} replicas (fewer JetStream servers?); creating it with 1"
            );
            make(1).await
        }
        done => done,
    }
}

/// Raises the stream's replicas to [`replicas`] if it has fewer (JetStream allows
/// growing R1 to R3 in place); says so either way. Fewer copies than wanted is not an
/// error: the bucket still works, it only survives fewer server losses.
pub async fn ensure_replicas(js: &Context, stream: &str) {
    let wanted = replicas(js);
    let Ok(found) = js.get_stream(stream).await else {
        return;
    };
    let mut config = found.cached_info().config.clone();
    let has = config.num_replicas.max(1);
    if has >= wanted {
        return;
    }
    tracing::warn!(
        stream,
        has,
        wanted,
        "{stream} keeps {has} replica(s), fewer than the {wanted} wanted: raising it"
    );
    config.num_replicas = wanted;
    match js.update_stream(config).await {
        Ok(_) => tracing::info!(
            stream,
            replicas = wanted,
            "{stream} now keeps {wanted} replicas"
        ),
        Err(e) => tracing::warn!(
            stream, has, wanted, error = %e,
            "cannot raise the replicas of {stream}; it keeps {has}"
        ),
    }
}

async fn open(
    js: &Context,
    bucket: &'static str,
    history: i64,
    limit_markers: Option<Duration>,
) -> Result<Store, BucketError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        ensure_replicas(js, &store.stream_name).await;
        return Ok(store);
    }
    let created = create(js, bucket, |num_replicas| {
        js.create_key_value(Config {
            bucket: bucket.to_owned(),
            history,
            limit_markers,
            num_replicas,
            ..Default::default()
        })
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

#[derive(Debug, thiserror::Error)]
#[error("cannot open or create the stream {0}: {1}")]
pub struct StreamError(
    &'static str,
    async_nats::jetstream::context::CreateStreamError,
);

#[derive(Debug, thiserror::Error)]
#[error("cannot open or create the object store {PACKAGES_BUCKET}: {0}")]
pub struct PackagesError(async_nats::jetstream::context::CreateObjectStoreError);

/// `natsfn-packages`: function code and layers, object = package name (file storage:
/// a package outlives a server restart).
pub async fn packages(
    js: &Context,
) -> Result<async_nats::jetstream::object_store::ObjectStore, PackagesError> {
    // The Object Store's own stream name.
    let stream = format!("OBJ_{PACKAGES_BUCKET}");
    if let Ok(store) = js.get_object_store(PACKAGES_BUCKET).await {
        ensure_replicas(js, &stream).await;
        return Ok(store);
    }
    let created = create(js, PACKAGES_BUCKET, |num_replicas| {
        js.create_object_store(async_nats::jetstream::object_store::Config {
            bucket: PACKAGES_BUCKET.to_owned(),
            description: Some("natsfn packages: function code and layers".into()),
            num_replicas,
            ..Default::default()
        })
    })
    .await;
    match created {
        Ok(store) => Ok(store),
        // Another node or CLI may have created it meanwhile.
        Err(e) => js
            .get_object_store(PACKAGES_BUCKET)
            .await
            .map_err(|_| PackagesError(e)),
    }
}

/// How much log history `NATSFN_LOGS` keeps when a node creates it.
#[derive(Debug, Clone, Copy)]
pub struct LogRetention {
    pub max_age: Duration,
    pub max_bytes: i64,
    /// File storage (history survives a server restart) instead of memory (cheaper for
    /// the server per record).
    pub on_disk: bool,
}

/// `NATSFN_LOGS`, created with `retention` if missing. An existing stream is left as
/// it is: its limits are the operator's to change (`nats stream edit`).
///
/// The oldest records go first when a limit is reached. Publishers never ask for an
/// acknowledgement.
pub async fn logs(js: &Context, retention: LogRetention) -> Result<(), StreamError> {
    if js.get_stream(LOGS_STREAM).await.is_ok() {
        ensure_replicas(js, LOGS_STREAM).await;
        return Ok(());
    }
    let created = create(js, LOGS_STREAM, |num_replicas| {
        js.create_stream(stream::Config {
            name: LOGS_STREAM.to_owned(),
            subjects: vec![LOGS_SUBJECTS.to_owned()],
            storage: if retention.on_disk {
                StorageType::File
            } else {
                StorageType::Memory
            },
            discard: DiscardPolicy::Old,
            max_age: retention.max_age,
            max_bytes: retention.max_bytes,
            // Records carry no Nats-Msg-Id; the server still wants the window
            // no longer than max_age.
            duplicate_window: retention.max_age.min(Duration::from_secs(120)),
            num_replicas,
            ..Default::default()
        })
    })
    .await;
    match created {
        Ok(_) => Ok(()),
        // Another node may have created it meanwhile.
        Err(e) => match js.get_stream(LOGS_STREAM).await {
            Ok(_) => Ok(()),
            Err(_) => Err(StreamError(LOGS_STREAM, e)),
        },
    }
}

/// `NATSFN_ASYNC` holds async invocations until they are settled: a work queue, so an
/// acknowledged event is gone. Full, it refuses new events rather than drop stored
/// ones; it keeps an event an hour past the oldest `async.max_event_age_s`, by which
/// time natsfn has made it a dead letter.
pub const ASYNC_MAX_BYTES: i64 = 1 << 30;
pub const ASYNC_MAX_AGE: Duration = Duration::from_secs(7 * 3600);
/// `NATSFN_DLQ` keeps dead letters two weeks (SQS's longest retention), at most 1 GiB.
pub const DLQ_MAX_BYTES: i64 = 1 << 30;
pub const DLQ_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// Publishes with one `Nats-Msg-Id` within this window are stored once.
pub const ASYNC_DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// `NATSFN_ASYNC` and `NATSFN_DLQ`, created if missing (existing ones keep their
/// limits; only their replicas are raised to what is wanted).
pub async fn async_streams(js: &Context) -> Result<(), StreamError> {
    let queue = stream::Config {
        name: ASYNC_STREAM.to_owned(),
        subjects: vec![ASYNC_SUBJECTS.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        discard: DiscardPolicy::New,
        max_age: ASYNC_MAX_AGE,
        max_bytes: ASYNC_MAX_BYTES,
        duplicate_window: ASYNC_DEDUPE_WINDOW,
        ..Default::default()
    };
    let dead = stream::Config {
        name: DLQ_STREAM.to_owned(),
        subjects: vec![DLQ_SUBJECTS.to_owned()],
        storage: StorageType::File,
        discard: DiscardPolicy::New,
        max_age: DLQ_MAX_AGE,
        max_bytes: DLQ_MAX_BYTES,
        duplicate_window: ASYNC_DEDUPE_WINDOW,
        // `natsfn dlq` reads dead letters by subject with direct gets.
        allow_direct: true,
        ..Default::default()
    };
    for (name, config) in [(ASYNC_STREAM, queue), (DLQ_STREAM, dead)] {
        if js.get_stream(name).await.is_ok() {
            ensure_replicas(js, name).await;
            continue;
        }
        let created = create(js, name, |num_replicas| {
            js.create_stream(stream::Config {
                num_replicas,
                ..config.clone()
            })
        })
        .await;
        if let Err(e) = created {
            // Another node may have created it meanwhile.
            if js.get_stream(name).await.is_err() {
                return Err(StreamError(name, e));
            }
        }
    }
    Ok(())
}
