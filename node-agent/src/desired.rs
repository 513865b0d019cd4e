//! The desired peer set of one interface, decided purely: which `WgPeer`s are live at an instant,
//! which of those can go on the interface (a parseable key, an address inside the pool, a
//! preshared key when one is named) and, when two live peers claim the same key or address,
//! which one wins (the older one: creation time, then name). Every peer gets a [`PeerState`]
//! saying why it is or is not on the interface; the status module turns that into conditions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use jiff::Timestamp;
use wgsub_crds::keys::{PresharedKey, PublicKey};
use wgsub_crds::liveness::PeerLiveness;
use wgsub_crds::pool::{parse_host_v4, parse_host_v6, server_address_v4, server_address_v6};

use crate::snapshot::PeerConfig;

/// The address pools of a server, already parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pools {
    pub v4: Ipv4Net,
    pub v6: Option<Ipv6Net>,
}

impl Pools {
    /// The server's own addresses with the pool's prefix, as they go on the interface.
    pub fn interface_addresses(&self) -> Vec<IpNet> {
        let mut out = vec![IpNet::V4(
            Ipv4Net::new(server_address_v4(self.v4), self.v4.prefix_len())
                .unwrap_or(Ipv4Net::from(server_address_v4(self.v4))),
        )];
        if let Some(v6) = self.v6 {
            out.push(IpNet::V6(
                Ipv6Net::new(server_address_v6(v6), v6.prefix_len())
                    .unwrap_or(Ipv6Net::from(server_address_v6(v6))),
            ));
        }
        out
    }

    fn check_v4(&self, address: Ipv4Addr) -> Result<(), String> {
        let pool = self.v4;
        if !pool.contains(&address) {
            return Err(format!("address {address} is outside the pool {pool}"));
        }
        if address == server_address_v4(pool) {
            return Err(format!("address {address} is the server's own address"));
        }
        if pool.prefix_len() < 31 && (address == pool.network() || address == pool.broadcast()) {
            return Err(format!(
                "address {address} is the network or broadcast address of {pool}"
            ));
        }
        Ok(())
    }

    fn check_v6(&self, address: Ipv6Addr) -> Result<(), String> {
        let Some(pool) = self.v6 else {
            return Err(format!(
                "address6 {address} is set but the server has no IPv6 pool"
            ));
        };
        if !pool.contains(&address) {
            return Err(format!("address6 {address} is outside the pool {pool}"));
        }
        if address == server_address_v6(pool) || address == pool.network() {
            return Err(format!(
                "address6 {address} is reserved (server or anycast address)"
            ));
        }
        Ok(())
    }
}

/// The peer's preshared key as found in its Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresharedKeyInput {
    /// The peer names no preshared key.
    NotUsed,
    Found(PresharedKey),
    /// The Secret or its key does not exist (yet).
    Missing,
    /// The Secret holds something that is not a key.
    Invalid,
}

/// What the decision needs to know about one `WgPeer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInput {
    pub name: String,
    pub created: Option<Timestamp>,
    pub public_key: Option<String>,
    pub address: Option<String>,
    pub address6: Option<String>,
    pub liveness: PeerLiveness,
    pub preshared_key: PresharedKeyInput,
}

/// Why a peer that is not live stays off the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotLive {
    Disabled,
    /// The subscription's `maxDevices` has no room for it (the operator's label).
    OverLimit,
    /// The subscription used up its data quota for the period (the operator's label).
    OverQuota,
    Suspended,
    Expired,
}

/// Why a live peer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its public key or address is already taken by `with`.
    Conflict {
        with: String,
        what: String,
    },
    OutOfPool(String),
    /// The public key (or preshared key) is not a WireGuard key.
    InvalidKey(String),
    /// No public key yet: the operator publishes it once the private half is in its Secret.
    NoKey,
    NoAddress,
    MissingPresharedKey,
}

/// Where one peer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerState {
    Live(PublicKey),
    NotLive(NotLive),
    Refused(Refusal),
}

/// A peer that belongs on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    /// The `WgPeer` it comes from.
    pub name: String,
    pub config: PeerConfig,
}

/// The decision for one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredPeers {
    pub peers: BTreeMap<PublicKey, DesiredPeer>,
    /// Every input peer by name.
    pub states: BTreeMap<String, PeerState>,
}

impl DesiredPeers {
    /// The configurations only, keyed by public key, as the diff takes them.
    pub fn configs(&self) -> BTreeMap<PublicKey, PeerConfig> {
        self.configs_iter()
            .map(|(key, config)| (*key, config.clone()))
            .collect()
    }

    /// The configurations borrowed, in key order.
    pub fn configs_iter(&self) -> impl Iterator<Item = (&PublicKey, &PeerConfig)> {
        self.peers.iter().map(|(key, peer)| (key, &peer.config))
    }
}

fn not_live_reason(liveness: &PeerLiveness) -> NotLive {
    if !liveness.enabled {
        NotLive::Disabled
    } else if liveness.over_limit {
        NotLive::OverLimit
    } else if liveness.over_quota {
        NotLive::OverQuota
    } else if liveness.subscription_suspended {
        NotLive::Suspended
    } else {
        NotLive::Expired
    }
}

/// A live peer checked on its own: its key, addresses and preshared key.
fn validate(peer: &PeerInput, pools: &Pools) -> Result<(PublicKey, PeerConfig), Refusal> {
    let text = peer.public_key.as_deref().ok_or(Refusal::NoKey)?;
    let key =
        PublicKey::from_base64(text).map_err(|e| Refusal::InvalidKey(format!("publicKey: {e}")))?;
    let address = peer.address.as_deref().ok_or(Refusal::NoAddress)?;
    let v4 = parse_host_v4(address)
        .ok_or_else(|| Refusal::OutOfPool(format!("address {address:?} is not an IPv4 /32")))?;
    pools.check_v4(v4).map_err(Refusal::OutOfPool)?;
    let mut addresses = vec![IpNet::from(IpAddr::V4(v4))];
    if let Some(address6) = peer.address6.as_deref() {
        let v6 = parse_host_v6(address6).ok_or_else(|| {
            Refusal::OutOfPool(format!("address6 {address6:?} is not an IPv6 /128"))
        })?;
        pools.check_v6(v6).map_err(Refusal::OutOfPool)?;
        addresses.push(IpNet::from(IpAddr::V6(v6)));
    }
    let preshared_key = match &peer.preshared_key {
        PresharedKeyInput::NotUsed => None,
        PresharedKeyInput::Found(psk) => Some(psk.clone()),
        PresharedKeyInput::Missing => return Err(Refusal::MissingPresharedKey),
        PresharedKeyInput::Invalid => {
            return Err(Refusal::InvalidKey(
                "the preshared key Secret does not hold a WireGuard key".into(),
            ));
        }
    };
    Ok((key, PeerConfig::new(addresses, preshared_key)))
}

/// Decides which peers go on the interface at `now`.
pub fn desired_peers<'a>(
    pools: &Pools,
    peers: impl IntoIterator<Item = &'a PeerInput>,
    now: Timestamp,
) -> DesiredPeers {
    DesiredState::new(*pools, peers.into_iter().cloned(), now).desired
}

/// Something only one live peer may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Claim {
    Key(PublicKey),
    Address(IpAddr),
}

/// The host addresses a candidate claims: its allowed IPs (each a /32 or /128), IPv4 first.
fn addresses(config: &PeerConfig) -> impl Iterator<Item = IpAddr> + '_ {
    config.allowed_ips.iter().map(IpNet::addr)
}

/// One peer judged on its own (without the others).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Eval {
    /// Not live or invalid: its state does not depend on other peers.
    Decided(PeerState),
    /// Live and valid: on the interface unless an older peer holds one of its claims.
    Candidate { key: PublicKey, config: PeerConfig },
}

impl Eval {
    fn claims(&self) -> Vec<Claim> {
        match self {
            Eval::Decided(_) => Vec::new(),
            Eval::Candidate { key, config } => std::iter::once(Claim::Key(*key))
                .chain(addresses(config).map(Claim::Address))
                .collect(),
        }
    }
}

/// One peer judged on its own, as the start passes take it: its key and configuration when it
/// is live at `now` and valid; `None` otherwise (its state waits for the full decision).
pub fn live_candidate(
    peer: &PeerInput,
    pools: &Pools,
    now: Timestamp,
) -> Option<(PublicKey, PeerConfig)> {
    match evaluate(peer, pools, now) {
        Eval::Candidate { key, config } => Some((key, config)),
        Eval::Decided(_) => None,
    }
}

fn evaluate(peer: &PeerInput, pools: &Pools, now: Timestamp) -> Eval {
    if !peer.liveness.is_live(now) {
        return Eval::Decided(PeerState::NotLive(not_live_reason(&peer.liveness)));
    }
    match validate(peer, pools) {
        Ok((key, config)) => Eval::Candidate { key, config },
        Err(refusal) => Eval::Decided(PeerState::Refused(refusal)),
    }
}

/// What the decision keeps of a peer's input besides its evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerMeta {
    created: Option<Timestamp>,
    expires_at: Option<Timestamp>,
}

/// Older peers win conflicts; a peer without a creation time counts as newest.
fn conflict_order<'a>((name, meta): &(&'a String, PeerMeta)) -> (bool, Option<Timestamp>, &'a str) {
    (meta.created.is_none(), meta.created, name.as_str())
}

/// The decision for one interface, kept up to date peer by peer: a change of one peer
/// re-decides only that peer and the peers sharing a key or address with it (transitively), so
/// one event costs O(log n), not O(n). [`DesiredState::new`] and any sequence of
/// [`DesiredState::update`]s give the same decision for the same inputs.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pools: Pools,
    /// Per peer what ordering and expiry need (the rest of its input lives in `evals`).
    inputs: BTreeMap<String, PeerMeta>,
    evals: BTreeMap<String, Eval>,
    /// (claim, claimant) pairs of every candidate, winners and losers alike.
    claimants: BTreeSet<(Claim, String)>,
    expiries: BTreeSet<(Timestamp, String)>,
    pub desired: DesiredPeers,
}

impl DesiredState {
    /// The decision for `peers` from scratch, in bulk: every peer is judged once, the
    /// candidates are ordered by age once and claims are handed out greedily, and every map is
    /// built from sorted input (no per-peer tree rebalancing). When a name comes twice the last
    /// input wins, as with [`DesiredState::update`].
    pub fn new(pools: Pools, peers: impl IntoIterator<Item = PeerInput>, now: Timestamp) -> Self {
        let mut list: Vec<PeerInput> = peers.into_iter().collect();
        // Stable sort then reverse: the last input of each name comes first and is kept.
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.reverse();
        list.dedup_by(|later, kept| later.name == kept.name);
        list.reverse();
        let mut inputs = Vec::with_capacity(list.len());
        let mut evals = Vec::with_capacity(list.len());
        let mut claimants = Vec::with_capacity(list.len() * 2);
        let mut expiries = Vec::with_capacity(list.len());
        for input in list {
            let name = input.name.clone();
            if let Some(at) = input.liveness.next_change(now) {
                expiries.push((at, name.clone()));
            }
            let meta = PeerMeta {
                created: input.created,
                expires_at: input.liveness.expires_at,
            };
            let eval = evaluate(&input, &pools, now);
            if let Eval::Candidate { key, config } = &eval {
                claimants.push((Claim::Key(*key), name.clone()));
                for address in addresses(config) {
                    claimants.push((Claim::Address(address), name.clone()));
                }
            }
            inputs.push((name.clone(), meta));
            evals.push((name, eval));
        }
        let mut order: Vec<usize> = (0..evals.len())
            .filter(|i| matches!(evals[*i].1, Eval::Candidate { .. }))
            .collect();
        order.sort_by(|a, b| {
            let (a, b) = (&inputs[*a], &inputs[*b]);
            conflict_order(&(&a.0, a.1)).cmp(&conflict_order(&(&b.0, b.1)))
        });
        let mut states: Vec<Option<PeerState>> = evals
            .iter()
            .map(|(_, eval)| match eval {
                Eval::Decided(state) => Some(state.clone()),
                Eval::Candidate { .. } => None,
            })
            .collect();
        let mut key_owner: HashMap<PublicKey, usize> = HashMap::with_capacity(order.len());
        let mut address_owner: HashMap<IpAddr, usize> = HashMap::with_capacity(order.len());
        let mut peers = Vec::with_capacity(order.len());
        for i in order {
            let (name, eval) = &evals[i];
            let Eval::Candidate { key, config } = eval else {
                continue;
            };
            let conflict = key_owner
                .get(key)
                .map(|owner| (*owner, "publicKey".to_string()))
                .or_else(|| {
                    addresses(config).find_map(|address| {
                        address_owner
                            .get(&address)
                            .map(|owner| (*owner, format!("address {address}")))
                    })
                });
            states[i] = Some(match conflict {
                Some((owner, what)) => PeerState::Refused(Refusal::Conflict {
                    with: evals[owner].0.clone(),
                    what,
                }),
                None => {
                    key_owner.insert(*key, i);
                    for address in addresses(config) {
                        address_owner.insert(address, i);
                    }
                    peers.push((
                        *key,
                        DesiredPeer {
                            name: name.clone(),
                            config: config.clone(),
                        },
                    ));
                    PeerState::Live(*key)
                }
            });
        }
        peers.sort_unstable_by_key(|(key, _)| *key);
        claimants.sort_unstable();
        expiries.sort_unstable();
        let states = evals
            .iter()
            .zip(states)
            .filter_map(|((name, _), state)| Some((name.clone(), state?)))
            .collect();
        DesiredState {
            pools,
            inputs: inputs.into_iter().collect(),
            evals: evals.into_iter().collect(),
            claimants: claimants.into_iter().collect(),
            expiries: expiries.into_iter().collect(),
            desired: DesiredPeers {
                peers: peers.into_iter().collect(),
                states,
            },
        }
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// The earliest `expiresAt` after `now` of a peer that was live when last decided.
    pub fn next_expiry(&self, now: Timestamp) -> Option<Timestamp> {
        self.expiries.iter().map(|(at, _)| *at).find(|at| *at > now)
    }

    /// Applies changed peers (`None`: the peer is gone) and the passing of time up to `now`.
    /// Returns the public keys whose desired entry may have changed.
    pub fn update(
        &mut self,
        changes: Vec<(String, Option<PeerInput>)>,
        now: Timestamp,
    ) -> BTreeSet<PublicKey> {
        let mut affected: BTreeSet<String> = BTreeSet::new();
        while let Some((at, name)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.expiries.remove(&(at, name.clone()));
            affected.insert(name);
        }
        let mut fresh: BTreeMap<String, Eval> = BTreeMap::new();
        for (name, input) in changes {
            if let Some(old) = self.inputs.remove(&name)
                && let Some(at) = old.expires_at
            {
                self.expiries.remove(&(at, name.clone()));
            }
            if let Some(input) = input {
                if let Some(at) = input.liveness.next_change(now) {
                    self.expiries.insert((at, name.clone()));
                }
                self.inputs.insert(
                    name.clone(),
                    PeerMeta {
                        created: input.created,
                        expires_at: input.liveness.expires_at,
                    },
                );
                fresh.insert(name.clone(), evaluate(&input, &self.pools, now));
            }
            affected.insert(name);
        }
        // Withdraw the old claims of affected peers, then judge them again.
        let mut pending: Vec<Claim> = Vec::new();
        for name in &affected {
            let old = self.evals.remove(name);
            if let Some(old) = &old {
                for claim in old.claims() {
                    self.claimants.remove(&(claim, name.clone()));
                    pending.push(claim);
                }
            }
            // A peer whose input did not change was affected by its expiry: only its liveness
            // changed, and it ended.
            let eval = match fresh.remove(name) {
                Some(eval) => Some(eval),
                None if self.inputs.contains_key(name) => {
                    old.map(|_| Eval::Decided(PeerState::NotLive(NotLive::Expired)))
                }
                None => None,
            };
            if let Some(eval) = eval {
                for claim in eval.claims() {
                    self.claimants.insert((claim, name.clone()));
                    pending.push(claim);
                }
                self.evals.insert(name.clone(), eval);
            }
        }
        // Everyone sharing a claim with the group joins it, transitively.
        let mut group = affected;
        let mut seen: BTreeSet<Claim> = BTreeSet::new();
        while let Some(claim) = pending.pop() {
            if !seen.insert(claim) {
                continue;
            }
            let holders: Vec<&String> = self
                .claimants
                .range((claim, String::new())..)
                .take_while(|(c, _)| *c == claim)
                .map(|(_, name)| name)
                .collect();
            for name in holders {
                if group.insert(name.clone())
                    && let Some(eval) = self.evals.get(name)
                {
                    pending.extend(eval.claims());
                }
            }
        }
        let mut keys = BTreeSet::new();
        for name in &group {
            if let Some(PeerState::Live(key)) = self.desired.states.remove(name) {
                self.desired.peers.remove(&key);
                keys.insert(key);
            }
        }
        let mut ordered: Vec<(&String, PeerMeta)> = group
            .iter()
            .filter_map(|n| Some((n, *self.inputs.get(n)?)))
            .collect();
        ordered.sort_by(|a, b| conflict_order(a).cmp(&conflict_order(b)));
        let mut key_owner: BTreeMap<PublicKey, &str> = BTreeMap::new();
        let mut address_owner: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for (name, _) in ordered {
            let state = match self.evals.get(name) {
                None => continue,
                Some(Eval::Decided(state)) => state.clone(),
                Some(Eval::Candidate { key, config }) => {
                    let conflict = key_owner
                        .get(key)
                        .map(|owner| (owner.to_string(), "publicKey".to_string()))
                        .or_else(|| {
                            addresses(config).find_map(|address| {
                                address_owner
                                    .get(&address)
                                    .map(|owner| (owner.to_string(), format!("address {address}")))
                            })
                        });
                    match conflict {
                        Some((with, what)) => PeerState::Refused(Refusal::Conflict { with, what }),
                        None => {
                            key_owner.insert(*key, name);
                            for address in addresses(config) {
                                address_owner.insert(address, name);
                            }
                            keys.insert(*key);
                            self.desired.peers.insert(
                                *key,
                                DesiredPeer {
                                    name: name.clone(),
                                    config: config.clone(),
                                },
                            );
                            PeerState::Live(*key)
                        }
                    }
                }
            };
            self.desired.states.insert(name.clone(), state);
        }
        keys
    }
}

/// What the tests of the decisions built on [`DesiredState`] (here, in `pass` and in `expiry`)
/// start from: a clock reading, an IPv4 pool and a live peer.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use wgsub_crds::keys::PrivateKey;
    use wgsub_crds::pool::parse_pool_v4;

    /// The tests' "now".
    pub(crate) const NOW: &str = "2026-06-01T12:00:00Z";

    pub(crate) fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// `10.8.0.0/24`, no IPv6 pool.
    pub(crate) fn pools_v4() -> Pools {
        Pools {
            v4: parse_pool_v4("10.8.0.0/24").unwrap(),
            v6: None,
        }
    }

    /// A live peer at `address` with a fresh key: enabled, within every limit, paid until
    /// 2026-07-01, no preshared key.
    pub(crate) fn live_peer(name: impl Into<String>, address: impl Into<String>) -> PeerInput {
        PeerInput {
            name: name.into(),
            created: Some(t("2026-01-01T00:00:00Z")),
            public_key: Some(PrivateKey::generate().public_key().to_base64()),
            address: Some(address.into()),
            address6: None,
            liveness: PeerLiveness {
                enabled: true,
                over_limit: false,
                over_quota: false,
                subscription_suspended: false,
                expires_at: Some(t("2026-07-01T00:00:00Z")),
            },
            preshared_key: PresharedKeyInput::NotUsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{NOW, live_peer as peer, pools_v4, t};
    use super::*;
    use wgsub_crds::keys::PrivateKey;
    use wgsub_crds::pool::parse_pool_v6;

    fn pools() -> Pools {
        Pools {
            v6: Some(parse_pool_v6("fd00:8::/64").unwrap()),
            ..pools_v4()
        }
    }

    /// One peer kept off the interface for each reason (at 10.8.0.2 and up), with the reason.
    fn kept_off() -> Vec<(PeerInput, NotLive)> {
        type Change = fn(&mut PeerLiveness);
        let cases: [(&str, Change, NotLive); 6] = [
            ("disabled", |l| l.enabled = false, NotLive::Disabled),
            ("over-limit", |l| l.over_limit = true, NotLive::OverLimit),
            ("over-quota", |l| l.over_quota = true, NotLive::OverQuota),
            (
                "suspended",
                |l| l.subscription_suspended = true,
                NotLive::Suspended,
            ),
            ("expired", |l| l.expires_at = Some(t(NOW)), NotLive::Expired),
            ("never", |l| l.expires_at = None, NotLive::Expired),
        ];
        cases
            .into_iter()
            .zip(2..)
            .map(|((name, change, reason), host)| {
                let mut input = peer(name, format!("10.8.0.{host}/32"));
                change(&mut input.liveness);
                (input, reason)
            })
            .collect()
    }

    fn refusal(desired: &DesiredPeers, name: &str) -> Refusal {
        match desired.states.get(name) {
            Some(PeerState::Refused(r)) => r.clone(),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn addresses_of_a_live_peer_become_allowed_ips() {
        let mut p = peer("a", "10.8.0.2/32");
        p.address6 = Some("fd00:8::2/128".into());
        let psk = PresharedKey::generate();
        p.preshared_key = PresharedKeyInput::Found(psk.clone());
        let desired = desired_peers(&pools(), [&p], t(NOW));
        let key = PublicKey::from_base64(p.public_key.as_deref().unwrap()).unwrap();
        assert_eq!(desired.states["a"], PeerState::Live(key));
        let config = &desired.peers[&key].config;
        let expected: Vec<IpNet> = ["10.8.0.2/32", "fd00:8::2/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(&*config.allowed_ips, expected.as_slice());
        assert_eq!(config.preshared_key, Some(psk));
    }

    #[test]
    fn one_peer_judged_alone_gives_what_its_lone_decision_puts_on_the_interface() {
        let live = peer("live", "10.8.0.2/32");
        let outside = peer("outside", "10.9.0.2/32");
        let mut keyless = peer("keyless", "10.8.0.4/32");
        keyless.public_key = None;
        let kept_off = kept_off();
        let inputs = [&live, &outside, &keyless]
            .into_iter()
            .chain(kept_off.iter().map(|(input, _)| input));
        for input in inputs {
            let alone = desired_peers(&pools(), [input], t(NOW));
            assert_eq!(
                live_candidate(input, &pools(), t(NOW)),
                alone
                    .peers
                    .into_iter()
                    .next()
                    .map(|(key, peer)| (key, peer.config)),
                "{}",
                input.name
            );
        }
        assert!(live_candidate(&live, &pools(), t(NOW)).is_some());
    }

    #[test]
    fn disabled_over_limit_over_quota_suspended_and_expired_peers_stay_off_with_their_reason() {
        let kept_off = kept_off();
        let desired = desired_peers(&pools(), kept_off.iter().map(|(input, _)| input), t(NOW));
        assert!(desired.peers.is_empty());
        for (input, reason) in kept_off {
            assert_eq!(
                desired.states[&input.name],
                PeerState::NotLive(reason),
                "{}",
                input.name
            );
        }
    }

    #[test]
    fn duplicate_address_refuses_the_newer_peer_and_keeps_the_older() {
        let mut older = peer("zz-older", "10.8.0.2/32");
        older.created = Some(t("2026-01-01T00:00:00Z"));
        let mut newer = peer("aa-newer", "10.8.0.2/32");
        newer.created = Some(t("2026-02-01T00:00:00Z"));
        for order in [[&older, &newer], [&newer, &older]] {
            let desired = desired_peers(&pools(), order, t(NOW));
            assert_eq!(desired.peers.len(), 1);
            assert!(matches!(desired.states["zz-older"], PeerState::Live(_)));
            assert_eq!(
                refusal(&desired, "aa-newer"),
                Refusal::Conflict {
                    with: "zz-older".into(),
                    what: "address 10.8.0.2".into()
                }
            );
        }
    }

    #[test]
    fn same_creation_time_is_decided_by_name() {
        let a = peer("a", "10.8.0.2/32");
        let b = peer("b", "10.8.0.2/32");
        let desired = desired_peers(&pools(), [&b, &a], t(NOW));
        assert!(matches!(desired.states["a"], PeerState::Live(_)));
        assert!(matches!(refusal(&desired, "b"), Refusal::Conflict { .. }));
    }

    #[test]
    fn duplicate_public_key_is_a_conflict() {
        let a = peer("a", "10.8.0.2/32");
        let mut b = peer("b", "10.8.0.3/32");
        b.public_key = a.public_key.clone();
        let desired = desired_peers(&pools(), [&a, &b], t(NOW));
        assert_eq!(
            refusal(&desired, "b"),
            Refusal::Conflict {
                with: "a".into(),
                what: "publicKey".into()
            }
        );
    }

    #[test]
    fn a_refused_or_dead_peer_does_not_block_the_address_for_others() {
        let mut dead = peer("a-dead", "10.8.0.2/32");
        dead.liveness.enabled = false;
        let mut bad_key = peer("b-bad", "10.8.0.2/32");
        bad_key.public_key = Some("not a key".into());
        let good = peer("c-good", "10.8.0.2/32");
        let desired = desired_peers(&pools(), [&dead, &bad_key, &good], t(NOW));
        assert!(matches!(desired.states["c-good"], PeerState::Live(_)));
        assert!(matches!(refusal(&desired, "b-bad"), Refusal::InvalidKey(_)));
    }

    #[test]
    fn addresses_outside_the_pool_or_reserved_are_refused() {
        for (address, address6) in [
            ("10.9.0.2/32", None),
            ("10.8.0.1/32", None),
            ("10.8.0.0/32", None),
            ("10.8.0.255/32", None),
            ("10.8.0.2/24", None),
            ("10.8.0.2/32", Some("fd00:9::2/128")),
            ("10.8.0.2/32", Some("fd00:8::1/128")),
        ] {
            let mut p = peer("p", address);
            p.address6 = address6.map(str::to_owned);
            let desired = desired_peers(&pools(), [&p], t(NOW));
            assert!(
                matches!(refusal(&desired, "p"), Refusal::OutOfPool(_)),
                "{address} {address6:?}"
            );
        }
        let mut p = peer("p", "10.8.0.2/32");
        p.address6 = Some("fd00:8::2/128".into());
        let no_v6 = Pools {
            v6: None,
            ..pools()
        };
        let desired = desired_peers(&no_v6, [&p], t(NOW));
        assert!(matches!(refusal(&desired, "p"), Refusal::OutOfPool(m) if m.contains("no IPv6")));
    }

    #[test]
    fn missing_key_address_or_preshared_key_are_named() {
        let mut no_key = peer("no-key", "10.8.0.2/32");
        no_key.public_key = None;
        let mut no_address = peer("no-address", "10.8.0.3/32");
        no_address.address = None;
        let mut no_psk = peer("no-psk", "10.8.0.4/32");
        no_psk.preshared_key = PresharedKeyInput::Missing;
        let mut bad_psk = peer("bad-psk", "10.8.0.5/32");
        bad_psk.preshared_key = PresharedKeyInput::Invalid;
        let desired = desired_peers(&pools(), [&no_key, &no_address, &no_psk, &bad_psk], t(NOW));
        assert!(desired.peers.is_empty());
        assert_eq!(refusal(&desired, "no-key"), Refusal::NoKey);
        assert_eq!(refusal(&desired, "no-address"), Refusal::NoAddress);
        assert_eq!(refusal(&desired, "no-psk"), Refusal::MissingPresharedKey);
        assert!(matches!(
            refusal(&desired, "bad-psk"),
            Refusal::InvalidKey(_)
        ));
    }

    #[test]
    fn interface_addresses_are_the_first_hosts_with_the_pool_prefix() {
        let addresses: Vec<String> = pools()
            .interface_addresses()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(addresses, ["10.8.0.1/24", "fd00:8::1/64"]);
    }

    mod incremental {
        use super::*;
        use proptest::prelude::*;

        /// A small world so conflicts are frequent: 6 names, 4 keys, 4 addresses.
        fn input(
            name: usize,
            key: usize,
            address: usize,
            created: i64,
            enabled: bool,
            expires: i64,
            keys: &[String],
        ) -> PeerInput {
            PeerInput {
                name: format!("p{name}"),
                created: Some(Timestamp::from_second(1_700_000_000 + created).unwrap()),
                public_key: Some(keys[key].clone()),
                address: Some(format!("10.8.0.{}/32", address + 2)),
                address6: None,
                liveness: PeerLiveness {
                    enabled,
                    over_limit: false,
                    over_quota: false,
                    subscription_suspended: false,
                    expires_at: Some(Timestamp::from_second(1_800_000_000 + expires).unwrap()),
                },
                preshared_key: PresharedKeyInput::NotUsed,
            }
        }

        proptest! {
            #[test]
            fn incremental_updates_equal_a_fresh_decision(
                ops in proptest::collection::vec(
                    (0usize..6, 0usize..4, 0usize..4, 0i64..3, any::<bool>(), 0i64..20, 0u8..4, 0i64..3),
                    1..40,
                )
            ) {
                let keys: Vec<String> = (0..4).map(|_| PrivateKey::generate().public_key().to_base64()).collect();
                let mut now = Timestamp::from_second(1_800_000_000).unwrap();
                let mut state = DesiredState::new(pools(), [], now);
                let mut inputs: BTreeMap<String, PeerInput> = BTreeMap::new();
                for (name, key, address, created, enabled, expires, action, advance) in ops {
                    now = now.checked_add(jiff::SignedDuration::from_secs(advance * 3)).unwrap();
                    let peer = input(name, key, address, created, enabled, expires, &keys);
                    let change = if action == 0 {
                        inputs.remove(&peer.name);
                        (peer.name.clone(), None)
                    } else {
                        inputs.insert(peer.name.clone(), peer.clone());
                        (peer.name.clone(), Some(peer))
                    };
                    let before = state.desired.clone();
                    let touched = state.update(vec![change], now);
                    let fresh = DesiredState::new(pools(), inputs.values().cloned(), now);
                    prop_assert_eq!(&state.desired, &fresh.desired);
                    prop_assert_eq!(state.next_expiry(now), fresh.next_expiry(now));
                    // Every key whose entry changed is reported.
                    for (key, peer) in &fresh.desired.peers {
                        if before.peers.get(key) != Some(peer) {
                            prop_assert!(touched.contains(key));
                        }
                    }
                    for key in before.peers.keys() {
                        if !fresh.desired.peers.contains_key(key) {
                            prop_assert!(touched.contains(key));
                        }
                    }
                }
            }
        }

        #[test]
        fn expiry_alone_is_applied_by_update_without_changes() {
            let keys: Vec<String> = (0..2)
                .map(|_| PrivateKey::generate().public_key().to_base64())
                .collect();
            let now = Timestamp::from_second(1_800_000_000).unwrap();
            let older = input(0, 0, 0, 0, true, 5, &keys);
            let newer = input(1, 1, 0, 1, true, 50, &keys);
            let mut state = DesiredState::new(pools(), [older, newer], now);
            assert!(matches!(
                state.desired.states["p1"],
                PeerState::Refused(Refusal::Conflict { .. })
            ));
            assert_eq!(
                state.next_expiry(now),
                Some(Timestamp::from_second(1_800_000_005).unwrap())
            );
            let later = Timestamp::from_second(1_800_000_005).unwrap();
            let touched = state.update(Vec::new(), later);
            assert_eq!(touched.len(), 2);
            assert_eq!(
                state.desired.states["p0"],
                PeerState::NotLive(NotLive::Expired)
            );
            assert!(matches!(state.desired.states["p1"], PeerState::Live(_)));
            assert_eq!(
                state.next_expiry(later),
                Some(Timestamp::from_second(1_800_000_050).unwrap())
            );
        }
    }
}
