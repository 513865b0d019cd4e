//! The `amneziawg` block of a `WgServer` (its AmneziaWG obfuscation parameters), the protocol
//! switch beside it, and the CEL rules with which the API server refuses parameter sets that
//! break the protocol. Every rule here is mirrored, field for field, by
//! [`crate::amnezia::validate`]; the bounds come from [`crate::amnezia`].
//!
//! Every field is optional: the operator chooses the missing ones once (random, strong) and
//! writes them here with server-side apply, so the values live in the spec (surviving backups,
//! restores and GitOps re-applies) and never change by themselves.

use kube::KubeSchema;
use kube::core::{Message, Reason, Rule};
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::amnezia::{
    COOKIE_REPLY_SIZE, INITIATION_SIZE, MAX_HEADER, MAX_JC, MAX_JUNK, MAX_PACKET, RESPONSE_SIZE,
    TRANSPORT_SIZE, WIREGUARD_TYPES,
};

/// Regex of a message-type header: a number, or a range `a-b` (each at most 10 digits; the CEL
/// rules keep them within uint32 and `a ≤ b`).
pub(crate) const HEADER_PATTERN: &str = r"^[0-9]{1,10}(-[0-9]{1,10})?$";
/// Longest header text: two 10-digit numbers and a dash.
const HEADER_MAX_LENGTH: usize = 21;
/// Regex of a signature packet (`I1`–`I5`): a sequence of the tags amneziawg-go 0.2.16 builds —
/// `<b 0x…>` static bytes (whole bytes of hex), `<r n>` random bytes, `<rd n>` random digits,
/// `<rc n>` random letters, `<t>` a timestamp. (`<c>`, documented upstream, is refused by its
/// parser, so it is refused here too.)
pub(crate) const SIGNATURE_PATTERN: &str =
    r"^(<(b 0x([0-9a-fA-F]{2})+|r [0-9]{1,4}|rd [0-9]{1,4}|rc [0-9]{1,4}|t)>)+$";
/// Longest signature packet text: enough for 1280 static bytes.
pub(crate) const SIGNATURE_MAX_LENGTH: usize = 2600;

/// Which protocol a server speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain WireGuard.
    #[default]
    Wireguard,
    /// AmneziaWG: WireGuard with junk packets, padded handshakes and replaced message types,
    /// as the AmneziaVPN and AmneziaWG apps speak it.
    Amneziawg,
}

impl Protocol {
    pub fn is_wireguard(&self) -> bool {
        *self == Protocol::Wireguard
    }
}

/// Which AmneziaWG parameter set a server uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AmneziaVersion {
    /// AWG 1.0: junk packets, `S1`/`S2` padding and single-number headers — what every
    /// AmneziaWG client supports.
    #[default]
    #[serde(rename = "1.0")]
    V1_0,
    /// AWG 1.5: adds `S3`/`S4` padding, signature packets `I1`–`I5` and header ranges; needs
    /// recent clients.
    #[serde(rename = "1.5")]
    V1_5,
}

/// `has(self.version) && self.version == '1.5'`.
const IS_1_5: &str = "(has(self.version) && self.version == '1.5')";

/// The low end of header `h` (a CEL expression of a header string).
fn low(h: &str) -> String {
    format!("int({h}.split('-')[0])")
}

/// The high end of header `h`.
fn high(h: &str) -> String {
    format!("int({h}.split('-')[{h}.contains('-') ? 1 : 0])")
}

fn header_in_order() -> Rule {
    Rule::new(format!("{} <= {}", low("self"), high("self")))
        .message("a header range a-b needs a ≤ b")
}

fn header_in_uint32() -> Rule {
    Rule::new(format!("{} <= {MAX_HEADER}", high("self"))).message(Message::Message(format!(
        "a header is a uint32: at most {MAX_HEADER}"
    )))
}

fn header_not_wireguard() -> Rule {
    let (first, last) = WIREGUARD_TYPES;
    Rule::new(format!(
        "{} < {first} || {} > {last}",
        high("self"),
        low("self")
    ))
    .message(Message::Message(format!(
        "a header may not be one of WireGuard's own message types {first}–{last}"
    )))
}

/// Header `j` does not overlap header `i` (both `1..=4`), named at `.h<j>`.
fn headers_apart(i: u8, j: u8) -> Rule {
    let (a, b) = (format!("self.h{i}"), format!("self.h{j}"));
    Rule::new(format!(
        "!has({a}) || !has({b}) || {} < {} || {} < {}",
        high(&a),
        low(&b),
        high(&b),
        low(&a)
    ))
    .message(Message::Message(format!(
        "h{j} overlaps h{i}: every header must be distinct"
    )))
    .field_path(format!(".h{j}"))
    .reason(Reason::FieldValueInvalid)
}

/// Field `field` (named at `.field`) is refused unless the server uses AWG 1.5, or it is
/// absent, or `unless` (a CEL condition on it) holds.
fn only_with_1_5(field: &str, unless: Option<String>, message: String) -> Rule {
    let mut rule = format!("{IS_1_5} || !has(self.{field})");
    if let Some(condition) = unless {
        rule = format!("{rule} || {condition}");
    }
    Rule::new(rule)
        .message(Message::Message(message))
        .field_path(format!(".{field}"))
        .reason(Reason::FieldValueForbidden)
}

/// Header `n` is a single number unless the server uses AWG 1.5.
fn header_single_before_1_5(n: u8) -> Rule {
    only_with_1_5(
        &format!("h{n}"),
        Some(format!("!self.h{n}.contains('-')")),
        format!("h{n} may be a range only with version 1.5 (AWG 1.0 clients read one number)"),
    )
}

/// A padding `s<n>` other than 0 only with version 1.5.
fn padding_only_1_5(n: u8) -> Rule {
    only_with_1_5(
        &format!("s{n}"),
        Some(format!("self.s{n} == 0")),
        format!("s{n} may be set only with version 1.5"),
    )
}

/// A signature packet `i<n>` only with version 1.5.
fn signature_only_1_5(n: u8) -> Rule {
    only_with_1_5(
        &format!("i{n}"),
        None,
        format!("i{n} may be set only with version 1.5"),
    )
}

/// The padded lengths of two message kinds differ: `base_a + s<a> != base_b + s<b>`, named at
/// `.s<b>`.
fn lengths_differ(a: u8, base_a: i32, b: u8, base_b: i32) -> Rule {
    Rule::new(format!(
        "!has(self.s{a}) || !has(self.s{b}) || {base_a} + self.s{a} != {base_b} + self.s{b}"
    ))
    .message(Message::Message(format!(
        "s{b} makes two message kinds the same length ({base_b} + s{b} = {base_a} + s{a}), so they cannot be told apart"
    )))
    .field_path(format!(".s{b}"))
    .reason(Reason::FieldValueInvalid)
}

fn jmin_not_above_jmax() -> Rule {
    Rule::new("!has(self.jmin) || !has(self.jmax) || self.jmin <= self.jmax")
        .message("jmax must be at least jmin")
        .field_path(".jmax")
        .reason(Reason::FieldValueInvalid)
}

/// Declares a struct whose fields are all optional, one row each: `name: Type [schemars
/// arguments]` becomes `pub name: Option<Type>` — `None` when absent from JSON, absent from JSON
/// when `None` (so a server-side apply never claims a field it leaves out) — with those
/// arguments as its `#[schemars(…)]`; the doc comments above a row are the field's.
macro_rules! optional_fields {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $( $(#[$field_attr:meta])* $field:ident: $ty:ty $([$($schema:tt)*])?, )*
        }
    ) => {
        $(#[$attr])*
        pub struct $name {
            $(
                $(#[$field_attr])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                $(#[schemars($($schema)*)])?
                pub $field: Option<$ty>,
            )*
        }
    };
}

/// The schema of a string field of `min..=max` characters matching `pattern`, with CEL `rules`.
fn string_field(schema: &mut Schema, min: usize, max: usize, pattern: &str, rules: Vec<Rule>) {
    schema.insert("minLength".into(), min.into());
    schema.insert("maxLength".into(), max.into());
    schema.insert("pattern".into(), pattern.into());
    for rule in rules {
        kube::core::validate(schema, rule).expect("a CEL rule is JSON");
    }
}

/// A message-type header `h1`–`h4`: a number or a range `a-b`, in order, within uint32 and
/// none of WireGuard's own message types.
fn header(schema: &mut Schema) {
    let rules = vec![
        header_in_order(),
        header_in_uint32(),
        header_not_wireguard(),
    ];
    string_field(schema, 1, HEADER_MAX_LENGTH, HEADER_PATTERN, rules);
}

/// A signature packet `i1`–`i5`: a sequence of amneziawg-go's tags.
fn signature(schema: &mut Schema) {
    string_field(
        schema,
        3,
        SIGNATURE_MAX_LENGTH,
        SIGNATURE_PATTERN,
        Vec::new(),
    );
}

optional_fields! {
    /// AmneziaWG parameters of a server. Absent fields are chosen by the operator once, at random,
    /// and written here; a changed value is a deliberate act after which every client needs its
    /// config again. Server and clients must agree on every value but the junk ones.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
    #[serde(rename_all = "camelCase")]
    #[x_kube(
        validation = jmin_not_above_jmax(),
        validation = lengths_differ(1, INITIATION_SIZE, 2, RESPONSE_SIZE),
        validation = lengths_differ(1, INITIATION_SIZE, 3, COOKIE_REPLY_SIZE),
        validation = lengths_differ(2, RESPONSE_SIZE, 3, COOKIE_REPLY_SIZE),
        validation = lengths_differ(1, INITIATION_SIZE, 4, TRANSPORT_SIZE),
        validation = lengths_differ(2, RESPONSE_SIZE, 4, TRANSPORT_SIZE),
        validation = lengths_differ(3, COOKIE_REPLY_SIZE, 4, TRANSPORT_SIZE),
        validation = padding_only_1_5(3),
        validation = padding_only_1_5(4),
        validation = signature_only_1_5(1),
        validation = signature_only_1_5(2),
        validation = signature_only_1_5(3),
        validation = signature_only_1_5(4),
        validation = signature_only_1_5(5),
        validation = header_single_before_1_5(1),
        validation = header_single_before_1_5(2),
        validation = header_single_before_1_5(3),
        validation = header_single_before_1_5(4),
        validation = headers_apart(1, 2),
        validation = headers_apart(1, 3),
        validation = headers_apart(2, 3),
        validation = headers_apart(1, 4),
        validation = headers_apart(2, 4),
        validation = headers_apart(3, 4),
    )]
    pub struct AmneziaWgSpec {
        /// `1.0` (absent: the default; every AmneziaWG client) or `1.5` (adds `s3`, `s4`,
        /// `i1`–`i5` and header ranges).
        version: AmneziaVersion,

        /// Junk packets sent before every handshake.
        jc: i32 [range(min = 0, max = MAX_JC)],
        /// Smallest junk packet, bytes.
        jmin: i32 [range(min = 0, max = MAX_JUNK)],
        /// Largest junk packet, bytes (at least `jmin`).
        jmax: i32 [range(min = 0, max = MAX_JUNK)],

        /// Random bytes before a handshake initiation (148 bytes): at most 1280 − 148.
        s1: i32 [range(min = 0, max = MAX_PACKET - INITIATION_SIZE)],
        /// Random bytes before a handshake response (92 bytes): at most 1280 − 92; `92 + s2` may
        /// not equal `148 + s1`.
        s2: i32 [range(min = 0, max = MAX_PACKET - RESPONSE_SIZE)],
        /// Version 1.5: random bytes before a cookie reply (64 bytes): at most 1280 − 64.
        s3: i32 [range(min = 0, max = MAX_PACKET - COOKIE_REPLY_SIZE)],
        /// Version 1.5: random bytes before every data packet; the server's `mtu` (1420 when
        /// absent) plus `s4` may not exceed 1420.
        s4: i32 [range(min = 0, max = MAX_PACKET - TRANSPORT_SIZE)],

        /// Message type of handshake initiations: a number, or (version 1.5) a range `a-b`.
        h1: String [transform = header],
        /// Message type of handshake responses.
        h2: String [transform = header],
        /// Message type of cookie replies.
        h3: String [transform = header],
        /// Message type of data packets.
        h4: String [transform = header],

        /// Version 1.5: signature packet sent before every handshake, e.g. `<b 0xc70000>` `<r 32>`;
        /// only clients need it (it goes into their configs).
        i1: String [transform = signature],
        /// Version 1.5: second signature packet.
        i2: String [transform = signature],
        /// Version 1.5: third signature packet.
        i3: String [transform = signature],
        /// Version 1.5: fourth signature packet.
        i4: String [transform = signature],
        /// Version 1.5: fifth signature packet.
        i5: String [transform = signature],
    }
}

/// The spec-level rules on the protocol: the `amneziawg` block only on an AmneziaWG server, and
/// `mtu + s4` (when s4 > 0) within WireGuard's default MTU (1420, sized for a 1500-byte link under IPv6).
pub(crate) fn block_only_with_amneziawg() -> Rule {
    Rule::new("!has(self.amneziawg) || (has(self.protocol) && self.protocol == 'amneziawg')")
        .message("amneziawg parameters need protocol: amneziawg")
        .field_path(".amneziawg")
        .reason(Reason::FieldValueForbidden)
}

pub(crate) fn s4_within_mtu() -> Rule {
    use crate::amnezia::{DEFAULT_MTU, MAX_LINK_MTU};
    Rule::new(format!(
        "!has(self.amneziawg) || !has(self.amneziawg.s4) || self.amneziawg.s4 == 0 || (has(self.mtu) ? self.mtu : {DEFAULT_MTU}) + self.amneziawg.s4 <= {MAX_LINK_MTU}"
    ))
    .message(Message::Message(format!(
        "mtu (absent: {DEFAULT_MTU}) + s4 may not exceed {MAX_LINK_MTU}, or every full data packet is fragmented; lower mtu or s4"
    )))
    .field_path(".amneziawg.s4")
    .reason(Reason::FieldValueInvalid)
}
