//! The shell every wgsub binary shares, so that each `main` is a few lines: how logs are
//! written ([`logging`]), how SIGTERM stops the process ([`shutdown`]), the `/healthz`,
//! `/readyz` and `/metrics` endpoints ([`http`], [`metrics`]), the one duration syntax of flags
//! and chart values ([`duration`]), the settings parsers several binaries share ([`settings`]),
//! the TLS provider and the one-line startup error ([`process`]), and leader election through a
//! `Lease` ([`lease`]).

pub mod duration;
pub mod http;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod settings;
pub mod shutdown;
