//! The pure step from ledger rows to what a user is entitled to: `paidUntil` by
//! [`wgsub_crds::ledger::fold_paid_until`], and the plan, device count and data quota of the
//! latest payment that still counts (free days — trial, grants, promo, referral — keep the quota
//! of that payment; without one there is no quota).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wgsub_crds::ledger::{LedgerEvent, LedgerEventKind, fold_paid_until};
use wgsub_crds::resources::TrafficQuota;

/// Devices a user may have when no counted payment says otherwise.
pub const DEFAULT_MAX_DEVICES: i32 = 1;

/// What the ledger says a user is entitled to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entitlement {
    /// End of the paid period; `None` when nothing ever counted.
    pub paid_until: Option<Timestamp>,
    /// The plan of the latest payment that counts.
    pub plan: Option<String>,
    /// Devices allowed by that plan (1 without one).
    pub max_devices: i32,
    /// The traffic per period that payment bought; `None`: no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_quota: Option<TrafficQuota>,
}

impl Default for Entitlement {
    fn default() -> Self {
        Self {
            paid_until: None,
            plan: None,
            max_devices: DEFAULT_MAX_DEVICES,
            traffic_quota: None,
        }
    }
}

/// An applied payment as the fold sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFact {
    pub id: Uuid,
    /// When it succeeded; its time runs from here (or from the end of earlier time).
    pub at: Timestamp,
    pub days: i32,
    pub plan: String,
    pub devices: i32,
    /// The plan's data quota when it was bought (`None`: none).
    pub traffic_quota: Option<TrafficQuota>,
    pub amount_minor: i64,
    /// Sum of the refunds recorded against it; a payment refunded in full no longer counts.
    pub refunded_minor: i64,
}

impl PaymentFact {
    fn fully_refunded(&self) -> bool {
        self.refunded_minor >= self.amount_minor
    }
}

/// Kinds of free time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantKind {
    /// The once-per-user trial.
    Trial,
    /// Time an administrator gave.
    Admin,
    /// Free days from a redeemed promo code.
    Promo,
    /// Days a referrer earned by a referred user's first payment.
    Referral,
    /// The paid time a customer had on the WireGuard server they were imported from.
    Import,
}

impl GrantKind {
    /// The value stored in `grants.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Trial => "trial",
            GrantKind::Admin => "admin",
            GrantKind::Promo => "promo",
            GrantKind::Import => "import",
            GrantKind::Referral => "referral",
        }
    }

    /// Parses `grants.kind`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "trial" => Some(GrantKind::Trial),
            "admin" => Some(GrantKind::Admin),
            "promo" => Some(GrantKind::Promo),
            "referral" => Some(GrantKind::Referral),
            "import" => Some(GrantKind::Import),
            _ => None,
        }
    }
}

/// A grant as the fold sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantFact {
    pub id: i64,
    pub kind: GrantKind,
    pub at: Timestamp,
    pub days: i32,
    /// Taken back (a referral reward whose payment was refunded): no longer counts.
    pub revoked: bool,
}

fn days(days: i32) -> SignedDuration {
    SignedDuration::from_hours(24 * i64::from(days))
}

/// The ledger events of a user's payments and grants, in the fold's vocabulary. A payment
/// refunded in full, and a revoked grant, are followed by a refund event that takes them out.
pub fn ledger_events(payments: &[PaymentFact], grants: &[GrantFact]) -> Vec<LedgerEvent> {
    let mut events = Vec::with_capacity(payments.len() + grants.len());
    for payment in payments {
        let id = format!("payment:{}", payment.id);
        if payment.fully_refunded() {
            events.push(LedgerEvent::new(
                format!("refund:{}", payment.id),
                payment.at,
                SignedDuration::ZERO,
                LedgerEventKind::Refund {
                    refunded_event_id: id.clone(),
                },
            ));
        }
        events.push(LedgerEvent::new(
            id,
            payment.at,
            days(payment.days),
            LedgerEventKind::Payment,
        ));
    }
    for grant in grants {
        let kind = match grant.kind {
            GrantKind::Trial => LedgerEventKind::Trial,
            GrantKind::Admin | GrantKind::Import => LedgerEventKind::Grant,
            GrantKind::Promo => LedgerEventKind::Promo,
            GrantKind::Referral => LedgerEventKind::Referral,
        };
        let id = format!("grant:{}", grant.id);
        if grant.revoked {
            events.push(LedgerEvent::new(
                format!("revoke:{}", grant.id),
                grant.at,
                SignedDuration::ZERO,
                LedgerEventKind::Refund {
                    refunded_event_id: id.clone(),
                },
            ));
        }
        events.push(LedgerEvent::new(id, grant.at, days(grant.days), kind));
    }
    events
}

/// Folds a user's payments and grants into their entitlement.
pub fn entitlement(payments: &[PaymentFact], grants: &[GrantFact]) -> Entitlement {
    let paid_until = fold_paid_until(&ledger_events(payments, grants));
    let latest = payments
        .iter()
        .filter(|payment| !payment.fully_refunded())
        .max_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
    Entitlement {
        paid_until,
        plan: latest.map(|payment| payment.plan.clone()),
        max_devices: latest.map_or(DEFAULT_MAX_DEVICES, |payment| payment.devices.clamp(1, 10)),
        traffic_quota: latest.and_then(|payment| payment.traffic_quota),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn payment(n: u128, at: &str, days: i32, plan: &str, devices: i32) -> PaymentFact {
        PaymentFact {
            id: Uuid::from_u128(n),
            at: t(at),
            days,
            plan: plan.into(),
            devices,
            traffic_quota: None,
            amount_minor: 19_900,
            refunded_minor: 0,
        }
    }

    fn quota(gib: i64, period_days: i32) -> Option<TrafficQuota> {
        Some(TrafficQuota {
            bytes: gib << 30,
            period_days,
        })
    }

    #[test]
    fn nothing_in_the_ledger_is_the_default_entitlement() {
        assert_eq!(entitlement(&[], &[]), Entitlement::default());
        assert_eq!(Entitlement::default().max_devices, 1);
    }

    #[test]
    fn the_latest_payment_sets_plan_and_devices_and_time_adds_up() {
        let payments = [
            payment(2, "2026-02-01T00:00:00Z", 90, "quarter", 3),
            payment(1, "2026-01-01T00:00:00Z", 30, "month", 1),
        ];
        let got = entitlement(&payments, &[]);
        assert_eq!(got.plan.as_deref(), Some("quarter"));
        assert_eq!(got.max_devices, 3);
        // Jan 1 + 30 days = Jan 31; Feb 1 is after that, so Feb 1 + 90 days.
        assert_eq!(got.paid_until, Some(t("2026-05-02T00:00:00Z")));
    }

    #[test]
    fn trial_and_admin_grants_add_time_but_no_plan() {
        let grants = [
            GrantFact {
                id: 1,
                kind: GrantKind::Trial,
                at: t("2026-01-01T00:00:00Z"),
                days: 3,
                revoked: false,
            },
            GrantFact {
                id: 2,
                kind: GrantKind::Admin,
                at: t("2026-01-02T00:00:00Z"),
                days: 7,
                revoked: false,
            },
        ];
        let got = entitlement(&[], &grants);
        assert_eq!(got.paid_until, Some(t("2026-01-11T00:00:00Z")));
        assert_eq!(got.plan, None);
        assert_eq!(got.max_devices, DEFAULT_MAX_DEVICES);
    }

    #[test]
    fn a_full_refund_removes_the_payment_and_its_plan() {
        let mut refunded = payment(2, "2026-02-01T00:00:00Z", 90, "quarter", 3);
        refunded.refunded_minor = refunded.amount_minor;
        let payments = [payment(1, "2026-01-01T00:00:00Z", 30, "month", 1), refunded];
        let got = entitlement(&payments, &[]);
        assert_eq!(got.paid_until, Some(t("2026-01-31T00:00:00Z")));
        assert_eq!(got.plan.as_deref(), Some("month"));
        assert_eq!(got.max_devices, 1);
    }

    #[test]
    fn a_partial_refund_keeps_the_payment() {
        let mut partly = payment(1, "2026-01-01T00:00:00Z", 30, "month", 1);
        partly.refunded_minor = 100;
        let got = entitlement(&[partly], &[]);
        assert_eq!(got.paid_until, Some(t("2026-01-31T00:00:00Z")));
    }

    fn grant(id: i64, kind: GrantKind, at: &str, days: i32, revoked: bool) -> GrantFact {
        GrantFact {
            id,
            kind,
            at: t(at),
            days,
            revoked,
        }
    }

    #[test]
    fn promo_and_referral_grants_add_time_but_no_plan_or_devices() {
        let payments = [payment(1, "2026-01-01T00:00:00Z", 30, "month", 2)];
        let grants = [
            grant(1, GrantKind::Promo, "2026-01-05T00:00:00Z", 7, false),
            grant(2, GrantKind::Referral, "2026-01-06T00:00:00Z", 3, false),
        ];
        let got = entitlement(&payments, &grants);
        assert_eq!(got.paid_until, Some(t("2026-02-10T00:00:00Z")));
        assert_eq!(got.plan.as_deref(), Some("month"));
        assert_eq!(got.max_devices, 2);
        let only_days = entitlement(&[], &grants[..1]);
        assert_eq!(only_days.paid_until, Some(t("2026-01-12T00:00:00Z")));
        assert_eq!(only_days.plan, None);
    }

    #[test]
    fn a_revoked_grant_no_longer_counts_whatever_its_kind() {
        for kind in [
            GrantKind::Trial,
            GrantKind::Admin,
            GrantKind::Promo,
            GrantKind::Referral,
        ] {
            let grants = [
                grant(1, kind, "2026-01-01T00:00:00Z", 10, true),
                grant(2, GrantKind::Admin, "2026-01-02T00:00:00Z", 1, false),
            ];
            assert_eq!(
                entitlement(&[], &grants).paid_until,
                Some(t("2026-01-03T00:00:00Z")),
                "{kind:?}"
            );
            assert_eq!(entitlement(&[], &grants[..1]).paid_until, None, "{kind:?}");
        }
    }

    #[test]
    fn a_revocation_does_not_touch_a_payment_with_the_same_number() {
        // Grant and payment ids live in different namespaces of the fold.
        let payments = [payment(7, "2026-01-01T00:00:00Z", 30, "month", 1)];
        let grants = [grant(
            7,
            GrantKind::Referral,
            "2026-01-01T00:00:00Z",
            5,
            true,
        )];
        assert_eq!(
            entitlement(&payments, &grants).paid_until,
            Some(t("2026-01-31T00:00:00Z"))
        );
    }

    #[test]
    fn the_latest_counted_payment_sets_the_traffic_quota_and_free_days_keep_it() {
        let mut month = payment(1, "2026-01-01T00:00:00Z", 30, "month", 1);
        month.traffic_quota = quota(50, 30);
        let mut unlimited = payment(2, "2026-02-01T00:00:00Z", 30, "unlimited", 1);
        assert_eq!(
            entitlement(&[month.clone()], &[]).traffic_quota,
            quota(50, 30)
        );
        // A later plan without a quota lifts it.
        assert_eq!(
            entitlement(&[month.clone(), unlimited.clone()], &[]).traffic_quota,
            None
        );
        // Refunded in full, the later payment no longer counts: the earlier quota is back.
        unlimited.refunded_minor = unlimited.amount_minor;
        assert_eq!(
            entitlement(&[month.clone(), unlimited], &[]).traffic_quota,
            quota(50, 30)
        );
        // Free days after the payment keep its quota; free days alone have none.
        let grants = [
            grant(1, GrantKind::Promo, "2026-01-10T00:00:00Z", 7, false),
            grant(2, GrantKind::Referral, "2026-01-11T00:00:00Z", 3, false),
            grant(3, GrantKind::Admin, "2026-01-12T00:00:00Z", 5, false),
        ];
        assert_eq!(entitlement(&[month], &grants).traffic_quota, quota(50, 30));
        let trial = [grant(4, GrantKind::Trial, "2026-01-01T00:00:00Z", 3, false)];
        assert_eq!(entitlement(&[], &trial).traffic_quota, None);
    }

    #[test]
    fn grant_kinds_round_trip_their_stored_names() {
        for kind in [
            GrantKind::Trial,
            GrantKind::Admin,
            GrantKind::Promo,
            GrantKind::Referral,
            GrantKind::Import,
        ] {
            assert_eq!(GrantKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(GrantKind::parse("gift"), None);
    }
}
