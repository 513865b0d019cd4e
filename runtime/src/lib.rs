//! The shell every wgsub binary shares, so that each `main` is a few lines: how logs are
//! written, how SIGTERM stops the process, the `/healthz`, `/readyz` and `/metrics` endpoints,
//! the one duration syntax of flags and chart values, and leader election through a `Lease`.

pub mod duration;
pub mod http;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod settings;
pub mod shutdown;
