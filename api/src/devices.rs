//! The pure rules about a user's devices (`WgPeer`s): which peers are the caller's, the next
//! device number, the new peer the API creates for an extra device, device names, and the view
//! a user sees (with the protocol of the device's server, which decides the app to install).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use wgsub_crds::resources::Protocol;
use wgsub_crds::resources::{
    GROUP, LABEL_SERVER, LABEL_SUBSCRIPTION, VERSION, peer_name, subscription_name,
};
use wgsub_crds::{VpnSubscription, WgPeer, WgPeerSpec};

pub use wgsub_crds::devices::{MAX_DEVICE_NAME, clean_device_name, display_device_name};
pub use wgsub_crds::devices::{device_index, is_users_peer};

/// The smallest device number ≥ 1 not used by `existing`.
pub fn next_device_index<'a>(
    subscription: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> u32 {
    let used: std::collections::BTreeSet<u32> = existing
        .into_iter()
        .filter_map(|name| device_index(subscription, name))
        .collect();
    (1..).find(|n| !used.contains(n)).unwrap_or(1)
}

/// The `WgPeer` the API creates for an extra device: labels, an owner reference to the
/// subscription, the server, enabled, the name — no key and no address (the operator fills
/// them in).
pub fn new_device_peer(
    subscription: &VpnSubscription,
    index: u32,
    server: &str,
    device_name: Option<String>,
) -> WgPeer {
    let sub_name = subscription.name_any();
    let labels = BTreeMap::from([
        (LABEL_SUBSCRIPTION.to_owned(), sub_name.clone()),
        (LABEL_SERVER.to_owned(), server.to_owned()),
    ]);
    let owner = OwnerReference {
        api_version: VpnSubscription::api_version(&()).into_owned(),
        kind: VpnSubscription::kind(&()).into_owned(),
        name: sub_name.clone(),
        uid: subscription.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    WgPeer {
        metadata: ObjectMeta {
            name: Some(peer_name(&sub_name, index)),
            namespace: subscription.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: WgPeerSpec {
            server: server.to_owned(),
            public_key: None,
            private_key_secret_ref: None,
            preshared_key_secret_ref: None,
            address: None,
            address6: None,
            expires_at: None,
            enabled: true,
            device_name,
        },
        status: None,
    }
}

/// The server-side-apply patch of the user's switch and name on a peer (the fields the API
/// owns). Both are always sent, so the API's ownership of them never lapses; a removed name is
/// sent as `null` (the field is nullable), not left out: leaving it out would remove it only
/// when the API's applies alone own it, and the API's create of a device peer owns it as an
/// update, so the name would stay.
pub fn switch_patch(name: &str, enabled: bool, device_name: Option<&str>) -> serde_json::Value {
    let spec = json!({"enabled": enabled, "deviceName": device_name});
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "WgPeer",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The protocol a device's server speaks, as the API shows it: the Mini App tells the user which
/// app imports the config (the WireGuard app, or AmneziaVPN / AmneziaWG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceProtocol {
    /// Plain WireGuard: the official WireGuard apps.
    Wireguard,
    /// AmneziaWG: the AmneziaVPN or AmneziaWG apps (the WireGuard app cannot connect).
    Amneziawg,
}

impl From<Protocol> for DeviceProtocol {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Wireguard => DeviceProtocol::Wireguard,
            Protocol::Amneziawg => DeviceProtocol::Amneziawg,
        }
    }
}

/// One device as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    /// The peer's name (`tg-<id>-<n>`), used in the device URLs.
    pub name: String,
    pub device_name: Option<String>,
    /// The user's connect/disconnect switch.
    pub enabled: bool,
    /// The peer is on the interface now.
    pub active: bool,
    /// The config can be downloaded (key and address assigned).
    pub ready: bool,
    pub address: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_handshake: Option<Timestamp>,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    /// The protocol of the device's server (`wireguard` while the server is not known).
    pub protocol: DeviceProtocol,
}

impl DeviceView {
    /// The view of `peer`, whose server speaks `protocol` (`None`: the server is not known).
    pub fn of(peer: &WgPeer, protocol: Option<Protocol>) -> Self {
        let status = peer.status.clone().unwrap_or_default();
        Self {
            name: peer.name_any(),
            device_name: peer.spec.device_name.as_deref().map(display_device_name),
            enabled: peer.spec.enabled,
            active: status.active,
            ready: peer.spec.address.is_some() && peer.spec.private_key_secret_ref.is_some(),
            address: peer.spec.address.clone(),
            last_handshake: status.last_handshake,
            rx_bytes: status.rx_bytes,
            tx_bytes: status.tx_bytes,
            protocol: protocol.unwrap_or_default().into(),
        }
    }
}

/// The user's devices in device-number order; `protocol_of` gives the protocol of a server by
/// name (`None` when it is not known).
pub fn device_views(
    user_id: i64,
    peers: &[WgPeer],
    protocol_of: impl Fn(&str) -> Option<Protocol>,
) -> Vec<DeviceView> {
    let subscription = subscription_name(user_id);
    let mut mine: Vec<&WgPeer> = peers.iter().filter(|p| is_users_peer(user_id, p)).collect();
    mine.sort_by_key(|p| device_index(&subscription, &p.name_any()).unwrap_or(u32::MAX));
    mine.into_iter()
        .map(|peer| DeviceView::of(peer, protocol_of(&peer.spec.server)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::VpnSubscriptionSpec;

    fn peer(name: &str, label: Option<&str>) -> WgPeer {
        let mut peer = WgPeer::new(
            name,
            WgPeerSpec {
                server: "main".into(),
                public_key: None,
                private_key_secret_ref: None,
                preshared_key_secret_ref: None,
                address: None,
                address6: None,
                expires_at: None,
                enabled: true,
                device_name: None,
            },
        );
        if let Some(label) = label {
            peer.labels_mut()
                .insert(LABEL_SUBSCRIPTION.into(), label.into());
        }
        peer
    }

    #[test]
    fn a_peer_is_the_users_only_by_name_and_label_together() {
        assert!(is_users_peer(42, &peer("tg-42-1", Some("tg-42"))));
        assert!(!is_users_peer(42, &peer("tg-42-1", Some("tg-43"))));
        assert!(!is_users_peer(42, &peer("tg-43-1", Some("tg-42"))));
        assert!(!is_users_peer(42, &peer("tg-42-1", None)));
        assert!(!is_users_peer(4, &peer("tg-42-1", Some("tg-4"))));
        assert!(!is_users_peer(42, &peer("tg-421-1", Some("tg-42"))));
    }

    #[test]
    fn device_numbers_parse_strictly() {
        assert_eq!(device_index("tg-42", "tg-42-3"), Some(3));
        for bad in [
            "tg-42",
            "tg-42-",
            "tg-42-03",
            "tg-42-x",
            "tg-421-1",
            "tg-42-1-2",
        ] {
            assert_eq!(device_index("tg-42", bad), None, "{bad}");
        }
    }

    #[test]
    fn the_next_device_fills_the_first_gap() {
        assert_eq!(next_device_index("tg-1", []), 1);
        assert_eq!(next_device_index("tg-1", ["tg-1-1", "tg-1-2"]), 3);
        assert_eq!(next_device_index("tg-1", ["tg-1-1", "tg-1-3"]), 2);
        assert_eq!(next_device_index("tg-1", ["tg-1-2", "other"]), 1);
    }

    #[test]
    fn a_new_device_peer_is_labelled_owned_and_keyless() {
        let mut subscription = VpnSubscription::new("tg-42", VpnSubscriptionSpec::for_user(42));
        subscription.metadata.uid = Some("uid-1".into());
        subscription.metadata.namespace = Some("wgsub".into());
        let peer = new_device_peer(&subscription, 2, "main", Some("Laptop".into()));
        assert_eq!(peer.name_any(), "tg-42-2");
        assert_eq!(peer.namespace().as_deref(), Some("wgsub"));
        assert_eq!(peer.labels()[LABEL_SUBSCRIPTION], "tg-42");
        assert_eq!(peer.labels()[LABEL_SERVER], "main");
        let owner = &peer.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("VpnSubscription", "tg-42", "uid-1")
        );
        assert_eq!(owner.api_version, "wgsub.io/v1alpha1");
        assert!(peer.spec.public_key.is_none() && peer.spec.address.is_none());
        assert!(peer.spec.enabled);
        assert!(is_users_peer(42, &peer));
    }

    #[test]
    fn the_switch_patch_carries_only_the_apis_fields() {
        assert_eq!(
            switch_patch("tg-1-1", false, Some("Phone")),
            json!({"apiVersion": "wgsub.io/v1alpha1", "kind": "WgPeer",
                   "metadata": {"name": "tg-1-1"},
                   "spec": {"enabled": false, "deviceName": "Phone"}})
        );
        assert_eq!(
            switch_patch("tg-1-1", true, None)["spec"],
            json!({"enabled": true, "deviceName": null})
        );
    }

    #[test]
    fn views_list_only_the_users_devices_in_order() {
        let peers = [
            peer("tg-7-2", Some("tg-7")),
            peer("tg-8-1", Some("tg-8")),
            peer("tg-7-1", Some("tg-7")),
        ];
        let names: Vec<_> = device_views(7, &peers, |_| None)
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["tg-7-1", "tg-7-2"]);
    }

    #[test]
    fn a_device_shows_its_servers_protocol_and_wireguard_when_the_server_is_unknown() {
        let mut on_amnezia = peer("tg-7-2", Some("tg-7"));
        on_amnezia.spec.server = "awg".into();
        let peers = [peer("tg-7-1", Some("tg-7")), on_amnezia];
        let protocols: Vec<_> = device_views(7, &peers, |server| match server {
            "awg" => Some(Protocol::Amneziawg),
            _ => None,
        })
        .into_iter()
        .map(|v| v.protocol)
        .collect();
        assert_eq!(
            protocols,
            [DeviceProtocol::Wireguard, DeviceProtocol::Amneziawg]
        );
        let main = DeviceView::of(&peers[0], Some(Protocol::Wireguard));
        assert_eq!(main.protocol, DeviceProtocol::Wireguard);
        assert_eq!(
            serde_json::to_value(DeviceView::of(&peers[1], Some(Protocol::Amneziawg))).unwrap()["protocol"],
            "amneziawg"
        );
    }
}
