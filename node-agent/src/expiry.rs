//! Expiry timers, computed purely: the next instant at which a peer that is live now stops being
//! live by the clock alone, and how long to sleep until then. The agent wakes at that instant and
//! removes the peer without waiting for any event (the operator may be down).

use std::time::Duration;

use jiff::Timestamp;

use crate::desired::PeerInput;

/// The earliest `expiresAt` after `now` among peers that are live at `now`.
pub fn next_expiry<'a>(
    peers: impl IntoIterator<Item = &'a PeerInput>,
    now: Timestamp,
) -> Option<Timestamp> {
    wgsub_crds::liveness::next_liveness_change(peers.into_iter().map(|p| p.liveness), now)
}

/// How long to sleep from `now` until `deadline` (zero when it has passed), never longer than
/// `max` so a far-away expiry does not outlive a clock jump.
pub fn sleep_until(deadline: Option<Timestamp>, now: Timestamp, max: Duration) -> Duration {
    let Some(deadline) = deadline else {
        return max;
    };
    let until = deadline.duration_since(now);
    if until.is_negative() {
        return Duration::ZERO;
    }
    Duration::try_from(until).unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::PresharedKeyInput;
    use wgsub_crds::liveness::PeerLiveness;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const NOW: &str = "2026-06-01T12:00:00Z";

    fn peer(enabled: bool, expires: &str) -> PeerInput {
        PeerInput {
            name: expires.into(),
            created: None,
            public_key: None,
            address: None,
            address6: None,
            liveness: PeerLiveness {
                enabled,
                subscription_suspended: false,
                expires_at: Some(t(expires)),
            },
            preshared_key: PresharedKeyInput::NotUsed,
        }
    }

    #[test]
    fn the_next_expiry_is_the_earliest_of_live_peers() {
        let peers = [
            peer(true, "2026-06-01T12:00:05Z"),
            peer(true, "2026-06-01T12:00:02Z"),
            peer(false, "2026-06-01T12:00:01Z"),
            peer(true, "2026-06-01T11:00:00Z"),
        ];
        assert_eq!(next_expiry(&peers, t(NOW)), Some(t("2026-06-01T12:00:02Z")));
        assert_eq!(next_expiry(&[], t(NOW)), None);
    }

    #[test]
    fn sleep_is_exact_capped_and_never_negative() {
        let max = Duration::from_secs(30);
        assert_eq!(
            sleep_until(Some(t("2026-06-01T12:00:02.5Z")), t(NOW), max),
            Duration::from_millis(2500)
        );
        assert_eq!(
            sleep_until(Some(t("2026-06-02T12:00:00Z")), t(NOW), max),
            max
        );
        assert_eq!(
            sleep_until(Some(t("2026-06-01T11:00:00Z")), t(NOW), max),
            Duration::ZERO
        );
        assert_eq!(sleep_until(None, t(NOW), max), max);
    }
}
