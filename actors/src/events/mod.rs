//! Events delivered through JetStream: a durable pull consumer shared by every node,
//! pulled only as far as this node has room to run them, each event held on a lease
//! until its outcome is settled (ack on success, re-enqueued with backoff on failure,
//! a dead letter when retries or age run out, put back untouched when it was only
//! throttled). Knows nothing of where its events come from or what runs them: async
//! invocations are its first source.

mod event;
mod source;

pub(crate) use event::{backoff_left, Event, Settings, Stamp};
pub(crate) use source::{EventSource, SourceSpec};
