//! The agent's own picture of a WireGuard interface: its key, listen port and peers with their
//! allowed IPs, preshared keys and traffic statistics. wireguard-control's `Device` cannot be
//! built outside its crate, so every decision compares against this type instead; a `Device`
//! read from the interface converts into it.

use std::collections::BTreeMap;

use ipnet::IpNet;
use jiff::Timestamp;
use wgsub_crds::keys::{PresharedKey, PublicKey};

use crate::amneziawg::AwgParams;

/// What a peer on the interface is configured with. The allowed IPs are kept sorted and
/// without duplicates (build it with [`PeerConfig::new`]), so equal sets compare equal; a sorted
/// boxed slice costs one small allocation where a tree set costs a whole node per peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerConfig {
    pub allowed_ips: Box<[IpNet]>,
    pub preshared_key: Option<PresharedKey>,
}

impl PeerConfig {
    pub fn new(
        allowed_ips: impl IntoIterator<Item = IpNet>,
        preshared_key: Option<PresharedKey>,
    ) -> Self {
        let mut ips: Vec<IpNet> = allowed_ips.into_iter().collect();
        ips.sort_unstable();
        ips.dedup();
        Self {
            allowed_ips: ips.into_boxed_slice(),
            preshared_key,
        }
    }
}

/// Traffic counters and the latest handshake of a peer, as the interface reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerStats {
    pub last_handshake: Option<Timestamp>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The stats the decoding tests (UAPI and netlink) give their first peer: a handshake at
/// second 1 700 000 000, 200 bytes received and 100 sent.
#[cfg(test)]
pub(crate) const REPORTED_STATS: PeerStats = PeerStats {
    last_handshake: Some(Timestamp::constant(1_700_000_000, 0)),
    rx_bytes: 200,
    tx_bytes: 100,
};

/// One peer on the interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPeer {
    pub config: PeerConfig,
    pub stats: PeerStats,
}

/// The interface as read from the kernel or wireguard-go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceSnapshot {
    /// The public half of the interface's private key; `None` when no key is set.
    pub public_key: Option<PublicKey>,
    pub listen_port: Option<u16>,
    pub peers: BTreeMap<PublicKey, ObservedPeer>,
    /// The AmneziaWG obfuscation parameters; `None` on a WireGuard interface.
    pub params: Option<AwgParams>,
}

impl InterfaceSnapshot {
    /// The peers' configurations, consuming the snapshot (no copies).
    pub fn into_peer_configs(self) -> BTreeMap<PublicKey, PeerConfig> {
        self.peers
            .into_iter()
            .map(|(key, peer)| (key, peer.config))
            .collect()
    }
}

/// A key of all zeros is how both backends report "no preshared key".
fn preshared_key_from(key: Option<&wireguard_control::Key>) -> Option<PresharedKey> {
    let key = key?;
    let bytes: [u8; 32] = key.as_bytes().try_into().ok()?;
    if bytes.iter().all(|b| *b == 0) {
        None
    } else {
        Some(PresharedKey::from_base64(&key.to_base64()).ok()?)
    }
}

fn public_key_from(key: &wireguard_control::Key) -> PublicKey {
    PublicKey::from_bytes(key.0)
}

fn timestamp_from(time: std::time::SystemTime) -> Option<Timestamp> {
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    let seconds = i64::try_from(since.as_secs()).ok()?;
    Timestamp::new(seconds, 0).ok()
}

impl From<&wireguard_control::Device> for InterfaceSnapshot {
    fn from(device: &wireguard_control::Device) -> Self {
        let peers = device
            .peers
            .iter()
            .map(|peer| {
                let config = PeerConfig::new(
                    peer.config
                        .allowed_ips
                        .iter()
                        .filter_map(|ip| IpNet::new(ip.address, ip.cidr).ok()),
                    preshared_key_from(peer.config.preshared_key.as_ref()),
                );
                let stats = PeerStats {
                    last_handshake: peer.stats.last_handshake_time.and_then(timestamp_from),
                    rx_bytes: peer.stats.rx_bytes,
                    tx_bytes: peer.stats.tx_bytes,
                };
                (
                    public_key_from(&peer.config.public_key),
                    ObservedPeer { config, stats },
                )
            })
            .collect();
        let public_key = device
            .private_key
            .as_ref()
            .filter(|key| key.as_bytes().iter().any(|b| *b != 0))
            .map(|key| public_key_from(&key.get_public()));
        InterfaceSnapshot {
            public_key,
            listen_port: device.listen_port.filter(|port| *port != 0),
            peers,
            params: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_preshared_key_means_none() {
        let zero = wireguard_control::Key::zero();
        assert_eq!(preshared_key_from(Some(&zero)), None);
        assert_eq!(preshared_key_from(None), None);
        let psk = PresharedKey::generate();
        let key = wireguard_control::Key(*psk.as_bytes());
        assert_eq!(preshared_key_from(Some(&key)), Some(psk));
    }

    #[test]
    fn handshake_times_convert_to_whole_seconds() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(
            timestamp_from(time),
            Some(Timestamp::from_second(1_700_000_000).unwrap())
        );
    }
}
