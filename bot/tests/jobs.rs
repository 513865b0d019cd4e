//! The background jobs and the HTTP side against real PostgreSQL, the real Kubernetes API server
//! (as the bot's ServiceAccount under the chart's RBAC) and a fake Telegram Bot API (wiremock):
//! reminders sent once per period (one paid in Stars too) and kept across restarts, the payment
//! outbox drained, a blocked user counted as failed without retries, the command list
//! registered in both languages, the webhook's secret token, and the health/metrics endpoints.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Options, bot_for, fake_telegram, harness, sent_texts};
use http_body_util::BodyExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tower::ServiceExt;
use wgsub_bot::broadcast::{self, Pacing, Tally};
use wgsub_bot::config::Secret;
use wgsub_bot::reminders::ReminderKind;
use wgsub_bot::text::{self, Lang};
use wgsub_bot::{http, jobs, telegram};
use wgsub_ledger::yookassa::{self, Amount, METADATA_PAYMENT_ID, METADATA_USER_ID};
use wgsub_ledger::{AdminGrant, PaymentOrder, StarPurchase, TelegramUser};

const DAY: SignedDuration = SignedDuration::from_hours(24);

fn tg(id: i64, language: &str) -> TelegramUser {
    TelegramUser {
        id,
        username: None,
        first_name: "Anna".into(),
        last_name: None,
        language_code: Some(language.into()),
    }
}

#[tokio::test]
async fn reminders_go_out_once_per_period_survive_restarts_and_start_again_after_renewal() {
    let h = harness("bot_reminders", Options::default()).await;
    let telegram = fake_telegram(&[3003]).await;
    let bot = bot_for(&telegram);
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    for (id, language, days) in [
        (3001, "en", 10),
        (3002, "ru", 10),
        (3003, "en", 10),
        (3004, "en", 30),
    ] {
        h.ledger
            .upsert_user(&tg(id, language), start)
            .await
            .unwrap();
        h.ledger
            .admin_grant(
                &AdminGrant {
                    user_id: id,
                    days,
                    admin_id: 1,
                    reason: "test".into(),
                },
                start,
            )
            .await
            .unwrap();
    }
    let end = start + DAY * 10;

    // Two days before the end: the 3-day reminder to each of the 10-day users.
    let report = jobs::send_due_reminders(&h.app, &bot, end - DAY * 2)
        .await
        .unwrap();
    assert_eq!((report.sent, report.failed), (2, 1));
    let sent = sent_texts(&telegram).await;
    assert_eq!(sent.len(), 3, "the blocked user was tried once: {sent:?}");
    assert!(sent.contains(&(3001, text::reminder(Lang::En, ReminderKind::ThreeDays, end))));
    assert!(sent.contains(&(3002, text::reminder(Lang::Ru, ReminderKind::ThreeDays, end))));

    // A run an hour later — or after a restart, which reads the same table — sends nothing,
    // not even to the user who blocked the bot.
    let report = jobs::send_due_reminders(&h.app, &bot, end - DAY * 2 + DAY / 24)
        .await
        .unwrap();
    assert_eq!((report.sent, report.failed), (0, 0));
    assert_eq!(sent_texts(&telegram).await.len(), 3);

    // 3002 renews for 30 days: nothing for the old end; user 3001 gets the 1-day reminder.
    h.ledger
        .admin_grant(
            &AdminGrant {
                user_id: 3002,
                days: 30,
                admin_id: 1,
                reason: "renewal".into(),
            },
            end - DAY * 2,
        )
        .await
        .unwrap();
    let report = jobs::send_due_reminders(&h.app, &bot, end - DAY / 2)
        .await
        .unwrap();
    assert_eq!((report.sent, report.failed), (1, 1));
    let sent = sent_texts(&telegram).await;
    assert_eq!(
        sent[3..].iter().filter(|(chat, _)| *chat == 3001).count(),
        1
    );
    assert!(sent[3..].iter().all(|(chat, _)| *chat != 3002));

    // At the end: the expiry reminder; the renewed user's new period gets its own 3-day one.
    jobs::send_due_reminders(&h.app, &bot, end + DAY / 24)
        .await
        .unwrap();
    let renewed_end = end + DAY * 30;
    jobs::send_due_reminders(&h.app, &bot, renewed_end - DAY * 2)
        .await
        .unwrap();
    let sent = sent_texts(&telegram).await;
    assert!(sent.contains(&(3001, text::reminder(Lang::En, ReminderKind::Expired, end))));
    assert!(sent.contains(&(
        3002,
        text::reminder(Lang::Ru, ReminderKind::ThreeDays, renewed_end)
    )));
    let to_3001 = sent.iter().filter(|(chat, _)| *chat == 3001).count();
    assert_eq!(to_3001, 3, "three reminders for one period, each once");
    let metrics = h.app.metrics.encode();
    assert!(
        metrics.contains(
            r#"wgsub_bot_notifications_total{kind="reminder_three_days",result="failed"} 1"#
        ),
        "{metrics}"
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_three_day_trial_is_not_told_three_days_left_at_sign_up_but_gets_the_later_reminders() {
    let h = harness("bot_trial_reminders", Options::default()).await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    h.ledger.upsert_user(&tg(3101, "en"), start).await.unwrap();
    h.ledger.grant_trial(3101, 3, start).await.unwrap();
    let end = start + DAY * 3;

    for now in [start, start + DAY / 24, start + DAY + DAY / 2] {
        let report = jobs::send_due_reminders(&h.app, &bot, now).await.unwrap();
        assert_eq!((report.sent, report.failed), (0, 0), "at {now}");
    }
    jobs::send_due_reminders(&h.app, &bot, end - DAY / 2)
        .await
        .unwrap();
    jobs::send_due_reminders(&h.app, &bot, end + DAY / 24)
        .await
        .unwrap();
    assert_eq!(
        sent_texts(&telegram).await,
        [
            (3101, text::reminder(Lang::En, ReminderKind::OneDay, end)),
            (3101, text::reminder(Lang::En, ReminderKind::Expired, end)),
        ]
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_short_plan_paid_in_stars_is_not_told_three_days_left_at_payment_but_gets_the_rest() {
    let h = harness("bot_stars_reminders", Options::default()).await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    h.ledger.upsert_user(&tg(3102, "en"), start).await.unwrap();
    let purchase = StarPurchase {
        telegram_payment_charge_id: "charge-3102".into(),
        user_id: 3102,
        plan: "three-days".into(),
        days: 3,
        devices: 1,
        traffic_quota: None,
        stars: 50,
        invoice_payload: "payload".into(),
        paid_at: start,
    };
    h.ledger.apply_star_payment(&purchase, start).await.unwrap();
    let end = start + DAY * 3;

    // The Stars payment began the period: nothing is due at it or soon after.
    for now in [start, start + DAY / 24, start + DAY + DAY / 2] {
        let report = jobs::send_due_reminders(&h.app, &bot, now).await.unwrap();
        assert_eq!((report.sent, report.failed), (0, 0), "at {now}");
    }
    jobs::send_due_reminders(&h.app, &bot, end - DAY / 2)
        .await
        .unwrap();
    jobs::send_due_reminders(&h.app, &bot, end + DAY / 24)
        .await
        .unwrap();
    assert_eq!(
        sent_texts(&telegram).await,
        [
            (3102, text::reminder(Lang::En, ReminderKind::OneDay, end)),
            (3102, text::reminder(Lang::En, ReminderKind::Expired, end)),
        ]
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn behind_pgbouncer_transaction_pooling_two_concurrent_reminder_runs_send_each_reminder_once()
{
    let h = harness(
        "bot_pgbouncer",
        Options {
            pgbouncer: true,
            ..Options::default()
        },
    )
    .await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    let users: Vec<i64> = (3201..3209).collect();
    for &id in &users {
        h.ledger.upsert_user(&tg(id, "en"), start).await.unwrap();
        let grant = AdminGrant {
            user_id: id,
            days: 10,
            admin_id: 1,
            reason: "test".into(),
        };
        h.ledger.admin_grant(&grant, start).await.unwrap();
    }
    let end = start + DAY * 10;

    // Two replicas' runs at once: every claim, finish and read goes through the pooler.
    let (first, second) = tokio::join!(
        jobs::send_due_reminders(&h.app, &bot, end - DAY * 2),
        jobs::send_due_reminders(&h.app, &bot, end - DAY * 2),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.sent + second.sent, users.len() as u32);
    assert_eq!(first.failed + second.failed, 0);
    let mut reminded: Vec<i64> = sent_texts(&telegram)
        .await
        .into_iter()
        .map(|(chat, text)| {
            assert_eq!(text, text::reminder(Lang::En, ReminderKind::ThreeDays, end));
            chat
        })
        .collect();
    reminded.sort();
    assert_eq!(reminded, users);
    let again = jobs::send_due_reminders(&h.app, &bot, end - DAY * 2 + DAY / 24)
        .await
        .unwrap();
    assert_eq!((again.sent, again.failed), (0, 0));
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_payment_outbox_is_drained_once_with_the_new_paid_until() {
    let h = harness("bot_outbox", Options::default()).await;
    h.accept_payments().await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let now = Timestamp::now();
    h.ledger.upsert_user(&tg(3101, "en"), now).await.unwrap();
    let plan = h.app.plans.get("month").unwrap().clone();
    let created = h
        .ledger
        .create_payment(
            &h.app.yookassa,
            PaymentOrder {
                user_id: 3101,
                plan: &plan,
                return_url: "https://t.me/example_bot",
                receipt: None,
            },
            now,
        )
        .await
        .unwrap();
    let record = h.ledger.payment(created.id).await.unwrap().unwrap();
    let fetched = yookassa::Payment {
        id: record.yookassa_id.clone().unwrap(),
        status: "succeeded".into(),
        amount: Amount {
            value: "199.00".into(),
            currency: "RUB".into(),
        },
        paid: true,
        confirmation: None,
        metadata: [
            (METADATA_PAYMENT_ID.to_owned(), record.id.to_string()),
            (METADATA_USER_ID.to_owned(), "3101".to_owned()),
        ]
        .into(),
        captured_at: Some(now),
        created_at: None,
    };
    h.ledger
        .apply_payment(record.id, &fetched, now)
        .await
        .unwrap();
    let until = h
        .ledger
        .user(3101)
        .await
        .unwrap()
        .unwrap()
        .entitlement
        .paid_until
        .unwrap();

    let report = jobs::drain_outbox(&h.app, &bot, now, 100).await.unwrap();
    assert_eq!((report.sent, report.failed), (1, 0));
    assert_eq!(
        sent_texts(&telegram).await,
        [(3101, text::payment_succeeded(Lang::En, Some(until)))]
    );
    let report = jobs::drain_outbox(&h.app, &bot, now, 100).await.unwrap();
    assert_eq!((report.sent, report.failed), (0, 0));
    assert_eq!(sent_texts(&telegram).await.len(), 1);
    assert!(
        h.app
            .metrics
            .encode()
            .contains(r#"kind="payment_succeeded",result="sent"} 1"#)
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_broadcast_counts_a_user_who_blocked_the_bot_as_failed_and_tries_them_once() {
    let telegram = fake_telegram(&[42]).await;
    let bot = bot_for(&telegram);
    let recipients = [41, 42, 43];
    let mut progress = vec![];
    let tally = broadcast::run(
        Pacing::new(30, 2).unwrap(),
        &recipients,
        1,
        |chat| telegram::send_text(&bot, chat, "news".into()),
        tokio::time::sleep,
        |tally| {
            progress.push(tally);
            async {}
        },
    )
    .await;
    assert_eq!(
        tally,
        Tally {
            total: 3,
            delivered: 2,
            failed: 1
        }
    );
    let sent = sent_texts(&telegram).await;
    assert_eq!(sent.iter().filter(|(chat, _)| *chat == 42).count(), 1);
    assert_eq!(sent.len(), 3);
    assert_eq!(progress.len(), 2);
}

#[tokio::test]
async fn the_command_list_is_registered_by_default_and_in_russian_and_english() {
    let telegram = fake_telegram(&[]).await;
    telegram::register_commands(&bot_for(&telegram))
        .await
        .unwrap();
    let calls: Vec<serde_json::Value> = telegram
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            r.url
                .path()
                .to_ascii_lowercase()
                .ends_with("/setmycommands")
        })
        .map(|r| r.body_json().unwrap())
        .collect();
    let languages: Vec<_> = calls.iter().map(|c| c["language_code"].as_str()).collect();
    assert_eq!(languages, [None, Some("ru"), Some("en")]);
    assert_eq!(
        calls[1]["commands"][0],
        json!({"command": "start", "description": "Начать"})
    );
    assert_eq!(
        calls[2]["commands"][3],
        json!({"command": "buy", "description": "Buy or renew"})
    );
}

#[tokio::test]
async fn the_webhook_takes_updates_only_with_the_secret_token() {
    let secret = format!("s{}", uuid::Uuid::new_v4().simple());
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let router = http::webhook_router("/telegram/hook", Secret::new(&secret), sender);
    let update = json!({
        "update_id": 7,
        "message": {
            "message_id": 1, "date": 0,
            "chat": {"id": 5, "type": "private", "first_name": "A"},
            "from": {"id": 5, "is_bot": false, "first_name": "A"},
            "text": "/help"
        }
    })
    .to_string();
    let post = |token: Option<&str>, body: String| {
        let mut request =
            Request::post("/telegram/hook").header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header(http::SECRET_HEADER, token);
        }
        request.body(Body::from(body)).unwrap()
    };
    for token in [None, Some("wrong"), Some(&secret[..secret.len() - 1])] {
        let response = router
            .clone()
            .oneshot(post(token, update.clone()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "bad_secret_token");
        assert!(!body.to_string().contains(&secret));
    }
    assert!(receiver.try_recv().is_err(), "no update got through");

    let bad = router
        .clone()
        .oneshot(post(Some(&secret), "{".into()))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let ok = router
        .clone()
        .oneshot(post(Some(&secret), update))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let received = tokio::time::timeout(Duration::from_secs(1), receiver.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.id.0, 7);
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let h = harness("bot_ops", Options::default()).await;
    h.app.metrics.update("start");
    let router = http::ops_router(h.app.clone());
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let health = router.clone().oneshot(get("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = router.clone().oneshot(get("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = router.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let body = metrics.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.contains(r#"wgsub_bot_updates_handled_total{kind="start"} 1"#),
        "{body}"
    );

    h.ledger.pool().close().await;
    let not_ready = router.oneshot(get("/readyz")).await.unwrap();
    assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = not_ready.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "database_unavailable");
    h.assert_nothing_forbidden();
}
