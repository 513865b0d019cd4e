//! Promo codes and referral rewards in the ledger against a real PostgreSQL (a fresh database
//! per test from `WGSUB_TEST_DATABASE_URL`), YooKassa faked with wiremock: redemption once per
//! user and at most `max_uses` times under concurrency, refusals that credit nothing, a
//! discount sent to YooKassa and re-checked when the payment is applied, and referral rewards
//! once per referee, never for oneself and taken back with a refunded first payment — whether
//! that payment was made through YooKassa or in Telegram Stars.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use uuid::Uuid;
use wgsub_crds::plans::{LocalizedText, Plan};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::yookassa::{self, Amount, METADATA_PAYMENT_ID, METADATA_USER_ID};
use wgsub_ledger::{
    ApplyError, ApplyOutcome, CodeSyntaxError, Ledger, NewPromoCode, NotificationEvent,
    PaymentOrder, PaymentRecord, PromoBenefit, RedeemError, RedeemRefusal, Redeemed,
    ReferralSummary, RefundOutcome, StarApplyOutcome, StarPurchase, StarRefundOutcome,
    TelegramUser, YooKassa, YooKassaConfig,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use zeroize::Zeroizing;

const DAY: SignedDuration = SignedDuration::from_hours(24);
const NOW: &str = "2026-12-07T10:00:00Z";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    t(NOW)
}

fn tg(id: i64) -> TelegramUser {
    TelegramUser {
        id,
        username: None,
        first_name: format!("user{id}"),
        last_name: None,
        language_code: Some("en".into()),
    }
}

fn plan() -> Plan {
    Plan {
        id: "month".into(),
        title: LocalizedText {
            ru: "Месяц".into(),
            en: "Month".into(),
        },
        days: 30,
        price_minor: 19_900,
        currency: "RUB".into(),
        devices: 1,
        price_stars: None,
        traffic_gib: None,
    }
}

async fn ledger(label: &str, users: &[i64]) -> Ledger {
    let (pool, _) = fresh_database(label).await;
    let ledger = Ledger::new(pool, false).with_referral_days(5);
    for id in users {
        ledger.upsert_user(&tg(*id), now()).await.unwrap();
    }
    ledger
}

async fn create_code(ledger: &Ledger, code: &str, benefit: PromoBenefit, max_uses: u32) {
    ledger
        .create_promo_code(
            &NewPromoCode {
                code: code.into(),
                benefit,
                expires_at: now() + DAY * 30,
                max_uses,
                admin_id: 1,
            },
            now(),
        )
        .await
        .unwrap();
}

async fn paid_until(ledger: &Ledger, user: i64) -> Option<Timestamp> {
    ledger
        .user(user)
        .await
        .unwrap()
        .unwrap()
        .entitlement
        .paid_until
}

struct FakeYooKassa {
    server: MockServer,
}

impl FakeYooKassa {
    /// `POST /v3/payments` answers a pending payment echoing the request's amount and
    /// metadata, with a fresh YooKassa id.
    async fn start() -> Self {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/payments"))
            .respond_with(|request: &Request| {
                let body: serde_json::Value = request.body_json().unwrap();
                let id = Uuid::new_v4().to_string();
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id,
                    "status": "pending",
                    "paid": false,
                    "amount": body["amount"],
                    "metadata": body["metadata"],
                    "confirmation": {"type": "redirect", "confirmation_url": format!("https://yoomoney.example/checkout?orderId={id}")},
                }))
            })
            .mount(&server)
            .await;
        Self { server }
    }

    fn client(&self) -> YooKassa {
        YooKassa::new(YooKassaConfig {
            api_base: format!("{}/v3", self.server.uri()),
            shop_id: "123456".into(),
            secret_key: Zeroizing::new(format!("test_{}", Uuid::new_v4().simple())),
            timeout: Duration::from_secs(2),
            max_attempts: 2,
            retry_backoff: Duration::from_millis(10),
        })
        .unwrap()
    }

    /// The `amount.value` of every payment YooKassa was asked to create, in order.
    async fn requested_amounts(&self) -> Vec<String> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|request| {
                let body: serde_json::Value = request.body_json().unwrap();
                body["amount"]["value"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

async fn create_payment(ledger: &Ledger, yk: &FakeYooKassa, user: i64) -> PaymentRecord {
    let plan = plan();
    let created = ledger
        .create_payment(
            &yk.client(),
            PaymentOrder {
                user_id: user,
                plan: &plan,
                return_url: "https://t.me/wgsub_bot",
                receipt: None,
            },
            now(),
        )
        .await
        .unwrap();
    ledger.payment(created.id).await.unwrap().unwrap()
}

/// What YooKassa reports for our payment once paid with `value`.
fn succeeded(record: &PaymentRecord, value: &str) -> yookassa::Payment {
    yookassa::Payment {
        id: record.yookassa_id.clone().unwrap(),
        status: "succeeded".into(),
        amount: Amount {
            value: value.into(),
            currency: "RUB".into(),
        },
        paid: true,
        confirmation: None,
        metadata: [
            (METADATA_PAYMENT_ID.to_owned(), record.id.to_string()),
            (METADATA_USER_ID.to_owned(), record.user_id.to_string()),
        ]
        .into(),
        captured_at: Some(now()),
        created_at: None,
    }
}

async fn pay(ledger: &Ledger, yk: &FakeYooKassa, user: i64) -> PaymentRecord {
    let record = create_payment(ledger, yk, user).await;
    let outcome = ledger
        .apply_payment(record.id, &succeeded(&record, "199.00"), now())
        .await
        .unwrap();
    assert!(
        matches!(outcome, ApplyOutcome::Applied { .. }),
        "{outcome:?}"
    );
    record
}

async fn refer(ledger: &Ledger, referee: i64, referrer: i64) {
    sqlx::query(
        "INSERT INTO bot_referrals (user_id, payload, referrer_id, recorded_at) \
         VALUES ($1, $2, $3, now())",
    )
    .bind(referee)
    .bind(format!("ref_{referrer}"))
    .bind(referrer)
    .execute(ledger.pool())
    .await
    .unwrap();
}

fn refund_of(record: &PaymentRecord, value: &str) -> yookassa::Refund {
    yookassa::Refund {
        id: Uuid::new_v4().to_string(),
        payment_id: record.yookassa_id.clone().unwrap(),
        status: "succeeded".into(),
        amount: Amount {
            value: value.into(),
            currency: "RUB".into(),
        },
        created_at: Some(now() + SignedDuration::from_hours(1)),
    }
}

#[tokio::test]
async fn a_promo_code_used_twice_by_one_user_counts_once_even_concurrently() {
    let ledger = ledger("promo_twice", &[7]).await;
    create_code(&ledger, "week", PromoBenefit::Days(7), 100).await;
    let attempts =
        futures::future::join_all((0..10).map(|_| ledger.redeem_promo_code(7, " Week ", now())))
            .await;
    let granted = attempts
        .iter()
        .filter(|outcome| matches!(outcome, Ok(Redeemed::Days { days: 7, .. })))
        .count();
    assert_eq!(granted, 1, "{attempts:?}");
    for outcome in &attempts {
        assert!(
            matches!(
                outcome,
                Ok(Redeemed::Days { .. })
                    | Err(RedeemError::Refused(RedeemRefusal::AlreadyRedeemed))
            ),
            "{outcome:?}"
        );
    }
    assert!(matches!(
        ledger.redeem_promo_code(7, "WEEK", now()).await,
        Err(RedeemError::Refused(RedeemRefusal::AlreadyRedeemed))
    ));
    assert_eq!(paid_until(&ledger, 7).await, Some(now() + DAY * 7));
    assert_eq!(ledger.promo_code("week").await.unwrap().unwrap().uses, 1);
}

#[tokio::test]
async fn max_uses_hold_when_many_users_redeem_at_once() {
    let users: Vec<i64> = (100..112).collect();
    let ledger = ledger("promo_max_uses", &users).await;
    create_code(&ledger, "FIRST3", PromoBenefit::Days(2), 3).await;
    let attempts = futures::future::join_all(
        users
            .iter()
            .map(|user| ledger.redeem_promo_code(*user, "first3", now())),
    )
    .await;
    let granted = attempts.iter().filter(|outcome| outcome.is_ok()).count();
    let used_up = attempts
        .iter()
        .filter(|outcome| matches!(outcome, Err(RedeemError::Refused(RedeemRefusal::UsedUp))))
        .count();
    assert_eq!((granted, used_up), (3, 9), "{attempts:?}");
    let code = ledger.promo_code("FIRST3").await.unwrap().unwrap();
    assert_eq!((code.uses, code.max_uses), (3, 3));
    let mut credited = 0;
    for user in &users {
        if paid_until(&ledger, *user).await.is_some() {
            credited += 1;
        }
    }
    assert_eq!(credited, 3);
}

#[tokio::test]
async fn expired_disabled_unknown_and_malformed_codes_credit_nothing() {
    let ledger = ledger("promo_refused", &[7]).await;
    create_code(&ledger, "SOON", PromoBenefit::Days(7), 10).await;
    create_code(&ledger, "OFF", PromoBenefit::PercentOff(10), 10).await;
    assert!(ledger.disable_promo_code("off", 1, now()).await.unwrap());
    assert!(!ledger.disable_promo_code("off", 1, now()).await.unwrap());
    assert!(!ledger.disable_promo_code("nope", 1, now()).await.unwrap());
    let later = now() + DAY * 31;
    assert!(matches!(
        ledger.redeem_promo_code(7, "SOON", later).await,
        Err(RedeemError::Refused(RedeemRefusal::Expired))
    ));
    assert!(matches!(
        ledger.redeem_promo_code(7, "OFF", now()).await,
        Err(RedeemError::Refused(RedeemRefusal::Disabled))
    ));
    assert!(matches!(
        ledger.redeem_promo_code(7, "NOSUCH", now()).await,
        Err(RedeemError::Refused(RedeemRefusal::Unknown))
    ));
    assert!(matches!(
        ledger.redeem_promo_code(7, "50% off!", now()).await,
        Err(RedeemError::Syntax(CodeSyntaxError::Characters))
    ));
    assert!(matches!(
        ledger.redeem_promo_code(7, "", now()).await,
        Err(RedeemError::Syntax(CodeSyntaxError::Empty))
    ));
    assert_eq!(paid_until(&ledger, 7).await, None);
    assert_eq!(ledger.waiting_discount(7).await.unwrap(), None);
    let codes = ledger.promo_codes(10).await.unwrap();
    assert_eq!(codes.len(), 2);
    assert!(codes.iter().all(|code| code.uses == 0));
}

#[tokio::test]
async fn codes_are_created_once_and_checked() {
    let ledger = ledger("promo_create", &[]).await;
    create_code(&ledger, "dup", PromoBenefit::Days(1), 1).await;
    let again = NewPromoCode {
        code: "DUP".into(),
        benefit: PromoBenefit::Days(1),
        expires_at: now() + DAY,
        max_uses: 1,
        admin_id: 1,
    };
    assert!(matches!(
        ledger.create_promo_code(&again, now()).await,
        Err(wgsub_ledger::CreateCodeError::Exists(code)) if code == "DUP"
    ));
    for bad in [
        NewPromoCode {
            code: "NEW1".into(),
            benefit: PromoBenefit::PercentOff(100),
            ..again.clone()
        },
        NewPromoCode {
            code: "NEW2".into(),
            benefit: PromoBenefit::Days(0),
            ..again.clone()
        },
        NewPromoCode {
            code: "NEW3".into(),
            max_uses: 0,
            ..again.clone()
        },
        NewPromoCode {
            code: "NEW4".into(),
            expires_at: now(),
            ..again.clone()
        },
    ] {
        assert!(
            matches!(
                ledger.create_promo_code(&bad, now()).await,
                Err(wgsub_ledger::CreateCodeError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(ledger.promo_codes(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_discount_is_sent_to_yookassa_and_rechecked_when_the_payment_is_applied() {
    let ledger = ledger("promo_discount", &[7]).await;
    let yk = FakeYooKassa::start().await;
    create_code(&ledger, "TWENTY", PromoBenefit::PercentOff(20), 10).await;
    assert_eq!(
        ledger.redeem_promo_code(7, "twenty", now()).await.unwrap(),
        Redeemed::Discount {
            code: "TWENTY".into(),
            percent_off: 20
        }
    );
    // A second discount cannot wait beside it; the days of the first code did not change.
    create_code(&ledger, "TEN", PromoBenefit::PercentOff(10), 10).await;
    assert!(matches!(
        ledger.redeem_promo_code(7, "TEN", now()).await,
        Err(RedeemError::Refused(RedeemRefusal::DiscountWaiting))
    ));
    assert_eq!(paid_until(&ledger, 7).await, None);

    let record = create_payment(&ledger, &yk, 7).await;
    assert_eq!(record.amount_minor, 15_920);
    assert_eq!(yk.requested_amounts().await, ["159.20"]);
    // A payment YooKassa reports at another amount (the full price, a tampered one) is refused.
    for tampered in ["199.00", "1.00"] {
        assert!(matches!(
            ledger
                .apply_payment(record.id, &succeeded(&record, tampered), now())
                .await,
            Err(ApplyError::Mismatch(_))
        ));
    }
    assert_eq!(paid_until(&ledger, 7).await, None);
    assert!(ledger.waiting_discount(7).await.unwrap().is_some());

    // Two payments priced while the discount waits: the first applied consumes it, the second
    // (charged the discounted price for a discount no longer there) is not credited.
    let twin = create_payment(&ledger, &yk, 7).await;
    assert_eq!(twin.amount_minor, 15_920);
    let applied = ledger
        .apply_payment(record.id, &succeeded(&record, "159.20"), now())
        .await
        .unwrap();
    assert!(matches!(applied, ApplyOutcome::Applied { .. }));
    assert_eq!(ledger.waiting_discount(7).await.unwrap(), None);
    assert!(matches!(
        ledger
            .apply_payment(twin.id, &succeeded(&twin, "159.20"), now())
            .await,
        Err(ApplyError::Mismatch(_))
    ));
    assert_eq!(paid_until(&ledger, 7).await, Some(now() + DAY * 30));
    // Redelivery of the applied one changes nothing.
    assert!(matches!(
        ledger
            .apply_payment(record.id, &succeeded(&record, "159.20"), now())
            .await
            .unwrap(),
        ApplyOutcome::AlreadyApplied { .. }
    ));

    // The next payment is at the full price again.
    let next = create_payment(&ledger, &yk, 7).await;
    assert_eq!(next.amount_minor, 19_900);
    assert_eq!(yk.requested_amounts().await, ["159.20", "159.20", "199.00"]);
    // Now another discount may wait.
    assert!(ledger.redeem_promo_code(7, "TEN", now()).await.is_ok());
}

#[tokio::test]
async fn a_referrer_is_rewarded_once_per_referee_and_told() {
    let ledger = ledger("referral_once", &[10, 20, 21]).await;
    let yk = FakeYooKassa::start().await;
    refer(&ledger, 20, 10).await;
    refer(&ledger, 21, 10).await;
    assert_eq!(
        ledger.referral_summary(10).await.unwrap(),
        ReferralSummary {
            joined: 2,
            rewarded: 0,
            days_earned: 0
        }
    );
    // The referee's first payment, delivered ten times at once.
    let record = create_payment(&ledger, &yk, 20).await;
    let fetched = succeeded(&record, "199.00");
    let outcomes = futures::future::join_all(
        (0..10).map(|_| ledger.apply_payment(record.id, &fetched, now())),
    )
    .await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Ok(ApplyOutcome::Applied { .. })))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 5));
    // Their second payment earns nothing more.
    pay(&ledger, &yk, 20).await;
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 5));
    // Another referee's first payment earns another reward.
    pay(&ledger, &yk, 21).await;
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 10));
    assert_eq!(
        ledger.referral_summary(10).await.unwrap(),
        ReferralSummary {
            joined: 2,
            rewarded: 2,
            days_earned: 10
        }
    );
    let told: Vec<_> = ledger
        .unsent_notifications(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.user_id == 10)
        .map(|n| n.event)
        .collect();
    assert_eq!(
        told,
        [
            NotificationEvent::ReferralRewarded {
                days: 5,
                paid_until: Some(now() + DAY * 5)
            },
            NotificationEvent::ReferralRewarded {
                days: 5,
                paid_until: Some(now() + DAY * 10)
            }
        ]
    );
    // The unique constraint holds even against a direct second insert.
    let dup = sqlx::query(
        "INSERT INTO referral_rewards (referee_id, referrer_id, payment_id, grant_id, days, \
         rewarded_at) SELECT referee_id, referrer_id, payment_id, grant_id, days, rewarded_at \
         FROM referral_rewards WHERE referee_id = 20",
    )
    .execute(ledger.pool())
    .await;
    assert!(dup.is_err());
}

#[tokio::test]
async fn no_reward_for_self_referral_an_unknown_referrer_or_when_rewards_are_off() {
    let ledger = ledger("referral_none", &[30, 31, 32]).await;
    let yk = FakeYooKassa::start().await;
    refer(&ledger, 30, 30).await;
    refer(&ledger, 31, 999).await;
    pay(&ledger, &yk, 30).await;
    pay(&ledger, &yk, 31).await;
    assert_eq!(paid_until(&ledger, 30).await, Some(now() + DAY * 30));
    assert_eq!(
        ledger.referral_summary(30).await.unwrap(),
        ReferralSummary::default()
    );
    let off = Ledger::new(ledger.pool().clone(), false);
    refer(&off, 32, 30).await;
    pay(&off, &yk, 32).await;
    assert_eq!(paid_until(&ledger, 30).await, Some(now() + DAY * 30));
    let rewards: i64 = sqlx::query_scalar("SELECT count(*) FROM referral_rewards")
        .fetch_one(ledger.pool())
        .await
        .unwrap();
    assert_eq!(rewards, 0);
}

#[tokio::test]
async fn a_refunded_first_payment_takes_the_reward_back_and_no_later_payment_earns_it() {
    let ledger = ledger("referral_refund", &[10, 20]).await;
    let yk = FakeYooKassa::start().await;
    refer(&ledger, 20, 10).await;
    ledger
        .grant_trial(10, 3, now() - DAY)
        .await
        .unwrap()
        .unwrap();
    let first = pay(&ledger, &yk, 20).await;
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 7));
    // A partial refund keeps the payment, and the reward.
    let partial = ledger
        .record_refund(&refund_of(&first, "50.00"), now())
        .await
        .unwrap();
    assert!(matches!(partial, RefundOutcome::Recorded { .. }));
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 7));
    // The rest refunded: the payment is out, and so is the reward.
    let rest = ledger
        .record_refund(&refund_of(&first, "149.00"), now())
        .await
        .unwrap();
    assert!(matches!(rest, RefundOutcome::Recorded { .. }));
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 2));
    assert_eq!(paid_until(&ledger, 20).await, None);
    assert_eq!(
        ledger.referral_summary(10).await.unwrap(),
        ReferralSummary {
            joined: 1,
            rewarded: 0,
            days_earned: 0
        }
    );
    let told: Vec<_> = ledger
        .unsent_notifications(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.user_id == 10)
        .map(|n| n.event)
        .collect();
    assert_eq!(
        told.last(),
        Some(&NotificationEvent::ReferralRevoked {
            days: 5,
            paid_until: Some(now() + DAY * 2)
        })
    );
    // The referee pays again: it is not their first payment, no reward.
    pay(&ledger, &yk, 20).await;
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 2));
    // The grant stays for the audit trail, revoked.
    let (kind, revoked): (String, bool) = sqlx::query_as(
        "SELECT kind, revoked_at IS NOT NULL FROM grants WHERE user_id = 10 AND kind = 'referral'",
    )
    .fetch_one(ledger.pool())
    .await
    .unwrap();
    assert_eq!((kind.as_str(), revoked), ("referral", true));
}

fn stars(user_id: i64, charge_id: &str) -> StarPurchase {
    StarPurchase {
        telegram_payment_charge_id: charge_id.into(),
        user_id,
        plan: "month".into(),
        days: 30,
        devices: 1,
        traffic_quota: None,
        stars: 150,
        invoice_payload: format!("payload of {charge_id}"),
        paid_at: now(),
    }
}

async fn pay_stars(ledger: &Ledger, user_id: i64, charge_id: &str) {
    let outcome = ledger
        .apply_star_payment(&stars(user_id, charge_id), now())
        .await
        .unwrap();
    assert!(
        matches!(outcome, StarApplyOutcome::Applied { .. }),
        "{outcome:?}"
    );
}

async fn told(ledger: &Ledger, user_id: i64) -> Vec<NotificationEvent> {
    ledger
        .unsent_notifications(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.user_id == user_id)
        .map(|n| n.event)
        .collect()
}

#[tokio::test]
async fn a_first_payment_in_stars_rewards_the_referrer_once_even_delivered_concurrently() {
    let ledger = ledger("referral_stars_once", &[10, 20]).await;
    let yk = FakeYooKassa::start().await;
    refer(&ledger, 20, 10).await;
    // The referee's first payment in Stars, its successful_payment delivered ten times at once.
    let purchase = stars(20, "charge-1");
    let outcomes =
        futures::future::join_all((0..10).map(|_| ledger.apply_star_payment(&purchase, now())))
            .await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Ok(StarApplyOutcome::Applied { .. })))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 5));
    // Later payments, in Stars or through YooKassa, are not first payments.
    pay_stars(&ledger, 20, "charge-2").await;
    pay(&ledger, &yk, 20).await;
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 5));
    assert_eq!(
        ledger.referral_summary(10).await.unwrap(),
        ReferralSummary {
            joined: 1,
            rewarded: 1,
            days_earned: 5
        }
    );
    assert_eq!(
        told(&ledger, 10).await,
        [NotificationEvent::ReferralRewarded {
            days: 5,
            paid_until: Some(now() + DAY * 5)
        }]
    );
    // The reward points at the Stars payment that earned it.
    let (yookassa, charge): (Option<Uuid>, Option<String>) = sqlx::query_as(
        "SELECT r.payment_id, s.telegram_payment_charge_id FROM referral_rewards r \
         LEFT JOIN star_payments s ON s.id = r.star_payment_id WHERE r.referee_id = 20",
    )
    .fetch_one(ledger.pool())
    .await
    .unwrap();
    assert_eq!((yookassa, charge.as_deref()), (None, Some("charge-1")));
}

#[tokio::test]
async fn no_stars_reward_for_self_referral_an_unknown_referrer_or_when_rewards_are_off() {
    let ledger = ledger("referral_stars_none", &[30, 31, 32]).await;
    refer(&ledger, 30, 30).await;
    refer(&ledger, 31, 999).await;
    pay_stars(&ledger, 30, "charge-30").await;
    pay_stars(&ledger, 31, "charge-31").await;
    assert_eq!(paid_until(&ledger, 30).await, Some(now() + DAY * 30));
    let off = Ledger::new(ledger.pool().clone(), false);
    refer(&off, 32, 30).await;
    let outcome = off
        .apply_star_payment(&stars(32, "charge-32"), now())
        .await
        .unwrap();
    assert!(matches!(outcome, StarApplyOutcome::Applied { .. }));
    assert_eq!(paid_until(&ledger, 30).await, Some(now() + DAY * 30));
    let rewards: i64 = sqlx::query_scalar("SELECT count(*) FROM referral_rewards")
        .fetch_one(ledger.pool())
        .await
        .unwrap();
    assert_eq!(rewards, 0);
}

#[tokio::test]
async fn a_refunded_first_stars_payment_takes_the_reward_back_once_and_nothing_earns_it_again() {
    let ledger = ledger("referral_stars_refund", &[10, 20]).await;
    let yk = FakeYooKassa::start().await;
    refer(&ledger, 20, 10).await;
    ledger
        .grant_trial(10, 3, now() - DAY)
        .await
        .unwrap()
        .unwrap();
    pay_stars(&ledger, 20, "charge-1").await;
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 7));
    // Refunded twice at once (two admins, or a retried command): revoked once.
    let refund = || ledger.record_star_refund("charge-1", 1, "asked for it", now());
    let (a, b) = futures::future::join(refund(), refund()).await;
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, StarRefundOutcome::AlreadyRefunded));
    assert!(
        matches!(
            outcomes,
            [
                StarRefundOutcome::Recorded { .. },
                StarRefundOutcome::AlreadyRefunded
            ]
        ),
        "{outcomes:?}"
    );
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 2));
    assert_eq!(paid_until(&ledger, 20).await, None);
    assert_eq!(
        ledger.referral_summary(10).await.unwrap(),
        ReferralSummary {
            joined: 1,
            rewarded: 0,
            days_earned: 0
        }
    );
    assert_eq!(
        told(&ledger, 10).await,
        [
            NotificationEvent::ReferralRewarded {
                days: 5,
                paid_until: Some(now() + DAY * 7)
            },
            NotificationEvent::ReferralRevoked {
                days: 5,
                paid_until: Some(now() + DAY * 2)
            }
        ]
    );
    // The referee pays again, in Stars and by card: neither is their first payment.
    pay_stars(&ledger, 20, "charge-2").await;
    pay(&ledger, &yk, 20).await;
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 2));
    let revoked: bool = sqlx::query_scalar(
        "SELECT revoked_at IS NOT NULL FROM grants WHERE user_id = 10 AND kind = 'referral'",
    )
    .fetch_one(ledger.pool())
    .await
    .unwrap();
    assert!(revoked);
}

#[tokio::test]
async fn refunding_a_later_stars_payment_keeps_the_reward_of_a_first_card_payment() {
    let ledger = ledger("referral_stars_later_refund", &[10, 20]).await;
    let yk = FakeYooKassa::start().await;
    refer(&ledger, 20, 10).await;
    pay(&ledger, &yk, 20).await;
    pay_stars(&ledger, 20, "charge-1").await;
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 5));
    let outcome = ledger
        .record_star_refund("charge-1", 1, "asked for it", now())
        .await
        .unwrap();
    assert!(matches!(outcome, StarRefundOutcome::Recorded { .. }));
    assert_eq!(paid_until(&ledger, 10).await, Some(now() + DAY * 5));
    assert_eq!(ledger.referral_summary(10).await.unwrap().rewarded, 1);
}
