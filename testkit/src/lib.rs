//! Test support shared by the crates' integration tests (never part of a binary): an in-process
//! Kubernetes API server with the semantics the binaries rely on ([`fake_api`]), and a binary
//! run as a process the way Kubernetes runs it ([`process`]).

pub mod fake_api;
pub mod process;
