//! Telegram Stars through `handler_tree()` against a real PostgreSQL ledger, the real
//! Kubernetes API server (the bot's client under the chart's RBAC) and a fake Bot API
//! (wiremock) that takes invoices, pre-checkout answers and refunds: the invoice of a Stars
//! plan, a pre-checkout accepted for it and refused for a changed price or a bad payload, a
//! `successful_payment` delivered twice applied once, one that cannot be credited refunded,
//! and `/admin refund` taking the payment's time back exactly once.

mod common;

use std::ops::ControlFlow;

use common::payments::{self, requests};
use common::{ADMIN, Harness, Options, harness};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use teloxide::dptree;
use teloxide::types::{Me, Update};
use wgsub_bot::handlers::handler_tree;
use wgsub_bot::jobs;
use wgsub_bot::text::{self, Lang};
use wgsub_ledger::stars::{InvoiceKey, InvoicePayload, PayloadError, StarsRefusal};
use wiremock::MockServer;

const USER: i64 = 3001;

/// The month is sold for Stars too, the quarter only by card.
const PLANS: &str = "plans:
  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 1, priceStars: 150}
  - {id: quarter, title: {ru: Квартал, en: Quarter}, days: 90, priceMinor: 54900, currency: RUB, devices: 3}
";

/// The bot as `getMe` describes it (what `filter_command` needs).
fn me() -> Me {
    serde_json::from_value(json!({
        "id": 1, "is_bot": true, "first_name": "wgsub", "username": "test_bot",
        "can_join_groups": false, "can_read_all_group_messages": false,
        "supports_inline_queries": false, "has_main_web_app": false
    }))
    .unwrap()
}

struct Stars {
    h: Harness,
    telegram: MockServer,
    bot: teloxide::Bot,
}

async fn setup(label: &str, refunded_before: &[&str]) -> Stars {
    let h = harness(
        label,
        Options {
            plans: Some(PLANS),
            ..Options::default()
        },
    )
    .await;
    let telegram = common::fake_telegram(&[]).await;
    payments::mount_payments(&telegram, refunded_before).await;
    let bot = common::bot_for(&telegram);
    Stars { h, telegram, bot }
}

impl Stars {
    async fn dispatch(&self, update: Update) {
        let outcome = handler_tree()
            .dispatch(dptree::deps![
                self.bot.clone(),
                self.h.app.clone(),
                update,
                me()
            ])
            .await;
        assert!(
            matches!(outcome, ControlFlow::Break(Ok(()))),
            "the update is handled, not failed: {outcome:?}"
        );
    }

    /// Presses the plan's Stars button and returns the invoice the bot sent.
    async fn invoice(&self, update_id: i32, plan: &str) -> serde_json::Value {
        self.dispatch(payments::button(
            update_id,
            USER,
            "en",
            &format!("stars:{plan}"),
        ))
        .await;
        requests(&self.telegram, "sendInvoice")
            .await
            .pop()
            .expect("an invoice was sent")
    }

    async fn checkout_answers(&self) -> Vec<serde_json::Value> {
        requests(&self.telegram, "answerPreCheckoutQuery").await
    }

    async fn texts(&self) -> Vec<String> {
        common::sent_texts(&self.telegram)
            .await
            .into_iter()
            .map(|(_, text)| text)
            .collect()
    }

    fn key(&self) -> InvoiceKey {
        InvoiceKey::from_bot_token(self.bot.token())
    }

    async fn paid_until(&self) -> Option<Timestamp> {
        self.h
            .ledger
            .user(USER)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until
    }
}

fn about_now(at: Timestamp, expected: Timestamp) -> bool {
    at.duration_since(expected).abs() < SignedDuration::from_mins(1)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stars_payment_delivered_twice_is_applied_once() {
    let s = setup("bot_stars_once", &[]).await;
    // /buy offers the Stars price beside the card price.
    s.dispatch(payments::text(1, USER, "en", "/buy")).await;
    let plans = requests(&s.telegram, "sendMessage").await.pop().unwrap();
    let buttons: Vec<&str> = plans["reply_markup"]["inline_keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0]["callback_data"].as_str().unwrap())
        .collect();
    assert_eq!(buttons, ["buy:month", "stars:month", "buy:quarter"]);

    let invoice = s.invoice(2, "month").await;
    assert_eq!(invoice["currency"], "XTR");
    assert_eq!(invoice["prices"][0]["amount"], 150);
    assert!(
        invoice.get("provider_token").is_none_or(|t| t == ""),
        "Stars invoices carry no provider token: {invoice}"
    );
    let payload = invoice["payload"].as_str().unwrap().to_owned();
    assert_eq!(
        InvoicePayload::decode(&payload, &s.key()),
        Ok(InvoicePayload {
            user_id: USER,
            plan: "month".into(),
            stars: 150
        })
    );

    s.dispatch(payments::pre_checkout(3, USER, "en", "XTR", 150, &payload))
        .await;
    let answers = s.checkout_answers().await;
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0]["pre_checkout_query_id"], "pcq-3");
    assert_eq!(answers[0]["ok"], true, "{}", answers[0]);

    // Delivered twice at once (polling and a webhook), and once more later.
    let paid = || payments::successful_payment(4, USER, "en", 150, &payload, "stxOnce-1");
    tokio::join!(s.dispatch(paid()), s.dispatch(paid()));
    s.dispatch(paid()).await;
    let until = s.paid_until().await.expect("the payment counts");
    assert!(
        about_now(
            until,
            Timestamp::now() + SignedDuration::from_hours(24 * 30)
        ),
        "30 days, once: {until}"
    );
    let user = s.h.ledger.user(USER).await.unwrap().unwrap();
    assert_eq!(user.entitlement.plan.as_deref(), Some("month"));
    let subscription = s.h.subscription(USER).await.expect("written to Kubernetes");
    assert_eq!(subscription.spec.paid_until, Some(until));

    // The user is told once, through the outbox.
    let sent = jobs::drain_outbox(&s.h.app, &s.bot, Timestamp::now(), 10)
        .await
        .unwrap();
    assert_eq!(sent.sent, 1);
    let told: Vec<String> = s.texts().await;
    assert_eq!(
        told.iter()
            .filter(|t| **t == text::payment_succeeded(Lang::En, Some(until)))
            .count(),
        1,
        "{told:?}"
    );
    assert!(requests(&s.telegram, "refundStarPayment").await.is_empty());
    s.h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pre_checkout_is_refused_for_a_changed_price_a_bad_payload_or_a_suspended_user() {
    let s = setup("bot_stars_refused", &[]).await;
    s.dispatch(payments::text(1, USER, "ru", "/start")).await;
    // An invoice made when the plan cost 100 stars; it costs 150 now.
    let old = InvoicePayload {
        user_id: USER,
        plan: "month".into(),
        stars: 100,
    }
    .encode(&s.key());
    s.dispatch(payments::pre_checkout(2, USER, "ru", "XTR", 100, &old))
        .await;
    // A payload that does not parse, and one signed with another bot's token.
    s.dispatch(payments::pre_checkout(
        3,
        USER,
        "ru",
        "XTR",
        150,
        "st1.3001.month",
    ))
    .await;
    let foreign = InvoicePayload {
        user_id: USER,
        plan: "month".into(),
        stars: 150,
    }
    .encode(&InvoiceKey::from_bot_token("1:another-bot"));
    s.dispatch(payments::pre_checkout(4, USER, "ru", "XTR", 150, &foreign))
        .await;
    // A good invoice, but the user was suspended since.
    let good = s.invoice(5, "month").await["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    s.h.ledger
        .set_suspended(USER, true, ADMIN as i64, "test", Timestamp::now())
        .await
        .unwrap();
    s.dispatch(payments::pre_checkout(6, USER, "ru", "XTR", 150, &good))
        .await;

    let answers = s.checkout_answers().await;
    let refused: Vec<(&str, &str)> = answers
        .iter()
        .map(|a| {
            assert_eq!(a["ok"], false, "{a}");
            (
                a["pre_checkout_query_id"].as_str().unwrap(),
                a["error_message"].as_str().unwrap(),
            )
        })
        .collect();
    let changed = text::stars_refused(
        Lang::Ru,
        &StarsRefusal::PriceChanged {
            plan: "month".into(),
            invoiced: 100,
            now: 150,
        },
    );
    let bad = text::stars_refused(Lang::Ru, &StarsRefusal::Payload(PayloadError::Malformed));
    let suspended = text::stars_refused(Lang::Ru, &StarsRefusal::Suspended);
    assert_eq!(
        refused,
        [
            ("pcq-2", changed.as_str()),
            ("pcq-3", bad.as_str()),
            ("pcq-4", bad.as_str()),
            ("pcq-6", suspended.as_str()),
        ]
    );
    assert!(changed.contains("150"), "{changed}");
    assert_eq!(s.paid_until().await, None, "nothing credited");
    s.h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_invoice_that_cannot_be_credited_is_refunded_and_nothing_is_credited() {
    let s = setup("bot_stars_bad_payload", &[]).await;
    s.dispatch(payments::text(1, USER, "en", "/start")).await;
    let payload = s.invoice(2, "month").await["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    // A payload that does not parse; then the right payload with another amount.
    s.dispatch(payments::successful_payment(
        3, USER, "en", 150, "garbage", "stxBad-1",
    ))
    .await;
    s.dispatch(payments::successful_payment(
        4, USER, "en", 1, &payload, "stxBad-2",
    ))
    .await;
    assert_eq!(s.paid_until().await, None);
    for charge in ["stxBad-1", "stxBad-2"] {
        assert_eq!(s.h.ledger.star_payment(charge).await.unwrap(), None);
    }
    let refunds = requests(&s.telegram, "refundStarPayment").await;
    let refunded: Vec<(i64, &str)> = refunds
        .iter()
        .map(|r| {
            (
                r["user_id"].as_i64().unwrap(),
                r["telegram_payment_charge_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(refunded, [(USER, "stxBad-1"), (USER, "stxBad-2")]);
    let told = s.texts().await;
    assert_eq!(
        told.iter()
            .filter(|t| **t == text::stars_payment_not_credited(Lang::En, true))
            .count(),
        2,
        "{told:?}"
    );
    let metrics = s.h.app.metrics.encode();
    assert!(
        metrics.contains(r#"wgsub_bot_updates_handled_total{kind="successful_payment_refused"} 2"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_refund_removes_the_payments_time_exactly_once() {
    let s = setup("bot_stars_refund", &["stxTwice-1"]).await;
    s.dispatch(payments::text(1, USER, "en", "/start")).await;
    let payload = s.invoice(2, "month").await["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    s.dispatch(payments::successful_payment(
        3,
        USER,
        "en",
        150,
        &payload,
        "stxRefund-1",
    ))
    .await;
    assert!(s.paid_until().await.is_some());

    let admin = ADMIN as i64;
    s.dispatch(payments::text(
        4,
        admin,
        "en",
        "/admin refund stxRefund-1 asked by mail",
    ))
    .await;
    let refunds = requests(&s.telegram, "refundStarPayment").await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["user_id"], USER);
    assert_eq!(refunds[0]["telegram_payment_charge_id"], "stxRefund-1");
    assert_eq!(s.paid_until().await, None, "the payment's time is gone");
    let subscription = s.h.subscription(USER).await.unwrap();
    assert_eq!(subscription.spec.paid_until, None);
    let told = s.texts().await;
    assert_eq!(
        told.last().map(String::as_str),
        Some(text::admin_refunded(Lang::En, USER, 150, None).as_str())
    );

    // Again: nothing more is refunded or taken.
    s.dispatch(payments::text(5, admin, "en", "/admin refund stxRefund-1"))
        .await;
    assert_eq!(requests(&s.telegram, "refundStarPayment").await.len(), 1);
    assert_eq!(
        s.texts().await.last().map(String::as_str),
        Some(text::admin_refund_already(Lang::En, "stxRefund-1").as_str())
    );
    let refunds =
        s.h.ledger
            .admin_actions(USER)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.action == "star_refund")
            .count();
    assert_eq!(refunds, 1);

    // Telegram refunded it before (the admin's first try lost its answer): still recorded once.
    s.dispatch(payments::successful_payment(
        6,
        USER,
        "en",
        150,
        &payload,
        "stxTwice-1",
    ))
    .await;
    assert!(s.paid_until().await.is_some());
    s.dispatch(payments::text(7, admin, "en", "/admin refund stxTwice-1"))
        .await;
    assert_eq!(s.paid_until().await, None);
    let record =
        s.h.ledger
            .star_payment("stxTwice-1")
            .await
            .unwrap()
            .unwrap();
    assert!(record.refunded_at.is_some());

    // An unknown charge and a non-admin are refused.
    s.dispatch(payments::text(8, admin, "en", "/admin refund stxNobody"))
        .await;
    assert_eq!(
        s.texts().await.last().map(String::as_str),
        Some(text::admin_refund_unknown(Lang::En, "stxNobody").as_str())
    );
    s.dispatch(payments::text(9, USER, "en", "/admin refund stxTwice-1"))
        .await;
    assert_eq!(requests(&s.telegram, "refundStarPayment").await.len(), 2);
    s.h.assert_nothing_forbidden();
}
