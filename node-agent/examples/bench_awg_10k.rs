//! Benchmark (needs root, wireguard-go and amneziawg-go — `WGSUB_AMNEZIAWG_GO` or on `PATH`):
//! 10,000 peers on one amneziawg-go interface against the same on one wireguard-go interface,
//! side by side in one run. Each measurement is a child process of its own (so its memory is
//! its own), in its own network namespace; the two protocols take turns in alternating order,
//! round after round.
//!
//! - **Cold convergence**: no interface; a fresh index and `Agent` run the production start
//!   (`Agent::start` while the `WgPeer` list pages — JSON of 500 objects, decoded and fed through
//!   the watches' own `kube_shell::feed` — arrive, then the first full `sync`), which creates the
//!   interface and puts every peer on it.
//! - **One changed peer**: one `WgPeer` disabled (a watch event, then the incremental `sync`),
//!   median of five.
//! - **Agent RSS** over the child's baseline (its inputs built): steady after convergence and a
//!   status pass, and peak (`VmHWM`). amneziawg-go and wireguard-go are other processes.
//!
//! `cargo run --release -p wgsub-node-agent --example bench_awg_10k [-- PEERS ROUNDS]`

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::core::ObjectList;
use kube::runtime::watcher::Event;
use kube_fake_client::ClientBuilder;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{LABEL_SERVER, LABEL_SUBSCRIPTION};
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_node_agent::agent::{Agent, Settings};
use wgsub_node_agent::amneziawg::{Userspace, driver_for};
use wgsub_node_agent::awg_kernel::AwgImplementation;
use wgsub_node_agent::http::Health;
use wgsub_node_agent::index::SharedIndex;
use wgsub_node_agent::interface::{Backend, WgInterface, Worker};
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue, WatchedPeer, feed};
use wgsub_node_agent::metrics::Metrics;

const PAGE: usize = 500;
const CHANGES: usize = 5;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn address(i: usize) -> String {
    let host = u32::try_from(i).unwrap() + 2;
    format!("10.0.{}.{}/32", host >> 8, host & 255)
}

fn peer_json(i: usize, public_key: &str, enabled: bool, expires: Timestamp) -> Value {
    let subscription = format!("tg-{}", i + 1);
    json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgPeer",
        "metadata": {
            "name": format!("{subscription}-1"),
            "namespace": "bench",
            "uid": format!("00000000-0000-4000-8000-{:012}", i),
            "resourceVersion": format!("{}", 100_000 + i),
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {LABEL_SUBSCRIPTION: subscription, LABEL_SERVER: "bench"},
        },
        "spec": {
            "server": "bench",
            "publicKey": public_key,
            "address": address(i),
            "expiresAt": expires.to_string(),
            "enabled": enabled
        },
    })
}

/// What the server, Secret and subscription watches deliver on start.
fn list_servers_and_secrets(index: &SharedIndex, server: &WgServer, secret: &Secret) {
    let mut listed = Default::default();
    feed::<WgServer>(index, &mut listed, Event::Init);
    feed(index, &mut listed, Event::InitApply(server.clone()));
    feed::<WgServer>(index, &mut listed, Event::InitDone);
    let mut listed = Default::default();
    feed::<Secret>(index, &mut listed, Event::Init);
    feed(index, &mut listed, Event::InitApply(secret.clone()));
    feed::<Secret>(index, &mut listed, Event::InitDone);
    let mut listed = Default::default();
    feed::<VpnSubscription>(index, &mut listed, Event::Init);
    feed::<VpnSubscription>(index, &mut listed, Event::InitDone);
}

async fn list_peers(index: Arc<SharedIndex>, pages: Arc<Vec<Vec<u8>>>) {
    let mut listed = Default::default();
    feed::<WatchedPeer>(&index, &mut listed, Event::Init);
    for page in pages.iter() {
        for peer in serde_json::from_slice::<ObjectList<WatchedPeer>>(page)
            .unwrap()
            .items
        {
            feed(&index, &mut listed, Event::InitApply(peer));
        }
        tokio::task::yield_now().await;
    }
    feed::<WatchedPeer>(&index, &mut listed, Event::InitDone);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One measurement of `protocol` with `count` peers; prints `RESULT cold one steady peak`
/// (seconds, seconds, KiB, KiB).
async fn child(protocol: &str, count: usize) {
    let amneziawg = protocol == "amneziawg";
    let id = std::process::id();
    let ns = format!("wgsub-bawg-{id}");
    let interface = format!("{}{}", if amneziawg { "awb" } else { "wgb" }, id % 100_000);
    let status = Command::new("ip").args(["netns", "add", &ns]).status();
    assert!(status.is_ok_and(|s| s.success()), "ip netns add {ns}");
    /// Deleting the namespace ends amneziawg-go or wireguard-go; their socket files stay.
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
            for dir in ["/var/run/amneziawg", "/var/run/wireguard"] {
                let _ = std::fs::remove_file(format!("{dir}/{}.sock", self.1));
            }
        }
    }
    let _cleanup = Cleanup(ns.clone(), interface.clone());

    let mut spec = json!({
        "endpoint": "vpn.example.com:51900",
        "listenPort": 51900,
        "interfaceName": interface,
        "addressPool": "10.0.0.0/16",
        "nodeName": "bench",
        "privateKeySecretRef": {"name": "bench-key"},
    });
    if amneziawg {
        spec["protocol"] = "amneziawg".into();
        spec["amneziawg"] = json!({
            "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
            "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
        });
    }
    let server: WgServer = serde_json::from_value(json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgServer",
        "metadata": {"name": "bench", "namespace": "bench", "generation": 1},
        "spec": spec,
    }))
    .unwrap();
    let server_key = PrivateKey::generate().to_base64();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bench-key", "namespace": "bench"},
        "stringData": {"privateKey": server_key.as_str()},
    }))
    .unwrap();
    let mut node = Node::default();
    node.metadata.name = Some("bench".into());
    let client = ClientBuilder::new()
        .with_resource::<WgServer>()
        .with_resource::<WgPeer>()
        .with_object(node)
        .build()
        .await
        .unwrap();
    let expires = Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24))
        .unwrap();
    let keys: Vec<String> = (0..count)
        .map(|_| PrivateKey::generate().public_key().to_base64())
        .collect();
    let pages: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..count)
            .step_by(PAGE)
            .map(|start| {
                serde_json::to_vec(&json!({
                    "apiVersion": "wgsub.io/v1alpha1",
                    "kind": "WgPeerList",
                    "metadata": {"resourceVersion": "1"},
                    "items": (start..count.min(start + PAGE))
                        .map(|i| peer_json(i, &keys[i], true, expires))
                        .collect::<Vec<_>>(),
                }))
                .unwrap()
            })
            .collect(),
    );
    let changed: Vec<(WatchedPeer, WatchedPeer)> = (0..CHANGES)
        .map(|n| {
            let i = (n * 997) % count;
            let object =
                |enabled| serde_json::from_value(peer_json(i, &keys[i], enabled, expires)).unwrap();
            (object(false), object(true))
        })
        .collect();
    let binary = std::env::var_os("WGSUB_AMNEZIAWG_GO").unwrap_or("amneziawg-go".into());
    let settings = Settings {
        node_name: "bench".into(),
        backend: Backend::Userspace,
        amneziawg: Userspace::find(std::path::Path::new(&binary)).map(AwgImplementation::Userspace),
        resync_interval: Duration::from_secs(30),
        status_interval: Duration::from_secs(10),
        counters_interval: Duration::from_secs(60),
        firewall: Some(wgsub_node_agent::nat::Firewall::Nftables),
    };
    assert!(
        !amneziawg || settings.amneziawg.is_some(),
        "amneziawg-go not found: set WGSUB_AMNEZIAWG_GO"
    );
    let driver = driver_for(
        &server.spec,
        Backend::Userspace,
        settings.amneziawg.as_ref(),
    )
    .unwrap();
    let worker = Worker::start(Some(format!("/var/run/netns/{ns}").into())).unwrap();

    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    let baseline = status_kib("VmRSS:");

    let start = Instant::now();
    let index = Arc::new(SharedIndex::default());
    list_servers_and_secrets(&index, &server, &secret);
    let mut agent = Agent::new(
        settings,
        index.clone(),
        KubeApi::new(client.clone(), "bench"),
        worker.clone(),
        Arc::new(Metrics::default()),
        Arc::new(Health::new(Duration::from_secs(60))),
        Arc::new(StatusQueue::default()),
    );
    let lister = tokio::spawn(list_peers(index.clone(), pages));
    assert!(agent.start(&CancellationToken::new()).await);
    agent.sync(true).await;
    let cold = start.elapsed();
    lister.await.unwrap();

    // The agent's own read of the interface: every peer, and the protocol asked for.
    let interface = WgInterface::with_driver(&interface, driver).unwrap();
    let snapshot = worker
        .run(move || interface.observe().unwrap().unwrap().0)
        .await
        .unwrap();
    assert_eq!(
        snapshot.peers.len(),
        count,
        "not every peer on the interface"
    );
    assert_eq!(snapshot.params.is_some(), amneziawg);
    agent.queue_status().await;
    let steady = status_kib("VmRSS:");

    let mut one = Vec::new();
    for (disabled, enabled) in changed {
        let mut listed = Default::default();
        feed(&index, &mut listed, Event::Apply(disabled));
        let start = Instant::now();
        agent.sync(false).await;
        one.push(start.elapsed());
        feed(&index, &mut listed, Event::Apply(enabled));
        agent.sync(false).await;
    }
    let peak = status_kib("VmHWM:");
    println!(
        "RESULT {} {} {} {}",
        cold.as_secs_f64(),
        median(one).as_secs_f64(),
        steady.saturating_sub(baseline),
        peak.saturating_sub(baseline)
    );
}

/// Medians of the children's results for one protocol.
#[derive(Default)]
struct Results {
    cold: Vec<f64>,
    one: Vec<f64>,
    steady: Vec<f64>,
    peak: Vec<f64>,
}

fn med(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1], args[2].parse().unwrap()).await;
    }
    let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let count = numbers.first().copied().unwrap_or(10_000);
    let rounds = numbers.get(1).copied().unwrap_or(3);
    let protocols = ["wireguard", "amneziawg"];
    let mut results: [Results; 2] = Default::default();
    let exe = std::env::current_exe().unwrap();
    for round in 0..rounds {
        for turn in 0..2 {
            let which = (round + turn) % 2;
            let output = Command::new(&exe)
                .args(["child", protocols[which], &count.to_string()])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let line = stdout
                .lines()
                .find_map(|l| l.strip_prefix("RESULT "))
                .unwrap_or_else(|| {
                    panic!(
                        "{} run failed: {}",
                        protocols[which],
                        String::from_utf8_lossy(&output.stderr)
                    )
                });
            let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let r = &mut results[which];
            r.cold.push(v[0]);
            r.one.push(v[1]);
            r.steady.push(v[2] / 1024.0);
            r.peak.push(v[3] / 1024.0);
        }
    }
    let [wg, awg] = &results;
    println!("peers: {count}, rounds: {rounds} (medians; amneziawg/wireguard)");
    for (what, unit, scale, a, b) in [
        ("cold convergence", "s", 1.0, &wg.cold, &awg.cold),
        ("one changed peer", "ms", 1000.0, &wg.one, &awg.one),
        ("agent RSS steady", "MiB", 1.0, &wg.steady, &awg.steady),
        ("agent RSS peak", "MiB", 1.0, &wg.peak, &awg.peak),
    ] {
        println!(
            "{what:18} wireguard-go {:8.3} {unit}  amneziawg-go {:8.3} {unit}  ratio {:.2}",
            med(a) * scale,
            med(b) * scale,
            med(b) / med(a)
        );
    }
}
