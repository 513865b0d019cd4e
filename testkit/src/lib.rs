//! Test support shared by the crates' integration tests (never part of a binary): a real
//! Kubernetes control plane per test process ([`envtest`]) with the chart's RBAC on it
//! ([`chart`]); a binary run as a process the way Kubernetes runs it ([`process`]); the checks
//! of what a test needs of the machine ([`host`]); and, with the feature `fixtures`, the wgsub
//! resources tests build (`fixtures`). Faults a real server cannot be made to show are injected
//! with kube-fake-client in the few tests that need them, each saying why.

pub mod chart;
pub mod envtest;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod host;
pub mod process;
