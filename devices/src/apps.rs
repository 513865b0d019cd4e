//! Which app imports a device's config, by the protocol of its server and the user's platform:
//! the official store pages the bot's connection guide sends. The Mini App's guide
//! (`api/miniapp/app.js`, `APPS`) carries the same links; a test here fails when the two differ.

use wgsub_crds::resources::Protocol;

/// A platform as Telegram names it to a Mini App (`Telegram.WebApp.platform`, reduced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    Ios,
    Android,
    Windows,
    Macos,
    Linux,
}

impl Platform {
    /// Every platform, in the order a guide offers them.
    pub const ALL: [Platform; 5] = [
        Platform::Ios,
        Platform::Android,
        Platform::Windows,
        Platform::Macos,
        Platform::Linux,
    ];

    /// The short code (`ios`, `android`, `windows`, `macos`, `linux`), as the Mini App uses it.
    pub fn code(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Windows => "windows",
            Platform::Macos => "macos",
            Platform::Linux => "linux",
        }
    }

    /// The platform of a [`Platform::code`], if it is one.
    pub fn from_code(code: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.code() == code)
    }

    /// The platform's name as users know it.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Ios => "iOS",
            Platform::Android => "Android",
            Platform::Windows => "Windows",
            Platform::Macos => "macOS",
            Platform::Linux => "Linux",
        }
    }

    /// A phone or tablet (it scans a QR code from another screen), not a computer.
    pub fn is_phone(self) -> bool {
        matches!(self, Platform::Ios | Platform::Android)
    }
}

/// An app's official download page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLink {
    pub label: &'static str,
    pub url: &'static str,
}

const AMNEZIAVPN_RELEASES: &str = "https://github.com/amnezia-vpn/amnezia-client/releases";

/// The apps that import a config of `protocol` on `platform`, the recommended one first.
pub fn store_links(protocol: Protocol, platform: Platform) -> &'static [StoreLink] {
    match (protocol, platform) {
        (Protocol::Wireguard, Platform::Ios) => &[StoreLink {
            label: "WireGuard · App Store",
            url: "https://apps.apple.com/app/wireguard/id1441195209",
        }],
        (Protocol::Wireguard, Platform::Android) => &[StoreLink {
            label: "WireGuard · Google Play",
            url: "https://play.google.com/store/apps/details?id=com.wireguard.android",
        }],
        (Protocol::Wireguard, Platform::Windows) => &[StoreLink {
            label: "WireGuard for Windows",
            url: "https://www.wireguard.com/install/",
        }],
        (Protocol::Wireguard, Platform::Macos) => &[StoreLink {
            label: "WireGuard · Mac App Store",
            url: "https://apps.apple.com/app/wireguard/id1451685025",
        }],
        (Protocol::Wireguard, Platform::Linux) => &[StoreLink {
            label: "wireguard-tools",
            url: "https://www.wireguard.com/install/",
        }],
        (Protocol::Amneziawg, Platform::Ios) => &[
            StoreLink {
                label: "AmneziaVPN · App Store",
                url: "https://apps.apple.com/app/amneziavpn/id1600529900",
            },
            StoreLink {
                label: "AmneziaWG · App Store",
                url: "https://apps.apple.com/app/amneziawg/id6478942365",
            },
        ],
        (Protocol::Amneziawg, Platform::Android) => &[
            StoreLink {
                label: "AmneziaVPN · Google Play",
                url: "https://play.google.com/store/apps/details?id=org.amnezia.vpn",
            },
            StoreLink {
                label: "AmneziaWG · Google Play",
                url: "https://play.google.com/store/apps/details?id=org.amnezia.awg",
            },
        ],
        (Protocol::Amneziawg, Platform::Windows | Platform::Macos | Platform::Linux) => {
            &[StoreLink {
                label: "AmneziaVPN",
                url: AMNEZIAVPN_RELEASES,
            }]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTOCOLS: [(Protocol, &str); 2] = [
        (Protocol::Wireguard, "wireguard"),
        (Protocol::Amneziawg, "amneziawg"),
    ];

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for platform in Platform::ALL {
            assert_eq!(Platform::from_code(platform.code()), Some(platform));
        }
        assert_eq!(Platform::from_code("tdesktop"), None);
        assert_eq!(Platform::from_code(""), None);
        assert_eq!(Platform::from_code("IOS"), None);
    }

    #[test]
    fn only_ios_and_android_are_phones() {
        let phones: Vec<_> = Platform::ALL.into_iter().filter(|p| p.is_phone()).collect();
        assert_eq!(phones, [Platform::Ios, Platform::Android]);
    }

    #[test]
    fn amneziawg_is_never_sent_to_the_wireguard_app_and_back() {
        for platform in Platform::ALL {
            let wireguard = store_links(Protocol::Wireguard, platform);
            let amnezia = store_links(Protocol::Amneziawg, platform);
            assert!(!wireguard.is_empty() && !amnezia.is_empty());
            assert!(wireguard.iter().all(|l| !l.label.contains("Amnezia")));
            assert!(amnezia.iter().all(|l| l.label.starts_with("Amnezia")));
            assert!(amnezia[0].label.starts_with("AmneziaVPN"), "{platform:?}");
            for l in wireguard.iter().chain(amnezia) {
                assert!(l.url.starts_with("https://"), "{}", l.url);
            }
        }
    }

    /// The `APPS` table of the Mini App, protocol by protocol and platform by platform.
    fn miniapp_apps() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/miniapp/app.js");
        let source = std::fs::read_to_string(path).expect("the Mini App's app.js");
        let start = source.find("const APPS = {").expect("the APPS table");
        let end = start + source[start..].find("\n};").expect("the end of APPS");
        source[start..end].to_owned()
    }

    /// The text from the first `[` to the `]` that closes it.
    fn bracketed(text: &str) -> &str {
        let start = text.find('[').expect("a list");
        let mut depth = 0;
        for (index, c) in text[start..].char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                return &text[start..=start + index];
            }
        }
        panic!("an unclosed list: {text}")
    }

    #[test]
    fn the_mini_app_offers_the_same_store_links() {
        let apps = miniapp_apps();
        let mut expected = 0;
        for (protocol, key) in PROTOCOLS {
            let section_start = apps
                .find(&format!("  {key}: {{"))
                .expect("protocol section");
            let section = &apps[section_start..];
            let section_end = section.find("\n  },").unwrap_or(section.len());
            let section = &section[..section_end];
            for platform in Platform::ALL {
                let line_start = section
                    .find(&format!("    {}: [", platform.code()))
                    .unwrap_or_else(|| panic!("{key} {platform:?} in the Mini App"));
                let entry = bracketed(&section[line_start..]);
                for link in store_links(protocol, platform) {
                    let pair = format!("[\"{}\", \"{}\"]", link.label, link.url);
                    assert!(
                        entry.contains(&pair),
                        "{key} {platform:?}: {pair} in {entry}"
                    );
                    expected += 1;
                }
                assert_eq!(
                    entry.matches("https://").count(),
                    store_links(protocol, platform).len(),
                    "{key} {platform:?}: the Mini App has other links: {entry}"
                );
            }
        }
        assert_eq!(apps.matches("https://").count(), expected);
    }
}
