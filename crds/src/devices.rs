//! The rules about a user's devices that the api and the bot share. Which peers are a user's:
//! a peer is the user's when it is named `tg-<id>-<n>` AND labelled with the user's
//! subscription — neither a label nor a name alone grants access. Device names as users give
//! them and as they are shown: trimmed, at most [`MAX_DEVICE_NAME`] characters, no control
//! characters, and without the invisible characters that make a name read differently from what
//! it is (bidirectional controls such as U+202E RIGHT-TO-LEFT OVERRIDE, and zero-width
//! characters).
//!
//! Also: when a device counts as connected ([`is_connected`]), and the mark a subscription
//! carries once its user removed every device ([`ANNOTATION_DEVICES_REMOVED`]), so that the
//! operator does not give back the first device the user deleted. And what a new device's
//! spec holds before anything is assigned to it ([`WgPeerSpec::on_server`]).

use crate::resources::{LABEL_SUBSCRIPTION, subscription_name};
use crate::{VpnSubscription, WgPeer, WgPeerSpec};
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

/// The annotation on a `VpnSubscription` whose user deleted their last device (value `"true"`):
/// the operator then creates no first device for it. The api and the bot set it before deleting
/// a user's last device and remove it when the user adds a device.
pub const ANNOTATION_DEVICES_REMOVED: &str = "wgsub.io/devices-removed-by-user";

/// Whether the operator gives the subscription its first device when it has none: yes, unless
/// its user deleted their last device themselves ([`ANNOTATION_DEVICES_REMOVED`]).
pub fn wants_first_device(subscription: &VpnSubscription) -> bool {
    subscription
        .annotations()
        .get(ANNOTATION_DEVICES_REMOVED)
        .is_none_or(|value| value != "true")
}

impl WgPeerSpec {
    /// A new device on `server`: enabled, with no key, address, expiry or name yet — the spec
    /// the API server's defaults make of `{server}` alone.
    pub fn on_server(server: impl Into<String>) -> Self {
        WgPeerSpec {
            server: server.into(),
            public_key: None,
            private_key_secret_ref: None,
            preshared_key_secret_ref: None,
            address: None,
            address6: None,
            expires_at: None,
            enabled: true,
            device_name: None,
        }
    }
}

/// How recent a handshake must be for a device to count as connected now. WireGuard renews a
/// session's handshake every two minutes while traffic flows (REKEY_AFTER_TIME), so a device in
/// use always has one younger than this.
pub const CONNECTED_WITHIN: SignedDuration = SignedDuration::from_secs(180);

/// Whether a device with this last handshake is connected at `now`: a handshake at most
/// [`CONNECTED_WITHIN`] old. A handshake stamped after `now` (the node's clock ahead of ours)
/// counts as connected.
pub fn is_connected(last_handshake: Option<Timestamp>, now: Timestamp) -> bool {
    last_handshake.is_some_and(|at| now.duration_since(at) <= CONNECTED_WITHIN)
}

/// Whether the peer is one of the user's devices (name and label).
pub fn is_users_peer(user_id: i64, peer: &WgPeer) -> bool {
    let subscription = subscription_name(user_id);
    is_users_peer_name(user_id, &peer.name_any())
        && peer.labels().get(LABEL_SUBSCRIPTION) == Some(&subscription)
}

/// Whether `name` is a device name of the user (`tg-<id>-<n>`): a name that is not cannot be
/// theirs, whatever the cluster holds, so it needs no lookup.
pub fn is_users_peer_name(user_id: i64, name: &str) -> bool {
    device_index(&subscription_name(user_id), name).is_some()
}

/// The device number in `<subscription>-<n>`.
pub fn device_index(subscription: &str, name: &str) -> Option<u32> {
    let digits = name.strip_prefix(subscription)?.strip_prefix('-')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Longest device name (the CRD's limit).
pub const MAX_DEVICE_NAME: usize = 64;

/// Whether `c` is invisible formatting that can disguise a name: a bidirectional control
/// (embeddings, overrides, isolates, marks) or a zero-width character.
pub fn is_hidden_formatting(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' // ARABIC LETTER MARK
            | '\u{200B}'..='\u{200F}' // zero-width space, non-joiner, joiner; LRM, RLM
            | '\u{202A}'..='\u{202E}' // LRE, RLE, PDF, LRO, RLO
            | '\u{2060}'..='\u{2064}' // word joiner and invisible operators
            | '\u{2066}'..='\u{2069}' // LRI, RLI, FSI, PDI
            | '\u{180E}' // MONGOLIAN VOWEL SEPARATOR
            | '\u{FEFF}' // zero-width no-break space (BOM)
    )
}

/// A device name as shown: the hidden formatting dropped and the rest trimmed.
pub fn display_device_name(name: &str) -> String {
    name.chars()
        .filter(|c| !is_hidden_formatting(*c))
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A device name as the user typed it: hidden formatting dropped, trimmed, `None` when
/// nothing is left; refused when too long or holding control characters.
pub fn clean_device_name(text: Option<&str>) -> Result<Option<String>, String> {
    let Some(text) = text
        .map(display_device_name)
        .filter(|text| !text.is_empty())
    else {
        return Ok(None);
    };
    if text.chars().count() > MAX_DEVICE_NAME {
        return Err(format!(
            "a device name has at most {MAX_DEVICE_NAME} characters"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("a device name cannot hold control characters".into());
    }
    Ok(Some(text))
}

/// A device's new name as the user typed it when renaming: cleaned as [`clean_device_name`]
/// does, and required — a name that is empty once cleaned is refused.
pub fn required_device_name(text: &str) -> Result<String, String> {
    clean_device_name(Some(text))?.ok_or_else(|| "a device name cannot be empty".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, label: Option<&str>) -> WgPeer {
        let labels = label.map(|label| serde_json::json!({"wgsub.io/subscription": label}));
        serde_json::from_value(serde_json::json!({
            "apiVersion": "wgsub.io/v1alpha1",
            "kind": "WgPeer",
            "metadata": {"name": name, "labels": labels},
            "spec": {"server": "main"},
        }))
        .unwrap()
    }

    #[test]
    fn a_peer_is_the_users_only_by_name_and_label_together() {
        assert!(is_users_peer(42, &peer("tg-42-1", Some("tg-42"))));
        assert!(is_users_peer(42, &peer("tg-42-12", Some("tg-42"))));
        // The label alone, the name alone, someone else's, or a name that only looks alike.
        assert!(!is_users_peer(42, &peer("stolen", Some("tg-42"))));
        assert!(!is_users_peer(42, &peer("tg-42-1", None)));
        assert!(!is_users_peer(42, &peer("tg-42-1", Some("tg-43"))));
        assert!(!is_users_peer(42, &peer("tg-43-1", Some("tg-42"))));
        assert!(!is_users_peer(42, &peer("tg-421-1", Some("tg-42"))));
        for name in [
            "",
            "tg-42",
            "tg-42-",
            "tg-42-0",
            "tg-42-01",
            "tg-42-x",
            "../tg-42-1",
        ] {
            assert!(!is_users_peer_name(42, name), "{name:?}");
        }
    }

    #[test]
    fn a_new_device_is_what_the_defaults_make_of_its_server_alone() {
        let defaulted: WgPeerSpec =
            serde_json::from_value(serde_json::json!({"server": "main"})).unwrap();
        assert_eq!(WgPeerSpec::on_server("main"), defaulted);
        assert_eq!(
            serde_json::to_value(WgPeerSpec::on_server("main")).unwrap(),
            serde_json::json!({"server": "main", "enabled": true})
        );
    }

    #[test]
    fn names_are_trimmed_checked_and_lose_bidi_controls_and_zero_width_characters() {
        assert_eq!(
            clean_device_name(Some("  Phone ")),
            Ok(Some("Phone".into()))
        );
        assert_eq!(clean_device_name(Some("   ")), Ok(None));
        assert_eq!(clean_device_name(None), Ok(None));
        assert!(clean_device_name(Some(&"x".repeat(65))).is_err());
        assert!(clean_device_name(Some("a\nb")).is_err());
        assert_eq!(
            clean_device_name(Some(&"я".repeat(64))),
            Ok(Some("я".repeat(64)))
        );
        // "phone" that would show as "enohp", and one with zero-width characters in it.
        assert_eq!(
            clean_device_name(Some("\u{202E}phone\u{202C}")),
            Ok(Some("phone".into()))
        );
        assert_eq!(
            clean_device_name(Some("ph\u{200B}o\u{200D}n\u{2066}e\u{FEFF}\u{200F}")),
            Ok(Some("phone".into()))
        );
        // Only invisible characters: no name.
        assert_eq!(clean_device_name(Some("\u{200B}\u{202E} ")), Ok(None));
        // Hidden characters do not count toward the length.
        let padded = format!("{}{}", "x".repeat(64), "\u{200B}".repeat(10));
        assert_eq!(clean_device_name(Some(&padded)), Ok(Some("x".repeat(64))));
    }

    #[test]
    fn a_stored_name_is_shown_without_hidden_formatting() {
        assert_eq!(display_device_name("lap\u{202E}top"), "laptop");
        assert_eq!(display_device_name(" \u{2067}tablet "), "tablet");
        assert_eq!(display_device_name("Телефон 📱"), "Телефон 📱");
    }

    #[test]
    fn a_new_name_is_required_and_as_clean_as_any_other() {
        assert_eq!(required_device_name(" Laptop "), Ok("Laptop".into()));
        for bad in ["", "   ", "\u{200B}\u{202E}", "a\nb"] {
            assert!(required_device_name(bad).is_err(), "{bad:?}");
        }
        assert!(required_device_name(&"x".repeat(200)).is_err());
        assert!(required_device_name(&"x".repeat(65)).is_err());
        assert_eq!(required_device_name(&"x".repeat(64)), Ok("x".repeat(64)));
    }

    #[test]
    fn connected_means_a_handshake_within_three_minutes_of_now() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let ago = |secs: i64| Some(now - SignedDuration::from_secs(secs));
        assert!(!is_connected(None, now));
        assert!(is_connected(ago(0), now));
        assert!(is_connected(ago(179), now));
        assert!(is_connected(ago(180), now));
        assert!(!is_connected(ago(181), now));
        assert!(!is_connected(ago(86_400), now));
        // A node clock a little ahead of ours.
        assert!(is_connected(ago(-5), now));
    }

    fn subscription(annotation: Option<&str>) -> VpnSubscription {
        let mut sub = VpnSubscription::new("tg-42", crate::VpnSubscriptionSpec::for_user(42));
        if let Some(value) = annotation {
            sub.annotations_mut()
                .insert(ANNOTATION_DEVICES_REMOVED.into(), value.into());
        }
        sub
    }

    #[test]
    fn a_first_device_is_wanted_unless_the_user_removed_every_device() {
        assert!(wants_first_device(&subscription(None)));
        assert!(!wants_first_device(&subscription(Some("true"))));
        assert!(wants_first_device(&subscription(Some("false"))));
        assert!(wants_first_device(&subscription(Some(""))));
    }
}
