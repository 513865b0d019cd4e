//! Liveness: whether a peer belongs on the interface at an instant, a subscription's phase, and
//! the next instant at which either changes (so controllers requeue exactly then).

use jiff::Timestamp;

use crate::resources::{SubscriptionPhase, VpnSubscriptionSpec};

/// What decides whether one peer is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLiveness {
    /// The user's switch (`spec.enabled`).
    pub enabled: bool,
    /// The operator keeps the peer off because it exceeds its subscription's `maxDevices`
    /// (the `wgsub.io/over-limit` label).
    pub over_limit: bool,
    /// The operator keeps the peer off because its subscription used up its data quota for the
    /// period (the `wgsub.io/over-quota` label).
    pub over_quota: bool,
    pub subscription_suspended: bool,
    pub expires_at: Option<Timestamp>,
}

impl PeerLiveness {
    /// A peer is live iff it is enabled, within its subscription's device limit and data
    /// quota, its subscription is not suspended and `now < expiresAt`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.enabled
            && !self.over_limit
            && !self.over_quota
            && !self.subscription_suspended
            && self.expires_at.is_some_and(|at| now < at)
    }

    /// The instant after `now` at which this peer stops being live by the clock alone.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        if self.is_live(now) {
            self.expires_at
        } else {
            None
        }
    }
}

/// The earliest instant after `now` at which any of the peers' liveness changes.
pub fn next_liveness_change(
    peers: impl IntoIterator<Item = PeerLiveness>,
    now: Timestamp,
) -> Option<Timestamp> {
    peers
        .into_iter()
        .filter_map(|peer| peer.next_change(now))
        .min()
}

/// The subscription is paid at `now`: `now < paidUntil`.
pub fn subscription_is_paid(paid_until: Option<Timestamp>, now: Timestamp) -> bool {
    paid_until.is_some_and(|until| now < until)
}

/// The subscription's phase at `now`: Pending when never paid, Suspended when suspended, Active
/// while paid, Expired after.
pub fn subscription_phase(spec: &VpnSubscriptionSpec, now: Timestamp) -> SubscriptionPhase {
    match spec.paid_until {
        None => SubscriptionPhase::Pending,
        Some(_) if spec.suspended => SubscriptionPhase::Suspended,
        Some(until) if now < until => SubscriptionPhase::Active,
        Some(_) => SubscriptionPhase::Expired,
    }
}

/// When the subscription's phase next changes by the clock alone (an Active one expiring).
pub fn next_phase_change(spec: &VpnSubscriptionSpec, now: Timestamp) -> Option<Timestamp> {
    match subscription_phase(spec, now) {
        SubscriptionPhase::Active => spec.paid_until,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const NOW: &str = "2026-06-01T12:00:00Z";

    fn peer(enabled: bool, suspended: bool, expires: Option<&str>) -> PeerLiveness {
        PeerLiveness {
            enabled,
            over_limit: false,
            over_quota: false,
            subscription_suspended: suspended,
            expires_at: expires.map(t),
        }
    }

    #[test]
    fn liveness_needs_enabled_within_limit_and_quota_unsuspended_and_unexpired() {
        let now = t(NOW);
        let future = Some("2026-06-02T00:00:00Z");
        for enabled in [false, true] {
            for over_limit in [false, true] {
                for over_quota in [false, true] {
                    for suspended in [false, true] {
                        for expires in [None, Some("2026-05-01T00:00:00Z"), Some(NOW), future] {
                            let expected = enabled
                                && !over_limit
                                && !over_quota
                                && !suspended
                                && expires == future;
                            let liveness = PeerLiveness {
                                over_limit,
                                over_quota,
                                ..peer(enabled, suspended, expires)
                            };
                            assert_eq!(
                                liveness.is_live(now),
                                expected,
                                "{enabled} {over_limit} {over_quota} {suspended} {expires:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_peer_over_the_device_limit_has_no_expiry_to_wait_for() {
        let over = PeerLiveness {
            over_limit: true,
            ..peer(true, false, Some("2026-06-02T00:00:00Z"))
        };
        assert_eq!(next_liveness_change([over], t(NOW)), None);
        let over_quota = PeerLiveness {
            over_quota: true,
            ..peer(true, false, Some("2026-06-02T00:00:00Z"))
        };
        assert_eq!(next_liveness_change([over_quota], t(NOW)), None);
    }

    #[test]
    fn expiry_exactly_at_now_is_not_live() {
        assert!(!peer(true, false, Some(NOW)).is_live(t(NOW)));
        assert!(peer(true, false, Some(NOW)).is_live(t("2026-06-01T11:59:59.999999999Z")));
    }

    #[test]
    fn next_change_is_the_earliest_expiry_of_a_live_peer() {
        let now = t(NOW);
        let peers = [
            peer(true, false, Some("2026-06-03T00:00:00Z")),
            peer(true, false, Some("2026-06-02T00:00:00Z")),
            peer(false, false, Some("2026-06-01T13:00:00Z")),
            peer(true, true, Some("2026-06-01T13:00:00Z")),
            peer(true, false, Some("2026-05-01T00:00:00Z")),
            peer(true, false, None),
        ];
        assert_eq!(
            next_liveness_change(peers, now),
            Some(t("2026-06-02T00:00:00Z"))
        );
        assert_eq!(next_liveness_change([], now), None);
        assert_eq!(
            next_liveness_change([peer(true, false, Some(NOW))], now),
            None
        );
    }

    #[test]
    fn phases_follow_paid_until_and_suspension() {
        let now = t(NOW);
        let mut spec = VpnSubscriptionSpec::for_user(42);
        assert_eq!(subscription_phase(&spec, now), SubscriptionPhase::Pending);
        assert!(!subscription_is_paid(spec.paid_until, now));
        spec.paid_until = Some(t("2026-07-01T00:00:00Z"));
        assert_eq!(subscription_phase(&spec, now), SubscriptionPhase::Active);
        assert_eq!(next_phase_change(&spec, now), spec.paid_until);
        assert!(subscription_is_paid(spec.paid_until, now));
        spec.paid_until = Some(now);
        assert_eq!(subscription_phase(&spec, now), SubscriptionPhase::Expired);
        assert_eq!(next_phase_change(&spec, now), None);
        spec.suspended = true;
        assert_eq!(subscription_phase(&spec, now), SubscriptionPhase::Suspended);
        spec.paid_until = None;
        assert_eq!(subscription_phase(&spec, now), SubscriptionPhase::Pending);
    }
}
