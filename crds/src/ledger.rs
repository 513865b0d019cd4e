//! The payment ledger fold: how trials, payments, admin grants, promo-code days, referral
//! rewards and refunds become `paidUntil`.
//!
//! Events are folded in time order with `until = max(until, at) + duration`. An event id counts
//! once however often it is delivered; a refund takes its payment out of the fold entirely, so
//! the time after it shifts back. The result depends only on the set of events, never on the
//! order they are given in.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

/// What kind of entry a ledger event is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LedgerEventKind {
    /// The free trial a user gets once.
    Trial,
    /// A payment that succeeded.
    Payment,
    /// Time an administrator granted.
    Grant,
    /// Free days from a redeemed promo code.
    Promo,
    /// Days earned because a referred user's first payment succeeded.
    Referral,
    /// A refund of the event with this id; the refunded event no longer counts. A revoked
    /// referral reward (its payment was refunded) is taken out the same way.
    Refund { refunded_event_id: String },
}

/// One ledger entry as the fold sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEvent {
    /// Stable id (e.g. the payment's or grant's database id); duplicates count once.
    pub id: String,
    /// When the entitlement starts (the payment's capture time, the grant's time).
    pub at: Timestamp,
    /// How much time it buys. Zero and negative durations add nothing.
    pub duration: SignedDuration,
    pub kind: LedgerEventKind,
}

impl LedgerEvent {
    pub fn new(
        id: impl Into<String>,
        at: Timestamp,
        duration: SignedDuration,
        kind: LedgerEventKind,
    ) -> Self {
        Self {
            id: id.into(),
            at,
            duration,
            kind,
        }
    }
}

/// Folds the events into the instant the subscription is paid until; `None` when nothing counts.
pub fn fold_paid_until<'a>(events: impl IntoIterator<Item = &'a LedgerEvent>) -> Option<Timestamp> {
    // One event per id: the first seen in (id) order wins deterministically — a redelivered
    // event carries the same data, so which copy is kept only matters for malformed input.
    let mut by_id: BTreeMap<&str, &LedgerEvent> = BTreeMap::new();
    for event in events {
        by_id
            .entry(event.id.as_str())
            .and_modify(|kept| {
                if (event.at, &event.kind, event.duration) < (kept.at, &kept.kind, kept.duration) {
                    *kept = event;
                }
            })
            .or_insert(event);
    }
    let refunded: BTreeSet<&str> = by_id
        .values()
        .filter_map(|event| match &event.kind {
            LedgerEventKind::Refund { refunded_event_id } => Some(refunded_event_id.as_str()),
            _ => None,
        })
        .collect();
    let mut counted: Vec<&LedgerEvent> = by_id
        .values()
        .copied()
        .filter(|event| !matches!(event.kind, LedgerEventKind::Refund { .. }))
        .filter(|event| !refunded.contains(event.id.as_str()))
        .filter(|event| event.duration > SignedDuration::ZERO)
        .collect();
    counted.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    counted
        .into_iter()
        .fold(None, |until: Option<Timestamp>, event| {
            let start = until.map_or(event.at, |until| until.max(event.at));
            Some(
                start
                    .saturating_add(event.duration)
                    .unwrap_or(Timestamp::MAX),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: SignedDuration = SignedDuration::from_hours(24);

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn pay(id: &str, at: &str, days: i64) -> LedgerEvent {
        LedgerEvent::new(id, t(at), DAY * days as i32, LedgerEventKind::Payment)
    }

    #[test]
    fn no_events_means_never_paid() {
        assert_eq!(fold_paid_until(&[]), None);
    }

    #[test]
    fn one_payment_runs_from_its_time() {
        let events = [pay("p1", "2026-01-01T00:00:00Z", 30)];
        assert_eq!(fold_paid_until(&events), Some(t("2026-01-31T00:00:00Z")));
    }

    #[test]
    fn overlapping_payments_extend_from_the_current_end() {
        let events = [
            pay("p1", "2026-01-01T00:00:00Z", 30),
            pay("p2", "2026-01-10T00:00:00Z", 30),
        ];
        assert_eq!(fold_paid_until(&events), Some(t("2026-03-02T00:00:00Z")));
    }

    #[test]
    fn a_payment_after_a_gap_starts_at_its_own_time() {
        let events = [
            pay("p1", "2026-01-01T00:00:00Z", 10),
            pay("p2", "2026-03-01T00:00:00Z", 10),
        ];
        assert_eq!(fold_paid_until(&events), Some(t("2026-03-11T00:00:00Z")));
    }

    #[test]
    fn duplicate_ids_count_once() {
        let events = [
            pay("p1", "2026-01-01T00:00:00Z", 30),
            pay("p1", "2026-01-01T00:00:00Z", 30),
        ];
        assert_eq!(fold_paid_until(&events), Some(t("2026-01-31T00:00:00Z")));
    }

    #[test]
    fn refund_of_a_middle_payment_removes_its_time() {
        let events = [
            pay("p1", "2026-01-01T00:00:00Z", 30),
            pay("p2", "2026-01-15T00:00:00Z", 30),
            pay("p3", "2026-02-01T00:00:00Z", 30),
            LedgerEvent::new(
                "r1",
                t("2026-02-10T00:00:00Z"),
                SignedDuration::ZERO,
                LedgerEventKind::Refund {
                    refunded_event_id: "p2".into(),
                },
            ),
        ];
        // p1 ends Jan 31; p3 starts Feb 1 and runs 30 days (February has 28).
        assert_eq!(fold_paid_until(&events), Some(t("2026-03-03T00:00:00Z")));
    }

    #[test]
    fn refund_of_the_only_payment_means_never_paid_and_unknown_refunds_are_ignored() {
        let refund = |target: &str| {
            LedgerEvent::new(
                "r",
                t("2026-01-02T00:00:00Z"),
                DAY,
                LedgerEventKind::Refund {
                    refunded_event_id: target.into(),
                },
            )
        };
        assert_eq!(
            fold_paid_until(&[pay("p1", "2026-01-01T00:00:00Z", 30), refund("p1")]),
            None
        );
        assert_eq!(
            fold_paid_until(&[pay("p1", "2026-01-01T00:00:00Z", 30), refund("nope")]),
            Some(t("2026-01-31T00:00:00Z"))
        );
    }

    #[test]
    fn trial_grant_and_payment_fold_together() {
        let events = [
            LedgerEvent::new(
                "trial",
                t("2026-01-01T00:00:00Z"),
                DAY * 3,
                LedgerEventKind::Trial,
            ),
            LedgerEvent::new(
                "g1",
                t("2026-01-02T00:00:00Z"),
                DAY * 2,
                LedgerEventKind::Grant,
            ),
            pay("p1", "2026-01-02T00:00:00Z", 30),
        ];
        assert_eq!(fold_paid_until(&events), Some(t("2026-02-05T00:00:00Z")));
    }

    #[test]
    fn equal_timestamps_give_the_same_result_in_any_order() {
        let a = pay("a", "2026-01-01T00:00:00Z", 7);
        let b = LedgerEvent::new("b", t("2026-01-01T00:00:00Z"), DAY, LedgerEventKind::Grant);
        assert_eq!(
            fold_paid_until(&[a.clone(), b.clone()]),
            fold_paid_until(&[b, a])
        );
    }

    #[test]
    fn zero_and_negative_durations_add_nothing() {
        let events = [
            pay("p1", "2026-01-01T00:00:00Z", 1),
            LedgerEvent::new(
                "g0",
                t("2026-05-01T00:00:00Z"),
                SignedDuration::ZERO,
                LedgerEventKind::Grant,
            ),
            LedgerEvent::new(
                "gneg",
                t("2026-01-01T12:00:00Z"),
                -DAY,
                LedgerEventKind::Grant,
            ),
        ];
        assert_eq!(fold_paid_until(&events), Some(t("2026-01-02T00:00:00Z")));
    }

    fn event(id: &str, at: &str, days: i32, kind: LedgerEventKind) -> LedgerEvent {
        LedgerEvent::new(id, t(at), DAY * days, kind)
    }

    #[test]
    fn promo_and_referral_days_fold_like_any_other_time() {
        let events = [
            pay("p1", "2026-01-01T00:00:00Z", 30),
            event("promo", "2026-01-10T00:00:00Z", 7, LedgerEventKind::Promo),
            event(
                "referral",
                "2026-03-01T00:00:00Z",
                5,
                LedgerEventKind::Referral,
            ),
        ];
        // p1 to Jan 31, the promo's week on top (Feb 7), then a gap: the referral runs from
        // its own time.
        assert_eq!(fold_paid_until(&events), Some(t("2026-03-06T00:00:00Z")));
        assert_eq!(
            fold_paid_until(&events[..2]),
            Some(t("2026-02-07T00:00:00Z"))
        );
    }

    #[test]
    fn every_time_giving_kind_counts_the_same_and_each_once() {
        for kind in [
            LedgerEventKind::Trial,
            LedgerEventKind::Payment,
            LedgerEventKind::Grant,
            LedgerEventKind::Promo,
            LedgerEventKind::Referral,
        ] {
            let once = event("e", "2026-01-01T00:00:00Z", 3, kind.clone());
            assert_eq!(
                fold_paid_until(&[once.clone(), once]),
                Some(t("2026-01-04T00:00:00Z")),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_revoked_referral_reward_gives_back_its_days_and_shifts_later_time() {
        let reward = event(
            "referral:1",
            "2026-01-01T00:00:00Z",
            10,
            LedgerEventKind::Referral,
        );
        let revoke = LedgerEvent::new(
            "revoke:referral:1",
            t("2026-01-03T00:00:00Z"),
            SignedDuration::ZERO,
            LedgerEventKind::Refund {
                refunded_event_id: "referral:1".into(),
            },
        );
        let later = pay("p1", "2026-01-05T00:00:00Z", 30);
        assert_eq!(
            fold_paid_until(&[reward.clone(), later.clone()]),
            Some(t("2026-02-10T00:00:00Z"))
        );
        assert_eq!(
            fold_paid_until(&[reward.clone(), revoke.clone(), later]),
            Some(t("2026-02-04T00:00:00Z"))
        );
        assert_eq!(fold_paid_until(&[reward, revoke]), None);
    }

    #[test]
    fn a_promo_code_cannot_revoke_anything() {
        // Only a refund event takes an event out; a promo with the id of a payment is simply
        // a duplicate id, and the earliest copy counts once.
        let events = [
            pay("p1", "2026-01-01T00:00:00Z", 30),
            event("p2", "2026-01-02T00:00:00Z", 1, LedgerEventKind::Promo),
        ];
        assert_eq!(fold_paid_until(&events), Some(t("2026-02-01T00:00:00Z")));
    }

    fn arb_event() -> impl Strategy<Value = LedgerEvent> {
        (0u8..12, 0i64..200, 0i32..40, 0u8..6).prop_map(|(id, day, days, kind)| {
            let kind = match kind {
                0 => LedgerEventKind::Payment,
                1 => LedgerEventKind::Grant,
                2 => LedgerEventKind::Trial,
                3 => LedgerEventKind::Promo,
                4 => LedgerEventKind::Referral,
                _ => LedgerEventKind::Refund {
                    refunded_event_id: format!("e{}", (id + 1) % 12),
                },
            };
            LedgerEvent::new(
                format!("e{id}"),
                Timestamp::UNIX_EPOCH + DAY * day as i32,
                DAY * days,
                kind,
            )
        })
    }

    proptest! {
        #[test]
        fn result_does_not_depend_on_input_order(mut events in proptest::collection::vec(arb_event(), 0..12), seed in any::<u64>()) {
            // Equal ids must carry equal data for a well-formed ledger; make them so.
            let mut first: BTreeMap<String, LedgerEvent> = BTreeMap::new();
            for e in &events { first.entry(e.id.clone()).or_insert_with(|| e.clone()); }
            for e in events.iter_mut() { *e = first[&e.id].clone(); }
            let forward = fold_paid_until(&events);
            let mut shuffled = events.clone();
            let n = shuffled.len();
            if n > 1 { for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n); } }
            shuffled.reverse();
            prop_assert_eq!(forward, fold_paid_until(&shuffled));
        }

        #[test]
        fn another_payment_never_shortens_paid_until(events in proptest::collection::vec(arb_event(), 0..12), day in 0i32..300, days in 1i32..40) {
            let extra = LedgerEvent::new("extra", Timestamp::UNIX_EPOCH + DAY * day, DAY * days, LedgerEventKind::Payment);
            let before = fold_paid_until(&events);
            let mut more = events.clone();
            more.push(extra.clone());
            let after = fold_paid_until(&more).expect("a positive payment always counts");
            prop_assert!(after >= extra.at + extra.duration);
            if let Some(before) = before { prop_assert!(after >= before, "{after} < {before}"); }
        }
    }
}
