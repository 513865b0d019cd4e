//! wgsub-bot: the Telegram bot of wgsub.
//!
//! The decisions are pure and live in their own modules ([`reminders`], [`admin`] parsing,
//! [`broadcast`] pacing, [`text`]); the rest is a thin shell around the shared ledger crate,
//! the Kubernetes API and the Telegram Bot API; [`service`] wires them for `main`.

pub mod admin;
pub mod app;
pub mod broadcast;
pub mod config;
pub mod device_menu;
pub mod devices;
pub mod growth;
pub mod guide;
pub mod handlers;
pub mod http;
pub mod jobs;
pub mod location_moves;
pub mod locations;
pub mod metrics;
pub mod quota;
pub mod reminders;
pub mod renewal;
pub mod server_changes;
pub mod service;
pub mod stars;
pub mod store;
pub mod telegram;
pub mod text;
