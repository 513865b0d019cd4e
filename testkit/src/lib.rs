//! Test support shared by the crates' integration tests (never part of a binary): a real
//! Kubernetes control plane per test process ([`envtest`]) with the chart's RBAC on it
//! ([`chart`]); a binary run as a process the way Kubernetes runs it ([`process`]); and the
//! checks of what a test needs of the machine ([`host`]). Faults a real server cannot be made to
//! show are injected with kube-fake-client in the few tests that need them, each saying why.

pub mod chart;
pub mod envtest;
pub mod host;
pub mod process;
