//! The pure rules about a user's devices (`WgPeer`s): which peers are the caller's, the next
//! device number, the new peer the API creates for an extra device, device names (the shared
//! rules of [`wgsub_crds::devices`] and [`wgsub_devices::manage`]), and the view a user sees:
//! with the protocol of the device's server (which decides the app to install) and whether the
//! device is connected now ([`is_connected`], at the instant the caller passes), and its
//! traffic this period and in total as its subscription's usage counts it
//! ([`wgsub_devices::usage::DeviceTraffic`]).

use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use utoipa::ToSchema;
use wgsub_crds::resources::Protocol;
use wgsub_crds::resources::subscription_name;
use wgsub_crds::{VpnSubscription, WgPeer};
use wgsub_devices::usage::DeviceTraffic;

pub use wgsub_crds::devices::{
    MAX_DEVICE_NAME, clean_device_name, display_device_name, is_connected, required_device_name,
};
pub use wgsub_crds::devices::{device_index, is_users_peer};
pub use wgsub_devices::manage::{new_device_peer, next_device_index, switch_patch};

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
    /// The device is connected now: its last handshake is at most 3 minutes old.
    pub connected: bool,
    /// The config can be downloaded (key and address assigned).
    pub ready: bool,
    pub address: Option<String>,
    /// The device's last WireGuard handshake with the server.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_handshake: Option<Timestamp>,
    /// Bytes the server received from the device (its upload), as the node-agent counts them.
    pub rx_bytes: i64,
    /// Bytes the server sent to the device (its download).
    pub tx_bytes: i64,
    /// Bytes received from the device in the subscription's current period.
    pub period_rx_bytes: i64,
    /// Bytes sent to the device in the current period.
    pub period_tx_bytes: i64,
    /// Bytes received from the device ever (across re-creations of its peer).
    pub total_rx_bytes: i64,
    /// Bytes sent to the device ever.
    pub total_tx_bytes: i64,
    /// The protocol of the device's server (`wireguard` while the server is not known).
    pub protocol: DeviceProtocol,
}

impl DeviceView {
    /// The view of `peer` at `now`, whose server speaks `protocol` (`None`: the server is not
    /// known) and whose subscription counted `traffic` for it.
    pub fn of(
        peer: &WgPeer,
        protocol: Option<Protocol>,
        traffic: DeviceTraffic,
        now: Timestamp,
    ) -> Self {
        let status = peer.status.clone().unwrap_or_default();
        Self {
            name: peer.name_any(),
            device_name: peer.spec.device_name.as_deref().map(display_device_name),
            enabled: peer.spec.enabled,
            active: status.active,
            connected: is_connected(status.last_handshake, now),
            ready: peer.spec.address.is_some() && peer.spec.private_key_secret_ref.is_some(),
            address: peer.spec.address.clone(),
            last_handshake: status.last_handshake,
            rx_bytes: status.rx_bytes,
            tx_bytes: status.tx_bytes,
            period_rx_bytes: traffic.period_rx_bytes,
            period_tx_bytes: traffic.period_tx_bytes,
            total_rx_bytes: traffic.total_rx_bytes,
            total_tx_bytes: traffic.total_tx_bytes,
            protocol: protocol.unwrap_or_default().into(),
        }
    }
}

/// The user's devices in device-number order, at `now`, with their traffic from the user's
/// `subscription`; `protocol_of` gives the protocol of a server by name (`None` when it is not
/// known).
pub fn device_views(
    user_id: i64,
    peers: &[WgPeer],
    subscription: Option<&VpnSubscription>,
    now: Timestamp,
    protocol_of: impl Fn(&str) -> Option<Protocol>,
) -> Vec<DeviceView> {
    let name = subscription_name(user_id);
    let mut mine: Vec<&WgPeer> = peers.iter().filter(|p| is_users_peer(user_id, p)).collect();
    mine.sort_by_key(|p| device_index(&name, &p.name_any()).unwrap_or(u32::MAX));
    mine.into_iter()
        .map(|peer| {
            let traffic = DeviceTraffic::of(subscription, &peer.name_any());
            DeviceView::of(peer, protocol_of(&peer.spec.server), traffic, now)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use wgsub_crds::resources::LABEL_SUBSCRIPTION;
    use wgsub_crds::{WgPeerSpec, WgPeerStatus};

    fn now() -> Timestamp {
        "2026-12-07T12:00:00Z".parse().unwrap()
    }

    fn zero() -> DeviceTraffic {
        DeviceTraffic::default()
    }

    fn peer(name: &str, label: Option<&str>) -> WgPeer {
        let mut peer = WgPeer::new(name, WgPeerSpec::on_server("main"));
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
    fn views_list_only_the_users_devices_in_order() {
        let peers = [
            peer("tg-7-2", Some("tg-7")),
            peer("tg-8-1", Some("tg-8")),
            peer("tg-7-1", Some("tg-7")),
        ];
        let names: Vec<_> = device_views(7, &peers, None, now(), |_| None)
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
        let protocols: Vec<_> = device_views(7, &peers, None, now(), |server| match server {
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
        let main = DeviceView::of(&peers[0], Some(Protocol::Wireguard), zero(), now());
        assert_eq!(main.protocol, DeviceProtocol::Wireguard);
        assert_eq!(
            serde_json::to_value(DeviceView::of(
                &peers[1],
                Some(Protocol::Amneziawg),
                zero(),
                now()
            ))
            .unwrap()["protocol"],
            "amneziawg"
        );
    }

    #[test]
    fn a_device_is_connected_with_a_handshake_of_the_last_three_minutes() {
        let mut device = peer("tg-7-1", Some("tg-7"));
        let view = |device: &WgPeer| DeviceView::of(device, None, zero(), now());
        assert!(!view(&device).connected, "never a handshake");
        for (ago, connected) in [
            (0, true),
            (170, true),
            (180, true),
            (181, false),
            (3600, false),
        ] {
            device.status = Some(WgPeerStatus {
                last_handshake: Some(now() - SignedDuration::from_secs(ago)),
                rx_bytes: 1200,
                tx_bytes: 3400,
                ..WgPeerStatus::default()
            });
            let shown = view(&device);
            assert_eq!(shown.connected, connected, "{ago}s ago");
            assert_eq!((shown.rx_bytes, shown.tx_bytes), (1200, 3400));
        }
        let json = serde_json::to_value(view(&device)).unwrap();
        assert_eq!(json["connected"], false);
        assert!(json["lastHandshake"].is_string());
    }

    #[test]
    fn each_device_shows_the_traffic_its_subscription_counted_for_its_peer() {
        use wgsub_crds::VpnSubscriptionSpec;
        use wgsub_crds::resources::{DeviceUsage, TrafficUsage, VpnSubscriptionStatus};
        let mut subscription = VpnSubscription::new("tg-7", VpnSubscriptionSpec::for_user(7));
        subscription.status = Some(VpnSubscriptionStatus {
            usage: Some(TrafficUsage {
                period_start: now(),
                devices: vec![DeviceUsage {
                    peer: "tg-7-2".into(),
                    period_rx_bytes: 1,
                    period_tx_bytes: 2,
                    total_rx_bytes: 30,
                    total_tx_bytes: 40,
                    ..DeviceUsage::default()
                }],
                ..TrafficUsage::default()
            }),
            ..VpnSubscriptionStatus::default()
        });
        let peers = [peer("tg-7-1", Some("tg-7")), peer("tg-7-2", Some("tg-7"))];
        let views = device_views(7, &peers, Some(&subscription), now(), |_| None);
        let counts: Vec<_> = views
            .iter()
            .map(|v| {
                (
                    v.period_rx_bytes,
                    v.period_tx_bytes,
                    v.total_rx_bytes,
                    v.total_tx_bytes,
                )
            })
            .collect();
        assert_eq!(
            counts,
            [(0, 0, 0, 0), (1, 2, 30, 40)],
            "not counted yet: zero"
        );
        let json = serde_json::to_value(&views[1]).unwrap();
        assert_eq!(
            (&json["periodRxBytes"], &json["totalTxBytes"]),
            (&serde_json::json!(1), &serde_json::json!(40))
        );
    }
}
