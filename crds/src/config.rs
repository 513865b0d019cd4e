//! Client configuration: the wg-quick `.conf` a device imports (for an AmneziaWG server with the
//! `[Interface]` lines AmneziaVPN and AmneziaWG read: `Jc`, `Jmin`, `Jmax`, `S1`, `S2`, `H1`–`H4`,
//! and for AWG 1.5 `S3`, `S4`, `I1`–`I5`), and a download file name that is safe for any device
//! name and says which app it is for.

use std::fmt::Write as _;

use zeroize::Zeroizing;

use crate::amnezia::AmneziaParams;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::resources::{Protocol, WgPeerSpec, WgServerSpec};

/// Routes sent through the tunnel when the server names none: everything.
pub const DEFAULT_ALLOWED_IPS: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// Everything a client `.conf` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub private_key: PrivateKey,
    /// The device's addresses with prefix (`10.8.0.2/32`, `fd00:8::2/128`).
    pub addresses: Vec<String>,
    pub dns: Vec<String>,
    pub mtu: Option<u16>,
    pub server_public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// `host:port` the client dials.
    pub endpoint: String,
    pub allowed_ips: Vec<String>,
    /// Seconds; `None` or 0 leaves it out.
    pub persistent_keepalive: Option<u16>,
    /// The server's AmneziaWG parameters; `None` for a WireGuard server.
    pub amneziawg: Option<AmneziaParams>,
}

/// Why a config cannot be made yet; names the missing piece.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the peer has no address yet")]
    NoAddress,
    #[error("the server has not published its public key yet")]
    NoServerKey,
    #[error("the server's AmneziaWG parameters are not chosen yet")]
    NoAmneziaParams,
}

/// The routes of a server's client configs: its `clientAllowedIPs` or everything.
pub fn default_allowed_ips(server: &WgServerSpec) -> Vec<String> {
    if server.client_allowed_ips.is_empty() {
        DEFAULT_ALLOWED_IPS
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        server.client_allowed_ips.clone()
    }
}

impl ClientConfig {
    /// The config of `peer` on `server`, given the keys read from their Secrets and the server's
    /// published public key.
    pub fn for_peer(
        server: &WgServerSpec,
        server_public_key: Option<PublicKey>,
        peer: &WgPeerSpec,
        private_key: PrivateKey,
        preshared_key: Option<PresharedKey>,
    ) -> Result<Self, ConfigError> {
        let server_public_key = server_public_key.ok_or(ConfigError::NoServerKey)?;
        let amneziawg = match server.protocol {
            Protocol::Wireguard => None,
            Protocol::Amneziawg => Some(
                server
                    .amneziawg_params()
                    .ok_or(ConfigError::NoAmneziaParams)?,
            ),
        };
        let address = peer.address.clone().ok_or(ConfigError::NoAddress)?;
        let mut addresses = vec![address];
        addresses.extend(peer.address6.clone());
        Ok(Self {
            private_key,
            addresses,
            dns: server.dns.clone(),
            mtu: server.mtu.and_then(|mtu| u16::try_from(mtu).ok()),
            server_public_key,
            preshared_key,
            endpoint: server.endpoint.clone(),
            allowed_ips: default_allowed_ips(server),
            persistent_keepalive: server
                .persistent_keepalive
                .and_then(|k| u16::try_from(k).ok())
                .filter(|k| *k > 0),
            amneziawg,
        })
    }

    /// The wg-quick `.conf` text, in a buffer zeroized on drop (it holds the private key).
    pub fn render(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(512));
        let text: &mut String = &mut out;
        // Writing to a String cannot fail.
        let _ = writeln!(text, "[Interface]");
        let _ = writeln!(
            text,
            "PrivateKey = {}",
            self.private_key.to_base64().as_str()
        );
        let _ = writeln!(text, "Address = {}", self.addresses.join(", "));
        if !self.dns.is_empty() {
            let _ = writeln!(text, "DNS = {}", self.dns.join(", "));
        }
        if let Some(mtu) = self.mtu {
            let _ = writeln!(text, "MTU = {mtu}");
        }
        for (key, value) in self.amneziawg.iter().flat_map(AmneziaParams::pairs) {
            let _ = writeln!(text, "{key} = {value}");
        }
        let _ = writeln!(text);
        let _ = writeln!(text, "[Peer]");
        let _ = writeln!(text, "PublicKey = {}", self.server_public_key);
        if let Some(psk) = &self.preshared_key {
            let _ = writeln!(text, "PresharedKey = {}", psk.to_base64().as_str());
        }
        let _ = writeln!(text, "Endpoint = {}", self.endpoint);
        let _ = writeln!(text, "AllowedIPs = {}", self.allowed_ips.join(", "));
        if let Some(keepalive) = self.persistent_keepalive.filter(|k| *k > 0) {
            let _ = writeln!(text, "PersistentKeepalive = {keepalive}");
        }
        out
    }
}

/// The longest interface name Linux allows; wg-quick (and awg-quick) name the interface after
/// the file.
const MAX_INTERFACE_NAME: usize = 15;
/// File name prefix of a WireGuard config.
const PREFIX: &str = "wgsub-";
/// File name prefix of an AmneziaWG config: the name says which app imports it.
const AMNEZIA_PREFIX: &str = "amnezia-";

/// A download file name `wgsub-<device>.conf` (for an AmneziaWG server `amnezia-<device>.conf`)
/// that wg-quick accepts as an interface name (at most 15 characters of `[A-Za-z0-9_=+.-]`)
/// whatever the device name holds; `fallback` (e.g. the device number) is used when nothing of
/// the name survives.
pub fn config_file_name(protocol: Protocol, device_name: Option<&str>, fallback: &str) -> String {
    let prefix = match protocol {
        Protocol::Wireguard => PREFIX,
        Protocol::Amneziawg => AMNEZIA_PREFIX,
    };
    let room = MAX_INTERFACE_NAME - prefix.len();
    let clean = |text: &str| -> String {
        let mut out = String::new();
        for c in text.chars() {
            let c = match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '=' | '+' | '.' => c,
                ' ' | '-' | '/' | '\\' | ':' => '-',
                _ => continue,
            };
            if (c == '-' || c == '.') && (out.is_empty() || out.ends_with('-')) {
                continue;
            }
            out.push(c);
        }
        let mut out: String = out.chars().take(room).collect();
        while out.ends_with('-') || out.ends_with('.') {
            out.pop();
        }
        out
    };
    let stem = device_name
        .map(clean)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| clean(fallback));
    let stem = if stem.is_empty() {
        "vpn".to_owned()
    } else {
        stem
    };
    format!("{prefix}{stem}.conf")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::SecretKeyRef;
    use proptest::prelude::*;

    fn server() -> WgServerSpec {
        serde_json::from_value(serde_json::json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "dns": ["1.1.1.1", "2606:4700:4700::1111"],
            "mtu": 1420,
            "persistentKeepalive": 25,
            "privateKeySecretRef": {"name": "wg0-key"}
        }))
        .unwrap()
    }

    fn peer() -> WgPeerSpec {
        WgPeerSpec {
            server: "main".into(),
            public_key: None,
            private_key_secret_ref: Some(SecretKeyRef::new("tg-1-1-key", "privateKey")),
            preshared_key_secret_ref: None,
            address: Some("10.8.0.2/32".into()),
            address6: Some("fd00:8::2/128".into()),
            expires_at: None,
            enabled: true,
            device_name: None,
        }
    }

    #[test]
    fn renders_every_field_in_wg_quick_form() {
        let private = PrivateKey::generate();
        let server_key = PrivateKey::generate().public_key();
        let psk = PresharedKey::generate();
        let config = ClientConfig::for_peer(
            &server(),
            Some(server_key),
            &peer(),
            private.clone(),
            Some(psk.clone()),
        )
        .unwrap();
        let text = config.render();
        let expected = format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.8.0.2/32, fd00:8::2/128\nDNS = 1.1.1.1, 2606:4700:4700::1111\nMTU = 1420\n\n[Peer]\nPublicKey = {}\nPresharedKey = {}\nEndpoint = vpn.example.com:51820\nAllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n",
            private.to_base64().as_str(),
            server_key,
            psk.to_base64().as_str()
        );
        assert_eq!(text.as_str(), expected);
    }

    #[test]
    fn optional_lines_are_left_out() {
        let mut server = server();
        server.dns.clear();
        server.mtu = None;
        server.persistent_keepalive = Some(0);
        server.client_allowed_ips = vec!["10.8.0.0/24".into()];
        let mut peer = peer();
        peer.address6 = None;
        let config = ClientConfig::for_peer(
            &server,
            Some(PrivateKey::generate().public_key()),
            &peer,
            PrivateKey::generate(),
            None,
        )
        .unwrap();
        let text = config.render();
        for absent in ["DNS", "MTU", "PresharedKey", "PersistentKeepalive", "fd00"] {
            assert!(!text.contains(absent), "{absent} in {}", text.as_str());
        }
        assert!(text.contains("AllowedIPs = 10.8.0.0/24\n"));
        assert!(text.contains("Address = 10.8.0.2/32\n"));
    }

    #[test]
    fn missing_address_or_server_key_is_named() {
        let mut no_address = peer();
        no_address.address = None;
        let key = Some(PrivateKey::generate().public_key());
        assert_eq!(
            ClientConfig::for_peer(&server(), key, &no_address, PrivateKey::generate(), None),
            Err(ConfigError::NoAddress)
        );
        assert_eq!(
            ClientConfig::for_peer(&server(), None, &peer(), PrivateKey::generate(), None),
            Err(ConfigError::NoServerKey)
        );
    }

    #[test]
    fn debug_of_a_config_hides_the_private_key() {
        let config = ClientConfig::for_peer(
            &server(),
            Some(PrivateKey::generate().public_key()),
            &peer(),
            PrivateKey::generate(),
            None,
        )
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains(config.private_key.to_base64().as_str()));
    }

    #[test]
    fn file_names_are_safe_for_any_device_name() {
        assert_eq!(
            config_file_name(Protocol::Wireguard, Some("iPhone"), "1"),
            "wgsub-iPhone.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Wireguard, Some("My Laptop"), "1"),
            "wgsub-My-Laptop.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Wireguard, Some("Телефон"), "2"),
            "wgsub-2.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Wireguard, None, "tg-42-3"),
            "wgsub-tg-42-3.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Wireguard, Some("../../etc/passwd"), "1"),
            "wgsub-etc-passw.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Wireguard, Some("a\"b;c\r\nd"), "1"),
            "wgsub-abcd.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Wireguard, Some("a very long device name"), "1"),
            "wgsub-a-very-lo.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Wireguard, Some("---"), ""),
            "wgsub-vpn.conf"
        );
    }

    fn amnezia_server(block: serde_json::Value) -> WgServerSpec {
        let mut value = serde_json::to_value(server()).unwrap();
        value["protocol"] = serde_json::json!("amneziawg");
        value["amneziawg"] = block;
        serde_json::from_value(value).unwrap()
    }

    fn render_for(server: &WgServerSpec) -> Result<String, ConfigError> {
        let config = ClientConfig::for_peer(
            server,
            Some(PrivateKey::generate().public_key()),
            &peer(),
            PrivateKey::generate(),
            None,
        )?;
        Ok(config.render().as_str().to_owned())
    }

    /// The `[Interface]` section of a rendered config, without the private key line.
    fn interface_section(text: &str) -> Vec<&str> {
        text.split("\n\n")
            .next()
            .unwrap()
            .lines()
            .filter(|line| !line.starts_with("PrivateKey"))
            .collect()
    }

    #[test]
    fn an_amneziawg_config_carries_the_awg_1_0_lines_in_its_interface_section() {
        let server = amnezia_server(serde_json::json!({
            "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
            "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
        }));
        let text = render_for(&server).unwrap();
        assert_eq!(
            interface_section(&text),
            [
                "[Interface]",
                "Address = 10.8.0.2/32, fd00:8::2/128",
                "DNS = 1.1.1.1, 2606:4700:4700::1111",
                "MTU = 1420",
                "Jc = 4",
                "Jmin = 40",
                "Jmax = 70",
                "S1 = 25",
                "S2 = 61",
                "H1 = 1234567",
                "H2 = 2345678",
                "H3 = 3456789",
                "H4 = 4567890",
            ]
        );
        let peer_section = text.split("\n\n").nth(1).unwrap();
        assert!(peer_section.starts_with("[Peer]\nPublicKey = "));
        // Compare line names, not substrings: a random base64 key may contain "I1".
        let peer_names: Vec<&str> = peer_section
            .lines()
            .filter_map(|line| line.split(" = ").next())
            .collect();
        for key in ["Jc", "S1", "H1", "S3", "I1"] {
            assert!(!peer_names.contains(&key), "{key} in [Peer]");
        }
    }

    #[test]
    fn an_awg_1_5_config_adds_s3_s4_and_only_the_signature_packets_set() {
        let server = amnezia_server(serde_json::json!({
            "version": "1.5", "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61, "s3": 17,
            "s4": 0, "h1": "100-200", "h2": "300", "h3": "400-500", "h4": "600-4294967295",
            "i1": "<b 0xc700><r 16>", "i4": "<t>",
        }));
        let text = render_for(&server).unwrap();
        let lines = interface_section(&text);
        assert_eq!(
            lines[4..],
            [
                "Jc = 4",
                "Jmin = 40",
                "Jmax = 70",
                "S1 = 25",
                "S2 = 61",
                "S3 = 17",
                "S4 = 0",
                "H1 = 100-200",
                "H2 = 300",
                "H3 = 400-500",
                "H4 = 600-4294967295",
                "I1 = <b 0xc700><r 16>",
                "I4 = <t>",
            ]
        );
    }

    #[test]
    fn a_wireguard_config_has_no_amneziawg_line() {
        let text = render_for(&server()).unwrap();
        for key in [
            "Jc", "Jmin", "Jmax", "S1", "S2", "S3", "S4", "H1", "H4", "I1",
        ] {
            assert!(
                !text.lines().any(|l| l.starts_with(&format!("{key} ="))),
                "{key} in a WireGuard config"
            );
        }
    }

    #[test]
    fn no_amneziawg_config_before_every_parameter_is_chosen_and_valid() {
        let partial = amnezia_server(serde_json::json!({"jc": 4}));
        assert_eq!(render_for(&partial), Err(ConfigError::NoAmneziaParams));
        let none = amnezia_server(serde_json::Value::Null);
        assert_eq!(render_for(&none), Err(ConfigError::NoAmneziaParams));
        let broken = amnezia_server(serde_json::json!({
            "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 81,
            "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
        }));
        assert_eq!(render_for(&broken), Err(ConfigError::NoAmneziaParams));
    }

    #[test]
    fn amneziawg_file_names_say_amnezia_and_stay_interface_names() {
        assert_eq!(
            config_file_name(Protocol::Amneziawg, Some("iPhone"), "1"),
            "amnezia-iPhone.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Amneziawg, Some("a very long device name"), "1"),
            "amnezia-a-very.conf"
        );
        assert_eq!(
            config_file_name(Protocol::Amneziawg, None, "tg-42-3"),
            "amnezia-tg-42-3.conf"
        );
    }

    proptest! {
        #[test]
        fn every_file_name_is_a_valid_wg_quick_interface_name(name in any::<String>(), fallback in "[a-z0-9-]{0,20}", amnezia in any::<bool>()) {
            let (protocol, prefix) = if amnezia {
                (Protocol::Amneziawg, "amnezia-")
            } else {
                (Protocol::Wireguard, "wgsub-")
            };
            let file = config_file_name(protocol, Some(&name), &fallback);
            let stem = file.strip_suffix(".conf").unwrap();
            prop_assert!(stem.len() <= 15, "{}", stem);
            prop_assert!(stem.starts_with(prefix) && stem.len() > prefix.len());
            prop_assert!(stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b)), "{}", stem);
        }
    }
}
