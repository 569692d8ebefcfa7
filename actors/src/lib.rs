//! natsfn's actor tree. A node runs one [`NodeActor`], which keeps one
//! [`FunctionActor`] per valid binding, which keeps a pool of [`WorkerActor`]s, each
//! owning one runtime process. Invocations flow down that tree; replies go straight
//! from the WorkerActor to the caller's reply subject.
#![deny(unreachable_pub)]

pub mod buckets;
mod channel;
mod context;
mod function_actor;
mod invocation;
mod launch;
mod node_actor;
mod pool;
mod process;
mod status;
mod subscription;
mod watchdog;
mod worker_actor;

pub use context::{Interpreters, NodeContext};
pub use function_actor::{FunctionActor, FunctionMsg};
pub use invocation::{Caller, Invocation};
pub use node_actor::{NodeActor, NodeArgs, NodeError, NodeMsg};
pub use worker_actor::{WorkerActor, WorkerMsg};
