//! The wgsub resources tests build again and again, built in one place (feature `fixtures`): a
//! WgServer with a pool and a key Secret, a paid VpnSubscription of a Telegram user, a ready
//! WgPeer of a subscription on a server, a peer's key Secret as the operator labels it, and the
//! server status the node-agent publishes once it made the server's key.
//!
//! The builders are plain values, so a test changes the one field it is about (a namespace, a
//! device name, an expiry) on what it gets and writes it itself; only [`publish_server_key`]
//! talks to the API server. Every key is made fresh by the caller: no key is a fixture.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde_json::{Value, json};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{LABEL_PEER, LABEL_SUBSCRIPTION, subscription_name};
use wgsub_crds::{
    SecretKeyRef, VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec, WgServer, WgServerSpec,
};

/// Where clients of every fixture server dial it.
pub const ENDPOINT: &str = "vpn.example.com:51820";

/// The field of a key Secret that holds the private key (the operator's and node-agent's).
pub const PRIVATE_KEY_FIELD: &str = "privateKey";

/// The field manager [`publish_server_key`] writes a server's status with, standing in for the
/// node-agent.
pub const AGENT_MANAGER: &str = "wgsub-test-agent";

/// The name of the Secret holding the private key of `owner` (a server or a peer):
/// `<owner>-key`.
pub fn key_secret_name(owner: &str) -> String {
    format!("{owner}-key")
}

/// The WgServer `name`: clients dial [`ENDPOINT`], interface `wg0` listens on 51820, client
/// addresses come from the IPv4 `pool`, and its private key is (or will be) in the Secret
/// [`key_secret_name`]`(name)`. Nothing optional is set.
pub fn server(name: &str, pool: &str) -> WgServer {
    WgServer::new(
        name,
        WgServerSpec {
            endpoint: ENDPOINT.into(),
            listen_port: 51820,
            interface_name: "wg0".into(),
            address_pool: pool.into(),
            address_pool6: None,
            dns: vec![],
            mtu: None,
            persistent_keepalive: None,
            client_allowed_ips: vec![],
            node_name: None,
            node_selector: None,
            private_key_secret_ref: SecretKeyRef::new(key_secret_name(name), PRIVATE_KEY_FIELD),
            nat: None,
            protocol: Default::default(),
            amneziawg: None,
            location: None,
        },
    )
}

/// The server-side apply body of a WgServer status that publishes `public_key`, as the
/// node-agent writes it once it made the server's key.
pub fn server_status_with_key(public_key: &str) -> Value {
    json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgServer",
        "status": {"publicKey": public_key}
    })
}

/// Publishes a fresh public key in the status of the WgServer `name` (through the status
/// subresource, as the node-agent does) and returns the server as written.
pub async fn publish_server_key(servers: &Api<WgServer>, name: &str) -> WgServer {
    let status = server_status_with_key(&PrivateKey::generate().public_key().to_base64());
    servers
        .patch_status(
            name,
            &PatchParams::apply(AGENT_MANAGER),
            &Patch::Apply(&status),
        )
        .await
        .unwrap_or_else(|error| panic!("publishing the key of WgServer {name}: {error}"))
}

/// The VpnSubscription `tg-<telegram_id>` of a user who has paid until `paid_until`; every
/// other field as the bot creates it.
pub fn paid_subscription(telegram_id: i64, paid_until: Timestamp) -> VpnSubscription {
    let mut spec = VpnSubscriptionSpec::for_user(telegram_id);
    spec.paid_until = Some(paid_until);
    VpnSubscription::new(&subscription_name(telegram_id), spec)
}

/// The WgPeer `name` of `subscription` on `server` as the operator leaves a ready one: labelled
/// with its subscription, `key`'s public half published, the private half referenced in the
/// Secret [`key_secret_name`]`(name)` (see [`key_secret`]), `address` assigned, enabled. No
/// expiry and no device name.
pub fn peer(
    name: &str,
    subscription: &str,
    server: &str,
    key: &PrivateKey,
    address: &str,
) -> WgPeer {
    let mut peer = WgPeer::new(
        name,
        WgPeerSpec {
            server: server.into(),
            public_key: Some(key.public_key().to_base64()),
            private_key_secret_ref: Some(SecretKeyRef::new(
                key_secret_name(name),
                PRIVATE_KEY_FIELD,
            )),
            preshared_key_secret_ref: None,
            address: Some(address.into()),
            address6: None,
            expires_at: None,
            enabled: true,
            device_name: None,
        },
    );
    peer.metadata.labels = Some(BTreeMap::from([(
        LABEL_SUBSCRIPTION.to_owned(),
        subscription.to_owned(),
    )]));
    peer
}

/// The Secret [`key_secret_name`]`(peer)` holding `key` in [`PRIVATE_KEY_FIELD`], labelled with
/// its peer ([`LABEL_PEER`]) as the operator labels the keys it writes — the label the api, the
/// bot and the node-agent find a peer's key by.
pub fn key_secret(peer: &str, key: &PrivateKey) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(key_secret_name(peer)),
            labels: Some(BTreeMap::from([(LABEL_PEER.to_owned(), peer.to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            PRIVATE_KEY_FIELD.to_owned(),
            ByteString(key.to_base64().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_takes_its_key_from_the_secret_named_after_it() {
        let server = server("main", "10.8.0.0/24");
        assert_eq!(server.metadata.name.as_deref(), Some("main"));
        assert_eq!(server.spec.address_pool, "10.8.0.0/24");
        assert_eq!(server.spec.endpoint, ENDPOINT);
        assert_eq!(
            server.spec.private_key_secret_ref,
            SecretKeyRef::new("main-key", "privateKey")
        );
    }

    #[test]
    fn a_paid_subscription_is_named_for_its_user_and_paid_until_the_given_time() {
        let until: Timestamp = "2026-07-01T00:00:00Z".parse().unwrap();
        let sub = paid_subscription(42, until);
        assert_eq!(sub.metadata.name.as_deref(), Some("tg-42"));
        assert_eq!(sub.spec.telegram_user_id, 42);
        assert_eq!(sub.spec.paid_until, Some(until));
    }

    #[test]
    fn a_peer_and_its_key_secret_carry_the_same_key_and_name_each_other() {
        let key = PrivateKey::generate();
        let peer = peer("tg-42-1", "tg-42", "main", &key, "10.8.0.2/32");
        let secret = key_secret("tg-42-1", &key);
        let reference = peer.spec.private_key_secret_ref.as_ref().unwrap();
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some(reference.name.as_str())
        );
        let stored = &secret.data.as_ref().unwrap()[&reference.key].0;
        let stored = PrivateKey::from_base64(std::str::from_utf8(stored).unwrap()).unwrap();
        assert_eq!(
            peer.spec.public_key,
            Some(stored.public_key().to_base64()),
            "the published key is the stored key's public half"
        );
        assert_eq!(
            secret.metadata.labels.unwrap()[LABEL_PEER],
            "tg-42-1",
            "the key is labelled with its peer"
        );
        assert_eq!(peer.metadata.labels.unwrap()[LABEL_SUBSCRIPTION], "tg-42");
        assert!(peer.spec.enabled);
    }
}
