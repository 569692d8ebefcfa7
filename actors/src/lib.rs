//! natsfn's actor tree. A node runs one [`NodeActor`], which keeps one FunctionActor
//! per valid binding (`function/`), which keeps a pool of WorkerActors (`worker/`),
//! each owning one runtime process. Invocations flow down that tree; replies go
//! straight from the WorkerActor to the caller's reply subject.
#![deny(unreachable_pub)]

pub mod buckets;
mod canary;
mod children;
mod clock;
mod context;
mod credentials;
mod events;
mod forward;
mod function;
#[cfg(test)]
mod hostile;
mod invocation;
mod java;
mod launch;
mod logs;
mod metrics;
mod node;
mod package;
mod reserved;
mod route;
mod sandbox;
mod status;
mod worker;

// Exported until the node starts drivers itself (its alias watch); then `pub(crate)`.
pub use canary::{function_stats, GatherError};
pub use context::Interpreters;
pub use credentials::{CredentialsError, SigningKey};
pub use java::Jdk;
pub use metrics::Metrics;
pub use node::{Handover, NodeActor, NodeArgs, NodeMsg};
pub use package::{stays_inside, MAX_PACKAGE_BYTES};
pub use sandbox::{Sandbox, SandboxError};

/// Entry points for the fuzz targets of `fuzz/` (issue 21 §3): the crate's parsers of
/// outside bytes, each checking what it promises. Not an API; nothing else uses it.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    use async_nats::HeaderMap;

    /// `Name: value` lines as NATS headers; lines that are not valid ones are skipped.
    pub fn headers(text: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in text.split(['\r', '\n']) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                name.trim().parse::<async_nats::HeaderName>(),
                value.trim_start().parse::<async_nats::HeaderValue>(),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
        headers
    }

    /// A request's `Natsfn-Request-Id` and `Natsfn-Deadline-Ms`: read, or a 400 that
    /// names the header. Whether both were read.
    pub fn request_headers(headers: Option<&HeaderMap>) -> bool {
        let id = crate::invocation::chosen_request_id(headers);
        let deadline = crate::invocation::deadline_ms(headers);
        for refusal in [id.as_ref().err(), deadline.as_ref().err()]
            .into_iter()
            .flatten()
        {
            assert!(refusal.error_message.contains("Natsfn-"), "{refusal:?}");
        }
        id.is_ok() && deadline.is_ok()
    }

    /// An async event's headers: always a usable stamp, which the retry policy takes.
    pub fn event_headers(headers: Option<&HeaderMap>, sequence: u64, now_ms: u64) {
        let stamp = crate::events::Stamp::read(headers, sequence, now_ms);
        assert!(natsfn_protocol::names::is_valid_request_id(&stamp.id));
        assert!(stamp.attempt >= 1);
        let _ = crate::events::backoff_left(headers, now_ms);
        let age = std::time::Duration::from_millis(now_ms.saturating_sub(stamp.enqueued_ms));
        let _ = natsfn_protocol::AsyncSpec::default().after_failure(stamp.attempt, age);
    }

    /// A Runtime API error report (its headers and body) read as Lambda reads it.
    pub fn runtime_api_error(headers: &axum::http::HeaderMap, body: &[u8]) {
        crate::worker::runtime_api_error_fields(headers, body);
    }

    /// A package archive unpacked into `dest` (an empty directory) under small limits:
    /// what it unpacked (bytes, entries), or why not.
    pub fn unpack(archive: &[u8], dest: &Path) -> Result<(u64, u64), String> {
        let limits = crate::package::Limits {
            unpacked_bytes: 256 * 1024,
            entries: 64,
            ratio: 200,
            ratio_floor: 64 * 1024,
        };
        crate::package::unpack(archive, dest, limits)
            .map(|done| (done.bytes, done.entries))
            .map_err(|e| e.to_string())
    }
}
