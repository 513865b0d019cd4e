//! The connection guide through the handler tree and the payment outbox, against real
//! PostgreSQL, the real Kubernetes API server (the bot's ServiceAccount under the chart's RBAC)
//! and fake Bot APIs: the platform buttons come with the payment notice and under a config,
//! each platform answers with the app for the server's protocol (WireGuard or AmneziaWG) and its
//! store links in Russian and English, and a stray button gets help rather than silence.

mod common;

use common::{Options, bot_for, fake_telegram, harness, message};
use jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::json;
use teloxide::dptree;
use teloxide::types::{InlineKeyboardButtonKind, ReplyMarkup};
use teloxide_tests::{MockBot, MockCallbackQuery};
use wgsub_bot::handlers::handler_tree;
use wgsub_bot::text::{self, Lang};
use wgsub_bot::{guide, jobs};
use wgsub_crds::WgServer;
use wgsub_crds::resources::Protocol;
use wgsub_devices::apps::{Platform, store_links};
use wgsub_ledger::yookassa::{self, Amount, METADATA_PAYMENT_ID, METADATA_USER_ID};
use wgsub_ledger::{PaymentOrder, TelegramUser};

type Bot = MockBot<wgsub_bot::handlers::HandlerError, teloxide_tests::mock_bot::DistributionKey>;

/// The callback data of a keyboard's buttons, row by row.
fn buttons(markup: &Option<ReplyMarkup>) -> Vec<String> {
    match markup {
        Some(ReplyMarkup::InlineKeyboard(keyboard)) => keyboard
            .inline_keyboard
            .iter()
            .flatten()
            .map(|button| match &button.kind {
                InlineKeyboardButtonKind::CallbackData(data) => data.clone(),
                other => panic!("a callback button, got {other:?}"),
            })
            .collect(),
        other => panic!("an inline keyboard, got {other:?}"),
    }
}

const PLATFORM_BUTTONS: [&str; 5] = [
    "guide:ios",
    "guide:android",
    "guide:windows",
    "guide:macos",
    "guide:linux",
];

/// Presses `data` as user `id` and returns the one text answer and its buttons.
async fn press(bot: &mut Bot, id: u64, lang: &str, data: &str) -> (String, Vec<String>) {
    bot.update(
        MockCallbackQuery::new()
            .data(data)
            .from(common::user(id, lang)),
    );
    bot.dispatch().await;
    let responses = bot.get_responses();
    assert_eq!(responses.answered_callback_queries.len(), 1);
    assert_eq!(responses.sent_messages_text.len(), 1, "{data}: one answer");
    let sent = &responses.sent_messages_text[0];
    (
        sent.message.text().unwrap().to_owned(),
        buttons(&sent.bot_request.reply_markup),
    )
}

/// Every platform's guide for a user on a `protocol` server, in both languages.
async fn assert_guides(bot: &mut Bot, id: u64, protocol: Protocol) {
    for (code, lang) in [("en", Lang::En), ("ru", Lang::Ru)] {
        for platform in Platform::ALL {
            let data = format!("guide:{}", platform.code());
            let (answer, keyboard) = press(bot, id, code, &data).await;
            let links = store_links(protocol, platform);
            assert_eq!(answer, text::guide(lang, protocol, platform, links));
            for link in links {
                assert!(answer.contains(link.url), "{answer}");
            }
            match protocol {
                Protocol::Wireguard => assert!(!answer.contains("Amnezia"), "{answer}"),
                Protocol::Amneziawg => assert!(
                    answer.contains("AmneziaVPN") && !answer.contains("wireguard.com"),
                    "{answer}"
                ),
            }
            assert_eq!(keyboard, PLATFORM_BUTTONS, "another platform can be picked");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_offers_the_guide_and_each_platform_names_the_wireguard_app() {
    let h = harness(
        "bot_guide_wg",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let mut bot = MockBot::new(message(1101, "en", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    h.ready_peer(1101, 1, "phone").await;
    bot.update(message(1101, "en", "/config"));
    bot.dispatch().await;
    let responses = bot.get_responses();
    assert_eq!(responses.sent_messages_photo.len(), 1);
    let qr = &responses.sent_messages_photo[0].bot_request;
    assert_eq!(buttons(&qr.reply_markup), ["guide:"]);

    let (answer, keyboard) = press(&mut bot, 1101, "en", "guide:").await;
    assert_eq!(answer, text::guide_choose_platform(Lang::En));
    assert_eq!(keyboard, PLATFORM_BUTTONS);
    assert_guides(&mut bot, 1101, Protocol::Wireguard).await;
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_an_amneziawg_server_each_platform_names_amneziavpn_not_wireguard() {
    let h = harness(
        "bot_guide_awg",
        Options {
            trial_days: 3,
            ..Options::default()
        },
    )
    .await;
    let servers: Api<WgServer> = Api::namespaced(h.admin.clone(), &h.namespace);
    let server = WgServer::new(
        "main",
        serde_json::from_value(json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "main-key"},
            "protocol": "amneziawg",
            "amneziawg": {"jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
                          "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890"}
        }))
        .unwrap(),
    );
    let server = servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    h.visible(&server).await;
    let mut bot = MockBot::new(message(1102, "ru", "/start"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    bot.dispatch().await;
    h.ready_peer(1102, 1, "phone").await;
    assert_guides(&mut bot, 1102, Protocol::Amneziawg).await;
    h.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stray_guide_button_asks_for_the_platform_and_an_unknown_button_gets_help() {
    let h = harness("bot_guide_stray", Options::default()).await;
    let mut bot = MockBot::new(message(1103, "en", "/help"), handler_tree());
    bot.dependencies(dptree::deps![h.app.clone()]);
    for (code, lang) in [("en", Lang::En), ("ru", Lang::Ru)] {
        let (answer, keyboard) = press(&mut bot, 1103, code, "guide:symbian").await;
        assert_eq!(answer, text::guide_choose_platform(lang));
        assert_eq!(keyboard, PLATFORM_BUTTONS);
        bot.update(
            MockCallbackQuery::new()
                .data("nonsense:1")
                .from(common::user(1103, code)),
        );
        bot.dispatch().await;
        let responses = bot.get_responses();
        assert_eq!(responses.answered_callback_queries.len(), 1);
        assert_eq!(
            responses.sent_messages_text.last().unwrap().message.text(),
            Some(text::unknown(lang).as_str())
        );
    }
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn the_payment_notice_comes_with_the_platform_buttons() {
    let h = harness("bot_guide_paid", Options::default()).await;
    h.accept_payments().await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let now = Timestamp::now();
    let user = TelegramUser {
        id: 1104,
        username: None,
        first_name: "Anna".into(),
        last_name: None,
        language_code: Some("ru".into()),
    };
    h.ledger.upsert_user(&user, now).await.unwrap();
    let plan = h.app.plans.get("month").unwrap().clone();
    let created = h
        .ledger
        .create_payment(
            &h.app.yookassa,
            PaymentOrder {
                user_id: 1104,
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
            (METADATA_USER_ID.to_owned(), "1104".to_owned()),
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
        .user(1104)
        .await
        .unwrap()
        .unwrap()
        .entitlement
        .paid_until;

    let report = jobs::drain_outbox(&h.app, &bot, now, 100).await.unwrap();
    assert_eq!((report.sent, report.failed), (1, 0));
    let requests = telegram.received_requests().await.unwrap();
    let sent: Vec<serde_json::Value> = requests
        .iter()
        .filter(|r| r.url.path().to_ascii_lowercase().ends_with("/sendmessage"))
        .map(|r| r.body_json().unwrap())
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["chat_id"], 1104);
    assert_eq!(sent[0]["text"], text::payment_succeeded(Lang::Ru, until));
    assert_eq!(
        sent[0]["reply_markup"],
        serde_json::to_value(guide::platform_keyboard()).unwrap()
    );
    let data: Vec<&str> = sent[0]["reply_markup"]["inline_keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|button| button["callback_data"].as_str().unwrap())
        .collect();
    assert_eq!(data, PLATFORM_BUTTONS);
    h.assert_nothing_forbidden();
}
