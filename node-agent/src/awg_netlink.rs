//! The AmneziaWG kernel module's generic netlink messages, pure: building the `SET_DEVICE`
//! messages of one update (device settings, obfuscation parameters and a [`PeerDiff`]) and
//! reading a `GET_DEVICE` dump back into the agent's
//! [`InterfaceSnapshot`](crate::snapshot::InterfaceSnapshot) and [`AwgParams`].
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
    WGPEER_A_FLAGS, WGPEER_A_LAST_HANDSHAKE_TIME, WGPEER_A_PRESHARED_KEY, WGPEER_A_PUBLIC_KEY,
    WGPEER_A_RX_BYTES, WGPEER_A_TX_BYTES, WGPEER_F_REMOVE_ME, WGPEER_F_REPLACE_ALLOWEDIPS,
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

/// The peer attributes this agent reads or sends; the rest (endpoint, keepalive — whose width
/// changed between module versions —, protocol version) are skipped.
fn parse_peer(payload: &[u8]) -> Result<WgPeer, DecodeError> {
    let mut attrs = Vec::new();
    for nla in NlasIterator::new(payload) {
        let nla = nla?;
        if matches!(
            nla.kind(),
            WGPEER_A_PUBLIC_KEY
                | WGPEER_A_PRESHARED_KEY
                | WGPEER_A_FLAGS
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

impl DeviceAttr {
    /// Reads one attribute of a message of family version `version` (which says how the
    /// headers travel).
    fn parse(buf: &NlaBuffer<&[u8]>, version: u8) -> Result<Self, DecodeError> {
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
                match (Dialect::from_version(u32::from(version)), payload.len()) {
                    (Some(Dialect::Awg15), _) => DeviceAttr::HeaderText(n, text_of(payload)?),
                    // The module writes a range that fits 32 bits (only zero) as a u32.
                    (Some(Dialect::PackedRanges), 4) => {
                        let bytes: [u8; 4] = payload.try_into().unwrap_or_default();
                        DeviceAttr::HeaderRange(n, u64::from(u32::from_ne_bytes(bytes)))
                    }
                    (Some(Dialect::PackedRanges), _) => {
                        let bytes: [u8; 8] = payload
                            .try_into()
                            .map_err(|_| DecodeError::from("a header range of the wrong length"))?;
                        DeviceAttr::HeaderRange(n, u64::from_ne_bytes(bytes))
                    }
                    (Some(Dialect::Awg10) | None, _) => {
                        DeviceAttr::Base(WgDeviceAttrs::parse(buf)?)
                    }
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
            attrs.push(DeviceAttr::parse(&nla?, header.version)?);
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
    use netlink_packet_generic::GenlMessage;
    use wgsub_crds::keys::PrivateKey;

    use super::*;
    use crate::amneziawg::test_params_1_0 as params_1_0;

    /// Sends `message` through the wire format and back.
    fn wire(message: AmneziaWg) -> AmneziaWg {
        let mut packet = NetlinkMessage::from(GenlMessage::from_payload(message));
        packet.header.flags = NLM_F_REQUEST;
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        match NetlinkMessage::<GenlMessage<AmneziaWg>>::deserialize(&buffer)
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(genl) => genl.payload,
            other => panic!("not a generic netlink message: {other:?}"),
        }
    }

    /// The bytes of one attribute: kind and value.
    fn raw(attr: &DeviceAttr) -> (u16, Vec<u8>) {
        let mut buffer = vec![0; attr.value_len()];
        attr.emit_value(&mut buffer);
        (attr.kind(), buffer)
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn params_1_5() -> AwgParams {
        AwgParams {
            s: [25, 61, 18, 7],
            h: [
                Some(Header {
                    start: 100,
                    end: 200,
                }),
                Some(Header::single(2_345_678)),
                Some(Header::single(3_456_789)),
                Some(Header {
                    start: 4_000_000,
                    end: 4_100_000,
                }),
            ],
            i: [
                Some("<b 0xf6ab3267fa><r 10>".into()),
                None,
                Some("<r 16>".into()),
                None,
                Some("<t>".into()),
            ],
            ..params_1_0()
        }
    }

    fn device_part(message: &AmneziaWg) -> Vec<DeviceAttr> {
        message
            .attrs
            .iter()
            .filter(|a| !matches!(a, DeviceAttr::Base(WgDeviceAttrs::Peers(_))))
            .cloned()
            .collect()
    }

    fn peers_of(message: &AmneziaWg) -> Vec<WgPeer> {
        message
            .attrs
            .iter()
            .filter_map(|a| match a {
                DeviceAttr::Base(WgDeviceAttrs::Peers(peers)) => Some(peers.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    const BIG: usize = 8192;

    #[test]
    fn the_family_versions_name_their_dialects() {
        for dialect in [Dialect::Awg10, Dialect::Awg15, Dialect::PackedRanges] {
            assert_eq!(
                Dialect::from_version(u32::from(dialect.version())),
                Some(dialect)
            );
        }
        assert_eq!(Dialect::from_version(0), None);
        assert_eq!(Dialect::from_version(4), None);
        assert_eq!(AmneziaWg::family_name(), "amneziawg");
    }

    #[test]
    fn every_attribute_has_the_module_s_number_and_wire_format() {
        let key = PrivateKey::generate();
        let device = DeviceSettings {
            private_key: &key,
            listen_port: 51820,
            params: &params_1_5(),
        };
        let messages = set_messages(
            "awg0",
            Dialect::Awg15,
            Some(&device),
            &PeerDiff::default(),
            BIG,
        )
        .unwrap();
        assert_eq!(messages.len(), 1);
        let attrs: Vec<(u16, Vec<u8>)> = messages[0].attrs.iter().map(raw).collect();
        let u16_of = |v: u16| v.to_ne_bytes().to_vec();
        let text = |t: &str| [t.as_bytes(), &[0]].concat();
        assert_eq!(
            attrs,
            vec![
                (2, text("awg0")),
                (3, key.as_bytes().to_vec()),
                (6, u16_of(51820)),
                (9, u16_of(4)),
                (10, u16_of(40)),
                (11, u16_of(70)),
                (12, u16_of(25)),
                (13, u16_of(61)),
                (19, u16_of(18)),
                (20, u16_of(7)),
                (14, text("100-200")),
                (15, text("2345678")),
                (16, text("3456789")),
                (17, text("4000000-4100000")),
                (21, text("<b 0xf6ab3267fa><r 10>")),
                (23, text("<r 16>")),
                (25, text("<t>")),
            ]
        );
        // Version 1 modules take headers as u32; version 3 ones as end << 32 | start.
        let old = DeviceSettings {
            params: &params_1_0(),
            ..device.clone()
        };
        let v1 = set_messages(
            "awg0",
            Dialect::Awg10,
            Some(&old),
            &PeerDiff::default(),
            BIG,
        )
        .unwrap();
        let headers: Vec<_> = v1[0]
            .attrs
            .iter()
            .map(raw)
            .filter(|(k, _)| (14..=17).contains(k))
            .collect();
        assert_eq!(headers[0], (14, 1_234_567u32.to_ne_bytes().to_vec()));
        assert_eq!(headers.len(), 4);
        assert!(
            v1[0].attrs.iter().all(|a| !(19..=25).contains(&a.kind())),
            "no AmneziaWG 1.5 attribute goes to a 1.0 module"
        );
        let v3 = set_messages(
            "awg0",
            Dialect::PackedRanges,
            Some(&device),
            &PeerDiff::default(),
            BIG,
        )
        .unwrap();
        let first = v3[0].attrs.iter().map(raw).find(|(k, _)| *k == 14).unwrap();
        assert_eq!(first.1, (200u64 << 32 | 100).to_ne_bytes().to_vec());
        assert_eq!(v3[0].dialect_version, 3);
    }

    #[test]
    fn device_settings_of_every_dialect_read_back_the_same() {
        let key = PrivateKey::generate();
        for (dialect, params) in [
            (Dialect::Awg10, params_1_0()),
            (Dialect::Awg15, params_1_0()),
            (Dialect::Awg15, params_1_5()),
            (Dialect::PackedRanges, params_1_0()),
            (Dialect::PackedRanges, params_1_5()),
        ] {
            let device = DeviceSettings {
                private_key: &key,
                listen_port: 443,
                params: &params,
            };
            let sent =
                set_messages("awg1", dialect, Some(&device), &PeerDiff::default(), BIG).unwrap();
            let received: Vec<AmneziaWg> = sent.iter().cloned().map(wire).collect();
            assert_eq!(received, sent, "{dialect:?}");
            // What the module would report: the same attributes, and its public key.
            let mut reported = received;
            reported[0]
                .attrs
                .push(DeviceAttr::Base(WgDeviceAttrs::PublicKey(
                    *key.public_key().as_bytes(),
                )));
            let read = decode_dump(&reported).unwrap();
            assert_eq!(read.params, params, "{dialect:?}");
            assert_eq!(read.snapshot.public_key, Some(key.public_key()));
            assert_eq!(read.snapshot.listen_port, Some(443));
        }
    }

    #[test]
    fn a_1_0_module_refuses_1_5_parameters_and_every_module_oversized_ones() {
        let key = PrivateKey::generate();
        let newer = params_1_5();
        let device = DeviceSettings {
            private_key: &key,
            listen_port: 443,
            params: &newer,
        };
        let refused = set_messages(
            "awg0",
            Dialect::Awg10,
            Some(&device),
            &PeerDiff::default(),
            BIG,
        )
        .unwrap_err();
        assert!(refused.contains("AmneziaWG 1.0"), "{refused}");
        assert!(refused.contains("S3/S4, I1–I5, header ranges"), "{refused}");
        let only_ranges = AwgParams {
            h: [Some(Header { start: 5, end: 9 }), None, None, None],
            ..params_1_0()
        };
        assert!(
            Dialect::Awg10
                .cannot_carry(&only_ranges)
                .is_some_and(|why| why.contains("(header ranges)"))
        );
        assert_eq!(Dialect::Awg10.cannot_carry(&params_1_0()), None);
        assert_eq!(Dialect::Awg15.cannot_carry(&newer), None);
        let huge = AwgParams {
            jmax: 70_000,
            ..params_1_0()
        };
        for dialect in [Dialect::Awg10, Dialect::Awg15, Dialect::PackedRanges] {
            assert!(
                dialect
                    .cannot_carry(&huge)
                    .is_some_and(|why| why.contains("Jmax = 70000"))
            );
        }
    }

    fn diff() -> (PeerDiff, PresharedKey) {
        let psk = PresharedKey::generate();
        let diff = PeerDiff {
            add: [
                (
                    PrivateKey::generate().public_key(),
                    PeerConfig::new([net("10.8.0.2/32"), net("fd00::2/128")], Some(psk.clone())),
                ),
                (
                    PrivateKey::generate().public_key(),
                    PeerConfig::new([net("10.8.0.4/32")], None),
                ),
            ]
            .into(),
            update: [(
                PrivateKey::generate().public_key(),
                PeerConfig::new([net("10.8.0.3/32")], None),
            )]
            .into(),
            remove: vec![PrivateKey::generate().public_key()],
        };
        (diff, psk)
    }

    fn flags(peer: &WgPeer) -> Option<u32> {
        peer.0.iter().find_map(|a| match a {
            WgPeerAttrs::Flags(f) => Some(*f),
            _ => None,
        })
    }

    fn psk_of(peer: &WgPeer) -> Option<[u8; 32]> {
        peer.0.iter().find_map(|a| match a {
            WgPeerAttrs::PresharedKey(k) => Some(*k),
            _ => None,
        })
    }

    fn key_of(peer: &WgPeer) -> [u8; 32] {
        peer.0
            .iter()
            .find_map(|a| match a {
                WgPeerAttrs::PublicKey(k) => Some(*k),
                _ => None,
            })
            .expect("every peer names its key")
    }

    fn ips_of(peer: &WgPeer) -> Vec<IpNet> {
        peer.0
            .iter()
            .filter_map(|a| match a {
                WgPeerAttrs::AllowedIps(ips) => Some(ips.iter().map(|ip| net_of(ip).unwrap())),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn peers_are_added_updated_and_removed_as_the_diff_says() {
        let (diff, psk) = diff();
        let messages = set_messages("awg0", Dialect::Awg15, None, &diff, BIG).unwrap();
        assert_eq!(messages.len(), 1);
        let message = wire(messages[0].clone());
        assert_eq!(message, messages[0]);
        assert_eq!(
            device_part(&message),
            vec![DeviceAttr::Base(WgDeviceAttrs::IfName("awg0".into()))],
            "peers only: no device setting"
        );
        let peers = peers_of(&message);
        assert_eq!(peers.len(), 4);
        let by_key: BTreeMap<PublicKey, &WgPeer> = peers
            .iter()
            .map(|p| (PublicKey::from_bytes(key_of(p)), p))
            .collect();
        for (key, config) in &diff.add {
            let peer = by_key[key];
            assert_eq!(flags(peer), None, "a new peer has nothing to replace");
            assert_eq!(
                psk_of(peer),
                config.preshared_key.as_ref().map(|k| *k.as_bytes())
            );
            assert_eq!(ips_of(peer), config.allowed_ips.to_vec());
        }
        assert!(
            diff.add
                .values()
                .any(|c| c.preshared_key == Some(psk.clone()))
        );
        let (updated, config) = diff.update.iter().next().unwrap();
        let peer = by_key[updated];
        assert_eq!(flags(peer), Some(WGPEER_F_REPLACE_ALLOWEDIPS));
        assert_eq!(
            psk_of(peer),
            Some([0; 32]),
            "an update clears a dropped preshared key"
        );
        assert_eq!(ips_of(peer), config.allowed_ips.to_vec());
        let removed = by_key[&diff.remove[0]];
        assert_eq!(flags(removed), Some(WGPEER_F_REMOVE_ME));
        assert_eq!(
            removed.0.len(),
            2,
            "a removal names the key and the flag only"
        );
        assert!(
            set_messages("awg0", Dialect::Awg15, None, &PeerDiff::default(), BIG)
                .unwrap()
                .is_empty(),
            "an empty update sends nothing"
        );
    }

    #[test]
    fn a_large_update_is_split_into_messages_that_fit() {
        let key = PrivateKey::generate();
        let params = params_1_5();
        let device = DeviceSettings {
            private_key: &key,
            listen_port: 51820,
            params: &params,
        };
        let many: PeerDiff = PeerDiff {
            add: (0..300u32)
                .map(|n| {
                    let ip = format!("10.8.{}.{}/32", n / 200, n % 200 + 2);
                    (
                        PrivateKey::generate().public_key(),
                        PeerConfig::new([net(&ip)], Some(PresharedKey::generate())),
                    )
                })
                .collect(),
            // One peer with more allowed IPs than a message holds.
            update: [(
                PrivateKey::generate().public_key(),
                PeerConfig::new((0..120u8).map(|n| net(&format!("10.9.{n}.0/24"))), None),
            )]
            .into(),
            remove: (0..50)
                .map(|_| PrivateKey::generate().public_key())
                .collect(),
        };
        let budget = 1024;
        let messages = set_messages("awg0", Dialect::Awg15, Some(&device), &many, budget).unwrap();
        assert!(messages.len() > 10, "{}", messages.len());
        for (n, message) in messages.iter().enumerate() {
            assert!(
                message.buffer_len() <= budget,
                "message {n}: {}",
                message.buffer_len()
            );
            assert_eq!(wire(message.clone()), *message);
            let device_attrs = device_part(message);
            assert_eq!(
                device_attrs[0],
                DeviceAttr::Base(WgDeviceAttrs::IfName("awg0".into()))
            );
            assert_eq!(
                device_attrs.len() > 1,
                n == 0,
                "device settings go first, once"
            );
        }
        // Every peer arrives, the split one whole: its first part replaces, the rest add.
        let parts: Vec<WgPeer> = messages.iter().flat_map(peers_of).collect();
        let (big, big_config) = many.update.iter().next().unwrap();
        let big_parts: Vec<&WgPeer> = parts
            .iter()
            .filter(|p| key_of(p) == *big.as_bytes())
            .collect();
        assert!(big_parts.len() > 1);
        assert_eq!(flags(big_parts[0]), Some(WGPEER_F_REPLACE_ALLOWEDIPS));
        assert_eq!(psk_of(big_parts[0]), Some([0; 32]));
        for later in &big_parts[1..] {
            assert_eq!(flags(later), None);
            assert_eq!(psk_of(later), None);
        }
        let big_ips: Vec<IpNet> = big_parts.iter().flat_map(|p| ips_of(p)).collect();
        assert_eq!(big_ips, big_config.allowed_ips.to_vec());
        for (key, config) in &many.add {
            let found: Vec<_> = parts
                .iter()
                .filter(|p| key_of(p) == *key.as_bytes())
                .collect();
            assert_eq!(found.len(), 1);
            assert_eq!(ips_of(found[0]), config.allowed_ips.to_vec());
        }
        let removals = parts
            .iter()
            .filter(|p| flags(p) == Some(WGPEER_F_REMOVE_ME))
            .count();
        assert_eq!(removals, many.remove.len());
        assert!(
            set_messages("awg0", Dialect::Awg15, Some(&device), &many, 64)
                .is_err_and(|e| e.contains("64 bytes")),
            "a budget that holds nothing is an error, not a silent drop"
        );
    }

    fn reported_peer(
        key: &PublicKey,
        psk: Option<&PresharedKey>,
        ips: &[&str],
        extra: Vec<WgPeerAttrs>,
    ) -> WgPeer {
        let mut attrs = vec![WgPeerAttrs::PublicKey(*key.as_bytes())];
        attrs.push(WgPeerAttrs::PresharedKey(
            psk.map_or([0; 32], |k| *k.as_bytes()),
        ));
        attrs.extend(extra);
        attrs.push(WgPeerAttrs::AllowedIps(
            ips.iter().map(|s| allowed_ip(&net(s))).collect(),
        ));
        WgPeer(attrs)
    }

    /// A dump as a module sends it: device attributes first, then the peers over two messages,
    /// the second peer's allowed IPs continuing in the second one; with the attributes this
    /// agent does not read (endpoint, a u32 keepalive, protocol version, flags, newer device
    /// attributes).
    #[test]
    fn a_dump_over_several_messages_becomes_one_snapshot() {
        let key = PrivateKey::generate();
        let first = PrivateKey::generate().public_key();
        let second = PrivateKey::generate().public_key();
        let psk = PresharedKey::generate();
        let handshake = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let head = vec![
            DeviceAttr::Base(WgDeviceAttrs::ListenPort(51820)),
            DeviceAttr::Base(WgDeviceAttrs::Fwmark(0)),
            DeviceAttr::Base(WgDeviceAttrs::IfIndex(7)),
            DeviceAttr::Base(WgDeviceAttrs::IfName("awg0".into())),
            DeviceAttr::Base(WgDeviceAttrs::Jc(4)),
            DeviceAttr::Base(WgDeviceAttrs::Jmin(40)),
            DeviceAttr::Base(WgDeviceAttrs::Jmax(70)),
            DeviceAttr::Base(WgDeviceAttrs::S1(25)),
            DeviceAttr::Base(WgDeviceAttrs::S2(61)),
            DeviceAttr::S3(18),
            DeviceAttr::S4(7),
            DeviceAttr::HeaderRange(0, 200 << 32 | 100),
            DeviceAttr::HeaderRange(1, u64::from(2_345_678u32) << 32 | 2_345_678),
            DeviceAttr::HeaderRange(2, u64::from(3_456_789u32) << 32 | 3_456_789),
            DeviceAttr::HeaderRange(3, 4_100_000 << 32 | 4_000_000),
            DeviceAttr::Other(27, 0u32.to_ne_bytes().to_vec()),
            DeviceAttr::Signature(0, "<b 0xf6ab3267fa><r 10>".into()),
            DeviceAttr::Signature(2, "<r 16>".into()),
            DeviceAttr::Signature(4, "<t>".into()),
            DeviceAttr::Base(WgDeviceAttrs::PrivateKey(*key.as_bytes())),
            DeviceAttr::Base(WgDeviceAttrs::PublicKey(*key.public_key().as_bytes())),
        ];
        let endpoint: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let mut one = head;
        one.push(DeviceAttr::Base(WgDeviceAttrs::Peers(vec![
            reported_peer(
                &first,
                Some(&psk),
                &["10.8.0.2/32", "fd00::2/128"],
                vec![
                    WgPeerAttrs::Flags(8),
                    WgPeerAttrs::Endpoint(endpoint),
                    WgPeerAttrs::LastHandshake(handshake),
                    WgPeerAttrs::Unspec(Vec::new()),
                    WgPeerAttrs::RxBytes(200),
                    WgPeerAttrs::TxBytes(100),
                    WgPeerAttrs::ProtocolVersion(1),
                ],
            ),
            reported_peer(&second, None, &["10.8.1.0/24"], vec![]),
        ])));
        let two = vec![
            DeviceAttr::Base(WgDeviceAttrs::IfName("awg0".into())),
            DeviceAttr::Base(WgDeviceAttrs::Peers(vec![WgPeer(vec![
                WgPeerAttrs::PublicKey(*second.as_bytes()),
                WgPeerAttrs::AllowedIps(vec![allowed_ip(&net("10.8.2.0/24"))]),
            ])])),
        ];
        let messages: Vec<AmneziaWg> = [one, two]
            .into_iter()
            .map(|attrs| AmneziaWg {
                cmd: WireguardCmd::GetDevice,
                dialect_version: 3,
                attrs,
            })
            .map(wire)
            .collect();
        let read = decode_dump(&messages).unwrap();
        assert_eq!(read.params, params_1_5());
        assert_eq!(read.snapshot.public_key, Some(key.public_key()));
        assert_eq!(read.snapshot.listen_port, Some(51820));
        assert_eq!(read.snapshot.peers.len(), 2);
        let a = &read.snapshot.peers[&first];
        assert_eq!(
            a.config,
            PeerConfig::new([net("10.8.0.2/32"), net("fd00::2/128")], Some(psk))
        );
        assert_eq!(a.stats, crate::snapshot::REPORTED_STATS);
        let b = &read.snapshot.peers[&second];
        assert_eq!(
            b.config,
            PeerConfig::new([net("10.8.1.0/24"), net("10.8.2.0/24")], None)
        );
        assert_eq!(b.stats, PeerStats::default());
    }

    #[test]
    fn a_keepalive_of_the_newer_width_is_skipped_not_an_error() {
        // Family version 3 reports the keepalive as a u32, the crate reads a u16.
        let mut peer = Vec::new();
        let key = PrivateKey::generate().public_key();
        for (kind, value) in [
            (1u16, key.as_bytes().to_vec()),
            (5, 25u32.to_ne_bytes().to_vec()),
        ] {
            let attr = DeviceAttr::Other(kind, value);
            let mut bytes = vec![0; attr.buffer_len()];
            attr.emit(&mut bytes);
            peer.extend(bytes);
        }
        let parsed = parse_peer(&peer).unwrap();
        assert_eq!(
            parsed,
            WgPeer(vec![WgPeerAttrs::PublicKey(*key.as_bytes())])
        );
    }

    #[test]
    fn an_unset_interface_reads_as_unset() {
        // Modules report every number, zero when unset: a 1.0 module its u32 headers, a
        // version 3 module a zero range as a u32; a 1.5 module leaves unset headers out.
        let zero = 0u32.to_ne_bytes().to_vec();
        for (version, headers) in [
            (1, vec![DeviceAttr::Base(WgDeviceAttrs::H1(0))]),
            (2, vec![]),
            (
                3,
                vec![
                    DeviceAttr::Other(WGDEVICE_A_H1, zero.clone()),
                    DeviceAttr::HeaderRange(1, 0),
                ],
            ),
        ] {
            let mut attrs = vec![
                DeviceAttr::Base(WgDeviceAttrs::ListenPort(0)),
                DeviceAttr::Base(WgDeviceAttrs::Jc(0)),
            ];
            attrs.extend(headers);
            let message = wire(AmneziaWg {
                cmd: WireguardCmd::GetDevice,
                dialect_version: version,
                attrs,
            });
            assert_eq!(
                decode_dump(&[message]).unwrap(),
                AwgDevice::default(),
                "version {version}"
            );
        }
        let headless = AmneziaWg {
            cmd: WireguardCmd::GetDevice,
            dialect_version: 1,
            attrs: vec![DeviceAttr::Base(WgDeviceAttrs::Peers(vec![WgPeer(vec![])]))],
        };
        assert!(decode_dump(&[headless]).is_err_and(|e| e.contains("public key")));
        assert_eq!(
            get_message("awg0", Dialect::Awg15).attrs,
            vec![DeviceAttr::Base(WgDeviceAttrs::IfName("awg0".into()))]
        );
    }
}
