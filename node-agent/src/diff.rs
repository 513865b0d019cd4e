//! The pure comparison of the peers an interface should have with the peers it has: which to
//! add, which to update (allowed IPs or preshared key changed) and which to remove. The result is
//! turned into exactly one `DeviceUpdate` naming only the changed peers — never a rewrite of the
//! whole interface.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use wgsub_crds::keys::PublicKey;
use wireguard_control::{AllowedIp, DeviceUpdate, Key, PeerConfigBuilder};

use crate::snapshot::PeerConfig;

/// The changes that make the observed peers equal the desired ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerDiff {
    pub add: BTreeMap<PublicKey, PeerConfig>,
    pub update: BTreeMap<PublicKey, PeerConfig>,
    pub remove: Vec<PublicKey>,
}

impl PeerDiff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }

    /// How many peers the diff touches.
    pub fn len(&self) -> usize {
        self.add.len() + self.update.len() + self.remove.len()
    }

    /// Applies the diff to a configuration map, giving what the interface holds after it.
    pub fn apply_to(&self, peers: &mut BTreeMap<PublicKey, PeerConfig>) {
        for key in &self.remove {
            peers.remove(key);
        }
        for (key, config) in self.add.iter().chain(&self.update) {
            peers.insert(*key, config.clone());
        }
    }

    /// Adds these peer changes to `update`: additions and updates replace the peer's allowed
    /// IPs and set (or clear) its preshared key; removals remove.
    pub fn add_to(&self, mut update: DeviceUpdate) -> DeviceUpdate {
        for (key, config) in &self.add {
            update = update.add_peer(peer_builder(key, config, false));
        }
        for (key, config) in &self.update {
            update = update.add_peer(peer_builder(key, config, true));
        }
        for key in &self.remove {
            update = update.remove_peer_by_key(&Key(*key.as_bytes()));
        }
        update
    }
}

/// The builder of one added or updated peer. A new peer has no preshared key to clear, so
/// `existing` decides whether "no preshared key" is sent as an explicit unset.
fn peer_builder(key: &PublicKey, config: &PeerConfig, existing: bool) -> PeerConfigBuilder {
    let allowed: Vec<AllowedIp> = config
        .allowed_ips
        .iter()
        .map(|net| AllowedIp {
            address: net.addr(),
            cidr: net.prefix_len(),
        })
        .collect();
    let builder = PeerConfigBuilder::new(&Key(*key.as_bytes()))
        .replace_allowed_ips()
        .add_allowed_ips(&allowed);
    match &config.preshared_key {
        Some(psk) => builder.set_preshared_key(Key(*psk.as_bytes())),
        None if existing => builder.unset_preshared_key(),
        None => builder,
    }
}

/// Compares desired with observed peer configurations. `desired` comes in key order (a map's
/// iteration): the two sorted sequences are merged, so nothing is copied but the differences.
pub fn diff_peers<'a>(
    desired: impl IntoIterator<Item = (&'a PublicKey, &'a PeerConfig)>,
    observed: &BTreeMap<PublicKey, PeerConfig>,
) -> PeerDiff {
    let mut diff = PeerDiff::default();
    let mut observed = observed.iter().peekable();
    let mut previous: Option<&PublicKey> = None;
    for (key, want) in desired {
        assert!(
            previous.is_none_or(|previous| previous < key),
            "diff_peers takes the desired peers in key order"
        );
        previous = Some(key);
        while let Some((gone, _)) = observed.next_if(|(have, _)| *have < key) {
            diff.remove.push(*gone);
        }
        match observed.next_if(|(have, _)| *have == key) {
            None => {
                diff.add.insert(*key, want.clone());
            }
            Some((_, have)) if have != want => {
                diff.update.insert(*key, want.clone());
            }
            Some(_) => {}
        }
    }
    diff.remove.extend(observed.map(|(gone, _)| *gone));
    diff
}

/// How many peers differ between two configuration sets (what [`diff_peers`] would touch),
/// without building the diff.
pub fn count_differences(
    desired: &BTreeMap<PublicKey, PeerConfig>,
    observed: &BTreeMap<PublicKey, PeerConfig>,
) -> usize {
    let changed = desired
        .iter()
        .filter(|(key, want)| observed.get(key) != Some(want))
        .count();
    changed
        + observed
            .keys()
            .filter(|key| !desired.contains_key(key))
            .count()
}

/// Compares desired with observed for the given keys only (the keys an incremental decision
/// touched); every other peer is known to be unchanged.
pub fn diff_keys<'a>(
    desired: impl Fn(&PublicKey) -> Option<&'a PeerConfig>,
    observed: &BTreeMap<PublicKey, PeerConfig>,
    keys: impl IntoIterator<Item = PublicKey>,
) -> PeerDiff {
    let mut diff = PeerDiff::default();
    for key in keys {
        match (desired(&key), observed.get(&key)) {
            (Some(want), None) => {
                diff.add.insert(key, want.clone());
            }
            (Some(want), Some(have)) if want != have => {
                diff.update.insert(key, want.clone());
            }
            (None, Some(_)) => diff.remove.push(key),
            _ => {}
        }
    }
    diff
}

/// The additions that are safe while the `WgPeer` list is still arriving, page by page: of the
/// live, valid peers listed so far, those whose key is not on the interface, none of whose
/// addresses the interface already gives another peer, and whose key and addresses no other
/// listed peer claimed first. Such an addition can only turn out wrong for a peer that loses a
/// conflict to an older peer listed later; the full comparison after the list removes it then.
/// Everything else — updates of peers already there (which a not yet listed older peer with the
/// same key may hold rightly), taking an address from a peer on the interface, either side of a
/// conflict seen so far, removals — waits for the complete list, so a peer working before a
/// restart is never disturbed by a partial view. Each page costs a few hash lookups per peer
/// listed; nothing is re-decided.
#[derive(Debug, Default)]
pub struct EarlyAdditions {
    /// Who listed each key and address first.
    keys: HashMap<PublicKey, String>,
    addresses: HashMap<IpAddr, String>,
    /// Every address on the interface: as read before the list plus everything added since.
    taken: HashSet<IpAddr>,
}

impl EarlyAdditions {
    /// Starts from the interface as read before the list.
    pub fn new(on_interface: &BTreeMap<PublicKey, PeerConfig>) -> Self {
        Self {
            taken: on_interface
                .values()
                .flat_map(|config| config.allowed_ips.iter().map(ipnet::IpNet::addr))
                .collect(),
            ..Self::default()
        }
    }

    /// The additions among `listed` (the `WgPeer` name, key and configuration of peers just
    /// listed that are live and valid on their own), given what is on the interface (everything
    /// added before included). Remembers their claims for the pages to come.
    pub fn next(
        &mut self,
        listed: impl IntoIterator<Item = (String, PublicKey, PeerConfig)>,
        on_interface: &BTreeMap<PublicKey, PeerConfig>,
    ) -> PeerDiff {
        let mut diff = PeerDiff::default();
        for (name, key, config) in listed {
            let claimed_by_another = |owner: Option<&String>| owner.is_some_and(|o| *o != name);
            if claimed_by_another(self.keys.get(&key))
                || config
                    .allowed_ips
                    .iter()
                    .any(|ip| claimed_by_another(self.addresses.get(&ip.addr())))
            {
                continue;
            }
            self.keys.insert(key, name.clone());
            for ip in &config.allowed_ips {
                self.addresses.insert(ip.addr(), name.clone());
            }
            if on_interface.contains_key(&key)
                || diff.add.contains_key(&key)
                || config
                    .allowed_ips
                    .iter()
                    .any(|ip| self.taken.contains(&ip.addr()))
            {
                continue;
            }
            self.taken
                .extend(config.allowed_ips.iter().map(ipnet::IpNet::addr));
            diff.add.insert(key, config);
        }
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::keys::{PresharedKey, PrivateKey};

    fn key() -> PublicKey {
        PrivateKey::generate().public_key()
    }

    fn config(ips: &[&str]) -> PeerConfig {
        PeerConfig::new(ips.iter().map(|s| s.parse().unwrap()), None)
    }

    #[test]
    fn equal_sets_give_no_change() {
        let peers: BTreeMap<_, _> = [(key(), config(&["10.8.0.2/32"]))].into();
        assert!(diff_peers(&peers, &peers).is_empty());
        assert!(diff_peers(&BTreeMap::new(), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn missing_peers_are_added_and_extra_peers_removed() {
        let (a, b) = (key(), key());
        let desired: BTreeMap<_, _> = [(a, config(&["10.8.0.2/32"]))].into();
        let observed: BTreeMap<_, _> = [(b, config(&["10.8.0.3/32"]))].into();
        let diff = diff_peers(&desired, &observed);
        assert_eq!(diff.add.keys().collect::<Vec<_>>(), [&a]);
        assert!(diff.update.is_empty());
        assert_eq!(diff.remove, [b]);
        assert_eq!(diff.len(), 2);
    }

    #[test]
    fn changed_allowed_ips_or_preshared_key_is_an_update() {
        let (a, b, c) = (key(), key(), key());
        let observed: BTreeMap<_, _> = [
            (a, config(&["10.8.0.2/32"])),
            (b, config(&["10.8.0.3/32"])),
            (c, config(&["10.8.0.4/32"])),
        ]
        .into();
        let mut desired = observed.clone();
        desired.insert(a, config(&["10.8.0.2/32", "fd00:8::2/128"]));
        desired.get_mut(&b).unwrap().preshared_key = Some(PresharedKey::generate());
        let diff = diff_peers(&desired, &observed);
        assert!(diff.add.is_empty() && diff.remove.is_empty());
        assert_eq!(diff.update.keys().copied().collect::<Vec<_>>(), {
            let mut v = vec![a, b];
            v.sort();
            v
        });
        // and a preshared key removed on the interface is put back
        let mut observed_without = desired.clone();
        observed_without.get_mut(&b).unwrap().preshared_key = None;
        let diff = diff_peers(&desired, &observed_without);
        assert_eq!(diff.update.keys().collect::<Vec<_>>(), [&b]);
    }

    #[test]
    fn applying_the_diff_gives_the_desired_set() {
        let keys: Vec<PublicKey> = (0..6).map(|_| key()).collect();
        let observed: BTreeMap<_, _> = keys[..4]
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, config(&[&format!("10.8.0.{}/32", i + 2)])))
            .collect();
        let desired: BTreeMap<_, _> = keys[2..]
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, config(&[&format!("10.8.1.{}/32", i + 2)])))
            .collect();
        let diff = diff_peers(&desired, &observed);
        assert_eq!(diff.add.len(), 2);
        assert_eq!(diff.update.len(), 2);
        assert_eq!(diff.remove.len(), 2);
        assert_eq!(count_differences(&desired, &observed), diff.len());
        assert_eq!(count_differences(&observed, &desired), 6);
        let mut after = observed.clone();
        diff.apply_to(&mut after);
        assert_eq!(after, desired);
        assert!(diff_peers(&desired, &after).is_empty());
    }

    #[test]
    fn one_changed_peer_among_many_is_one_change() {
        let desired: BTreeMap<_, _> = (0..1000u32)
            .map(|i| {
                (
                    key(),
                    config(&[&format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255)]),
                )
            })
            .collect();
        let mut observed = desired.clone();
        let changed = *observed.keys().nth(500).unwrap();
        observed.insert(changed, config(&["10.99.0.1/32"]));
        let diff = diff_peers(&desired, &observed);
        assert_eq!(diff.len(), 1);
        assert!(diff.update.contains_key(&changed));
    }

    #[test]
    fn the_device_update_names_only_the_changed_peers() {
        let (a, b, c) = (key(), key(), key());
        let observed: BTreeMap<_, _> =
            [(a, config(&["10.8.0.2/32"])), (b, config(&["10.8.0.3/32"]))].into();
        let desired: BTreeMap<_, _> =
            [(a, config(&["10.8.0.2/32"])), (c, config(&["10.8.0.4/32"]))].into();
        let diff = diff_peers(&desired, &observed);
        let expected = DeviceUpdate::new()
            .add_peer(peer_builder(&c, &desired[&c], false))
            .remove_peer_by_key(&Key(*b.as_bytes()));
        assert_eq!(diff.add_to(DeviceUpdate::new()), expected);
        assert_ne!(
            diff.add_to(DeviceUpdate::new()),
            DeviceUpdate::new().replace_peers()
        );
    }

    #[test]
    fn diff_of_the_touched_keys_equals_the_full_diff_restricted_to_them() {
        let (a, b, c, d) = (key(), key(), key(), key());
        let observed: BTreeMap<_, _> = [
            (a, config(&["10.8.0.2/32"])),
            (b, config(&["10.8.0.3/32"])),
            (d, config(&["10.8.0.5/32"])),
        ]
        .into();
        let desired: BTreeMap<_, _> = [
            (a, config(&["10.8.0.2/32"])),
            (c, config(&["10.8.0.4/32"])),
            (d, config(&["10.8.0.6/32"])),
        ]
        .into();
        let all = diff_keys(|k| desired.get(k), &observed, [a, b, c, d]);
        assert_eq!(all, diff_peers(&desired, &observed));
        let some = diff_keys(|k| desired.get(k), &observed, [c]);
        assert_eq!(some.add.keys().collect::<Vec<_>>(), [&c]);
        assert_eq!(some.len(), 1);
    }
    fn listed(peers: &[(&str, PublicKey, PeerConfig)]) -> Vec<(String, PublicKey, PeerConfig)> {
        peers
            .iter()
            .map(|(name, key, config)| (name.to_string(), *key, config.clone()))
            .collect()
    }

    #[test]
    fn early_additions_skip_peers_on_the_interface_and_taken_addresses() {
        let (present, changed, thief, new) = (key(), key(), key(), key());
        let on_interface: BTreeMap<_, _> = [
            (present, config(&["10.8.0.2/32"])),
            (changed, config(&["10.8.0.3/32"])),
        ]
        .into();
        let page = listed(&[
            ("present", present, config(&["10.8.0.2/32"])),
            // an update of a peer already there waits for the full list
            ("changed", changed, config(&["10.8.0.9/32"])),
            // so does a new key claiming an address a peer on the interface holds
            ("thief", thief, config(&["10.8.0.7/32", "10.8.0.2/32"])),
            ("new", new, config(&["10.8.0.4/32", "fd00:8::4/128"])),
        ]);
        let diff = EarlyAdditions::new(&on_interface).next(page.clone(), &on_interface);
        assert_eq!(diff.add.keys().collect::<Vec<_>>(), [&new]);
        assert!(diff.update.is_empty() && diff.remove.is_empty());
        // on an empty interface every candidate without a conflict is an addition
        let empty = BTreeMap::new();
        let all = EarlyAdditions::new(&empty).next(page, &empty);
        assert_eq!(all.add.len(), 3, "{all:?}");
        assert!(
            !all.add.contains_key(&thief),
            "10.8.0.2 was listed first by another peer"
        );
    }

    #[test]
    fn early_additions_remember_claims_and_additions_across_pages() {
        let (first, second, same_key, again) = (key(), key(), key(), key());
        let mut on_interface = BTreeMap::new();
        let mut early = EarlyAdditions::new(&on_interface);
        let page = early.next(
            listed(&[
                ("first", first, config(&["10.8.0.2/32"])),
                ("same-key-a", same_key, config(&["10.8.0.5/32"])),
            ]),
            &on_interface,
        );
        assert_eq!(page.add.len(), 2);
        page.apply_to(&mut on_interface);
        let page = early.next(
            listed(&[
                // another peer claiming an address listed before: waits for the list
                ("second", second, config(&["10.8.0.2/32"])),
                // another peer with a key listed before: waits too
                ("same-key-b", same_key, config(&["10.8.0.6/32"])),
                // the same peer listed again (a change while the list arrives): already added
                ("first", first, config(&["10.8.0.2/32"])),
                ("again", again, config(&["10.8.0.7/32"])),
            ]),
            &on_interface,
        );
        assert_eq!(page.add.keys().collect::<Vec<_>>(), [&again]);
        page.apply_to(&mut on_interface);
        // an address listed on an earlier page stays claimed for a later claimant
        let late = key();
        let page = early.next(
            listed(&[("late", late, config(&["10.8.0.7/32"]))]),
            &on_interface,
        );
        assert!(page.is_empty());
    }

    mod merge {
        use super::*;
        use proptest::prelude::*;

        /// Peers over a small key space (so sets overlap) with one of three addresses each.
        fn peers() -> impl Strategy<Value = BTreeMap<PublicKey, PeerConfig>> {
            proptest::collection::btree_map(0u8..16, 0u8..3, 0..12).prop_map(|peers| {
                peers
                    .into_iter()
                    .map(|(key, host)| {
                        (
                            PublicKey::from_bytes([key; 32]),
                            config(&[&format!("10.8.0.{}/32", host + 2)]),
                        )
                    })
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn the_merged_diff_is_exactly_the_set_difference(
                desired in peers(),
                observed in peers(),
            ) {
                let diff = diff_peers(&desired, &observed);
                let added: Vec<_> = desired.keys().filter(|k| !observed.contains_key(k)).collect();
                let updated: Vec<_> = desired
                    .iter()
                    .filter(|(k, want)| observed.get(k).is_some_and(|have| have != *want))
                    .map(|(k, _)| k)
                    .collect();
                let removed: Vec<_> = observed.keys().filter(|k| !desired.contains_key(k)).copied().collect();
                prop_assert_eq!(diff.add.keys().collect::<Vec<_>>(), added);
                prop_assert_eq!(diff.update.keys().collect::<Vec<_>>(), updated);
                prop_assert_eq!(&diff.remove, &removed);
                let mut after = observed.clone();
                diff.apply_to(&mut after);
                prop_assert_eq!(after, desired);
            }
        }

        #[test]
        #[should_panic(expected = "in key order")]
        fn desired_peers_out_of_key_order_are_refused() {
            let (low, high) = (
                PublicKey::from_bytes([1; 32]),
                PublicKey::from_bytes([2; 32]),
            );
            let wanted = config(&["10.8.0.2/32"]);
            diff_peers([(&high, &wanted), (&low, &wanted)], &BTreeMap::new());
        }
    }
}
