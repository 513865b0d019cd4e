//! Locations in the bot against real PostgreSQL, the real Kubernetes API server (the bot's
//! caches and writes as its ServiceAccount under the chart's RBAC) and a fake Telegram Bot API:
//! a pick writes `spec.server` and a full or hidden server is refused with nothing written; a
//! move of a user's devices (as the operator makes it) tells that user once, in their language,
//! with a button per device — also with two runs at once — and nobody at first sight.

mod common;

use std::collections::BTreeMap;

use common::{Options, bot_for, fake_telegram, harness, sent_texts, user};
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use teloxide::types::ChatId;
use wgsub_bot::handlers::reply::Reply;
use wgsub_bot::text::{self, Lang};
use wgsub_bot::{location_moves, locations};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::subscription_name;
use wgsub_crds::{WgPeer, WgServer};
use wgsub_ledger::TelegramUser;
use wgsub_ledger::sync::LOCATION_FIELD_MANAGER;
use wgsub_testkit::fixtures;
use wiremock::MockServer;

async fn create_server(h: &common::Harness, name: &str, location: Value) {
    let servers: Api<WgServer> = Api::namespaced(h.admin.clone(), &h.namespace);
    let mut server = fixtures::server(name, "10.8.0.0/24");
    server.spec.endpoint = format!("{name}.example.com:51820");
    server.spec.location = Some(serde_json::from_value(location).unwrap());
    let server = servers
        .create(&PostParams::default(), &server)
        .await
        .unwrap();
    h.visible(&server).await;
}

async fn create_peer(h: &common::Harness, user: i64, index: u32, server: &str) {
    let subscription = subscription_name(user);
    let name = format!("{subscription}-{index}");
    let address = format!("10.8.0.{}/32", user % 100 + i64::from(index) * 10);
    let key = PrivateKey::generate();
    let mut peer = fixtures::peer(&name, &subscription, server, &key, &address);
    // Only the public key matters to moves: no key Secret is made.
    peer.spec.private_key_secret_ref = None;
    peer.spec.device_name = Some(format!("phone {index}"));
    let peers: Api<WgPeer> = Api::namespaced(h.admin.clone(), &h.namespace);
    let peer = peers.create(&PostParams::default(), &peer).await.unwrap();
    h.visible(&peer).await;
}

fn germany() -> Value {
    json!({"displayName": {"ru": "Германия", "en": "Germany"}, "country": "DE"})
}

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

#[tokio::test]
async fn a_pick_is_written_and_a_full_hidden_or_unknown_server_is_refused_writing_nothing() {
    let h = harness("bot_location_pick", Options::default()).await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    create_server(&h, "de-1", germany()).await;
    create_server(
        &h,
        "nl-1",
        json!({"displayName": {"ru": "Амстердам", "en": "Amsterdam"}, "country": "NL",
               "capacity": 1}),
    )
    .await;
    create_server(
        &h,
        "fi-1",
        json!({"displayName": {"ru": "Финляндия", "en": "Finland"}, "country": "FI",
               "hidden": true}),
    )
    .await;
    create_peer(&h, 4202, 1, "nl-1").await;

    let listed = locations::offered(&h.app, 4201, Lang::En).unwrap();
    let labels: Vec<String> = listed
        .iter()
        .map(|l| text::location_button(Lang::En, &l.label, l.full, l.current))
        .collect();
    assert_eq!(
        labels,
        ["🇩🇪 Germany", "🇳🇱 Netherlands · Amsterdam — full"],
        "the country's flag and name, and the server's name unless it is the country's"
    );
    let theirs = locations::offered(&h.app, 4202, Lang::Ru).unwrap();
    assert_eq!(
        (theirs[1].label.as_str(), theirs[1].full, theirs[1].current),
        ("🇳🇱 Нидерланды · Амстердам", false, true),
        "the user's own server is theirs and never full to them"
    );

    let anna = user(4201, "en");
    let to = Reply {
        bot: &bot,
        app: &h.app,
        chat: ChatId(4201),
        lang: Lang::En,
    };
    for server in ["nl-1", "fi-1", "nowhere"] {
        locations::on_pick(to, &anna, server).await.unwrap();
    }
    assert!(h.subscription(4201).await.is_none(), "nothing written");
    locations::on_pick(to, &anna, "de-1").await.unwrap();
    let sub = h.subscription(4201).await.expect("the pick creates it");
    assert_eq!(sub.spec.server.as_deref(), Some("de-1"));
    assert!(
        sub.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|f| f.manager.as_deref() == Some(LOCATION_FIELD_MANAGER)),
        "written by the location field manager"
    );
    let texts: Vec<String> = sent_texts(&telegram)
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        texts,
        [
            text::location_full(Lang::En).to_owned(),
            text::location_not_found(Lang::En).to_owned(),
            text::location_not_found(Lang::En).to_owned(),
            text::location_set(Lang::En, "🇩🇪 Germany"),
        ]
    );
    h.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_move_tells_the_user_once_with_a_button_per_device_and_first_sight_nobody() {
    let h = harness("bot_location_moves", Options::default()).await;
    let telegram = fake_telegram(&[]).await;
    let bot = bot_for(&telegram);
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    for (id, language) in [(4101, "en"), (4102, "ru")] {
        let tg = TelegramUser {
            id,
            username: None,
            first_name: "Anna".into(),
            last_name: None,
            language_code: Some(language.into()),
        };
        h.ledger.upsert_user(&tg, start).await.unwrap();
    }
    create_server(&h, "de-1", germany()).await;
    create_peer(&h, 4101, 1, "main").await;
    create_peer(&h, 4101, 2, "main").await;
    create_peer(&h, 4102, 1, "main").await;

    let report = location_moves::run(&h.app, &bot, start, 100).await.unwrap();
    assert_eq!((report.first_seen, report.changed), (3, 0));
    assert!(sent(&telegram).await.is_empty(), "first sight tells nobody");

    // The operator moves 4101's devices to de-1.
    let peers: Api<WgPeer> = Api::namespaced(h.admin.clone(), &h.namespace);
    for name in ["tg-4101-1", "tg-4101-2"] {
        let moved = peers
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"server": "de-1"}})),
            )
            .await
            .unwrap();
        h.visible(&moved).await;
    }
    let later = start + SignedDuration::from_mins(1);
    let (one, two) = tokio::join!(
        location_moves::run(&h.app, &bot, later, 100),
        location_moves::run(&h.app, &bot, later, 100),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.changed + two.changed, 2, "each move recorded once");
    assert_eq!(
        one.notices.sent + two.notices.sent,
        1,
        "one notice for both"
    );
    let again = location_moves::run(&h.app, &bot, later + SignedDuration::from_hours(1), 100)
        .await
        .unwrap();
    assert_eq!((again.changed, again.notices.sent), (0, 0));

    let messages = sent(&telegram).await;
    let per_chat: BTreeMap<i64, usize> =
        messages.iter().fold(BTreeMap::new(), |mut m, (c, _, _)| {
            *m.entry(*c).or_default() += 1;
            m
        });
    assert_eq!(per_chat, BTreeMap::from([(4101, 1)]));
    let (_, message, buttons) = &messages[0];
    assert_eq!(message, &text::location_moved(Lang::En, "🇩🇪 Germany"));
    assert_eq!(buttons, &["cfg:tg-4101-1", "cfg:tg-4101-2"]);

    // A later move back is a move again.
    let back = peers
        .patch(
            "tg-4101-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"server": "main"}})),
        )
        .await
        .unwrap();
    h.visible(&back).await;
    let report = location_moves::run(&h.app, &bot, later + SignedDuration::from_hours(2), 100)
        .await
        .unwrap();
    assert_eq!((report.changed, report.notices.sent), (1, 1));
    assert_eq!(
        sent(&telegram).await.last().unwrap().1,
        text::location_moved(Lang::En, "main")
    );
    h.assert_nothing_forbidden();
}
