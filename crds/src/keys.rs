//! WireGuard keys: x25519 key pairs and preshared keys, their base64 form, and the guarantees
//! around secrets (zeroized on drop, never printed by `Debug`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand_core::{OsRng, RngCore};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length in bytes of every WireGuard key.
pub const KEY_LEN: usize = 32;
/// Length of a key's base64 text.
pub const KEY_BASE64_LEN: usize = 44;
/// Regex of a base64 WireGuard key: 43 characters, the last of which leaves the unused low bits
/// zero, then one `=`. Used as the schema pattern of every public key field.
pub const PUBLIC_KEY_PATTERN: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$";

/// Why a key text was refused. Never carries the key text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a WireGuard key is {KEY_BASE64_LEN} characters of base64, got {0} characters")]
    WrongTextLength(usize),
    #[error("a WireGuard key is not valid base64")]
    NotBase64,
    #[error("a WireGuard key decodes to {KEY_LEN} bytes, got {0} bytes")]
    WrongByteLength(usize),
}

fn decode(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let text = text.trim();
    if text.len() != KEY_BASE64_LEN {
        return Err(KeyError::WrongTextLength(text.chars().count()));
    }
    let bytes = Zeroizing::new(STANDARD.decode(text).map_err(|_| KeyError::NotBase64)?);
    if bytes.len() != KEY_LEN {
        return Err(KeyError::WrongByteLength(bytes.len()));
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// A private x25519 key. Zeroized on drop; `Debug` prints no key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A fresh key from the operating system's randomness, clamped as x25519 requires.
    pub fn generate() -> Self {
        let mut bytes = StaticSecret::random_from_rng(OsRng).to_bytes();
        // Clamp as `wg genkey` does, so the stored key is the canonical scalar.
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self(bytes)
    }

    /// Parses the base64 text of a private key.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self(*decode(text)?))
    }

    /// The key as raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        let secret = StaticSecret::from(self.0);
        PublicKey(DalekPublic::from(&secret).to_bytes())
    }

    /// The base64 text, in a buffer that is zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        subtle_eq(&self.0, &other.0)
    }
}
impl Eq for PrivateKey {}

fn subtle_eq(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A WireGuard preshared key (32 random bytes). Zeroized on drop; `Debug` prints no key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// 32 fresh bytes from the operating system's randomness.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses the base64 text of a preshared key.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self(*decode(text)?))
    }

    /// The base64 text, in a buffer that is zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        subtle_eq(&self.0, &other.0)
    }
}
impl Eq for PresharedKey {}

/// A public x25519 key: not secret, printed as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Parses the base64 text of a public key.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self(*decode(text)?))
    }

    /// The raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The base64 text.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn public_key_derivation_matches_rfc7748_alice_vector() {
        let private = PrivateKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let public = private.public_key();
        assert_eq!(
            public.as_bytes(),
            &hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
    }

    #[test]
    fn generated_keys_differ_and_round_trip_through_base64() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        assert_ne!(a, b);
        let text = a.to_base64();
        assert_eq!(text.len(), KEY_BASE64_LEN);
        let parsed = PrivateKey::from_base64(&text).unwrap();
        assert_eq!(parsed, a);
        assert_eq!(parsed.public_key(), a.public_key());
    }

    #[test]
    fn generated_private_keys_are_clamped() {
        let key = PrivateKey::generate();
        let bytes = key.as_bytes();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 128, 0);
        assert_eq!(bytes[31] & 64, 64);
    }

    #[test]
    fn debug_never_prints_secret_material() {
        let key = PrivateKey::generate();
        let psk = PresharedKey::generate();
        let printed = format!("{key:?} {psk:?}");
        assert!(!printed.contains(key.to_base64().as_str()));
        assert!(!printed.contains(psk.to_base64().as_str()));
        assert!(printed.contains("redacted"));
    }

    #[test]
    fn wrong_lengths_are_refused_with_the_length_named() {
        assert_eq!(
            PublicKey::from_base64(""),
            Err(KeyError::WrongTextLength(0))
        );
        assert_eq!(
            PublicKey::from_base64("abc"),
            Err(KeyError::WrongTextLength(3))
        );
        // 44 characters of valid base64 that decode to 31 bytes.
        let short = STANDARD.encode([1u8; 31]);
        assert_eq!(short.len(), 44);
        assert_eq!(
            PublicKey::from_base64(&short),
            Err(KeyError::WrongByteLength(31))
        );
        let not_base64 = "!".repeat(44);
        assert_eq!(
            PublicKey::from_base64(&not_base64),
            Err(KeyError::NotBase64)
        );
        let message = KeyError::WrongTextLength(3).to_string();
        assert!(message.contains("44"), "{message}");
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let key = PrivateKey::generate().public_key();
        let text = format!("  {}\n", key.to_base64());
        assert_eq!(PublicKey::from_base64(&text).unwrap(), key);
    }

    #[test]
    fn preshared_keys_round_trip() {
        let psk = PresharedKey::generate();
        assert_eq!(PresharedKey::from_base64(&psk.to_base64()).unwrap(), psk);
        assert_ne!(PresharedKey::generate(), psk);
    }

    proptest! {
        #[test]
        fn every_public_key_text_matches_the_schema_pattern(bytes in proptest::array::uniform32(any::<u8>())) {
            let text = PublicKey::from_bytes(bytes).to_base64();
            let re = regex::Regex::new(PUBLIC_KEY_PATTERN).unwrap();
            prop_assert!(re.is_match(&text), "{}", text);
            prop_assert_eq!(*PublicKey::from_base64(&text).unwrap().as_bytes(), bytes);
        }

        #[test]
        fn texts_matching_the_pattern_always_parse(s in "[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=") {
            prop_assert!(PublicKey::from_base64(&s).is_ok());
        }
    }
}
