//! What a WorkerActor tells its parent, in a message type of its own: the parent
//! (the FunctionActor) hands each worker a `DerivedActorRef<WorkerReport>` and turns
//! these into its own messages, so a worker knows nothing of the pool it is in.

use std::time::Duration;

use natsfn_protocol::{ErrorCode, LambdaError};
use ractor::ActorId;

use crate::invocation::{EndpointId, Invocation};
use crate::metrics;

pub(crate) enum WorkerReport {
    /// The worker's process is initialised and takes invocations.
    Ready(ActorId),
    Finished(Finished),
    /// Invocations the worker took but never started (it failed first), oldest first.
    Requeue(Vec<Invocation>),
    /// The worker could not start (its init phase failed); it stops.
    InitFailed {
        worker: ActorId,
        error: LambdaError,
    },
    /// The worker's process is gone (crashed, killed, timed out); it stops.
    Exited {
        worker: ActorId,
        reason: String,
    },
}

/// One invocation a worker is done with.
pub(crate) struct Finished {
    pub(crate) worker: ActorId,
    pub(crate) endpoint: EndpointId,
    pub(crate) outcome: Outcome,
    /// How long the handler ran, when it ran to an answer (a crash or timeout does
    /// not say how long the function takes).
    pub(crate) ran: Option<Duration>,
    /// From the request's arrival to its reply.
    pub(crate) since_received: Duration,
}

pub(crate) enum Outcome {
    Success,
    /// The reply's error code and `errorType: errorMessage`.
    Failed(ErrorCode, String),
}

impl Outcome {
    pub(crate) fn failed(code: ErrorCode, error: &LambdaError) -> Outcome {
        Outcome::Failed(code, error.to_string())
    }
}

impl From<&Outcome> for metrics::Outcome {
    fn from(outcome: &Outcome) -> metrics::Outcome {
        match outcome {
            Outcome::Success => metrics::Outcome::Ok,
            Outcome::Failed(code, _) => (*code).into(),
        }
    }
}
