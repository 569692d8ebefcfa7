//! Integration tests: one binary, one module per capability, all on the harness.

mod harness;

mod async_invocations;
mod bindings;
mod cli;
mod cluster;
mod conformance;
mod connect;
mod dev;
mod docs;
mod failures;
mod gateway;
mod gateway_auth;
mod golden_frames;
mod handler_credentials;
mod java;
mod logs;
mod metrics;
mod micro;
mod nodejs;
mod nodes;
mod operator_roles;
mod packages;
mod payloads;
mod pipelining;
mod pool;
mod provided;
mod python;
mod queueing;
mod registry;
mod roles;
mod rollout;
mod sandbox;
mod versions;
mod versions_cli;
mod versions_cluster;
