//! The addresses in use on one `WgServer`, derived from the peers that exist, and the
//! claim/release bookkeeping that keeps two allocations from ever handing out the same address.
//!
//! Pure data: the shell keeps one [`UsedAddresses`] per server behind a per-server lock (see
//! `pools`), the reconcile decision claims from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use kube::ResourceExt;
use wgsub_crds::WgPeer;
use wgsub_crds::pool::{self, PoolError};

/// Every address held by a peer of one server, and which peer holds it.
///
/// When two peers carry the same address (only possible by hand-editing), the one created first
/// (then: the lower name) holds it; the other's address counts as taken, so the reconcile
/// decision gives that other peer a fresh one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsedAddresses {
    /// The held IPv4 addresses as maximal runs of consecutive addresses (first → last), so the
    /// lowest free address of a pool is one lookup away however full the pool is.
    runs_v4: BTreeMap<u32, u32>,
    v6: BTreeSet<Ipv6Addr>,
    owner_v4: HashMap<Ipv4Addr, String>,
    owner_v6: HashMap<Ipv6Addr, String>,
}

/// The address is a client address of the pool: inside it and neither the network, the
/// broadcast (below /31) nor the server's address.
pub fn is_client_v4(pool: Ipv4Net, address: Ipv4Addr) -> bool {
    pool.contains(&address)
        && address != pool::server_address_v4(pool)
        && (pool.prefix_len() >= 31 || (address != pool.network() && address != pool.broadcast()))
}

/// The address is a client address of the IPv6 pool: inside it and neither the subnet-router
/// anycast address nor the server's address.
pub fn is_client_v6(pool: Ipv6Net, address: Ipv6Addr) -> bool {
    pool.contains(&address) && address != pool.network() && address != pool::server_address_v6(pool)
}

/// What the address bookkeeping reads of a `WgPeer`: its name, creation time, server and
/// addresses. The shell lists peers into this (the rest of each object is skipped while
/// parsing), so loading a full server costs a few dozen bytes per peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddresses {
    pub name: String,
    pub created: Option<jiff::Timestamp>,
    pub server: String,
    pub address: Option<String>,
    pub address6: Option<String>,
}

impl PeerAddresses {
    /// The fields of a whole peer.
    pub fn of(peer: &WgPeer) -> Self {
        Self {
            name: peer.name_any(),
            created: peer.metadata.creation_timestamp.as_ref().map(|t| t.0),
            server: peer.spec.server.clone(),
            address: peer.spec.address.clone(),
            address6: peer.spec.address6.clone(),
        }
    }
}

impl UsedAddresses {
    /// The addresses of the peers whose `spec.server` is `server`; peers of other servers and
    /// address texts that are not a host address are ignored.
    pub fn from_peers<'a>(server: &str, peers: impl IntoIterator<Item = &'a WgPeer>) -> Self {
        Self::from_addresses(server, peers.into_iter().map(PeerAddresses::of))
    }

    /// [`Self::from_peers`] on the address fields alone.
    pub fn from_addresses(server: &str, peers: impl IntoIterator<Item = PeerAddresses>) -> Self {
        let mut ours: Vec<PeerAddresses> = peers
            .into_iter()
            .filter(|peer| peer.server == server)
            .collect();
        ours.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        let mut used = Self::default();
        for peer in ours {
            if let Some(v4) = peer.address.as_deref().and_then(pool::parse_host_v4) {
                used.claim_v4(v4, &peer.name);
            }
            if let Some(v6) = peer.address6.as_deref().and_then(pool::parse_host_v6) {
                used.claim_v6(v6, &peer.name);
            }
        }
        used
    }

    /// Records that `peer` holds `address`. Returns false (and changes nothing) when another
    /// peer already holds it.
    pub fn claim_v4(&mut self, address: Ipv4Addr, peer: &str) -> bool {
        match self.owner_v4.get(&address) {
            Some(owner) => owner == peer,
            None => {
                self.insert_run_v4(u32::from(address));
                self.owner_v4.insert(address, peer.to_owned());
                true
            }
        }
    }

    /// Adds `address` (not yet held) to the runs, merging with its neighbours.
    fn insert_run_v4(&mut self, address: u32) {
        let mut first = address;
        let mut last = address;
        if let Some((&start, &end)) = self.runs_v4.range(..address).next_back()
            && end.checked_add(1) == Some(address)
        {
            first = start;
        }
        if let Some(next) = address.checked_add(1)
            && let Some(end) = self.runs_v4.remove(&next)
        {
            last = end;
        }
        self.runs_v4.insert(first, last);
    }

    /// Removes `address` (held) from the runs, splitting the run that holds it.
    fn remove_run_v4(&mut self, address: u32) {
        let Some((&start, &end)) = self.runs_v4.range(..=address).next_back() else {
            return;
        };
        if end < address {
            return;
        }
        self.runs_v4.remove(&start);
        if start < address {
            self.runs_v4.insert(start, address - 1);
        }
        if address < end {
            self.runs_v4.insert(address + 1, end);
        }
    }

    /// Records that `peer` holds the IPv6 `address`. Returns false when another peer holds it.
    pub fn claim_v6(&mut self, address: Ipv6Addr, peer: &str) -> bool {
        match self.owner_v6.get(&address) {
            Some(owner) => owner == peer,
            None => {
                self.v6.insert(address);
                self.owner_v6.insert(address, peer.to_owned());
                true
            }
        }
    }

    /// The peer holding an IPv4 address.
    pub fn owner_v4(&self, address: Ipv4Addr) -> Option<&str> {
        self.owner_v4.get(&address).map(String::as_str)
    }

    /// The peer holding an IPv6 address.
    pub fn owner_v6(&self, address: Ipv6Addr) -> Option<&str> {
        self.owner_v6.get(&address).map(String::as_str)
    }

    /// Frees `address` if `peer` holds it.
    pub fn release_v4(&mut self, address: Ipv4Addr, peer: &str) {
        if self.owner_v4(address) == Some(peer) {
            self.owner_v4.remove(&address);
            self.remove_run_v4(u32::from(address));
        }
    }

    /// Frees the IPv6 `address` if `peer` holds it.
    pub fn release_v6(&mut self, address: Ipv6Addr, peer: &str) {
        if self.owner_v6(address) == Some(peer) {
            self.owner_v6.remove(&address);
            self.v6.remove(&address);
        }
    }

    /// Gives `peer` the lowest free client address of `pool` and records the claim.
    ///
    /// The lowest client address is the one after the server's; when it is held, the first
    /// address after the run holding it is free (runs are maximal): one lookup in the runs,
    /// however full the pool is.
    pub fn allocate_v4(&mut self, pool: Ipv4Net, peer: &str) -> Result<Ipv4Addr, PoolError> {
        let exhausted = || PoolError::Exhausted {
            pool: pool.to_string(),
        };
        let mut candidate = u32::from(pool::server_address_v4(pool))
            .checked_add(1)
            .ok_or_else(exhausted)?;
        if let Some((_, &end)) = self.runs_v4.range(..=candidate).next_back()
            && end >= candidate
        {
            candidate = end.checked_add(1).ok_or_else(exhausted)?;
        }
        let address = Ipv4Addr::from(candidate);
        if !is_client_v4(pool, address) {
            return Err(exhausted());
        }
        self.claim_v4(address, peer);
        Ok(address)
    }

    /// Gives `peer` the lowest free client address of an IPv6 `pool` and records the claim.
    pub fn allocate_v6(&mut self, pool: Ipv6Net, peer: &str) -> Result<Ipv6Addr, PoolError> {
        let address = pool::allocate_v6(pool, &self.v6)?;
        self.claim_v6(address, peer);
        Ok(address)
    }

    /// How many IPv4 addresses are held.
    pub fn len_v4(&self) -> usize {
        self.owner_v4.len()
    }

    /// How many IPv6 addresses are held.
    pub fn len_v6(&self) -> usize {
        self.v6.len()
    }

    /// How many IPv4 addresses inside `pool` are held.
    pub fn used_in_v4(&self, pool: Ipv4Net) -> usize {
        let (low, high) = (u32::from(pool.network()), u32::from(pool.broadcast()));
        let overlapping = match self.runs_v4.range(..low).next_back() {
            Some((&start, &end)) if end >= low => Some((start, end)),
            _ => None,
        };
        overlapping
            .into_iter()
            .chain(self.runs_v4.range(low..=high).map(|(&s, &e)| (s, e)))
            .map(|(start, end)| (end.min(high) - start.max(low)) as usize + 1)
            .sum()
    }
}

/// One server's address bookkeeping across loads from the API: the addresses the last load
/// showed, plus the claims of peer writes in flight.
///
/// An allocation is decided in memory and written without holding anything: the decision claims
/// the address in [`Self::used`], the caller [`reserves`](Self::reserve) it for the peer before
/// the write and [`settles`](Self::settle) the reservation with the write's outcome. A load
/// replaces `used` with what a list of the peers showed, and re-claims every reservation the
/// list may not have seen — one still in flight, or settled after the list was asked for — so a
/// load never frees an address a write is giving (or has just given) a peer. A reservation whose
/// write the server refused frees its addresses at once; one whose outcome is unknown (the
/// connection broke, the reconcile was dropped) keeps them until a later load shows whether the
/// peer carries them.
///
/// A list is consistent (served from etcd by quorum read): a write answered before the list was
/// sent is in it. That is what lets a load forget a reservation settled before its
/// [`ListTicket`].
#[derive(Debug, Default, Clone)]
pub struct AddressBook {
    pub used: UsedAddresses,
    reservations: HashMap<String, Reservation>,
    /// Orders settlements and list requests.
    sequence: u64,
    /// The ticket of the newest list asked for.
    newest_list: u64,
}

/// The addresses a write in flight gives a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reservation {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    /// When the write's outcome came back (`None` while in flight).
    settled: Option<u64>,
}

/// Taken just before a list of the peers is requested; handed back with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListTicket(u64);

/// How a reserved write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The server answered with the written peer.
    Written,
    /// The server answered with a refusal (4xx): nothing was written.
    Refused,
    /// No answer (the connection broke, the reconcile was dropped, a 5xx): the peer may or may
    /// not carry the addresses.
    Unknown,
}

impl AddressBook {
    /// The addresses claimed for `peer` (already claimed in [`Self::used`] by the decision)
    /// are about to be written.
    pub fn reserve(&mut self, peer: &str, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) {
        self.reservations.insert(
            peer.to_owned(),
            Reservation {
                v4,
                v6,
                settled: None,
            },
        );
    }

    /// The write of `peer`'s reservation ended with `outcome`.
    pub fn settle(&mut self, peer: &str, outcome: WriteOutcome) {
        match outcome {
            WriteOutcome::Refused => {
                if let Some(reservation) = self.reservations.remove(peer) {
                    if let Some(v4) = reservation.v4 {
                        self.used.release_v4(v4, peer);
                    }
                    if let Some(v6) = reservation.v6 {
                        self.used.release_v6(v6, peer);
                    }
                }
            }
            WriteOutcome::Written | WriteOutcome::Unknown => {
                self.sequence += 1;
                if let Some(reservation) = self.reservations.get_mut(peer) {
                    reservation.settled = Some(self.sequence);
                }
            }
        }
    }

    /// A list of the peers is about to be requested.
    pub fn begin_list(&mut self) -> ListTicket {
        self.sequence += 1;
        self.newest_list = self.sequence;
        ListTicket(self.sequence)
    }

    /// Replaces the bookkeeping with the addresses a list (asked for at `ticket`) showed, and
    /// re-claims the reservations it may not have seen. An address the list shows another peer
    /// holding (only a peer made by hand can do that) stays that peer's: the reserving peer's
    /// next decision finds it taken and gives it a fresh one.
    ///
    /// Only the newest list asked for is installed; an older one changes nothing (lists that
    /// overlap may be served in either order, and an older one may miss peers whose
    /// reservations a newer one lets go). The shell lists one at a time.
    pub fn install(&mut self, ticket: ListTicket, listed: UsedAddresses) {
        if ticket.0 != self.newest_list {
            return;
        }
        self.used = listed;
        self.reservations
            .retain(|_, reservation| reservation.settled.is_none_or(|at| at > ticket.0));
        let mut names: Vec<&String> = self.reservations.keys().collect();
        names.sort();
        for name in names {
            let reservation = &self.reservations[name];
            if let Some(v4) = reservation.v4 {
                self.used.claim_v4(v4, name);
            }
            if let Some(v6) = reservation.v6 {
                self.used.claim_v6(v6, name);
            }
        }
    }

    /// How many reservations a later load still has to account for.
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use wgsub_crds::WgPeerSpec;

    fn peer(name: &str, server: &str, address: Option<&str>, created: i64) -> WgPeer {
        let mut peer = WgPeer::new(
            name,
            WgPeerSpec {
                address: address.map(Into::into),
                ..WgPeerSpec::on_server(server)
            },
        );
        peer.metadata.creation_timestamp =
            Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        peer
    }

    fn a(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    impl UsedAddresses {
        /// Every held IPv4 address, from the owners (not from the runs under test).
        fn held_v4(&self) -> BTreeSet<Ipv4Addr> {
            self.owner_v4.keys().copied().collect()
        }

        /// The runs hold exactly the owned addresses, each run maximal.
        fn assert_runs_match_owners(&self) {
            let from_runs: BTreeSet<Ipv4Addr> = self
                .runs_v4
                .iter()
                .flat_map(|(&s, &e)| (s..=e).map(Ipv4Addr::from))
                .collect();
            assert_eq!(from_runs, self.held_v4());
            for ((_, &end), (&next, _)) in self.runs_v4.iter().zip(self.runs_v4.iter().skip(1)) {
                assert!(end + 1 < next, "runs {end} and {next} should be one");
            }
        }
    }

    #[test]
    fn only_peers_of_the_server_count() {
        let peers = [
            peer("p1", "wg", Some("10.8.0.2/32"), 1),
            peer("p2", "other", Some("10.8.0.3/32"), 1),
            peer("p3", "wg", None, 1),
            peer("p4", "wg", Some("not-an-address"), 1),
        ];
        let used = UsedAddresses::from_peers("wg", &peers);
        assert_eq!(used.len_v4(), 1);
        assert_eq!(used.owner_v4(a("10.8.0.2")), Some("p1"));
        assert_eq!(used.owner_v4(a("10.8.0.3")), None);
    }

    #[test]
    fn the_older_peer_holds_a_duplicated_address() {
        let peers = [
            peer("young", "wg", Some("10.8.0.2/32"), 20),
            peer("old", "wg", Some("10.8.0.2/32"), 10),
        ];
        let used = UsedAddresses::from_peers("wg", &peers);
        assert_eq!(used.owner_v4(a("10.8.0.2")), Some("old"));
    }

    #[test]
    fn claims_by_another_peer_are_refused_and_releases_by_another_peer_ignored() {
        let mut used = UsedAddresses::default();
        assert!(used.claim_v4(a("10.8.0.2"), "p1"));
        assert!(used.claim_v4(a("10.8.0.2"), "p1"));
        assert!(!used.claim_v4(a("10.8.0.2"), "p2"));
        used.release_v4(a("10.8.0.2"), "p2");
        assert_eq!(used.owner_v4(a("10.8.0.2")), Some("p1"));
        used.release_v4(a("10.8.0.2"), "p1");
        assert_eq!(used.owner_v4(a("10.8.0.2")), None);
        assert_eq!(used.len_v4(), 0);
    }

    #[test]
    fn allocation_after_releases_and_hand_claims_gives_the_lowest_free_address() {
        let pool: Ipv4Net = "10.8.0.0/28".parse().unwrap();
        let mut used = UsedAddresses::default();
        let mut given = Vec::new();
        while let Ok(address) = used.allocate_v4(pool, &format!("p{}", given.len())) {
            given.push(address);
        }
        // .2 ..= .14 are the clients of a /28 (.1 is the server's, .15 the broadcast).
        assert_eq!(given.len(), 13);
        assert_eq!(given.last(), Some(&a("10.8.0.14")));
        used.release_v4(a("10.8.0.5"), "p3");
        used.release_v4(a("10.8.0.9"), "p7");
        assert!(
            used.claim_v4(a("10.8.0.5"), "someone"),
            "a hand claim below the mark"
        );
        assert_eq!(used.allocate_v4(pool, "n1").unwrap(), a("10.8.0.9"));
        assert!(used.allocate_v4(pool, "n2").is_err());
        let reference = pool::allocate_v4(pool, &used.held_v4());
        assert!(reference.is_err());
    }

    #[test]
    fn allocation_always_gives_what_the_pool_function_gives_for_the_same_used_set() {
        let pool: Ipv4Net = "10.8.0.0/26".parse().unwrap();
        let mut used = UsedAddresses::default();
        let mut holders: Vec<(Ipv4Addr, String)> = Vec::new();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..2_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            if state >> 62 == 0 && !holders.is_empty() {
                let (address, peer) = holders.swap_remove((state >> 8) as usize % holders.len());
                used.release_v4(address, &peer);
                used.assert_runs_match_owners();
                continue;
            }
            if state >> 61 == 2 {
                // A hand-made address: anywhere around the pool, the server's included.
                let address =
                    Ipv4Addr::from(u32::from(pool.network()) - 4 + (state >> 40) as u32 % 72);
                let peer = format!("hand{step}");
                if used.claim_v4(address, &peer) {
                    holders.push((address, peer));
                }
                used.assert_runs_match_owners();
                continue;
            }
            let held = used.held_v4();
            assert_eq!(
                used.used_in_v4(pool),
                held.range(pool.network()..=pool.broadcast()).count(),
                "step {step}"
            );
            let expected = pool::allocate_v4(pool, &held);
            let peer = format!("p{step}");
            let got = used.allocate_v4(pool, &peer);
            assert_eq!(got.is_ok(), expected.is_ok(), "step {step}");
            if let (Ok(got), Ok(expected)) = (got, expected) {
                assert_eq!(got, expected, "step {step}");
                holders.push((got, peer));
            }
            used.assert_runs_match_owners();
        }
    }

    #[test]
    fn client_addresses_exclude_network_server_and_broadcast() {
        let pool: Ipv4Net = "10.8.0.0/24".parse().unwrap();
        for (text, client) in [
            ("10.8.0.0", false),
            ("10.8.0.1", false),
            ("10.8.0.2", true),
            ("10.8.0.254", true),
            ("10.8.0.255", false),
            ("10.9.0.2", false),
        ] {
            assert_eq!(is_client_v4(pool, a(text)), client, "{text}");
        }
        let pool6: Ipv6Net = "fd00::/64".parse().unwrap();
        assert!(!is_client_v6(pool6, "fd00::".parse().unwrap()));
        assert!(!is_client_v6(pool6, "fd00::1".parse().unwrap()));
        assert!(is_client_v6(pool6, "fd00::2".parse().unwrap()));
    }

    #[test]
    fn allocation_claims_so_the_next_allocation_differs() {
        let pool: Ipv4Net = "10.8.0.0/24".parse().unwrap();
        let mut used = UsedAddresses::default();
        let first = used.allocate_v4(pool, "p1").unwrap();
        let second = used.allocate_v4(pool, "p2").unwrap();
        assert_eq!(first, a("10.8.0.2"));
        assert_eq!(second, a("10.8.0.3"));
        assert_eq!(used.used_in_v4(pool), 2);
        let pool6: Ipv6Net = "fd00:8::/64".parse().unwrap();
        let v6 = used.allocate_v6(pool6, "p1").unwrap();
        assert_eq!(used.owner_v6(v6), Some("p1"));
        assert_ne!(used.allocate_v6(pool6, "p2").unwrap(), v6);
        assert_eq!(used.len_v6(), 2);
    }

    /// The address book against a model of the API server, through any interleaving of
    /// decisions (allocate and reserve), writes landing on the server, their answers (written,
    /// refused, unknown), lists begun, served and installed, peers deleted by the garbage
    /// collector, and restarts of the operator (in-flight writes land or not, the book is lost
    /// and rebuilt from a list).
    mod book_model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            Allocate,
            Land(usize),
            Answer(usize, WriteOutcome, bool),
            BeginList,
            ServeList(usize),
            InstallList(usize),
            Delete(usize),
            Restart(Vec<bool>),
        }

        fn step() -> impl Strategy<Value = Step> {
            let outcome = prop_oneof![
                Just(WriteOutcome::Written),
                Just(WriteOutcome::Refused),
                Just(WriteOutcome::Unknown),
            ];
            prop_oneof![
                4 => Just(Step::Allocate),
                3 => any::<usize>().prop_map(Step::Land),
                3 => (any::<usize>(), outcome, any::<bool>()).prop_map(|(i, o, l)| Step::Answer(i, o, l)),
                1 => Just(Step::BeginList),
                1 => any::<usize>().prop_map(Step::ServeList),
                1 => any::<usize>().prop_map(Step::InstallList),
                1 => any::<usize>().prop_map(Step::Delete),
                1 => proptest::collection::vec(any::<bool>(), 8).prop_map(Step::Restart),
            ]
        }

        struct InFlight {
            peer: String,
            address: Ipv4Addr,
            landed: bool,
        }

        #[derive(Default)]
        struct Model {
            book: AddressBook,
            /// The peers on the server and their addresses.
            server: BTreeMap<String, Ipv4Addr>,
            in_flight: Vec<InFlight>,
            /// Lists begun: their ticket and, once served, what they showed.
            lists: Vec<(ListTicket, Option<Vec<PeerAddresses>>)>,
            next_peer: usize,
        }

        impl Model {
            fn listed(&self) -> Vec<PeerAddresses> {
                self.server
                    .iter()
                    .map(|(name, address)| PeerAddresses {
                        name: name.clone(),
                        created: None,
                        server: "wg".into(),
                        address: Some(pool::host_cidr_v4(*address)),
                        address6: None,
                    })
                    .collect()
            }

            fn run(&mut self, step: Step) {
                let pool: Ipv4Net = "10.8.0.0/27".parse().unwrap();
                match step {
                    Step::Allocate => {
                        let peer = format!("p{}", self.next_peer);
                        self.next_peer += 1;
                        if let Ok(address) = self.book.used.allocate_v4(pool, &peer) {
                            self.book.reserve(&peer, Some(address), None);
                            self.in_flight.push(InFlight {
                                peer,
                                address,
                                landed: false,
                            });
                        }
                    }
                    Step::Land(i) if !self.in_flight.is_empty() => {
                        let at = i % self.in_flight.len();
                        let write = &mut self.in_flight[at];
                        write.landed = true;
                        self.server.insert(write.peer.clone(), write.address);
                    }
                    Step::Answer(i, outcome, lands) if !self.in_flight.is_empty() => {
                        let write = self.in_flight.remove(i % self.in_flight.len());
                        let landed = match outcome {
                            WriteOutcome::Written => true,
                            WriteOutcome::Refused => write.landed,
                            WriteOutcome::Unknown => write.landed || lands,
                        };
                        if outcome == WriteOutcome::Refused && write.landed {
                            // A refusal means nothing was written: put it back in flight.
                            self.in_flight.push(write);
                            return;
                        }
                        if landed {
                            self.server.insert(write.peer.clone(), write.address);
                        }
                        self.book.settle(&write.peer, outcome);
                    }
                    Step::BeginList => {
                        let ticket = self.book.begin_list();
                        self.lists.push((ticket, None));
                    }
                    Step::ServeList(i) if !self.lists.is_empty() => {
                        let listed = self.listed();
                        let at = i % self.lists.len();
                        self.lists[at].1.get_or_insert(listed);
                    }
                    Step::InstallList(i) if !self.lists.is_empty() => {
                        let at = i % self.lists.len();
                        if let (ticket, Some(listed)) = &self.lists[at] {
                            let used = UsedAddresses::from_addresses("wg", listed.clone());
                            self.book.install(*ticket, used);
                            self.lists.remove(at);
                        }
                    }
                    Step::Delete(i) => {
                        let idle: Vec<String> = self
                            .server
                            .keys()
                            .filter(|p| !self.in_flight.iter().any(|w| &w.peer == *p))
                            .cloned()
                            .collect();
                        if !idle.is_empty() {
                            self.server.remove(&idle[i % idle.len()]);
                        }
                    }
                    Step::Restart(lands) => {
                        for (n, write) in self.in_flight.drain(..).enumerate() {
                            if write.landed || lands[n % lands.len()] {
                                self.server.insert(write.peer, write.address);
                            }
                        }
                        self.lists.clear();
                        self.book = AddressBook::default();
                        let ticket = self.book.begin_list();
                        let used = UsedAddresses::from_addresses("wg", self.listed());
                        self.book.install(ticket, used);
                    }
                    _ => {}
                }
            }

            /// Every address on the server or being written is held, in the book, by the
            /// peer that has it: so no allocation can hand it out again.
            fn check(&self) -> Result<(), TestCaseError> {
                for (peer, address) in &self.server {
                    prop_assert_eq!(self.book.used.owner_v4(*address), Some(peer.as_str()));
                }
                for write in &self.in_flight {
                    prop_assert_eq!(
                        self.book.used.owner_v4(write.address),
                        Some(write.peer.as_str())
                    );
                }
                Ok(())
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]
            #[test]
            fn no_address_on_the_server_or_in_flight_is_ever_free_in_the_book(
                steps in proptest::collection::vec(step(), 1..120)
            ) {
                let mut model = Model::default();
                for step in steps {
                    model.run(step);
                    model.check()?;
                }
                // Every peer the server ended with has its own address.
                let addresses: BTreeSet<Ipv4Addr> = model.server.values().copied().collect();
                prop_assert_eq!(addresses.len(), model.server.len());
            }
        }

        #[test]
        fn a_refused_write_frees_its_address_and_a_settled_reservation_goes_with_a_later_list() {
            let pool: Ipv4Net = "10.8.0.0/24".parse().unwrap();
            let mut book = AddressBook::default();
            let a = book.used.allocate_v4(pool, "a").unwrap();
            book.reserve("a", Some(a), None);
            let b = book.used.allocate_v4(pool, "b").unwrap();
            book.reserve("b", Some(b), None);
            book.settle("b", WriteOutcome::Refused);
            assert_eq!(book.used.owner_v4(b), None);
            assert_eq!(book.reservations(), 1);
            let early = book.begin_list();
            book.settle("a", WriteOutcome::Written);
            // A list asked for before a's answer may not show it: a stays reserved.
            book.install(early, UsedAddresses::default());
            assert_eq!(book.used.owner_v4(a), Some("a"));
            assert_eq!(book.reservations(), 1);
            // A list asked for after it shows it, and the reservation goes.
            let late = book.begin_list();
            let mut listed = UsedAddresses::default();
            listed.claim_v4(a, "a");
            book.install(late, listed);
            assert_eq!(book.used.owner_v4(a), Some("a"));
            assert_eq!(book.reservations(), 0);
        }
    }
}
