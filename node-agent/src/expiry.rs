//! Expiry timers, computed purely: when the loop wakes for the next instant at which a live peer
//! stops being live by the clock alone (those instants come from
//! [`crate::desired::DesiredState::next_expiry`]) and how long to sleep until then. The agent
//! wakes then and removes the peer without waiting for any event (the operator may be down).
//!
//! An expiry is due from the instant its decision was made, not from the instant the loop looks:
//! the loop may be busy (reading statistics, or in a pass that took the time just before the
//! expiry) while it passes, and the decision still holds it until a pass applies it.

use std::time::Duration;

use jiff::Timestamp;

use crate::desired::DesiredState;

/// The next instant the loop must wake for, over each server's peer decision and the instant it
/// was made (`None`: the last pass could not bring it up to date, the server has a problem).
/// An expiry the decision still holds is due even when it already passed, so the loop wakes
/// at once and the pass removes the peer. A decision that could not be brought up to date
/// counts from `now` instead: its passes stop before applying anything, so a passed expiry
/// there would wake the loop again and again; the pass that clears the problem decides again.
pub fn next_wake<'a>(
    decisions: impl IntoIterator<Item = (&'a DesiredState, Option<Timestamp>)>,
    now: Timestamp,
) -> Option<Timestamp> {
    decisions
        .into_iter()
        .filter_map(|(decision, decided_at)| decision.next_expiry(decided_at.unwrap_or(now)))
        .min()
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
    use crate::desired::fixtures::{NOW, live_peer, pools_v4, t};

    /// The decision made at `at` for one live peer per expiry.
    fn decided(at: &str, expiries: &[&str]) -> DesiredState {
        let peers = expiries.iter().enumerate().map(|(n, expires)| {
            let mut peer = live_peer(format!("p{n}"), format!("10.8.0.{}/32", n + 2));
            peer.liveness.expires_at = Some(t(expires));
            peer
        });
        DesiredState::new(pools_v4(), peers, t(at))
    }

    #[test]
    fn an_expiry_that_passed_while_the_loop_was_busy_wakes_it_at_once() {
        // Decided a moment before the expiry; the loop looks again just after it (a status
        // round or a pass was running while it passed).
        let decision = decided("2026-06-01T11:59:59.9Z", &["2026-06-01T12:00:00Z"]);
        let later = t("2026-06-01T12:00:00.2Z");
        let wake = next_wake([(&decision, Some(t("2026-06-01T11:59:59.9Z")))], later);
        assert_eq!(wake, Some(t(NOW)));
        assert_eq!(
            sleep_until(wake, later, Duration::from_secs(30)),
            Duration::ZERO
        );
    }

    #[test]
    fn the_loop_wakes_for_the_earliest_expiry_of_every_server() {
        let one = decided(NOW, &["2026-06-01T12:05:00Z", "2026-06-01T12:01:00Z"]);
        let two = decided(NOW, &["2026-06-01T12:02:00Z"]);
        let wake = next_wake([(&one, Some(t(NOW))), (&two, Some(t(NOW)))], t(NOW));
        assert_eq!(wake, Some(t("2026-06-01T12:01:00Z")));
        assert_eq!(next_wake([], t(NOW)), None);
    }

    #[test]
    fn a_decision_that_could_not_be_updated_wakes_only_for_expiries_still_ahead() {
        let decision = decided(
            "2026-06-01T11:00:00Z",
            &["2026-06-01T11:30:00Z", "2026-06-01T12:30:00Z"],
        );
        assert_eq!(
            next_wake([(&decision, None)], t(NOW)),
            Some(t("2026-06-01T12:30:00Z"))
        );
        assert_eq!(
            next_wake([(&decision, Some(t("2026-06-01T11:00:00Z")))], t(NOW)),
            Some(t("2026-06-01T11:30:00Z"))
        );
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
