//! Integration tests: one binary, one module per capability, all on the harness.

mod harness;

mod bindings;
mod cli;
mod dev;
mod failures;
mod gateway;
mod java;
mod logs;
mod metrics;
mod micro;
mod nodejs;
mod nodes;
mod payloads;
mod pipelining;
mod pool;
mod provided;
mod python;
mod queueing;
mod registry;
