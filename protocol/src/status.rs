//! The value nodes write to `natsfn-status` under a function's key.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionState {
    Starting,
    Ready,
    Error,
    Crashloop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStatus {
    pub state: FunctionState,
    /// The binding revision this state refers to.
    pub revision: u64,
    pub node: String,
    /// Why, in words, when the state is not `ready`.
    pub reason: Option<String>,
    /// RFC 3339.
    pub updated: String,
}
