//! Function log records on their way to `natsfn.logs.<function>`: one task per node
//! publishes them, in the order the workers handed them over.
//!
//! Every invocation ends with a platform record (END and REPORT), which the
//! NATSFN_LOGS stream stores: at thousands of invocations a second, that second
//! message per invocation cost the server more than the request and its reply did.
//! So the task ships at most once every 5 ms: a record that comes sooner after the
//! last shipment waits for the rest of those 5 ms, and the platform records gathered
//! meanwhile go out as one message per function, the records one after another. An
//! idle function's record goes out alone and at once, as before. The function's own
//! output stays one message per line, and a function's messages keep their order: its
//! pending platform records go out before its next output line.

use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap, Subject};
use bytes::{Bytes, BytesMut};
use natsfn_protocol::names::{HEADER_LOG_STREAM, HEADER_REQUEST_ID, LOG_STREAM_PLATFORM};
use tokio::sync::{mpsc, oneshot};

/// Records taken from the queue in one turn.
const MAX_BATCH: usize = 1024;
/// At most one turn of the task in this time: a record that comes sooner after the
/// last shipment waits for the rest of it, with those that follow.
const LINGER: Duration = Duration::from_millis(5);
/// A message of merged platform records stays below this size (they are a few
/// hundred bytes each).
const MAX_MERGED_BYTES: usize = 64 * 1024;

struct Record {
    subject: Subject,
    request_id: String,
    /// `stdout`, `stderr` or `platform`.
    stream: &'static str,
    body: Bytes,
}

enum Shipment {
    Record(Record),
    /// Answered once everything handed over before it is published.
    Flush(oneshot::Sender<()>),
}

/// Where workers hand their log records; cheap to clone.
#[derive(Clone)]
pub(crate) struct LogShipper {
    tx: mpsc::UnboundedSender<Shipment>,
}

impl LogShipper {
    pub(crate) fn spawn(client: Client) -> LogShipper {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            // Long enough ago that the next record goes out at once.
            let mut shipped = Instant::now()
                .checked_sub(LINGER)
                .unwrap_or_else(Instant::now);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let since = shipped.elapsed();
                if since < LINGER {
                    // Busy: what the workers hand over meanwhile joins this batch.
                    tokio::time::sleep(LINGER - since).await;
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(shipment) => batch.push(shipment),
                            Err(_) => break,
                        }
                    }
                }
                ship(&client, &mut batch).await;
                shipped = Instant::now();
            }
        });
        LogShipper { tx }
    }

    /// Queues one record of `request_id` on `subject`; never waits.
    pub(crate) fn send(
        &self,
        subject: &Subject,
        request_id: &str,
        stream: &'static str,
        body: Bytes,
    ) {
        let _ = self.tx.send(Shipment::Record(Record {
            subject: subject.clone(),
            request_id: request_id.to_owned(),
            stream,
            body,
        }));
    }

    /// Waits until every record queued so far has been handed to the connection.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Shipment::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn ship(client: &Client, batch: &mut Vec<Shipment>) {
    let mut merged: Vec<Merged> = Vec::new();
    let mut flushed = Vec::new();
    for shipment in batch.drain(..) {
        let record = match shipment {
            Shipment::Record(record) => record,
            Shipment::Flush(done) => {
                flushed.push(done);
                continue;
            }
        };
        let pending = merged.iter().position(|m| m.subject == record.subject);
        if record.stream != LOG_STREAM_PLATFORM {
            // The function's earlier platform records go first.
            if let Some(i) = pending {
                merged.swap_remove(i).publish(client).await;
            }
            publish(client, record).await;
            continue;
        }
        match pending {
            Some(i) if merged[i].fits(&record) => merged[i].add(record),
            Some(i) => {
                std::mem::replace(&mut merged[i], Merged::new(record))
                    .publish(client)
                    .await
            }
            None => merged.push(Merged::new(record)),
        }
    }
    for m in merged {
        m.publish(client).await;
    }
    for done in flushed {
        let _ = done.send(());
    }
}

async fn publish(client: &Client, record: Record) {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REQUEST_ID, record.request_id.as_str());
    headers.insert(HEADER_LOG_STREAM, record.stream);
    let _ = client
        .publish_with_headers(record.subject, headers, record.body)
        .await;
}

/// Platform records of one function, published as one message: the bodies one line
/// after another, `Natsfn-Request-Id` listing their request ids, comma-separated (a
/// request id has no comma), each once. Every platform line names its request id too.
struct Merged {
    subject: Subject,
    request_ids: String,
    last_id: String,
    bodies: Vec<Bytes>,
    bytes: usize,
}

impl Merged {
    fn new(record: Record) -> Merged {
        Merged {
            subject: record.subject,
            request_ids: record.request_id.clone(),
            last_id: record.request_id,
            bytes: record.body.len(),
            bodies: vec![record.body],
        }
    }

    fn fits(&self, record: &Record) -> bool {
        self.bytes + record.body.len() + record.request_id.len() + 2 <= MAX_MERGED_BYTES
    }

    fn add(&mut self, record: Record) {
        if record.request_id != self.last_id {
            self.request_ids.push(',');
            self.request_ids.push_str(&record.request_id);
            self.last_id = record.request_id;
        }
        self.bytes += record.body.len() + 1;
        self.bodies.push(record.body);
    }

    fn body(mut self) -> Bytes {
        if self.bodies.len() == 1 {
            return self.bodies.pop().unwrap_or_default();
        }
        let mut body = BytesMut::with_capacity(self.bytes);
        for (i, part) in self.bodies.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(b"\n");
            }
            body.extend_from_slice(part);
        }
        body.freeze()
    }

    async fn publish(self, client: &Client) {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_REQUEST_ID, self.request_ids.as_str());
        headers.insert(HEADER_LOG_STREAM, LOG_STREAM_PLATFORM);
        let subject = self.subject.clone();
        let _ = client
            .publish_with_headers(subject, headers, self.body())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: &str, id: &str, stream: &'static str, body: &str) -> Record {
        Record {
            subject: Subject::from(subject),
            request_id: id.to_owned(),
            stream,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn platform_records_merge_with_each_request_id_once() {
        let mut m = Merged::new(record("l.f", "a", "platform", "START a"));
        m.add(record("l.f", "a", "platform", "END a\nREPORT a"));
        m.add(record("l.f", "b", "platform", "END b\nREPORT b"));
        assert_eq!(m.request_ids, "a,b");
        assert_eq!(&m.body()[..], b"START a\nEND a\nREPORT a\nEND b\nREPORT b");
    }

    #[test]
    fn a_merged_message_stays_below_its_limit() {
        let big = "x".repeat(MAX_MERGED_BYTES / 2);
        let m = Merged::new(record("l.f", "a", "platform", &big));
        assert!(m.fits(&record("l.f", "b", "platform", "END b")));
        assert!(!m.fits(&record("l.f", "b", "platform", &big)));
    }
}
