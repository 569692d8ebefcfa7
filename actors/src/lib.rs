//! natsfn's actor tree. A node runs one [`NodeActor`], which keeps one FunctionActor
//! per valid binding (`function/`), which keeps a pool of WorkerActors (`worker/`),
//! each owning one runtime process. Invocations flow down that tree; replies go
//! straight from the WorkerActor to the caller's reply subject.
#![deny(unreachable_pub)]

pub mod buckets;
mod children;
mod clock;
mod context;
mod credentials;
mod events;
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
mod status;
mod worker;

pub use context::Interpreters;
pub use credentials::{CredentialsError, SigningKey};
pub use java::Jdk;
pub use metrics::Metrics;
pub use node::{Handover, NodeActor, NodeArgs, NodeMsg};
pub use package::{stays_inside, MAX_PACKAGE_BYTES};
