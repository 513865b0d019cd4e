//! `WgPeer`: one device of one subscription — its key, its address in the server's pool and
//! until when it may be on the interface.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    LABEL_OVER_LIMIT, LABEL_OVER_QUOTA, OBJECT_NAME_PATTERN, SecretKeyRef, conditions_schema,
};

/// The name of a subscription's `index`-th device (1-based): `<subscription>-<index>`.
pub fn peer_name(subscription: &str, index: u32) -> String {
    format!("{subscription}-{index}")
}

/// Whether the operator keeps the peer off the interface because its subscription's
/// `maxDevices` has no room for it (the [`LABEL_OVER_LIMIT`] label is `"true"`).
pub fn is_over_limit(peer: &WgPeer) -> bool {
    label_is_true(peer, LABEL_OVER_LIMIT)
}

/// Whether the operator keeps the peer off the interface because its subscription used up its
/// data quota for the period (the [`LABEL_OVER_QUOTA`] label is `"true"`).
pub fn is_over_quota(peer: &WgPeer) -> bool {
    label_is_true(peer, LABEL_OVER_QUOTA)
}

fn label_is_true(peer: &WgPeer, label: &str) -> bool {
    peer.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(label))
        .is_some_and(|value| value == "true")
}

/// Desired state of one device.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "wgsub.io",
    version = "v1alpha1",
    kind = "WgPeer",
    doc = "One device of a subscription: its key, address and expiry.",
    plural = "wgpeers",
    namespaced,
    status = "WgPeerStatus",
    shortname = "wgp",
    category = "wgsub",
    derive = "PartialEq",
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server"),
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".spec.expiresAt"),
    printcolumn(name = "Last Handshake", type_ = "date", json_path = ".status.lastHandshake"),
    printcolumn(name = "Device", type_ = "string", json_path = ".spec.deviceName", priority = 1),
    validation = Rule::new("!has(self.spec.privateKeySecretRef) || has(self.spec.publicKey)")
        .message("a peer with privateKeySecretRef must also have publicKey")
        .field_path(".spec.publicKey")
        .reason(kube::core::Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct WgPeerSpec {
    /// The `WgServer` this peer connects to.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub server: String,

    /// The device's WireGuard public key (base64 of 32 bytes); absent until assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::keys::PUBLIC_KEY_PATTERN))]
    pub public_key: Option<String>,

    /// Where the private key lives; absent when the user brought their own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_secret_ref: Option<SecretKeyRef>,

    /// Where the preshared key lives, when the peer has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key_secret_ref: Option<SecretKeyRef>,

    /// The device's IPv4 address in the server's pool, as a /32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 18))]
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self).ip().family() == 4 && cidr(self).prefixLength() == 32")
        .message("address must be an IPv4 address with /32, e.g. 10.8.0.2/32"))]
    pub address: Option<String>,

    /// The device's IPv6 address, as a /128, when the server has an IPv6 pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 6, max = 43))]
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self).ip().family() == 6 && cidr(self).prefixLength() == 128")
        .message("address6 must be an IPv6 address with /128, e.g. fd00:8::2/128"))]
    pub address6: Option<String>,

    /// The peer may be on the interface until this instant (mirrors the subscription's
    /// `paidUntil`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,

    /// The user's connect/disconnect switch.
    #[serde(default = "default_enabled")]
    pub enabled: bool,

    /// A name the user gave the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub device_name: Option<String>,
}

fn default_enabled() -> bool {
    true
}

/// Observed state of a peer, written by the node-agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WgPeerStatus {
    /// The peer is on the interface now.
    #[serde(default)]
    pub active: bool,
    /// The latest handshake the interface saw from this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handshake: Option<jiff::Timestamp>,
    /// Bytes received from the peer.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub rx_bytes: i64,
    /// Bytes sent to the peer.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub tx_bytes: i64,
    /// Standard conditions: `Ready`, and reasons such as `Conflict` and `OutOfPool`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;

    fn peer(label: Option<&str>) -> WgPeer {
        labelled(LABEL_OVER_LIMIT, label)
    }

    fn labelled(name: &str, label: Option<&str>) -> WgPeer {
        let mut peer: WgPeer = serde_json::from_value(serde_json::json!({
            "apiVersion": "wgsub.io/v1alpha1",
            "kind": "WgPeer",
            "metadata": {"name": "tg-1-1", "labels": {"wgsub.io/subscription": "tg-1"}},
            "spec": {"server": "wg"},
        }))
        .unwrap();
        if let Some(value) = label {
            peer.labels_mut().insert(name.to_owned(), value.to_owned());
        }
        peer
    }

    #[test]
    fn only_the_over_limit_label_set_to_true_keeps_a_peer_off() {
        assert!(is_over_limit(&peer(Some("true"))));
        for other in [None, Some("false"), Some(""), Some("True")] {
            assert!(!is_over_limit(&peer(other)), "{other:?}");
        }
    }

    #[test]
    fn only_the_over_quota_label_set_to_true_keeps_a_peer_off_for_the_quota() {
        assert!(is_over_quota(&labelled(LABEL_OVER_QUOTA, Some("true"))));
        assert!(!is_over_quota(&labelled(LABEL_OVER_LIMIT, Some("true"))));
        assert!(!is_over_limit(&labelled(LABEL_OVER_QUOTA, Some("true"))));
        for other in [None, Some("false"), Some(""), Some("True")] {
            assert!(
                !is_over_quota(&labelled(LABEL_OVER_QUOTA, other)),
                "{other:?}"
            );
        }
    }
}
