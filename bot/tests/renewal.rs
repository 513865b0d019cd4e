//! Automatic renewal through `handler_tree()` and the bot's jobs against a real PostgreSQL
//! ledger, the real Kubernetes API server (the bot's client under the chart's RBAC), a fake Bot
//! API and the YooKassa fake with saved cards: a plan bought "with automatic renewal" asks
//! YooKassa to save the card, `/renewal` shows it masked with a button that switches renewal
//! off (after which nothing is charged), a declined renewal adds no time and tells the user
//! in their language how to pay by hand, and a renewal charged is counted in the metrics and
//! its payment notice comes without the guide the first purchase's had.

mod common;

#[path = "../../ledger/tests/support/fake_yookassa.rs"]
mod fake_yookassa;

use std::ops::ControlFlow;

use common::payments::{self, requests};
use common::{Harness, Options, harness, sent_texts};
use fake_yookassa::{FakeYooKassa, MethodState};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use teloxide::dptree;
use teloxide::types::{Me, Update};
use wgsub_bot::handlers::handler_tree;
use wgsub_bot::jobs;
use wgsub_bot::renewal::{BUY_RENEWING_PREFIX, RENEWAL_OFF};
use wgsub_bot::text::{self, Lang};
use wgsub_ledger::ApplyOutcome;
use wiremock::MockServer;

fn me() -> Me {
    serde_json::from_value(json!({
        "id": 1, "is_bot": true, "first_name": "wgsub", "username": "test_bot",
        "can_join_groups": false, "can_read_all_group_messages": false,
        "supports_inline_queries": false, "has_main_web_app": false
    }))
    .unwrap()
}

struct World {
    h: Harness,
    telegram: MockServer,
    bot: teloxide::Bot,
    fake: FakeYooKassa,
}

async fn world(label: &str) -> World {
    let h = harness(label, Options::default()).await;
    let fake = FakeYooKassa::mount(&h.yookassa).await;
    let telegram = common::fake_telegram(&[]).await;
    let bot = common::bot_for(&telegram);
    World {
        h,
        telegram,
        bot,
        fake,
    }
}

impl World {
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

    /// `user` presses "with automatic renewal" on the month, pays, and YooKassa's
    /// notification is applied as the api's webhook does. Returns the saved method's id.
    async fn buy_renewing(&self, user: i64, language: &str) -> String {
        self.dispatch(payments::text(1, user, language, "/start"))
            .await;
        self.dispatch(payments::button(
            2,
            user,
            language,
            &format!("{BUY_RENEWING_PREFIX}month"),
        ))
        .await;
        let purchase = self.fake.purchases().pop().expect("a payment was created");
        assert_eq!(purchase["save_payment_method"], json!(true));
        let ours: uuid::Uuid = purchase["metadata"]["wgsub_payment_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let record = self.h.ledger.payment(ours).await.unwrap().unwrap();
        let yookassa_id = record.yookassa_id.clone().unwrap();
        let method = self.fake.pay(&yookassa_id).expect("the card is saved");
        let details = self
            .h
            .app
            .yookassa
            .get_payment_details(&yookassa_id)
            .await
            .unwrap();
        let now = Timestamp::now();
        assert!(matches!(
            self.h
                .ledger
                .apply_payment(record.id, &details.payment, now)
                .await
                .unwrap(),
            ApplyOutcome::Applied { .. }
        ));
        self.h
            .ledger
            .settle_renewal(&record, &details, now)
            .await
            .unwrap();
        // "Payment received" goes out now, so later checks see only what renewal sends.
        jobs::drain_outbox(&self.h.app, &self.bot, now, 100)
            .await
            .unwrap();
        method
    }

    async fn paid_until(&self, user: i64) -> Timestamp {
        self.h
            .ledger
            .user(user)
            .await
            .unwrap()
            .unwrap()
            .entitlement
            .paid_until
            .unwrap()
    }
}

#[tokio::test]
async fn renewal_shows_the_masked_card_and_switching_it_off_stops_every_charge() {
    let w = world("bot_renewal_off").await;
    let user = 4101;
    w.buy_renewing(user, "en").await;
    let paid_until = w.paid_until(user).await;

    w.dispatch(payments::text(3, user, "en", "/renewal")).await;
    let messages = requests(&w.telegram, "sendMessage").await;
    let shown = messages.last().unwrap();
    let expected = text::renewal_status(
        Lang::En,
        Some(("Visa •••• 4242", Some("12/27"))),
        Some(paid_until - SignedDuration::from_hours(24)),
        Some("month"),
    );
    assert_eq!(shown["text"], json!(expected));
    assert!(expected.contains("Visa •••• 4242"));
    assert_eq!(
        shown["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        json!(RENEWAL_OFF)
    );

    w.dispatch(payments::button(4, user, "en", RENEWAL_OFF))
        .await;
    let sent = sent_texts(&w.telegram).await;
    assert_eq!(
        sent.last().unwrap(),
        &(user, text::renewal_switched_off(Lang::En).to_owned())
    );
    assert!(!w.h.ledger.renewal_status(user).await.unwrap().enabled);

    // Whenever the job runs now, nothing is charged.
    for hours in [20, 2] {
        let at = paid_until - SignedDuration::from_hours(hours);
        let report = jobs::run_renewals(&w.h.app, at).await.unwrap();
        assert_eq!(report, Default::default());
    }
    assert!(w.fake.charges().is_empty());
    assert_eq!(w.paid_until(user).await, paid_until);

    // `/renewal` now says it is off, with no button.
    w.dispatch(payments::text(5, user, "en", "/renewal")).await;
    let messages = requests(&w.telegram, "sendMessage").await;
    let shown = messages.last().unwrap();
    assert_eq!(
        shown["text"],
        json!(text::renewal_status(Lang::En, None, None, None))
    );
    assert!(shown.get("reply_markup").is_none());
}

#[tokio::test]
async fn a_declined_renewal_adds_no_time_and_tells_the_user_how_to_pay_by_hand() {
    let w = world("bot_renewal_declined").await;
    let user = 4102;
    let method = w.buy_renewing(user, "ru").await;
    w.fake
        .set_method(&method, MethodState::Declined("insufficient_funds".into()));
    let paid_until = w.paid_until(user).await;
    let at = paid_until - SignedDuration::from_hours(12);

    let report = jobs::run_renewals(&w.h.app, at).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(w.paid_until(user).await, paid_until);
    let before = sent_texts(&w.telegram).await.len();
    jobs::drain_outbox(&w.h.app, &w.bot, at, 100).await.unwrap();
    let sent = sent_texts(&w.telegram).await;
    let told: Vec<&String> = sent[before..]
        .iter()
        .filter(|(chat, _)| *chat == user)
        .map(|(_, text)| text)
        .collect();
    let expected = text::renewal_failed(Lang::Ru, "insufficient_funds", Some(paid_until));
    assert_eq!(told, [&expected], "{sent:?}");
    assert!(expected.contains("/buy"));
    assert!(expected.contains("не хватило"));

    // Once per period: the next runs neither charge nor tell again.
    jobs::run_renewals(&w.h.app, at + SignedDuration::from_hours(6))
        .await
        .unwrap();
    jobs::drain_outbox(&w.h.app, &w.bot, at, 100).await.unwrap();
    assert_eq!(sent_texts(&w.telegram).await.len(), sent.len());
    assert_eq!(w.fake.charges().len(), 1);
    assert_eq!(w.paid_until(user).await, paid_until);
}

#[tokio::test]
async fn a_renewal_is_counted_and_only_the_first_purchases_notice_carries_the_guide() {
    let w = world("bot_renewal_notice").await;
    let user = 4103;
    w.buy_renewing(user, "en").await;
    let paid_until = w.paid_until(user).await;
    let at = paid_until - SignedDuration::from_hours(12);
    let report = jobs::run_renewals(&w.h.app, at).await.unwrap();
    assert_eq!((report.attempted, report.succeeded), (1, 1), "{report:?}");
    let metrics = w.h.app.metrics.encode();
    for line in [
        r#"wgsub_bot_renewal_charges_total{outcome="attempted"} 1"#,
        r#"wgsub_bot_renewal_charges_total{outcome="succeeded"} 1"#,
        r#"wgsub_bot_renewal_charges_total{outcome="given_up"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    jobs::drain_outbox(&w.h.app, &w.bot, at, 100).await.unwrap();
    let notices: Vec<bool> = requests(&w.telegram, "sendMessage")
        .await
        .into_iter()
        .filter(|m| m["chat_id"] == json!(user))
        .filter(|m| {
            m["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Payment received"))
        })
        .map(|m| m.get("reply_markup").is_some())
        .collect();
    assert_eq!(
        notices,
        [true, false],
        "the purchase's notice leads to the guide, the renewal's does not"
    );
}
