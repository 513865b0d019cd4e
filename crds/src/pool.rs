//! Address pool arithmetic: which address the server takes and which free host a new peer gets.
//!
//! The server always takes the pool's first host; peers get the lowest host that is neither the
//! network address, the broadcast address (IPv4), the server's address nor already used. The same
//! used set always yields the same answer, so an allocation derived from the peers that exist is
//! stable across restarts.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why no address could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("address pool {pool} is exhausted: every client address is in use")]
    Exhausted { pool: String },
    #[error("address pool {pool} is too small to hold the server and a client")]
    TooSmall { pool: String },
    #[error("{0:?} is not a CIDR pool such as 10.8.0.0/24")]
    Invalid(String),
}

/// Parses an IPv4 pool text, refusing host bits being set (`10.8.0.1/24`).
pub fn parse_pool_v4(text: &str) -> Result<Ipv4Net, PoolError> {
    match parse_network(text)? {
        IpNet::V4(net) => Ok(net),
        IpNet::V6(_) => Err(PoolError::Invalid(text.into())),
    }
}

/// Parses an IPv6 pool text, refusing host bits being set.
pub fn parse_pool_v6(text: &str) -> Result<Ipv6Net, PoolError> {
    match parse_network(text)? {
        IpNet::V6(net) => Ok(net),
        IpNet::V4(_) => Err(PoolError::Invalid(text.into())),
    }
}

/// A network in CIDR form of either family, without host bits.
fn parse_network(text: &str) -> Result<IpNet, PoolError> {
    let net: IpNet = text
        .trim()
        .parse()
        .map_err(|_| PoolError::Invalid(text.into()))?;
    if net.trunc() != net {
        return Err(PoolError::Invalid(text.into()));
    }
    Ok(net)
}

/// The range `[first, last]` of addresses usable as hosts in an IPv4 pool: without network and
/// broadcast for /0–/30, all of them for /31 (RFC 3021) and /32.
fn host_range_v4(pool: Ipv4Net) -> (u32, u32) {
    let network = u32::from(pool.network());
    let broadcast = u32::from(pool.broadcast());
    if pool.prefix_len() >= 31 {
        (network, broadcast)
    } else {
        (network + 1, broadcast - 1)
    }
}

/// The server's own address: the pool's first host.
pub fn server_address_v4(pool: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(host_range_v4(pool).0)
}

/// How many client addresses the pool holds (hosts minus the server's).
pub fn client_capacity_v4(pool: Ipv4Net) -> u64 {
    let (first, last) = host_range_v4(pool);
    u64::from(last - first)
}

/// The lowest free client address of an IPv4 pool. `used` may hold addresses outside the pool;
/// they are ignored.
pub fn allocate_v4(pool: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, PoolError> {
    let (first, last) = host_range_v4(pool);
    if first == last {
        return Err(PoolError::TooSmall {
            pool: pool.to_string(),
        });
    }
    let candidate = first + 1;
    let used = used.range(Ipv4Addr::from(candidate)..=Ipv4Addr::from(last));
    lowest_free(candidate, last, used.map(|address| u32::from(*address)))
        .map(Ipv4Addr::from)
        .ok_or_else(|| PoolError::Exhausted {
            pool: pool.to_string(),
        })
}

/// The lowest of `candidate..=last` not in `used` (ascending; values below `candidate` and
/// above `last` not among them), or `None` when every one is taken: a walk along the used
/// addresses in order, where the first gap is the answer.
fn lowest_free<N>(mut candidate: N, last: N, used: impl Iterator<Item = N>) -> Option<N>
where
    N: Copy + Ord + From<u8> + std::ops::Add<Output = N>,
{
    for address in used {
        if address > candidate {
            break;
        }
        if address == candidate {
            if candidate == last {
                return None;
            }
            candidate = candidate + N::from(1);
        }
    }
    Some(candidate)
}

/// The server's IPv6 address: the first address after the subnet-router anycast address.
pub fn server_address_v6(pool: Ipv6Net) -> Ipv6Addr {
    let network = u128::from(pool.network());
    if pool.prefix_len() == 128 {
        pool.network()
    } else {
        Ipv6Addr::from(network + 1)
    }
}

/// The lowest free client address of an IPv6 pool (the anycast address and the server's are
/// never given).
pub fn allocate_v6(pool: Ipv6Net, used: &BTreeSet<Ipv6Addr>) -> Result<Ipv6Addr, PoolError> {
    if pool.prefix_len() >= 127 {
        return Err(PoolError::TooSmall {
            pool: pool.to_string(),
        });
    }
    let last = u128::from(pool.broadcast());
    let candidate = u128::from(server_address_v6(pool)) + 1;
    let used = used.range(Ipv6Addr::from(candidate)..=Ipv6Addr::from(last));
    lowest_free(candidate, last, used.map(|address| u128::from(*address)))
        .map(Ipv6Addr::from)
        .ok_or_else(|| PoolError::Exhausted {
            pool: pool.to_string(),
        })
}

/// The client address of an IPv4 host as the `/32` a `WgPeer` carries.
pub fn host_cidr_v4(address: Ipv4Addr) -> String {
    format!("{address}/32")
}

/// The client address of an IPv6 host as the `/128` a `WgPeer` carries.
pub fn host_cidr_v6(address: Ipv6Addr) -> String {
    format!("{address}/128")
}

/// The address of a `/32` text as a `WgPeer` carries it.
pub fn parse_host_v4(text: &str) -> Option<Ipv4Addr> {
    let net: Ipv4Net = text.parse().ok()?;
    (net.prefix_len() == 32).then_some(net.addr())
}

/// The address of a `/128` text as a `WgPeer` carries it.
pub fn parse_host_v6(text: &str) -> Option<Ipv6Addr> {
    let net: Ipv6Net = text.parse().ok()?;
    (net.prefix_len() == 128).then_some(net.addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> Ipv4Net {
        parse_pool_v4(s).unwrap()
    }
    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_pool_gives_the_host_after_the_server() {
        let pool = v4("10.8.0.0/24");
        assert_eq!(server_address_v4(pool), a("10.8.0.1"));
        assert_eq!(allocate_v4(pool, &BTreeSet::new()), Ok(a("10.8.0.2")));
        assert_eq!(client_capacity_v4(pool), 253);
    }

    #[test]
    fn lowest_gap_is_reused() {
        let pool = v4("10.8.0.0/24");
        let used: BTreeSet<_> = [a("10.8.0.2"), a("10.8.0.4")].into();
        assert_eq!(allocate_v4(pool, &used), Ok(a("10.8.0.3")));
        let used: BTreeSet<_> = [a("10.8.0.2"), a("10.8.0.3")].into();
        assert_eq!(allocate_v4(pool, &used), Ok(a("10.8.0.4")));
    }

    #[test]
    fn addresses_outside_the_pool_and_the_server_address_are_ignored() {
        let pool = v4("10.8.0.0/24");
        let used: BTreeSet<_> = [a("10.8.0.1"), a("10.9.0.2"), a("10.7.255.255")].into();
        assert_eq!(allocate_v4(pool, &used), Ok(a("10.8.0.2")));
    }

    #[test]
    fn full_slash_30_is_exhausted_and_names_the_pool() {
        let pool = v4("10.8.0.0/30");
        assert_eq!(server_address_v4(pool), a("10.8.0.1"));
        assert_eq!(client_capacity_v4(pool), 1);
        assert_eq!(allocate_v4(pool, &BTreeSet::new()), Ok(a("10.8.0.2")));
        let used: BTreeSet<_> = [a("10.8.0.2")].into();
        let err = allocate_v4(pool, &used).unwrap_err();
        assert_eq!(
            err,
            PoolError::Exhausted {
                pool: "10.8.0.0/30".into()
            }
        );
        assert!(err.to_string().contains("10.8.0.0/30"));
    }

    #[test]
    fn broadcast_is_never_given() {
        let pool = v4("10.8.0.0/29");
        let used: BTreeSet<_> = (2..=6).map(|i| Ipv4Addr::new(10, 8, 0, i)).collect();
        assert!(matches!(
            allocate_v4(pool, &used),
            Err(PoolError::Exhausted { .. })
        ));
        let used: BTreeSet<_> = (2..=5).map(|i| Ipv4Addr::new(10, 8, 0, i)).collect();
        assert_eq!(allocate_v4(pool, &used), Ok(a("10.8.0.6")));
    }

    #[test]
    fn slash_31_has_server_and_one_client() {
        let pool = v4("10.8.0.0/31");
        assert_eq!(server_address_v4(pool), a("10.8.0.0"));
        assert_eq!(allocate_v4(pool, &BTreeSet::new()), Ok(a("10.8.0.1")));
        let used: BTreeSet<_> = [a("10.8.0.1")].into();
        assert!(matches!(
            allocate_v4(pool, &used),
            Err(PoolError::Exhausted { .. })
        ));
    }

    #[test]
    fn slash_32_is_too_small() {
        let pool = v4("10.8.0.7/32");
        assert_eq!(client_capacity_v4(pool), 0);
        assert_eq!(
            allocate_v4(pool, &BTreeSet::new()),
            Err(PoolError::TooSmall {
                pool: "10.8.0.7/32".into()
            })
        );
    }

    #[test]
    fn slash_16_crosses_octet_boundaries_and_is_fast_when_nearly_full() {
        let pool = v4("10.8.0.0/16");
        let used: BTreeSet<_> = (2..=65533u32)
            .map(|i| Ipv4Addr::from(u32::from(a("10.8.0.0")) + i))
            .collect();
        assert_eq!(allocate_v4(pool, &used), Ok(a("10.8.255.254")));
        let mut full = used.clone();
        full.insert(a("10.8.255.254"));
        assert!(matches!(
            allocate_v4(pool, &full),
            Err(PoolError::Exhausted { .. })
        ));
        let used: BTreeSet<_> = (2..=255u32)
            .map(|i| Ipv4Addr::from(u32::from(a("10.8.0.0")) + i))
            .collect();
        assert_eq!(allocate_v4(pool, &used), Ok(a("10.8.1.0")));
    }

    #[test]
    fn pools_with_host_bits_or_garbage_are_refused() {
        assert_eq!(
            parse_pool_v4("10.8.0.1/24"),
            Err(PoolError::Invalid("10.8.0.1/24".into()))
        );
        assert!(parse_pool_v4("10.8.0.0").is_err());
        assert!(parse_pool_v4("fd00::/64").is_err());
        assert!(parse_pool_v6("fd00::1/64").is_err());
        assert!(parse_pool_v6("10.0.0.0/8").is_err());
    }

    #[test]
    fn ipv6_slash_64_skips_anycast_and_server() {
        let pool = parse_pool_v6("fd00:8::/64").unwrap();
        let server: Ipv6Addr = "fd00:8::1".parse().unwrap();
        assert_eq!(server_address_v6(pool), server);
        assert_eq!(
            allocate_v6(pool, &BTreeSet::new()),
            Ok("fd00:8::2".parse().unwrap())
        );
        let used: BTreeSet<Ipv6Addr> = ["fd00:8::2", "fd00:8::4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(allocate_v6(pool, &used), Ok("fd00:8::3".parse().unwrap()));
    }

    #[test]
    fn ipv6_tiny_pools() {
        let pool = parse_pool_v6("fd00:8::/126").unwrap();
        let used: BTreeSet<Ipv6Addr> = ["fd00:8::2", "fd00:8::3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(matches!(
            allocate_v6(pool, &used),
            Err(PoolError::Exhausted { .. })
        ));
        let pool = parse_pool_v6("fd00:8::/127").unwrap();
        assert!(matches!(
            allocate_v6(pool, &BTreeSet::new()),
            Err(PoolError::TooSmall { .. })
        ));
    }

    #[test]
    fn host_cidrs_round_trip() {
        assert_eq!(host_cidr_v4(a("10.8.0.2")), "10.8.0.2/32");
        assert_eq!(parse_host_v4("10.8.0.2/32"), Some(a("10.8.0.2")));
        assert_eq!(parse_host_v4("10.8.0.2/24"), None);
        let six: Ipv6Addr = "fd00::2".parse().unwrap();
        assert_eq!(parse_host_v6(&host_cidr_v6(six)), Some(six));
        assert_eq!(parse_host_v6("fd00::2/64"), None);
    }

    proptest! {
        #[test]
        fn repeated_allocation_never_duplicates_and_stays_inside(prefix in 22u8..=30, seed in proptest::collection::btree_set(0u32..1024, 0..64)) {
            let pool = Ipv4Net::new(Ipv4Addr::new(10, 8, 0, 0), prefix).unwrap().trunc();
            let mut used: BTreeSet<Ipv4Addr> = seed.iter().map(|i| Ipv4Addr::from(u32::from(pool.network()) + i)).collect();
            let server = server_address_v4(pool);
            loop {
                match allocate_v4(pool, &used) {
                    Ok(address) => {
                        prop_assert!(pool.contains(&address));
                        prop_assert!(address != pool.network() && address != pool.broadcast() && address != server);
                        prop_assert!(used.insert(address), "duplicate {}", address);
                        // determinism: same set, same answer
                        let again = allocate_v4(pool, &used);
                        prop_assert_eq!(again.clone(), allocate_v4(pool, &used));
                    }
                    Err(PoolError::Exhausted { .. }) => break,
                    Err(other) => prop_assert!(false, "unexpected {}", other),
                }
            }
            let clients = used.iter().filter(|a| pool.contains(*a) && **a != server && **a != pool.network() && **a != pool.broadcast()).count() as u64;
            prop_assert_eq!(clients, client_capacity_v4(pool));
        }

        #[test]
        fn allocation_gives_the_lowest_free_host(used in proptest::collection::btree_set(2u8..=254, 0..253)) {
            let pool = v4("192.168.7.0/24");
            let used_addresses: BTreeSet<Ipv4Addr> = used.iter().map(|i| Ipv4Addr::new(192, 168, 7, *i)).collect();
            let expected = (2u8..=254).find(|i| !used.contains(i)).map(|i| Ipv4Addr::new(192, 168, 7, i));
            prop_assert_eq!(allocate_v4(pool, &used_addresses).ok(), expected);
        }
    }
}
