//! The data quota in the bot against real PostgreSQL, the real Kubernetes API server (the bot's
//! caches as its ServiceAccount under the chart's RBAC) and a fake Telegram Bot API: a user
//! whose quota the operator marks used up (condition `QuotaExhausted`) is told once per period —
//! in their language, with the period's end and the plans as buttons — however many runs there
//! are, two of them at once; a user within the quota is told nothing; a new period used up is
//! told again; a notice not yet sent when a purchase ended the pause is withdrawn; `/status`
//! shows the traffic against the quota.

mod common;

use common::{Options, bot_for, fake_telegram, harness, message};
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use teloxide::dptree;
use teloxide_tests::MockBot;
use wgsub_bot::quota;
use wgsub_crds::resources::subscription_name;
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec};
use wgsub_ledger::TelegramUser;
use wiremock::MockServer;

const GIB: i64 = 1 << 30;

fn tg(id: i64, language: &str) -> TelegramUser {
    TelegramUser {
        id,
        username: None,
        first_name: "Anna".into(),
        last_name: None,
        language_code: Some(language.into()),
    }
}

/// The harness's plans, the month also sold for Stars.
const PLANS_WITH_STARS: &str = "plans:
  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 1, priceStars: 150}
  - {id: quarter, title: {ru: Квартал, en: Quarter}, days: 90, priceMinor: 54900, currency: RUB, devices: 3}
";

/// The `sendMessage` requests: (chat, text, the callback data of its buttons).
async fn sent(server: &MockServer) -> Vec<(i64, String, Vec<String>)> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().to_ascii_lowercase().ends_with("/sendmessage"))
        .map(|r| {
            let body: Value = r.body_json().unwrap();
            let buttons = body["reply_markup"]["inline_keyboard"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|row| row.as_array().cloned().unwrap_or_default())
                .map(|button| button["callback_data"].as_str().unwrap().to_owned())
                .collect();
            (
                body["chat_id"].as_i64().unwrap(),
                body["text"].as_str().unwrap().to_owned(),
                buttons,
            )
        })
        .collect()
}

/// A paid subscription of `user` with a 50 GiB quota.
async fn subscription(h: &common::Harness, user: i64, paid_until: Timestamp) {
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let spec = VpnSubscriptionSpec {
        paid_until: Some(paid_until),
        plan: Some("month".into()),
        traffic_quota: serde_json::from_value(json!({"bytes": 50 * GIB, "periodDays": 30}))
            .unwrap(),
        ..VpnSubscriptionSpec::for_user(user)
    };
    let created = subs
        .create(
            &PostParams::default(),
            &VpnSubscription::new(&subscription_name(user), spec),
        )
        .await
        .unwrap();
    h.visible(&created).await;
}

/// The operator's usage of `user`'s period from `start` (30 days), used up or not.
async fn period(h: &common::Harness, user: i64, start: Timestamp, exhausted: bool) {
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    let used = if exhausted { 50 * GIB } else { 20 * GIB };
    let status = json!({"status": {
        "usage": {
            "periodStart": start.to_string(),
            "periodEnd": (start + SignedDuration::from_hours(24 * 30)).to_string(),
            "periodRxBytes": used / 5, "periodTxBytes": used - used / 5,
            "totalRxBytes": 30 * GIB, "totalTxBytes": 90 * GIB,
        },
        "conditions": [{
            "type": "QuotaExhausted",
            "status": if exhausted { "True" } else { "False" },
            "reason": if exhausted { "QuotaExhausted" } else { "WithinQuota" },
            "message": "",
            "lastTransitionTime": start.to_string(),
        }],
    }});
    let written = subs
        .patch_status(
            &subscription_name(user),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await
        .unwrap();
    h.visible(&written).await;
}

#[tokio::test]
async fn a_used_up_quota_is_told_once_per_period_with_the_plans_to_buy() {
    let options = Options {
        plans: Some(PLANS_WITH_STARS),
        ..Options::default()
    };
    let h = harness("bot_quota_notices", options).await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let now = Timestamp::now();
    // The operator's instants carry nanoseconds; the table keeps microseconds.
    let start: Timestamp = "2026-12-01T00:00:00.123456789Z".parse().unwrap();
    for (id, language) in [(5001, "en"), (5002, "ru"), (5003, "en")] {
        h.ledger.upsert_user(&tg(id, language), now).await.unwrap();
        subscription(&h, id, now + SignedDuration::from_hours(24 * 60)).await;
    }
    // 5001 and 5002 used up their quota; 5003 is within it.
    period(&h, 5001, start, true).await;
    period(&h, 5002, start, true).await;
    period(&h, 5003, start, false).await;

    // Two replicas at once, then again: each used-up period is told once.
    let (one, two) = tokio::join!(
        quota::run(&h.app, &bot, now, 100),
        quota::run(&h.app, &bot, now, 100)
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.changed + two.changed, 2, "{one:?} {two:?}");
    assert_eq!(one.notices.sent + two.notices.sent, 2);
    let again = quota::run(&h.app, &bot, now + SignedDuration::from_mins(5), 100)
        .await
        .unwrap();
    assert_eq!((again.changed, again.notices.sent), (0, 0));
    let messages = sent(&telegram).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    let to = |chat: i64| {
        messages
            .iter()
            .find(|(c, _, _)| *c == chat)
            .unwrap_or_else(|| panic!("{chat} is told: {messages:?}"))
    };
    let (_, english, buttons) = to(5001);
    assert!(english.contains("used up"), "{english}");
    assert!(
        english.contains("2026-12-31 00:00 UTC"),
        "the period's end: {english}"
    );
    assert_eq!(
        buttons,
        &[
            "buy:month",
            "buyr:month",
            "stars:month",
            "buy:quarter",
            "buyr:quarter"
        ],
        "the plans to buy as /buy offers them: by card, with renewal, in Stars"
    );
    let (_, russian, _) = to(5002);
    assert!(russian.contains("исчерпан"), "{russian}");

    // 5001's next period is used up too: told again, once.
    let next = start + SignedDuration::from_hours(24 * 30);
    period(&h, 5001, next, true).await;
    let report = quota::run(&h.app, &bot, now + SignedDuration::from_mins(10), 100)
        .await
        .unwrap();
    assert_eq!((report.changed, report.notices.sent), (1, 1));
    let messages = sent(&telegram).await;
    assert_eq!(messages.len(), 3);
    assert!(
        messages[2].1.contains("2027-01-30 00:00 UTC"),
        "{:?}",
        messages[2]
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_notice_not_sent_before_the_pause_ended_is_withdrawn() {
    let h = harness("bot_quota_withdrawn", Options::default()).await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let now = Timestamp::now();
    h.ledger.upsert_user(&tg(5201, "en"), now).await.unwrap();
    subscription(&h, 5201, now + SignedDuration::from_hours(24 * 60)).await;
    let start: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    period(&h, 5201, start, true).await;
    // Queued, and the bot stops before sending it.
    assert_eq!(quota::record_exhausted(&h.app, now).await.unwrap(), (0, 1));
    // A purchase starts a new period within the quota before the bot runs again.
    period(&h, 5201, start + SignedDuration::from_hours(24 * 5), false).await;
    let report = quota::run(&h.app, &bot, now + SignedDuration::from_mins(5), 100)
        .await
        .unwrap();
    assert_eq!((report.changed, report.notices.sent), (0, 0));
    assert!(
        sent(&telegram).await.is_empty(),
        "no word of a pause that is over"
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn status_shows_the_traffic_against_the_quota_and_that_the_vpn_is_paused() {
    let h = harness("bot_quota_status", Options::default()).await;
    let now = Timestamp::now();
    h.ledger.upsert_user(&tg(5101, "en"), now).await.unwrap();
    subscription(&h, 5101, now + SignedDuration::from_hours(24 * 60)).await;
    let start: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    period(&h, 5101, start, true).await;
    let mut bot = MockBot::new(
        message(5101, "en", "/status"),
        wgsub_bot::handlers::handler_tree(),
    );
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    let text = bot
        .get_responses()
        .sent_messages
        .last()
        .and_then(|m| m.text().map(str::to_owned))
        .expect("/status answers");
    assert!(
        text.contains("Traffic this period: 50 GB of 50 GB, 0 B left (until 2026-12-31 00:00 UTC)"),
        "{text}"
    );
    assert!(
        text.contains("the VPN is paused until 2026-12-31 00:00 UTC"),
        "{text}"
    );
    assert!(text.contains("Traffic in total: ↑ 30 GB ↓ 90 GB"), "{text}");
    h.assert_nothing_forbidden();
}
