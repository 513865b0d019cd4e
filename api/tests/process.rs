//! The `wgsub-api` binary as a process, configured as the chart configures it (the
//! environment) against a real PostgreSQL and the real Kubernetes API server of the test
//! process (`wgsub_testkit::envtest`, a namespace per test), reached through `KUBECONFIG` with
//! the token of the ServiceAccount the chart runs it under and the chart's own Roles applied:
//! its `--help`, a bad setting refused with the flag named, `migrate` as the Helm hook runs it
//! (again on an upgrade: idempotent), and `serve`: a paying user of the ledger gets their
//! `VpnSubscription` written (a schema-valid server-side apply), `/healthz`, `/readyz` (which
//! lists peers), `/metrics`, `/openapi.json`, a JSON error for a request without Telegram
//! credentials, JSON logs that hold no secret, exit 0 on SIGTERM; the API server refused none
//! of its calls (a call the chart does not grant is the server's own 403).
//!
//! Needs PostgreSQL (`WGSUB_TEST_DATABASE_URL`) and the control plane's binaries
//! (`KUBEBUILDER_ASSETS`, `WGSUB_HELM`), as scripts/test provides.

use std::process::Command;
use std::time::Duration;

use jiff::Timestamp;
use kube::Api;
use wgsub_crds::VpnSubscription;
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{AdminGrant, Ledger, TelegramUser};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_kubeconfig, peer_keys_namespace,
    service_account,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::{
    Process, assert_help_mentions, assert_refused_at_start, assert_stops_without_kubeconfig,
    eventually,
};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-api");
const WITHIN: Duration = Duration::from_secs(15);
const USER: i64 = 515_151;
const PLANS: &str = "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 2\n";

/// Secrets made for this run only.
fn made_up_secret(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

#[test]
fn help_lists_both_commands_and_a_bad_setting_stops_the_start_with_the_flag_named() {
    assert_help_mentions(BINARY, &[], &["serve", "migrate"]);
    assert_help_mentions(
        BINARY,
        &["serve"],
        &[
            "--database-url",
            "--bot-token",
            "--yookassa-shop-id",
            "WGSUB_TRUSTED_PROXIES",
        ],
    );
    assert_refused_at_start(
        BINARY,
        &["serve", "--http-addr", "not-an-address"],
        "--http-addr",
    );
}

#[test]
fn without_a_kubernetes_configuration_serve_stops_with_one_line_naming_the_cause() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let plans = dir.path().join("plans.yaml");
    std::fs::write(&plans, PLANS).expect("a plans file");
    let plans = plans.display().to_string();
    let bot_token = format!("7100000000:{}", made_up_secret("t"));
    let secret_key = made_up_secret("test_");
    assert_stops_without_kubeconfig(
        BINARY,
        &[
            // Never connected to: the pool is lazy and Kubernetes comes first.
            ("WGSUB_DATABASE_URL", "postgres://wgsub@127.0.0.1:1/wgsub"),
            ("WGSUB_NAMESPACE", "wgsub"),
            ("WGSUB_PLANS_FILE", plans.as_str()),
            ("WGSUB_BOT_TOKEN", bot_token.as_str()),
            ("WGSUB_PUBLIC_URL", "https://vpn.example.com"),
            ("WGSUB_YOOKASSA_SHOP_ID", "100500"),
            ("WGSUB_YOOKASSA_SECRET_KEY", secret_key.as_str()),
        ],
        &["serve"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_serve_under_the_charts_rbac_and_stop_cleanly_on_sigterm() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("api-process").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let (pool, database_url) = fresh_database("api_process").await;
    // A user who was granted time before this start: serving writes their subscription.
    let ledger = Ledger::new(pool, false);
    let now = Timestamp::now();
    let user = TelegramUser {
        id: USER,
        username: None,
        first_name: "Process".into(),
        last_name: None,
        language_code: Some("en".into()),
    };
    ledger.upsert_user(&user, now).await.expect("a user");
    let granted = ledger
        .admin_grant(
            &AdminGrant {
                user_id: USER,
                days: 30,
                admin_id: 1,
                reason: "process test".into(),
            },
            now,
        )
        .await
        .expect("a grant");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, component_kubeconfig(plane, &ns, "api").await)
        .expect("a kubeconfig");
    let plans = dir.path().join("plans.yaml");
    std::fs::write(&plans, PLANS).expect("a plans file");
    let bot_token = format!(
        "{}:{}",
        7_100_000_000_u64 + u64::from(std::process::id()),
        made_up_secret("t")
    );
    let secret_key = made_up_secret("test_");

    // The Helm hook's `migrate`, on a database that is already up to date (an upgrade).
    let migrated = Command::new(BINARY)
        .env_clear()
        .env("WGSUB_DATABASE_URL", &database_url)
        .arg("migrate")
        .output()
        .expect("migrate runs");
    assert!(migrated.status.success(), "migrate: {migrated:?}");

    let kubeconfig = kubeconfig.display().to_string();
    let plans = plans.display().to_string();
    let keys = peer_keys_namespace(&ns);
    let mut api = Process::start(
        BINARY,
        "api",
        dir.path(),
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("WGSUB_DATABASE_URL", database_url.as_str()),
            ("WGSUB_NAMESPACE", ns.as_str()),
            ("WGSUB_KEYS_NAMESPACE", keys.as_str()),
            ("WGSUB_DEFAULT_SERVER", "main"),
            ("WGSUB_PLANS_FILE", plans.as_str()),
            ("WGSUB_BOT_TOKEN", bot_token.as_str()),
            ("WGSUB_PUBLIC_URL", "https://vpn.example.com"),
            ("WGSUB_YOOKASSA_SHOP_ID", "100500"),
            ("WGSUB_YOOKASSA_SECRET_KEY", secret_key.as_str()),
            ("WGSUB_DRIFT_INTERVAL", "1s"),
            ("WGSUB_LOG_FORMAT", "json"),
        ],
        &["serve"],
    );
    api.wait_ready(WITHIN).await;
    let subscriptions: Api<VpnSubscription> = Api::namespaced(plane.admin_client(), &ns);
    let written = eventually(
        "the paying user's VpnSubscription is written",
        WITHIN,
        async || {
            subscriptions
                .get_opt(&format!("tg-{USER}"))
                .await
                .expect("an admin read")
        },
    )
    .await;
    assert_eq!(written.spec.telegram_user_id, USER);
    assert_eq!(written.spec.paid_until, granted.paid_until);
    let (status, metrics) = api.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("# EOF"), "OpenMetrics text: {metrics}");
    let (status, openapi) = api
        .get("/openapi.json")
        .await
        .expect("the OpenAPI document");
    assert_eq!(status, 200);
    let openapi: serde_json::Value = serde_json::from_str(&openapi).expect("JSON");
    assert!(openapi["paths"]["/api/v1/me"].is_object(), "{openapi}");
    let (status, refused) = api.get("/api/v1/me").await.expect("an answer");
    assert_eq!(status, 401);
    let refused: serde_json::Value = serde_json::from_str(&refused).expect("a JSON error");
    assert!(
        refused["code"].is_string() && refused["message"].is_string(),
        "{refused}"
    );

    let exit = api.terminate(WITHIN);
    assert!(exit.success(), "the API exits 0 on SIGTERM: {exit:?}");
    api.json_log();
    let logs = api.log();
    for secret in [&bot_token, &secret_key, &database_url] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret setting was logged"
        );
    }
    let requests = plane.requests_of(&ns, &service_account("api"));
    assert!(
        requests
            .iter()
            .any(|r| r.verb == "list" && r.resource.as_deref() == Some("wgpeers")),
        "the API never listed peers (its peer cache does): {requests:?}"
    );
    assert_nothing_forbidden(plane, &ns, "api");
}
