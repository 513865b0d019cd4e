//! The ledger's business activity (`Ledger::activity_since`, behind the api's business gauges)
//! against a real PostgreSQL (a fresh database per test from `WGSUB_TEST_DATABASE_URL`): new
//! users, first payments and renewals in a window, revenue net of refunds, and the latest
//! payment — counted from the ledger's own rows, so pending and canceled payments stay out;
//! payments in Telegram Stars count as payments and their money as `XTR`, apart from roubles.

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use uuid::Uuid;
use wgsub_ledger::stats::Activity;
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{Ledger, Revenue};

const HOUR: SignedDuration = SignedDuration::from_hours(1);

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn user(pool: &sqlx::PgPool, id: i64, created_at: Timestamp) {
    sqlx::query(
        "INSERT INTO users (telegram_id, first_name, created_at, last_seen_at) \
         VALUES ($1, 'T', $2, $2)",
    )
    .bind(id)
    .bind(created_at.to_sqlx())
    .execute(pool)
    .await
    .unwrap();
}

/// A YooKassa payment of `amount` RUB kopecks in `status`; applied (in the fold) when it
/// succeeded.
async fn payment(pool: &sqlx::PgPool, user: i64, amount: i64, status: &str, at: Timestamp) -> Uuid {
    let id = Uuid::new_v4();
    let succeeded = status == "succeeded";
    sqlx::query(
        "INSERT INTO payments (id, yookassa_id, user_id, plan, days, devices, amount_minor, \
            currency, status, idempotence_key, created_at, updated_at, succeeded_at) \
         VALUES ($1, $2, $3, 'month', 30, 1, $4, 'RUB', $5, $6, $7, $7, $8)",
    )
    .bind(id)
    .bind(format!("yk-{id}"))
    .bind(user)
    .bind(amount)
    .bind(status)
    .bind(Uuid::new_v4())
    .bind(at.to_sqlx())
    .bind(succeeded.then(|| at.to_sqlx()))
    .execute(pool)
    .await
    .unwrap();
    if succeeded {
        sqlx::query("INSERT INTO payment_applications (payment_id, applied_at) VALUES ($1, $2)")
            .bind(id)
            .bind(at.to_sqlx())
            .execute(pool)
            .await
            .unwrap();
    }
    id
}

/// A Telegram Stars payment of `stars` at `at`, refunded at `refunded_at` if given.
async fn star_payment(
    pool: &sqlx::PgPool,
    user: i64,
    stars: i64,
    at: Timestamp,
    refunded_at: Option<Timestamp>,
) {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO star_payments (id, telegram_payment_charge_id, user_id, plan, days, \
            devices, stars, invoice_payload, paid_at) \
         VALUES ($1, $2, $3, 'month', 30, 1, $4, 'payload', $5)",
    )
    .bind(id)
    .bind(format!("charge-{id}"))
    .bind(user)
    .bind(stars)
    .bind(at.to_sqlx())
    .execute(pool)
    .await
    .unwrap();
    if let Some(refunded_at) = refunded_at {
        sqlx::query(
            "INSERT INTO star_refunds (payment_id, refunded_at, refunded_by, reason) \
             VALUES ($1, $2, 1, 'test')",
        )
        .bind(id)
        .bind(refunded_at.to_sqlx())
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn activity_counts_new_users_first_payments_renewals_and_net_revenue_of_the_window() {
    let (pool, _) = fresh_database("activity").await;
    let ledger = Ledger::new(pool.clone(), false);
    let now = t("2026-12-07T12:00:00Z");
    let since = now - HOUR * 24;

    // An old customer who renews inside the window, a new customer who pays for the first time
    // inside it (and then refunds half), a new user who never pays, and payments that must
    // not count: pending, canceled, and one before the window.
    user(&pool, 1, since - HOUR * 24 * 60).await;
    payment(&pool, 1, 19_900, "succeeded", since - HOUR * 24 * 30).await;
    payment(&pool, 1, 19_900, "succeeded", now - HOUR * 2).await;
    user(&pool, 2, now - HOUR * 5).await;
    let first = payment(&pool, 2, 54_900, "succeeded", now - HOUR * 4).await;
    payment(&pool, 2, 19_900, "pending", now - HOUR).await;
    payment(&pool, 2, 19_900, "canceled", now - HOUR).await;
    user(&pool, 3, now - HOUR).await;
    sqlx::query(
        "INSERT INTO refunds (yookassa_id, payment_id, amount_minor, currency, refunded_at) \
         VALUES ('r-1', $1, 10000, 'RUB', $2)",
    )
    .bind(first)
    .bind((now - HOUR).to_sqlx())
    .execute(&pool)
    .await
    .unwrap();

    let activity = ledger.activity_since(since).await.unwrap();
    assert_eq!(
        activity,
        Activity {
            new_users: 2,
            first_payments: 1,
            renewals: 1,
            revenue: vec![Revenue {
                currency: "RUB".into(),
                amount_minor: 19_900 + 54_900 - 10_000,
            }],
            last_payment_at: Some(now - HOUR * 2),
        }
    );

    // A later window holds none of it, but still knows the latest payment.
    let later = ledger.activity_since(now).await.unwrap();
    assert_eq!(
        (later.new_users, later.first_payments, later.renewals),
        (0, 0, 0)
    );
    assert!(later.revenue.is_empty());
    assert_eq!(later.last_payment_at, Some(now - HOUR * 2));
}

#[tokio::test]
async fn an_empty_ledger_has_no_activity_and_no_last_payment() {
    let (pool, _) = fresh_database("activity_empty").await;
    let ledger = Ledger::new(pool, false);
    let activity = ledger
        .activity_since(t("2026-12-06T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        activity,
        Activity {
            new_users: 0,
            first_payments: 0,
            renewals: 0,
            revenue: vec![],
            last_payment_at: None,
        }
    );
}

#[tokio::test]
async fn stars_payments_count_as_payments_and_their_revenue_is_xtr_apart_from_roubles() {
    let (pool, _) = fresh_database("activity_stars").await;
    let ledger = Ledger::new(pool.clone(), false);
    let now = t("2026-12-07T12:00:00Z");
    let since = now - HOUR * 24;

    // A card customer from before the window who renews in Stars inside it; a new user whose
    // first payment is in Stars (refunded) and who then pays by card; a Stars payment before
    // the window that must not count.
    user(&pool, 1, since - HOUR * 24 * 60).await;
    payment(&pool, 1, 19_900, "succeeded", since - HOUR * 24 * 30).await;
    star_payment(&pool, 1, 150, now - HOUR * 3, None).await;
    user(&pool, 2, now - HOUR * 5).await;
    star_payment(&pool, 2, 400, now - HOUR * 4, Some(now - HOUR * 2)).await;
    payment(&pool, 2, 19_900, "succeeded", now - HOUR * 3).await;
    user(&pool, 3, since - HOUR * 24 * 90).await;
    star_payment(&pool, 3, 150, since - HOUR, None).await;
    star_payment(&pool, 3, 150, now - HOUR, None).await;

    let activity = ledger.activity_since(since).await.unwrap();
    assert_eq!(
        activity,
        Activity {
            new_users: 1,
            first_payments: 1,
            renewals: 3,
            revenue: vec![
                Revenue {
                    currency: "RUB".into(),
                    amount_minor: 19_900,
                },
                Revenue {
                    currency: "XTR".into(),
                    amount_minor: 150 + 400 - 400 + 150,
                },
            ],
            last_payment_at: Some(now - HOUR),
        }
    );

    // `/admin stats` shows the same: Stars on their own line item, today and in 30 days.
    let stats = ledger.stats(now).await.unwrap();
    let xtr = |revenue: &[Revenue]| {
        revenue
            .iter()
            .find(|r| r.currency == "XTR")
            .map(|r| r.amount_minor)
    };
    let rub = |revenue: &[Revenue]| {
        revenue
            .iter()
            .find(|r| r.currency == "RUB")
            .map(|r| r.amount_minor)
    };
    assert_eq!(xtr(&stats.revenue_today), Some(150 + 150));
    assert_eq!(rub(&stats.revenue_today), Some(19_900));
    assert_eq!(xtr(&stats.revenue_30_days), Some(150 + 150 + 150));
    assert_eq!(rub(&stats.revenue_30_days), Some(19_900));
}
