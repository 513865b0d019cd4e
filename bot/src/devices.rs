//! A user's devices as the cluster has them: their `WgPeer`s (found by the subscription label),
//! and a device's client config rendered from the peer, its key `Secret` and its `WgServer`
//! with the pure [`wgsub_crds::config::ClientConfig`], plus the config's QR code as PNG.

use std::io::Cursor;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use wgsub_crds::config::{ClientConfig, config_file_name};
use wgsub_crds::keys::{PresharedKey, PrivateKey, PublicKey};
use wgsub_crds::resources::{LABEL_SUBSCRIPTION, subscription_name};
use wgsub_crds::{SecretKeyRef, WgPeer, WgServer};

/// A Kubernetes read failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("reading from Kubernetes failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("the QR code could not be made: {0}")]
    Qr(String),
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
    let owner = subscription_name(user_id);
    Ok(api.get_opt(name).await?.filter(|peer| {
        peer.metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(LABEL_SUBSCRIPTION))
            == Some(&owner)
    }))
}

/// What users call a device: its name, or the peer's name when it has none.
pub fn device_label(peer: &WgPeer) -> String {
    peer.spec
        .device_name
        .clone()
        .or_else(|| peer.metadata.name.clone())
        .unwrap_or_default()
}

/// A device's config file, or why there is none yet.
#[derive(Debug)]
pub enum DeviceConfig {
    Ready {
        file_name: String,
        /// The `.conf` text (holds the private key: send it, never log it).
        text: Vec<u8>,
    },
    /// The peer has no address, key or server key yet (the operator or agent is not done), or
    /// the user brought their own key.
    NotReady,
}

async fn secret_value(
    client: &kube::Client,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<Option<String>, DeviceError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_opt(&reference.name).await? else {
        return Ok(None);
    };
    Ok(secret
        .data
        .and_then(|mut data| data.remove(&reference.key))
        .and_then(|bytes| String::from_utf8(bytes.0).ok()))
}

/// Renders the peer's client config from the cluster's state.
pub async fn device_config(
    client: &kube::Client,
    namespace: &str,
    peer: &WgPeer,
) -> Result<DeviceConfig, DeviceError> {
    let Some(key_ref) = &peer.spec.private_key_secret_ref else {
        return Ok(DeviceConfig::NotReady);
    };
    let servers: Api<WgServer> = Api::namespaced(client.clone(), namespace);
    let Some(server) = servers.get_opt(&peer.spec.server).await? else {
        return Ok(DeviceConfig::NotReady);
    };
    let server_key = server
        .status
        .as_ref()
        .and_then(|status| status.public_key.as_deref())
        .and_then(|key| PublicKey::from_base64(key).ok());
    let Some(private_key) = secret_value(client, namespace, key_ref)
        .await?
        .and_then(|text| PrivateKey::from_base64(&text).ok())
    else {
        return Ok(DeviceConfig::NotReady);
    };
    let preshared_key = match &peer.spec.preshared_key_secret_ref {
        Some(reference) => match secret_value(client, namespace, reference)
            .await?
            .and_then(|text| PresharedKey::from_base64(&text).ok())
        {
            Some(key) => Some(key),
            None => return Ok(DeviceConfig::NotReady),
        },
        None => None,
    };
    let Ok(config) = ClientConfig::for_peer(
        &server.spec,
        server_key,
        &peer.spec,
        private_key,
        preshared_key,
    ) else {
        return Ok(DeviceConfig::NotReady);
    };
    let peer_name = peer.metadata.name.clone().unwrap_or_default();
    Ok(DeviceConfig::Ready {
        file_name: config_file_name(peer.spec.device_name.as_deref(), &peer_name),
        text: config.render().as_bytes().to_vec(),
    })
}

/// The config as a QR code PNG (what the WireGuard apps scan).
pub fn qr_png(config: &[u8]) -> Result<Vec<u8>, DeviceError> {
    let code = qrcode::QrCode::new(config).map_err(|e| DeviceError::Qr(e.to_string()))?;
    let image = code
        .render::<image::Luma<u8>>()
        .min_dimensions(512, 512)
        .build();
    let mut png = Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| DeviceError::Qr(e.to_string()))?;
    Ok(png.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_codes_are_png_images() {
        let png = qr_png(b"[Interface]\nAddress = 10.8.0.2/32\n").unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let decoded = image::load_from_memory(&png).unwrap();
        assert!(decoded.width() >= 512);
    }
}
