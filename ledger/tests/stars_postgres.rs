//! Telegram Stars payments in the ledger against a real PostgreSQL (a fresh database per test
//! from `WGSUB_TEST_DATABASE_URL`): a payment applied once per `telegram_payment_charge_id`
//! however often and however concurrently it is delivered, folded with YooKassa-style time, and
//! a refund that removes its time exactly once, audited and told to the user.

use jiff::{SignedDuration, Timestamp};
use wgsub_crds::plans::PlanCatalogue;
use wgsub_crds::resources::TrafficQuota;
use wgsub_ledger::stars::{
    InvoiceKey, InvoicePayload, PaymentFacts, STARS_CURRENCY, check_payment,
};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{
    AdminGrant, Ledger, NotificationEvent, StarApplyOutcome, StarPurchase, StarRefundOutcome,
    TelegramUser,
};

const DAY: SignedDuration = SignedDuration::from_hours(24);

const PLANS: &str = "plans:
  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 2, priceStars: 150}
";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn ledger_with_user(label: &str, id: i64) -> Ledger {
    let (pool, _) = fresh_database(label).await;
    let ledger = Ledger::new(pool, false);
    let user = TelegramUser {
        id,
        username: Some(format!("user_{id}")),
        first_name: "Anna".into(),
        last_name: None,
        language_code: Some("en".into()),
    };
    ledger
        .upsert_user(&user, t("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    ledger
}

/// A purchase as the bot builds it from a checked `successful_payment`.
fn purchase(user_id: i64, charge_id: &str, paid_at: &str) -> StarPurchase {
    let plans = PlanCatalogue::from_yaml_str(PLANS).unwrap();
    let key = InvoiceKey::from_bot_token(&format!("1:{}", uuid::Uuid::new_v4().simple()));
    let text = InvoicePayload {
        user_id,
        plan: "month".into(),
        stars: 150,
    }
    .encode(&key);
    let facts = PaymentFacts {
        payer_id: user_id,
        currency: STARS_CURRENCY,
        total_amount: 150,
        invoice_payload: &text,
    };
    let (payload, plan) = check_payment(&plans, &key, facts).unwrap();
    StarPurchase::new(charge_id, &payload, plan, &text, t(paid_at))
}

async fn notifications(ledger: &Ledger) -> Vec<NotificationEvent> {
    ledger
        .unsent_notifications(100)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.event)
        .collect()
}

#[tokio::test]
async fn a_stars_payment_delivered_twice_and_concurrently_is_applied_once() {
    let ledger = ledger_with_user("stars_once", 501).await;
    let bought = purchase(501, "stxCharge-1", "2026-02-01T00:00:00Z");
    let now = t("2026-02-01T00:00:05Z");
    let runs = (0..8).map(|_| ledger.apply_star_payment(&bought, now));
    let outcomes = futures::future::join_all(runs).await;
    let applied: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(StarApplyOutcome::Applied { .. })))
        .collect();
    assert_eq!(applied.len(), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            Ok(StarApplyOutcome::Applied { .. }
                | StarApplyOutcome::AlreadyApplied { user_id: 501 })
        )),
        "{outcomes:?}"
    );
    // Once more, later (the webhook after polling saw it).
    assert_eq!(
        ledger.apply_star_payment(&bought, now + DAY).await.unwrap(),
        StarApplyOutcome::AlreadyApplied { user_id: 501 }
    );
    let user = ledger.user(501).await.unwrap().unwrap();
    assert_eq!(
        user.entitlement.paid_until,
        Some(t("2026-03-03T00:00:00Z")),
        "30 days from the payment"
    );
    assert_eq!(user.entitlement.plan.as_deref(), Some("month"));
    assert_eq!(user.entitlement.max_devices, 2);
    let told = notifications(&ledger).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        matches!(
            &told[0],
            NotificationEvent::PaymentSucceeded { currency, amount_minor: 150, first_purchase: true, .. }
                if currency == "XTR"
        ),
        "the user's first purchase, in Stars: its notice leads to the guide"
    );
    let record = ledger.star_payment("stxCharge-1").await.unwrap().unwrap();
    assert_eq!((record.user_id, record.stars), (501, 150));
    assert_eq!(record.refunded_at, None);
    assert_eq!(ledger.star_payment("stxOther").await.unwrap(), None);
}

#[tokio::test]
async fn a_refund_removes_the_payments_time_once_and_is_audited() {
    let ledger = ledger_with_user("stars_refund", 502).await;
    let now = t("2026-02-01T00:00:00Z");
    ledger
        .admin_grant(
            &AdminGrant {
                user_id: 502,
                days: 10,
                admin_id: 900,
                reason: "goodwill".into(),
            },
            now,
        )
        .await
        .unwrap();
    ledger
        .apply_star_payment(&purchase(502, "stxCharge-2", "2026-02-01T00:00:00Z"), now)
        .await
        .unwrap();
    assert_eq!(
        ledger
            .user(502)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until,
        Some(t("2026-03-13T00:00:00Z")),
        "10 granted days, then 30 paid"
    );

    let later = t("2026-02-05T00:00:00Z");
    let refunds =
        (0..4).map(|_| ledger.record_star_refund("stxCharge-2", 900, "asked for it", later));
    let outcomes = futures::future::join_all(refunds).await;
    let recorded: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Ok(StarRefundOutcome::Recorded {
                user_id,
                entitlement,
            }) => Some((*user_id, entitlement.paid_until)),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded,
        [(502, Some(t("2026-02-11T00:00:00Z")))],
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            Ok(StarRefundOutcome::Recorded { .. } | StarRefundOutcome::AlreadyRefunded)
        )),
        "{outcomes:?}"
    );
    let user = ledger.user(502).await.unwrap().unwrap();
    assert_eq!(user.entitlement.paid_until, Some(t("2026-02-11T00:00:00Z")));
    assert_eq!(
        user.entitlement.plan, None,
        "the refunded plan no longer counts"
    );
    assert_eq!(
        ledger
            .star_payment("stxCharge-2")
            .await
            .unwrap()
            .unwrap()
            .refunded_at,
        Some(later)
    );
    assert_eq!(
        ledger
            .record_star_refund("stxUnknown", 900, "typo", later)
            .await
            .unwrap(),
        StarRefundOutcome::UnknownPayment
    );
    let actions = ledger.admin_actions(502).await.unwrap();
    let refunds: Vec<_> = actions
        .iter()
        .filter(|a| a.action == "star_refund")
        .collect();
    assert_eq!(refunds.len(), 1, "{actions:?}");
    assert_eq!(refunds[0].reason, "asked for it");
    assert_eq!(
        refunds[0].details["telegram_payment_charge_id"],
        "stxCharge-2"
    );
    let told = notifications(&ledger).await;
    assert!(
        matches!(
            told.last(),
            Some(NotificationEvent::RefundRecorded { currency, paid_until, .. })
                if currency == "XTR" && *paid_until == Some(t("2026-02-11T00:00:00Z"))
        ),
        "{told:?}"
    );
    assert_eq!(
        told.iter()
            .filter(|e| matches!(e, NotificationEvent::RefundRecorded { .. }))
            .count(),
        1
    );
}

#[tokio::test]
async fn a_payment_of_a_user_missing_from_the_ledger_is_not_recorded() {
    let ledger = ledger_with_user("stars_unknown_user", 503).await;
    let error = ledger
        .apply_star_payment(
            &purchase(504, "stxCharge-3", "2026-02-01T00:00:00Z"),
            t("2026-02-01T00:00:00Z"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, wgsub_ledger::LedgerError::UnknownUser(504)),
        "{error}"
    );
    assert_eq!(ledger.star_payment("stxCharge-3").await.unwrap(), None);
}

#[tokio::test]
async fn a_stars_payment_keeps_the_traffic_quota_of_its_plan() {
    let ledger = ledger_with_user("stars_quota", 503).await;
    let plans = PlanCatalogue::from_yaml_str(
        "plans:
  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 2, priceStars: 150, trafficGib: 25}
",
    )
    .unwrap();
    let key = InvoiceKey::from_bot_token(&format!("1:{}", uuid::Uuid::new_v4().simple()));
    let text = InvoicePayload {
        user_id: 503,
        plan: "month".into(),
        stars: 150,
    }
    .encode(&key);
    let facts = PaymentFacts {
        payer_id: 503,
        currency: STARS_CURRENCY,
        total_amount: 150,
        invoice_payload: &text,
    };
    let (payload, plan) = check_payment(&plans, &key, facts).unwrap();
    let paid_at = t("2026-02-01T00:00:00Z");
    let bought = StarPurchase::new("stxQuota-1", &payload, plan, &text, paid_at);
    ledger.apply_star_payment(&bought, paid_at).await.unwrap();
    let want = Some(TrafficQuota {
        bytes: 25 << 30,
        period_days: 30,
    });
    let user = ledger.user(503).await.unwrap().unwrap();
    assert_eq!(user.entitlement.traffic_quota, want);
    let record = ledger.star_payment("stxQuota-1").await.unwrap().unwrap();
    assert_eq!(record.traffic_quota, want);
}
