//! Expiry timers, computed purely: how long to sleep until the next instant at which a live peer
//! stops being live by the clock alone (that instant comes from
//! [`crate::desired::DesiredState::next_expiry`]). The agent wakes then and removes the peer
//! without waiting for any event (the operator may be down).

use std::time::Duration;

use jiff::Timestamp;

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

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const NOW: &str = "2026-06-01T12:00:00Z";

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
