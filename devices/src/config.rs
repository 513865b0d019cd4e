//! Reading what a device's client config needs from the [`Caches`] — the peer's `WgServer` and
//! its private (and preshared) key `Secret`s, no API-server call — and rendering it with the
//! pure [`wgsub_crds::config::ClientConfig`]. It knows nothing of users, HTTP or Telegram:
//! callers (the api's config and QR endpoints, the bot's `/config`) check that the peer is the
//! caller's and the subscription active first.

use crate::cache::{CacheError, Caches};
use wgsub_crds::config::{ClientConfig, config_file_name};
use wgsub_crds::keys::{PresharedKey, PrivateKey, PublicKey};
use wgsub_crds::resources::Protocol;
use wgsub_crds::{SecretKeyRef, WgPeer};
use zeroize::Zeroizing;

/// A device's rendered config.
pub struct RenderedConfig {
    /// The `.conf` text (holds the private key: send it, never log it).
    pub text: Zeroizing<String>,
    /// The download file name (`wgsub-<device>.conf`, or `amnezia-<device>.conf` for an
    /// AmneziaWG server).
    pub file_name: String,
    /// The server's protocol, which says the app the config is for (WireGuard, or AmneziaVPN /
    /// AmneziaWG).
    pub protocol: Protocol,
}

impl std::fmt::Debug for RenderedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedConfig")
            .field("text", &"<redacted>")
            .field("file_name", &self.file_name)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// Why there is no config.
#[derive(Debug, thiserror::Error)]
pub enum DeviceConfigError {
    /// The caches cannot answer now (not synced yet, or stale).
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The peer is not ready yet (no key held by wgsub, no server or server key, no address,
    /// a key Secret missing or malformed); says which.
    #[error("{0}")]
    NotReady(String),
}

fn not_ready(message: impl Into<String>) -> DeviceConfigError {
    DeviceConfigError::NotReady(message.into())
}

/// The value at `key_ref` in its cached Secret, trimmed; `None` when the Secret (or a
/// `wgsub.io/peer` label on it) or the key is missing or not UTF-8.
fn secret_value(caches: &Caches, key_ref: &SecretKeyRef) -> Option<Zeroizing<String>> {
    let secret = caches.secret(&key_ref.name)?;
    let bytes = secret.data.as_ref()?.get(&key_ref.key)?;
    std::str::from_utf8(&bytes.0)
        .ok()
        .map(|text| Zeroizing::new(text.trim().to_owned()))
}

/// Reads the peer's server and key Secrets from `caches` (the peer's namespace) and renders
/// its config; the file name is made from the device name, or from `fallback_name` when the
/// device has none.
pub fn render_device_config(
    caches: &Caches,
    peer: &WgPeer,
    fallback_name: &str,
) -> Result<RenderedConfig, DeviceConfigError> {
    caches.check()?;
    let key_ref = peer
        .spec
        .private_key_secret_ref
        .as_ref()
        .ok_or_else(|| not_ready("this device has no key held by wgsub"))?;
    let server = caches
        .server(&peer.spec.server)
        .ok_or_else(|| not_ready("the device's server does not exist yet"))?;
    let server_key = server
        .status
        .as_ref()
        .and_then(|status| status.public_key.as_deref())
        .and_then(|key| PublicKey::from_base64(key).ok());
    let private_key = secret_value(caches, key_ref)
        .and_then(|text| PrivateKey::from_base64(&text).ok())
        .ok_or_else(|| not_ready("the device's key is not ready yet"))?;
    let preshared_key = match &peer.spec.preshared_key_secret_ref {
        Some(psk_ref) => Some(
            secret_value(caches, psk_ref)
                .and_then(|text| PresharedKey::from_base64(&text).ok())
                .ok_or_else(|| not_ready("the device's preshared key is not ready yet"))?,
        ),
        None => None,
    };
    let config = ClientConfig::for_peer(
        &server.spec,
        server_key,
        &peer.spec,
        private_key,
        preshared_key,
    )
    .map_err(|e| not_ready(e.to_string()))?;
    Ok(RenderedConfig {
        text: config.render(),
        file_name: config_file_name(
            server.spec.protocol,
            peer.spec.device_name.as_deref(),
            fallback_name,
        ),
        protocol: server.spec.protocol,
    })
}
