//! The pure comparison of the peers an interface should have with the peers it has: which to
//! add, which to update (allowed IPs or preshared key changed) and which to remove. The result is
//! turned into exactly one `DeviceUpdate` naming only the changed peers — never a rewrite of the
//! whole interface.

use std::collections::{BTreeMap, HashSet};
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

/// Compares desired with observed peer configurations.
pub fn diff_peers(
    desired: &BTreeMap<PublicKey, PeerConfig>,
    observed: &BTreeMap<PublicKey, PeerConfig>,
) -> PeerDiff {
    let mut diff = PeerDiff::default();
    for (key, want) in desired {
        match observed.get(key) {
            None => {
                diff.add.insert(*key, want.clone());
            }
            Some(have) if have != want => {
                diff.update.insert(*key, want.clone());
            }
            Some(_) => {}
        }
    }
    diff.remove = observed
        .keys()
        .filter(|key| !desired.contains_key(key))
        .copied()
        .collect();
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

/// The additions that are safe while the `WgPeer` list is still arriving: of `candidates`
/// (peers desired from the part of the list seen so far), those whose key is not on the
/// interface and none of whose addresses the interface already gives another peer. Such an
/// addition can only turn out wrong for a peer that loses a conflict to an older peer not yet
/// listed; the full comparison after the list removes it then. Everything else — updates of
/// peers already there (which a not yet listed older peer with the same key may hold rightly),
/// taking an address from a peer on the interface, removals — waits for the complete list, so
/// a peer working before a restart is never disturbed by a partial view.
pub fn safe_additions<'a>(
    candidates: impl IntoIterator<Item = (&'a PublicKey, &'a PeerConfig)>,
    on_interface: &BTreeMap<PublicKey, PeerConfig>,
) -> PeerDiff {
    let mut taken: Option<HashSet<IpAddr>> = None;
    let mut diff = PeerDiff::default();
    for (key, config) in candidates {
        if on_interface.contains_key(key) {
            continue;
        }
        let taken = taken.get_or_insert_with(|| {
            on_interface
                .values()
                .flat_map(|config| config.allowed_ips.iter().map(ipnet::IpNet::addr))
                .collect()
        });
        if config
            .allowed_ips
            .iter()
            .all(|ip| !taken.contains(&ip.addr()))
        {
            diff.add.insert(*key, config.clone());
        }
    }
    diff
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
    #[test]
    fn early_additions_skip_peers_on_the_interface_and_taken_addresses() {
        let (present, changed, thief, new) = (key(), key(), key(), key());
        let on_interface: BTreeMap<_, _> = [
            (present, config(&["10.8.0.2/32"])),
            (changed, config(&["10.8.0.3/32"])),
        ]
        .into();
        let candidates: BTreeMap<_, _> = [
            (present, config(&["10.8.0.2/32"])),
            // an update of a peer already there waits for the full list
            (changed, config(&["10.8.0.9/32"])),
            // so does a new key claiming an address a peer on the interface holds
            (thief, config(&["10.8.0.7/32", "10.8.0.2/32"])),
            (new, config(&["10.8.0.4/32", "fd00:8::4/128"])),
        ]
        .into();
        let diff = safe_additions(&candidates, &on_interface);
        assert_eq!(diff.add.keys().collect::<Vec<_>>(), [&new]);
        assert!(diff.update.is_empty() && diff.remove.is_empty());
        // on an empty interface every candidate is an addition
        let all = safe_additions(&candidates, &BTreeMap::new());
        assert_eq!(all, diff_peers(&candidates, &BTreeMap::new()));
    }
}
