//! Every fixed name of DESIGN.md: buckets, subjects, queue groups, headers.

/// JetStream KV bucket holding one binding spec per function name.
pub const BINDINGS_BUCKET: &str = "natsfn-bindings";
/// JetStream KV bucket where nodes write each function's state.
pub const STATUS_BUCKET: &str = "natsfn-status";
/// JetStream KV bucket where each live node keeps a TTL'd key, its id.
pub const NODES_BUCKET: &str = "natsfn-nodes";
/// JetStream Object Store holding packages (function code and layers), object = name.
pub const PACKAGES_BUCKET: &str = "natsfn-packages";

/// JetStream KV bucket of published versions, key `<fn>.<N>` (and `<fn>`: the last
/// number given out).
pub const VERSIONS_BUCKET: &str = "natsfn-versions";
/// JetStream KV bucket of aliases, key `<fn>.<alias>`.
pub const ALIASES_BUCKET: &str = "natsfn-aliases";

/// JetStream stream keeping the history of every function's log records.
pub const LOGS_STREAM: &str = "NATSFN_LOGS";
/// The subjects `NATSFN_LOGS` keeps: every function's [`logs_subject`].
pub const LOGS_SUBJECTS: &str = "natsfn.logs.>";

/// JetStream stream of async invocations (work queue): one subject per function.
pub const ASYNC_STREAM: &str = "NATSFN_ASYNC";
pub const ASYNC_SUBJECTS: &str = "natsfn.async.>";
/// JetStream stream of async invocations that ran out of retries or age.
pub const DLQ_STREAM: &str = "NATSFN_DLQ";
pub const DLQ_SUBJECTS: &str = "natsfn.dlq.>";

/// JetStream's own dedupe header: an async event published twice with one id runs once.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// On an async event natsfn re-enqueued for a retry: the attempt it is (the first is 1).
pub const HEADER_ATTEMPT: &str = "Natsfn-Attempt";
/// Unix ms before which a retried async event does not run (its backoff).
pub const HEADER_NOT_BEFORE: &str = "Natsfn-Not-Before";
/// Unix ms when an async event was first enqueued (what `max_event_age_s` counts from).
pub const HEADER_ENQUEUED_AT: &str = "Natsfn-Enqueued-At";
/// On a dead letter: why it is one (`RetriesExhausted`, `EventAgeExceeded`).
pub const HEADER_CONDITION: &str = "Natsfn-Condition";
/// On a dead letter: the last error, `errorType: errorMessage`.
pub const HEADER_ERROR: &str = "Natsfn-Error";

/// Request id of an invocation (Lambda's `aws_request_id`), on replies and log lines.
/// A request may carry one of its own (see [`is_valid_request_id`]), which the node
/// adopts: the HTTP gateway does, to find the invocation's log lines.
pub const HEADER_REQUEST_ID: &str = "Natsfn-Request-Id";
/// `true` on a reply whose invocation started a worker.
pub const HEADER_COLD_START: &str = "Natsfn-Cold-Start";
/// Unix ms after which the caller no longer waits for a reply.
pub const HEADER_DEADLINE_MS: &str = "Natsfn-Deadline-Ms";
/// `Unhandled` on errors raised by the function itself.
pub const HEADER_FUNCTION_ERROR: &str = "Natsfn-Function-Error";
/// Which stream of the worker a log line came from (`stdout` or `stderr`).
pub const HEADER_LOG_STREAM: &str = "Natsfn-Log-Stream";
/// `Natsfn-Log-Stream` of the START/END/REPORT records natsfn itself writes (Lambda's
/// platform lines).
pub const LOG_STREAM_PLATFORM: &str = "platform";
/// On every reply: the version that ran (`$LATEST` or a number).
pub const HEADER_EXECUTED_VERSION: &str = "Natsfn-Executed-Version";
/// On an async invocation: the qualifier it runs (a version, an alias, `$LATEST`);
/// kept through its retries and into its destination records.
pub const HEADER_QUALIFIER: &str = "Natsfn-Qualifier";
/// ADR-32 service error headers.
pub const HEADER_SERVICE_ERROR: &str = "Nats-Service-Error";
pub const HEADER_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// The subject every function always answers on.
pub fn invoke_subject(function: &str) -> String {
    format!("natsfn.invoke.{function}")
}

/// The subject of one qualifier of a function (a version number, an alias, `$LATEST`).
pub fn qualified_invoke_subject(function: &str, qualifier: &str) -> String {
    format!("natsfn.invoke.{function}.{qualifier}")
}

/// The queue group of all of a function's subscriptions, on every node.
pub fn queue_group(function: &str) -> String {
    format!("natsfn.{function}")
}

/// Where a function's log records are published: one message per output line, and
/// one per invocation holding its END and REPORT lines (and START, if it printed nothing).
pub fn logs_subject(function: &str) -> String {
    format!("natsfn.logs.{function}")
}

/// Where async invocations of a function are published (stream `NATSFN_ASYNC`).
pub fn async_subject(function: &str) -> String {
    format!("natsfn.async.{function}")
}

/// Where a function's dead letters are kept (stream `NATSFN_DLQ`).
pub fn dlq_subject(function: &str) -> String {
    format!("natsfn.dlq.{function}")
}

/// The durable pull consumer of a function's async invocations, shared by every node.
pub fn async_consumer(function: &str) -> String {
    format!("natsfn-async-{function}")
}

/// Function names: `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$` (also a valid ADR-32 service name).
pub fn is_valid_function_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// A request id a caller may choose: 1 to 64 of `A-Za-z0-9-` (a UUID fits), so that it
/// is safe in headers, log lines and the worker's environment.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        assert!(is_valid_function_name("hello"));
        assert!(is_valid_function_name("a"));
        assert!(is_valid_function_name("Hello_world-2"));
        assert!(is_valid_function_name(&"a".repeat(64)));
        assert!(!is_valid_function_name(&"a".repeat(65)));
        assert!(!is_valid_function_name(""));
        assert!(!is_valid_function_name("-x"));
        assert!(!is_valid_function_name("_x"));
        assert!(!is_valid_function_name("a.b"));
        assert!(!is_valid_function_name("a b"));
        assert!(!is_valid_function_name("naïve"));
    }

    #[test]
    fn request_ids() {
        assert!(is_valid_request_id("0b9e1c52-6d3f-4a8e-9f1a-2c3d4e5f6a7b"));
        assert!(is_valid_request_id("a"));
        assert!(is_valid_request_id(&"a".repeat(64)));
        assert!(!is_valid_request_id(&"a".repeat(65)));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("a b"));
        assert!(!is_valid_request_id("a\nb"));
        assert!(!is_valid_request_id("a_b"));
    }

    #[test]
    fn subjects() {
        assert_eq!(invoke_subject("f"), "natsfn.invoke.f");
        assert_eq!(queue_group("f"), "natsfn.f");
        assert_eq!(logs_subject("f"), "natsfn.logs.f");
        assert_eq!(async_subject("f"), "natsfn.async.f");
        assert_eq!(dlq_subject("f"), "natsfn.dlq.f");
        assert_eq!(async_consumer("f"), "natsfn-async-f");
    }
}
