//! The whole chain in one process, on the real Kubernetes API server of this test process
//! (`wgsub_testkit::envtest`), where a cluster would be: a Telegram user buys a plan in the Mini
//! App, YooKassa (a local fake) reports the payment by webhook to the API, the API applies it
//! to the ledger (a real PostgreSQL) and writes the `VpnSubscription`; the operator's
//! controller, told by its watches, makes the `WgPeer` and its key `Secret`; the node-agent,
//! told by its own watches, puts the peer on a real wireguard-go interface in a `server`
//! network namespace; a `client` namespace configured from the API's `/config` download pings the
//! server through the tunnel. Then either the clock passes `paidUntil` (the peer leaves the
//! interface and the ping fails) or an administrator deletes the `VpnSubscription` (the garbage
//! collector removes its `WgPeer` and key `Secret`, and the peer leaves the interface). A
//! third test rotates the device's key and then deletes the device through the Mini App API:
//! each time the config the client holds stops handshaking at once, and the rotated one works.
//!
//! Each test has its own namespace with the chart's RBAC, and every component (operator,
//! node-agent, api, bot) talks to the server as the ServiceAccount the chart runs it under: a
//! call the chart does not grant is the server's own 403, and fails the test. Prints the
//! activation latency (webhook sent → peer on the interface) and the cut-off latencies.
//!
//! Every component reads the real clock, so the paid period is made to end seconds from now: the
//! fake YooKassa reports the payment captured a day (the plan's length) minus a few seconds ago,
//! and the ledger runs a payment from its capture time.
//!
//! Needs root, wireguard-go, wireguard-tools, iproute2, ping, nft, PostgreSQL
//! (`WGSUB_TEST_DATABASE_URL`) and the control plane's binaries (`KUBEBUILDER_ASSETS`), as
//! scripts/test provides: fails with a message otherwise.

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
use kube::api::DeleteParams;
use kube::{Api, Resource};
use serde_json::{Value, json};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::plans::{LocalizedText, Plan, PlanCatalogue};
use wgsub_crds::resources::{peer_name, subscription_name};
use wgsub_crds::{SubscriptionPhase, VpnSubscription, WgPeer, WgServer, WgServerSpec};
use wgsub_ledger::TelegramUser;

use crate::api::{ApiServer, MiniApp};
use crate::cluster::Cluster;
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
/// How long the garbage collector may take to remove a deleted subscription's dependents: it
/// notices a newly established CRD's kind only at its next discovery pass (up to ~40 s).
const COLLECTED_WITHIN: Duration = Duration::from_secs(60);
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
        price_stars: None,
        traffic_gib: None,
    }])
    .expect("a valid plan catalogue")
}

fn server(lab: &Lab, cluster: &Cluster) -> WgServer {
    let spec: WgServerSpec = serde_json::from_value(json!({
        "endpoint": format!("{SERVER_VETH_ADDRESS}:{LISTEN_PORT}"),
        "listenPort": LISTEN_PORT,
        "interfaceName": lab.server_if,
        "addressPool": POOL,
        "clientAllowedIPs": [POOL],
        "mtu": 1420,
        "nodeName": cluster.node,
        "privateKeySecretRef": {"name": "main-key", "key": "privateKey"},
    }))
    .expect("a valid WgServer spec");
    let mut server = WgServer::new(SERVER, spec);
    server.metadata.namespace = Some(cluster.namespace.clone());
    server
}

fn user() -> TelegramUser {
    TelegramUser {
        id: USER_ID,
        username: Some("chain_test_user".to_owned()),
        first_name: "Chain".to_owned(),
        last_name: None,
        language_code: Some("en".to_owned()),
    }
}

/// An address YooKassa sends notifications from.
fn yookassa_source() -> IpAddr {
    wgsub_api::clientip::yookassa_ranges()[0]
        .hosts()
        .next()
        .expect("YooKassa's first range has hosts")
}

/// YooKassa's notification that `payment` succeeded.
fn notification(payment: &Value) -> Value {
    json!({"type": "notification", "event": "payment.succeeded", "object": payment})
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

/// Whether the object `name` of `api` still exists with `uid` (a newer one of that name is
/// another object).
async fn exists_with_uid<K>(api: &Api<K>, name: &str, uid: &str) -> bool
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .expect("an admin read")
        .is_some_and(|object| object.meta().uid.as_deref() == Some(uid))
}

/// Everything of one chain test: its hosts, ledger, YooKassa, namespace with the operator and
/// the node-agent running, and the API.
struct Chain {
    lab: Lab,
    yookassa: FakeYooKassa,
    cluster: Cluster,
    api: ApiServer,
    bot_token: String,
    /// The server's public key, once the node-agent published it.
    server_key: String,
    _config_dir: tempfile::TempDir,
}

/// What the webhook set off: when the peer reached the interface and what the interface holds.
struct Activation {
    /// Webhook sent → the peer on the interface.
    latency: Duration,
    /// How long the API took to answer the webhook.
    answered_in: Duration,
    keys: Vec<String>,
}

impl Chain {
    /// Starts everything for one test; `tag` tells its lab apart, `extra_api_flags` go to
    /// `wgsub-api serve`. Returns once the node-agent has brought the server's interface up.
    async fn start(tag: char, extra_api_flags: &[&str]) -> Chain {
        let lab = Lab::new(tag);
        let (_, database_url) = wgsub_ledger::testing::fresh_database("e2e_chain").await;
        let yookassa = FakeYooKassa::start().await;
        let mut cluster = Cluster::new("chain").await;
        cluster
            .start(&server(&lab, &cluster), &lab.server_netns_path())
            .await;
        let bot_token = api::generate_bot_token();
        let mut flags: Vec<String> = [
            "--database-url",
            &database_url,
            "--namespace",
            &cluster.namespace,
            "--keys-namespace",
            &wgsub_testkit::chart::peer_keys_namespace(&cluster.namespace),
            "--default-server",
            SERVER,
            "--bot-token",
            &bot_token,
            "--public-url",
            "https://vpn.example.com",
        ]
        .into_iter()
        .chain(extra_api_flags.iter().copied())
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
        Chain {
            lab,
            yookassa,
            cluster,
            api,
            bot_token,
            server_key,
            _config_dir: config_dir,
        }
    }

    /// The user opens the Mini App (still Pending) and buys the plan; YooKassa captures the
    /// payment at `captured_at`. Returns the Mini App session and the payment as YooKassa
    /// reports it.
    async fn buy(&self, captured_at: Timestamp) -> (MiniApp, Value) {
        let app = self.api.mini_app(&user(), &self.bot_token);
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
        let payment = self
            .yookassa
            .pay(&self.yookassa.single_payment_id(), captured_at);
        (app, payment)
    }

    /// Sends YooKassa's notification of `payment` and waits for a peer on the interface, which
    /// is watched from before the webhook is sent.
    async fn notify(&self, payment: &Value) -> Activation {
        let watched = {
            let lab_server_if = self.lab.server_if.clone();
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
        let accepted = self
            .api
            .yookassa_webhook(yookassa_source(), &notification(payment))
            .await;
        let answered_in = sent.elapsed();
        assert_eq!(accepted.status(), 200);
        assert_eq!(json_of(accepted).await["outcome"], "applied");
        let Ok(watched) = tokio::time::timeout(Duration::from_secs(10), watched).await else {
            panic!(
                "the peer did not reach the interface within 10 s of the webhook; the cluster \
                 holds:\n{}",
                self.cluster.describe().await
            );
        };
        let (on_interface_at, keys) = watched.expect("the interface watcher runs");
        let latency = on_interface_at.saturating_duration_since(sent);
        println!(
            "activation latency (webhook sent → peer on the interface): {} ms (the API answered \
             the webhook in {} ms)",
            latency.as_millis(),
            answered_in.as_millis()
        );
        Activation {
            latency,
            answered_in,
            keys,
        }
    }

    /// The user's device peer as the operator made it, checked against the interface's `keys`
    /// and its key Secret; returns the peer and its Secret.
    async fn device_peer(&self, keys: &[String], paid_until: Timestamp) -> (WgPeer, Secret) {
        let subscription_name = subscription_name(USER_ID);
        let peer = self
            .cluster
            .api::<WgPeer>()
            .get(&peer_name(&subscription_name, 1))
            .await
            .expect("the operator made the device's WgPeer");
        assert_eq!(peer.spec.expires_at, Some(paid_until));
        let public_key = peer.spec.public_key.clone().expect("a public key");
        assert_eq!(
            keys,
            std::slice::from_ref(&public_key),
            "the interface holds the peer"
        );
        let key_ref = peer
            .spec
            .private_key_secret_ref
            .clone()
            .expect("a key Secret reference");
        let secret = self
            .cluster
            .key_secrets()
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
        (peer, secret)
    }

    /// The device downloads its config from the API and pings the server through the tunnel.
    async fn connect(&self, app: &MiniApp, peer_name: &str) -> String {
        let download = app
            .get(&format!("/api/v1/me/peers/{peer_name}/config"))
            .await;
        assert_eq!(download.status(), 200);
        let conf = download.text().await.expect("the config text");
        assert!(conf.contains(&format!("PublicKey = {}", self.server_key)));
        assert!(conf.contains(&format!("Endpoint = {SERVER_VETH_ADDRESS}:{LISTEN_PORT}")));
        self.lab.connect_client(&conf);
        assert!(
            self.lab
                .ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(5))
                .await,
            "the client's ping through the tunnel got no answer"
        );
        conf
    }

    async fn wait_for_phase(&self, wanted: SubscriptionPhase) {
        let subscriptions = self.cluster.api::<VpnSubscription>();
        let name = subscription_name(USER_ID);
        wait_for(
            &format!("the subscription's status {wanted:?}"),
            Duration::from_secs(5),
            async || {
                let subscription = subscriptions.get(&name).await.ok()?;
                (phase(&subscription) == Some(wanted)).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_webhook_brings_the_tunnel_up_and_paid_until_takes_it_down() {
    let mut chain = Chain::start('e', &[]).await;

    // The user buys the plan and pays at YooKassa. The plan is a day long: captured a day minus
    // PAID_FOR ago, the payment is paid until PAID_FOR from now. YooKassa reports times to the
    // millisecond.
    let plan_length = plans().get(PLAN).expect("the plan").duration();
    let captured_at = (Timestamp::now() + PAID_FOR - plan_length)
        .round(jiff::Unit::Millisecond)
        .expect("a representable instant");
    let (app, payment) = chain.buy(captured_at).await;

    // A notification from outside YooKassa's addresses is refused and changes nothing.
    let forged = chain
        .api
        .yookassa_webhook(
            "203.0.113.7".parse().expect("an IP"),
            &notification(&payment),
        )
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(json_of(forged).await["code"], "forbidden");

    let activation = chain.notify(&payment).await;

    // What each link of the chain wrote.
    let paid_until = captured_at + plan_length;
    let subscription = chain
        .cluster
        .api::<VpnSubscription>()
        .get(&subscription_name(USER_ID))
        .await
        .expect("the API wrote the user's VpnSubscription");
    assert_eq!(subscription.spec.paid_until, Some(paid_until));
    assert_eq!(subscription.spec.plan.as_deref(), Some(PLAN));
    let (peer, _) = chain.device_peer(&activation.keys, paid_until).await;
    let public_key = peer.spec.public_key.clone().expect("a public key");
    let peer_name = peer.metadata.name.clone().expect("a name");
    chain.wait_for_phase(SubscriptionPhase::Active).await;

    let conf = chain.connect(&app, &peer_name).await;
    assert!(
        Timestamp::now() < paid_until,
        "the tunnel came up only after paidUntil: PAID_FOR ({PAID_FOR:?}) is too short here"
    );

    // The bot's /config reads the same device from its caches and renders the same file, with
    // its own rights.
    let bot = wgsub_devices::Caches::spawn(
        chain.cluster.client_for("bot").await,
        &chain.cluster.namespace,
        wgsub_devices::CacheOptions {
            keys_namespace: Some(wgsub_testkit::chart::peer_keys_namespace(
                &chain.cluster.namespace,
            )),
            ..wgsub_devices::CacheOptions::default()
        },
    );
    assert!(
        bot.synced(Duration::from_secs(10)).await,
        "the bot's caches sync"
    );
    let devices =
        wgsub_bot::devices::user_peers(&bot, USER_ID).expect("the bot lists the user's peers");
    assert_eq!(devices.len(), 1);
    let device = wgsub_bot::devices::user_peer(&bot, USER_ID, &peer_name)
        .expect("the bot reads the chosen device")
        .expect("the device is the user's");
    match wgsub_bot::devices::device_config(&bot, &device)
        .expect("the bot reads the device's server and key")
    {
        wgsub_bot::devices::DeviceConfig::Ready(rendered) => {
            assert!(*rendered.text == conf, "the bot's config is the API's");
        }
        wgsub_bot::devices::DeviceConfig::NotReady => panic!("the bot finds the config not ready"),
    }

    // The clock passes paidUntil.
    let gone_at = loop {
        if !chain.lab.server_peers().await.contains(&public_key) {
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
        !chain
            .lab
            .ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(3))
            .await,
        "the ping still gets through after paidUntil"
    );
    let refused = app
        .get(&format!("/api/v1/me/peers/{peer_name}/config"))
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json_of(refused).await["code"], "subscription_inactive");
    chain.wait_for_phase(SubscriptionPhase::Expired).await;

    println!(
        "cut-off latency (paidUntil → peer gone from the interface): {} ms",
        cut_off.as_millis()
    );
    assert!(
        activation.latency < ACTIVATION_BOUND,
        "activation took {:?} (the API answered in {:?})",
        activation.latency,
        activation.answered_in
    );
    assert!(cut_off < CUT_OFF_BOUND, "cut-off took {cut_off:?}");
    chain.cluster.assert_nothing_forbidden();
}

/// The API's drift loop is slowed to an hour here: it would write a paying user's deleted
/// subscription again, which is its job but not what this test is about.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_the_subscription_collects_its_peer_and_key_secret_and_takes_the_peer_off() {
    let chain = Chain::start('d', &["--drift-interval", "1h"]).await;
    let captured_at = Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .expect("a representable instant");
    let (app, payment) = chain.buy(captured_at).await;
    let activation = chain.notify(&payment).await;
    let paid_until = captured_at + plans().get(PLAN).expect("the plan").duration();
    let (peer, secret) = chain.device_peer(&activation.keys, paid_until).await;
    let public_key = peer.spec.public_key.clone().expect("a public key");
    let peer_name = peer.metadata.name.clone().expect("a name");
    let peer_uid = peer.metadata.uid.clone().expect("a uid");
    let secret_name = secret.metadata.name.clone().expect("a name");
    let secret_uid = secret.metadata.uid.clone().expect("a uid");
    chain.wait_for_phase(SubscriptionPhase::Active).await;
    chain.connect(&app, &peer_name).await;

    // An administrator deletes the subscription, as `kubectl delete` does (in the background:
    // the garbage collector removes the dependents).
    let deleted_at = Instant::now();
    chain
        .cluster
        .api::<VpnSubscription>()
        .delete(&subscription_name(USER_ID), &DeleteParams::default())
        .await
        .expect("the subscription is deleted");
    let peers = chain.cluster.api::<WgPeer>();
    let secrets = chain.cluster.key_secrets();
    let (mut peer_gone, mut secret_gone, mut off_interface) = (None, None, None);
    while peer_gone.is_none() || secret_gone.is_none() || off_interface.is_none() {
        assert!(
            deleted_at.elapsed() < COLLECTED_WITHIN,
            "{COLLECTED_WITHIN:?} after the subscription was deleted: WgPeer collected \
             {peer_gone:?}, key Secret collected {secret_gone:?}, peer off the interface \
             {off_interface:?}; the cluster holds:\n{}",
            chain.cluster.describe().await
        );
        if peer_gone.is_none() && !exists_with_uid(&peers, &peer_name, &peer_uid).await {
            peer_gone = Some(deleted_at.elapsed());
        }
        if secret_gone.is_none() && !exists_with_uid(&secrets, &secret_name, &secret_uid).await {
            secret_gone = Some(deleted_at.elapsed());
        }
        if off_interface.is_none() && !chain.lab.server_peers().await.contains(&public_key) {
            off_interface = Some(deleted_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "after the subscription's deletion: WgPeer collected in {} ms, key Secret in {} ms, \
         peer off the interface in {} ms",
        peer_gone.unwrap_or_default().as_millis(),
        secret_gone.unwrap_or_default().as_millis(),
        off_interface.unwrap_or_default().as_millis()
    );
    assert!(
        !chain
            .lab
            .ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(3))
            .await,
        "the ping still gets through after the subscription was deleted"
    );
    // The garbage collector removes the peer; the key Secret, in the peer keys namespace where
    // no owner reference reaches, is deleted by the operator's key collection — and nothing else.
    let keys_path = format!(
        "/api/v1/namespaces/{}/secrets/",
        wgsub_testkit::chart::peer_keys_namespace(&chain.cluster.namespace)
    );
    let operator_deletes: Vec<String> = chain
        .cluster
        .requests_of("operator")
        .iter()
        .filter(|request| request.verb == "delete")
        .filter(|request| !request.uri.starts_with(&keys_path))
        .map(ToString::to_string)
        .collect();
    assert!(
        operator_deletes.is_empty(),
        "the garbage collector removes the peer, not the operator: {operator_deletes:?}"
    );
    let listed = app.get("/api/v1/me/peers").await;
    assert_eq!(listed.status(), 200);
    assert_eq!(
        json_of(listed).await,
        json!([]),
        "the user has no device left"
    );
    assert!(
        activation.latency < ACTIVATION_BOUND,
        "activation took {:?}",
        activation.latency
    );
    chain.cluster.assert_nothing_forbidden();
}

/// The user's devices as the Mini App lists them: `(name, ready)`.
async fn listed_devices(app: &MiniApp) -> Vec<(String, bool)> {
    let listed = app.get("/api/v1/me/peers").await;
    assert_eq!(listed.status(), 200);
    json_of(listed)
        .await
        .as_array()
        .expect("a device list")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or_default().to_owned(),
                d["ready"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until the peer `name`'s key is on the server's interface; returns that key.
async fn keyed_on_interface(chain: &Chain, name: &str) -> String {
    let peers = chain.cluster.api::<WgPeer>();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(key) = peers.get(name).await.ok().and_then(|p| p.spec.public_key)
                && chain.lab.server_peers().await.contains(&key)
            {
                return key;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    match found {
        Ok(key) => key,
        Err(_) => {
            let subscription = name.rsplit_once('-').map_or(name, |(sub, _)| sub);
            panic!(
                "{name}'s key did not reach the interface within 10 s; the cluster holds:\n{}\n\
                 the components' writes of the subscription and its peers:\n{}",
                chain.cluster.describe().await,
                chain.cluster.writes_naming(subscription).join("\n")
            )
        }
    }
}

/// Whether the client, still configured with the old config, gets neither an answer nor a new
/// handshake within `within`.
async fn old_config_is_dead(chain: &Chain, within: Duration) -> bool {
    let before = chain.lab.client_handshake().await;
    let answered = chain.lab.ping_answers(SERVER_TUNNEL_ADDRESS, within).await;
    !answered && chain.lab.client_handshake().await == before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_and_then_a_deleted_device_stop_the_old_config_on_a_real_tunnel() {
    let chain = Chain::start('r', &[]).await;
    let captured_at = Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .expect("a representable instant");
    let (app, payment) = chain.buy(captured_at).await;
    let activation = chain.notify(&payment).await;
    let paid_until = captured_at + plans().get(PLAN).expect("the plan").duration();
    let (first, first_secret) = chain.device_peer(&activation.keys, paid_until).await;
    let first_name = first.metadata.name.clone().expect("a name");
    let first_key = first.spec.public_key.clone().expect("a public key");
    let first_secret_name = first_secret.metadata.name.clone().expect("a name");
    let first_secret_uid = first_secret.metadata.uid.clone().expect("a uid");
    chain.wait_for_phase(SubscriptionPhase::Active).await;
    chain.connect(&app, &first_name).await;
    assert!(
        chain.lab.client_handshake().await > 0,
        "the first config handshakes"
    );

    // Rotate: a replacement device, and the old key leaves the interface at once.
    let rotated_at = Instant::now();
    let rotated = app
        .post(&format!("/api/v1/me/peers/{first_name}/rotate"), &json!({}))
        .await;
    assert_eq!(rotated.status(), 200);
    let rotated = json_of(rotated).await;
    let second_name = rotated["name"].as_str().expect("a name").to_owned();
    assert_ne!(second_name, first_name);
    wait_for(
        "the old key off the interface",
        Duration::from_secs(5),
        async || (!chain.lab.server_peers().await.contains(&first_key)).then_some(()),
    )
    .await;
    let old_off_in = rotated_at.elapsed();
    let second_key = keyed_on_interface(&chain, &second_name).await;
    let new_on_in = rotated_at.elapsed();
    assert_ne!(second_key, first_key, "the replacement has a new key");
    assert!(
        old_config_is_dead(&chain, Duration::from_secs(3)).await,
        "the config from before the rotation still gets through"
    );
    // The operator collects the old key's Secret.
    let secrets = chain.cluster.key_secrets();
    wait_for(
        "the old key Secret collected",
        Duration::from_secs(10),
        async || {
            (!exists_with_uid(&secrets, &first_secret_name, &first_secret_uid).await).then_some(())
        },
    )
    .await;
    // The rotated config works.
    wait_for(
        "the replacement ready in the device list",
        Duration::from_secs(5),
        async || (listed_devices(&app).await == [(second_name.clone(), true)]).then_some(()),
    )
    .await;
    chain.lab.disconnect_client();
    let second_conf = chain.connect(&app, &second_name).await;
    assert!(!second_conf.contains(&first_key));
    println!(
        "rotation: old key off the interface in {} ms, new key on it in {} ms",
        old_off_in.as_millis(),
        new_on_in.as_millis()
    );

    // Delete the (last) device: it leaves the interface, its config stops, and the operator
    // does not give the user a device back.
    let deleted_at = Instant::now();
    let deleted = app.delete(&format!("/api/v1/me/peers/{second_name}")).await;
    assert_eq!(deleted.status(), 204);
    wait_for(
        "the deleted device off the interface",
        Duration::from_secs(5),
        async || (!chain.lab.server_peers().await.contains(&second_key)).then_some(()),
    )
    .await;
    let deleted_off_in = deleted_at.elapsed();
    assert!(
        old_config_is_dead(&chain, Duration::from_secs(3)).await,
        "the deleted device's config still gets through"
    );
    println!(
        "delete: the device off the interface in {} ms",
        deleted_off_in.as_millis()
    );
    // Time for the operator to reconcile the subscription without devices.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(listed_devices(&app).await, []);
    assert!(chain.lab.server_peers().await.is_empty());
    let peers = chain.cluster.api::<WgPeer>();
    assert!(
        peers
            .list(&Default::default())
            .await
            .expect("a list")
            .items
            .is_empty(),
        "no device came back:\n{}",
        chain.cluster.describe().await
    );
    assert!(
        old_off_in < CUT_OFF_BOUND.unsigned_abs() && deleted_off_in < CUT_OFF_BOUND.unsigned_abs()
    );
    chain.cluster.assert_nothing_forbidden();
}
