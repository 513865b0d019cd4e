//! The `wgsub-api` binary as a process, configured as the chart configures it (the
//! environment) against a real PostgreSQL and an in-process Kubernetes API server
//! (`wgsub_fake_api`, reached through `KUBECONFIG`): its `--help`, a bad setting refused with the
//! flag named, `migrate` as the Helm hook runs it (again on an upgrade: idempotent), and
//! `serve`: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, a JSON error for a request
//! without Telegram credentials, JSON logs that hold no secret, exit 0 on SIGTERM; every
//! Kubernetes call granted by `api-calls.yaml`.
//!
//! Needs PostgreSQL (`WGSUB_TEST_DATABASE_URL`, as scripts/test provides).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wgsub_fake_api::{FakeApi, ungranted};
use wgsub_ledger::testing::fresh_database;

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-api");
const NS: &str = "wgsub";
const WITHIN: Duration = Duration::from_secs(10);
const PLANS: &str = "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 2\n";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Secrets made for this run only.
fn made_up_secret(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

struct Api {
    child: Child,
    port: u16,
}

impl Api {
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[test]
fn help_lists_both_commands_and_a_bad_setting_stops_the_start_with_the_flag_named() {
    let help = Command::new(BINARY).arg("--help").output().expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("serve") && text.contains("migrate"), "{text}");
    let help = Command::new(BINARY)
        .args(["serve", "--help"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--database-url",
        "--bot-token",
        "--yookassa-shop-id",
        "WGSUB_TRUSTED_PROXIES",
    ] {
        assert!(text.contains(flag), "serve --help mentions {flag}: {text}");
    }
    let bad = Command::new(BINARY)
        .env_clear()
        .args(["serve", "--http-addr", "not-an-address"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2), "a bad setting exits 2");
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("--http-addr"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_serve_as_the_chart_runs_them_and_stop_cleanly_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    let logs = dir.path().join("api.log");

    // The Helm hook's `migrate`, on a database that is already up to date (an upgrade).
    let migrated = Command::new(BINARY)
        .env_clear()
        .env("WGSUB_DATABASE_URL", &database_url)
        .arg("migrate")
        .output()
        .expect("migrate runs");
    assert!(migrated.status.success(), "migrate: {migrated:?}");

    let port = free_port();
    let child = Command::new(BINARY)
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("WGSUB_DATABASE_URL", &database_url)
        .env("WGSUB_NAMESPACE", NS)
        .env("WGSUB_DEFAULT_SERVER", "main")
        .env("WGSUB_PLANS_FILE", &plans)
        .env("WGSUB_BOT_TOKEN", &bot_token)
        .env("WGSUB_PUBLIC_URL", "https://vpn.example.com")
        .env("WGSUB_YOOKASSA_SHOP_ID", "100500")
        .env("WGSUB_YOOKASSA_SECRET_KEY", &secret_key)
        .env("WGSUB_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("WGSUB_LOG_FORMAT", "json")
        .arg("serve")
        .stdout(std::fs::File::create(&logs).expect("a log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the API starts");
    let mut api = Api { child, port };

    for path in ["/healthz", "/readyz"] {
        eventually(&format!("the API answers {path} with 200"), async || {
            (api.get(path).await?.0 == 200).then_some(())
        })
        .await;
    }
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

    let sent = Command::new("kill")
        .args(["-TERM", &api.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + WITHIN;
    let exit = loop {
        if let Some(exit) = api.child.try_wait().expect("waiting") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the API still runs {WITHIN:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "the API exits 0 on SIGTERM: {exit:?}");

    let logs = std::fs::read_to_string(&logs).expect("the log");
    assert!(!logs.is_empty(), "the API logged nothing");
    for line in logs.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(entry.get("level").is_some(), "{line}");
    }
    for secret in [&bot_token, &secret_key, &database_url] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret setting was logged"
        );
    }
    let requests = kube.requests();
    assert!(
        requests.iter().any(|r| r.client.as_deref() == Some("api")),
        "the API never asked Kubernetes (its readiness lists peers)"
    );
    let refused = ungranted(include_str!("../api-calls.yaml"), &requests);
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
