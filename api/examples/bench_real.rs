//! Benchmark of the Mini App's reads on the REAL Kubernetes API server: `GET /api/v1/me`, a
//! device's `config` and its `qr`, measured with `wrk` against the release `wgsub-api serve`
//! process with 1 user and with `USERS` (default 10,000) users in the namespace.
//!
//! What it builds: `wgsub_testkit::envtest::ControlPlane` (kube-apiserver + etcd, this
//! process), a namespace with the chart's RBAC, the `WgServer` `main` with its public key, and
//! per user: the ledger rows in a fresh PostgreSQL database from `WGSUB_TEST_DATABASE_URL`
//! (user and a 30-day grant), the `VpnSubscription` written by the ledger's own sync (so the
//! api's drift loop finds nothing to repair), the peer key `Secret` (labelled as the operator
//! labels it) and a ready `WgPeer` — created in parallel. The api runs as its own process
//! (`target/release/wgsub-api`, next to this example), authenticated as the chart's api
//! ServiceAccount, exactly as `api/tests/process.rs` runs it.
//!
//! For each user count and endpoint (always user 1's, signed initData): full throughput
//! (`wrk -t2 -c$CONNECTIONS`) and paced to at most `$RATE` req/s (`wrk -t2
//! -c$PACED_CONNECTIONS` with a Lua `delay()` per connection — Debian's wrk has no `-R`; see
//! `api/bench/run-wrk`). Prints p50/p99/req/s per run, the load (`uptime`), the api's RSS
//! (`VmRSS`/`VmHWM`) at the end, and the number of non-watch API-server requests the api made
//! while being measured (from the server's audit log; the reads make none).
//!
//! Run (needs `wrk`: `apt-get install wrk`; and the environment scripts/test sets up:
//! `KUBEBUILDER_ASSETS`, `WGSUB_HELM`, `WGSUB_TEST_DATABASE_URL`):
//!
//! ```text
//! cargo build --release -p wgsub-api --bin wgsub-api --example bench_real &&
//!   "${CARGO_TARGET_DIR:-target}/release/examples/bench_real"
//! ```
//!
//! Environment: `USERS` (10000), `DURATION` (10s), `CONNECTIONS` (32), `RATE` (1000),
//! `PACED_CONNECTIONS` (100), `SETTLE` (seconds to wait after seeding before measuring, so the
//! API server and etcd are quiet again; 20).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use wgsub_api::initdata;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::{WgPeer, WgServer};
use wgsub_ledger::testing::fresh_database;
use wgsub_ledger::{AdminGrant, Ledger, SubscriptionSync, TelegramUser};
use wgsub_testkit::chart::{
    apply_chart_rbac, component_kubeconfig, peer_keys_namespace, service_account,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;

const FIRST_USER: i64 = 1_000_000;
const PLANS: &str = "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 2\n";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Everything one user needs: ledger rows, the subscription (the ledger's own apply), the
/// key Secret and a ready peer.
async fn seed_user(
    ledger: &Ledger,
    sync: &SubscriptionSync,
    admin: &kube::Client,
    namespace: &str,
    index: i64,
) -> anyhow::Result<()> {
    let id = FIRST_USER + index;
    let now = Timestamp::now();
    ledger
        .upsert_user(
            &TelegramUser {
                id,
                username: None,
                first_name: format!("User{index}"),
                last_name: None,
                language_code: Some("en".into()),
            },
            now,
        )
        .await?;
    ledger
        .admin_grant(
            &AdminGrant {
                user_id: id,
                days: 30,
                admin_id: 1,
                reason: "benchmark".into(),
            },
            now,
        )
        .await?;
    let subscription = sync.sync_user(ledger, id).await?;
    let name = format!("tg-{id}-1");
    let key = PrivateKey::generate();
    Api::<Secret>::namespaced(admin.clone(), &peer_keys_namespace(namespace))
        .create(&PostParams::default(), &fixtures::key_secret(&name, &key))
        .await?;
    let address = format!("10.64.{}.{}/32", (index + 2) / 256, (index + 2) % 256);
    let mut peer = fixtures::peer(&name, &format!("tg-{id}"), "main", &key, &address);
    peer.spec.expires_at = subscription.spec.paid_until;
    peer.spec.device_name = Some("Phone".into());
    Api::<WgPeer>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &peer)
        .await?;
    Ok(())
}

/// One wrk run's figures.
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    requests_per_second: f64,
    non_2xx: u64,
}

fn millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(output: &str) -> Option<Figures> {
    let mut p50 = None;
    let mut p99 = None;
    let mut rps = None;
    let mut non_2xx = 0;
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => p50 = millis(value),
            ["99%", value] => p99 = millis(value),
            ["Requests/sec:", value] => rps = value.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", value] => non_2xx = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(Figures {
        p50_ms: p50?,
        p99_ms: p99?,
        requests_per_second: rps?,
        non_2xx,
    })
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

struct Bench {
    base: String,
    auth: String,
    duration: String,
    connections: String,
    paced_connections: u32,
    rate: u32,
    lua: std::path::PathBuf,
}

impl Bench {
    fn wrk(&self, path: &str, paced: bool) -> Figures {
        let mut command = Command::new("wrk");
        command.args(["-t2", "-d", &self.duration, "--latency", "-H"]);
        command.arg(format!("Authorization: {}", self.auth));
        if paced {
            command.args(["-c", &self.paced_connections.to_string(), "-s"]);
            command.arg(&self.lua);
        } else {
            command.args(["-c", &self.connections]);
        }
        command.arg(format!("{}{path}", self.base));
        let output = command.output().expect("wrk runs (apt-get install wrk)");
        let text = String::from_utf8_lossy(&output.stdout);
        parse_wrk(&text).unwrap_or_else(|| panic!("wrk output not understood:\n{text}"))
    }

    /// Every endpoint at full throughput and paced; prints one line per run.
    fn measure(&self, users: i64, paths: &[(&str, String)]) {
        println!("\n== {users} user(s) in the namespace; load: {}", uptime());
        for (label, path) in paths {
            for paced in [false, true] {
                let figures = self.wrk(path, paced);
                let mode = if paced {
                    format!("paced <= {} req/s", self.rate)
                } else {
                    format!("full, {} connections", self.connections)
                };
                println!(
                    "| {users} | {label} | {mode} | {:.2} ms | {:.2} ms | {:.0} | {} |",
                    figures.p50_ms, figures.p99_ms, figures.requests_per_second, figures.non_2xx
                );
            }
        }
        println!("load after: {}", uptime());
    }
}

fn rss(child: &Child) -> String {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .filter(|line| line.starts_with("VmRSS") || line.starts_with("VmHWM"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn get(client: &reqwest::Client, url: &str, auth: &str) -> Option<(u16, String)> {
    let response = client
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Waits until `user`'s `/me` lists their ready device (the api's caches hold it).
async fn until_device_ready(client: &reqwest::Client, base: &str, auth: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let answer = get(client, &format!("{base}/api/v1/me"), auth).await;
        if let Some((200, body)) = &answer
            && serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|me| me["devices"][0]["ready"] == json!(true))
        {
            return;
        }
        assert!(
            started.elapsed() < within,
            "the api never showed the device; its last answer: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sign(user: i64, token: &str) -> String {
    let now = Timestamp::now().as_second().to_string();
    let user = json!({"id": user, "first_name": "Bench", "language_code": "en"}).to_string();
    format!(
        "tma {}",
        initdata::sign(&[("auth_date", &now), ("user", &user)], token)
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let users: i64 = env_or("USERS", "10000").parse()?;
    let rate: u32 = env_or("RATE", "1000").parse()?;
    let paced_connections: u32 = env_or("PACED_CONNECTIONS", "100").parse()?;
    let binary = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|release| release.join("wgsub-api"))
        .expect("the release directory");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: cargo build --release -p wgsub-api --bin wgsub-api",
        binary.display()
    );

    let plane = ControlPlane::with_crds();
    let namespace = plane.namespace("bench").await;
    apply_chart_rbac(plane, &namespace, &[]).await;
    let admin = plane.admin_client();
    let servers: Api<WgServer> = Api::namespaced(admin.clone(), &namespace);
    let mut server = fixtures::server("main", "10.64.0.0/16");
    server.spec.dns = vec!["1.1.1.1".into()];
    servers.create(&PostParams::default(), &server).await?;
    fixtures::publish_server_key(&servers, "main").await;
    let (pool, database_url) = fresh_database("bench_real").await;
    let ledger = Ledger::new(pool, false);
    let sync = SubscriptionSync::new(admin.clone(), &namespace);
    seed_user(&ledger, &sync, &admin, &namespace, 0).await?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        component_kubeconfig(plane, &namespace, "api").await,
    )?;
    let plans = dir.path().join("plans.yaml");
    std::fs::write(&plans, PLANS)?;
    let token = format!("4242:{}", uuid::Uuid::new_v4().simple());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut api = Command::new(&binary)
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("WGSUB_DATABASE_URL", &database_url)
        .env("WGSUB_NAMESPACE", &namespace)
        .env("WGSUB_KEYS_NAMESPACE", peer_keys_namespace(&namespace))
        .env("WGSUB_DEFAULT_SERVER", "main")
        .env("WGSUB_PLANS_FILE", &plans)
        .env("WGSUB_BOT_TOKEN", &token)
        .env("WGSUB_PUBLIC_URL", "https://vpn.example.com")
        .env("WGSUB_YOOKASSA_SHOP_ID", "100500")
        .env(
            "WGSUB_YOOKASSA_SECRET_KEY",
            uuid::Uuid::new_v4().to_string(),
        )
        .env("WGSUB_DRIFT_INTERVAL", "1h")
        .env("WGSUB_LOG_FILTER", "warn")
        .env("WGSUB_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(Stdio::null())
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let auth = sign(FIRST_USER, &token);
    let http = reqwest::Client::new();
    until_device_ready(&http, &base, &auth, Duration::from_secs(60)).await;

    let lua = dir.path().join("paced.lua");
    let delay_ms = paced_connections * 1000 / rate;
    std::fs::write(
        &lua,
        format!("function delay()\n  return {delay_ms}\nend\n"),
    )?;
    let bench = Bench {
        base: base.clone(),
        auth: auth.clone(),
        duration: env_or("DURATION", "10s"),
        connections: env_or("CONNECTIONS", "32"),
        paced_connections,
        rate,
        lua,
    };
    let device = format!("/api/v1/me/peers/tg-{FIRST_USER}-1");
    let paths = [
        ("GET /api/v1/me", "/api/v1/me".to_owned()),
        ("GET config", format!("{device}/config")),
        ("GET qr (png)", format!("{device}/qr")),
    ];
    println!("| users | endpoint | mode | p50 | p99 | req/s | non-2xx |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let audited = |plane: &ControlPlane| {
        plane
            .requests_of(&namespace, &service_account("api"))
            .into_iter()
            .filter(|r| r.verb != "watch")
            .count()
    };
    let before = audited(plane);
    bench.measure(1, &paths);
    println!(
        "api RSS with 1 user: {}; non-watch API-server requests while measured: {}",
        rss(&api),
        audited(plane) - before
    );

    let started = Instant::now();
    futures::stream::iter(1..users)
        .map(|index| {
            let (ledger, sync, admin, namespace) = (&ledger, &sync, &admin, &namespace);
            async move { seed_user(ledger, sync, admin, namespace, index).await }
        })
        .buffer_unordered(48)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "\nseeded {} more users (ledger, subscription, key Secret, peer) in {:.1}s",
        users - 1,
        started.elapsed().as_secs_f64()
    );
    let last = sign(FIRST_USER + users - 1, &token);
    until_device_ready(&http, &base, &last, Duration::from_secs(120)).await;
    let settle: u64 = env_or("SETTLE", "20").parse()?;
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let before = audited(plane);
    bench.measure(users, &paths);
    println!(
        "api RSS with {users} users: {}; non-watch API-server requests while measured: {}",
        rss(&api),
        audited(plane) - before
    );
    api.kill()?;
    api.wait()?;
    Ok(())
}
