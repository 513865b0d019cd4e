//! A user's device as the api and the bot hand it out: its client config, read from the
//! cluster (the peer's `WgServer` and key `Secret`s) and rendered by the pure
//! [`wgsub_crds::config::ClientConfig`] ([`config`]), and the QR code of that config that the
//! WireGuard apps scan ([`qr`]). Callers check that the peer is the caller's and the
//! subscription active before asking.

pub mod config;
pub mod qr;

pub use config::{DeviceConfigError, RenderedConfig, render_device_config};
