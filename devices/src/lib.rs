//! A user's device as the api and the bot hand it out (and the [`apps`] that import its
//! config, per platform): the watch-backed [`cache`] of the
//! namespace they read from (peers by subscription, subscriptions, servers, peer key Secrets —
//! no API-server call on a read path), its client config, read from the caches (the peer's
//! `WgServer` and key `Secret`s) and rendered by the pure
//! [`wgsub_crds::config::ClientConfig`] ([`config`]), and the QR code of that config that the
//! WireGuard apps scan ([`qr`]); and the writes a user makes on their devices — add, rename,
//! delete, rotate ([`manage`]); and the traffic a subscription and each device used, against
//! the plan's data quota ([`usage`]). Callers check that the peer is the caller's and the
//! subscription active before asking.

pub mod apps;
pub mod cache;
pub mod config;
pub mod manage;
pub mod qr;
pub mod usage;

pub use cache::{CacheError, CacheOptions, Caches};
pub use config::{DeviceConfigError, RenderedConfig, render_device_config};
