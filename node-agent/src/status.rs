//! Status, decided purely: each `WgPeer`'s `active`, `lastHandshake`, byte counters and `Ready`
//! condition, each `WgServer`'s public key, active peer count, last sync and `Ready` condition —
//! and whether a write is due. A change of `active`, the handshake, a condition or the observed
//! generation is written at the next batch; counters alone at most once per counter interval;
//! a server's `lastSync` alone likewise.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use wgsub_crds::resources::{CONDITION_READY, new_condition, set_condition};
use wgsub_crds::{WgPeerStatus, WgServerStatus};

use crate::desired::{NotLive, PeerState, Refusal};
use crate::snapshot::PeerStats;

/// Condition reasons the agent writes.
pub mod reason {
    pub const ACTIVE: &str = "Active";
    pub const PENDING: &str = "Pending";
    pub const DISABLED: &str = "Disabled";
    pub const OVER_LIMIT: &str = "OverLimit";
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

/// Whether a peer's status must be written: at once when anything but the counters changed,
/// counters alone once `interval` has passed since the last counter write.
pub fn peer_write_due(
    new: &WgPeerStatus,
    last: Option<&WgPeerStatus>,
    last_counters_write: Option<Timestamp>,
    now: Timestamp,
    interval: Duration,
) -> bool {
    let Some(last) = last else {
        return true;
    };
    let important = new.active != last.active
        || new.last_handshake != last.last_handshake
        || new.conditions != last.conditions
        || new.observed_generation != last.observed_generation;
    let counters = new.rx_bytes != last.rx_bytes || new.tx_bytes != last.tx_bytes;
    important || (counters && interval_passed(last_counters_write, now, interval))
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
    fn active_handshake_and_condition_changes_are_written_at_once() {
        let ready = peer_ready(&live(), true, "wg0", None, t(NOW));
        let base = peer_status(None, ready, Some(&stats(1, None)), None);
        let just_now = Some(t(NOW));
        assert!(peer_write_due(&base, None, just_now, t(NOW), MINUTE));
        assert!(!peer_write_due(
            &base,
            Some(&base),
            just_now,
            t(NOW),
            MINUTE
        ));
        let mut handshake = base.clone();
        handshake.last_handshake = Some(t(NOW));
        assert!(peer_write_due(
            &handshake,
            Some(&base),
            just_now,
            t(NOW),
            MINUTE
        ));
        let mut inactive = base.clone();
        inactive.active = false;
        assert!(peer_write_due(
            &inactive,
            Some(&base),
            just_now,
            t(NOW),
            MINUTE
        ));
        let mut refused = base.clone();
        refused.conditions[0].reason = reason::CONFLICT.into();
        assert!(peer_write_due(
            &refused,
            Some(&base),
            just_now,
            t(NOW),
            MINUTE
        ));
    }

    #[test]
    fn counters_alone_are_written_at_most_once_a_minute() {
        let ready = peer_ready(&live(), true, "wg0", None, t(NOW));
        let base = peer_status(None, ready, Some(&stats(1, None)), None);
        let mut more = base.clone();
        more.rx_bytes = 5000;
        let last = Some(t("2026-06-01T11:59:30Z"));
        assert!(!peer_write_due(&more, Some(&base), last, t(NOW), MINUTE));
        assert!(peer_write_due(
            &more,
            Some(&base),
            last,
            t("2026-06-01T12:00:30Z"),
            MINUTE
        ));
        assert!(peer_write_due(&more, Some(&base), None, t(NOW), MINUTE));
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
