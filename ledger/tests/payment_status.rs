//! A payment's status changes only from the status its writer expects, on a real PostgreSQL (a
//! fresh database per test from `WGSUB_TEST_DATABASE_URL`), YooKassa faked with wiremock: two
//! concurrent transitions make one winner and one reported loser, and a webhook that applies a
//! payment while the call creating it at YooKassa is still answering is never undone by that
//! call's answer, whether it is a success or a failure.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;
use wgsub_crds::plans::{LocalizedText, Plan};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::yookassa::{self, Amount, METADATA_PAYMENT_ID, METADATA_USER_ID};
use wgsub_ledger::{
    ApplyOutcome, Ledger, PaymentError, PaymentOrder, PaymentStatus, TelegramUser, Transition,
    YooKassa, YooKassaConfig,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use zeroize::Zeroizing;

/// How long the fake YooKassa takes to answer a creation: the window the webhook lands in.
const CREATION_TAKES: Duration = Duration::from_millis(1500);

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

async fn ledger_with_user(label: &str, user: i64) -> Ledger {
    let (pool, _) = fresh_database(label).await;
    let ledger = Ledger::new(pool, false);
    let telegram = TelegramUser {
        id: user,
        username: None,
        first_name: "Ann".into(),
        last_name: None,
        language_code: Some("en".into()),
    };
    ledger
        .upsert_user(&telegram, Timestamp::now())
        .await
        .unwrap();
    ledger
}

fn client(server: &MockServer) -> YooKassa {
    YooKassa::new(YooKassaConfig {
        api_base: format!("{}/v3", server.uri()),
        shop_id: "123456".into(),
        secret_key: Zeroizing::new(format!("test_{}", Uuid::new_v4().simple())),
        timeout: Duration::from_secs(5),
        max_attempts: 1,
        retry_backoff: Duration::from_millis(10),
    })
    .unwrap()
}

/// The user's only payment, once its pending row exists.
async fn pending_payment(ledger: &Ledger, user: i64) -> Uuid {
    for _ in 0..100 {
        let row: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM payments WHERE user_id = $1")
            .bind(user)
            .fetch_optional(ledger.pool())
            .await
            .unwrap();
        if let Some((id,)) = row {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the pending payment row was never written");
}

/// What a webhook does meanwhile: YooKassa reports `yookassa_id` succeeded, found by the
/// payment id in its metadata (our record has no YooKassa id yet), and it is applied.
async fn webhook_applies(ledger: &Ledger, ours: Uuid, user: i64, yookassa_id: &str) {
    let fetched = yookassa::Payment {
        id: yookassa_id.into(),
        status: "succeeded".into(),
        amount: Amount {
            value: "199.00".into(),
            currency: "RUB".into(),
        },
        paid: true,
        confirmation: None,
        metadata: [
            (METADATA_PAYMENT_ID.to_owned(), ours.to_string()),
            (METADATA_USER_ID.to_owned(), user.to_string()),
        ]
        .into(),
        captured_at: Some(Timestamp::now()),
        created_at: None,
    };
    let record = ledger.payment_for(&fetched).await.unwrap().unwrap();
    assert_eq!(record.id, ours);
    let applied = ledger
        .apply_payment(record.id, &fetched, Timestamp::now())
        .await
        .unwrap();
    assert!(
        matches!(applied, ApplyOutcome::Applied { .. }),
        "{applied:?}"
    );
}

async fn create(ledger: &Ledger, yookassa: &YooKassa, user: i64) -> Result<Uuid, PaymentError> {
    let plan = plan();
    let order = PaymentOrder {
        user_id: user,
        plan: &plan,
        return_url: "https://vpn.example.com/miniapp/",
        receipt: None,
    };
    ledger
        .create_payment(yookassa, order, Timestamp::now())
        .await
        .map(|created| created.id)
}

#[tokio::test]
async fn of_two_concurrent_transitions_one_wins_and_the_other_is_told() {
    let user = 31;
    let ledger = ledger_with_user("pay_transitions", user).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/payments"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"type": "error", "code": "invalid_request", "description": "refused"}),
        ))
        .mount(&server)
        .await;
    // A creation YooKassa refused leaves a failed row to race on.
    assert!(create(&ledger, &client(&server), user).await.is_err());
    let id = pending_payment(&ledger, user).await;
    assert_eq!(
        ledger.payment(id).await.unwrap().unwrap().status,
        PaymentStatus::Failed
    );
    for round in 0..20 {
        let now = Timestamp::now();
        // Back to a known start, then two writers expecting it.
        ledger
            .transition_payment(
                id,
                &[PaymentStatus::Canceled, PaymentStatus::Succeeded],
                PaymentStatus::Failed,
                now,
            )
            .await
            .unwrap();
        let (to_canceled, to_succeeded) = tokio::join!(
            ledger.transition_payment(id, &[PaymentStatus::Failed], PaymentStatus::Canceled, now),
            ledger.transition_payment(id, &[PaymentStatus::Failed], PaymentStatus::Succeeded, now),
        );
        let stored = ledger.payment(id).await.unwrap().unwrap().status;
        match (to_canceled.unwrap(), to_succeeded.unwrap()) {
            (Transition::Done, Transition::Lost { found }) => {
                assert_eq!((stored, found), (PaymentStatus::Canceled, Some(stored)));
            }
            (Transition::Lost { found }, Transition::Done) => {
                assert_eq!((stored, found), (PaymentStatus::Succeeded, Some(stored)));
            }
            other => panic!("round {round}: exactly one must win: {other:?}"),
        }
    }
    assert_eq!(
        ledger
            .transition_payment(
                Uuid::new_v4(),
                &[PaymentStatus::Pending],
                PaymentStatus::Failed,
                Timestamp::now()
            )
            .await
            .unwrap(),
        Transition::Lost { found: None }
    );
}

#[tokio::test]
async fn a_payment_applied_while_its_creation_answers_stays_succeeded() {
    let user = 32;
    let ledger = ledger_with_user("pay_race_ok", user).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/payments"))
        .respond_with(|request: &Request| {
            let body: serde_json::Value = request.body_json().unwrap();
            ResponseTemplate::new(200)
                .set_body_json(json!({
                    "id": "2f000000-000f-5000-8000-00000000dd01", "status": "pending",
                    "paid": false, "amount": body["amount"], "metadata": body["metadata"],
                    "confirmation": {"type": "redirect", "confirmation_url": "https://yoomoney.example/pay"},
                }))
                .set_delay(CREATION_TAKES)
        })
        .mount(&server)
        .await;
    let yookassa = client(&server);
    let (created, ()) = tokio::join!(create(&ledger, &yookassa, user), async {
        let ours = pending_payment(&ledger, user).await;
        webhook_applies(&ledger, ours, user, "2f000000-000f-5000-8000-00000000dd01").await;
    });
    let record = ledger.payment(created.unwrap()).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        PaymentStatus::Succeeded,
        "not set back to pending"
    );
    assert_eq!(
        record.yookassa_id.as_deref(),
        Some("2f000000-000f-5000-8000-00000000dd01")
    );
    assert_eq!(
        record.confirmation_url.as_deref(),
        Some("https://yoomoney.example/pay")
    );
}

#[tokio::test]
async fn a_payment_applied_while_its_creation_fails_stays_succeeded() {
    let user = 33;
    let ledger = ledger_with_user("pay_race_fail", user).await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/payments"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(json!({"type": "error", "code": "internal_server_error"}))
                .set_delay(CREATION_TAKES),
        )
        .mount(&server)
        .await;
    let yookassa = client(&server);
    let (created, ours) = tokio::join!(create(&ledger, &yookassa, user), async {
        let ours = pending_payment(&ledger, user).await;
        webhook_applies(&ledger, ours, user, "2f000000-000f-5000-8000-00000000dd02").await;
        ours
    });
    assert!(
        matches!(created, Err(PaymentError::YooKassa(_))),
        "{created:?}"
    );
    let record = ledger.payment(ours).await.unwrap().unwrap();
    assert_eq!(record.status, PaymentStatus::Succeeded, "not set to failed");
    assert!(
        ledger
            .user(user)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until
            .is_some()
    );
}
