//! The reminder schedule: which users get which expiry reminder at an instant, given the
//! reminders already sent.
//!
//! A paid period is identified by its end (`paidUntil`): a renewal or grant moves the end and so
//! starts a new period whose reminders are sent afresh. Each period has three reminders with
//! disjoint windows, so at most one is due per user at any instant and a bot that was down
//! through a window does not send a stale one late:
//!
//! | reminder | due while |
//! | --- | --- |
//! | 3 days before | `paidUntil - 3d <= t < paidUntil - 1d` |
//! | 1 day before | `paidUntil - 1d <= t < paidUntil` |
//! | at expiry | `paidUntil <= t < paidUntil + 1d` |
//!
//! A reminder is only due when the period had already begun when its window opened: a 3-day
//! trial granted at `/start` does not announce "3 days left" in the same minute, and a 1-day
//! admin grant gets no "1 day left". The period begins at the ledger change that set its end
//! (a grant, an applied payment or a refund).
//!
//! Suspended users get none (their peers are off for another reason).

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// How long after expiry the "expired" reminder is still worth sending.
pub const EXPIRED_GRACE: SignedDuration = DAY;

/// Which of the three reminders of a paid period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReminderKind {
    /// Three days before the end.
    ThreeDays,
    /// One day before the end.
    OneDay,
    /// At the end.
    Expired,
}

impl ReminderKind {
    pub const ALL: [ReminderKind; 3] = [
        ReminderKind::ThreeDays,
        ReminderKind::OneDay,
        ReminderKind::Expired,
    ];

    /// The name stored in the database and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReminderKind::ThreeDays => "three_days",
            ReminderKind::OneDay => "one_day",
            ReminderKind::Expired => "expired",
        }
    }

    /// The kind stored as [`ReminderKind::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The half-open window `[start, end)` in which this reminder of a period ending at
    /// `paid_until` is due.
    pub fn window(self, paid_until: Timestamp) -> (Timestamp, Timestamp) {
        let at = |offset: SignedDuration| {
            paid_until
                .saturating_add(offset)
                .expect("adding a signed duration to a timestamp saturates")
        };
        match self {
            ReminderKind::ThreeDays => (at(-DAY * 3), at(-DAY)),
            ReminderKind::OneDay => (at(-DAY), paid_until),
            ReminderKind::Expired => (paid_until, at(EXPIRED_GRACE)),
        }
    }

    /// The reminder due at `now` for a period that began at `began_at` (unknown: long ago) and
    /// ends at `paid_until`, if any. A window that opened before the period began is not due.
    pub fn due_at(
        paid_until: Timestamp,
        began_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| {
            let (start, end) = kind.window(paid_until);
            start <= now && now < end && began_at.is_none_or(|began| began < start)
        })
    }
}

/// A user's current paid period as the schedule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidPeriod {
    pub user_id: i64,
    pub paid_until: Timestamp,
    /// When the ledger change that set `paid_until` happened; `None` when the ledger holds none.
    pub began_at: Option<Timestamp>,
    pub suspended: bool,
}

/// One reminder of one period of one user: what is recorded once sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReminderKey {
    pub user_id: i64,
    pub paid_until: Timestamp,
    pub kind: ReminderKind,
}

/// The range of `paidUntil` values that can have a reminder due at `now`: `(from, to]` such that
/// only periods with `from < paidUntil <= to` need to be read.
pub fn candidate_range(now: Timestamp) -> (Timestamp, Timestamp) {
    let from = now
        .saturating_sub(EXPIRED_GRACE)
        .expect("subtracting a signed duration saturates");
    let to = now
        .saturating_add(DAY * 3)
        .expect("adding a signed duration saturates");
    (from, to)
}

/// The reminders to send at `now`: for each unsuspended period the one whose window holds
/// `now`, unless it was already sent. Sorted by user, at most one per user.
pub fn due_reminders(
    periods: &[PaidPeriod],
    sent: &BTreeSet<ReminderKey>,
    now: Timestamp,
) -> Vec<ReminderKey> {
    let mut due: Vec<ReminderKey> = periods
        .iter()
        .filter(|period| !period.suspended)
        .filter_map(|period| {
            let kind = ReminderKind::due_at(period.paid_until, period.began_at, now)?;
            let key = ReminderKey {
                user_id: period.user_id,
                paid_until: period.paid_until,
                kind,
            };
            (!sent.contains(&key)).then_some(key)
        })
        .collect();
    due.sort();
    due.dedup_by_key(|key| key.user_id);
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const END: &str = "2026-03-10T12:00:00Z";
    const HOUR: SignedDuration = SignedDuration::from_hours(1);
    const NANO: SignedDuration = SignedDuration::from_nanos(1);

    fn period(user_id: i64, paid_until: &str) -> PaidPeriod {
        PaidPeriod {
            user_id,
            paid_until: t(paid_until),
            began_at: None,
            suspended: false,
        }
    }

    fn kinds_at(
        periods: &[PaidPeriod],
        sent: &BTreeSet<ReminderKey>,
        now: Timestamp,
    ) -> Vec<(i64, ReminderKind)> {
        due_reminders(periods, sent, now)
            .into_iter()
            .map(|key| (key.user_id, key.kind))
            .collect()
    }

    #[test]
    fn window_boundaries_are_half_open() {
        let end = t(END);
        let cases = [
            (end - DAY * 3 - NANO, None),
            (end - DAY * 3, Some(ReminderKind::ThreeDays)),
            (end - DAY - NANO, Some(ReminderKind::ThreeDays)),
            (end - DAY, Some(ReminderKind::OneDay)),
            (end - NANO, Some(ReminderKind::OneDay)),
            (end, Some(ReminderKind::Expired)),
            (end + EXPIRED_GRACE - NANO, Some(ReminderKind::Expired)),
            (end + EXPIRED_GRACE, None),
            (end + DAY * 40, None),
        ];
        for (now, expected) in cases {
            assert_eq!(ReminderKind::due_at(end, None, now), expected, "at {now}");
            let long_before = Some(end - DAY * 30);
            assert_eq!(
                ReminderKind::due_at(end, long_before, now),
                expected,
                "at {now}"
            );
        }
    }

    #[test]
    fn a_sent_reminder_is_not_sent_again_but_the_next_stage_is() {
        let periods = [period(7, END)];
        let end = t(END);
        let mut sent = BTreeSet::new();
        let now = end - DAY * 2;
        let due = due_reminders(&periods, &sent, now);
        assert_eq!(due.len(), 1);
        sent.extend(due);
        assert!(due_reminders(&periods, &sent, now + HOUR).is_empty());
        assert_eq!(
            kinds_at(&periods, &sent, end - HOUR),
            vec![(7, ReminderKind::OneDay)]
        );
    }

    #[test]
    fn a_restart_inside_a_window_sends_nothing_twice() {
        // What was sent is read back from the database after a restart: the same set.
        let periods = [period(1, END)];
        let first = due_reminders(&periods, &BTreeSet::new(), t(END) - DAY * 2);
        let after_restart: BTreeSet<_> = first.iter().copied().collect();
        assert!(due_reminders(&periods, &after_restart, t(END) - DAY * 2 + HOUR * 5).is_empty());
    }

    #[test]
    fn a_bot_down_through_a_window_skips_the_stale_reminder() {
        // Down from 4 days before until 12 hours before: only the 1-day reminder goes out.
        let periods = [period(3, END)];
        assert_eq!(
            kinds_at(&periods, &BTreeSet::new(), t(END) - HOUR * 12),
            vec![(3, ReminderKind::OneDay)]
        );
        // Down until two days after the end: nothing (too late to be useful).
        assert!(kinds_at(&periods, &BTreeSet::new(), t(END) + DAY * 2).is_empty());
    }

    #[test]
    fn a_renewal_starts_a_new_period_with_its_own_reminders() {
        let end1 = t(END);
        let mut sent = BTreeSet::new();
        // Period 1: the 3-day reminder goes out.
        let due = due_reminders(&[period(5, END)], &sent, end1 - DAY * 2);
        assert_eq!(due[0].kind, ReminderKind::ThreeDays);
        sent.extend(due);
        // The user renews for 30 days; paidUntil moves.
        let end2 = end1 + DAY * 30;
        let renewed = [PaidPeriod {
            user_id: 5,
            paid_until: end2,
            began_at: Some(end1 - DAY * 2),
            suspended: false,
        }];
        // Around the old end nothing is due any more.
        for offset in [-DAY, -HOUR, HOUR, DAY] {
            assert!(due_reminders(&renewed, &sent, end1 + offset).is_empty());
        }
        // The new period gets all three, each once.
        let mut stages = vec![];
        let mut now = end2 - DAY * 4;
        while now < end2 + DAY * 2 {
            for key in due_reminders(&renewed, &sent, now) {
                assert_eq!(key.paid_until, end2);
                stages.push(key.kind);
                sent.insert(key);
            }
            now += HOUR;
        }
        assert_eq!(stages, ReminderKind::ALL.to_vec());
    }

    #[test]
    fn a_renewal_after_expiry_reminds_again_for_the_new_end() {
        let end1 = t(END);
        let mut sent: BTreeSet<ReminderKey> = ReminderKind::ALL
            .into_iter()
            .map(|kind| ReminderKey {
                user_id: 9,
                paid_until: end1,
                kind,
            })
            .collect();
        let end2 = end1 + DAY * 5;
        let renewed = [PaidPeriod {
            user_id: 9,
            paid_until: end2,
            began_at: Some(end1 + HOUR),
            suspended: false,
        }];
        let due = due_reminders(&renewed, &sent, end2 - DAY * 2);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].kind, ReminderKind::ThreeDays);
        sent.extend(due);
        assert!(due_reminders(&renewed, &sent, end2 - DAY * 2).is_empty());
    }

    #[test]
    fn hourly_ticks_over_a_whole_period_send_each_reminder_exactly_once_in_order() {
        let periods = [period(1, END), period(2, "2026-03-11T00:30:00Z")];
        let mut sent = BTreeSet::new();
        let mut log: Vec<(i64, ReminderKind)> = vec![];
        let mut now = t("2026-03-01T00:00:00Z");
        while now < t("2026-03-20T00:00:00Z") {
            for key in due_reminders(&periods, &sent, now) {
                assert!(sent.insert(key), "sent twice: {key:?}");
                log.push((key.user_id, key.kind));
            }
            now += HOUR;
        }
        for user in [1, 2] {
            let kinds: Vec<_> = log
                .iter()
                .filter(|(u, _)| *u == user)
                .map(|(_, k)| *k)
                .collect();
            assert_eq!(kinds, ReminderKind::ALL.to_vec(), "user {user}");
        }
    }

    #[test]
    fn suspended_users_get_no_reminders() {
        let mut p = period(4, END);
        p.suspended = true;
        assert!(due_reminders(&[p], &BTreeSet::new(), t(END) - HOUR).is_empty());
    }

    #[test]
    fn at_most_one_reminder_per_user_even_with_duplicate_rows() {
        let periods = [period(4, END), period(4, END)];
        assert_eq!(due_reminders(&periods, &BTreeSet::new(), t(END)).len(), 1);
    }

    #[test]
    fn candidate_range_covers_exactly_the_periods_with_a_window_at_now() {
        let now = t("2026-03-10T00:00:00Z");
        let (from, to) = candidate_range(now);
        for minutes in (-3 * 24 * 60 - 120..=5 * 24 * 60).step_by(30) {
            let paid_until = now + SignedDuration::from_mins(minutes);
            let in_range = from < paid_until && paid_until <= to;
            assert_eq!(
                in_range,
                ReminderKind::due_at(paid_until, None, now).is_some(),
                "paidUntil {paid_until}"
            );
        }
    }

    #[test]
    fn a_period_shorter_than_a_window_skips_the_reminders_whose_window_opened_before_it_began() {
        // Trial of 3 days granted at /start: no "3 days left" now, the 1-day and the expiry
        // reminders later.
        let start = t("2026-03-01T12:00:00Z");
        let trial = [PaidPeriod {
            user_id: 4,
            paid_until: start + DAY * 3,
            began_at: Some(start),
            suspended: false,
        }];
        let mut sent = BTreeSet::new();
        let mut stages = vec![];
        let mut now = start;
        while now < start + DAY * 5 {
            for key in due_reminders(&trial, &sent, now) {
                stages.push(key.kind);
                sent.insert(key);
            }
            now += HOUR;
        }
        assert_eq!(stages, [ReminderKind::OneDay, ReminderKind::Expired]);

        // A grant of 12 hours: only the expiry reminder.
        let short = [PaidPeriod {
            user_id: 4,
            paid_until: start + HOUR * 12,
            began_at: Some(start),
            suspended: false,
        }];
        assert!(due_reminders(&short, &BTreeSet::new(), start).is_empty());
        assert!(due_reminders(&short, &BTreeSet::new(), start + HOUR * 11).is_empty());
        assert_eq!(
            kinds_at(&short, &BTreeSet::new(), start + HOUR * 12),
            [(4, ReminderKind::Expired)]
        );

        // Begun one instant before the window opened: the reminder is due.
        let end = t(END);
        let just_before = Some(end - DAY * 3 - NANO);
        assert_eq!(
            ReminderKind::due_at(end, just_before, end - DAY * 3),
            Some(ReminderKind::ThreeDays)
        );
        assert_eq!(
            ReminderKind::due_at(end, Some(end - DAY * 3), end - DAY * 3),
            None
        );
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in ReminderKind::ALL {
            assert_eq!(ReminderKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ReminderKind::parse("weekly"), None);
    }
}
