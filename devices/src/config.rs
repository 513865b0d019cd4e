//! Reading what a device's client config needs from the cluster — the peer's `WgServer` and its
//! private (and preshared) key `Secret`s — and rendering it with the pure
//! [`wgsub_crds::config::ClientConfig`]. It knows nothing of users, HTTP or Telegram: callers
//! (the api's config and QR endpoints, the bot's `/config`) check that the peer is the caller's
//! and the subscription active first.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use wgsub_crds::config::{ClientConfig, config_file_name};
use wgsub_crds::keys::{PresharedKey, PrivateKey, PublicKey};
use wgsub_crds::{SecretKeyRef, WgPeer, WgServer};
use zeroize::Zeroizing;

/// A device's rendered config.
pub struct RenderedConfig {
    /// The `.conf` text (holds the private key: send it, never log it).
    pub text: Zeroizing<String>,
    /// The download file name (`wgsub-<device>.conf`).
    pub file_name: String,
}

impl std::fmt::Debug for RenderedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedConfig")
            .field("text", &"<redacted>")
            .field("file_name", &self.file_name)
            .finish()
    }
}

/// Why there is no config.
#[derive(Debug, thiserror::Error)]
pub enum DeviceConfigError {
    /// A Kubernetes read failed.
    #[error("reading from Kubernetes failed: {0}")]
    Kube(#[from] kube::Error),
    /// The peer is not ready yet (no key held by wgsub, no server or server key, no address,
    /// a key Secret missing or malformed); says which.
    #[error("{0}")]
    NotReady(String),
}

fn not_ready(message: impl Into<String>) -> DeviceConfigError {
    DeviceConfigError::NotReady(message.into())
}

/// The value at `key_ref` in its Secret, trimmed; `None` when the Secret or key is missing or
/// not UTF-8.
async fn secret_value(
    secrets: &Api<Secret>,
    key_ref: &SecretKeyRef,
) -> Result<Option<Zeroizing<String>>, kube::Error> {
    let secret = secrets.get_opt(&key_ref.name).await?;
    Ok(secret.as_ref().and_then(|secret| {
        let bytes = secret.data.as_ref()?.get(&key_ref.key)?;
        std::str::from_utf8(&bytes.0)
            .ok()
            .map(|text| Zeroizing::new(text.trim().to_owned()))
    }))
}

/// Reads the peer's server and key Secrets (from `servers` and `secrets`, the peer's
/// namespace) and renders its config; the file name is made from the device name, or from
/// `fallback_name` when the device has none.
pub async fn render_device_config(
    servers: &Api<WgServer>,
    secrets: &Api<Secret>,
    peer: &WgPeer,
    fallback_name: &str,
) -> Result<RenderedConfig, DeviceConfigError> {
    let key_ref = peer
        .spec
        .private_key_secret_ref
        .as_ref()
        .ok_or_else(|| not_ready("this device has no key held by wgsub"))?;
    let server = servers
        .get_opt(&peer.spec.server)
        .await?
        .ok_or_else(|| not_ready("the device's server does not exist yet"))?;
    let server_key = server
        .status
        .as_ref()
        .and_then(|status| status.public_key.as_deref())
        .and_then(|key| PublicKey::from_base64(key).ok());
    let private_key = secret_value(secrets, key_ref)
        .await?
        .and_then(|text| PrivateKey::from_base64(&text).ok())
        .ok_or_else(|| not_ready("the device's key is not ready yet"))?;
    let preshared_key = match &peer.spec.preshared_key_secret_ref {
        Some(psk_ref) => Some(
            secret_value(secrets, psk_ref)
                .await?
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
        file_name: config_file_name(peer.spec.device_name.as_deref(), fallback_name),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use kube::api::{ObjectMeta, PostParams};
    use serde_json::json;
    use wgsub_crds::{WgPeerSpec, WgServerStatus};

    use super::*;

    const NS: &str = "wgsub";

    fn server(with_key: bool) -> WgServer {
        let mut server = WgServer::new(
            "main",
            serde_json::from_value(json!({
                "endpoint": "vpn.example.com:51820",
                "addressPool": "10.8.0.0/24",
                "privateKeySecretRef": {"name": "main-key"}
            }))
            .unwrap(),
        );
        server.metadata.namespace = Some(NS.into());
        server.status = Some(WgServerStatus {
            public_key: with_key.then(|| PrivateKey::generate().public_key().to_base64()),
            ..WgServerStatus::default()
        });
        server
    }

    fn peer(key_secret: Option<&str>) -> WgPeer {
        let mut peer = WgPeer::new(
            "tg-1-1",
            WgPeerSpec {
                server: "main".into(),
                public_key: None,
                private_key_secret_ref: key_secret
                    .map(|name| SecretKeyRef::new(name, "privateKey")),
                preshared_key_secret_ref: None,
                address: Some("10.8.0.2/32".into()),
                address6: None,
                expires_at: None,
                enabled: true,
                device_name: Some("My Phone".into()),
            },
        );
        peer.metadata.namespace = Some(NS.into());
        peer
    }

    async fn cluster(server: Option<WgServer>, key: Option<&PrivateKey>) -> kube::Client {
        let mut builder = kube_fake_client::ClientBuilder::new().with_resource::<WgServer>();
        if let Some(server) = server {
            builder = builder.with_object(server);
        }
        let client = builder.build().await.unwrap();
        if let Some(key) = key {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some("tg-1-1-key".into()),
                    namespace: Some(NS.into()),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "privateKey".to_owned(),
                    ByteString(key.to_base64().as_bytes().to_vec()),
                )])),
                ..Secret::default()
            };
            Api::<Secret>::namespaced(client.clone(), NS)
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
        }
        client
    }

    async fn render(
        client: &kube::Client,
        peer: &WgPeer,
    ) -> Result<RenderedConfig, DeviceConfigError> {
        render_device_config(
            &Api::namespaced(client.clone(), NS),
            &Api::namespaced(client.clone(), NS),
            peer,
            "1",
        )
        .await
    }

    #[tokio::test]
    async fn a_ready_peer_renders_its_config_and_file_name() {
        let key = PrivateKey::generate();
        let client = cluster(Some(server(true)), Some(&key)).await;
        let rendered = render(&client, &peer(Some("tg-1-1-key"))).await.unwrap();
        assert!(
            rendered
                .text
                .contains(&format!("PrivateKey = {}", key.to_base64().as_str()))
        );
        assert!(rendered.text.contains("Endpoint = vpn.example.com:51820"));
        assert_eq!(rendered.file_name, "wgsub-My-Phone.conf");
        assert!(!format!("{rendered:?}").contains(key.to_base64().as_str()));
    }

    #[tokio::test]
    async fn each_missing_piece_is_named_as_not_ready() {
        let key = PrivateKey::generate();
        let cases = [
            (
                cluster(Some(server(true)), Some(&key)).await,
                None,
                "no key held by wgsub",
            ),
            (
                cluster(None, Some(&key)).await,
                Some("tg-1-1-key"),
                "server does not exist",
            ),
            (
                cluster(Some(server(false)), Some(&key)).await,
                Some("tg-1-1-key"),
                "server",
            ),
            (
                cluster(Some(server(true)), None).await,
                Some("tg-1-1-key"),
                "key is not ready",
            ),
        ];
        for (client, secret, expected) in cases {
            match render(&client, &peer(secret)).await {
                Err(DeviceConfigError::NotReady(message)) => {
                    assert!(message.contains(expected), "{message} ∌ {expected}");
                }
                other => panic!("expected NotReady({expected}), got {other:?}"),
            }
        }
    }
}
