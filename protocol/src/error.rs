//! Errors as they travel on the wire: a code (ADR-32 `Nats-Service-Error-Code`) and
//! Lambda's error body. These are data, separate from Rust error types.

use serde::{Deserialize, Serialize};

/// The error codes of DESIGN.md, each with the situation it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request itself is unusable (malformed headers, an event that is not JSON).
    BadRequest,
    /// A payload larger than the function's or the server's limit.
    PayloadTooLarge,
    /// At the concurrency limit with a full queue.
    TooManyRequests,
    /// The handler raised or returned an error.
    FunctionError,
    /// The worker process died or answered garbage.
    WorkerFailed,
    /// The function exists but cannot start.
    Unavailable,
    /// The handler ran past `timeout_ms`.
    TimedOut,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::FunctionError => 500,
            ErrorCode::WorkerFailed => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::TimedOut => 504,
        }
    }
}

/// Lambda's error JSON: `{"errorType": ..., "errorMessage": ..., "stackTrace": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LambdaError {
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub error_message: String,
    #[serde(rename = "stackTrace", default)]
    pub stack_trace: Vec<String>,
}

impl LambdaError {
    pub fn new(error_type: impl Into<String>, error_message: impl Into<String>) -> Self {
        LambdaError {
            error_type: error_type.into(),
            error_message: error_message.into(),
            stack_trace: Vec::new(),
        }
    }

    // The platform's own error types, one constructor each: the only place their
    // names are written (a handler's own types come from the worker as they are).

    /// The worker process exited, or its channel broke, while starting or running.
    pub fn exit_error(message: impl Into<String>) -> Self {
        Self::new("Runtime.ExitError", message)
    }

    /// The worker said something it should not have (not a frame, the wrong answer).
    pub fn invalid_response(message: impl Into<String>) -> Self {
        Self::new("Runtime.InvalidResponse", message)
    }

    /// The worker went past `memory_mb`.
    pub fn out_of_memory(message: impl Into<String>) -> Self {
        Self::new("Runtime.OutOfMemory", message)
    }

    /// The worker cannot be started at all (no interpreter, no bootstrap, spawn failed).
    pub fn invalid_entrypoint(message: impl Into<String>) -> Self {
        Self::new("Runtime.InvalidEntrypoint", message)
    }

    /// The function's code (a `code.dir`, or a package that cannot be fetched right
    /// now) is not there.
    pub fn code_unavailable(message: impl Into<String>) -> Self {
        Self::new("Runtime.CodeUnavailable", message)
    }

    /// A package the binding names (as code or layer) is not in `natsfn-packages`.
    pub fn package_not_found(message: impl Into<String>) -> Self {
        Self::new("Runtime.PackageNotFound", message)
    }

    /// The package's bytes are not those the binding's digest pins.
    pub fn package_digest_mismatch(message: impl Into<String>) -> Self {
        Self::new("Runtime.PackageDigestMismatch", message)
    }

    /// The package is not a tar.gz a node will unpack: unsafe paths or links, special
    /// files, or past a size limit.
    pub fn invalid_package(message: impl Into<String>) -> Self {
        Self::new("Runtime.InvalidPackage", message)
    }

    /// The binding's `nats` asks for NATS credentials this node cannot give the
    /// handler (it has no `--signing-key`, or minting them failed).
    pub fn credentials_unavailable(message: impl Into<String>) -> Self {
        Self::new("Runtime.CredentialsUnavailable", message)
    }

    /// The handler (or its init phase) ran past its time.
    pub fn timed_out(message: impl Into<String>) -> Self {
        Self::new("Sandbox.Timedout", message)
    }

    /// The event is larger than the worker's channel takes.
    pub fn request_too_large(message: impl Into<String>) -> Self {
        Self::new("Function.RequestTooLarge", message)
    }

    /// The handler's result is larger than the reply can carry.
    pub fn response_too_large(message: impl Into<String>) -> Self {
        Self::new("Function.ResponseSizeTooLarge", message)
    }

    /// natsfn itself could not serve the invocation (the function or node stopped).
    pub fn service_exception(message: impl Into<String>) -> Self {
        Self::new("ServiceException", message)
    }

    /// At the concurrency limit with a full queue (429).
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new("TooManyRequestsException", message)
    }

    /// The request is unusable as sent (its headers, or an event that is not JSON).
    pub fn invalid_request_content(message: impl Into<String>) -> Self {
        Self::new("InvalidRequestContentException", message)
    }

    /// The request body is larger than the gateway takes.
    pub fn request_too_large_exception(message: impl Into<String>) -> Self {
        Self::new("RequestTooLargeException", message)
    }

    /// The caller stopped waiting (the gateway's wait limit passed).
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new("RequestTimeoutException", message)
    }

    /// A request parameter is out of its range.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }

    /// No such function (or qualifier).
    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", message)
    }

    /// The gateway's `--http-auth`: no signature, or one by a key it does not know.
    pub fn unrecognized_client(message: impl Into<String>) -> Self {
        Self::new("UnrecognizedClientException", message)
    }

    /// The gateway's `--http-auth`: a signature that does not match the request, is out
    /// of its time window, or is malformed.
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new("InvalidSignatureException", message)
    }

    /// The gateway's `--http-auth`: a valid signature by a key not allowed the function.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new("AccessDeniedException", message)
    }

    /// The JSON body of an error reply.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `errorType: errorMessage`, as logs and the `Nats-Service-Error` header show it.
impl std::fmt::Display for LambdaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.error_message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_error_json_uses_lambda_field_names() {
        let e = LambdaError::new("ValueError", "bad");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errorType": "ValueError", "errorMessage": "bad", "stackTrace": []})
        );
    }

    #[test]
    fn display_is_type_colon_message() {
        assert_eq!(
            LambdaError::exit_error("gone").to_string(),
            "Runtime.ExitError: gone"
        );
    }

    #[test]
    fn codes() {
        assert_eq!(ErrorCode::BadRequest.code(), 400);
        assert_eq!(ErrorCode::TimedOut.code(), 504);
        assert_eq!(ErrorCode::WorkerFailed.code(), 502);
    }
}
