//! Benchmark (needs root, wireguard-go and wireguard-tools): 10,000 peers on one wireguard-go
//! interface in a throwaway network namespace. Measures, side by side on the same interface and
//! the same states, the agent's cold convergence and one changed peer against `wg syncconf`, and
//! the agent's resident memory at 10k peers.
//!
//! `cargo run --release -p wgsub-node-agent --example bench_10k [-- PEERS ROUNDS]`

use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube_fake_client::ClientBuilder;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::{WgPeer, WgPeerSpec, WgServer, WgServerSpec};
use wgsub_node_agent::agent::{Agent, Settings};
use wgsub_node_agent::http::Health;
use wgsub_node_agent::index::{Kind, SharedIndex};
use wgsub_node_agent::interface::{Backend, Worker};
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue};
use wgsub_node_agent::metrics::Metrics;

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rss_kib(field: &str) -> u64 {
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

struct Peer {
    object: WgPeer,
    public: String,
}

fn conf(server_key: &PrivateKey, port: u16, peers: &[Peer]) -> String {
    let mut out = String::with_capacity(peers.len() * 100);
    let _ = writeln!(
        out,
        "[Interface]\nPrivateKey = {}\nListenPort = {port}\n",
        server_key.to_base64().as_str()
    );
    for peer in peers.iter().filter(|p| p.object.spec.enabled) {
        let _ = writeln!(
            out,
            "[Peer]\nPublicKey = {}\nAllowedIPs = {}\n",
            peer.public,
            peer.object.spec.address.as_deref().unwrap_or_default()
        );
    }
    out
}

fn syncconf(dir: &std::path::Path, interface: &str, text: &str) -> Duration {
    let path = dir.join("wg.conf");
    std::fs::write(&path, text).unwrap();
    let start = Instant::now();
    run("wg", &["syncconf", interface, path.to_str().unwrap()]);
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let count = args.first().copied().unwrap_or(10_000);
    let rounds = args.get(1).copied().unwrap_or(5);
    let id = std::process::id();
    let ns = format!("wgsub-bench-{id}");
    let interface = format!("wgb{}", id % 100_000);
    let dir = tempfile::tempdir().unwrap();
    run("ip", &["netns", "add", &ns]);
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.1));
        }
    }
    let _cleanup = Cleanup(ns.clone(), interface.clone());

    let port = 51900;
    let server_key = PrivateKey::generate();
    let spec: WgServerSpec = serde_json::from_value(serde_json::json!({
        "endpoint": "vpn.example.com:51900",
        "listenPort": port,
        "interfaceName": interface,
        "addressPool": "10.0.0.0/16",
        "nodeName": "bench",
        "privateKeySecretRef": {"name": "bench-key"},
    }))
    .unwrap();
    let mut server = WgServer::new("bench", spec);
    server.metadata.namespace = Some("bench".into());
    let mut secret = Secret::default();
    secret.metadata.name = Some("bench-key".into());
    secret.data = Some(
        [(
            "privateKey".to_owned(),
            ByteString(server_key.to_base64().as_bytes().to_vec()),
        )]
        .into(),
    );
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
    let mut peers: Vec<Peer> = (0..count)
        .map(|i| {
            let key = PrivateKey::generate().public_key().to_base64();
            let mut object = WgPeer::new(
                &format!("tg-{}-1", i + 1),
                WgPeerSpec {
                    server: "bench".into(),
                    public_key: Some(key.clone()),
                    private_key_secret_ref: None,
                    preshared_key_secret_ref: None,
                    address: Some(address(i)),
                    address6: None,
                    expires_at: Some(expires),
                    enabled: true,
                    device_name: None,
                },
            );
            object.metadata.namespace = Some("bench".into());
            Peer {
                object,
                public: key,
            }
        })
        .collect();

    let index = Arc::new(SharedIndex::default());
    index.update(|i| {
        i.apply_server(server);
        i.apply_secret(&secret);
    });
    for kind in Kind::ALL {
        index.mark_synced(kind);
    }
    let rss_before = rss_kib("VmRSS:");
    let mut agent = Agent::new(
        Settings {
            node_name: "bench".into(),
            backend: Backend::Userspace,
            resync_interval: Duration::from_secs(30),
            status_interval: Duration::from_secs(10),
            counters_interval: Duration::from_secs(60),
            firewall: Some(wgsub_node_agent::nat::Firewall::Nftables),
        },
        index.clone(),
        KubeApi::new(client, "bench"),
        Worker::start(Some(format!("/var/run/netns/{ns}").into())).unwrap(),
        Arc::new(Metrics::default()),
        Arc::new(Health::new(Duration::from_secs(60))),
        Arc::new(StatusQueue::default()),
    );
    // The interface with its key and port but no peers: both contenders start from here.
    agent.sync(true).await;
    for peer in &peers {
        index.update(|i| i.apply_peer(peer.object.clone()));
    }
    let rss_indexed = rss_kib("VmRSS:");
    let empty = conf(&server_key, port, &[]);
    let full = conf(&server_key, port, &peers);

    let mut agent_cold = Vec::new();
    let mut syncconf_cold = Vec::new();
    for _ in 0..rounds {
        syncconf(dir.path(), &interface, &empty);
        let start = Instant::now();
        agent.sync(true).await;
        agent_cold.push(start.elapsed());
        syncconf(dir.path(), &interface, &empty);
        syncconf_cold.push(syncconf(dir.path(), &interface, &full));
    }
    agent.sync(true).await;
    let start = Instant::now();
    agent.sync(true).await;
    let settled = start.elapsed();
    let rss_synced = rss_kib("VmRSS:");
    agent.queue_status().await;
    eprintln!(
        "RSS KiB: harness {rss_before}, +index {rss_indexed}, +synced {rss_synced}, +status {}",
        rss_kib("VmRSS:")
    );
    let rss_at_10k = rss_kib("VmRSS:");
    let hwm_at_10k = rss_kib("VmHWM:");

    let mut agent_one = Vec::new();
    let mut syncconf_one = Vec::new();
    for round in 0..rounds {
        let which = (round * 997) % count;
        // Agent: the peer is disabled (one event), then the same change through syncconf.
        peers[which].object.spec.enabled = false;
        let changed = peers[which].object.clone();
        index.update(|i| i.apply_peer(changed));
        let start = Instant::now();
        agent.sync(false).await;
        agent_one.push(start.elapsed());
        // Back to all peers for syncconf's turn, then syncconf applies the same change.
        peers[which].object.spec.enabled = true;
        syncconf(dir.path(), &interface, &conf(&server_key, port, &peers));
        peers[which].object.spec.enabled = false;
        syncconf_one.push(syncconf(
            dir.path(),
            &interface,
            &conf(&server_key, port, &peers),
        ));
        peers[which].object.spec.enabled = true;
        let restored = peers[which].object.clone();
        index.update(|i| i.apply_peer(restored));
        agent.sync(true).await;
    }
    let peers_on = String::from_utf8(
        Command::new("wg")
            .args(["show", &interface, "peers"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .lines()
    .count();
    assert_eq!(
        peers_on, count,
        "the interface does not hold every peer at the end"
    );

    let (ac, sc) = (median(agent_cold), median(syncconf_cold));
    let (a1, s1) = (median(agent_one), median(syncconf_one));
    println!("peers: {count}, rounds: {rounds} (medians), backend: wireguard-go (userspace)");
    println!(
        "cold convergence: agent {ac:?}  wg syncconf {sc:?}  (agent/syncconf = {:.2})",
        ac.as_secs_f64() / sc.as_secs_f64()
    );
    println!(
        "full resync with nothing to change (read {count} peers, decide, compare): agent {settled:?}"
    );
    println!(
        "one changed peer: agent {a1:?}  wg syncconf {s1:?}  (syncconf/agent = {:.0}x)",
        s1.as_secs_f64() / a1.as_secs_f64()
    );
    println!(
        "agent RSS: before peers {} MiB, at {count} peers {} MiB (peak {} MiB)",
        rss_before / 1024,
        rss_at_10k / 1024,
        hwm_at_10k / 1024
    );
}
