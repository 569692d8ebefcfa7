//! Client commands' reads of JetStream ride out a leader election. Right after a server
//! of a cluster dies, a JetStream request can go unanswered until the stream (or the
//! meta group) it needs has elected a new leader: the read is then tried again, with a
//! short backoff, for up to [`READ_PATIENCE`], and fails with the reason after that.
//! An answer (a bucket or stream that does not exist, bad permissions) is never retried.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::{Context, ErrorCode};

/// How long a command keeps trying a read that JetStream did not answer. A stream or
/// the meta group that lost its leader elects another within a few seconds (Raft's
/// election timeout is 4 to 9 s at worst).
pub(crate) const READ_PATIENCE: Duration = Duration::from_secs(15);
/// How long one JetStream request of a read waits for its answer: one sent to a leader
/// that has just died is asked again after this, not after the client's 10 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// How async-nats words a request nobody answered, whichever operation wraps it (the
/// bucket errors of natsfn-actors keep their cause only in their message).
const UNANSWERED: [&str; 3] = ["timed out", "no responders", "temporarily unavailable"];

/// A JetStream context for reads: each request gives up after [`REQUEST_TIMEOUT`], so
/// that [`read`] can ask again.
pub(crate) fn jetstream(client: async_nats::Client) -> Context {
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(REQUEST_TIMEOUT);
    js
}

/// Runs `attempt` until it succeeds, fails with an answer, or [`READ_PATIENCE`] has
/// passed since the first try; `attempt` reads from scratch each time (it opens its
/// buckets itself), and prints nothing.
pub(crate) async fn read<T, F, Fut>(attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    read_within(READ_PATIENCE, attempt).await
}

async fn read_within<T, F, Fut>(patience: Duration, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut tries = 1;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if unanswered(&e) => e,
            Err(e) => return Err(e),
        };
        if started.elapsed() + pause >= patience {
            return Err(error.context(format!(
                "JetStream did not answer ({tries} tries in {:.1} s)",
                started.elapsed().as_secs_f64()
            )));
        }
        tracing::debug!(
            error = format!("{error:#}"),
            tries,
            "JetStream did not answer; trying again"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
        tries += 1;
    }
}

/// The KV bucket `name` for a read: `None` if it does not exist. A read creates nothing
/// (opening a bucket the way nodes do would try to create it when its stream does
/// not answer).
pub(crate) async fn bucket(js: &Context, name: &str) -> anyhow::Result<Option<Store>> {
    unless_missing(js.get_key_value(name).await)
}

/// `None` when `opened` failed because JetStream has no such stream (a bucket's, an
/// object store's): nothing was ever written there.
pub(crate) fn unless_missing<T, E>(opened: Result<T, E>) -> anyhow::Result<Option<T>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match opened {
        Ok(found) => Ok(Some(found)),
        Err(e) => {
            let e = anyhow::Error::new(e);
            let missing = e.chain().any(|cause| {
                cause.downcast_ref::<GetStreamError>().is_some_and(|g| {
                    matches!(g.kind(), GetStreamErrorKind::JetStream(api)
                        if api.error_code() == ErrorCode::STREAM_NOT_FOUND)
                })
            });
            if missing {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// Whether `error` says nobody answered, rather than what JetStream answered.
fn unanswered(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(api) = cause.downcast_ref::<async_nats::jetstream::Error>() {
            return api.code() == 503;
        }
        let text = cause.to_string();
        UNANSWERED.iter().any(|marker| text.contains(marker))
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use async_nats::jetstream::context::{KeyValueError, KeyValueErrorKind};

    use super::*;

    #[test]
    fn timeouts_and_no_responders_are_unanswered_and_answers_are_not() {
        let timed_out = anyhow::Error::new(async_nats::jetstream::kv::WatchError::new(
            async_nats::jetstream::kv::WatchErrorKind::TimedOut,
        ));
        assert!(unanswered(&timed_out));
        assert!(unanswered(&timed_out.context("cannot list the nodes")));
        let no_responders = anyhow::Error::new(async_nats::RequestError::new(
            async_nats::RequestErrorKind::NoResponders,
        ));
        assert!(unanswered(&no_responders));
        let not_found = anyhow::Error::new(async_nats::jetstream::kv::EntryError::new(
            async_nats::jetstream::kv::EntryErrorKind::InvalidKey,
        ));
        assert!(!unanswered(&not_found));
        assert!(!unanswered(&anyhow::anyhow!("no function f is bound")));
    }

    /// What `get_key_value` and `get_object_store` return for a stream JetStream
    /// answered about with `code`/`err_code`.
    fn opening_failed(code: u16, err_code: u64, description: &str) -> KeyValueError {
        let api: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!(
            {"code": code, "err_code": err_code, "description": description}
        ))
        .expect("a JetStream API error");
        KeyValueError::with_source(
            KeyValueErrorKind::GetBucket,
            GetStreamError::new(GetStreamErrorKind::JetStream(api)),
        )
    }

    #[test]
    fn only_a_stream_that_does_not_exist_is_missing() {
        let missing = unless_missing::<(), _>(Err(opening_failed(404, 10059, "stream not found")));
        assert!(matches!(missing, Ok(None)), "{missing:?}");
        let busy = unless_missing::<(), _>(Err(opening_failed(
            503,
            10008,
            "JetStream system temporarily unavailable",
        )))
        .expect_err("not missing");
        assert!(unanswered(&busy), "{busy:#}");
        assert!(matches!(
            unless_missing::<_, KeyValueError>(Ok(1)),
            Ok(Some(1))
        ));
    }

    #[tokio::test]
    async fn a_read_is_retried_while_unanswered_and_not_after_an_answer() {
        let tries = Cell::new(0);
        let value = read_within(READ_PATIENCE, || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                if n < 4 {
                    Err(anyhow::anyhow!("timed out"))
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .expect("answered on the fourth try");
        assert_eq!(value, 4);

        tries.set(0);
        let error = read_within(READ_PATIENCE, || {
            tries.set(tries.get() + 1);
            async { Err::<(), _>(anyhow::anyhow!("stream not found")) }
        })
        .await
        .expect_err("an answer");
        assert_eq!(
            (tries.get(), error.to_string()),
            (1, "stream not found".into())
        );

        let patience = Duration::from_millis(500);
        let started = Instant::now();
        let error = read_within(patience, || async {
            Err::<(), _>(anyhow::anyhow!("timed out"))
        })
        .await
        .expect_err("never answered");
        assert!(started.elapsed() <= patience, "{:?}", started.elapsed());
        assert!(
            format!("{error:#}").starts_with("JetStream did not answer (")
                && format!("{error:#}").ends_with(": timed out"),
            "{error:#}"
        );
    }
}
