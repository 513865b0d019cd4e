//! The ledger against a real PostgreSQL (a fresh database per test from
//! `WGSUB_TEST_DATABASE_URL`), YooKassa faked with wiremock. Its writes into Kubernetes are
//! tested on the real API server in `subscriptions_kubernetes.rs`.

#[path = "support/pgbouncer.rs"]
mod pgbouncer;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use uuid::Uuid;
use wgsub_crds::plans::{LocalizedText, Plan};
use wgsub_crds::resources::TrafficQuota;
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::yookassa::{self, Amount, METADATA_PAYMENT_ID, METADATA_USER_ID};
use wgsub_ledger::{
    AdminGrant, ApplyError, ApplyOutcome, DbConfig, Ledger, NotificationEvent, PaymentOrder,
    ReceiptCustomer, RefundOutcome, TelegramUser, YooKassa, YooKassaConfig, db,
};
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use zeroize::Zeroizing;

use crate::pgbouncer::PgBouncer;

const DAY: SignedDuration = SignedDuration::from_hours(24);

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn tg(id: i64, username: &str) -> TelegramUser {
    TelegramUser {
        id,
        username: Some(username.into()),
        first_name: "Anna".into(),
        last_name: None,
        language_code: Some("en".into()),
    }
}

fn plan() -> Plan {
    Plan {
        id: "quarter".into(),
        title: LocalizedText {
            ru: "3 месяца".into(),
            en: "3 months".into(),
        },
        days: 90,
        price_minor: 54_900,
        currency: "RUB".into(),
        devices: 3,
        price_stars: None,
        traffic_gib: None,
    }
}

async fn ledger(label: &str) -> Ledger {
    let (pool, _) = fresh_database(label).await;
    Ledger::new(pool, false)
}

struct FakeYooKassa {
    server: MockServer,
    shop_id: String,
    secret: String,
}

impl FakeYooKassa {
    async fn start() -> Self {
        Self {
            server: MockServer::start().await,
            shop_id: "123456".into(),
            // Made per test: no secret literal in the repository.
            secret: format!("test_{}", Uuid::new_v4().simple()),
        }
    }

    fn client(&self) -> YooKassa {
        YooKassa::new(YooKassaConfig {
            api_base: format!("{}/v3", self.server.uri()),
            shop_id: self.shop_id.clone(),
            secret_key: Zeroizing::new(self.secret.clone()),
            timeout: Duration::from_secs(2),
            max_attempts: 3,
            retry_backoff: Duration::from_millis(10),
        })
        .unwrap()
    }

    fn basic_auth(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{}:{}", self.shop_id, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// `POST /v3/payments` answered with a pending payment echoing the request's metadata.
    async fn accept_payments(&self, yookassa_id: &str) {
        let id = yookassa_id.to_owned();
        Mock::given(method("POST"))
            .and(path("/v3/payments"))
            .and(header("authorization", self.basic_auth().as_str()))
            .and(header_exists("idempotence-key"))
            .respond_with(move |request: &Request| {
                let body: serde_json::Value = request.body_json().unwrap();
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id,
                    "status": "pending",
                    "paid": false,
                    "amount": body["amount"],
                    "metadata": body["metadata"],
                    "confirmation": {"type": "redirect", "confirmation_url": format!("https://yoomoney.example/checkout?orderId={id}")},
                }))
            })
            .mount(&self.server)
            .await;
    }
}

fn succeeded(record: &wgsub_ledger::PaymentRecord) -> yookassa::Payment {
    yookassa::Payment {
        id: record.yookassa_id.clone().unwrap(),
        status: "succeeded".into(),
        amount: Amount {
            value: "549.00".into(),
            currency: "RUB".into(),
        },
        paid: true,
        confirmation: None,
        metadata: [
            (METADATA_PAYMENT_ID.to_owned(), record.id.to_string()),
            (METADATA_USER_ID.to_owned(), record.user_id.to_string()),
        ]
        .into(),
        captured_at: Some(t("2026-03-01T00:00:00Z")),
        created_at: None,
    }
}

async fn paid_payment(
    ledger: &Ledger,
    yk: &FakeYooKassa,
    user: i64,
) -> wgsub_ledger::PaymentRecord {
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
            t("2026-03-01T00:00:00Z"),
        )
        .await
        .unwrap();
    ledger.payment(created.id).await.unwrap().unwrap()
}

#[tokio::test]
async fn users_are_upserted_refreshed_and_found_by_username() {
    let ledger = ledger("users").await;
    let first = ledger
        .upsert_user(&tg(7, "Anna_K"), t("2026-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(first.created_at, t("2026-01-01T00:00:00Z"));
    assert_eq!(first.entitlement.max_devices, 1);
    let mut renamed = tg(7, "anna_new");
    renamed.first_name = "Anya".into();
    let again = ledger
        .upsert_user(&renamed, t("2026-01-02T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(again.created_at, first.created_at);
    assert_eq!(again.first_name, "Anya");
    assert_eq!(again.last_seen_at, t("2026-01-02T00:00:00Z"));
    let found = ledger.user_by_username("@ANNA_NEW").await.unwrap().unwrap();
    assert_eq!(found.telegram_id, 7);
    assert!(ledger.user_by_username("anna_k").await.unwrap().is_none());
    assert!(
        ledger
            .set_receipt_contact(7, &ReceiptCustomer::parse("+7 900 123-45-67").unwrap())
            .await
            .unwrap()
    );
    assert_eq!(
        ledger.user(7).await.unwrap().unwrap().phone.as_deref(),
        Some("79001234567")
    );
    assert!(
        ledger
            .touch_last_seen(7, t("2026-01-05T00:00:00Z"))
            .await
            .unwrap()
    );
    assert!(
        !ledger
            .touch_last_seen(8, t("2026-01-05T00:00:00Z"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn the_trial_is_granted_once_even_when_requested_concurrently() {
    let ledger = ledger("trial").await;
    let now = t("2026-01-01T00:00:00Z");
    ledger.upsert_user(&tg(1, "a"), now).await.unwrap();
    let attempts = futures::future::join_all((0..10).map(|_| ledger.grant_trial(1, 3, now))).await;
    let granted: Vec<_> = attempts.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].paid_until, Some(now + DAY * 3));
    assert_eq!(
        ledger.grant_trial(1, 3, now + DAY * 30).await.unwrap(),
        None
    );
    assert_eq!(ledger.grant_trial(1, 0, now).await.unwrap(), None);
    assert!(matches!(
        ledger.grant_trial(99, 3, now).await,
        Err(wgsub_ledger::LedgerError::UnknownUser(99))
    ));
}

#[tokio::test]
async fn admin_grants_and_suspensions_change_the_ledger_and_are_audited() {
    let ledger = ledger("admin").await;
    let now = t("2026-01-01T00:00:00Z");
    ledger.upsert_user(&tg(1, "a"), now).await.unwrap();
    let grant = AdminGrant {
        user_id: 1,
        days: 10,
        admin_id: 500,
        reason: "support ticket 12".into(),
    };
    let entitlement = ledger.admin_grant(&grant, now).await.unwrap();
    assert_eq!(entitlement.paid_until, Some(now + DAY * 10));
    assert!(
        ledger
            .set_suspended(1, true, 500, "abuse", now)
            .await
            .unwrap()
    );
    assert!(
        !ledger
            .set_suspended(1, true, 500, "abuse", now)
            .await
            .unwrap()
    );
    let actions = ledger.admin_actions(1).await.unwrap();
    let names: Vec<_> = actions.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(names, ["grant", "suspend"]);
    assert_eq!(actions[0].details["days"], json!(10));
    let user = ledger.user(1).await.unwrap().unwrap();
    assert!(user.suspended);
    assert_eq!(user.ledger_version, 2);
    let empty_reason = AdminGrant {
        reason: " ".into(),
        ..grant
    };
    assert!(ledger.admin_grant(&empty_reason, now).await.is_err());
}

#[tokio::test]
async fn a_payment_is_created_with_basic_auth_and_retried_with_the_same_idempotence_key() {
    let ledger = ledger("create").await;
    let yk = FakeYooKassa::start().await;
    ledger
        .upsert_user(&tg(5, "p"), t("2026-03-01T00:00:00Z"))
        .await
        .unwrap();
    // The first two attempts fail with 500, the third succeeds.
    Mock::given(method("POST"))
        .and(path("/v3/payments"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&yk.server)
        .await;
    yk.accept_payments("2f000000-000f-5000-8000-000000000001")
        .await;
    let record = paid_payment(&ledger, &yk, 5).await;
    let requests = yk.server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    let keys: Vec<_> = requests
        .iter()
        .map(|r| r.headers.get("idempotence-key").unwrap().clone())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(
        keys[0].to_str().unwrap(),
        record.idempotence_key.to_string()
    );
    let body: serde_json::Value = requests[2].body_json().unwrap();
    assert_eq!(
        body["amount"],
        json!({"value": "549.00", "currency": "RUB"})
    );
    assert_eq!(body["capture"], json!(true));
    assert_eq!(body["description"], json!("VPN: 3 months"));
    assert_eq!(
        record.yookassa_id.as_deref(),
        Some("2f000000-000f-5000-8000-000000000001")
    );
    assert!(
        record
            .confirmation_url
            .unwrap()
            .starts_with("https://yoomoney.example/")
    );
}

#[tokio::test]
async fn receipts_need_a_contact_and_name_it() {
    let ledger = ledger("receipt").await;
    let yk = FakeYooKassa::start().await;
    yk.accept_payments("2f000000-000f-5000-8000-000000000002")
        .await;
    let now = t("2026-03-01T00:00:00Z");
    ledger.upsert_user(&tg(5, "p"), now).await.unwrap();
    let plan = plan();
    let order = PaymentOrder {
        user_id: 5,
        plan: &plan,
        return_url: "https://t.me/wgsub_bot",
        receipt: Some(wgsub_ledger::ReceiptSettings { vat_code: 1 }),
    };
    assert!(matches!(
        ledger.create_payment(&yk.client(), order, now).await,
        Err(wgsub_ledger::PaymentError::ContactRequired)
    ));
    ledger
        .set_receipt_contact(5, &ReceiptCustomer::Email("p@example.com".into()))
        .await
        .unwrap();
    ledger
        .create_payment(&yk.client(), order, now)
        .await
        .unwrap();
    let requests = yk.server.received_requests().await.unwrap();
    let body: serde_json::Value = requests.last().unwrap().body_json().unwrap();
    assert_eq!(
        body["receipt"]["customer"],
        json!({"email": "p@example.com"})
    );
}

#[tokio::test]
async fn a_succeeded_payment_applied_twenty_times_concurrently_counts_once() {
    let ledger = ledger("apply").await;
    let yk = FakeYooKassa::start().await;
    yk.accept_payments("2f000000-000f-5000-8000-000000000003")
        .await;
    ledger
        .upsert_user(&tg(5, "p"), t("2026-03-01T00:00:00Z"))
        .await
        .unwrap();
    let record = paid_payment(&ledger, &yk, 5).await;
    let fetched = succeeded(&record);
    let now = t("2026-03-01T00:01:00Z");
    let outcomes =
        futures::future::join_all((0..20).map(|_| ledger.apply_payment(record.id, &fetched, now)))
            .await;
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(ApplyOutcome::Applied { .. })))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(ApplyOutcome::AlreadyApplied { .. })))
        .count();
    assert_eq!((applied, duplicates), (1, 19));
    let user = ledger.user(5).await.unwrap().unwrap();
    assert_eq!(
        user.entitlement.paid_until,
        Some(t("2026-03-01T00:00:00Z") + DAY * 90)
    );
    assert_eq!(user.entitlement.plan.as_deref(), Some("quarter"));
    assert_eq!(user.entitlement.max_devices, 3);
    let notifications = ledger.unsent_notifications(10).await.unwrap();
    assert_eq!(notifications.len(), 1);
    assert_eq!(
        notifications[0].event,
        NotificationEvent::PaymentSucceeded {
            payment_id: record.id,
            plan: "quarter".into(),
            amount_minor: 54_900,
            currency: "RUB".into(),
            paid_until: user.entitlement.paid_until,
            first_purchase: true,
        }
    );
    assert!(
        ledger
            .mark_notification_sent(notifications[0].id, now)
            .await
            .unwrap()
    );
    assert!(
        !ledger
            .mark_notification_sent(notifications[0].id, now)
            .await
            .unwrap()
    );
    assert!(ledger.unsent_notifications(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_mismatching_payment_is_not_applied() {
    let ledger = ledger("mismatch").await;
    let yk = FakeYooKassa::start().await;
    yk.accept_payments("2f000000-000f-5000-8000-000000000004")
        .await;
    ledger
        .upsert_user(&tg(5, "p"), t("2026-03-01T00:00:00Z"))
        .await
        .unwrap();
    let record = paid_payment(&ledger, &yk, 5).await;
    let mut cheap = succeeded(&record);
    cheap.amount.value = "1.00".into();
    let mut pending = succeeded(&record);
    pending.status = "pending".into();
    for fetched in [cheap, pending] {
        assert!(matches!(
            ledger
                .apply_payment(record.id, &fetched, t("2026-03-01T00:00:00Z"))
                .await,
            Err(ApplyError::Mismatch(_))
        ));
    }
    assert_eq!(
        ledger
            .user(5)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until,
        None
    );
    assert!(ledger.unsent_notifications(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_full_refund_takes_the_payment_out_once_and_revenue_follows() {
    let ledger = ledger("refund").await;
    let yk = FakeYooKassa::start().await;
    yk.accept_payments("2f000000-000f-5000-8000-000000000005")
        .await;
    let now = t("2026-03-01T00:00:00Z");
    ledger.upsert_user(&tg(5, "p"), now).await.unwrap();
    ledger.grant_trial(5, 3, now).await.unwrap();
    let record = paid_payment(&ledger, &yk, 5).await;
    ledger
        .apply_payment(record.id, &succeeded(&record), now)
        .await
        .unwrap();
    let stats = ledger
        .stats(now + SignedDuration::from_hours(1))
        .await
        .unwrap();
    assert_eq!((stats.users, stats.active), (1, 1));
    assert_eq!(stats.revenue_today[0].amount_minor, 54_900);
    let refund = yookassa::Refund {
        id: "2f000000-0015-5000-9000-000000000001".into(),
        payment_id: record.yookassa_id.clone().unwrap(),
        status: "succeeded".into(),
        amount: Amount {
            value: "549.00".into(),
            currency: "RUB".into(),
        },
        created_at: Some(now + SignedDuration::from_hours(2)),
    };
    let outcome = ledger.record_refund(&refund, now).await.unwrap();
    let RefundOutcome::Recorded { entitlement, .. } = outcome else {
        panic!("{outcome:?}")
    };
    // Only the trial is left: the payment started at the trial's end, so it is gone entirely.
    assert_eq!(entitlement.paid_until, Some(now + DAY * 3));
    assert_eq!(entitlement.plan, None);
    assert_eq!(
        ledger.record_refund(&refund, now).await.unwrap(),
        RefundOutcome::AlreadyRecorded
    );
    let unknown = yookassa::Refund {
        payment_id: "nope".into(),
        id: "r2".into(),
        ..refund.clone()
    };
    assert_eq!(
        ledger.record_refund(&unknown, now).await.unwrap(),
        RefundOutcome::UnknownPayment
    );
    let stats = ledger
        .stats(now + SignedDuration::from_hours(3))
        .await
        .unwrap();
    assert_eq!(stats.revenue_today[0].amount_minor, 0);
}

#[tokio::test]
async fn pgbouncer_mode_runs_every_query_without_persistent_statements() {
    let (_, url) = fresh_database("pgbouncer").await;
    let config = DbConfig {
        pgbouncer: true,
        max_connections: 1,
        ..DbConfig::new(url)
    };
    let pool = db::connect_lazy(&config).unwrap();
    let ledger = Ledger::new(pool.clone(), true);
    assert!(!ledger.persistent_statements());
    let now = t("2026-01-01T00:00:00Z");
    ledger.upsert_user(&tg(1, "a"), now).await.unwrap();
    ledger.grant_trial(1, 3, now).await.unwrap();
    ledger.stats(now).await.unwrap();
    // Nothing was left prepared on the server connections.
    let prepared: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_prepared_statements")
        .persistent(false)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(prepared, 0);
}

/// A fresh, empty (unmigrated) database in the server at `WGSUB_TEST_DATABASE_URL`.
async fn empty_database(label: &str) -> String {
    let base = std::env::var("WGSUB_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "WGSUB_TEST_DATABASE_URL is not set: this test needs PostgreSQL \
             (run scripts/test, or `source scripts/test-postgres; start_test_postgres DIR`)"
        )
    });
    let name = format!("wgsub_{label}_{}", Uuid::new_v4().simple());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("connect to WGSUB_TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    name
}

/// A pool through `bouncer` to `database`, with or without the PgBouncer setting.
fn pooled(bouncer: &PgBouncer, database: &str, pgbouncer: bool) -> sqlx::PgPool {
    db::connect_lazy(&DbConfig {
        pgbouncer,
        max_connections: 16,
        ..DbConfig::new(bouncer.url(database))
    })
    .unwrap()
}

/// The ledger's real paths, concurrently, as the API and the bot run them: user upserts, the
/// trial (granted once), an admin grant (a fold), a payment created at YooKassa, its webhook
/// applied 20× at once (applied once), lookups and stats. `Err` names the first failure.
async fn ledger_workload(ledger: &Ledger, yk: &FakeYooKassa) -> Result<(), String> {
    let now = t("2026-03-01T00:00:00Z");
    let upserts = futures::future::join_all(
        (1..=40).map(|id| async move { ledger.upsert_user(&tg(id, &format!("u{id}")), now).await }),
    )
    .await;
    for upserted in upserts {
        upserted.map_err(|e| format!("upsert_user: {e}"))?;
    }
    let trials = futures::future::join_all((0..10).map(|_| ledger.grant_trial(1, 3, now))).await;
    let mut granted = 0;
    for trial in trials {
        granted += usize::from(trial.map_err(|e| format!("grant_trial: {e}"))?.is_some());
    }
    if granted != 1 {
        return Err(format!("the trial was granted {granted} times"));
    }
    let grants = futures::future::join_all((2..=20).map(|user_id| async move {
        let grant = AdminGrant {
            user_id,
            days: 7,
            admin_id: 1,
            reason: "load".into(),
        };
        ledger.admin_grant(&grant, now).await
    }))
    .await;
    for folded in grants {
        let folded = folded.map_err(|e| format!("admin_grant: {e}"))?;
        if folded.paid_until != Some(now + DAY * 7) {
            return Err(format!("admin grant folded to {:?}", folded.paid_until));
        }
    }
    let plan = plan();
    let created = ledger
        .create_payment(
            &yk.client(),
            PaymentOrder {
                user_id: 25,
                plan: &plan,
                return_url: "https://t.me/wgsub_bot",
                receipt: None,
            },
            now,
        )
        .await
        .map_err(|e| format!("create_payment: {e}"))?;
    let record = ledger
        .payment(created.id)
        .await
        .map_err(|e| format!("payment: {e}"))?
        .ok_or("the created payment is not in the ledger")?;
    let fetched = succeeded(&record);
    let applies = futures::future::join_all(
        (0..20).map(|_| ledger.apply_payment(record.id, &fetched, now + DAY)),
    )
    .await;
    let mut applied = 0;
    for outcome in applies {
        match outcome.map_err(|e| format!("apply_payment: {e}"))? {
            ApplyOutcome::Applied { .. } => applied += 1,
            ApplyOutcome::AlreadyApplied { .. } => {}
        }
    }
    if applied != 1 {
        return Err(format!("the payment was applied {applied} times"));
    }
    let user = ledger
        .user(25)
        .await
        .map_err(|e| format!("user: {e}"))?
        .ok_or("user 25 is missing")?;
    if user.entitlement.paid_until != Some(t("2026-03-01T00:00:00Z") + DAY * 90) {
        return Err(format!("paid until {:?}", user.entitlement.paid_until));
    }
    let stats = ledger.stats(now).await.map_err(|e| format!("stats: {e}"))?;
    if stats.users != 40 {
        return Err(format!("stats count {} users", stats.users));
    }
    Ok(())
}

#[tokio::test]
async fn through_pgbouncer_concurrent_migrations_serialise_and_leave_no_prepared_statements() {
    let bouncer = PgBouncer::start(2).await;
    let database = empty_database("bouncer_migrate").await;
    let runs = futures::future::join_all((0..4).map(|_| {
        let pool = pooled(&bouncer, &database, true);
        async move { db::migrate_with(&pool, true).await }
    }))
    .await;
    for run in runs {
        run.expect("every migrator succeeds through PgBouncer");
    }
    let pool = pooled(&bouncer, &database, true);
    db::migrate_with(&pool, true)
        .await
        .expect("a second migration run is a no-op");
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .persistent(false)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, i64::try_from(db::MIGRATOR.iter().count()).unwrap());
    // Two open transactions hold both server connections: neither kept a prepared statement,
    // and no advisory lock on this database is left.
    let mut first = pool.begin().await.unwrap();
    let mut second = pool.begin().await.unwrap();
    for tx in [&mut first, &mut second] {
        let leftovers: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM pg_prepared_statements), \
                    (SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND database = \
                        (SELECT oid FROM pg_database WHERE datname = current_database()))",
        )
        .persistent(false)
        .fetch_one(&mut **tx)
        .await
        .unwrap();
        assert_eq!(leftovers, (0, 0));
    }
}

#[tokio::test]
async fn through_pgbouncer_transaction_pooling_the_ledger_works_with_the_pgbouncer_setting() {
    let bouncer = PgBouncer::start(3).await;
    let database = empty_database("bouncer_on").await;
    let pool = pooled(&bouncer, &database, true);
    db::migrate_with(&pool, true).await.unwrap();
    let yk = FakeYooKassa::start().await;
    yk.accept_payments("2f000000-000f-5000-8000-0000000000b1")
        .await;
    let ledger = Ledger::new(pool, true);
    for round in 0..3 {
        // Each round on fresh users: a second round re-runs the same statements.
        if round > 0 {
            sqlx::raw_sql("TRUNCATE users CASCADE")
                .execute(ledger.pool())
                .await
                .unwrap();
        }
        ledger_workload(&ledger, &yk)
            .await
            .unwrap_or_else(|e| panic!("round {round} through PgBouncer: {e}"));
    }
}

#[tokio::test]
async fn through_pgbouncer_the_same_paths_fail_without_the_pgbouncer_setting() {
    // Proves the test above exercises the problem: with cached, named prepared statements the
    // pooler hands a client a server connection where its statement does not exist, or where
    // another client's statement of the same name does.
    let bouncer = PgBouncer::start(3).await;
    let database = empty_database("bouncer_off").await;
    db::migrate_with(&pooled(&bouncer, &database, true), true)
        .await
        .unwrap();
    let yk = FakeYooKassa::start().await;
    yk.accept_payments("2f000000-000f-5000-8000-0000000000b2")
        .await;
    let ledger = Ledger::new(pooled(&bouncer, &database, false), false);
    let error = ledger_workload(&ledger, &yk)
        .await
        .expect_err("named prepared statements cannot work through transaction pooling");
    assert!(error.contains("prepared statement"), "{error}");
}

#[tokio::test]
async fn through_pgbouncer_sqlxs_own_migrator_fails_when_run_concurrently() {
    // Why `migrate_with` exists: sqlx's migrator (a session advisory lock, named statements)
    // run by several processes at once through the pooler collides on its statement names.
    let bouncer = PgBouncer::start(2).await;
    let database = empty_database("bouncer_plain_migrate").await;
    let runs = futures::future::join_all((0..4).map(|_| {
        let pool = pooled(&bouncer, &database, true);
        async move {
            tokio::time::timeout(Duration::from_secs(20), db::migrate(&pool))
                .await
                .map_err(|_| "timed out waiting for the session lock".to_owned())?
                .map_err(|e| e.to_string())
        }
    }))
    .await;
    let failures: Vec<String> = runs.into_iter().filter_map(Result::err).collect();
    assert!(
        !failures.is_empty(),
        "every plain migrator succeeded through PgBouncer"
    );
    assert!(
        failures.iter().all(|e| e.contains("prepared statement")
                || e.contains("timed out")
                // Two migrators that got past the lock on different server connections run
                // the same DDL at once.
                || e.contains("duplicate key value")),
        "{failures:?}"
    );
}

#[tokio::test]
async fn a_payment_keeps_its_plans_traffic_quota_and_the_fold_follows_it() {
    let ledger = ledger("quota").await;
    let yk = FakeYooKassa::start().await;
    yk.accept_payments("2f000000-000f-5000-8000-000000000009")
        .await;
    let now = t("2026-03-01T00:00:00Z");
    ledger.upsert_user(&tg(9, "q"), now).await.unwrap();
    ledger.grant_trial(9, 3, now).await.unwrap();
    assert_eq!(
        ledger
            .user(9)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .traffic_quota,
        None,
        "a trial has no quota"
    );
    let quota_plan = Plan {
        traffic_gib: Some(100),
        ..plan()
    };
    let created = ledger
        .create_payment(
            &yk.client(),
            PaymentOrder {
                user_id: 9,
                plan: &quota_plan,
                return_url: "https://t.me/wgsub_bot",
                receipt: None,
            },
            now,
        )
        .await
        .unwrap();
    // Stored with the payment at purchase: what the plan said then is what was bought.
    let stored: (Option<i64>, Option<i32>) =
        sqlx::query_as("SELECT traffic_bytes, traffic_period_days FROM payments WHERE id = $1")
            .bind(created.id)
            .fetch_one(ledger.pool())
            .await
            .unwrap();
    assert_eq!(stored, (Some(100 << 30), Some(90)));
    let record = ledger.payment(created.id).await.unwrap().unwrap();
    ledger
        .apply_payment(record.id, &succeeded(&record), now)
        .await
        .unwrap();
    let want = quota_plan.traffic_quota();
    assert_eq!(
        want,
        Some(TrafficQuota {
            bytes: 107_374_182_400,
            period_days: 90
        })
    );
    let user = ledger.user(9).await.unwrap().unwrap();
    assert_eq!(user.entitlement.traffic_quota, want);
    // Free days keep the latest payment's quota.
    let granted = ledger
        .admin_grant(
            &AdminGrant {
                user_id: 9,
                days: 5,
                admin_id: 1,
                reason: "goodwill".into(),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(granted.traffic_quota, want);
    // Refunded in full, the payment and its quota are gone: the trial is what is left.
    let refund = yookassa::Refund {
        id: "2f000000-0015-5000-9000-000000000009".into(),
        payment_id: record.yookassa_id.clone().unwrap(),
        status: "succeeded".into(),
        amount: Amount {
            value: "549.00".into(),
            currency: "RUB".into(),
        },
        created_at: Some(now + SignedDuration::from_hours(2)),
    };
    let RefundOutcome::Recorded { entitlement, .. } =
        ledger.record_refund(&refund, now).await.unwrap()
    else {
        panic!("the refund is recorded")
    };
    assert_eq!(entitlement.traffic_quota, None);
    assert_eq!(
        ledger
            .user(9)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .traffic_quota,
        None
    );
}
