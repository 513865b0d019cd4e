//! Who sent a request: the client address taken from `X-Forwarded-For` only when the direct
//! peer is a configured trusted proxy, and the YooKassa source allow-list.

use std::net::IpAddr;

use ipnet::IpNet;

/// YooKassa's published notification source ranges.
pub const YOOKASSA_SOURCE_RANGES: &[&str] = &[
    "185.71.76.0/27",
    "185.71.77.0/27",
    "77.75.153.0/25",
    "77.75.156.11/32",
    "77.75.156.35/32",
    "77.75.154.128/25",
    "2a02:5180::/32",
];

/// Parses a CIDR or a bare address (as a /32 or /128); the error names the entry.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR"))
}

/// YooKassa's ranges as networks.
pub fn yookassa_ranges() -> Vec<IpNet> {
    YOOKASSA_SOURCE_RANGES
        .iter()
        .map(|range| parse_net(range).expect("the built-in YooKassa ranges parse"))
        .collect()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(&ip))
}

/// The client address of a request: the direct peer, unless it is a trusted proxy, in which
/// case `X-Forwarded-For` is walked from the right past further trusted proxies. An entry that
/// does not parse stops the walk at the last trusted hop (which then counts as the client).
pub fn client_addr(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let mut client = canonical(peer);
    if !contains(trusted, client) {
        return client;
    }
    let hops = forwarded_for
        .iter()
        .flat_map(|header| header.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !contains(trusted, client) {
                    return client;
                }
            }
            Err(_) => return client,
        }
    }
    client
}

/// Whether `ip` is in the allow-list.
pub fn allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    contains(allow, canonical(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_net(s).unwrap()).collect()
    }

    #[test]
    fn yookassas_ranges_allow_their_addresses_only() {
        let allow = yookassa_ranges();
        for yes in [
            "185.71.76.1",
            "185.71.77.31",
            "77.75.153.127",
            "77.75.156.11",
            "77.75.156.35",
            "77.75.154.200",
            "2a02:5180::1",
            "::ffff:185.71.76.5",
        ] {
            assert!(allowed(ip(yes), &allow), "{yes}");
        }
        for no in [
            "185.71.76.32",
            "77.75.153.128",
            "77.75.156.12",
            "77.75.154.127",
            "10.0.0.1",
            "2a02:5181::1",
        ] {
            assert!(!allowed(ip(no), &allow), "{no}");
        }
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_addr(ip("203.0.113.9"), &["185.71.76.1"], &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1"]);
        assert_eq!(
            client_addr(
                ip("10.1.2.3"),
                &["1.1.1.1, 185.71.76.1, 192.168.1.1"],
                &trusted
            ),
            ip("185.71.76.1"),
            "a spoofed left-most entry does not count"
        );
        assert_eq!(
            client_addr(ip("10.1.2.3"), &["1.1.1.1", "185.71.76.1"], &trusted),
            ip("185.71.76.1"),
            "several headers are one list"
        );
        assert_eq!(
            client_addr(ip("10.1.2.3"), &[], &trusted),
            ip("10.1.2.3"),
            "no header: the proxy itself"
        );
        assert_eq!(
            client_addr(ip("10.1.2.3"), &["garbage, 10.9.9.9"], &trusted),
            ip("10.9.9.9"),
            "an unparsable hop stops at the last trusted one"
        );
    }

    #[test]
    fn bare_addresses_and_cidrs_parse_and_junk_is_named() {
        assert_eq!(parse_net("10.0.0.1").unwrap().prefix_len(), 32);
        assert_eq!(parse_net("fd00::/8").unwrap().prefix_len(), 8);
        assert!(parse_net("ten").unwrap_err().contains("\"ten\""));
    }
}
