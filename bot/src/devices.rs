//! A user's devices as the cluster has them: their `WgPeer`s (found by the subscription label,
//! kept only when the shared ownership rule — name and label — says they are the user's),
//! and a device's client config and QR code as the shared [`wgsub_devices`] renders them.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use wgsub_crds::devices::{display_device_name, is_users_peer};
use wgsub_crds::resources::{LABEL_SUBSCRIPTION, subscription_name};
use wgsub_crds::{WgPeer, WgServer};
use wgsub_devices::qr::QrError;
use wgsub_devices::{DeviceConfigError, RenderedConfig, render_device_config};

/// A Kubernetes read or the QR code failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("reading from Kubernetes failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Qr(#[from] QrError),
}

/// The user's peers, by name.
pub async fn user_peers(
    client: &kube::Client,
    namespace: &str,
    user_id: i64,
) -> Result<Vec<WgPeer>, DeviceError> {
    let api: Api<WgPeer> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{LABEL_SUBSCRIPTION}={}", subscription_name(user_id));
    let mut peers = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    peers.retain(|peer| is_users_peer(user_id, peer));
    peers.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(peers)
}

/// The peer `name` if it is one of the user's.
pub async fn user_peer(
    client: &kube::Client,
    namespace: &str,
    user_id: i64,
    name: &str,
) -> Result<Option<WgPeer>, DeviceError> {
    let api: Api<WgPeer> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .get_opt(name)
        .await?
        .filter(|peer| is_users_peer(user_id, peer)))
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

/// Reads the peer's server and key Secrets and renders its client config (the shared path of
/// [`wgsub_devices::render_device_config`]; the file name falls back to the peer's name).
pub async fn device_config(
    client: &kube::Client,
    namespace: &str,
    peer: &WgPeer,
) -> Result<DeviceConfig, DeviceError> {
    let servers: Api<WgServer> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let peer_name = peer.metadata.name.clone().unwrap_or_default();
    match render_device_config(&servers, &secrets, peer, &peer_name).await {
        Ok(rendered) => Ok(DeviceConfig::Ready(rendered)),
        Err(DeviceConfigError::NotReady(_)) => Ok(DeviceConfig::NotReady),
        Err(DeviceConfigError::Kube(error)) => Err(DeviceError::Kube(error)),
    }
}

/// The config as a QR code PNG for a Telegram photo (what the WireGuard apps scan).
pub fn qr_png(config: &str) -> Result<Vec<u8>, DeviceError> {
    Ok(wgsub_devices::qr::qr_png(config, QR_PIXELS)?)
}

/// Side of the QR photo, in pixels (at least): Telegram shows photos scaled down.
const QR_PIXELS: u32 = 512;
