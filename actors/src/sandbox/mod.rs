//! A worker's sandbox (issue 21): the parts the worker's spawn puts it in.
pub(crate) mod net;
