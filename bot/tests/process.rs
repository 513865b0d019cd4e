//! The `wgsub-bot` binary as a process, configured as the chart configures it (the environment)
//! against a real PostgreSQL, a stand-in Telegram Bot API (`WGSUB_TELEGRAM_API_URL`, long
//! polling) and the real Kubernetes API server of the test process (`wgsub_testkit::envtest`, a
//! namespace per test), reached through `KUBECONFIG` with the token of the ServiceAccount the
//! chart runs it under and the chart's own Roles applied: its `--help`, a bad setting refused
//! with the flag named, without a kubeconfig a one-line error naming it; running, a user's
//! `/start` gets an answer and their `VpnSubscription` (a schema-valid server-side apply),
//! `/healthz`, `/readyz` and `/metrics` answer, logs are JSON and hold no secret, SIGTERM ends
//! it with exit 0; the API server refused none of its calls (a call the chart does not grant is
//! the server's own 403). When the Bot API stops answering, SIGTERM still ends it within its
//! shutdown timeout.
//!
//! Needs PostgreSQL (`WGSUB_TEST_DATABASE_URL`) and the control plane's binaries
//! (`KUBEBUILDER_ASSETS`, `WGSUB_HELM`), as scripts/test provides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Api;

use serde_json::{Value, json};
use wgsub_crds::VpnSubscription;
use wgsub_ledger::testing::fresh_database;
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_kubeconfig, peer_keys_namespace,
    service_account,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::{
    Process, assert_help_mentions, assert_refused_at_start, assert_stops_without_kubeconfig,
    eventually,
};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-bot");
const USER: i64 = 424_242;
const WITHIN: Duration = Duration::from_secs(15);
const PLANS: &str = "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 2\n";

/// The Bot API as the bot sees it: one `/start` from a user on the first poll, then nothing
/// (each empty poll held a little, as a long poll is); every message sent is kept. Once
/// `unreachable` is set it answers nothing (every request hangs), as a Bot API behind a broken
/// network does.
struct TelegramApi {
    delivered: AtomicBool,
    sent: Arc<Mutex<Vec<Value>>>,
    unreachable: Arc<AtomicBool>,
}

impl Respond for TelegramApi {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if self.unreachable.load(Ordering::SeqCst) {
            return ResponseTemplate::new(200).set_delay(Duration::from_secs(600));
        }
        // Bot API method names are case-insensitive (teloxide sends `GetMe`).
        let method = request
            .url
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let user =
            json!({"id": USER, "is_bot": false, "first_name": "Process", "language_code": "en"});
        let chat = json!({"id": USER, "type": "private", "first_name": "Process"});
        let ok = |result: Value| {
            ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": result}))
        };
        match method.as_str() {
            "getme" => ok(json!({
                "id": 1, "is_bot": true, "first_name": "wgsub", "username": "wgsub_test_bot",
                "can_join_groups": false, "can_read_all_group_messages": false,
                "supports_inline_queries": false, "has_main_web_app": false
            })),
            "getupdates" if !self.delivered.swap(true, Ordering::SeqCst) => ok(json!([{
                "update_id": 1,
                "message": {
                    "message_id": 1, "date": 1_700_000_000, "chat": chat, "from": user,
                    "text": "/start",
                    "entities": [{"type": "bot_command", "offset": 0, "length": 6}]
                }
            }])),
            "getupdates" => ok(json!([])).set_delay(Duration::from_millis(200)),
            "sendmessage" | "sendphoto" | "senddocument" => {
                self.sent
                    .lock()
                    .expect("the sent messages")
                    .push(body.clone());
                ok(json!({
                    "message_id": 2, "date": 1_700_000_001, "chat": chat,
                    "from": {"id": 1, "is_bot": true, "first_name": "wgsub"},
                    "text": body["text"].as_str().unwrap_or("")
                }))
            }
            _ => ok(json!(true)),
        }
    }
}

#[test]
fn help_lists_every_setting_and_a_bad_setting_stops_the_start_with_the_flag_named() {
    assert_help_mentions(
        BINARY,
        &[],
        &[
            "--bot-token",
            "--telegram-api-url",
            "--plans-file",
            "WGSUB_BOT_ADMIN_IDS",
        ],
    );
    assert_refused_at_start(BINARY, &["--http-addr", "not-an-address"], "--http-addr");
}

#[test]
fn without_a_kubernetes_configuration_the_start_stops_with_one_line_naming_the_cause() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let plans = dir.path().join("plans.yaml");
    std::fs::write(&plans, PLANS).expect("writing the plan catalogue");
    let token = format!("{USER}:made-up-{}", std::process::id());
    assert_stops_without_kubeconfig(
        BINARY,
        &[],
        &[
            "--bot-token",
            &token,
            // Connected lazily and not migrated: the Kubernetes client is what fails.
            "--database-url",
            "postgres://wgsub@127.0.0.1:1/wgsub",
            "--migrate",
            "false",
            "--namespace",
            "wgsub",
            "--plans-file",
            plans.to_str().expect("a UTF-8 path"),
            "--miniapp-url",
            "https://vpn.example.test/miniapp/",
            "--yookassa-shop-id",
            "1",
            "--yookassa-secret-key",
            "made-up",
            "--yookassa-return-url",
            "https://vpn.example.test/miniapp/",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_process_answers_start_from_long_polling_and_stops_cleanly_on_sigterm() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("bot-process").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let (_, database_url) = fresh_database("bot_process").await;
    let telegram = MockServer::start().await;
    let sent = Arc::new(Mutex::new(Vec::new()));
    Mock::given(wiremock::matchers::any())
        .respond_with(TelegramApi {
            delivered: AtomicBool::new(false),
            sent: sent.clone(),
            unreachable: Arc::default(),
        })
        .mount(&telegram)
        .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, component_kubeconfig(plane, &ns, "bot").await)
        .expect("a kubeconfig");
    let plans = dir.path().join("plans.yaml");
    std::fs::write(&plans, PLANS).expect("a plans file");
    let token = format!(
        "{}:{}",
        7_200_000_000_u64 + u64::from(std::process::id()),
        uuid::Uuid::new_v4().simple()
    );
    let secret_key = format!("test_{}", uuid::Uuid::new_v4().simple());
    let kubeconfig = kubeconfig.display().to_string();
    let plans = plans.display().to_string();
    let telegram_url = telegram.uri();
    let keys = peer_keys_namespace(&ns);
    let mut bot = Process::start(
        BINARY,
        "bot",
        dir.path(),
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("WGSUB_BOT_TOKEN", token.as_str()),
            ("WGSUB_TELEGRAM_API_URL", telegram_url.as_str()),
            ("WGSUB_DATABASE_URL", database_url.as_str()),
            ("WGSUB_NAMESPACE", ns.as_str()),
            ("WGSUB_KEYS_NAMESPACE", keys.as_str()),
            ("WGSUB_PLANS_FILE", plans.as_str()),
            ("WGSUB_MINIAPP_URL", "https://vpn.example.com/miniapp/"),
            ("WGSUB_YOOKASSA_SHOP_ID", "100500"),
            ("WGSUB_YOOKASSA_SECRET_KEY", secret_key.as_str()),
            ("WGSUB_YOOKASSA_RETURN_URL", "https://t.me/wgsub_test_bot"),
            ("WGSUB_LOG_FORMAT", "json"),
        ],
        &[],
    );
    let deadline = Instant::now() + WITHIN;
    let subscriptions: Api<VpnSubscription> = Api::namespaced(plane.admin_client(), &ns);
    let subscription = eventually(
        "the user's /start writes their VpnSubscription",
        WITHIN,
        async || {
            subscriptions
                .get_opt(&format!("tg-{USER}"))
                .await
                .expect("an admin read")
        },
    )
    .await;
    assert_eq!(subscription.spec.telegram_user_id, USER);
    loop {
        let answered = sent
            .lock()
            .expect("the sent messages")
            .iter()
            .any(|m| m["chat_id"] == json!(USER));
        if answered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/start got no answer within {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bot.wait_ready(WITHIN).await;
    let (status, metrics) = bot.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("# EOF"), "OpenMetrics text: {metrics}");

    let exit = bot.terminate(WITHIN);
    assert!(exit.success(), "the bot exits 0 on SIGTERM: {exit:?}");
    bot.json_log();
    let logs = bot.log();
    for secret in [&token, &secret_key] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret setting was logged"
        );
    }
    let requests = plane.requests_of(&ns, &service_account("bot"));
    assert!(
        requests
            .iter()
            .any(|r| r.verb == "patch" && r.resource.as_deref() == Some("vpnsubscriptions")),
        "the bot never applied the subscription: {requests:?}"
    );
    assert_nothing_forbidden(plane, &ns, "bot");
}

/// Teloxide sends a last `getUpdates` on shutdown (and retries failed polls with a backoff of
/// up to a minute); with the Bot API not answering, only the bot's own shutdown timeout ends it
/// before the pod's grace period does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_bot_within_its_shutdown_timeout_while_the_bot_api_does_not_answer() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("bot-shutdown").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let (_, database_url) = fresh_database("bot_shutdown").await;
    let telegram = MockServer::start().await;
    let unreachable = Arc::new(AtomicBool::new(false));
    Mock::given(wiremock::matchers::any())
        .respond_with(TelegramApi {
            delivered: AtomicBool::new(true),
            sent: Arc::default(),
            unreachable: unreachable.clone(),
        })
        .mount(&telegram)
        .await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, component_kubeconfig(plane, &ns, "bot").await)
        .expect("a kubeconfig");
    let plans = dir.path().join("plans.yaml");
    std::fs::write(&plans, PLANS).expect("a plans file");
    let token = format!(
        "{}:{}",
        7_300_000_000_u64 + u64::from(std::process::id()),
        uuid::Uuid::new_v4().simple()
    );
    let secret_key = format!("test_{}", uuid::Uuid::new_v4().simple());
    let (kubeconfig, plans) = (
        kubeconfig.display().to_string(),
        plans.display().to_string(),
    );
    let telegram_url = telegram.uri();
    let keys = peer_keys_namespace(&ns);
    let mut bot = Process::start(
        BINARY,
        "bot",
        dir.path(),
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("WGSUB_BOT_TOKEN", token.as_str()),
            ("WGSUB_TELEGRAM_API_URL", telegram_url.as_str()),
            ("WGSUB_DATABASE_URL", database_url.as_str()),
            ("WGSUB_NAMESPACE", ns.as_str()),
            ("WGSUB_KEYS_NAMESPACE", keys.as_str()),
            ("WGSUB_PLANS_FILE", plans.as_str()),
            ("WGSUB_MINIAPP_URL", "https://vpn.example.com/miniapp/"),
            ("WGSUB_YOOKASSA_SHOP_ID", "100500"),
            ("WGSUB_YOOKASSA_SECRET_KEY", secret_key.as_str()),
            ("WGSUB_YOOKASSA_RETURN_URL", "https://t.me/wgsub_test_bot"),
            ("WGSUB_BOT_SHUTDOWN_TIMEOUT", "2"),
            ("WGSUB_LOG_FORMAT", "json"),
        ],
        &[],
    );
    bot.wait_ready(WITHIN).await;
    // Polling has begun: the bot asked for updates at least once.
    eventually("the bot polls for updates", WITHIN, async || {
        let requests = telegram.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .any(|r| r.url.path().to_ascii_lowercase().ends_with("/getupdates"))
            .then_some(())
    })
    .await;
    unreachable.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let exit = bot.terminate(Duration::from_secs(8));
    assert!(exit.success(), "the bot exits 0 on SIGTERM: {exit:?}");
    let logs = bot.log();
    assert!(
        logs.contains("shutdown timeout"),
        "the forced stop is logged: {logs}"
    );
}
