//! Benchmark server for `api/bench/run-wrk`: the real `wgsub-api serve` application — settings
//! parsed by the binary's own clap definition, state built by
//! [`wgsub_api::state::state_from_args`], router by [`wgsub_api::app`], served by axum on a
//! loopback TCP port with the same multi-threaded tokio runtime as the binary — with two
//! stand-ins:
//!
//! - **Kubernetes is the in-memory `kube-fake-client`, in this process**, seeded with a
//!   `WgServer` (with its public key in status), a paid `VpnSubscription` `tg-<id>`, and a ready
//!   `WgPeer` `tg-<id>-1` with its private key `Secret`. Kubernetes calls therefore cost an
//!   in-process lookup plus (de)serialisation: the numbers EXCLUDE the network round trip to a
//!   real API server, its authentication/authorisation, etcd and API-server load. Every handler
//!   still makes the same calls (each `/me` does one subscription `get` and one labelled peer
//!   `list`; each `qr` does a peer `get`, a subscription `get`, a server `get` and a Secret
//!   `get`), so against a real cluster add those round trips (typically 1–5 ms each).
//! - **PostgreSQL is real**: a fresh database in the server at `WGSUB_TEST_DATABASE_URL`
//!   (migrated by `state_from_args` as in production); the user is seeded through the ledger.
//!   YooKassa is not called by the benchmarked endpoints (its URL points at a closed port).
//!
//! The Mini App's `Authorization: tma <initData>` is signed with a bot token made at start (never
//! a literal), valid for 24 h. On stdout, one `KEY=value` per line, then `READY`:
//! `BASE` (e.g. `http://127.0.0.1:40123`), `AUTH` (the whole header value), `ME` and `QR`
//! (paths). Listens on `WGSUB_BENCH_LISTEN` (default `127.0.0.1:0`, a free port); runs until
//! killed. The drift loop the binary also runs is not started (it does not serve requests).
//!
//! Run: `cargo run --release -p wgsub-api --example bench_server` (or `api/bench/run-wrk`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser as _;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;
use wgsub_api::config::{Cli, Command, ServeArgs};
use wgsub_api::state::state_from_args;
use wgsub_api::{app, initdata};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::LABEL_SUBSCRIPTION;
use wgsub_crds::{
    SecretKeyRef, VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec, WgServer,
    WgServerStatus,
};
use wgsub_ledger::TelegramUser;

const NAMESPACE: &str = "wgsub";
const SERVER: &str = "main";
const USER_ID: i64 = 424_242;

fn serve_args(flags: &[String]) -> ServeArgs {
    let cli = Cli::try_parse_from(
        ["wgsub-api", "serve"]
            .into_iter()
            .map(str::to_owned)
            .chain(flags.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("wgsub-api does not accept the benchmark's flags: {e}"));
    match cli.command {
        Command::Serve(args) => *args,
        Command::Migrate(_) => unreachable!("parsed as serve"),
    }
}

/// Creates an empty database named for this run and returns its URL.
async fn fresh_database_url() -> String {
    let base = std::env::var("WGSUB_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "WGSUB_TEST_DATABASE_URL is not set: the benchmark needs PostgreSQL \
             (`source scripts/test-postgres; start_test_postgres DIR`)"
        )
    });
    let name = format!("wgsub_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to WGSUB_TEST_DATABASE_URL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the benchmark database");
    match base.rfind('/') {
        Some(slash) if !base[slash..].contains('@') => format!("{}/{name}", &base[..slash]),
        _ => panic!("WGSUB_TEST_DATABASE_URL must end in /<database>"),
    }
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(NAMESPACE.to_owned()),
        ..ObjectMeta::default()
    }
}

/// The in-memory cluster with the server, the user's paid subscription and one ready device.
async fn seeded_cluster() -> (kube::Client, String) {
    let mut server = WgServer::new(
        SERVER,
        serde_json::from_value(json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "dns": ["1.1.1.1"],
            "privateKeySecretRef": {"name": "main-key"}
        }))
        .expect("a WgServer spec"),
    );
    server.metadata = named(SERVER);
    server.status = Some(WgServerStatus {
        public_key: Some(PrivateKey::generate().public_key().to_base64()),
        ..WgServerStatus::default()
    });
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<VpnSubscription>()
        .with_resource::<WgPeer>()
        .with_resource::<WgServer>()
        .with_object(server)
        .build()
        .await
        .expect("the in-memory Kubernetes API");
    let create = PostParams::default();
    let subscription_name = format!("tg-{USER_ID}");
    let mut spec = VpnSubscriptionSpec::for_user(USER_ID);
    spec.paid_until = Some(Timestamp::now() + SignedDuration::from_hours(24 * 30));
    spec.plan = Some("month".into());
    spec.max_devices = 2;
    let mut subscription = VpnSubscription::new(&subscription_name, spec);
    subscription.metadata = named(&subscription_name);
    let subscription = Api::<VpnSubscription>::namespaced(client.clone(), NAMESPACE)
        .create(&create, &subscription)
        .await
        .expect("seed the subscription");
    let peer_name = format!("{subscription_name}-1");
    let secret_name = format!("{peer_name}-key");
    let key = PrivateKey::generate();
    let secret = Secret {
        metadata: named(&secret_name),
        data: Some(BTreeMap::from([(
            "privateKey".to_owned(),
            ByteString(key.to_base64().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&create, &secret)
        .await
        .expect("seed the key Secret");
    let mut peer = WgPeer::new(
        &peer_name,
        WgPeerSpec {
            server: SERVER.into(),
            public_key: Some(key.public_key().to_base64()),
            private_key_secret_ref: Some(SecretKeyRef::new(secret_name, "privateKey")),
            preshared_key_secret_ref: None,
            address: Some("10.8.0.2/32".into()),
            address6: None,
            expires_at: subscription.spec.paid_until,
            enabled: true,
            device_name: Some("Phone".into()),
        },
    );
    peer.metadata = named(&peer_name);
    peer.metadata.labels = Some(BTreeMap::from([(
        LABEL_SUBSCRIPTION.to_owned(),
        subscription_name,
    )]));
    Api::<WgPeer>::namespaced(client.clone(), NAMESPACE)
        .create(&create, &peer)
        .await
        .expect("seed the peer");
    (client, peer_name)
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let plans_file = dir.path().join("plans.yaml");
    std::fs::write(
        &plans_file,
        "plans:\n  - id: month\n    title: {ru: \"Месяц\", en: \"Month\"}\n    days: 30\n    priceMinor: 19900\n    currency: RUB\n    devices: 2\n",
    )
    .expect("write the plans file");
    let bot_token = format!("7000000001:{}", uuid::Uuid::new_v4().simple());
    let listen = std::env::var("WGSUB_BENCH_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let flags: Vec<String> = [
        "--database-url",
        &fresh_database_url().await,
        "--namespace",
        NAMESPACE,
        "--default-server",
        SERVER,
        "--plans-file",
        &plans_file.display().to_string(),
        "--bot-token",
        &bot_token,
        "--public-url",
        "https://vpn.example.com",
        "--yookassa-shop-id",
        "100001",
        "--yookassa-secret-key",
        &format!("test_{}", uuid::Uuid::new_v4().simple()),
        "--yookassa-api-url",
        "http://127.0.0.1:9/v3",
        "--http-addr",
        &listen,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let args = serve_args(&flags);
    let (client, peer_name) = seeded_cluster().await;
    let state = state_from_args(&args, client)
        .await
        .expect("the API state from its settings");
    let user = TelegramUser {
        id: USER_ID,
        username: Some("bench_user".into()),
        first_name: "Bench".into(),
        last_name: None,
        language_code: Some("en".into()),
    };
    state
        .ledger
        .upsert_user(&user, Timestamp::now())
        .await
        .expect("seed the user");
    let user_json = json!({
        "id": USER_ID, "first_name": "Bench", "username": "bench_user", "language_code": "en"
    })
    .to_string();
    let auth_date = Timestamp::now().as_second().to_string();
    let init_data = initdata::sign(
        &[("auth_date", &auth_date), ("user", &user_json)],
        &bot_token,
    );
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .expect("listen");
    let address = listener.local_addr().expect("the listening address");
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "BASE=http://{address}\nAUTH=tma {init_data}\nME=/api/v1/me\nQR=/api/v1/me/peers/{peer_name}/qr\nREADY"
    )
    .and_then(|()| stdout.flush())
    .expect("write to stdout");
    drop(stdout);
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .expect("serve");
}
