//! natsfn's contract as data: the names of buckets, subjects and headers, the binding
//! spec and its validation, error codes and bodies, the status and node records, and
//! the frames spoken with worker processes. Pure data and codecs: no I/O, no async
//! runtime.
#![deny(unreachable_pub)]

pub mod destination;
pub mod error;
pub mod frame;
pub mod names;
pub mod node;
pub mod service;
pub mod spec;
pub mod status;
pub mod version;

pub use async_spec::{AfterFailure, AsyncSpec, Condition};
pub use error::{ErrorCode, LambdaError};
pub use frame::{FrameDecoder, FrameError, FromWorker, Invoke, ToWorker};
pub use node::NodeInfo;
/// Kept at the crate root, where it was before the spec became a folder.
pub use spec::async_spec;
pub use spec::{
    is_valid_label, BindingSpec, CodeSource, NatsAccess, Network, PackageRef, Placement, PoolSpec,
    Runtime, SpecError, UrlAuth, UrlSpec,
};
pub use status::{FunctionState, FunctionStatus};
pub use version::{AliasRecord, Qualifier, VersionRecord};
