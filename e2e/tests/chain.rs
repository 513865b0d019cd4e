//! The whole chain in one process, where a cluster would be: a Telegram user buys a plan in the
//! Mini App, YooKassa (a local fake) reports the payment by webhook to the API, the API applies it
//! to the ledger (a real PostgreSQL) and writes the `VpnSubscription` into a Kubernetes API server
//! (in-process, with list and watch over HTTP) that every component shares; the operator's
//! controller, told by its watches, makes the `WgPeer` and its key `Secret`; the node-agent,
//! told by its own watches, puts the peer on a real wireguard-go interface in a `server`
//! network namespace; a `client` namespace configured from the API's `/config` download pings the
//! server through the tunnel. Then the clock passes `paidUntil`: the peer leaves the interface
//! and the ping fails. Prints the activation latency (webhook sent → peer on the interface) and
//! the cut-off latency (`paidUntil` → peer gone). Every Kubernetes call each component made is one
//! its RBAC contract (`api-calls.yaml`) grants.
//!
//! Every component reads the real clock, so the paid period is made to end seconds from now: the
//! fake YooKassa reports the payment captured a day (the plan's length) minus a few seconds ago,
//! and the ledger runs a payment from its capture time.
//!
//! Needs root, wireguard-go, wireguard-tools, iproute2, ping, nft and PostgreSQL
//! (`WGSUB_TEST_DATABASE_URL`, as scripts/test provides): fails with a message otherwise.

#[path = "chain/api.rs"]
mod api;
#[path = "chain/cluster.rs"]
mod cluster;
#[path = "chain/lab.rs"]
mod lab;
#[path = "chain/yookassa.rs"]
mod yookassa;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::plans::{LocalizedText, Plan, PlanCatalogue};
use wgsub_crds::resources::{peer_name, subscription_name};
use wgsub_crds::{SubscriptionPhase, VpnSubscription, WgPeer, WgServer, WgServerSpec};
use wgsub_ledger::TelegramUser;

use crate::api::ApiServer;
use crate::cluster::{Cluster, NAMESPACE, NODE};
use crate::lab::{Lab, SERVER_VETH_ADDRESS};
use crate::yookassa::FakeYooKassa;

/// The default `WgServer`, as the chart creates it.
const SERVER: &str = "main";
const LISTEN_PORT: u16 = 51820;
const POOL: &str = "10.8.0.0/24";
/// The server's own address in the pool: what the client pings.
const SERVER_TUNNEL_ADDRESS: &str = "10.8.0.1";
const USER_ID: i64 = 5_550_001;
const PLAN: &str = "day";
/// How long after the webhook the paid period ends: room for activation, the config download,
/// the client's setup and a ping.
const PAID_FOR: SignedDuration = SignedDuration::from_secs(10);
const ACTIVATION_BOUND: Duration = Duration::from_secs(5);
const CUT_OFF_BOUND: SignedDuration = SignedDuration::from_secs(5);
/// How often the test looks at the interface while timing.
const LOOK: Duration = Duration::from_millis(5);

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
    }])
    .expect("a valid plan catalogue")
}

fn server(lab: &Lab) -> WgServer {
    let spec: WgServerSpec = serde_json::from_value(json!({
        "endpoint": format!("{SERVER_VETH_ADDRESS}:{LISTEN_PORT}"),
        "listenPort": LISTEN_PORT,
        "interfaceName": lab.server_if,
        "addressPool": POOL,
        "clientAllowedIPs": [POOL],
        "mtu": 1420,
        "nodeName": NODE,
        "privateKeySecretRef": {"name": "main-key", "key": "privateKey"},
    }))
    .expect("a valid WgServer spec");
    let mut server = WgServer::new(SERVER, spec);
    server.metadata.namespace = Some(NAMESPACE.to_owned());
    server
}

/// An address YooKassa sends notifications from.
fn yookassa_source() -> IpAddr {
    wgsub_api::clientip::yookassa_ranges()[0]
        .hosts()
        .next()
        .expect("YooKassa's first range has hosts")
}

/// Polls `check` every 50 ms until it gives a value; panics after `within`.
async fn wait_for<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn phase(subscription: &VpnSubscription) -> Option<SubscriptionPhase> {
    subscription.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_webhook_brings_the_tunnel_up_and_paid_until_takes_it_down() {
    let lab = Lab::new();
    let (_, database_url) = wgsub_ledger::testing::fresh_database("e2e_chain").await;
    let yookassa = FakeYooKassa::start().await;
    let cluster = Cluster::start(server(&lab), &lab.server_netns_path()).await;
    let bot_token = api::generate_bot_token();
    let mut flags: Vec<String> = [
        "--database-url",
        &database_url,
        "--namespace",
        NAMESPACE,
        "--default-server",
        SERVER,
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
        cluster.client_for("api"),
        &flags,
        &plans(),
        config_dir.path(),
    )
    .await;

    // The node-agent brings the server's interface up and publishes its public key.
    let servers = cluster.api::<WgServer>();
    let server_key = wait_for(
        "the server's public key in the WgServer status",
        Duration::from_secs(10),
        async || servers.get(SERVER).await.ok()?.status?.public_key,
    )
    .await;
    assert!(lab.server_interface_exists().await);
    assert!(lab.server_peers().await.is_empty());

    // The user opens the Mini App and buys the plan.
    let user = TelegramUser {
        id: USER_ID,
        username: Some("chain_test_user".to_owned()),
        first_name: "Chain".to_owned(),
        last_name: None,
        language_code: Some("en".to_owned()),
    };
    let app = api.mini_app(&user, &bot_token);
    let me = app.get("/api/v1/me").await;
    assert_eq!(me.status(), 200);
    assert_eq!(json_of(me).await["subscription"]["phase"], "Pending");
    let created = app.post("/api/v1/payments", &json!({"plan": PLAN})).await;
    assert_eq!(created.status(), 201);
    let created = json_of(created).await;
    assert!(
        created["confirmationUrl"]
            .as_str()
            .is_some_and(|url| url.starts_with("https://")),
        "{created}"
    );

    // The user pays at YooKassa. The plan is a day long: captured a day minus PAID_FOR ago, the
    // payment is paid until PAID_FOR from now.
    let payment_id = yookassa.single_payment_id();
    let plan_length = plans().get(PLAN).expect("the plan").duration();
    // YooKassa reports times to the millisecond.
    let captured_at = (Timestamp::now() + PAID_FOR - plan_length)
        .round(jiff::Unit::Millisecond)
        .expect("a representable instant");
    let payment = yookassa.pay(&payment_id, captured_at);
    let notification = |payment: &Value| json!({"type": "notification", "event": "payment.succeeded", "object": payment});

    // A notification from outside YooKassa's addresses is refused and changes nothing.
    let forged = api
        .yookassa_webhook(
            "203.0.113.7".parse().expect("an IP"),
            &notification(&payment),
        )
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(json_of(forged).await["code"], "forbidden");

    // YooKassa's notification; the interface is watched from before it is sent.
    let watched = {
        let lab_server_if = lab.server_if.clone();
        tokio::spawn(async move {
            loop {
                let output = tokio::process::Command::new("wg")
                    .args(["show", &lab_server_if, "peers"])
                    .output()
                    .await;
                if let Ok(output) = output
                    && output.status.success()
                    && !output.stdout.is_empty()
                {
                    let keys: Vec<String> = String::from_utf8_lossy(&output.stdout)
                        .lines()
                        .map(str::to_owned)
                        .collect();
                    return (Instant::now(), keys);
                }
                tokio::time::sleep(LOOK).await;
            }
        })
    };
    let sent = Instant::now();
    let accepted = api
        .yookassa_webhook(yookassa_source(), &notification(&payment))
        .await;
    let answered_in = sent.elapsed();
    assert_eq!(accepted.status(), 200);
    assert_eq!(json_of(accepted).await["outcome"], "applied");
    let Ok(watched) = tokio::time::timeout(Duration::from_secs(10), watched).await else {
        panic!(
            "the peer did not reach the interface within 10 s of the webhook; the cluster \
             holds:\n{}",
            cluster.describe().await
        );
    };
    let (on_interface_at, keys) = watched.expect("the interface watcher runs");
    let activation = on_interface_at.saturating_duration_since(sent);

    // What each link of the chain wrote.
    let paid_until = captured_at + plan_length;
    let subscription_name = subscription_name(USER_ID);
    let subscriptions = cluster.api::<VpnSubscription>();
    let subscription = subscriptions
        .get(&subscription_name)
        .await
        .expect("the API wrote the user's VpnSubscription");
    assert_eq!(subscription.spec.paid_until, Some(paid_until));
    assert_eq!(subscription.spec.plan.as_deref(), Some(PLAN));
    let peer_name = peer_name(&subscription_name, 1);
    let peer = cluster
        .api::<WgPeer>()
        .get(&peer_name)
        .await
        .expect("the operator made the device's WgPeer");
    assert_eq!(peer.spec.expires_at, Some(paid_until));
    let public_key = peer.spec.public_key.clone().expect("a public key");
    assert_eq!(
        keys,
        vec![public_key.clone()],
        "the interface holds the peer"
    );
    let key_ref = peer
        .spec
        .private_key_secret_ref
        .clone()
        .expect("a key Secret reference");
    let secret = cluster
        .api::<Secret>()
        .get(&key_ref.name)
        .await
        .expect("the operator wrote the key Secret");
    let stored = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&key_ref.key))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .expect("the Secret holds the key");
    let private = PrivateKey::from_base64(stored.trim()).expect("a valid private key");
    assert_eq!(private.public_key().to_base64(), public_key);
    wait_for(
        "the subscription's status Active",
        Duration::from_secs(5),
        async || {
            let subscription = subscriptions.get(&subscription_name).await.ok()?;
            (phase(&subscription) == Some(SubscriptionPhase::Active)).then_some(())
        },
    )
    .await;

    // The device downloads its config from the API and pings through the tunnel.
    let config_path = format!("/api/v1/me/peers/{peer_name}/config");
    let download = app.get(&config_path).await;
    assert_eq!(download.status(), 200);
    let conf = download.text().await.expect("the config text");
    assert!(conf.contains(&format!("PublicKey = {server_key}")));
    assert!(conf.contains(&format!("Endpoint = {SERVER_VETH_ADDRESS}:{LISTEN_PORT}")));
    lab.connect_client(&conf);
    assert!(
        lab.ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(5))
            .await,
        "the client's ping through the tunnel got no answer"
    );
    assert!(
        Timestamp::now() < paid_until,
        "the tunnel came up only after paidUntil: PAID_FOR ({PAID_FOR:?}) is too short here"
    );

    // The clock passes paidUntil.
    let gone_at = loop {
        if !lab.server_peers().await.contains(&public_key) {
            break Timestamp::now();
        }
        assert!(
            Timestamp::now() < paid_until + SignedDuration::from_secs(10),
            "the peer is still on the interface 10 s after paidUntil"
        );
        tokio::time::sleep(LOOK).await;
    };
    assert!(
        gone_at >= paid_until,
        "the peer left the interface before paidUntil ({paid_until}) at {gone_at}"
    );
    let cut_off = gone_at.duration_since(paid_until);
    assert!(
        !lab.ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(3))
            .await,
        "the ping still gets through after paidUntil"
    );
    let refused = app.get(&config_path).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json_of(refused).await["code"], "subscription_inactive");
    wait_for(
        "the subscription's status Expired",
        Duration::from_secs(5),
        async || {
            let subscription = subscriptions.get(&subscription_name).await.ok()?;
            (phase(&subscription) == Some(SubscriptionPhase::Expired)).then_some(())
        },
    )
    .await;

    println!(
        "activation latency (webhook sent → peer on the interface): {} ms (the API answered the webhook in {} ms)",
        activation.as_millis(),
        answered_in.as_millis()
    );
    println!(
        "cut-off latency (paidUntil → peer gone from the interface): {} ms",
        cut_off.as_millis()
    );
    assert!(
        activation < ACTIVATION_BOUND,
        "activation took {activation:?}"
    );
    assert!(cut_off < CUT_OFF_BOUND, "cut-off took {cut_off:?}");
    let refused = cluster.refused_requests();
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
