//! The pull loop of one durable consumer: a fetch asks for exactly as many events as
//! this node has room for, so a busy or slow node leaves the rest to the others.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::AbortOnDrop;

use super::event::{Event, Settings};

/// How long the server waits for an event's outcome before another node may take it;
/// a running event renews its lease at a third of it.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// A pull waits this long for events; then the next one is sent. No idle heartbeats:
/// async-nats 0.51's batch stream stalls after one (it returns Pending without a
/// wake-up), so a pull lost in a server failover is noticed by its expiry instead.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(1);
const MAX_BATCH: usize = 256;

/// Which consumer of which stream.
pub(crate) struct SourceSpec {
    pub(crate) stream: &'static str,
    pub(crate) consumer: String,
    pub(crate) filter: String,
}

/// A running pull loop. Dropping it stops pulling; events already handed out settle
/// on their own.
pub(crate) struct EventSource {
    /// The pull loop, stopped when this is dropped.
    _task: AbortOnDrop,
    room: Arc<Semaphore>,
    capacity: usize,
    settings: watch::Sender<Arc<Settings>>,
}

impl EventSource {
    /// Pulls at most `capacity` events at a time and hands each to `deliver`, which
    /// says false when nothing takes them any more (the loop then ends; the event is
    /// put back as it drops).
    pub(crate) fn start<F>(
        spec: SourceSpec,
        capacity: usize,
        settings: Settings,
        deliver: F,
    ) -> EventSource
    where
        F: Fn(Event) -> bool + Send + 'static,
    {
        let room = Arc::new(Semaphore::new(capacity));
        let (settings, watched) = watch::channel(Arc::new(settings));
        let task = tokio::spawn(pull_loop(spec, room.clone(), watched, deliver)).abort_handle();
        EventSource {
            _task: AbortOnDrop::new(task),
            room,
            capacity,
            settings,
        }
    }

    /// The binding changed: how many events may run here at once, and what settles them.
    pub(crate) fn update(&mut self, capacity: usize, settings: Settings) {
        self.settings.send_replace(Arc::new(settings));
        if capacity > self.capacity {
            self.room.add_permits(capacity - self.capacity);
        } else if capacity < self.capacity {
            // Taken back as running events give theirs up.
            let room = self.room.clone();
            let fewer = (self.capacity - capacity) as u32;
            tokio::spawn(async move {
                if let Ok(permits) = room.acquire_many_owned(fewer).await {
                    permits.forget();
                }
            });
        }
        self.capacity = capacity;
    }
}

async fn pull_loop<F>(
    spec: SourceSpec,
    room: Arc<Semaphore>,
    settings: watch::Receiver<Arc<Settings>>,
    deliver: F,
) where
    F: Fn(Event) -> bool,
{
    let consumer = loop {
        let js = settings.borrow().js.clone();
        match open(&js, &spec).await {
            Ok(consumer) => break consumer,
            Err(e) => {
                tracing::warn!(consumer = %spec.consumer, error = %e, "cannot open the consumer; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    loop {
        let Ok(first) = room.clone().acquire_owned().await else {
            return;
        };
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match room.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        // `batch`, not `fetch`: a fetch does not wait (no_wait) and would poll.
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(consumer = %spec.consumer, error = %e, "pull failed; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::debug!(consumer = %spec.consumer, error = %e, "pull ended");
                    break;
                }
            };
            if let Some(wait) = Event::not_yet(&message) {
                tokio::spawn(async move {
                    let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
                });
                continue;
            }
            let Some(permit) = permits.pop() else {
                // More than asked for: back it goes.
                tokio::spawn(async move {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                });
                continue;
            };
            let current = settings.borrow().clone();
            if let Ok(info) = message.info() {
                current.metrics.pending(info.pending);
                tracing::debug!(consumer = %spec.consumer, sequence = info.stream_sequence, delivered = info.delivered, "event pulled");
            }
            let event = Event::arrive(message, current, permit, ACK_WAIT / 3);
            if event.expired() {
                tokio::spawn(event.too_old());
                continue;
            }
            if !deliver(event) {
                return;
            }
        }
        tracing::debug!(consumer = %spec.consumer, unused = permits.len(), "batch ended");
    }
}

async fn open(
    js: &async_nats::jetstream::Context,
    spec: &SourceSpec,
) -> Result<PullConsumer, async_nats::Error> {
    let stream = js.get_stream(spec.stream).await?;
    let config = pull::Config {
        durable_name: Some(spec.consumer.clone()),
        filter_subject: spec.filter.clone(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        // Attempts are counted by natsfn (a throttled delivery is not one); an event
        // ends by its age at the latest.
        max_deliver: -1,
        ..Default::default()
    };
    Ok(stream
        .get_or_create_consumer(&spec.consumer, config)
        .await?)
}
