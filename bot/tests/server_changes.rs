//! Telling users that their AmneziaWG server's parameters changed, against real PostgreSQL, the
//! real Kubernetes API server (the bot's caches as its ServiceAccount under the chart's RBAC)
//! and a fake Telegram Bot API: the first sight of a server tells nobody, a change tells each
//! user with a peer on it exactly once (in their language, with a button per device) even with
//! two runs at once and a run stopped half-way, a chat that blocked the bot is tried once and
//! never again, a change back is a change again, and a WireGuard server never counts.

mod common;

use std::collections::BTreeMap;

use common::{Options, bot_for, fake_telegram, harness};
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use wgsub_bot::server_changes;
use wgsub_bot::text::{self, Lang};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::subscription_name;
use wgsub_crds::{WgPeer, WgServer};
use wgsub_ledger::TelegramUser;
use wgsub_testkit::fixtures;
use wiremock::MockServer;

fn tg(id: i64, language: &str) -> TelegramUser {
    TelegramUser {
        id,
        username: None,
        first_name: "Anna".into(),
        last_name: None,
        language_code: Some(language.into()),
    }
}

fn amneziawg(jc: i32) -> serde_json::Value {
    json!({"jc": jc, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
           "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890"})
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
            let body: serde_json::Value = r.body_json().unwrap();
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

fn per_chat(messages: &[(i64, String, Vec<String>)]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for (chat, _, _) in messages {
        *counts.entry(*chat).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_parameter_change_tells_each_user_on_the_server_once_and_wireguard_never() {
    let h = harness("bot_server_params", Options::default()).await;
    let telegram = fake_telegram(&[4004]).await;
    let bot = bot_for(&telegram);
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    for (id, language) in [(4001, "en"), (4002, "ru"), (4003, "en"), (4004, "en")] {
        h.ledger
            .upsert_user(&tg(id, language), start)
            .await
            .unwrap();
    }

    let servers: Api<WgServer> = Api::namespaced(h.admin.clone(), &h.namespace);
    for (name, protocol) in [
        (
            "awg",
            json!({"protocol": "amneziawg", "amneziawg": amneziawg(4)}),
        ),
        ("plain", json!({})),
    ] {
        let mut spec = json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": format!("{name}-key")},
        });
        for (key, value) in protocol.as_object().unwrap() {
            spec[key] = value.clone();
        }
        let server = WgServer::new(name, serde_json::from_value(spec).unwrap());
        let server = servers
            .create(&PostParams::default(), &server)
            .await
            .unwrap();
        h.visible(&server).await;
    }
    // 4001 has two devices on the AmneziaWG server, 4002 and 4004 (who blocked the bot) one,
    // 4003 only a WireGuard one.
    let peers: Api<WgPeer> = Api::namespaced(h.admin.clone(), &h.namespace);
    for (user, index, server) in [
        (4001, 1, "awg"),
        (4001, 2, "awg"),
        (4002, 1, "awg"),
        (4003, 1, "plain"),
        (4004, 1, "awg"),
    ] {
        let subscription = subscription_name(user);
        let name = format!("{subscription}-{index}");
        let address = format!("10.8.0.{}/32", user - 4000 + index * 10);
        let key = PrivateKey::generate();
        let mut peer = fixtures::peer(&name, &subscription, server, &key, &address);
        // Only the public key matters to the notices: no key Secret is made.
        peer.spec.private_key_secret_ref = None;
        peer.spec.device_name = Some(format!("phone {index}"));
        let peer = peers.create(&PostParams::default(), &peer).await.unwrap();
        h.visible(&peer).await;
    }

    // First sight: recorded, nobody told (their configs already carry these parameters).
    let report = server_changes::run(&h.app, &bot, start, 100).await.unwrap();
    assert_eq!((report.first_seen, report.changed), (1, 0));
    assert_eq!(report.notices.sent, 0);
    assert!(sent(&telegram).await.is_empty());

    // The parameters change, and the WireGuard server changes too.
    let patch = |spec: serde_json::Value| Patch::Merge(json!({ "spec": spec }));
    let server = servers
        .patch(
            "awg",
            &PatchParams::default(),
            &patch(json!({"amneziawg": {"jc": 5}})),
        )
        .await
        .unwrap();
    h.visible(&server).await;
    let server = servers
        .patch(
            "plain",
            &PatchParams::default(),
            &patch(json!({"mtu": 1380})),
        )
        .await
        .unwrap();
    h.visible(&server).await;

    // A run stopped after one notice (a restart half-way): the other stays queued.
    let later = start + SignedDuration::from_mins(1);
    let report = server_changes::run(&h.app, &bot, later, 1).await.unwrap();
    assert_eq!((report.first_seen, report.changed), (0, 1));
    assert_eq!(report.notices.sent, 1);
    assert_eq!(sent(&telegram).await.len(), 1);

    // Two replicas at once: the rest goes out once — the blocked chat tried once, never
    // retried — and nothing again afterwards.
    let (one, two) = tokio::join!(
        server_changes::run(&h.app, &bot, later, 100),
        server_changes::run(&h.app, &bot, later, 100),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.changed + two.changed, 0, "the change was recorded once");
    assert_eq!(one.notices.sent + two.notices.sent, 1);
    assert_eq!(one.notices.failed + two.notices.failed, 1);
    let report = server_changes::run(&h.app, &bot, later + SignedDuration::from_hours(2), 100)
        .await
        .unwrap();
    assert_eq!(report.changed, 0);
    assert_eq!((report.notices.sent, report.notices.failed), (0, 0));

    let messages = sent(&telegram).await;
    assert_eq!(
        per_chat(&messages),
        BTreeMap::from([(4001, 1), (4002, 1), (4004, 1)])
    );
    for (chat, message, buttons) in &messages {
        match chat {
            4001 => {
                assert_eq!(message, text::server_params_changed(Lang::En));
                assert_eq!(buttons, &["cfg:tg-4001-1", "cfg:tg-4001-2"]);
            }
            4002 => {
                assert_eq!(message, text::server_params_changed(Lang::Ru));
                assert_eq!(buttons, &["cfg:tg-4002-1"]);
            }
            _ => assert_eq!(buttons, &["cfg:tg-4004-1"]),
        }
    }

    // Changing back is a change again: each user is told once more.
    let server = servers
        .patch(
            "awg",
            &PatchParams::default(),
            &patch(json!({"amneziawg": {"jc": 4}})),
        )
        .await
        .unwrap();
    h.visible(&server).await;
    let report = server_changes::run(&h.app, &bot, later + SignedDuration::from_hours(3), 100)
        .await
        .unwrap();
    assert_eq!(report.changed, 1);
    assert_eq!((report.notices.sent, report.notices.failed), (2, 1));
    let messages = sent(&telegram).await;
    assert_eq!(
        per_chat(&messages),
        BTreeMap::from([(4001, 2), (4002, 2), (4004, 2)])
    );
    h.assert_nothing_forbidden();
}
