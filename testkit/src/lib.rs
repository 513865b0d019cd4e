//! Test support shared by the crates' integration tests (never part of a binary): a real
//! Kubernetes control plane per test process ([`envtest`]) with the chart's RBAC on it
//! ([`chart`]); an in-process API server for the faults a real one cannot be made to show
//! ([`fake_api`]); a binary run as a process the way Kubernetes runs it ([`process`]); and the
//! checks of what a test needs of the machine ([`host`]).

pub mod chart;
pub mod envtest;
pub mod fake_api;
pub mod host;
pub mod process;
