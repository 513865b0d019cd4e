//! `WgServer`: one VPN endpoint — a node, its WireGuard interface and its address pool.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::amneziawg::{AmneziaWgSpec, Protocol, block_only_with_amneziawg, s4_within_mtu};
use super::common::{SecretKeyRef, conditions_schema};
use super::location::LocationSpec;

/// Regex of `host:port`: a DNS name, an IPv4 address or a bracketed IPv6 address, and a port
/// 1–65535.
pub(crate) const ENDPOINT_PATTERN: &str = concat!(
    r"^(\[[0-9a-fA-F:.]{2,45}\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)",
    r":([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
);
/// Linux interface names: at most 15 characters, no `/` or whitespace.
const INTERFACE_NAME_PATTERN: &str = r"^[A-Za-z0-9_=+.-]{1,15}$";

/// Desired state of a WireGuard server.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "wgsub.io",
    version = "v1alpha1",
    kind = "WgServer",
    doc = "A WireGuard server: one node's interface, its endpoint and its address pool.",
    plural = "wgservers",
    namespaced,
    status = "WgServerStatus",
    shortname = "wgs",
    category = "wgsub",
    derive = "PartialEq",
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.addressPool"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Peers", type_ = "integer", json_path = ".status.activePeers"),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSync"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.nodeName) || !has(self.spec.nodeSelector)")
        .message("set at most one of spec.nodeName and spec.nodeSelector")
        .field_path(".spec.nodeSelector")
        .reason(kube::core::Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = block_only_with_amneziawg(), validation = s4_within_mtu())]
pub struct WgServerSpec {
    /// `host:port` that clients dial, e.g. `vpn.example.com:51820` or `[2001:db8::1]:51820`.
    #[schemars(length(min = 3, max = 261), regex(pattern = ENDPOINT_PATTERN))]
    pub endpoint: String,

    /// UDP port the interface listens on.
    #[serde(default = "default_listen_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub listen_port: i32,

    /// Name of the WireGuard interface on the node.
    #[serde(default = "default_interface_name")]
    #[schemars(regex(pattern = INTERFACE_NAME_PATTERN))]
    pub interface_name: String,

    /// IPv4 pool in CIDR form (a network address, e.g. `10.8.0.0/24`); the server takes its first
    /// host, clients get the others.
    #[schemars(length(min = 9, max = 18))]
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self).ip().family() == 4 && cidr(self).masked() == cidr(self)")
        .message("addressPool must be an IPv4 network in CIDR form, e.g. 10.8.0.0/24"))]
    pub address_pool: String,

    /// Optional IPv6 pool in CIDR form (a network address, e.g. `fd00:8::/64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 43))]
    #[x_kube(validation = Rule::new("isCIDR(self) && cidr(self).ip().family() == 6 && cidr(self).masked() == cidr(self)")
        .message("addressPool6 must be an IPv6 network in CIDR form, e.g. fd00:8::/64"))]
    pub address_pool6: Option<String>,

    /// DNS servers written into client configs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4), inner(length(min = 2, max = 45)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a))").message("every dns entry must be an IP address"))]
    pub dns: Vec<String>,

    /// Interface MTU; clients get the same value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1280, max = 9000))]
    pub mtu: Option<i32>,

    /// Seconds between keepalive packets clients send (0 or absent: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub persistent_keepalive: Option<i32>,

    /// Routes clients send through the tunnel; absent means everything (`0.0.0.0/0`, `::/0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 9, max = 43)))]
    #[x_kube(validation = Rule::new("self.all(a, isCIDR(a))").message("every clientAllowedIPs entry must be a CIDR"))]
    #[serde(rename = "clientAllowedIPs")]
    pub client_allowed_ips: Vec<String>,

    /// The node whose agent serves this server (set this or `nodeSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node_name: Option<String>,

    /// Labels of the nodes whose agents serve this server (set this or `nodeName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// The Secret key holding the server's private key; the node-agent creates it when missing.
    pub private_key_secret_ref: SecretKeyRef,

    /// NAT: forwarding and masquerading of the pool out of the node's egress interface, and
    /// what clients may reach through the node (only the internet, by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatSpec>,

    /// The protocol: `wireguard` (the default) or `amneziawg` (WireGuard with the obfuscation
    /// of the AmneziaVPN and AmneziaWG apps, for networks that block plain WireGuard).
    #[serde(default, skip_serializing_if = "Protocol::is_wireguard")]
    pub protocol: Protocol,

    /// AmneziaWG parameters (only with `protocol: amneziawg`). Absent ones are chosen at random
    /// by the operator, once, and written here; every client config carries them, so changing
    /// one means every client must import its config again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amneziawg: Option<AmneziaWgSpec>,

    /// How the server is offered to users (name, country, capacity); absent: not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationSpec>,
}

/// NAT options of a server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatSpec {
    /// Masquerade client traffic leaving the node, enable IP forwarding and keep clients to
    /// the internet (the options below). Off, the node-agent writes no firewall rules at all
    /// and the node's own firewall decides what clients reach.
    #[serde(default)]
    pub enabled: bool,
    /// Interface traffic leaves through; absent means the interface of the default route.
    /// Clients' traffic is forwarded out of this interface only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = INTERFACE_NAME_PATTERN))]
    pub egress_interface: Option<String>,
    /// Let clients reach each other through the server (off: each client reaches only the
    /// internet and what the server offers it).
    #[serde(default)]
    pub client_to_client: bool,
    /// Destinations clients may not reach, beyond the ones always refused (private, CGNAT,
    /// link-local, loopback and unique-local ranges), e.g. public addresses of the provider's
    /// own services. IPv4 or IPv6 CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 3, max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) && cidr(c).masked() == cidr(c))")
        .message("every blockedDestinations entry must be a network in CIDR form, e.g. 203.0.113.0/24"))]
    pub blocked_destinations: Vec<String>,
}

/// Observed state of a WireGuard server, written by its node-agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WgServerStatus {
    /// Public key of the interface, which clients put in `[Peer]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::keys::PUBLIC_KEY_PATTERN))]
    pub public_key: Option<String>,
    /// Peers on the interface now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub active_peers: Option<i32>,
    /// When the agent last made the interface match the peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<jiff::Timestamp>,
    /// Standard conditions: `Ready`, and reasons such as `InvalidKey`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn default_listen_port() -> i32 {
    51820
}

fn default_interface_name() -> String {
    "wg0".to_owned()
}
