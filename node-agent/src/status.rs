//! Status, decided purely: each `WgPeer`'s `active`, `lastHandshake`, byte counters and `Ready`
//! condition, each `WgServer`'s public key, active peer count, last sync and `Ready` condition —
//! and whether a write is due. A change of `active`, a first handshake, a condition or the
//! observed generation is written at the next batch ([`Due::Now`]); routine changes — byte
//! counters and the renewal of a handshake (every two minutes on a busy session) — at most once
//! per [`routine_interval`] ([`Due::Routine`]), and only as far as the [`RoutineBudget`]
//! allows: together they keep routine writes within
//! [`ROUTINE_WRITES_PER_MINUTE`] however many peers the node holds, spread evenly over time, so
//! the writes that matter never queue behind thousands of counter updates. A server's
//! `lastSync` alone is written at most once per counter interval. A peer a sync pass put on or
//! took off the interface is judged right after that pass ([`peers_to_judge`],
//! [`applied_peer_status`], [`applied_write_due`]), so a paid peer reads `Ready` within the
//! pass, not at the next batch; those writes are never routine and take no budget.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use wgsub_crds::keys::PublicKey;
use wgsub_crds::resources::{CONDITION_READY, new_condition, set_condition};
use wgsub_crds::{WgPeerStatus, WgServerStatus};

use crate::desired::{DesiredPeers, NotLive, PeerState, Refusal};
use crate::snapshot::PeerStats;

/// Condition reasons the agent writes.
pub mod reason {
    pub const ACTIVE: &str = "Active";
    pub const PENDING: &str = "Pending";
    pub const DISABLED: &str = "Disabled";
    pub const OVER_LIMIT: &str = "OverLimit";
    pub const OVER_QUOTA: &str = "OverQuota";
    pub const SUSPENDED: &str = "Suspended";
    pub const EXPIRED: &str = "Expired";
    pub const CONFLICT: &str = "Conflict";
    pub const OUT_OF_POOL: &str = "OutOfPool";
    pub const INVALID_KEY: &str = "InvalidKey";
    pub const NO_KEY: &str = "NoKey";
    pub const NO_ADDRESS: &str = "NoAddress";
    pub const MISSING_PRESHARED_KEY: &str = "MissingPresharedKey";
    pub const SYNCED: &str = "Synced";
    pub const INVALID_POOL: &str = "InvalidPool";
    pub const INTERFACE_ERROR: &str = "InterfaceError";
    /// An AmneziaWG server on a node without amneziawg-go.
    pub const AMNEZIAWG_UNAVAILABLE: &str = "AmneziaWGUnavailable";
    /// An AmneziaWG server whose parameters the operator has not chosen yet.
    pub const PARAMETERS_PENDING: &str = "ParametersPending";
    /// An AmneziaWG server whose parameters break the protocol's rules.
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
}

/// The `Ready` condition of a peer: true exactly when it is on the interface.
pub fn peer_ready(
    state: &PeerState,
    on_interface: bool,
    interface: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let (ready, why, message) = match state {
        PeerState::Live(_) if on_interface => (
            true,
            reason::ACTIVE,
            format!("the peer is on interface {interface}"),
        ),
        PeerState::Live(_) => (
            false,
            reason::PENDING,
            format!("the peer is live but not yet on interface {interface}"),
        ),
        PeerState::NotLive(NotLive::Disabled) => {
            (false, reason::DISABLED, "the peer is disabled".to_owned())
        }
        PeerState::NotLive(NotLive::OverLimit) => (
            false,
            reason::OVER_LIMIT,
            "the subscription's maxDevices has no room for this device; it keeps its key and address until the limit rises or another device is switched off".to_owned(),
        ),
        PeerState::NotLive(NotLive::OverQuota) => (
            false,
            reason::OVER_QUOTA,
            "the subscription used up its data quota for this period; the device comes back with the next period or a purchase".to_owned(),
        ),
        PeerState::NotLive(NotLive::Suspended) => (
            false,
            reason::SUSPENDED,
            "the subscription is suspended".to_owned(),
        ),
        PeerState::NotLive(NotLive::Expired) => (
            false,
            reason::EXPIRED,
            "expiresAt has passed or is not set".to_owned(),
        ),
        PeerState::Refused(Refusal::Conflict { with, what }) => (
            false,
            reason::CONFLICT,
            format!("{what} is already used by peer {with}"),
        ),
        PeerState::Refused(Refusal::OutOfPool(message)) => {
            (false, reason::OUT_OF_POOL, message.clone())
        }
        PeerState::Refused(Refusal::InvalidKey(message)) => {
            (false, reason::INVALID_KEY, message.clone())
        }
        PeerState::Refused(Refusal::NoKey) => (
            false,
            reason::NO_KEY,
            "the peer has no publicKey yet".to_owned(),
        ),
        PeerState::Refused(Refusal::NoAddress) => (
            false,
            reason::NO_ADDRESS,
            "the peer has no address yet".to_owned(),
        ),
        PeerState::Refused(Refusal::MissingPresharedKey) => (
            false,
            reason::MISSING_PRESHARED_KEY,
            "the preshared key Secret or its key does not exist".to_owned(),
        ),
    };
    new_condition(CONDITION_READY, ready, why, message, generation, now)
}

/// The status a peer should have. `stats` is present when the peer is on the interface; counters
/// and the handshake of a peer that left are kept from `current`.
pub fn peer_status(
    current: Option<&WgPeerStatus>,
    ready: Condition,
    stats: Option<&PeerStats>,
    generation: Option<i64>,
) -> WgPeerStatus {
    let mut status = current.cloned().unwrap_or_default();
    status.active = stats.is_some();
    if let Some(stats) = stats {
        if stats.last_handshake.is_some() {
            status.last_handshake = stats.last_handshake;
        }
        status.rx_bytes = i64::try_from(stats.rx_bytes).unwrap_or(i64::MAX);
        status.tx_bytes = i64::try_from(stats.tx_bytes).unwrap_or(i64::MAX);
    }
    set_condition(&mut status.conditions, ready);
    status.observed_generation = generation;
    status
}

/// The most routine peer status writes (counters, renewed handshakes) a node-agent sends per
/// minute, whatever its number of peers: a third of what the default writer rate
/// (`--status-writes-per-second` 20, 1,200 a minute) sends, so that the writes that matter —
/// a peer going on or off the interface, a condition — never wait behind them for long.
pub const ROUTINE_WRITES_PER_MINUTE: u64 = 400;

/// How long a peer's routine changes wait between two writes when the node holds `peers`:
/// `counters_interval`, or longer when `peers` routine writes per `counters_interval` would
/// exceed [`ROUTINE_WRITES_PER_MINUTE`] (10,000 peers: 25 minutes).
pub fn routine_interval(counters_interval: Duration, peers: usize) -> Duration {
    let spread = Duration::from_secs(60).saturating_mul(u32::try_from(peers).unwrap_or(u32::MAX))
        / u32::try_from(ROUTINE_WRITES_PER_MINUTE).unwrap_or(u32::MAX);
    counters_interval.max(spread)
}

/// The routine writes a node-agent may still queue: refilled at [`ROUTINE_WRITES_PER_MINUTE`]
/// with the time between status batches, holding at most one status interval's worth (so a
/// quiet spell does not save up a burst).
#[derive(Debug, Clone, PartialEq)]
pub struct RoutineBudget {
    tokens: f64,
    most: f64,
    refilled_at: Option<Timestamp>,
}

impl RoutineBudget {
    /// An empty budget for batches about every `status_interval`.
    pub fn new(status_interval: Duration) -> Self {
        let most = ROUTINE_WRITES_PER_MINUTE as f64 * status_interval.as_secs_f64() / 60.0;
        Self {
            tokens: 0.0,
            most: most.max(1.0),
            refilled_at: None,
        }
    }

    /// Adds what the time since the last refill earned (the first refill fills it).
    pub fn refill(&mut self, now: Timestamp) {
        let earned = match self.refilled_at {
            None => self.most,
            Some(at) => {
                let seconds = now.duration_since(at).as_secs_f64().max(0.0);
                seconds * ROUTINE_WRITES_PER_MINUTE as f64 / 60.0
            }
        };
        self.tokens = (self.tokens + earned).min(self.most);
        self.refilled_at = Some(now);
    }

    /// Takes one routine write, if the budget has one.
    pub fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a peer's status is to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Something that matters changed: write at this batch.
    Now,
    /// Only counters or a renewed handshake changed, and the routine interval has passed: write
    /// when the batch's routine budget allows.
    Routine,
}

fn interval_passed(last: Option<Timestamp>, now: Timestamp, interval: Duration) -> bool {
    match last {
        None => true,
        Some(at) => {
            let elapsed = now.duration_since(at);
            !elapsed.is_negative()
                && Duration::try_from(elapsed).is_ok_and(|elapsed| elapsed >= interval)
        }
    }
}

/// Whether a peer's status must be written: [`Due::Now`] when it was never written, or
/// `active`, a condition or the observed generation changed or the first handshake came;
/// [`Due::Routine`] when only routine fields (counters, a renewed handshake) changed and
/// `interval` (see [`routine_interval`]) has passed since the last routine write.
pub fn peer_write_due(
    new: &WgPeerStatus,
    last: Option<&WgPeerStatus>,
    last_counters_write: Option<Timestamp>,
    now: Timestamp,
    interval: Duration,
) -> Option<Due> {
    let Some(last) = last else {
        return Some(Due::Now);
    };
    let important = important_change(new, last);
    let routine = new.rx_bytes != last.rx_bytes
        || new.tx_bytes != last.tx_bytes
        || new.last_handshake != last.last_handshake;
    if important {
        Some(Due::Now)
    } else if routine && interval_passed(last_counters_write, now, interval) {
        Some(Due::Routine)
    } else {
        None
    }
}

/// `active`, a condition or the observed generation changed, or the first handshake came.
fn important_change(new: &WgPeerStatus, last: &WgPeerStatus) -> bool {
    new.active != last.active
        || (last.last_handshake.is_none() && new.last_handshake.is_some())
        || new.conditions != last.conditions
        || new.observed_generation != last.observed_generation
}

/// The peers a sync pass may have put on or taken off the interface, so their `Ready` is
/// judged right after it instead of at the next status batch: the peers whose input changed
/// (`dirty`) that this interface decides, and the owners of the desired entries the pass
/// re-decided (`touched`, `None` after a decision from scratch). `None`: judge every peer —
/// after a decision from scratch, or when a re-decided entry left the desired peers (an
/// expiry, or a conflict that moved) and its peer's name is no longer at hand.
pub fn peers_to_judge(
    dirty: &BTreeSet<String>,
    touched: Option<&BTreeSet<PublicKey>>,
    desired: &DesiredPeers,
) -> Option<BTreeSet<String>> {
    let touched = touched?;
    let mut names: BTreeSet<String> = dirty
        .iter()
        .filter(|name| desired.states.contains_key(*name))
        .cloned()
        .collect();
    for key in touched {
        names.insert(desired.peers.get(key)?.name.clone());
    }
    Some(names)
}

/// The status a peer should have right after a sync pass, before the next batch reads the
/// interface's statistics: `active` is whether the pass left it on the interface, counters and
/// the handshake stay as `last` has them (so the batch's routine writes keep their pace).
pub fn applied_peer_status(
    last: Option<&WgPeerStatus>,
    ready: Condition,
    on_interface: bool,
    generation: Option<i64>,
) -> WgPeerStatus {
    let mut status = last.cloned().unwrap_or_default();
    status.active = on_interface;
    set_condition(&mut status.conditions, ready);
    status.observed_generation = generation;
    status
}

/// Whether the status of a peer a sync pass judged is written at once: it was never written,
/// or something that matters changed (a first `Ready`, a cut, a new reason); never for
/// counters, which wait for the batch.
pub fn applied_write_due(new: &WgPeerStatus, last: Option<&WgPeerStatus>) -> bool {
    last.is_none_or(|last| important_change(new, last))
}

/// The `Ready` condition of a server: synced, or why the interface could not be made.
pub fn server_ready(
    problem: Option<(&str, String)>,
    active_peers: usize,
    interface: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    match problem {
        None => new_condition(
            CONDITION_READY,
            true,
            reason::SYNCED,
            format!("interface {interface} holds {active_peers} live peers"),
            generation,
            now,
        ),
        Some((why, message)) => {
            new_condition(CONDITION_READY, false, why, message, generation, now)
        }
    }
}

/// The status a server should have.
pub fn server_status(
    current: Option<&WgServerStatus>,
    public_key: Option<String>,
    active_peers: Option<usize>,
    last_sync: Option<Timestamp>,
    ready: Condition,
    generation: Option<i64>,
) -> WgServerStatus {
    let mut status = current.cloned().unwrap_or_default();
    if public_key.is_some() {
        status.public_key = public_key;
    }
    if let Some(count) = active_peers {
        status.active_peers = Some(i32::try_from(count).unwrap_or(i32::MAX));
    }
    if last_sync.is_some() {
        status.last_sync = last_sync;
    }
    set_condition(&mut status.conditions, ready);
    status.observed_generation = generation;
    status
}

/// Whether a server's status must be written: at once when anything but `lastSync` changed,
/// `lastSync` alone once `interval` has passed since the last write.
pub fn server_write_due(
    new: &WgServerStatus,
    last: Option<&WgServerStatus>,
    last_write: Option<Timestamp>,
    now: Timestamp,
    interval: Duration,
) -> bool {
    let Some(last) = last else {
        return true;
    };
    let important = new.public_key != last.public_key
        || new.active_peers != last.active_peers
        || new.conditions != last.conditions
        || new.observed_generation != last.observed_generation;
    important || (new.last_sync != last.last_sync && interval_passed(last_write, now, interval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::keys::PrivateKey;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const NOW: &str = "2026-06-01T12:00:00Z";
    const MINUTE: Duration = Duration::from_secs(60);

    fn live() -> PeerState {
        PeerState::Live(PrivateKey::generate().public_key())
    }

    fn stats(rx: u64, handshake: Option<&str>) -> PeerStats {
        PeerStats {
            last_handshake: handshake.map(t),
            rx_bytes: rx,
            tx_bytes: rx * 2,
        }
    }

    #[test]
    fn every_state_has_its_reason() {
        let cases = [
            (live(), true, true, reason::ACTIVE),
            (live(), false, false, reason::PENDING),
            (
                PeerState::NotLive(NotLive::Disabled),
                false,
                false,
                reason::DISABLED,
            ),
            (
                PeerState::NotLive(NotLive::OverLimit),
                false,
                false,
                reason::OVER_LIMIT,
            ),
            (
                PeerState::NotLive(NotLive::OverQuota),
                false,
                false,
                reason::OVER_QUOTA,
            ),
            (
                PeerState::NotLive(NotLive::Suspended),
                false,
                false,
                reason::SUSPENDED,
            ),
            (
                PeerState::NotLive(NotLive::Expired),
                false,
                false,
                reason::EXPIRED,
            ),
            (
                PeerState::Refused(Refusal::Conflict {
                    with: "a".into(),
                    what: "address 10.8.0.2".into(),
                }),
                false,
                false,
                reason::CONFLICT,
            ),
            (
                PeerState::Refused(Refusal::OutOfPool("x".into())),
                false,
                false,
                reason::OUT_OF_POOL,
            ),
            (
                PeerState::Refused(Refusal::InvalidKey("x".into())),
                false,
                false,
                reason::INVALID_KEY,
            ),
            (
                PeerState::Refused(Refusal::NoKey),
                false,
                false,
                reason::NO_KEY,
            ),
            (
                PeerState::Refused(Refusal::NoAddress),
                false,
                false,
                reason::NO_ADDRESS,
            ),
            (
                PeerState::Refused(Refusal::MissingPresharedKey),
                false,
                false,
                reason::MISSING_PRESHARED_KEY,
            ),
        ];
        for (state, on_interface, ready, why) in cases {
            let condition = peer_ready(&state, on_interface, "wg0", Some(3), t(NOW));
            assert_eq!(condition.type_, "Ready");
            assert_eq!(
                condition.status,
                if ready { "True" } else { "False" },
                "{state:?}"
            );
            assert_eq!(condition.reason, why);
            assert_eq!(condition.observed_generation, Some(3));
        }
        let conflict = peer_ready(
            &PeerState::Refused(Refusal::Conflict {
                with: "tg-1-1".into(),
                what: "address 10.8.0.2".into(),
            }),
            false,
            "wg0",
            None,
            t(NOW),
        );
        assert_eq!(
            conflict.message,
            "address 10.8.0.2 is already used by peer tg-1-1"
        );
    }

    #[test]
    fn a_peer_that_leaves_keeps_its_counters_and_handshake() {
        let ready = peer_ready(&live(), true, "wg0", None, t(NOW));
        let on = peer_status(None, ready, Some(&stats(100, Some(NOW))), Some(1));
        assert!(on.active);
        assert_eq!(on.rx_bytes, 100);
        assert_eq!(on.tx_bytes, 200);
        assert_eq!(on.last_handshake, Some(t(NOW)));
        let gone = peer_ready(
            &PeerState::NotLive(NotLive::Expired),
            false,
            "wg0",
            None,
            t(NOW),
        );
        let off = peer_status(Some(&on), gone, None, Some(1));
        assert!(!off.active);
        assert_eq!(off.rx_bytes, 100);
        assert_eq!(off.last_handshake, Some(t(NOW)));
        assert_eq!(off.conditions.len(), 1);
        assert_eq!(off.conditions[0].reason, reason::EXPIRED);
    }

    #[test]
    fn no_handshake_yet_keeps_the_previous_one() {
        let ready = peer_ready(&live(), true, "wg0", None, t(NOW));
        let before = peer_status(None, ready.clone(), Some(&stats(1, Some(NOW))), None);
        let after = peer_status(Some(&before), ready, Some(&stats(1, None)), None);
        assert_eq!(after.last_handshake, Some(t(NOW)));
    }

    #[test]
    fn active_first_handshake_and_condition_changes_are_written_now() {
        let ready = peer_ready(&live(), true, "wg0", None, t(NOW));
        let base = peer_status(None, ready, Some(&stats(1, None)), None);
        let just_now = Some(t(NOW));
        let due = |new: &WgPeerStatus, last: Option<&WgPeerStatus>| {
            peer_write_due(new, last, just_now, t(NOW), MINUTE)
        };
        assert_eq!(due(&base, None), Some(Due::Now), "never written");
        assert_eq!(due(&base, Some(&base)), None);
        let mut handshake = base.clone();
        handshake.last_handshake = Some(t(NOW));
        assert_eq!(
            due(&handshake, Some(&base)),
            Some(Due::Now),
            "first handshake"
        );
        let mut inactive = base.clone();
        inactive.active = false;
        assert_eq!(due(&inactive, Some(&base)), Some(Due::Now));
        let mut refused = base.clone();
        refused.conditions[0].reason = reason::CONFLICT.into();
        assert_eq!(due(&refused, Some(&base)), Some(Due::Now));
        let mut regenerated = base.clone();
        regenerated.observed_generation = Some(2);
        assert_eq!(due(&regenerated, Some(&base)), Some(Due::Now));
    }

    #[test]
    fn a_renewed_handshake_is_routine_and_waits_for_the_interval() {
        let ready = peer_ready(&live(), true, "wg0", None, t(NOW));
        let base = peer_status(
            None,
            ready,
            Some(&stats(1, Some("2026-06-01T11:58:00Z"))),
            None,
        );
        let mut renewed = base.clone();
        renewed.last_handshake = Some(t(NOW));
        let last = Some(t("2026-06-01T11:59:30Z"));
        assert_eq!(
            peer_write_due(&renewed, Some(&base), last, t(NOW), MINUTE),
            None
        );
        assert_eq!(
            peer_write_due(
                &renewed,
                Some(&base),
                last,
                t("2026-06-01T12:00:30Z"),
                MINUTE
            ),
            Some(Due::Routine)
        );
    }

    #[test]
    fn counters_alone_are_routine_at_most_once_per_interval() {
        let ready = peer_ready(&live(), true, "wg0", None, t(NOW));
        let base = peer_status(None, ready, Some(&stats(1, None)), None);
        let mut more = base.clone();
        more.rx_bytes = 5000;
        let last = Some(t("2026-06-01T11:59:30Z"));
        assert_eq!(
            peer_write_due(&more, Some(&base), last, t(NOW), MINUTE),
            None
        );
        let later = t("2026-06-01T12:00:30Z");
        assert_eq!(
            peer_write_due(&more, Some(&base), last, later, MINUTE),
            Some(Due::Routine)
        );
        assert_eq!(
            peer_write_due(&more, Some(&base), None, t(NOW), MINUTE),
            Some(Due::Routine)
        );
        // A longer routine interval (many peers) holds them back longer.
        let long = routine_interval(MINUTE, 10_000);
        assert_eq!(peer_write_due(&more, Some(&base), last, later, long), None);
    }

    #[test]
    fn the_routine_interval_keeps_routine_writes_within_the_budget() {
        assert_eq!(routine_interval(MINUTE, 0), MINUTE);
        assert_eq!(routine_interval(MINUTE, 400), MINUTE);
        assert_eq!(routine_interval(MINUTE, 401), Duration::from_millis(60_150));
        assert_eq!(
            routine_interval(MINUTE, 10_000),
            Duration::from_secs(25 * 60)
        );
        assert_eq!(
            routine_interval(Duration::from_secs(3600), 10_000),
            Duration::from_secs(3600)
        );
        for peers in [1usize, 400, 1_000, 10_000, 100_000] {
            let interval = routine_interval(MINUTE, peers);
            let per_minute = peers as f64 * 60.0 / interval.as_secs_f64();
            assert!(
                per_minute <= ROUTINE_WRITES_PER_MINUTE as f64 + 1e-9,
                "{peers} peers: {per_minute} routine writes a minute"
            );
        }
        assert!(routine_interval(MINUTE, usize::MAX) >= Duration::from_secs(60 * 60 * 24));
    }

    #[test]
    fn the_routine_budget_refills_with_time_up_to_one_interval() {
        let mut budget = RoutineBudget::new(Duration::from_secs(10));
        let taken = |budget: &mut RoutineBudget| (0..1000).take_while(|_| budget.take()).count();
        assert_eq!(taken(&mut budget), 0, "empty before the first refill");
        budget.refill(t(NOW));
        assert_eq!(
            taken(&mut budget),
            66,
            "one interval's worth: 400 a minute / 6"
        );
        budget.refill(t("2026-06-01T12:00:03Z"));
        assert_eq!(taken(&mut budget), 20);
        // An hour of quiet saves up no more than one interval's worth.
        budget.refill(t("2026-06-01T13:00:03Z"));
        assert_eq!(taken(&mut budget), 66);
        // A clock that went back earns nothing.
        budget.refill(t(NOW));
        assert_eq!(taken(&mut budget), 0);
        // Over any stretch of batches, at most the rate plus one interval's worth.
        let mut budget = RoutineBudget::new(Duration::from_secs(10));
        let mut total = 0;
        for second in (0..600).step_by(7) {
            budget.refill(t(NOW) + jiff::SignedDuration::from_secs(second));
            total += taken(&mut budget);
        }
        assert!(
            total <= 400 * 10 + 67,
            "{total} routine writes in 10 minutes"
        );
        assert!(
            total >= 400 * 10 - 10,
            "{total} routine writes in 10 minutes"
        );
        let tiny = RoutineBudget::new(Duration::from_millis(1));
        assert_eq!(tiny.most, 1.0);
    }

    /// `a` live on `key_a`, `b` disabled, `c` live on `key_c`.
    fn decided(key_a: PublicKey, key_c: PublicKey) -> DesiredPeers {
        let desired = |name: &str| crate::desired::DesiredPeer {
            name: name.into(),
            config: crate::snapshot::PeerConfig::default(),
        };
        DesiredPeers {
            peers: [(key_a, desired("a")), (key_c, desired("c"))].into(),
            states: [
                ("a".to_owned(), PeerState::Live(key_a)),
                ("b".to_owned(), PeerState::NotLive(NotLive::Disabled)),
                ("c".to_owned(), PeerState::Live(key_c)),
            ]
            .into(),
        }
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_pass_judges_its_changed_peers_and_the_owners_of_what_it_redecided() {
        let key_a = PrivateKey::generate().public_key();
        let key_c = PrivateKey::generate().public_key();
        let desired = decided(key_a, key_c);
        // Peers of other servers (not in the decision) are not this interface's to judge.
        let dirty = names(&["b", "elsewhere"]);
        assert_eq!(
            peers_to_judge(&dirty, Some(&[key_c].into()), &desired),
            Some(names(&["b", "c"]))
        );
        assert_eq!(
            peers_to_judge(&names(&[]), Some(&BTreeSet::new()), &desired),
            Some(BTreeSet::new())
        );
        // From scratch, or an entry that left (an expiry): every peer.
        assert_eq!(peers_to_judge(&dirty, None, &desired), None);
        let gone = PrivateKey::generate().public_key();
        assert_eq!(
            peers_to_judge(&dirty, Some(&[key_a, gone].into()), &desired),
            None
        );
    }

    #[test]
    fn a_peer_put_on_the_interface_is_ready_at_once_with_its_counters_kept() {
        let state = live();
        let pending = peer_ready(&state, false, "wg0", Some(1), t(NOW));
        // Created by the operator: no status at all yet.
        let ready = peer_ready(&state, true, "wg0", Some(1), t(NOW));
        let first = applied_peer_status(None, ready.clone(), true, Some(1));
        assert!(first.active);
        assert_eq!(first.conditions[0].status, "True");
        assert!(applied_write_due(&first, None));
        // Reported pending before (a batch ran before the pass): the cut to Ready is written.
        let before = peer_status(None, pending, None, Some(1));
        let on = applied_peer_status(Some(&before), ready.clone(), true, Some(1));
        assert!(applied_write_due(&on, Some(&before)));
        // Already written as it is: nothing again.
        assert!(!applied_write_due(&on, Some(&on)));
        // Counters and handshake stay as last written, whatever the interface holds now.
        let busy = peer_status(None, ready.clone(), Some(&stats(500, Some(NOW))), Some(1));
        let again = applied_peer_status(Some(&busy), ready, true, Some(1));
        assert_eq!(again, busy);
        assert!(!applied_write_due(&again, Some(&busy)));
    }

    #[test]
    fn a_peer_taken_off_at_expiry_or_disable_is_cut_at_once() {
        let state = live();
        let ready = peer_ready(&state, true, "wg0", Some(1), t(NOW));
        let on = peer_status(None, ready, Some(&stats(500, Some(NOW))), Some(1));
        for (gone, why) in [
            (NotLive::Expired, reason::EXPIRED),
            (NotLive::Disabled, reason::DISABLED),
        ] {
            let cut = peer_ready(&PeerState::NotLive(gone), false, "wg0", Some(2), t(NOW));
            let off = applied_peer_status(Some(&on), cut, false, Some(2));
            assert!(!off.active);
            assert_eq!(off.conditions[0].status, "False");
            assert_eq!(off.conditions[0].reason, why);
            assert_eq!(off.rx_bytes, 500, "counters kept");
            assert_eq!(off.last_handshake, Some(t(NOW)));
            assert!(applied_write_due(&off, Some(&on)));
        }
        // Live but the pass did not put it on (yet): pending, not ready, and written.
        let pending = peer_ready(&state, false, "wg0", Some(1), t(NOW));
        let waiting = applied_peer_status(Some(&on), pending, false, Some(1));
        assert_eq!(waiting.conditions[0].reason, reason::PENDING);
        assert!(applied_write_due(&waiting, Some(&on)));
    }

    #[test]
    fn server_status_and_its_write_schedule() {
        let key = PrivateKey::generate().public_key().to_base64();
        let ready = server_ready(None, 2, "wg0", Some(4), t(NOW));
        assert_eq!(ready.reason, reason::SYNCED);
        let status = server_status(
            None,
            Some(key.clone()),
            Some(2),
            Some(t(NOW)),
            ready.clone(),
            Some(4),
        );
        assert_eq!(status.public_key.as_deref(), Some(key.as_str()));
        assert_eq!(status.active_peers, Some(2));
        assert!(server_write_due(&status, None, None, t(NOW), MINUTE));
        let later = t("2026-06-01T12:00:10Z");
        let resynced = server_status(
            Some(&status),
            None,
            Some(2),
            Some(later),
            ready.clone(),
            Some(4),
        );
        assert_eq!(resynced.public_key, status.public_key);
        assert!(!server_write_due(
            &resynced,
            Some(&status),
            Some(t(NOW)),
            later,
            MINUTE
        ));
        assert!(server_write_due(
            &resynced,
            Some(&status),
            Some(t(NOW)),
            t("2026-06-01T12:01:00Z"),
            MINUTE
        ));
        let invalid = server_ready(
            Some((reason::INVALID_KEY, "bad".into())),
            0,
            "wg0",
            Some(4),
            later,
        );
        let broken = server_status(Some(&status), None, None, None, invalid, Some(4));
        assert_eq!(broken.conditions[0].status, "False");
        assert_eq!(broken.active_peers, Some(2));
        assert!(server_write_due(
            &broken,
            Some(&status),
            Some(t(NOW)),
            later,
            MINUTE
        ));
    }
}
