//! The AmneziaWG kernel module's generic netlink messages, pure: building the `SET_DEVICE`
//! messages of one update (device settings, obfuscation parameters and a [`PeerDiff`]) and
//! reading a `GET_DEVICE` dump back into the agent's [`InterfaceSnapshot`] and [`AwgParams`].
//!
//! The family is `amneziawg`, shaped like WireGuard's `wireguard` family with the obfuscation
//! attributes after it. `netlink-packet-amneziawg` defines the WireGuard attributes and AWG
//! 1.0's (`Jc`, `Jmin`, `Jmax`, `S1`, `S2`, `H1`–`H4` as numbers); [`DeviceAttr`] wraps them and
//! adds what later modules take, numbered as in the module's uapi header: `S3` = 19, `S4` = 20,
//! `I1`–`I5` = 21–25 (NUL-terminated strings). How `H1`–`H4` travel depends on the family's
//! version ([`Dialect`]): version 1 (AWG 1.0) a u32, version 2 (AWG 1.5) text `N` or `A-B`,
//! version 3 a u64 range packed as `end << 32 | start`.
//!
//! One update can be several messages: a netlink request is at most one page-sized buffer, so
//! the peers are packed into as many messages as they need, a peer with many allowed IPs split
//! across messages the way the uapi header describes (the first part replaces the allowed IPs,
//! the following ones add to them).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use netlink_packet_amneziawg::WireguardCmd;
use netlink_packet_amneziawg::constants::{
    AF_INET, AF_INET6, WGDEVICE_A_H1, WGDEVICE_A_H4, WGDEVICE_A_PEERS, WGPEER_A_ALLOWEDIPS,
    WGPEER_A_LAST_HANDSHAKE_TIME, WGPEER_A_PRESHARED_KEY, WGPEER_A_PUBLIC_KEY, WGPEER_A_RX_BYTES,
    WGPEER_A_TX_BYTES, WGPEER_F_REMOVE_ME, WGPEER_F_REPLACE_ALLOWEDIPS,
};
use netlink_packet_amneziawg::nlas::{
    WgAllowedIp, WgAllowedIpAttrs, WgDeviceAttrs, WgPeer, WgPeerAttrs,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};
use netlink_packet_utils::nla::{Nla, NlaBuffer, NlasIterator};
use netlink_packet_utils::{DecodeError, Emitable, Parseable, ParseableParametrized};
use wgsub_crds::keys::{PresharedKey, PublicKey};

use crate::amneziawg::{AwgDevice, AwgParams, DeviceSettings, Header};
use crate::diff::PeerDiff;
use crate::snapshot::{ObservedPeer, PeerConfig, PeerStats};

/// The generic netlink family of the AmneziaWG kernel module.
pub const FAMILY_NAME: &str = "amneziawg";

/// `WGDEVICE_A_S3`, `WGDEVICE_A_S4` and `WGDEVICE_A_I1` of the module's uapi header (`I2`–`I5`
/// follow `I1`).
pub const WGDEVICE_A_S3: u16 = 19;
pub const WGDEVICE_A_S4: u16 = 20;
pub const WGDEVICE_A_I1: u16 = 21;
const WGDEVICE_A_I5: u16 = WGDEVICE_A_I1 + 4;

/// How a module of one family version encodes the obfuscation attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Family version 1, AmneziaWG 1.0: headers as u32, no `S3`, `S4` or `I` packets.
    Awg10,
    /// Family version 2, AmneziaWG 1.5: headers as text, `S3`, `S4`, `I1`–`I5`.
    Awg15,
    /// Family version 3: headers as packed u64 ranges, `S3`, `S4`, `I1`–`I5`.
    PackedRanges,
}

impl Dialect {
    /// The dialect of a family version; `None` for a version this agent does not know.
    pub fn from_version(version: u32) -> Option<Dialect> {
        match version {
            1 => Some(Dialect::Awg10),
            2 => Some(Dialect::Awg15),
            3 => Some(Dialect::PackedRanges),
            _ => None,
        }
    }

    pub fn version(self) -> u8 {
        match self {
            Dialect::Awg10 => 1,
            Dialect::Awg15 => 2,
            Dialect::PackedRanges => 3,
        }
    }

    /// Why a module of this dialect cannot hold `params` (`None`: it can).
    pub fn cannot_carry(self, params: &AwgParams) -> Option<String> {
        let small = [
            ("Jc", params.jc),
            ("Jmin", params.jmin),
            ("Jmax", params.jmax),
            ("S1", params.s[0]),
            ("S2", params.s[1]),
            ("S3", params.s[2]),
            ("S4", params.s[3]),
        ];
        if let Some((name, value)) = small.iter().find(|(_, v)| u16::try_from(*v).is_err()) {
            return Some(format!(
                "{name} = {value} does not fit the module's 16 bits"
            ));
        }
        if self != Dialect::Awg10 {
            return None;
        }
        let mut needs = Vec::new();
        if params.s[2] != 0 || params.s[3] != 0 {
            needs.push("S3/S4");
        }
        if params.i.iter().any(Option::is_some) {
            needs.push("I1–I5");
        }
        if params.h.iter().flatten().any(|h| h.start != h.end) {
            needs.push("header ranges");
        }
        (!needs.is_empty()).then(|| {
            format!(
                "the amneziawg kernel module here speaks AmneziaWG 1.0 (family version 1) and \
                 cannot carry the AmneziaWG 1.5 parameters this server uses ({})",
                needs.join(", ")
            )
        })
    }
}

/// One attribute of an `amneziawg` device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAttr {
    /// One of WireGuard's or AmneziaWG 1.0's, as the crate defines it.
    Base(WgDeviceAttrs),
    S3(u16),
    S4(u16),
    /// Signature packet `I<n+1>` in amneziawg-go's tag syntax.
    Signature(u8, String),
    /// Header `H<n+1>` as text, `N` or `A-B` (family version 2).
    HeaderText(u8, String),
    /// Header `H<n+1>` as `end << 32 | start` (family version 3).
    HeaderRange(u8, u64),
    /// An attribute this agent does not read (only ever decoded, never sent).
    Other(u16, Vec<u8>),
}

impl Nla for DeviceAttr {
    fn value_len(&self) -> usize {
        match self {
            DeviceAttr::Base(attr) => attr.value_len(),
            DeviceAttr::S3(_) | DeviceAttr::S4(_) => 2,
            DeviceAttr::Signature(_, text) | DeviceAttr::HeaderText(_, text) => text.len() + 1,
            DeviceAttr::HeaderRange(..) => 8,
            DeviceAttr::Other(_, bytes) => bytes.len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DeviceAttr::Base(attr) => attr.kind(),
            DeviceAttr::S3(_) => WGDEVICE_A_S3,
            DeviceAttr::S4(_) => WGDEVICE_A_S4,
            DeviceAttr::Signature(n, _) => WGDEVICE_A_I1 + u16::from(*n),
            DeviceAttr::HeaderText(n, _) | DeviceAttr::HeaderRange(n, _) => {
                WGDEVICE_A_H1 + u16::from(*n)
            }
            DeviceAttr::Other(kind, _) => *kind,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DeviceAttr::Base(attr) => attr.emit_value(buffer),
            DeviceAttr::S3(v) | DeviceAttr::S4(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            DeviceAttr::Signature(_, text) | DeviceAttr::HeaderText(_, text) => {
                buffer[..text.len()].copy_from_slice(text.as_bytes());
                buffer[text.len()] = 0;
            }
            DeviceAttr::HeaderRange(_, v) => buffer[..8].copy_from_slice(&v.to_ne_bytes()),
            DeviceAttr::Other(_, bytes) => buffer[..bytes.len()].copy_from_slice(bytes),
        }
    }

    fn is_nested(&self) -> bool {
        matches!(self, DeviceAttr::Base(attr) if attr.is_nested())
    }
}

fn text_of(payload: &[u8]) -> Result<String, DecodeError> {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    String::from_utf8(payload[..end].to_vec())
        .map_err(|_| DecodeError::from("an attribute that is not UTF-8 text"))
}

fn u16_of(payload: &[u8]) -> Result<u16, DecodeError> {
    let bytes: [u8; 2] = payload
        .try_into()
        .map_err(|_| DecodeError::from("a u16 attribute of the wrong length"))?;
    Ok(u16::from_ne_bytes(bytes))
}

/// The peer attributes this agent reads; the rest (endpoint, keepalive — whose width changed
/// between module versions —, protocol version, flags) are skipped.
fn parse_peer(payload: &[u8]) -> Result<WgPeer, DecodeError> {
    let mut attrs = Vec::new();
    for nla in NlasIterator::new(payload) {
        let nla = nla?;
        if matches!(
            nla.kind(),
            WGPEER_A_PUBLIC_KEY
                | WGPEER_A_PRESHARED_KEY
                | WGPEER_A_LAST_HANDSHAKE_TIME
                | WGPEER_A_RX_BYTES
                | WGPEER_A_TX_BYTES
                | WGPEER_A_ALLOWEDIPS
        ) {
            attrs.push(WgPeerAttrs::parse(&nla)?);
        }
    }
    Ok(WgPeer(attrs))
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DeviceAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let payload = buf.value();
        let kind = buf.kind();
        Ok(match kind {
            WGDEVICE_A_PEERS => {
                let mut peers = Vec::new();
                for nla in NlasIterator::new(payload) {
                    peers.push(parse_peer(nla?.value())?);
                }
                DeviceAttr::Base(WgDeviceAttrs::Peers(peers))
            }
            WGDEVICE_A_H1..=WGDEVICE_A_H4 => {
                let n = u8::try_from(kind - WGDEVICE_A_H1).unwrap_or_default();
                match payload.len() {
                    4 => DeviceAttr::Base(WgDeviceAttrs::parse(buf)?),
                    8 => {
                        let bytes: [u8; 8] = payload.try_into().unwrap_or_default();
                        DeviceAttr::HeaderRange(n, u64::from_ne_bytes(bytes))
                    }
                    _ => DeviceAttr::HeaderText(n, text_of(payload)?),
                }
            }
            WGDEVICE_A_S3 => DeviceAttr::S3(u16_of(payload)?),
            WGDEVICE_A_S4 => DeviceAttr::S4(u16_of(payload)?),
            WGDEVICE_A_I1..=WGDEVICE_A_I5 => DeviceAttr::Signature(
                u8::try_from(kind - WGDEVICE_A_I1).unwrap_or_default(),
                text_of(payload)?,
            ),
            // Everything up to H4 is WireGuard's or AmneziaWG 1.0's.
            ..WGDEVICE_A_H1 => DeviceAttr::Base(WgDeviceAttrs::parse(buf)?),
            _ => DeviceAttr::Other(kind, payload.to_vec()),
        })
    }
}

/// One `amneziawg` generic netlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmneziaWg {
    pub cmd: WireguardCmd,
    pub dialect_version: u8,
    pub attrs: Vec<DeviceAttr>,
}

impl GenlFamily for AmneziaWg {
    fn family_name() -> &'static str {
        FAMILY_NAME
    }

    fn version(&self) -> u8 {
        self.dialect_version
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }
}

impl Emitable for AmneziaWg {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for AmneziaWg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = WireguardCmd::try_from(header.cmd)?;
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(buf) {
            attrs.push(DeviceAttr::parse(&nla?)?);
        }
        Ok(AmneziaWg {
            cmd,
            dialect_version: header.version,
            attrs,
        })
    }
}

/// The `GET_DEVICE` request for `interface` (sent as a dump).
pub fn get_message(interface: &str, dialect: Dialect) -> AmneziaWg {
    AmneziaWg {
        cmd: WireguardCmd::GetDevice,
        dialect_version: dialect.version(),
        attrs: vec![DeviceAttr::Base(WgDeviceAttrs::IfName(interface.into()))],
    }
}

fn header_attr(dialect: Dialect, n: u8, header: Header) -> DeviceAttr {
    match dialect {
        Dialect::Awg10 => DeviceAttr::Base(match n {
            0 => WgDeviceAttrs::H1(header.start),
            1 => WgDeviceAttrs::H2(header.start),
            2 => WgDeviceAttrs::H3(header.start),
            _ => WgDeviceAttrs::H4(header.start),
        }),
        Dialect::Awg15 => DeviceAttr::HeaderText(n, header.to_string()),
        Dialect::PackedRanges => {
            DeviceAttr::HeaderRange(n, u64::from(header.end) << 32 | u64::from(header.start))
        }
    }
}

/// The device attributes of an update that (re)sets the interface's own settings: key, port
/// and every obfuscation parameter the dialect has (`S3`/`S4` and the set `I` packets from
/// family version 2 on). The caller checked [`Dialect::cannot_carry`].
fn device_attrs(dialect: Dialect, device: &DeviceSettings<'_>) -> Vec<DeviceAttr> {
    let p = device.params;
    let small = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    let mut attrs = vec![
        DeviceAttr::Base(WgDeviceAttrs::PrivateKey(*device.private_key.as_bytes())),
        DeviceAttr::Base(WgDeviceAttrs::ListenPort(device.listen_port)),
        DeviceAttr::Base(WgDeviceAttrs::Jc(small(p.jc))),
        DeviceAttr::Base(WgDeviceAttrs::Jmin(small(p.jmin))),
        DeviceAttr::Base(WgDeviceAttrs::Jmax(small(p.jmax))),
        DeviceAttr::Base(WgDeviceAttrs::S1(small(p.s[0]))),
        DeviceAttr::Base(WgDeviceAttrs::S2(small(p.s[1]))),
    ];
    if dialect != Dialect::Awg10 {
        attrs.push(DeviceAttr::S3(small(p.s[2])));
        attrs.push(DeviceAttr::S4(small(p.s[3])));
    }
    for (n, header) in (0u8..).zip(&p.h) {
        if let Some(header) = header {
            attrs.push(header_attr(dialect, n, *header));
        }
    }
    if dialect != Dialect::Awg10 {
        for (n, packet) in (0u8..).zip(&p.i) {
            if let Some(packet) = packet {
                attrs.push(DeviceAttr::Signature(n, packet.clone()));
            }
        }
    }
    attrs
}

fn allowed_ip(net: &IpNet) -> WgAllowedIp {
    let family = match net.addr() {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    };
    WgAllowedIp(vec![
        WgAllowedIpAttrs::Family(family),
        WgAllowedIpAttrs::IpAddr(net.addr()),
        WgAllowedIpAttrs::Cidr(net.prefix_len()),
    ])
}

/// One peer of an update: its attributes without the allowed IPs, and those.
struct PeerChange {
    key: [u8; 32],
    head: Vec<WgPeerAttrs>,
    ips: Vec<WgAllowedIp>,
}

fn peer_changes(diff: &PeerDiff) -> Vec<PeerChange> {
    let mut changes = Vec::with_capacity(diff.len());
    for (key, config, existing) in diff
        .add
        .iter()
        .map(|(k, c)| (k, c, false))
        .chain(diff.update.iter().map(|(k, c)| (k, c, true)))
    {
        let mut head = vec![WgPeerAttrs::PublicKey(*key.as_bytes())];
        match &config.preshared_key {
            Some(psk) => head.push(WgPeerAttrs::PresharedKey(*psk.as_bytes())),
            // A new peer has no preshared key to clear.
            None if existing => head.push(WgPeerAttrs::PresharedKey([0; 32])),
            None => {}
        }
        if existing {
            head.push(WgPeerAttrs::Flags(WGPEER_F_REPLACE_ALLOWEDIPS));
        }
        changes.push(PeerChange {
            key: *key.as_bytes(),
            head,
            ips: config.allowed_ips.iter().map(allowed_ip).collect(),
        });
    }
    for key in &diff.remove {
        changes.push(PeerChange {
            key: *key.as_bytes(),
            head: vec![
                WgPeerAttrs::PublicKey(*key.as_bytes()),
                WgPeerAttrs::Flags(WGPEER_F_REMOVE_ME),
            ],
            ips: Vec::new(),
        });
    }
    changes
}

/// Netlink attribute header length, and the padding every attribute is aligned to.
const NLA_HEADER: usize = 4;

fn peer_len(head: &[WgPeerAttrs], ips: &[WgAllowedIp]) -> usize {
    let ips_len = if ips.is_empty() {
        0
    } else {
        NLA_HEADER + ips.iter().map(Emitable::buffer_len).sum::<usize>()
    };
    NLA_HEADER + head.iter().map(Emitable::buffer_len).sum::<usize>() + ips_len
}

fn peer_of(head: Vec<WgPeerAttrs>, ips: Vec<WgAllowedIp>) -> WgPeer {
    let mut attrs = head;
    if !ips.is_empty() {
        attrs.push(WgPeerAttrs::AllowedIps(ips));
    }
    WgPeer(attrs)
}

/// Collects messages of at most `budget` bytes of attributes.
struct Packer {
    interface: String,
    dialect: Dialect,
    budget: usize,
    done: Vec<AmneziaWg>,
    head: Vec<DeviceAttr>,
    peers: Vec<WgPeer>,
    used: usize,
}

impl Packer {
    fn base_len(&self) -> usize {
        DeviceAttr::Base(WgDeviceAttrs::IfName(self.interface.clone())).buffer_len() + NLA_HEADER
    }

    fn flush(&mut self) {
        let mut attrs = vec![DeviceAttr::Base(WgDeviceAttrs::IfName(
            self.interface.clone(),
        ))];
        attrs.append(&mut self.head);
        if !self.peers.is_empty() {
            attrs.push(DeviceAttr::Base(WgDeviceAttrs::Peers(std::mem::take(
                &mut self.peers,
            ))));
        }
        self.done.push(AmneziaWg {
            cmd: WireguardCmd::SetDevice,
            dialect_version: self.dialect.version(),
            attrs,
        });
        self.used = self.base_len();
    }

    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.peers.is_empty()
    }

    fn push(&mut self, change: PeerChange) -> Result<(), String> {
        let whole = peer_len(&change.head, &change.ips);
        if self.used + whole > self.budget && !self.is_empty() {
            self.flush();
        }
        if self.used + whole <= self.budget {
            self.used += whole;
            self.peers.push(peer_of(change.head, change.ips));
            return Ok(());
        }
        // Too large for one message: its allowed IPs go in parts, the first part with the
        // peer's settings (and the flag that replaces its allowed IPs), the rest adding to it.
        let rest = vec![WgPeerAttrs::PublicKey(change.key)];
        let mut head = change.head;
        let mut ips = change.ips.into_iter().peekable();
        loop {
            let head_len = peer_len(&head, &[]);
            let mut part = Vec::new();
            let mut part_len = NLA_HEADER;
            while let Some(ip) = ips.peek() {
                if self.used + head_len + part_len + ip.buffer_len() > self.budget {
                    break;
                }
                part_len += ip.buffer_len();
                part.extend(ips.next());
            }
            let nothing_fits = if part.is_empty() {
                ips.peek().is_some() || self.used + head_len > self.budget
            } else {
                false
            };
            if nothing_fits {
                if self.is_empty() {
                    return Err(format!(
                        "a message of {} bytes cannot hold one peer",
                        self.budget
                    ));
                }
                self.flush();
                continue;
            }
            self.used += peer_len(&head, &part);
            self.peers
                .push(peer_of(std::mem::replace(&mut head, rest.clone()), part));
            if ips.peek().is_none() {
                break;
            }
            self.flush();
        }
        Ok(())
    }
}

/// The `SET_DEVICE` messages of one update of `interface`: the device settings when given
/// (in the first message), then exactly the peers of `diff` — additions and updates replace
/// the peer's allowed IPs and set (or clear) its preshared key, removals remove — in messages of
/// at most `budget` bytes of attributes. No messages for an empty update. An error when the
/// module's dialect cannot carry the parameters, or a message could not hold one peer.
pub fn set_messages(
    interface: &str,
    dialect: Dialect,
    device: Option<&DeviceSettings<'_>>,
    diff: &PeerDiff,
    budget: usize,
) -> Result<Vec<AmneziaWg>, String> {
    let mut packer = Packer {
        interface: interface.to_owned(),
        dialect,
        budget,
        done: Vec::new(),
        head: Vec::new(),
        peers: Vec::new(),
        used: 0,
    };
    packer.used = packer.base_len();
    if let Some(device) = device {
        if let Some(problem) = dialect.cannot_carry(device.params) {
            return Err(problem);
        }
        packer.head = device_attrs(dialect, device);
        packer.used += packer.head.as_slice().buffer_len();
        if packer.used > budget {
            return Err(format!(
                "the device settings do not fit a message of {budget} bytes"
            ));
        }
    }
    for change in peer_changes(diff) {
        packer.push(change)?;
    }
    if !packer.is_empty() {
        packer.flush();
    }
    Ok(packer.done)
}

fn header_of(attr: &DeviceAttr) -> Option<(usize, Option<Header>)> {
    let single = |n: usize, v: u32| Some((n, (v != 0).then(|| Header::single(v))));
    match attr {
        DeviceAttr::Base(WgDeviceAttrs::H1(v)) => single(0, *v),
        DeviceAttr::Base(WgDeviceAttrs::H2(v)) => single(1, *v),
        DeviceAttr::Base(WgDeviceAttrs::H3(v)) => single(2, *v),
        DeviceAttr::Base(WgDeviceAttrs::H4(v)) => single(3, *v),
        DeviceAttr::HeaderText(n, text) => Some((usize::from(*n), text.parse().ok())),
        DeviceAttr::HeaderRange(n, packed) => {
            let start = u32::try_from(packed & u64::from(u32::MAX)).unwrap_or_default();
            let end = u32::try_from(packed >> 32).unwrap_or_default();
            let header = (*packed != 0 && start <= end).then_some(Header { start, end });
            Some((usize::from(*n), header))
        }
        _ => None,
    }
}

fn preshared(bytes: &[u8; 32]) -> Result<Option<PresharedKey>, String> {
    use base64::Engine as _;
    if bytes.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    PresharedKey::from_base64(&base64::engine::general_purpose::STANDARD.encode(bytes))
        .map(Some)
        .map_err(|e| format!("preshared key: {e}"))
}

/// One peer while the parts of a dump are read.
#[derive(Default)]
struct PeerParts {
    allowed: Vec<IpNet>,
    preshared_key: Option<PresharedKey>,
    stats: PeerStats,
}

fn read_peer(peer: &WgPeer, peers: &mut BTreeMap<PublicKey, PeerParts>) -> Result<(), String> {
    let Some(key) = peer.0.iter().find_map(|attr| match attr {
        WgPeerAttrs::PublicKey(key) => Some(PublicKey::from_bytes(*key)),
        _ => None,
    }) else {
        return Err("a peer without a public key".into());
    };
    // A peer's allowed IPs may continue in the next message: the same key again.
    let parts = peers.entry(key).or_default();
    for attr in &peer.0 {
        match attr {
            WgPeerAttrs::PresharedKey(bytes) => parts.preshared_key = preshared(bytes)?,
            WgPeerAttrs::LastHandshake(time) => {
                parts.stats.last_handshake = Timestamp::try_from(*time)
                    .ok()
                    .filter(|t| *t > Timestamp::UNIX_EPOCH);
            }
            WgPeerAttrs::RxBytes(n) => parts.stats.rx_bytes = *n,
            WgPeerAttrs::TxBytes(n) => parts.stats.tx_bytes = *n,
            WgPeerAttrs::AllowedIps(ips) => {
                for ip in ips {
                    parts.allowed.push(net_of(ip)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn net_of(ip: &WgAllowedIp) -> Result<IpNet, String> {
    let addr = ip.0.iter().find_map(|a| match a {
        WgAllowedIpAttrs::IpAddr(addr) => Some(*addr),
        _ => None,
    });
    let cidr = ip.0.iter().find_map(|a| match a {
        WgAllowedIpAttrs::Cidr(cidr) => Some(*cidr),
        _ => None,
    });
    match (addr, cidr) {
        (Some(addr), Some(cidr)) => {
            IpNet::new(addr, cidr).map_err(|_| format!("allowed IP {addr}/{cidr}"))
        }
        _ => Err("an allowed IP without address or mask".into()),
    }
}

/// Reads the messages of a `GET_DEVICE` dump into the interface's snapshot and parameters.
/// The device attributes come in the first message; peers may continue over the following
/// ones, and one peer's allowed IPs too (the same key again).
pub fn decode_dump(messages: &[AmneziaWg]) -> Result<AwgDevice, String> {
    let mut device = AwgDevice::default();
    let mut peers: BTreeMap<PublicKey, PeerParts> = BTreeMap::new();
    for attr in messages.iter().flat_map(|m| &m.attrs) {
        if let Some((n, header)) = header_of(attr) {
            device.params.h[n] = header;
            continue;
        }
        match attr {
            DeviceAttr::Base(WgDeviceAttrs::PublicKey(key)) => {
                device.snapshot.public_key = Some(PublicKey::from_bytes(*key));
            }
            DeviceAttr::Base(WgDeviceAttrs::ListenPort(port)) => {
                device.snapshot.listen_port = (*port != 0).then_some(*port);
            }
            DeviceAttr::Base(WgDeviceAttrs::Jc(v)) => device.params.jc = u32::from(*v),
            DeviceAttr::Base(WgDeviceAttrs::Jmin(v)) => device.params.jmin = u32::from(*v),
            DeviceAttr::Base(WgDeviceAttrs::Jmax(v)) => device.params.jmax = u32::from(*v),
            DeviceAttr::Base(WgDeviceAttrs::S1(v)) => device.params.s[0] = u32::from(*v),
            DeviceAttr::Base(WgDeviceAttrs::S2(v)) => device.params.s[1] = u32::from(*v),
            DeviceAttr::S3(v) => device.params.s[2] = u32::from(*v),
            DeviceAttr::S4(v) => device.params.s[3] = u32::from(*v),
            DeviceAttr::Signature(n, text) => {
                if let Some(slot) = device.params.i.get_mut(usize::from(*n)) {
                    *slot = Some(text.clone());
                }
            }
            DeviceAttr::Base(WgDeviceAttrs::Peers(list)) => {
                for peer in list {
                    read_peer(peer, &mut peers)?;
                }
            }
            _ => {}
        }
    }
    device.snapshot.peers = peers
        .into_iter()
        .map(|(key, parts)| {
            let peer = ObservedPeer {
                config: PeerConfig::new(parts.allowed, parts.preshared_key),
                stats: parts.stats,
            };
            (key, peer)
        })
        .collect();
    Ok(device)
}
