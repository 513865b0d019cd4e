//! The addresses in use on one `WgServer`, derived from the peers that exist, and the
//! claim/release bookkeeping that keeps two allocations from ever handing out the same address.
//!
//! Pure data: the shell keeps one [`UsedAddresses`] per server behind a per-server lock (see
//! `pools`), the reconcile decision claims from it.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Bound;

use ipnet::{Ipv4Net, Ipv6Net};
use kube::ResourceExt;
use wgsub_crds::WgPeer;
use wgsub_crds::pool::{self, PoolError};

/// Every address held by a peer of one server, and which peer holds it.
///
/// When two peers carry the same address (only possible by hand-editing), the one created first
/// (then: the lower name) holds it; the other's address counts as taken, so the reconcile
/// decision gives that other peer a fresh one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsedAddresses {
    v4: BTreeSet<Ipv4Addr>,
    v6: BTreeSet<Ipv6Addr>,
    owner_v4: HashMap<Ipv4Addr, String>,
    owner_v6: HashMap<Ipv6Addr, String>,
    /// Per pool, an address every client address below which is held: the lowest free address
    /// is at or above it, so allocation walks from here instead of from the pool's start.
    low_water_v4: HashMap<Ipv4Net, Ipv4Addr>,
}

/// The address is a client address of the pool: inside it and neither the network, the
/// broadcast (below /31) nor the server's address.
pub fn is_client_v4(pool: Ipv4Net, address: Ipv4Addr) -> bool {
    pool.contains(&address)
        && address != pool::server_address_v4(pool)
        && (pool.prefix_len() >= 31 || (address != pool.network() && address != pool.broadcast()))
}

/// The address is a client address of the IPv6 pool: inside it and neither the subnet-router
/// anycast address nor the server's address.
pub fn is_client_v6(pool: Ipv6Net, address: Ipv6Addr) -> bool {
    pool.contains(&address) && address != pool.network() && address != pool::server_address_v6(pool)
}

impl UsedAddresses {
    /// The addresses of the peers whose `spec.server` is `server`; peers of other servers and
    /// address texts that are not a host address are ignored.
    pub fn from_peers<'a>(server: &str, peers: impl IntoIterator<Item = &'a WgPeer>) -> Self {
        let mut ours: Vec<&WgPeer> = peers
            .into_iter()
            .filter(|peer| peer.spec.server == server)
            .collect();
        ours.sort_by(|a, b| {
            let created = |p: &WgPeer| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });
        let mut used = Self::default();
        for peer in ours {
            let name = peer.name_any();
            if let Some(v4) = peer.spec.address.as_deref().and_then(pool::parse_host_v4) {
                used.claim_v4(v4, &name);
            }
            if let Some(v6) = peer.spec.address6.as_deref().and_then(pool::parse_host_v6) {
                used.claim_v6(v6, &name);
            }
        }
        used
    }

    /// Records that `peer` holds `address`. Returns false (and changes nothing) when another
    /// peer already holds it.
    pub fn claim_v4(&mut self, address: Ipv4Addr, peer: &str) -> bool {
        match self.owner_v4.get(&address) {
            Some(owner) => owner == peer,
            None => {
                self.v4.insert(address);
                self.owner_v4.insert(address, peer.to_owned());
                true
            }
        }
    }

    /// Records that `peer` holds the IPv6 `address`. Returns false when another peer holds it.
    pub fn claim_v6(&mut self, address: Ipv6Addr, peer: &str) -> bool {
        match self.owner_v6.get(&address) {
            Some(owner) => owner == peer,
            None => {
                self.v6.insert(address);
                self.owner_v6.insert(address, peer.to_owned());
                true
            }
        }
    }

    /// The peer holding an IPv4 address.
    pub fn owner_v4(&self, address: Ipv4Addr) -> Option<&str> {
        self.owner_v4.get(&address).map(String::as_str)
    }

    /// The peer holding an IPv6 address.
    pub fn owner_v6(&self, address: Ipv6Addr) -> Option<&str> {
        self.owner_v6.get(&address).map(String::as_str)
    }

    /// Frees `address` if `peer` holds it.
    pub fn release_v4(&mut self, address: Ipv4Addr, peer: &str) {
        if self.owner_v4(address) == Some(peer) {
            self.owner_v4.remove(&address);
            self.v4.remove(&address);
            for (pool, low_water) in &mut self.low_water_v4 {
                if pool.contains(&address) && address < *low_water {
                    *low_water = address;
                }
            }
        }
    }

    /// Frees the IPv6 `address` if `peer` holds it.
    pub fn release_v6(&mut self, address: Ipv6Addr, peer: &str) {
        if self.owner_v6(address) == Some(peer) {
            self.owner_v6.remove(&address);
            self.v6.remove(&address);
        }
    }

    /// Gives `peer` the lowest free client address of `pool` and records the claim.
    ///
    /// The first allocation in a pool walks the held addresses from the pool's start
    /// ([`pool::allocate_v4`]); later ones walk from the low-water mark it leaves, so they cost
    /// a few steps however full the pool is.
    pub fn allocate_v4(&mut self, pool: Ipv4Net, peer: &str) -> Result<Ipv4Addr, PoolError> {
        let address = match self.low_water_v4.get(&pool) {
            Some(&start) => {
                let mut candidate = u32::from(start);
                for held in self.v4.range((Bound::Included(start), Bound::Unbounded)) {
                    if u32::from(*held) != candidate {
                        break;
                    }
                    candidate = candidate.saturating_add(1);
                }
                let candidate = Ipv4Addr::from(candidate);
                if !is_client_v4(pool, candidate) || self.v4.contains(&candidate) {
                    return Err(PoolError::Exhausted {
                        pool: pool.to_string(),
                    });
                }
                candidate
            }
            None => pool::allocate_v4(pool, &self.v4)?,
        };
        self.claim_v4(address, peer);
        if let Some(next) = u32::from(address).checked_add(1) {
            self.low_water_v4.insert(pool, Ipv4Addr::from(next));
        }
        Ok(address)
    }

    /// Gives `peer` the lowest free client address of an IPv6 `pool` and records the claim.
    pub fn allocate_v6(&mut self, pool: Ipv6Net, peer: &str) -> Result<Ipv6Addr, PoolError> {
        let address = pool::allocate_v6(pool, &self.v6)?;
        self.claim_v6(address, peer);
        Ok(address)
    }

    /// How many IPv4 addresses are held.
    pub fn len_v4(&self) -> usize {
        self.v4.len()
    }

    /// How many IPv6 addresses are held.
    pub fn len_v6(&self) -> usize {
        self.v6.len()
    }

    /// How many IPv4 addresses inside `pool` are held.
    pub fn used_in_v4(&self, pool: Ipv4Net) -> usize {
        self.v4.range(pool.network()..=pool.broadcast()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use wgsub_crds::WgPeerSpec;

    fn peer(name: &str, server: &str, address: Option<&str>, created: i64) -> WgPeer {
        let mut peer = WgPeer::new(
            name,
            WgPeerSpec {
                server: server.into(),
                public_key: None,
                private_key_secret_ref: None,
                preshared_key_secret_ref: None,
                address: address.map(Into::into),
                address6: None,
                expires_at: None,
                enabled: true,
                device_name: None,
            },
        );
        peer.metadata.creation_timestamp =
            Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        peer
    }

    fn a(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn only_peers_of_the_server_count() {
        let peers = [
            peer("p1", "wg", Some("10.8.0.2/32"), 1),
            peer("p2", "other", Some("10.8.0.3/32"), 1),
            peer("p3", "wg", None, 1),
            peer("p4", "wg", Some("not-an-address"), 1),
        ];
        let used = UsedAddresses::from_peers("wg", &peers);
        assert_eq!(used.len_v4(), 1);
        assert_eq!(used.owner_v4(a("10.8.0.2")), Some("p1"));
        assert_eq!(used.owner_v4(a("10.8.0.3")), None);
    }

    #[test]
    fn the_older_peer_holds_a_duplicated_address() {
        let peers = [
            peer("young", "wg", Some("10.8.0.2/32"), 20),
            peer("old", "wg", Some("10.8.0.2/32"), 10),
        ];
        let used = UsedAddresses::from_peers("wg", &peers);
        assert_eq!(used.owner_v4(a("10.8.0.2")), Some("old"));
    }

    #[test]
    fn claims_by_another_peer_are_refused_and_releases_by_another_peer_ignored() {
        let mut used = UsedAddresses::default();
        assert!(used.claim_v4(a("10.8.0.2"), "p1"));
        assert!(used.claim_v4(a("10.8.0.2"), "p1"));
        assert!(!used.claim_v4(a("10.8.0.2"), "p2"));
        used.release_v4(a("10.8.0.2"), "p2");
        assert_eq!(used.owner_v4(a("10.8.0.2")), Some("p1"));
        used.release_v4(a("10.8.0.2"), "p1");
        assert_eq!(used.owner_v4(a("10.8.0.2")), None);
        assert_eq!(used.len_v4(), 0);
    }

    #[test]
    fn allocation_from_the_low_water_mark_matches_the_lowest_free_address() {
        let pool: Ipv4Net = "10.8.0.0/28".parse().unwrap();
        let mut used = UsedAddresses::default();
        let mut given = Vec::new();
        while let Ok(address) = used.allocate_v4(pool, &format!("p{}", given.len())) {
            given.push(address);
        }
        // .2 ..= .14 are the clients of a /28 (.1 is the server's, .15 the broadcast).
        assert_eq!(given.len(), 13);
        assert_eq!(given.last(), Some(&a("10.8.0.14")));
        used.release_v4(a("10.8.0.5"), "p3");
        used.release_v4(a("10.8.0.9"), "p7");
        assert!(
            used.claim_v4(a("10.8.0.5"), "someone"),
            "a hand claim below the mark"
        );
        assert_eq!(used.allocate_v4(pool, "n1").unwrap(), a("10.8.0.9"));
        assert!(used.allocate_v4(pool, "n2").is_err());
        let reference = pool::allocate_v4(pool, &used.v4);
        assert!(reference.is_err());
    }

    #[test]
    fn allocation_always_gives_what_the_pool_function_gives_for_the_same_used_set() {
        let pool: Ipv4Net = "10.8.0.0/26".parse().unwrap();
        let mut used = UsedAddresses::default();
        let mut holders: Vec<(Ipv4Addr, String)> = Vec::new();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..2_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            if state >> 62 == 0 && !holders.is_empty() {
                let (address, peer) = holders.swap_remove((state >> 8) as usize % holders.len());
                used.release_v4(address, &peer);
                continue;
            }
            let expected = pool::allocate_v4(pool, &used.v4);
            let peer = format!("p{step}");
            let got = used.allocate_v4(pool, &peer);
            assert_eq!(got.is_ok(), expected.is_ok(), "step {step}");
            if let (Ok(got), Ok(expected)) = (got, expected) {
                assert_eq!(got, expected, "step {step}");
                holders.push((got, peer));
            }
        }
    }

    #[test]
    fn client_addresses_exclude_network_server_and_broadcast() {
        let pool: Ipv4Net = "10.8.0.0/24".parse().unwrap();
        for (text, client) in [
            ("10.8.0.0", false),
            ("10.8.0.1", false),
            ("10.8.0.2", true),
            ("10.8.0.254", true),
            ("10.8.0.255", false),
            ("10.9.0.2", false),
        ] {
            assert_eq!(is_client_v4(pool, a(text)), client, "{text}");
        }
        let pool6: Ipv6Net = "fd00::/64".parse().unwrap();
        assert!(!is_client_v6(pool6, "fd00::".parse().unwrap()));
        assert!(!is_client_v6(pool6, "fd00::1".parse().unwrap()));
        assert!(is_client_v6(pool6, "fd00::2".parse().unwrap()));
    }

    #[test]
    fn allocation_claims_so_the_next_allocation_differs() {
        let pool: Ipv4Net = "10.8.0.0/24".parse().unwrap();
        let mut used = UsedAddresses::default();
        let first = used.allocate_v4(pool, "p1").unwrap();
        let second = used.allocate_v4(pool, "p2").unwrap();
        assert_eq!(first, a("10.8.0.2"));
        assert_eq!(second, a("10.8.0.3"));
        assert_eq!(used.used_in_v4(pool), 2);
        let pool6: Ipv6Net = "fd00:8::/64".parse().unwrap();
        let v6 = used.allocate_v6(pool6, "p1").unwrap();
        assert_eq!(used.owner_v6(v6), Some("p1"));
        assert_ne!(used.allocate_v6(pool6, "p2").unwrap(), v6);
        assert_eq!(used.len_v6(), 2);
    }
}
