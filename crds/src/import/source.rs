//! The peers of an existing WireGuard server, read from its `wg0.conf` (wg-quick format) or from
//! `wg show <interface> dump` output: each peer's public key, preshared key and the host
//! addresses of its `AllowedIPs`, with the line it was read from.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::keys::{PresharedKey, PublicKey};

/// One `[Peer]` of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePeer {
    /// 1-based line of the peer's `[Peer]` header (or its dump line).
    pub line: usize,
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// The peer's IPv4 host address (its `/32` in `AllowedIPs`).
    pub address: Ipv4Addr,
    /// The peer's IPv6 host address (its `/128`), when it has one.
    pub address6: Option<Ipv6Addr>,
}

/// Why the server's configuration cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SourceError {
    pub line: usize,
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> SourceError {
    SourceError {
        line,
        message: message.into(),
    }
}

/// Reads the peers of either format: text with a `[Interface]` or `[Peer]` section is a
/// `wg0.conf`, anything else is `wg show dump` output.
pub fn parse_server(text: &str) -> Result<Vec<SourcePeer>, SourceError> {
    let is_conf = text.lines().any(|line| {
        let line = line.trim();
        line.eq_ignore_ascii_case("[interface]") || line.eq_ignore_ascii_case("[peer]")
    });
    if is_conf {
        parse_conf(text)
    } else {
        parse_dump(text)
    }
}

/// The host addresses among `AllowedIPs`: exactly one `/32` is required, at most one `/128`;
/// routed networks behind a peer (any other prefix) are refused, since a wgsub peer carries only
/// its own addresses.
fn host_addresses(line: usize, allowed: &str) -> Result<(Ipv4Addr, Option<Ipv6Addr>), SourceError> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for item in allowed.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net: IpNet = item
            .parse()
            .map_err(|_| error(line, format!("AllowedIPs entry {item:?} is not an address")))?;
        match net {
            IpNet::V4(net) if net.prefix_len() == 32 => v4.push(net.addr()),
            IpNet::V6(net) if net.prefix_len() == 128 => v6.push(net.addr()),
            _ => {
                return Err(error(
                    line,
                    format!(
                        "AllowedIPs entry {item} routes a network; only host addresses can be imported"
                    ),
                ));
            }
        }
    }
    match (v4.as_slice(), v6.as_slice()) {
        ([address], []) => Ok((*address, None)),
        ([address], [address6]) => Ok((*address, Some(*address6))),
        ([], _) => Err(error(line, "the peer has no IPv4 /32 in AllowedIPs")),
        _ => Err(error(
            line,
            "the peer has more than one address of a family",
        )),
    }
}

fn public_key(line: usize, text: &str) -> Result<PublicKey, SourceError> {
    PublicKey::from_base64(text.trim())
        .map_err(|_| error(line, "PublicKey is not a base64 WireGuard key"))
}

fn preshared_key(line: usize, text: &str) -> Result<Option<PresharedKey>, SourceError> {
    let text = text.trim();
    if text.is_empty() || text == "(none)" {
        return Ok(None);
    }
    PresharedKey::from_base64(text)
        .map(Some)
        .map_err(|_| error(line, "PresharedKey is not a base64 WireGuard key"))
}

#[derive(Default)]
struct PeerFields {
    line: usize,
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    allowed: Option<(Ipv4Addr, Option<Ipv6Addr>)>,
}

impl PeerFields {
    fn finish(self) -> Result<SourcePeer, SourceError> {
        let public_key = self
            .public_key
            .ok_or_else(|| error(self.line, "the [Peer] has no PublicKey"))?;
        let (address, address6) = self
            .allowed
            .ok_or_else(|| error(self.line, "the [Peer] has no AllowedIPs"))?;
        Ok(SourcePeer {
            line: self.line,
            public_key,
            preshared_key: self.preshared_key,
            address,
            address6,
        })
    }
}

/// Reads the `[Peer]` sections of a wg-quick configuration. The `[Interface]` section is
/// skipped (the wgsub `WgServer` has its own key and pool); comments and blank lines are ignored.
pub fn parse_conf(text: &str) -> Result<Vec<SourcePeer>, SourceError> {
    let mut peers = Vec::new();
    let mut current: Option<PeerFields> = None;
    let mut in_interface = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') {
            if let Some(peer) = current.take() {
                peers.push(peer.finish()?);
            }
            if content.eq_ignore_ascii_case("[peer]") {
                current = Some(PeerFields {
                    line,
                    ..PeerFields::default()
                });
                in_interface = false;
            } else if content.eq_ignore_ascii_case("[interface]") {
                in_interface = true;
            } else {
                return Err(error(line, format!("unknown section {content}")));
            }
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(error(line, "expected Key = Value"));
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(peer) = current.as_mut() else {
            if in_interface {
                continue;
            }
            return Err(error(line, format!("{key} outside a section")));
        };
        match key.to_ascii_lowercase().as_str() {
            "publickey" => peer.public_key = Some(public_key(line, value)?),
            "presharedkey" => peer.preshared_key = preshared_key(line, value)?,
            "allowedips" => {
                // wg-quick allows AllowedIPs to repeat; the lists add up.
                let joined = match peer.allowed.take() {
                    None => value.to_owned(),
                    Some((v4, v6)) => {
                        let mut joined = format!("{v4}/32,{value}");
                        if let Some(v6) = v6 {
                            joined.push_str(&format!(",{v6}/128"));
                        }
                        joined
                    }
                };
                peer.allowed = Some(host_addresses(line, &joined)?);
            }
            "endpoint" | "persistentkeepalive" => {}
            _ => return Err(error(line, format!("unknown [Peer] key {key}"))),
        }
    }
    if let Some(peer) = current.take() {
        peers.push(peer.finish()?);
    }
    Ok(peers)
}

/// Reads `wg show <interface> dump`: the first line is the interface (four fields), every
/// other line a peer (eight tab-separated fields: public key, preshared key, endpoint,
/// allowed IPs, latest handshake, rx, tx, keepalive).
pub fn parse_dump(text: &str) -> Result<Vec<SourcePeer>, SourceError> {
    let mut peers = Vec::new();
    let mut seen_interface = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split('\t').collect();
        if !seen_interface {
            if fields.len() != 4 {
                return Err(error(
                    line,
                    "not a wg0.conf and not `wg show <interface> dump` output (the first line must be the interface's four fields)",
                ));
            }
            seen_interface = true;
            continue;
        }
        if fields.len() != 8 {
            return Err(error(
                line,
                format!(
                    "a dump peer line has 8 tab-separated fields, this has {}",
                    fields.len()
                ),
            ));
        }
        let allowed = if fields[3] == "(none)" { "" } else { fields[3] };
        let (address, address6) = host_addresses(line, allowed)?;
        peers.push(SourcePeer {
            line,
            public_key: public_key(line, fields[0])?,
            preshared_key: preshared_key(line, fields[1])?,
            address,
            address6,
        });
    }
    if !seen_interface {
        return Err(error(1, "the server configuration is empty"));
    }
    Ok(peers)
}
