//! A location move end to end, on the real Kubernetes API server of this test process with the
//! chart's RBAC (every component as its ServiceAccount): two WgServers on one VPN node — `main`
//! (the default) and `de-1`, each offered as a location with its own interface, port and pool —
//! served by one node-agent in a `server` network namespace. A user buys a plan in the Mini App
//! (YooKassa a local fake, the ledger a real PostgreSQL) and gets a device on `main`; then picks
//! `de-1` with `PUT /api/v1/me/location`. The operator re-addresses the device from `de-1`'s pool
//! with the same key, the node-agent takes it off `main`'s interface and puts it on `de-1`'s,
//! and reports it Ready there; the config downloaded again brings a real tunnel up through the
//! new server (a `client` namespace pings `de-1`'s own tunnel address).
//!
//! Needs what `chain.rs` needs: root, wireguard-go, wireguard-tools, iproute2, ping, nft,
//! PostgreSQL (`WGSUB_TEST_DATABASE_URL`) and the control plane's binaries
//! (`KUBEBUILDER_ASSETS`), as scripts/test provides.

#[path = "chain/api.rs"]
#[allow(dead_code)]
mod api;
#[path = "chain/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "chain/lab.rs"]
#[allow(dead_code)]
mod lab;
#[path = "chain/yookassa.rs"]
#[allow(dead_code)]
mod yookassa;

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::PostParams;
use serde_json::{Value, json};
use wgsub_crds::plans::{LocalizedText, Plan, PlanCatalogue};
use wgsub_crds::resources::{CONDITION_READY, peer_name, subscription_name};
use wgsub_crds::{WgPeer, WgServer, WgServerSpec};
use wgsub_ledger::TelegramUser;

use crate::api::ApiServer;
use crate::cluster::Cluster;
use crate::lab::{Lab, SERVER_VETH_ADDRESS};
use crate::yookassa::FakeYooKassa;

const USER_ID: i64 = 5_550_077;
const PLAN: &str = "day";
/// `(name, port, pool, the server's own tunnel address, country, English name)`.
const MAIN: (&str, u16, &str, &str, &str, &str) = (
    "main",
    51820,
    "10.8.0.0/24",
    "10.8.0.1",
    "NL",
    "Netherlands",
);
const DE: (&str, u16, &str, &str, &str, &str) =
    ("de-1", 51821, "10.9.0.0/24", "10.9.0.1", "DE", "Germany");

fn plans() -> PlanCatalogue {
    PlanCatalogue::new(vec![Plan {
        id: PLAN.to_owned(),
        title: LocalizedText {
            ru: "1 день".to_owned(),
            en: "1 day".to_owned(),
        },
        days: 1,
        price_minor: 9_900,
        currency: "RUB".to_owned(),
        devices: 1,
        price_stars: None,
        traffic_gib: None,
    }])
    .expect("a valid plan catalogue")
}

fn server(
    cluster: &Cluster,
    interface: &str,
    (name, port, pool, _, country, english): (&str, u16, &str, &str, &str, &str),
) -> WgServer {
    let spec: WgServerSpec = serde_json::from_value(json!({
        "endpoint": format!("{SERVER_VETH_ADDRESS}:{port}"),
        "listenPort": port,
        "interfaceName": interface,
        "addressPool": pool,
        "clientAllowedIPs": [pool],
        "mtu": 1420,
        "nodeName": cluster.node,
        "privateKeySecretRef": {"name": format!("{name}-key"), "key": "privateKey"},
        "location": {"displayName": {"ru": english, "en": english}, "country": country},
    }))
    .expect("a valid WgServer spec");
    let mut server = WgServer::new(name, spec);
    server.metadata.namespace = Some(cluster.namespace.clone());
    server
}

fn user() -> TelegramUser {
    TelegramUser {
        id: USER_ID,
        username: Some("location_test_user".to_owned()),
        first_name: "Mover".to_owned(),
        last_name: None,
        language_code: Some("en".to_owned()),
    }
}

/// Polls `check` every 50 ms until it gives a value; panics after `within`.
async fn wait_for<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// The public keys on the userspace interface `interface`.
async fn peers_on(interface: &str) -> Vec<String> {
    let output = tokio::process::Command::new("wg")
        .args(["show", interface, "peers"])
        .output()
        .await
        .expect("wg runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The peer, once it is on `server` with its spec's generation reported Ready by the agent.
fn ready_on(peer: &WgPeer, server: &str) -> bool {
    let status = peer.status.clone().unwrap_or_default();
    peer.spec.server == server
        && status.observed_generation == peer.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == CONDITION_READY && c.status == "True")
}

/// Removes the second server's interface (the lab removes its own).
struct SecondInterface(String, String);

impl Drop for SecondInterface {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["-n", &self.0, "link", "del", &self.1])
            .output();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_user_moves_to_another_server_and_tunnels_through_it() {
    let lab = Lab::new('m');
    let de_interface = format!("{}d", lab.server_if);
    assert!(
        de_interface.len() <= 15,
        "{de_interface} fits an interface name"
    );
    let _second = SecondInterface(lab.server_ns.clone(), de_interface.clone());
    let (_, database_url) = wgsub_ledger::testing::fresh_database("e2e_location").await;
    let yookassa = FakeYooKassa::start().await;
    let mut cluster = Cluster::new("location").await;
    cluster
        .start(
            &server(&cluster, &lab.server_if, MAIN),
            &lab.server_netns_path(),
        )
        .await;
    cluster
        .api::<WgServer>()
        .create(&PostParams::default(), &server(&cluster, &de_interface, DE))
        .await
        .expect("the API server admits the second WgServer");
    let bot_token = api::generate_bot_token();
    let mut flags: Vec<String> = [
        "--database-url",
        &database_url,
        "--namespace",
        &cluster.namespace,
        "--keys-namespace",
        &wgsub_testkit::chart::peer_keys_namespace(&cluster.namespace),
        "--default-server",
        MAIN.0,
        "--bot-token",
        &bot_token,
        "--public-url",
        "https://vpn.example.com",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    flags.extend(yookassa.api_flags());
    let config_dir = tempfile::tempdir().expect("a temporary directory");
    let api = ApiServer::start(
        cluster.client_for("api").await,
        &flags,
        &plans(),
        config_dir.path(),
    )
    .await;
    let servers = cluster.api::<WgServer>();
    let de_key = wait_for(
        "both servers' public keys",
        Duration::from_secs(15),
        async || {
            servers.get(MAIN.0).await.ok()?.status?.public_key?;
            servers.get(DE.0).await.ok()?.status?.public_key
        },
    )
    .await;

    // The user buys a day and gets a device on the default server.
    let app = api.mini_app(&user(), &bot_token);
    let created = app.post("/api/v1/payments", &json!({"plan": PLAN})).await;
    assert_eq!(created.status(), 201);
    let payment = yookassa.pay(&yookassa.single_payment_id(), Timestamp::now());
    let source: IpAddr = wgsub_api::clientip::yookassa_ranges()[0]
        .hosts()
        .next()
        .expect("YooKassa's first range has hosts");
    let accepted = api
        .yookassa_webhook(
            source,
            &json!({"type": "notification", "event": "payment.succeeded", "object": payment}),
        )
        .await;
    assert_eq!(accepted.status(), 200);
    let peers = cluster.api::<WgPeer>();
    let device = peer_name(&subscription_name(USER_ID), 1);
    let before = wait_for(
        "the device Ready on main",
        Duration::from_secs(10),
        async || {
            peers
                .get(&device)
                .await
                .ok()
                .filter(|p| ready_on(p, MAIN.0))
        },
    )
    .await;
    let key = before.spec.public_key.clone().expect("a published key");
    assert_eq!(peers_on(&lab.server_if).await, std::slice::from_ref(&key));
    assert!(peers_on(&de_interface).await.is_empty());

    // Both locations are offered, main is the user's.
    let listed = json_of(app.get("/api/v1/locations").await).await;
    let rows: Vec<(&str, &str, bool, bool)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|l| {
            (
                l["server"].as_str().unwrap(),
                l["flag"].as_str().unwrap(),
                l["full"].as_bool().unwrap(),
                l["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("de-1", "🇩🇪", false, false), ("main", "🇳🇱", false, true)]
    );

    // The move.
    let moved = app
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/me/location",
            &json!({"server": DE.0}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    assert_eq!(json_of(moved).await["subscription"]["server"], DE.0);
    let after = wait_for(
        "the device Ready on de-1",
        Duration::from_secs(15),
        async || peers.get(&device).await.ok().filter(|p| ready_on(p, DE.0)),
    )
    .await;
    assert_eq!(
        after.spec.public_key.as_deref(),
        Some(key.as_str()),
        "the key stays"
    );
    let address = after.spec.address.clone().expect("an address");
    assert!(
        address.starts_with("10.9.0."),
        "{address} is from de-1's pool"
    );
    wait_for(
        "the device off main's interface",
        Duration::from_secs(10),
        async || peers_on(&lab.server_if).await.is_empty().then_some(()),
    )
    .await;
    assert_eq!(peers_on(&de_interface).await, [key]);

    // The config downloaded again tunnels through the new server.
    let conf = app
        .get(&format!("/api/v1/me/peers/{device}/config"))
        .await
        .text()
        .await
        .expect("the config text");
    assert!(conf.contains(&format!("PublicKey = {de_key}")));
    assert!(conf.contains(&format!("Endpoint = {SERVER_VETH_ADDRESS}:{}", DE.1)));
    assert!(conf.contains(&address));
    lab.connect_client(&conf);
    assert!(
        lab.ping_answers(DE.3, Duration::from_secs(5)).await,
        "the client's ping through the new server got no answer"
    );
    assert!(
        !lab.ping_answers(MAIN.3, Duration::from_secs(2)).await,
        "the old server's tunnel address is not reachable through the new config"
    );
    cluster.assert_nothing_forbidden();
}
