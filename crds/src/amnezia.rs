//! AmneziaWG parameters: the rules a parameter set must keep (the Rust mirror of the CEL rules
//! in [`crate::resources::AmneziaWgSpec`], one error per rule, naming the same field), the
//! complete set an interface and a client config use ([`AmneziaParams`]), and the generator
//! that fills the fields a server left out with strong random values.
//!
//! Why the bounds are what they are (amneziawg-go 0.2.16 tells message kinds apart by their
//! exact length — initiation 148 + S1, response 92 + S2, cookie reply 64 + S3, data at least
//! 32 + S4 — and then by the header at that offset):
//! - two kinds of the same padded length could be taken for each other, so any two equal are
//!   refused (with S3 = S4 = 0, AWG 1.0's only case is `S2 = S1 + 56`);
//! - every packet on the wire stays within [`MAX_PACKET`] bytes of UDP payload, the bound the
//!   issue sets for junk (`Jmax ≤ 1280`): S1 ≤ 1132, S2 ≤ 1188, S3 ≤ 1216, S4 ≤ 1248;
//! - S4 lengthens *every* data packet, so the tunnel MTU plus S4 must stay within
//!   [`MAX_LINK_MTU`] (WireGuard's default MTU, which leaves room for its 80 bytes of
//!   IPv6 + UDP + WireGuard overhead on a 1500-byte link): `mtu + S4 ≤ 1420` when S4 > 0, i.e.
//!   S4 > 0 needs an `mtu` lowered by at least S4 (and is refused on jumbo-frame MTUs);
//! - headers replace WireGuard's message types 1–4: each must be distinct from the others
//!   (ranges must not overlap, or a packet's kind is ambiguous) and must not contain 1–4 (or
//!   plain WireGuard packets would pass as AmneziaWG).

use std::fmt;

use rand_core::RngCore;

use crate::resources::{AmneziaVersion, AmneziaWgSpec, Protocol, WgServerSpec};

/// Handshake initiation length, bytes.
pub const INITIATION_SIZE: i32 = 148;
/// Handshake response length.
pub const RESPONSE_SIZE: i32 = 92;
/// Cookie reply length.
pub const COOKIE_REPLY_SIZE: i32 = 64;
/// Smallest data (transport) message: header and tag of an empty packet.
pub const TRANSPORT_SIZE: i32 = 32;
/// Largest UDP payload of any one AmneziaWG packet (junk or padded handshake).
pub const MAX_PACKET: i32 = 1280;
/// Largest junk packet.
pub const MAX_JUNK: i32 = 1280;
/// Most junk packets before a handshake.
pub const MAX_JC: i32 = 128;
/// Largest header value (uint32).
pub const MAX_HEADER: u64 = u32::MAX as u64;
/// WireGuard's own message types, which no header may include.
pub const WIREGUARD_TYPES: (u64, u64) = (1, 4);
/// The interface MTU when a server names none (wireguard-go's and amneziawg-go's default).
pub const DEFAULT_MTU: i32 = 1420;
/// The most `mtu + S4` may be.
pub const MAX_LINK_MTU: i32 = 1420;

/// A message-type header: one value or an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeaderRange {
    pub start: u32,
    pub end: u32,
}

impl HeaderRange {
    /// Parses `a` or `a-b` as the schema allows it (digits only); `None` for anything else,
    /// including values beyond uint32 and `a > b`.
    pub fn parse(text: &str) -> Option<Self> {
        let (start, end) = match text.split_once('-') {
            Some((start, end)) => (start, end),
            None => (text, text),
        };
        let number = |s: &str| -> Option<u32> {
            if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let (start, end) = (number(start)?, number(end)?);
        (start <= end).then_some(Self { start, end })
    }

    pub fn single(value: u32) -> Self {
        Self {
            start: value,
            end: value,
        }
    }

    pub fn overlaps(&self, other: &Self) -> bool {
        !(self.end < other.start || other.end < self.start)
    }

    fn is_range(&self) -> bool {
        self.start != self.end
    }
}

impl fmt::Display for HeaderRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_range() {
            write!(f, "{}-{}", self.start, self.end)
        } else {
            write!(f, "{}", self.start)
        }
    }
}

/// One broken rule: the field as the API server names it (`spec.amneziawg.s2`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParamError {
    pub field: String,
    pub reason: String,
}

fn error(field: &str, reason: impl Into<String>) -> ParamError {
    ParamError {
        field: format!("spec.{field}"),
        reason: reason.into(),
    }
}

/// Checks a server's protocol settings by the rules the API server applies (see the module
/// comment): every broken rule, in field order; empty when the spec is admissible. Absent
/// fields break nothing (the operator chooses them).
pub fn validate(spec: &WgServerSpec) -> Vec<ParamError> {
    match &spec.amneziawg {
        Some(block) => validate_block(spec.protocol, spec.mtu, block),
        None => Vec::new(),
    }
}

/// [`validate`] of an `amneziawg` block on a server of `protocol` and `mtu`.
pub fn validate_block(
    protocol: Protocol,
    mtu: Option<i32>,
    block: &AmneziaWgSpec,
) -> Vec<ParamError> {
    let mut errors = Vec::new();
    if protocol != Protocol::Amneziawg {
        errors.push(error(
            "amneziawg",
            "amneziawg parameters need protocol: amneziawg",
        ));
    }
    let v15 = block.version == Some(AmneziaVersion::V1_5);
    let f = |name: &str| format!("amneziawg.{name}");
    let range = |errors: &mut Vec<ParamError>, name: &str, value: Option<i32>, max: i32| match value
    {
        Some(value) if value < 0 => {
            errors.push(error(&f(name), format!("{value} is below 0")));
        }
        Some(value) if value > max => {
            errors.push(error(&f(name), format!("{value} is above {max}")));
        }
        _ => {}
    };
    range(&mut errors, "jc", block.jc, MAX_JC);
    range(&mut errors, "jmin", block.jmin, MAX_JUNK);
    range(&mut errors, "jmax", block.jmax, MAX_JUNK);
    if let (Some(jmin), Some(jmax)) = (block.jmin, block.jmax)
        && jmin > jmax
    {
        errors.push(error(&f("jmax"), "jmax must be at least jmin"));
    }
    let paddings = [
        ("s1", block.s1, INITIATION_SIZE),
        ("s2", block.s2, RESPONSE_SIZE),
        ("s3", block.s3, COOKIE_REPLY_SIZE),
        ("s4", block.s4, TRANSPORT_SIZE),
    ];
    for (b, (name_b, value_b, base_b)) in paddings.iter().enumerate() {
        let Some(value_b) = *value_b else { continue };
        range(&mut errors, name_b, Some(value_b), MAX_PACKET - base_b);
        for (name_a, value_a, base_a) in &paddings[..b] {
            if let Some(value_a) = *value_a
                && i64::from(*base_a) + i64::from(value_a)
                    == i64::from(*base_b) + i64::from(value_b)
            {
                errors.push(error(
                    &f(name_b),
                    format!("{name_b} makes two message kinds the same length ({base_b} + {name_b} = {base_a} + {name_a})"),
                ));
            }
        }
        if !v15 && (*name_b == "s3" || *name_b == "s4") && value_b != 0 {
            errors.push(error(
                &f(name_b),
                format!("{name_b} may be set only with version 1.5"),
            ));
        }
    }
    if let Some(s4) = block.s4.filter(|s4| *s4 != 0) {
        let mtu = mtu.unwrap_or(DEFAULT_MTU);
        if i64::from(mtu) + i64::from(s4) > i64::from(MAX_LINK_MTU) {
            errors.push(error(
                &f("s4"),
                format!("mtu ({mtu}) + s4 ({s4}) is above {MAX_LINK_MTU}"),
            ));
        }
    }
    let headers = block.headers();
    let mut parsed: [Option<HeaderRange>; 4] = [None; 4];
    for (n, text) in headers.iter().enumerate() {
        let Some(text) = text else { continue };
        let name = format!("h{}", n + 1);
        let Some(header) = HeaderRange::parse(text) else {
            errors.push(error(
                &f(&name),
                format!("{text:?} is not a uint32 or a range a-b of them with a ≤ b"),
            ));
            continue;
        };
        let (first, last) = WIREGUARD_TYPES;
        if u64::from(header.start) <= last && u64::from(header.end) >= first {
            errors.push(error(
                &f(&name),
                "a header may not be one of WireGuard's own message types 1–4",
            ));
        }
        if !v15 && header.is_range() {
            errors.push(error(
                &f(&name),
                format!("{name} may be a range only with version 1.5"),
            ));
        }
        for (m, earlier) in parsed[..n].iter().enumerate() {
            if earlier.is_some_and(|earlier| earlier.overlaps(&header)) {
                errors.push(error(&f(&name), format!("{name} overlaps h{}", m + 1)));
            }
        }
        parsed[n] = Some(header);
    }
    for (n, signature) in block.signatures().iter().enumerate() {
        let Some(signature) = signature else { continue };
        let name = format!("i{}", n + 1);
        if !is_signature(signature) {
            errors.push(error(
                &f(&name),
                "not a sequence of <b 0x..>, <r n>, <rd n>, <rc n>, <t> tags",
            ));
        }
        if !v15 {
            errors.push(error(
                &f(&name),
                format!("{name} may be set only with version 1.5"),
            ));
        }
    }
    errors
}

/// Whether `text` matches [`crate::resources::amneziawg::SIGNATURE_PATTERN`] and its length
/// bounds.
fn is_signature(text: &str) -> bool {
    use crate::resources::amneziawg::SIGNATURE_MAX_LENGTH;
    if text.len() < 3 || text.len() > SIGNATURE_MAX_LENGTH {
        return false;
    }
    let digits = |s: &str| (1..=4).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let mut rest = text;
    while !rest.is_empty() {
        let Some(tag) = rest.strip_prefix('<').and_then(|r| r.split_once('>')) else {
            return false;
        };
        let (body, after) = tag;
        let ok = match body.split_once(' ') {
            None => body == "t",
            Some(("b", hex)) => hex.strip_prefix("0x").is_some_and(|hex| {
                !hex.is_empty() && hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit())
            }),
            Some(("r" | "rd" | "rc", n)) => digits(n),
            Some(_) => false,
        };
        if !ok {
            return false;
        }
        rest = after;
    }
    true
}

/// A complete AmneziaWG parameter set: what an interface is configured with and what every
/// client config carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmneziaParams {
    pub version: AmneziaVersion,
    pub jc: u32,
    pub jmin: u32,
    pub jmax: u32,
    pub s1: u32,
    pub s2: u32,
    /// 0 unless version 1.5.
    pub s3: u32,
    /// 0 unless version 1.5.
    pub s4: u32,
    pub h1: HeaderRange,
    pub h2: HeaderRange,
    pub h3: HeaderRange,
    pub h4: HeaderRange,
    /// Signature packets `I1`–`I5` (version 1.5 only), absent ones skipped.
    pub signatures: [Option<String>; 5],
}

impl AmneziaParams {
    /// The `(key, value)` pairs in `.conf` order and spelling (`Jc`, `Jmin`, `Jmax`, `S1`, `S2`,
    /// then `S3`, `S4` for version 1.5, `H1`–`H4`, then the signature packets that are set).
    /// The UAPI takes the same keys in lower case (where it refuses 0 for `jc`, `jmin` and
    /// `jmax`: leave a zero out, absent is 0).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("Jc", self.jc.to_string()),
            ("Jmin", self.jmin.to_string()),
            ("Jmax", self.jmax.to_string()),
            ("S1", self.s1.to_string()),
            ("S2", self.s2.to_string()),
        ];
        if self.version == AmneziaVersion::V1_5 {
            pairs.push(("S3", self.s3.to_string()));
            pairs.push(("S4", self.s4.to_string()));
        }
        pairs.extend([
            ("H1", self.h1.to_string()),
            ("H2", self.h2.to_string()),
            ("H3", self.h3.to_string()),
            ("H4", self.h4.to_string()),
        ]);
        const SIGNATURE_KEYS: [&str; 5] = ["I1", "I2", "I3", "I4", "I5"];
        for (key, signature) in SIGNATURE_KEYS.iter().zip(&self.signatures) {
            if let Some(signature) = signature {
                pairs.push((key, signature.clone()));
            }
        }
        pairs
    }

    /// A stable fingerprint of the set (16 hex digits): equal exactly when [`Self::pairs`]
    /// holds the same keys and values, whatever their order — what tells that a server's
    /// clients need new configs. See [`fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.pairs())
    }
}

/// The fingerprint of `(key, value)` pairs, independent of their order: FNV-1a (64 bit) over
/// the pairs sorted, each part length-prefixed so no two different sets encode alike. Fixed by
/// its definition (no randomly seeded hasher), so it may be stored and compared across
/// processes and releases.
pub fn fingerprint(pairs: &[(&str, String)]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut sorted: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sorted.sort_unstable();
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (key, value) in sorted {
        feed(key.as_bytes());
        feed(value.as_bytes());
    }
    format!("{hash:016x}")
}

fn unsigned(value: Option<i32>) -> Option<u32> {
    value.and_then(|v| u32::try_from(v).ok())
}

impl AmneziaWgSpec {
    fn headers(&self) -> [&Option<String>; 4] {
        [&self.h1, &self.h2, &self.h3, &self.h4]
    }

    fn signatures(&self) -> [&Option<String>; 5] {
        [&self.i1, &self.i2, &self.i3, &self.i4, &self.i5]
    }

    /// The complete set, or `None` while some field is still to be chosen (`jc`, `jmin`,
    /// `jmax`, `s1`, `s2`, `h1`–`h4`; with version 1.5 also `s3` and `s4`). Does not check the
    /// rules: see [`WgServerSpec::amneziawg_params`].
    pub fn effective(&self) -> Option<AmneziaParams> {
        let version = self.version.unwrap_or_default();
        let v15 = version == AmneziaVersion::V1_5;
        let header = |h: &Option<String>| h.as_deref().and_then(HeaderRange::parse);
        Some(AmneziaParams {
            version,
            jc: unsigned(self.jc)?,
            jmin: unsigned(self.jmin)?,
            jmax: unsigned(self.jmax)?,
            s1: unsigned(self.s1)?,
            s2: unsigned(self.s2)?,
            s3: if v15 { unsigned(self.s3)? } else { 0 },
            s4: if v15 { unsigned(self.s4)? } else { 0 },
            h1: header(&self.h1)?,
            h2: header(&self.h2)?,
            h3: header(&self.h3)?,
            h4: header(&self.h4)?,
            signatures: if v15 {
                self.signatures().map(Clone::clone)
            } else {
                Default::default()
            },
        })
    }
}

impl WgServerSpec {
    /// Whether the server speaks AmneziaWG.
    pub fn is_amneziawg(&self) -> bool {
        self.protocol == Protocol::Amneziawg
    }

    /// The AmneziaWG parameters to bring the interface up with and to put into client configs:
    /// `None` for a WireGuard server, and for an AmneziaWG server whose parameters are not all
    /// chosen yet or break a rule — such a server must not be brought up.
    pub fn amneziawg_params(&self) -> Option<AmneziaParams> {
        if !self.is_amneziawg() || !validate(self).is_empty() {
            return None;
        }
        self.amneziawg.as_ref()?.effective()
    }
}

/// Why the missing parameters cannot be chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The given headers leave no single value free for another (they cover nearly all of
    /// uint32).
    #[error("spec.amneziawg.{0}: the other headers leave no value free for it")]
    NoRoomForHeader(&'static str),
    /// The given parameters break a rule, so no completion of them is valid.
    #[error("{0}")]
    Invalid(ParamError),
}

/// Ranges the generator draws from (inclusive). Junk: a few packets of tens to hundreds of
/// bytes; paddings as AmneziaVPN's own generator draws them; headers anywhere above WireGuard's
/// types within int32 (some clients read them signed).
const GEN_JC: (i32, i32) = (3, 10);
const GEN_JMIN: (i32, i32) = (16, 64);
const GEN_JMAX_SPREAD: (i32, i32) = (32, 256);
const GEN_S12: (i32, i32) = (15, 150);
const GEN_S3: (i32, i32) = (1, 64);
const GEN_HEADER: (i32, i32) = (5, i32::MAX);

/// A uniform draw from `lo..=hi` (`lo ≤ hi`, no modulo bias).
fn draw(rng: &mut impl RngCore, (lo, hi): (i32, i32)) -> i32 {
    let span = (i64::from(hi) - i64::from(lo) + 1) as u64;
    let zone = u64::MAX - (u64::MAX % span);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (i64::from(lo) + (x % span) as i64) as i32;
        }
    }
}

/// `block` with every absent parameter chosen at random (values already there are kept), so
/// that the whole set keeps every rule of [`validate`] given the server's `mtu`. Version 1.0
/// (absent) gets the 1.0 set; 1.5 also gets `s3` (random) and `s4` = 0 — amneziawg-go 0.2.16
/// sends keepalives unpadded but reads them as padded, so a non-zero `s4` is left to an
/// operator who chooses it. Signature packets are never chosen: they are client-side mimicry
/// an operator writes for the network at hand. Header ranges are never chosen either: a wide
/// range lets a data packet of the right length pass for a handshake.
pub fn complete(
    block: &AmneziaWgSpec,
    mtu: Option<i32>,
    rng: &mut impl RngCore,
) -> Result<AmneziaWgSpec, GenerateError> {
    let check = |candidate: &AmneziaWgSpec| -> Result<(), GenerateError> {
        match validate_block(Protocol::Amneziawg, mtu, candidate)
            .into_iter()
            .next()
        {
            Some(error) => Err(GenerateError::Invalid(error)),
            None => Ok(()),
        }
    };
    check(block)?;
    let mut out = block.clone();
    let v15 = block.version == Some(AmneziaVersion::V1_5);
    out.jc = out.jc.or_else(|| Some(draw(rng, GEN_JC)));
    out.jmin = match (out.jmin, out.jmax) {
        (Some(jmin), _) => Some(jmin),
        (None, Some(jmax)) => {
            let hi = GEN_JMIN.1.min(jmax);
            Some(draw(rng, (GEN_JMIN.0.min(hi), hi)))
        }
        (None, None) => Some(draw(rng, GEN_JMIN)),
    };
    if out.jmax.is_none() {
        let jmin = out.jmin.unwrap_or_default();
        let lo = (jmin + GEN_JMAX_SPREAD.0).min(MAX_JUNK);
        let hi = (jmin + GEN_JMAX_SPREAD.1).min(MAX_JUNK);
        out.jmax = Some(draw(rng, (lo, hi)));
    }
    // Paddings: draw, and step past the (at most three) values that would make two lengths
    // equal.
    fill_padding(&mut out, Padding::S1, GEN_S12, mtu, rng);
    fill_padding(&mut out, Padding::S2, GEN_S12, mtu, rng);
    if v15 {
        fill_padding(&mut out, Padding::S3, GEN_S3, mtu, rng);
        out.s4 = out.s4.or(Some(0));
    }
    let mut taken: Vec<HeaderRange> = out
        .headers()
        .iter()
        .filter_map(|h| h.as_deref().and_then(HeaderRange::parse))
        .collect();
    for (n, name) in ["h1", "h2", "h3", "h4"].into_iter().enumerate() {
        let slot = match n {
            0 => &mut out.h1,
            1 => &mut out.h2,
            2 => &mut out.h3,
            _ => &mut out.h4,
        };
        if slot.is_some() {
            continue;
        }
        let value = (0..1024)
            .map(|_| draw(rng, GEN_HEADER))
            .map(|v| v as u32)
            .find(|v| !taken.iter().any(|t| t.overlaps(&HeaderRange::single(*v))))
            .ok_or(GenerateError::NoRoomForHeader(name))?;
        taken.push(HeaderRange::single(value));
        *slot = Some(value.to_string());
    }
    check(&out)?;
    Ok(out)
}

/// [`complete`] with strong random values from the operating system.
pub fn complete_at_random(
    block: &AmneziaWgSpec,
    mtu: Option<i32>,
) -> Result<AmneziaWgSpec, GenerateError> {
    complete(block, mtu, &mut rand_core::OsRng)
}

#[derive(Clone, Copy)]
enum Padding {
    S1,
    S2,
    S3,
}

fn padding_mut(block: &mut AmneziaWgSpec, which: Padding) -> &mut Option<i32> {
    match which {
        Padding::S1 => &mut block.s1,
        Padding::S2 => &mut block.s2,
        Padding::S3 => &mut block.s3,
    }
}

/// Chooses padding `which` if absent: a draw from `range`, stepped up (wrapping) past values
/// that would break a rule.
fn fill_padding(
    out: &mut AmneziaWgSpec,
    which: Padding,
    range: (i32, i32),
    mtu: Option<i32>,
    rng: &mut impl RngCore,
) {
    if padding_mut(out, which).is_some() {
        return;
    }
    let mut value = draw(rng, range);
    for _ in 0..=(range.1 - range.0) {
        let mut candidate = out.clone();
        *padding_mut(&mut candidate, which) = Some(value);
        if validate_block(Protocol::Amneziawg, mtu, &candidate).is_empty() {
            *out = candidate;
            return;
        }
        value = if value == range.1 { range.0 } else { value + 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_core::RngCore;

    /// A deterministic generator for the tests (SplitMix64).
    struct SplitMix(u64);

    impl RngCore for SplitMix {
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            rand_core::impls::fill_bytes_via_next(self, dest)
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    fn spec(amneziawg: serde_json::Value) -> WgServerSpec {
        serde_json::from_value(serde_json::json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "wg0-key"},
            "protocol": "amneziawg",
            "amneziawg": amneziawg,
        }))
        .unwrap()
    }

    fn good_1_0() -> serde_json::Value {
        serde_json::json!({
            "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
            "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
        })
    }

    fn good_1_5() -> serde_json::Value {
        serde_json::json!({
            "version": "1.5", "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61, "s3": 17,
            "s4": 0, "h1": "100-200", "h2": "300", "h3": "400-500", "h4": "600-4294967295",
            "i1": "<b 0xc70000000108><r 16><t>", "i3": "<rc 8><rd 4>",
        })
    }

    /// `base` with `key` set (or removed, for null).
    fn with(base: serde_json::Value, changes: &[(&str, serde_json::Value)]) -> serde_json::Value {
        let mut object = base;
        for (key, value) in changes {
            if value.is_null() {
                object.as_object_mut().unwrap().remove(*key);
            } else {
                object[*key] = value.clone();
            }
        }
        object
    }

    fn fields(spec: &WgServerSpec) -> Vec<String> {
        validate(spec).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn good_sets_of_both_versions_and_an_empty_block_keep_every_rule() {
        for block in [good_1_0(), good_1_5(), serde_json::json!({})] {
            assert_eq!(validate(&spec(block.clone())), vec![], "{block}");
        }
        let mut wireguard = spec(good_1_0());
        wireguard.protocol = Protocol::Wireguard;
        wireguard.amneziawg = None;
        assert_eq!(validate(&wireguard), vec![]);
    }

    /// Each case breaks exactly one rule, and the error names the field the CEL rule names.
    fn bad_cases() -> Vec<(serde_json::Value, Option<i32>, &'static str)> {
        use serde_json::json;
        let g = good_1_0;
        let v = good_1_5;
        vec![
            (with(g(), &[("jc", json!(129))]), None, "jc"),
            (with(g(), &[("jc", json!(-1))]), None, "jc"),
            (with(g(), &[("jmin", json!(-1))]), None, "jmin"),
            (with(g(), &[("jmax", json!(1281))]), None, "jmax"),
            (with(g(), &[("jmin", json!(71))]), None, "jmax"),
            (
                with(g(), &[("s1", json!(1133)), ("s2", json!(10))]),
                None,
                "s1",
            ),
            (with(g(), &[("s2", json!(1189))]), None, "s2"),
            (with(g(), &[("s2", json!(81))]), None, "s2"),
            (with(g(), &[("s3", json!(5))]), None, "s3"),
            (with(g(), &[("s4", json!(5))]), Some(1400), "s4"),
            (with(g(), &[("i1", json!("<r 8>"))]), None, "i1"),
            (with(g(), &[("i5", json!("<t>"))]), None, "i5"),
            (with(g(), &[("h3", json!("10-20"))]), None, "h3"),
            (with(g(), &[("h1", json!("1"))]), None, "h1"),
            (with(g(), &[("h2", json!("4"))]), None, "h2"),
            (with(g(), &[("h4", json!("4294967296"))]), None, "h4"),
            (with(g(), &[("h2", json!("1234567"))]), None, "h2"),
            (with(g(), &[("h4", json!("3456789"))]), None, "h4"),
            (with(v(), &[("h1", json!("0-5"))]), None, "h1"),
            (with(v(), &[("h1", json!("200-100"))]), None, "h1"),
            (with(v(), &[("h2", json!("150"))]), None, "h2"),
            (with(v(), &[("h4", json!("450-550"))]), None, "h4"),
            (with(v(), &[("h3", json!("250-350"))]), None, "h3"),
            (with(v(), &[("s3", json!(1217))]), None, "s3"),
            (with(v(), &[("s3", json!(109))]), None, "s3"),
            (with(v(), &[("s3", json!(89))]), None, "s3"),
            (
                with(v(), &[("s1", json!(20)), ("s4", json!(136))]),
                Some(1280),
                "s4",
            ),
            (with(v(), &[("s4", json!(121))]), Some(1280), "s4"),
            (with(v(), &[("s4", json!(49))]), Some(1280), "s4"),
            (with(v(), &[("s4", json!(10))]), None, "s4"),
            (with(v(), &[("s4", json!(10))]), Some(1411), "s4"),
            (with(v(), &[("i2", json!("<c>"))]), None, "i2"),
            (with(v(), &[("i2", json!("<b 0xabc>"))]), None, "i2"),
            (with(v(), &[("i2", json!("<r 12345>"))]), None, "i2"),
            (with(v(), &[("i2", json!("<r 8> <t>"))]), None, "i2"),
        ]
    }

    #[test]
    fn each_broken_rule_is_named_by_its_field() {
        for (block, mtu, field) in bad_cases() {
            let mut server = spec(block.clone());
            server.mtu = mtu;
            assert_eq!(
                fields(&server),
                vec![format!("spec.amneziawg.{field}")],
                "{block} with mtu {mtu:?}"
            );
            assert_eq!(server.amneziawg_params(), None, "{block}");
        }
    }

    #[test]
    fn bounds_themselves_are_admitted() {
        use serde_json::json;
        let cases = [
            with(
                good_1_0(),
                &[("jc", json!(0)), ("jmin", json!(0)), ("jmax", json!(0))],
            ),
            with(
                good_1_0(),
                &[
                    ("jc", json!(128)),
                    ("jmin", json!(1280)),
                    ("jmax", json!(1280)),
                ],
            ),
            with(good_1_0(), &[("s1", json!(1132)), ("s2", json!(1187))]),
            with(
                good_1_0(),
                &[("s1", json!(0)), ("s2", json!(0)), ("s3", json!(0))],
            ),
            with(
                good_1_0(),
                &[
                    ("h1", json!("0")),
                    ("h2", json!("5")),
                    ("h4", json!("4294967295")),
                ],
            ),
            with(
                good_1_5(),
                &[
                    ("s3", json!(1216)),
                    ("i1", json!(null)),
                    ("i3", json!(null)),
                ],
            ),
            with(
                good_1_5(),
                &[
                    ("h1", json!("0-0")),
                    ("h4", json!("5-99")),
                    ("h2", json!("4294967295")),
                ],
            ),
            // 148 + s1 = 92 + s2 is refused, but a step either side is fine.
            with(good_1_0(), &[("s1", json!(25)), ("s2", json!(80))]),
            with(good_1_0(), &[("s1", json!(25)), ("s2", json!(82))]),
        ];
        for block in cases {
            assert_eq!(validate(&spec(block.clone())), vec![], "{block}");
        }
        let mut low_mtu = spec(with(good_1_5(), &[("s4", json!(140))]));
        low_mtu.mtu = Some(1280);
        assert_eq!(validate(&low_mtu), vec![]);
    }

    #[test]
    fn a_block_on_a_wireguard_server_is_refused() {
        let mut server = spec(good_1_0());
        server.protocol = Protocol::Wireguard;
        assert_eq!(fields(&server), vec!["spec.amneziawg"]);
        assert_eq!(server.amneziawg_params(), None);
    }

    #[test]
    fn several_broken_rules_are_all_reported() {
        let block =
            serde_json::json!({"jmin": 90, "jmax": 10, "s1": 0, "s2": 56, "h1": "7", "h2": "7"});
        assert_eq!(
            fields(&spec(block)),
            vec![
                "spec.amneziawg.jmax",
                "spec.amneziawg.s2",
                "spec.amneziawg.h2"
            ]
        );
    }

    #[test]
    fn headers_parse_as_numbers_or_ordered_ranges_within_uint32() {
        assert_eq!(HeaderRange::parse("7"), Some(HeaderRange::single(7)));
        assert_eq!(
            HeaderRange::parse("5-4294967295"),
            Some(HeaderRange {
                start: 5,
                end: u32::MAX
            })
        );
        for bad in [
            "",
            "-",
            "5-",
            "-5",
            "9-8",
            "4294967296",
            "1-2-3",
            "+5",
            " 5",
            "0x10",
            "١",
        ] {
            assert_eq!(HeaderRange::parse(bad), None, "{bad:?}");
        }
        for text in ["7", "5-9", "0", "4294967295"] {
            assert_eq!(HeaderRange::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(HeaderRange::parse("8-8").unwrap().to_string(), "8");
        let a = HeaderRange { start: 10, end: 20 };
        assert!(a.overlaps(&HeaderRange::single(20)));
        assert!(a.overlaps(&HeaderRange { start: 0, end: 10 }));
        assert!(!a.overlaps(&HeaderRange::single(21)));
        assert!(!a.overlaps(&HeaderRange::single(9)));
    }

    #[test]
    fn fingerprints_are_fixed_and_ignore_pair_order() {
        let pairs = |list: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
            list.iter().map(|(k, v)| (*k, v.to_string())).collect()
        };
        let forward = pairs(&[("Jc", "4"), ("Jmin", "40"), ("H1", "5-9")]);
        let backward = pairs(&[("H1", "5-9"), ("Jmin", "40"), ("Jc", "4")]);
        assert_eq!(fingerprint(&forward), fingerprint(&backward));
        // FNV-1a of nothing: the value is part of the stored contract, not an accident.
        assert_eq!(fingerprint(&[]), "cbf29ce484222325");
        let params = spec(good_1_0()).amneziawg_params().unwrap();
        assert_eq!(params.fingerprint(), params.clone().fingerprint());
        assert_eq!(params.fingerprint().len(), 16);
        assert!(params.fingerprint().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn fingerprints_change_with_any_parameter() {
        let base = spec(good_1_0()).amneziawg_params().unwrap().fingerprint();
        for (key, value) in [
            ("jc", serde_json::json!(5)),
            ("jmin", serde_json::json!(41)),
            ("jmax", serde_json::json!(71)),
            ("s1", serde_json::json!(26)),
            ("s2", serde_json::json!(62)),
            ("h1", serde_json::json!("1234568")),
            ("h4", serde_json::json!("4567891")),
        ] {
            let changed = spec(with(good_1_0(), &[(key, value)]))
                .amneziawg_params()
                .unwrap();
            assert_ne!(changed.fingerprint(), base, "{key} changed");
        }
        // Opting into 1.5 changes the set clients need even with S3 = S4 = 0.
        let v15 = spec(with(
            good_1_0(),
            &[
                ("version", serde_json::json!("1.5")),
                ("s3", serde_json::json!(0)),
                ("s4", serde_json::json!(0)),
            ],
        ))
        .amneziawg_params()
        .unwrap();
        assert_ne!(v15.fingerprint(), base);
        // Parts are length-prefixed: moving characters between key and value, or between
        // neighbouring values, is a different set.
        let split = |a: &'static str, b: &str| vec![(a, b.to_string())];
        assert_ne!(
            fingerprint(&split("S1", "25")),
            fingerprint(&split("S12", "5"))
        );
        assert_ne!(
            fingerprint(&[("H1", "1".into()), ("H2", "23".into())]),
            fingerprint(&[("H1", "12".into()), ("H2", "3".into())])
        );
    }

    #[test]
    fn effective_sets_need_every_field_and_give_conf_pairs_in_order() {
        let pairs = |block: serde_json::Value| -> Vec<String> {
            let params = spec(block).amneziawg_params().unwrap();
            params
                .pairs()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        };
        assert_eq!(
            pairs(good_1_0()),
            [
                "Jc=4",
                "Jmin=40",
                "Jmax=70",
                "S1=25",
                "S2=61",
                "H1=1234567",
                "H2=2345678",
                "H3=3456789",
                "H4=4567890"
            ]
        );
        assert_eq!(
            pairs(good_1_5()),
            [
                "Jc=4",
                "Jmin=40",
                "Jmax=70",
                "S1=25",
                "S2=61",
                "S3=17",
                "S4=0",
                "H1=100-200",
                "H2=300",
                "H3=400-500",
                "H4=600-4294967295",
                "I1=<b 0xc70000000108><r 16><t>",
                "I3=<rc 8><rd 4>",
            ]
        );
        for missing in ["jc", "jmin", "jmax", "s1", "s2", "h1", "h2", "h3", "h4"] {
            let server = spec(with(good_1_0(), &[(missing, serde_json::Value::Null)]));
            assert_eq!(server.amneziawg_params(), None, "without {missing}");
            assert!(
                validate(&server).is_empty(),
                "absent {missing} breaks no rule"
            );
        }
        for missing in ["s3", "s4"] {
            let server = spec(with(good_1_5(), &[(missing, serde_json::Value::Null)]));
            assert_eq!(server.amneziawg_params(), None, "1.5 without {missing}");
        }
        let mut wireguard = spec(good_1_0());
        wireguard.protocol = Protocol::Wireguard;
        wireguard.amneziawg = None;
        assert_eq!(wireguard.amneziawg_params(), None);
        let mut no_block = spec(good_1_0());
        no_block.amneziawg = None;
        assert_eq!(no_block.amneziawg_params(), None);
    }

    fn block(value: serde_json::Value) -> AmneziaWgSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn completing_refuses_a_broken_set_and_a_set_without_room_for_a_header() {
        let broken = block(with(good_1_0(), &[("jmin", serde_json::json!(90))]));
        assert!(matches!(
            complete(&broken, None, &mut SplitMix(1)),
            Err(GenerateError::Invalid(e)) if e.field == "spec.amneziawg.jmax"
        ));
        let crowded = block(serde_json::json!({"version": "1.5", "h1": "5-4294967295"}));
        assert_eq!(
            complete(&crowded, None, &mut SplitMix(1)),
            Err(GenerateError::NoRoomForHeader("h2"))
        );
    }

    #[test]
    fn a_complete_set_is_left_as_it_is() {
        for value in [good_1_0(), good_1_5()] {
            let full = block(value);
            assert_eq!(complete(&full, None, &mut SplitMix(9)).unwrap(), full);
        }
    }

    /// The fields of a block, by name, to drop some in the property tests.
    const FIELDS: [&str; 11] = [
        "jc", "jmin", "jmax", "s1", "s2", "s3", "s4", "h1", "h2", "h3", "h4",
    ];

    proptest! {
        #[test]
        fn generated_sets_always_keep_every_rule(seed in any::<u64>(), v15 in any::<bool>(), mtu in proptest::option::of(1280..=9000i32)) {
            let empty = AmneziaWgSpec {
                version: v15.then_some(AmneziaVersion::V1_5),
                ..Default::default()
            };
            let full = complete(&empty, mtu, &mut SplitMix(seed)).unwrap();
            let mut server = spec(serde_json::to_value(&full).unwrap());
            server.mtu = mtu;
            prop_assert_eq!(validate(&server), vec![]);
            let params = server.amneziawg_params().expect("complete");
            prop_assert!((GEN_JC.0 as u32..=GEN_JC.1 as u32).contains(&params.jc));
            prop_assert!(params.jmin <= params.jmax);
            prop_assert!(params.s1 >= 15 && params.s2 >= 15);
            prop_assert_eq!(params.s4, 0);
            prop_assert_eq!(params.s3 > 0, v15);
            prop_assert_eq!(full.s3.is_some() || full.s4.is_some(), v15);
            prop_assert_eq!(&params.signatures, &<[Option<String>; 5]>::default());
            for h in [params.h1, params.h2, params.h3, params.h4] {
                prop_assert!(h.start == h.end && h.start >= 5 && h.start <= i32::MAX as u32);
            }
        }

        #[test]
        fn completing_keeps_given_values_and_fills_the_rest(seed in any::<u64>(), other in any::<u64>(), dropped in 0u16..(1 << 11), v15 in any::<bool>()) {
            let empty = AmneziaWgSpec {
                version: v15.then_some(AmneziaVersion::V1_5),
                ..Default::default()
            };
            let full = serde_json::to_value(complete(&empty, None, &mut SplitMix(seed)).unwrap()).unwrap();
            let mut partial = full.clone();
            for (n, field) in FIELDS.iter().enumerate() {
                if dropped & (1 << n) != 0 {
                    partial.as_object_mut().unwrap().remove(*field);
                }
            }
            let filled = complete(&block(partial.clone()), None, &mut SplitMix(other)).unwrap();
            prop_assert_eq!(validate(&spec(serde_json::to_value(&filled).unwrap())), vec![]);
            prop_assert!(filled.effective().is_some());
            let filled = serde_json::to_value(&filled).unwrap();
            for (key, value) in partial.as_object().unwrap() {
                prop_assert_eq!(&filled[key], value, "{} was given", key);
            }
        }
    }
}
