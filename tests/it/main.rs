//! Integration tests: one binary, one module per capability, all on the harness.

mod harness;

mod bindings;
mod failures;
