//! Benchmark (ignored by default): webhook → peer for 1, 20 and 100 simultaneous payments on the
//! real chain — the real Kubernetes API server of this test process, the api in this process
//! (ledger on a real PostgreSQL, YooKassa a local fake), the operator's `controller::run` and
//! the node-agent's watches, status writer and loop on a wireguard-go interface, each component
//! authenticated as the ServiceAccount the chart runs it under (see `chain/cluster.rs`).
//!
//! Each round makes N new users, each opening the Mini App and creating a payment; YooKassa
//! captures them all; then the N webhooks are sent at the same moment. Measured per payment
//! from its webhook being sent: the API's answer (the payment re-fetched from YooKassa, checked
//! and applied to the ledger, the `VpnSubscription` written), the `WgPeer` with an address and a
//! published key (the operator's part), the peer's public key on the server's interface (read
//! through wireguard-control every 10 ms: the moment the tunnel works), and the peer `Ready` (the
//! node-agent's status write, which follows at the status writer's pace). One admin watch of
//! the peers observes the writes. Printed: p50, p99 and max of each, per round.
//!
//! In the environment `scripts/test` sets up (`KUBEBUILDER_ASSETS`, `WGSUB_HELM`,
//! `WGSUB_TEST_DATABASE_URL`):
//!
//! ```text
//! cargo test -p wgsub-e2e --release --test payments_latency -- --ignored --nocapture
//! ```
//!
//! Needs root, wireguard-go, wireguard-tools, iproute2 and PostgreSQL, like the chain test.

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

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::watcher;
use serde_json::{Value, json};
use wgsub_crds::plans::{LocalizedText, Plan, PlanCatalogue};
use wgsub_crds::resources::{CONDITION_READY, peer_name, subscription_name};
use wgsub_crds::{WgPeer, WgServer, WgServerSpec};
use wgsub_ledger::TelegramUser;
use wireguard_control::{Backend, Device, InterfaceName};

use crate::api::ApiServer;
use crate::cluster::Cluster;
use crate::lab::{Lab, SERVER_VETH_ADDRESS};
use crate::yookassa::FakeYooKassa;

const SERVER: &str = "main";
const LISTEN_PORT: u16 = 51820;
const POOL: &str = "10.9.0.0/22";
const PLAN: &str = "month";
/// The rounds: payments sent at the same moment.
const ROUNDS: [usize; 3] = [1, 20, 100];
/// The longest a round waits for its last Ready peer.
const GIVE_UP: Duration = Duration::from_secs(60);

fn plans() -> PlanCatalogue {
    PlanCatalogue::new(vec![Plan {
        id: PLAN.to_owned(),
        title: LocalizedText {
            ru: "1 месяц".to_owned(),
            en: "1 month".to_owned(),
        },
        days: 30,
        price_minor: 29_900,
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
        "nodeName": cluster.node,
        "privateKeySecretRef": {"name": "main-key", "key": "privateKey"},
    }))
    .expect("a valid WgServer spec");
    let mut server = WgServer::new(SERVER, spec);
    server.metadata.namespace = Some(cluster.namespace.clone());
    server
}

fn user(id: i64) -> TelegramUser {
    TelegramUser {
        id,
        username: None,
        first_name: format!("Buyer {id}"),
        last_name: None,
        language_code: Some("en".to_owned()),
    }
}

fn yookassa_source() -> IpAddr {
    wgsub_api::clientip::yookassa_ranges()[0]
        .hosts()
        .next()
        .expect("YooKassa's first range has hosts")
}

/// When each peer was first seen keyed (address and published key) and first seen Ready, with
/// the public key it was keyed with.
#[derive(Debug, Default, Clone)]
struct Seen {
    keyed: Option<Instant>,
    ready: Option<Instant>,
    public_key: Option<String>,
}

/// How often the server's interface is read for new peers.
const INTERFACE_POLL: Duration = Duration::from_millis(10);

/// The public keys (base64) on the userspace WireGuard interface `name`, read through
/// wireguard-control over its UAPI socket (no process per read). Empty when it does not answer.
async fn interface_keys(name: InterfaceName) -> Vec<String> {
    tokio::task::spawn_blocking(move || {
        Device::get(&name, Backend::Userspace)
            .map(|device| {
                device
                    .peers
                    .iter()
                    .map(|peer| peer.config.public_key.to_base64())
                    .collect()
            })
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

fn keyed(peer: &WgPeer) -> bool {
    peer.spec.address.is_some()
        && peer.spec.public_key.is_some()
        && peer.spec.private_key_secret_ref.is_some()
}

fn ready(peer: &WgPeer) -> bool {
    peer.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == CONDITION_READY && c.status == "True")
    })
}

/// p50, p99 and max of `samples`, in ms.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:>6.0} ms, p99 {:>6.0} ms, max {:>6.0} ms",
        at(0.50),
        at(0.99),
        at(1.0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn webhook_to_ready_peer_for_simultaneous_payments() {
    let lab = Lab::new('p');
    let (_, database_url) = wgsub_ledger::testing::fresh_database("e2e_payments").await;
    let yookassa = FakeYooKassa::start().await;
    let mut cluster = Cluster::new("pay").await;
    cluster
        .start(&server(&lab, &cluster), &lab.server_netns_path())
        .await;
    let bot_token = api::generate_bot_token();
    let keys_namespace = wgsub_testkit::chart::peer_keys_namespace(&cluster.namespace);
    let mut flags: Vec<String> = [
        "--keys-namespace",
        &keys_namespace,
        "--database-url",
        &database_url,
        "--namespace",
        &cluster.namespace,
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
        cluster.client_for("api").await,
        &flags,
        &plans(),
        config_dir.path(),
    )
    .await;

    // One admin watch records when each peer is keyed and Ready.
    let seen: std::sync::Arc<std::sync::Mutex<HashMap<String, Seen>>> = Default::default();
    let watching = {
        let seen = seen.clone();
        let peers = cluster.api::<WgPeer>();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(peers, watcher::Config::default()));
            while let Some(event) = stream.next().await {
                let (watcher::Event::Apply(peer) | watcher::Event::InitApply(peer)) = (match event {
                    Ok(event) => event,
                    Err(_) => continue,
                }) else {
                    continue;
                };
                let now = Instant::now();
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let entry = seen.entry(peer.name_any()).or_default();
                if keyed(&peer) && entry.keyed.is_none() {
                    entry.keyed = Some(now);
                    entry.public_key = peer.spec.public_key.clone();
                }
                if ready(&peer) && entry.ready.is_none() {
                    entry.ready = Some(now);
                }
            }
        })
    };

    // A reader of the server's interface records when each public key is first on it: the
    // moment the peer is live (its Ready status follows at the status writer's pace).
    let on_interface: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> =
        Default::default();
    let reading = {
        let on_interface = on_interface.clone();
        let name: InterfaceName = lab.server_if.parse().expect("a valid interface name");
        tokio::spawn(async move {
            loop {
                let keys = interface_keys(name).await;
                let now = Instant::now();
                {
                    let mut on_interface = on_interface.lock().unwrap_or_else(|e| e.into_inner());
                    for key in keys {
                        on_interface.entry(key).or_insert(now);
                    }
                }
                tokio::time::sleep(INTERFACE_POLL).await;
            }
        })
    };

    // The node-agent has the interface up before the first payment.
    let servers = cluster.api::<WgServer>();
    let started = Instant::now();
    while servers
        .get(SERVER)
        .await
        .ok()
        .and_then(|s| s.status?.public_key)
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the node-agent did not publish the server's key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!("webhook → peer on the real API server (operator and node-agent in process):");
    let mut next_user = 7_700_000_i64;
    for round in ROUNDS {
        let users: Vec<i64> = (0..round as i64).map(|i| next_user + i).collect();
        next_user += round as i64;

        // Each buyer opens the Mini App and creates a payment; YooKassa captures them all.
        let mut payments = Vec::new();
        for &id in &users {
            let app = api.mini_app(&user(id), &bot_token);
            // The API answers 503 until its caches have synced.
            let opened = Instant::now();
            loop {
                let status = app.get("/api/v1/me").await.status();
                if status == 200 {
                    break;
                }
                assert!(
                    status == 503 && opened.elapsed() < Duration::from_secs(20),
                    "the Mini App of user {id} answered {status}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let created = app.post("/api/v1/payments", &json!({"plan": PLAN})).await;
            assert_eq!(created.status(), 201, "creating the payment of user {id}");
            let created: Value = created.json().await.expect("a JSON body");
            let url = created["confirmationUrl"].as_str().unwrap_or_default();
            let payment_id = url
                .split("orderId=")
                .nth(1)
                .unwrap_or_else(|| panic!("no payment id in {url}"))
                .to_owned();
            payments.push((id, yookassa.pay(&payment_id, Timestamp::now())));
        }

        // All webhooks at the same moment.
        let sent = Instant::now();
        let answers = futures::future::join_all(payments.iter().map(|(_, payment)| {
            let api = &api;
            async move {
                let notification =
                    json!({"type": "notification", "event": "payment.succeeded", "object": payment});
                let response = api.yookassa_webhook(yookassa_source(), &notification).await;
                (response.status(), sent.elapsed())
            }
        }))
        .await;
        for (status, _) in &answers {
            assert_eq!(*status, 200, "the API refused a webhook");
        }

        let names: Vec<String> = users
            .iter()
            .map(|id| peer_name(&subscription_name(*id), 1))
            .collect();
        let finished = loop {
            let done = {
                let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let on_interface = on_interface.lock().unwrap_or_else(|e| e.into_inner());
                names
                    .iter()
                    .filter_map(|name| seen.get(name).cloned())
                    .filter(|s| s.ready.is_some() && s.keyed.is_some())
                    .filter(|s| {
                        s.public_key
                            .as_ref()
                            .is_some_and(|key| on_interface.contains_key(key))
                    })
                    .collect::<Vec<Seen>>()
            };
            if done.len() == names.len() {
                break done;
            }
            assert!(
                sent.elapsed() < GIVE_UP,
                "round of {round}: {} of {} peers Ready and on the interface after {GIVE_UP:?}; \
                 the cluster holds:\n{}",
                done.len(),
                names.len(),
                cluster.describe().await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let mut answered: Vec<Duration> = answers.iter().map(|(_, took)| *took).collect();
        let mut keyed_in: Vec<Duration> = finished
            .iter()
            .filter_map(|s| s.keyed)
            .map(|at| at.saturating_duration_since(sent))
            .collect();
        let mut live_in: Vec<Duration> = {
            let on_interface = on_interface.lock().unwrap_or_else(|e| e.into_inner());
            finished
                .iter()
                .map(|s| {
                    let key = s.public_key.as_deref().unwrap_or_default();
                    on_interface[key].saturating_duration_since(sent)
                })
                .collect()
        };
        let mut ready_in: Vec<Duration> = finished
            .iter()
            .filter_map(|s| s.ready)
            .map(|at| at.saturating_duration_since(sent))
            .collect();
        println!("  {round:>3} simultaneous payments:");
        println!("      webhook answered:        {}", summary(&mut answered));
        println!("      peer keyed (operator):   {}", summary(&mut keyed_in));
        println!("      peer on the interface:   {}", summary(&mut live_in));
        println!("      peer Ready (node-agent): {}", summary(&mut ready_in));
    }
    watching.abort();
    reading.abort();
    cluster.assert_nothing_forbidden();
}
