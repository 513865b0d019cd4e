//! A user's devices as the cluster has them: their `WgPeer`s (found by the subscription label,
//! kept only when the shared ownership rule — name and label — says they are the user's),
//! and a device's client config and QR code as the shared [`wgsub_devices`] renders them. All
//! read from the watch-backed [`Caches`], never from the API server: before they have synced
//! (or while their watch has failed for too long) every read is a [`DeviceError::Cache`].

use wgsub_crds::WgPeer;
use wgsub_crds::devices::{display_device_name, is_users_peer};
use wgsub_crds::resources::subscription_name;
use wgsub_devices::qr::QrError;
use wgsub_devices::{CacheError, Caches, DeviceConfigError, RenderedConfig, render_device_config};

/// The caches cannot answer now, or the QR code failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Qr(#[from] QrError),
}

/// The user's peers, by name.
pub fn user_peers(caches: &Caches, user_id: i64) -> Result<Vec<WgPeer>, DeviceError> {
    caches.check()?;
    Ok(caches
        .peers_of(&subscription_name(user_id))
        .iter()
        .filter(|peer| is_users_peer(user_id, peer))
        .map(|peer| WgPeer::clone(peer))
        .collect())
}

/// The peer `name` if it is one of the user's.
pub fn user_peer(caches: &Caches, user_id: i64, name: &str) -> Result<Option<WgPeer>, DeviceError> {
    caches.check()?;
    Ok(caches
        .peer(name)
        .filter(|peer| is_users_peer(user_id, peer))
        .map(|peer| WgPeer::clone(&peer)))
}

/// What users call a device: its name as shown ([`display_device_name`]: no hidden
/// formatting), or the peer's name when it has none.
pub fn device_label(peer: &WgPeer) -> String {
    peer.spec
        .device_name
        .as_deref()
        .map(display_device_name)
        .filter(|name| !name.is_empty())
        .or_else(|| peer.metadata.name.clone())
        .unwrap_or_default()
}

/// A device's config file, or why there is none yet.
#[derive(Debug)]
pub enum DeviceConfig {
    Ready(RenderedConfig),
    /// The peer has no address, key or server key yet (the operator or agent is not done), or
    /// the user brought their own key.
    NotReady,
}

/// Renders the peer's client config from the cached server and key Secrets (the shared path
/// of [`wgsub_devices::render_device_config`]; the file name falls back to the peer's name).
pub fn device_config(caches: &Caches, peer: &WgPeer) -> Result<DeviceConfig, DeviceError> {
    let peer_name = peer.metadata.name.clone().unwrap_or_default();
    match render_device_config(caches, peer, &peer_name) {
        Ok(rendered) => Ok(DeviceConfig::Ready(rendered)),
        Err(DeviceConfigError::NotReady(_)) => Ok(DeviceConfig::NotReady),
        Err(DeviceConfigError::Cache(error)) => Err(DeviceError::Cache(error)),
    }
}

/// The config as a QR code PNG for a Telegram photo (what the WireGuard apps scan).
pub fn qr_png(config: &str) -> Result<Vec<u8>, DeviceError> {
    Ok(wgsub_devices::qr::qr_png(config, QR_PIXELS)?)
}

/// Side of the QR photo, in pixels (at least): Telegram shows photos scaled down.
const QR_PIXELS: u32 = 512;
