//! Test support shared by the crates' integration tests (never part of a binary): an in-process
//! Kubernetes API server with the semantics the binaries rely on ([`fake_api`]), a binary run as
//! a process the way Kubernetes runs it ([`process`]), and the checks of what a test needs of
//! the machine ([`host`]).

pub mod fake_api;
pub mod host;
pub mod process;
