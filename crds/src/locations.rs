//! Locations: the `WgServer`s offered to users (those with a `spec.location` that is not
//! hidden), each with its name in the user's language, its country's flag and name (CLDR's,
//! through keshvar), the label users see, whether it is full and whether it is the user's; and
//! whether a user may pick one.
//!
//! A server's load is counted in users: a user counts on a server while any of their devices
//! (`WgPeer`s, labelled with their subscription) is on it — including the devices of an
//! expired subscription kept for the retention period, which come back on renewal. A server is
//! full for a user when `capacity` other users are on it; the user's own devices never count
//! against them, so the server they are on is never full to them. The count trails the
//! operator by a reconcile, so two users picking the last place at the same instant may both
//! get it: capacity is a sales limit, the address pool the hard one.
//!
//! Pure: the callers pass what their watch-backed caches hold.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use crate::resources::{LABEL_SUBSCRIPTION, LocationSpec, Protocol};
use crate::{WgPeer, WgServer};

/// The flag emoji of an ISO 3166-1 alpha-2 country code (two regional indicator symbols);
/// `None` for anything but two ASCII letters.
pub fn flag(country: &str) -> Option<String> {
    let letters: Vec<u8> = country.bytes().collect();
    if letters.len() != 2 || !letters.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    letters
        .iter()
        .map(|b| char::from_u32(0x1F1E6 + u32::from(b.to_ascii_uppercase() - b'A')))
        .collect()
}

/// Whether a Telegram `language_code` is English (`en*`); anything else gets Russian, as the
/// rest of the product speaks.
fn is_english(language_code: Option<&str>) -> bool {
    language_code.is_some_and(|code| code.to_ascii_lowercase().starts_with("en"))
}

/// The name for a Telegram `language_code`: English for `en*`, Russian otherwise.
pub fn display_name<'a>(location: &'a LocationSpec, language_code: Option<&str>) -> &'a str {
    if is_english(language_code) {
        &location.display_name.en
    } else {
        &location.display_name.ru
    }
}

/// The name of the country of ISO 3166-1 alpha-2 code `country` (upper case) in the language
/// of `language_code` (English for `en*`, Russian otherwise), as CLDR writes it; `None` for a
/// code that is not assigned.
pub fn country_name(country: &str, language_code: Option<&str>) -> Option<&'static str> {
    if country.len() != 2 || country.bytes().any(|b| !b.is_ascii_uppercase()) {
        return None;
    }
    let alpha2 = keshvar::Alpha2::try_from(country).ok()?;
    let language = if is_english(language_code) {
        "en"
    } else {
        "ru"
    };
    alpha2.to_country().translations().get(language).copied()
}

/// What users see for a location: `🇩🇪 Германия · Франкфурт` — the flag, the country's name
/// and the display name; the display name alone once when it is the country's name
/// (`🇩🇪 Германия`), and the flag and display name when the country has no name.
pub fn label(flag: &str, country_name: Option<&str>, display_name: &str) -> String {
    let named = |name: &str| {
        if flag.is_empty() {
            name.to_owned()
        } else {
            format!("{flag} {name}")
        }
    };
    match country_name {
        Some(country) if country.trim().to_lowercase() != display_name.trim().to_lowercase() => {
            named(&format!("{country} · {display_name}"))
        }
        _ => named(display_name),
    }
}

/// The label of `location` in the language of `language_code`.
pub fn location_label(location: &LocationSpec, language_code: Option<&str>) -> String {
    label(
        &flag(&location.country).unwrap_or_default(),
        country_name(&location.country, language_code),
        display_name(location, language_code),
    )
}

/// One location as a user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The `WgServer`'s name: what a user picks.
    pub server: String,
    pub display_name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub flag: String,
    /// The country's name in the user's language; empty for a code that is not assigned.
    pub country_name: String,
    /// What users see: flag, country name and display name ([`label`]).
    pub label: String,
    /// Other users fill its capacity: it cannot be picked.
    pub full: bool,
    /// The user's server now.
    pub current: bool,
    pub protocol: Protocol,
}

/// Why a server cannot be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceError {
    /// No such server, or it is not offered (no `location`, or hidden).
    NotFound,
    /// Other users fill its capacity.
    Full,
}

/// The subscriptions with a device on each server.
pub fn users_per_server<P: Borrow<WgPeer>>(peers: &[P]) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for peer in peers {
        let peer = peer.borrow();
        if let Some(subscription) = peer.labels().get(LABEL_SUBSCRIPTION) {
            users
                .entry(peer.spec.server.as_str())
                .or_default()
                .insert(subscription.as_str());
        }
    }
    users
}

/// The location of a server that is offered (has a `location` and is not hidden).
fn offered(server: &WgServer) -> Option<&LocationSpec> {
    server.spec.location.as_ref().filter(|l| !l.hidden)
}

/// Whether other users than `subscription` fill `location`'s capacity on `server`.
fn is_full(
    location: &LocationSpec,
    server: &str,
    users: &BTreeMap<&str, BTreeSet<&str>>,
    subscription: &str,
) -> bool {
    let Some(capacity) = location.capacity else {
        return false;
    };
    let others = users
        .get(server)
        .map_or(0, |on| on.iter().filter(|u| **u != subscription).count());
    others >= usize::try_from(capacity).unwrap_or(0)
}

/// The locations offered to the user of subscription `subscription`, in the language of
/// `language_code`, ordered by country and then server name; `current` is the user's server
/// now.
pub fn locations_for<S: Borrow<WgServer>, P: Borrow<WgPeer>>(
    servers: &[S],
    peers: &[P],
    subscription: &str,
    current: Option<&str>,
    language_code: Option<&str>,
) -> Vec<Location> {
    let users = users_per_server(peers);
    let mut locations: Vec<Location> = servers
        .iter()
        .map(Borrow::borrow)
        .filter_map(|server| {
            let location = offered(server)?;
            let name = server.name_any();
            let country_name = country_name(&location.country, language_code);
            Some(Location {
                full: is_full(location, &name, &users, subscription),
                current: current == Some(name.as_str()),
                display_name: display_name(location, language_code).to_owned(),
                country: location.country.clone(),
                flag: flag(&location.country).unwrap_or_default(),
                country_name: country_name.unwrap_or_default().to_owned(),
                label: location_label(location, language_code),
                protocol: server.spec.protocol,
                server: name,
            })
        })
        .collect();
    locations.sort_by(|a, b| (&a.country, &a.server).cmp(&(&b.country, &b.server)));
    locations
}

/// Whether the user of `subscription` may pick `server`: it must be offered and not full.
pub fn check_choice<S: Borrow<WgServer>, P: Borrow<WgPeer>>(
    servers: &[S],
    peers: &[P],
    subscription: &str,
    server: &str,
) -> Result<(), ChoiceError> {
    let location = servers
        .iter()
        .map(Borrow::borrow)
        .find(|s| s.name_any() == server)
        .and_then(offered)
        .ok_or(ChoiceError::NotFound)?;
    if is_full(location, server, &users_per_server(peers), subscription) {
        return Err(ChoiceError::Full);
    }
    Ok(())
}

/// The server a user's devices are on (the first device's, by name); `None` without devices.
pub fn server_of_devices<P: Borrow<WgPeer>>(peers: &[P]) -> Option<&str> {
    peers
        .iter()
        .map(Borrow::borrow)
        .min_by_key(|peer| peer.metadata.name.as_deref())
        .map(|peer| peer.spec.server.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::DisplayName;
    use crate::{WgPeerSpec, WgServerSpec};
    use serde_json::json;

    fn server(name: &str, location: Option<serde_json::Value>) -> WgServer {
        let mut spec = json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "key"},
        });
        if let Some(location) = location {
            spec["location"] = location;
        }
        WgServer::new(name, serde_json::from_value::<WgServerSpec>(spec).unwrap())
    }

    fn location(country: &str, capacity: Option<i32>, hidden: bool) -> serde_json::Value {
        json!({
            "displayName": {"ru": format!("Сервер {country}"), "en": format!("Server {country}")},
            "country": country,
            "capacity": capacity,
            "hidden": hidden,
        })
    }

    fn peer(name: &str, server: &str, subscription: &str) -> WgPeer {
        let mut peer = WgPeer::new(name, WgPeerSpec::on_server(server));
        peer.labels_mut()
            .insert(LABEL_SUBSCRIPTION.into(), subscription.into());
        peer
    }

    #[test]
    fn a_flag_is_the_two_regional_indicators_of_the_code() {
        assert_eq!(flag("DE").as_deref(), Some("🇩🇪"));
        assert_eq!(flag("nl").as_deref(), Some("🇳🇱"));
        for bad in ["", "D", "DEU", "D1", "ÄÖ"] {
            assert_eq!(flag(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_code_the_schema_accepts_has_a_russian_and_an_english_name() {
        let crd = serde_json::to_value(<WgServer as kube::CustomResourceExt>::crd()).unwrap();
        let country = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["location"]["properties"]["country"];
        assert_eq!(country["pattern"], "^[A-Z]{2}$");
        // The codes of the rule `'|AD|AE|…|'.contains('|' + self + '|')`.
        let rules = country["x-kubernetes-validations"].as_array().unwrap();
        let rule = rules[0]["rule"].as_str().unwrap();
        let accepted: Vec<String> = rule
            .strip_prefix("'|")
            .and_then(|r| r.strip_suffix("|'.contains('|' + self + '|')"))
            .unwrap()
            .split('|')
            .map(str::to_owned)
            .collect();
        assert_eq!(accepted.len(), 249, "ISO 3166-1 assigns 249 codes");
        for code in &accepted {
            for language in ["ru", "en"] {
                let name = country_name(code, Some(language));
                assert!(
                    name.is_some_and(|n| !n.trim().is_empty()),
                    "{code} has no {language} name"
                );
            }
            assert!(flag(code).is_some(), "{code} has no flag");
        }
        // Every other pair of letters is refused by the schema and has no name.
        for first in b'A'..=b'Z' {
            for second in b'A'..=b'Z' {
                let code = String::from_utf8(vec![first, second]).unwrap();
                if !accepted.contains(&code) {
                    assert_eq!(country_name(&code, Some("en")), None, "{code}");
                }
            }
        }
    }

    #[test]
    fn country_names_follow_the_language_code_russian_by_default() {
        assert_eq!(country_name("DE", Some("ru")), Some("Германия"));
        assert_eq!(country_name("DE", None), Some("Германия"));
        assert_eq!(country_name("DE", Some("uk")), Some("Германия"));
        assert_eq!(country_name("DE", Some("en-US")), Some("Germany"));
        assert_eq!(country_name("NL", Some("en")), Some("Netherlands"));
        assert_eq!(country_name("FI", Some("ru")), Some("Финляндия"));
        for bad in ["XX", "de", "DEU", "", "D1", "XK"] {
            assert_eq!(country_name(bad, Some("en")), None, "{bad}");
        }
    }

    #[test]
    fn a_label_is_flag_country_and_display_name_without_saying_a_name_twice() {
        assert_eq!(
            label("🇩🇪", Some("Германия"), "Франкфурт"),
            "🇩🇪 Германия · Франкфурт"
        );
        assert_eq!(label("🇩🇪", Some("Germany"), "germany "), "🇩🇪 germany ");
        assert_eq!(label("🇩🇪", Some("Германия"), "ГЕРМАНИЯ"), "🇩🇪 ГЕРМАНИЯ");
        assert_eq!(label("🇽🇽", None, "Somewhere"), "🇽🇽 Somewhere");
        assert_eq!(label("", Some("Germany"), "Berlin"), "Germany · Berlin");
        let frankfurt = LocationSpec {
            display_name: DisplayName {
                ru: "Франкфурт".into(),
                en: "Frankfurt".into(),
            },
            country: "DE".into(),
            capacity: None,
            hidden: false,
        };
        assert_eq!(
            location_label(&frankfurt, Some("ru")),
            "🇩🇪 Германия · Франкфурт"
        );
        assert_eq!(
            location_label(&frankfurt, Some("en")),
            "🇩🇪 Germany · Frankfurt"
        );
    }

    #[test]
    fn names_follow_the_language_code_russian_by_default() {
        let location = LocationSpec {
            display_name: DisplayName {
                ru: "Германия".into(),
                en: "Germany".into(),
            },
            country: "DE".into(),
            capacity: None,
            hidden: false,
        };
        assert_eq!(display_name(&location, Some("en-GB")), "Germany");
        assert_eq!(display_name(&location, Some("ru")), "Германия");
        assert_eq!(display_name(&location, Some("de")), "Германия");
        assert_eq!(display_name(&location, None), "Германия");
    }

    #[test]
    fn only_offered_servers_are_listed_by_country_with_current_and_full_marked() {
        let servers = [
            server("nl-1", Some(location("NL", Some(1), false))),
            server("de-1", Some(location("DE", None, false))),
            server("secret", Some(location("FI", None, true))),
            server("plain", None),
        ];
        let peers = [peer("tg-2-1", "nl-1", "tg-2")];
        let list = locations_for(&servers, &peers, "tg-1", Some("de-1"), Some("en"));
        let seen: Vec<(&str, &str, bool, bool)> = list
            .iter()
            .map(|l| {
                (
                    l.server.as_str(),
                    l.display_name.as_str(),
                    l.full,
                    l.current,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("de-1", "Server DE", false, true),
                ("nl-1", "Server NL", true, false)
            ]
        );
        assert_eq!(list[0].flag, "🇩🇪");
        assert_eq!(list[0].country_name, "Germany");
        assert_eq!(list[0].label, "🇩🇪 Germany · Server DE");
        assert_eq!(list[0].protocol, Protocol::Wireguard);
    }

    #[test]
    fn a_users_own_devices_never_fill_a_server_for_them() {
        let servers = [server("nl-1", Some(location("NL", Some(1), false)))];
        let peers = [
            peer("tg-2-1", "nl-1", "tg-2"),
            peer("tg-2-2", "nl-1", "tg-2"),
        ];
        assert_eq!(check_choice(&servers, &peers, "tg-2", "nl-1"), Ok(()));
        assert!(!locations_for(&servers, &peers, "tg-2", Some("nl-1"), None)[0].full);
        assert_eq!(
            check_choice(&servers, &peers, "tg-3", "nl-1"),
            Err(ChoiceError::Full)
        );
    }

    #[test]
    fn capacity_counts_users_not_devices() {
        let servers = [server("nl-1", Some(location("NL", Some(2), false)))];
        let peers = [
            peer("tg-2-1", "nl-1", "tg-2"),
            peer("tg-2-2", "nl-1", "tg-2"),
            peer("tg-2-3", "nl-1", "tg-2"),
            peer("tg-4-1", "de-1", "tg-4"),
        ];
        assert_eq!(check_choice(&servers, &peers, "tg-3", "nl-1"), Ok(()));
        let more = [peer("tg-5-1", "nl-1", "tg-5")];
        let all: Vec<&WgPeer> = peers.iter().chain(&more).collect();
        assert_eq!(
            check_choice(&servers, &all, "tg-3", "nl-1"),
            Err(ChoiceError::Full)
        );
    }

    #[test]
    fn hidden_unknown_and_unoffered_servers_cannot_be_picked() {
        let servers = [
            server("secret", Some(location("FI", None, true))),
            server("plain", None),
        ];
        let none: [WgPeer; 0] = [];
        for name in ["secret", "plain", "nowhere"] {
            assert_eq!(
                check_choice(&servers, &none, "tg-1", name),
                Err(ChoiceError::NotFound),
                "{name}"
            );
        }
    }

    #[test]
    fn the_server_of_a_users_devices_is_the_first_devices() {
        let none: [WgPeer; 0] = [];
        assert_eq!(server_of_devices(&none), None);
        let peers = [peer("tg-1-2", "b", "tg-1"), peer("tg-1-1", "a", "tg-1")];
        assert_eq!(server_of_devices(&peers), Some("a"));
    }
}
