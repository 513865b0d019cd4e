//! Test support: an `App` over a fresh PostgreSQL database (from `WGSUB_TEST_DATABASE_URL`,
//! migrations run), the real Kubernetes API server of the test process
//! (`wgsub_testkit::envtest`, a fresh namespace per harness with the chart's RBAC applied; the
//! bot's client is authenticated as its ServiceAccount, the test's own setup and checks use the
//! admin) and a fake YooKassa; Telegram users and messages as `teloxide_tests` mocks; a fake
//! Telegram Bot API (wiremock) for the jobs.
//! With `Options::pgbouncer` the database is reached through a real PgBouncer in transaction
//! pooling (the ledger's test support, shared by path) and the ledger runs in PgBouncer mode.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use teloxide::types::User;
use teloxide_tests::{MockMessageText, MockPrivateChat, MockUser};
use wgsub_bot::app::{App, Settings};
use wgsub_bot::broadcast::Pacing;
use wgsub_bot::config::AdminIds;
use wgsub_bot::metrics::Metrics;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::plans::PlanCatalogue;
use wgsub_crds::resources::subscription_name;
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_devices::{CacheOptions, Caches};
use wgsub_ledger::{Ledger, ReceiptSettings, SubscriptionSync, YooKassa, YooKassaConfig};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const ADMIN: u64 = 900;

pub const PLANS: &str = "plans:
  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 1}
  - {id: quarter, title: {ru: Квартал, en: Quarter}, days: 90, priceMinor: 54900, currency: RUB, devices: 3}
";

#[path = "../../../ledger/tests/support/pgbouncer.rs"]
mod pgbouncer;

pub mod payments;

pub struct Harness {
    pub app: Arc<App>,
    pub ledger: Ledger,
    /// The test's own view of Kubernetes (setup and checks): the admin.
    pub admin: kube::Client,
    /// The namespace of this harness (the bot's `--namespace`).
    pub namespace: String,
    pub plane: &'static ControlPlane,
    pub yookassa: MockServer,
    /// The pooler, when the test asked for one (stopped when the harness is dropped).
    pub pgbouncer: Option<pgbouncer::PgBouncer>,
}

#[derive(Default)]
pub struct Options {
    pub receipts: bool,
    pub trial_days: u32,
    /// Reach PostgreSQL through PgBouncer in transaction pooling (two server connections).
    pub pgbouncer: bool,
    /// Another plan catalogue (YAML) than [`PLANS`].
    pub plans: Option<&'static str>,
}

pub async fn harness(label: &str, options: Options) -> Harness {
    let (_, direct_url) = wgsub_ledger::testing::fresh_database(label).await;
    let pgbouncer = if options.pgbouncer {
        Some(pgbouncer::PgBouncer::start(2).await)
    } else {
        None
    };
    let url = match &pgbouncer {
        Some(bouncer) => {
            let database = direct_url.rsplit('/').next().expect("a database name");
            bouncer.url(database)
        }
        None => direct_url,
    };
    // teloxide_tests runs each dispatch on a runtime of its own that ends with it, so pooled
    // connections must not outlive their use: close each one when it is released.
    let connect = wgsub_ledger::DbConfig {
        pgbouncer: options.pgbouncer,
        ..wgsub_ledger::DbConfig::new(url)
    }
    .connect_options()
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .after_release(|_, _| Box::pin(async { Ok(false) }))
        .connect_lazy_with(connect);
    let ledger = Ledger::new(pool, options.pgbouncer);
    let plane = ControlPlane::with_crds();
    let namespace = plane.namespace(&label.replace('_', "-")).await;
    apply_chart_rbac(plane, &namespace, &[]).await;
    let kube = component_client(plane, &namespace, "bot").await;
    let yookassa = MockServer::start().await;
    let client = YooKassa::new(YooKassaConfig {
        api_base: format!("{}/v3", yookassa.uri()),
        shop_id: "424242".into(),
        // Made per test: no secret literal in the repository.
        secret_key: format!("test_{}", uuid::Uuid::new_v4().simple()).into(),
        timeout: Duration::from_secs(2),
        max_attempts: 2,
        retry_backoff: Duration::from_millis(10),
    })
    .unwrap();
    let app = Arc::new(App {
        ledger: ledger.clone(),
        sync: SubscriptionSync::new(kube.clone(), &namespace),
        caches: Caches::spawn(
            kube.clone(),
            &namespace,
            CacheOptions {
                keys_namespace: Some(peer_keys_namespace(&namespace)),
                subscriptions: true,
                ..CacheOptions::default()
            },
        ),
        kube,
        namespace: namespace.clone(),
        yookassa: client,
        plans: PlanCatalogue::from_yaml_str(options.plans.unwrap_or(PLANS)).unwrap(),
        settings: Settings {
            admin_ids: AdminIds(vec![ADMIN as i64]),
            trial_days: options.trial_days,
            miniapp_url: "https://vpn.example.com/miniapp/".parse().unwrap(),
            return_url: "https://t.me/example_bot".into(),
            receipts: options.receipts.then_some(ReceiptSettings { vat_code: 1 }),
            pacing: Pacing::new(30, 1).unwrap(),
            progress_every: 2,
        },
        metrics: Arc::new(Metrics::new()),
    });
    assert!(
        app.caches.synced(Duration::from_secs(10)).await,
        "the bot's caches sync"
    );
    Harness {
        app,
        ledger,
        admin: plane.admin_client(),
        namespace,
        plane,
        yookassa,
        pgbouncer,
    }
}

pub fn user(id: u64, language: &str) -> User {
    MockUser::new()
        .id(id)
        .first_name("Anna")
        .username(format!("user_{id}"))
        .language_code(language)
        .build()
}

pub fn message(from: u64, language: &str, text: &str) -> MockMessageText {
    MockMessageText::new()
        .text(text)
        .from(user(from, language))
        .chat(MockPrivateChat::new().id(from as i64).build())
}

impl Harness {
    /// Fails with the server's own 403s when the bot made a call the chart does not grant.
    pub fn assert_nothing_forbidden(&self) {
        assert_nothing_forbidden(self.plane, &self.namespace, "bot");
    }

    /// YooKassa answers `POST /v3/payments` with a pending payment and a confirmation URL.
    pub async fn accept_payments(&self) {
        Mock::given(method("POST"))
            .and(path("/v3/payments"))
            .respond_with(|request: &Request| {
                let body: serde_json::Value = request.body_json().unwrap();
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": "yk-1",
                    "status": "pending",
                    "paid": false,
                    "amount": body["amount"],
                    "metadata": body["metadata"],
                    "confirmation": {"type": "redirect", "confirmation_url": "https://yoomoney.example/checkout?orderId=yk-1"},
                }))
            })
            .mount(&self.yookassa)
            .await;
    }

    /// What YooKassa received.
    pub async fn payment_requests(&self) -> Vec<serde_json::Value> {
        self.yookassa
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/v3/payments")
            .map(|r| r.body_json().unwrap())
            .collect()
    }

    /// A server with a published key and a ready peer (key Secret, address) for `user`.
    pub async fn ready_peer(&self, user: i64, index: u32, device: &str) {
        let servers: Api<WgServer> = Api::namespaced(self.admin.clone(), &self.namespace);
        if servers.get_opt("main").await.unwrap().is_none() {
            let mut server = fixtures::server("main", "10.8.0.0/24");
            server.spec.dns = vec!["1.1.1.1".into()];
            servers
                .create(&PostParams::default(), &server)
                .await
                .unwrap();
            // The node-agent publishes the key through the status subresource.
            let server = fixtures::publish_server_key(&servers, "main").await;
            self.visible(&server).await;
        }
        let subscription = subscription_name(user);
        let name = format!("{subscription}-{index}");
        let key = PrivateKey::generate();
        // The key Secret in the peer keys namespace, as the operator writes it.
        let keys_namespace = peer_keys_namespace(&self.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), &keys_namespace);
        let mut secret = fixtures::key_secret(&name, &key);
        secret.metadata.namespace = Some(keys_namespace.clone());
        let secret = secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        self.visible(&secret).await;
        let peers: Api<WgPeer> = Api::namespaced(self.admin.clone(), &self.namespace);
        let address = format!("10.8.0.{}/32", index + 1);
        let mut peer = fixtures::peer(&name, &subscription, "main", &key, &address);
        peer.spec.device_name = Some(device.into());
        peer.metadata.namespace = Some(self.namespace.clone());
        let peer = peers.create(&PostParams::default(), &peer).await.unwrap();
        self.visible(&peer).await;
    }

    /// Waits until the bot's caches hold `written` (an object the test wrote as the admin).
    pub async fn visible<K: wgsub_devices::cache::Cached>(&self, written: &K) {
        assert!(
            self.app
                .caches
                .wait_for(written, Duration::from_secs(5))
                .await,
            "the bot's caches show the test's write"
        );
    }

    pub async fn subscription(&self, user: i64) -> Option<VpnSubscription> {
        let api: Api<VpnSubscription> = Api::namespaced(self.admin.clone(), &self.namespace);
        api.get_opt(&subscription_name(user)).await.unwrap()
    }
}

/// A fake Telegram Bot API: every method succeeds except `sendMessage` to the chats in
/// `blocked`, which answer 403 "bot was blocked by the user".
pub async fn fake_telegram(blocked: &[i64]) -> MockServer {
    let server = MockServer::start().await;
    let blocked = blocked.to_vec();
    Mock::given(method("POST"))
        .respond_with(move |request: &Request| {
            let body: serde_json::Value = request.body_json().unwrap_or_default();
            let chat = body["chat_id"].as_i64().unwrap_or_default();
            let send = request
                .url
                .path()
                .to_ascii_lowercase()
                .ends_with("/sendmessage");
            if !send {
                return ResponseTemplate::new(200)
                    .set_body_json(json!({"ok": true, "result": true}));
            }
            if blocked.contains(&chat) {
                return ResponseTemplate::new(403).set_body_json(json!({
                    "ok": false,
                    "error_code": 403,
                    "description": "Forbidden: bot was blocked by the user"
                }));
            }
            ResponseTemplate::new(200).set_body_json(json!({
                "ok": true,
                "result": {
                    "message_id": 1,
                    "date": 0,
                    "chat": {"id": chat, "type": "private", "first_name": "x"},
                    "text": body["text"],
                }
            }))
        })
        .mount(&server)
        .await;
    server
}

/// A bot talking to `server`, with a token made for the test.
pub fn bot_for(server: &MockServer) -> teloxide::Bot {
    let token = format!(
        "{}:{}",
        100_000 + rand_suffix() % 100_000,
        uuid::Uuid::new_v4().simple()
    );
    teloxide::Bot::new(token).set_api_url(server.uri().parse().unwrap())
}

fn rand_suffix() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32)
}

/// The `sendMessage` requests `server` received: (chat, text).
pub async fn sent_texts(server: &MockServer) -> Vec<(i64, String)> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().to_ascii_lowercase().ends_with("/sendmessage"))
        .map(|r| {
            let body: serde_json::Value = r.body_json().unwrap();
            (
                body["chat_id"].as_i64().unwrap(),
                body["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
