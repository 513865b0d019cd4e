//! The `wgsub-api` binary as a process, configured as the chart configures it (the
//! environment) against a real PostgreSQL and an in-process Kubernetes API server
//! (`wgsub_testkit::fake_api`, reached through `KUBECONFIG`): its `--help`, a bad setting refused with the
//! flag named, `migrate` as the Helm hook runs it (again on an upgrade: idempotent), and
//! `serve`: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, a JSON error for a request
//! without Telegram credentials, JSON logs that hold no secret, exit 0 on SIGTERM; every
//! Kubernetes call granted by `api-calls.yaml`.
//!
//! Needs PostgreSQL (`WGSUB_TEST_DATABASE_URL`, as scripts/test provides).

use std::process::Command;
use std::time::Duration;

use wgsub_ledger::testing::fresh_database;
use wgsub_testkit::fake_api::{FakeApi, ungranted};
use wgsub_testkit::process::{Process, assert_help_mentions, assert_refused_at_start};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-api");
const NS: &str = "wgsub";
const WITHIN: Duration = Duration::from_secs(10);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_serve_as_the_chart_runs_them_and_stop_cleanly_on_sigterm() {
    let (_, database_url) = fresh_database("api_process").await;
    let kube = FakeApi::start().await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig("api")).expect("a kubeconfig");
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
    let mut api = Process::start(
        BINARY,
        "api",
        dir.path(),
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("WGSUB_DATABASE_URL", database_url.as_str()),
            ("WGSUB_NAMESPACE", NS),
            ("WGSUB_DEFAULT_SERVER", "main"),
            ("WGSUB_PLANS_FILE", plans.as_str()),
            ("WGSUB_BOT_TOKEN", bot_token.as_str()),
            ("WGSUB_PUBLIC_URL", "https://vpn.example.com"),
            ("WGSUB_YOOKASSA_SHOP_ID", "100500"),
            ("WGSUB_YOOKASSA_SECRET_KEY", secret_key.as_str()),
            ("WGSUB_LOG_FORMAT", "json"),
        ],
        &["serve"],
    );
    api.wait_ready(WITHIN).await;
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
    let requests = kube.requests_from("api");
    assert!(
        !requests.is_empty(),
        "the API never asked Kubernetes (its readiness lists peers)"
    );
    let refused = ungranted(include_str!("../api-calls.yaml"), &requests);
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
