//! `/devices` through `handler_tree()` with `teloxide_tests` (the fake Bot API), against a real
//! PostgreSQL ledger and the real Kubernetes API server (the bot's client authenticated as its
//! ServiceAccount under the chart's RBAC; no call refused): the list with connected, last
//! handshake and traffic; delete after a confirmation (cancel keeps the device; the last
//! device marks the subscription; add removes the mark); rotate; add up to `maxDevices`;
//! rename by replying to the prompt; and bad input — another user's device, a bad name,
//! unknown button data — answered, with nothing changed.

mod common;

use common::{Options, harness, message, user};
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use teloxide::dptree;
use teloxide::types::{InlineKeyboardButtonKind, ReplyMarkup};
use teloxide_tests::{MockBot, MockCallbackQuery};
use wgsub_bot::handlers::handler_tree;
use wgsub_bot::text::{self, Lang};
use wgsub_crds::devices::ANNOTATION_DEVICES_REMOVED;
use wgsub_crds::{VpnSubscription, WgPeer};

type Bot = MockBot<wgsub_bot::handlers::HandlerError, teloxide_tests::mock_bot::DistributionKey>;

fn last_text(bot: &Bot) -> String {
    bot.get_responses()
        .sent_messages
        .iter()
        .filter_map(|m| m.text().map(str::to_owned))
        .next_back()
        .expect("the bot answered")
}

fn texts(bot: &Bot) -> Vec<String> {
    bot.get_responses()
        .sent_messages
        .iter()
        .filter_map(|m| m.text().map(str::to_owned))
        .collect()
}

/// The callback data of the last message's inline keyboard.
fn last_buttons(bot: &Bot) -> Vec<String> {
    let responses = bot.get_responses();
    let Some(sent) = responses.sent_messages_text.last() else {
        return vec![];
    };
    match &sent.bot_request.reply_markup {
        Some(ReplyMarkup::InlineKeyboard(keyboard)) => keyboard
            .inline_keyboard
            .iter()
            .flatten()
            .filter_map(|b| match &b.kind {
                InlineKeyboardButtonKind::CallbackData(data) => Some(data.clone()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

async fn press(bot: &mut Bot, from: u64, data: &str) -> String {
    bot.update(MockCallbackQuery::new().data(data).from(user(from, "en")));
    bot.dispatch().await;
    last_text(bot)
}

async fn peer(h: &common::Harness, name: &str) -> Option<WgPeer> {
    Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
        .get_opt(name)
        .await
        .unwrap()
}

async fn removed_mark(h: &common::Harness, user: i64) -> Option<String> {
    h.subscription(user)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
        .get(ANNOTATION_DEVICES_REMOVED)
        .cloned()
}

/// Lets the user's subscription hold `max` devices (as a bigger plan would).
async fn allow_devices(h: &common::Harness, user: i64, max: i32) {
    let subs: Api<VpnSubscription> = Api::namespaced(h.admin.clone(), &h.namespace);
    subs.patch(
        &format!("tg-{user}"),
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"maxDevices": max}})),
    )
    .await
    .unwrap();
}

async fn handshake(h: &common::Harness, name: &str, ago: SignedDuration, rx: i64, tx: i64) {
    let status = json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgPeer", "metadata": {"name": name},
        "status": {"active": true, "lastHandshake": (Timestamp::now() - ago).to_string(),
                   "rxBytes": rx, "txBytes": tx},
    });
    let written = Api::<WgPeer>::namespaced(h.admin.clone(), &h.namespace)
        .patch_status(
            name,
            &PatchParams::apply("wgsub-test-agent"),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    h.visible(&written).await;
}

async fn started(h: &common::Harness, users: &[u64]) -> Bot {
    let mut bot = MockBot::new(message(users[0], "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    for id in &users[1..] {
        bot.update(message(*id, "en", "/start"));
        bot.dispatch().await;
    }
    bot
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_lists_connected_and_traffic_and_deletes_only_after_confirmation() {
    let h = harness(
        "bot_devices_delete",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let mut bot = started(&h, &[3001, 3002]).await;
    h.ready_peer(3001, 1, "phone").await;
    h.ready_peer(3001, 2, "laptop").await;
    h.ready_peer(3002, 1, "theirs").await;
    allow_devices(&h, 3001, 2).await;
    handshake(
        &h,
        "tg-3001-1",
        SignedDuration::from_secs(20),
        1536,
        3 << 20,
    )
    .await;
    handshake(&h, "tg-3001-2", SignedDuration::from_mins(30), 0, 0).await;

    bot.update(message(3001, "en", "/devices"));
    bot.dispatch().await;
    let list = last_text(&bot);
    assert!(list.contains("Your devices: 2 / 2"), "{list}");
    assert!(list.contains("phone — 🟢 connected"), "{list}");
    assert!(list.contains("↑ 1.5 KB ↓ 3 MB"), "{list}");
    assert!(list.contains("laptop — ⚪ not connected"), "{list}");
    assert_eq!(
        last_buttons(&bot),
        [
            "cfg:tg-3001-1",
            "dev:ren:tg-3001-1",
            "dev:rot:tg-3001-1",
            "dev:del:tg-3001-1",
            "cfg:tg-3001-2",
            "dev:ren:tg-3001-2",
            "dev:rot:tg-3001-2",
            "dev:del:tg-3001-2",
        ],
        "no add button at the limit"
    );

    // Delete asks first; Cancel keeps the device.
    let asked = press(&mut bot, 3001, "dev:del:tg-3001-2").await;
    assert_eq!(asked, text::confirm_delete(Lang::En, "laptop"));
    assert_eq!(last_buttons(&bot), ["dev:delok:tg-3001-2", "dev:keep"]);
    assert_eq!(
        press(&mut bot, 3001, "dev:keep").await,
        text::delete_cancelled(Lang::En)
    );
    assert!(peer(&h, "tg-3001-2").await.is_some());

    press(&mut bot, 3001, "dev:del:tg-3001-2").await;
    let after = press(&mut bot, 3001, "dev:delok:tg-3001-2").await;
    assert!(peer(&h, "tg-3001-2").await.is_none(), "the peer is deleted");
    assert!(
        texts(&bot).contains(&text::deleted(Lang::En, "laptop")),
        "{:?}",
        texts(&bot)
    );
    assert!(after.contains("Your devices: 1 / 2"), "{after}");
    assert!(last_buttons(&bot).contains(&"dev:add".to_owned()));

    // Another user's device, by any button: "gone", and it stays.
    for data in [
        "dev:delok:tg-3002-1",
        "dev:del:tg-3002-1",
        "dev:rot:tg-3002-1",
        "dev:ren:tg-3002-1",
        "dev:delok:tg-3001-2",
    ] {
        assert_eq!(
            press(&mut bot, 3001, data).await,
            text::device_gone(Lang::En),
            "{data}"
        );
    }
    assert!(peer(&h, "tg-3002-1").await.is_some());
    // Button data that means nothing: the short help, not silence.
    assert_eq!(
        press(&mut bot, 3001, "dev:zap:tg-3001-1").await,
        text::unknown(Lang::En)
    );

    // The last device: the subscription is marked so the operator does not give it back; adding
    // one removes the mark (the operator then makes the first device).
    press(&mut bot, 3001, "dev:delok:tg-3001-1").await;
    assert!(peer(&h, "tg-3001-1").await.is_none());
    assert_eq!(removed_mark(&h, 3001).await.as_deref(), Some("true"));
    assert_eq!(
        press(&mut bot, 3001, "dev:add").await,
        text::first_device_coming(Lang::En)
    );
    assert_eq!(removed_mark(&h, 3001).await, None);
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_add_and_rename_by_reply_and_bad_names_change_nothing() {
    let h = harness(
        "bot_devices_rotate",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let mut bot = started(&h, &[3101]).await;
    h.ready_peer(3101, 1, "phone").await;
    allow_devices(&h, 3101, 2).await;
    let old = peer(&h, "tg-3101-1").await.unwrap();

    let answer = press(&mut bot, 3101, "dev:rot:tg-3101-1").await;
    assert_eq!(answer, text::rotated(Lang::En, "phone"));
    assert_eq!(last_buttons(&bot), ["cfg:tg-3101-2"]);
    assert!(
        peer(&h, "tg-3101-1").await.is_none(),
        "the old peer is gone"
    );
    let new = peer(&h, "tg-3101-2").await.unwrap();
    assert_eq!(new.spec.device_name.as_deref(), Some("phone"));
    assert!(new.spec.public_key.is_none() && new.spec.address.is_none());
    assert_eq!(new.metadata.owner_references.unwrap()[0].name, "tg-3101");
    assert_ne!(new.metadata.uid, old.metadata.uid);

    // Add: the next free number, up to maxDevices.
    let answer = press(&mut bot, 3101, "dev:add").await;
    assert_eq!(answer, text::device_added(Lang::En, "tg-3101-1"));
    assert_eq!(last_buttons(&bot), ["cfg:tg-3101-1"]);
    assert_eq!(peer(&h, "tg-3101-1").await.unwrap().spec.server, "main");
    assert_eq!(
        press(&mut bot, 3101, "dev:add").await,
        text::device_limit(Lang::En, 2)
    );
    assert!(peer(&h, "tg-3101-3").await.is_none());

    // Rename: the prompt, then a reply to it.
    let prompt_text = press(&mut bot, 3101, "dev:ren:tg-3101-2").await;
    assert_eq!(
        prompt_text,
        text::rename_prompt(Lang::En, "phone", "tg-3101-2")
    );
    let prompt = bot
        .get_responses()
        .sent_messages_text
        .last()
        .unwrap()
        .message
        .clone();
    let reply = |text: &str| message(3101, "en", text).reply_to_message(Box::new(prompt.clone()));
    for bad in ["   ".to_owned(), "x".repeat(200), "two\nlines".to_owned()] {
        bot.update(reply(&bad));
        bot.dispatch().await;
        assert_eq!(
            last_text(&bot),
            text::invalid_device_name(Lang::En),
            "{bad:?}"
        );
        assert_eq!(
            peer(&h, "tg-3101-2")
                .await
                .unwrap()
                .spec
                .device_name
                .as_deref(),
            Some("phone")
        );
    }
    bot.update(reply(" Work phone "));
    bot.dispatch().await;
    assert!(
        texts(&bot).contains(&text::renamed(Lang::En, "Work phone")),
        "{:?}",
        texts(&bot)
    );
    assert_eq!(
        peer(&h, "tg-3101-2")
            .await
            .unwrap()
            .spec
            .device_name
            .as_deref(),
        Some("Work phone")
    );
    // A plain message that replies to nothing of the bot's is not a rename.
    bot.update(message(3101, "en", "Laptop"));
    bot.dispatch().await;
    assert_eq!(last_text(&bot), text::unknown(Lang::En));
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_active_subscription_rotate_and_add_say_so_and_change_nothing() {
    let h = harness("bot_devices_inactive", Options::default()).await;
    let mut bot = started(&h, &[3201]).await;
    h.ready_peer(3201, 1, "phone").await;
    assert_eq!(
        press(&mut bot, 3201, "dev:rot:tg-3201-1").await,
        text::subscription_inactive(Lang::En)
    );
    assert_eq!(
        press(&mut bot, 3201, "dev:add").await,
        text::subscription_inactive(Lang::En)
    );
    assert!(peer(&h, "tg-3201-1").await.is_some());
    assert!(peer(&h, "tg-3201-2").await.is_none());
    h.assert_nothing_forbidden();
}
