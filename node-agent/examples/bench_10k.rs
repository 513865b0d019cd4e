//! Benchmark (needs root, wireguard-go and wireguard-tools): 10,000 peers on one wireguard-go
//! interface in a throwaway network namespace, the agent against `wg syncconf` on the same
//! interface from the same start state, alternating which goes first in each round.
//!
//! - **Cold convergence**: the interface has its key and port but no peers. The agent starts as
//!   a restarted agent does: a fresh index and a fresh `Agent` running its production start
//!   (`Agent::start`, then the first full `sync`) while a feeder task on the same thread plays
//!   the watches: the server, its Secret and the subscriptions listed, then the `WgPeer` list as
//!   the API server sends it (JSON pages of 500 objects with labels, owner references, managed
//!   fields and status), each page decoded into the watch's own type `WatchedPeer` and fed
//!   through the watches' own code (`kube_shell::feed`) only when the previous one is done — so
//!   a page arrives as fast as the decoding allows, and the agent's start passes (adding what is
//!   safe to add from the pages so far) overlap wireguard-go's work on the earlier pages. Then
//!   the list's end and the first full pass. `wg syncconf` gets the equivalent `.conf` file,
//!   already written. Both stop when the interface holds every peer. Reported beside it: the
//!   time spent decoding and feeding the pages (on the agent's thread, overlapped) and the tail
//!   from the list's end to convergence. A third contender is the same agent fed the same pages
//!   already decoded — as `wg syncconf` gets its file already written — which separates the
//!   agent's own work from decoding 10k Kubernetes objects on the same two cores as
//!   wireguard-go. The three take turns in rotating order.
//! - **Full resync with nothing to change**: the periodic healing pass at 10k peers.
//! - **One changed peer**: one `WgPeer` is disabled (a watch event fed to the index, then the
//!   loop's incremental `sync`), against `wg syncconf` with the same peer left out of the file.
//! - **Memory**: the harness builds its inputs first (keys, list pages, `.conf` files); then the
//!   peak-RSS counter is reset (`/proc/self/clear_refs`) and the resident size taken as the
//!   baseline. Reported over that baseline: the agent's steady RSS holding 10k peers (index,
//!   decision, last-applied state, status bookkeeping and the queued status writes) and its peak
//!   (`VmHWM`), which includes every transient of the cold starts, the full resyncs and the
//!   status pass (decoded pages, the 10k-peer `DeviceUpdate`, the interface read-back).
//!   wireguard-go is another process and is not counted.
//!
//! `cargo run --release -p wgsub-node-agent --example bench_10k [-- PEERS ROUNDS]`

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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
use wgsub_node_agent::http::Health;
use wgsub_node_agent::index::SharedIndex;
use wgsub_node_agent::interface::{Backend, Worker};
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue, WatchedPeer, feed};
use wgsub_node_agent::metrics::Metrics;

const PAGE: usize = 500;

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

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

/// One `WgPeer` as the API server returns it for a peer the operator made and the agent has
/// already reported on.
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
            "ownerReferences": [{
                "apiVersion": "wgsub.io/v1alpha1", "kind": "VpnSubscription",
                "name": subscription, "uid": format!("10000000-0000-4000-8000-{:012}", i),
                "controller": true, "blockOwnerDeletion": true
            }],
            "managedFields": [{
                "manager": "wgsub-operator", "operation": "Apply",
                "apiVersion": "wgsub.io/v1alpha1", "time": "2026-01-01T00:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:server": {}, "f:publicKey": {}, "f:address": {},
                    "f:expiresAt": {}, "f:enabled": {}}}
            }]
        },
        "spec": {
            "server": "bench",
            "publicKey": public_key,
            "address": address(i),
            "expiresAt": expires.to_string(),
            "enabled": enabled
        },
        "status": {
            "active": enabled,
            "rxBytes": 0,
            "txBytes": 0,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Active",
                "message": "on interface wgb", "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1
            }],
            "observedGeneration": 1
        }
    })
}

fn list_page(items: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgPeerList",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .unwrap()
}

fn conf(server_key: &str, port: u16, peers: &[String], skip: Option<usize>) -> String {
    let mut out = String::with_capacity(peers.len() * 100);
    let _ = writeln!(
        out,
        "[Interface]\nPrivateKey = {server_key}\nListenPort = {port}\n"
    );
    for (i, key) in peers.iter().enumerate() {
        if Some(i) != skip {
            let _ = writeln!(
                out,
                "[Peer]\nPublicKey = {key}\nAllowedIPs = {}\n",
                address(i)
            );
        }
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn syncconf(interface: &str, path: &Path) -> Duration {
    let start = Instant::now();
    run("wg", &["syncconf", interface, path.to_str().unwrap()]);
    start.elapsed()
}

/// What three watches deliver on start: the server, its key Secret, no subscriptions.
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

/// The `WgPeer` list as the watch gets it.
enum Pages {
    /// The API server's responses, decoded page by page as they are fed.
    Json(Arc<Vec<Vec<u8>>>),
    /// The same objects, decoded beforehand.
    Decoded(Vec<Vec<WatchedPeer>>),
}

/// The `WgPeer` watch's list: page by page, each decoded (unless it already is) and fed before
/// the next, giving the agent's task the thread between pages. Returns the time spent decoding
/// and feeding, and when the list ended.
async fn list_peers(index: Arc<SharedIndex>, mut pages: Pages) -> (Duration, Instant) {
    let mut listed = Default::default();
    let mut busy = Duration::ZERO;
    feed::<WatchedPeer>(&index, &mut listed, Event::Init);
    let count = match &pages {
        Pages::Json(json) => json.len(),
        Pages::Decoded(decoded) => decoded.len(),
    };
    for page in 0..count {
        let start = Instant::now();
        let objects = match &mut pages {
            Pages::Json(json) => {
                serde_json::from_slice::<ObjectList<WatchedPeer>>(&json[page])
                    .unwrap()
                    .items
            }
            Pages::Decoded(decoded) => std::mem::take(&mut decoded[page]),
        };
        for peer in objects {
            feed(&index, &mut listed, Event::InitApply(peer));
        }
        busy += start.elapsed();
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    feed::<WatchedPeer>(&index, &mut listed, Event::InitDone);
    let end = Instant::now();
    (busy + (end - start), end)
}

struct Bench {
    server: WgServer,
    secret: Secret,
    client: kube::Client,
    worker: Worker,
}

impl Bench {
    fn agent(&self, index: Arc<SharedIndex>) -> Agent {
        Agent::new(
            Settings {
                node_name: "bench".into(),
                backend: Backend::Userspace,
                amneziawg: None,
                resync_interval: Duration::from_secs(30),
                status_interval: Duration::from_secs(10),
                counters_interval: Duration::from_secs(60),
                firewall: Some(wgsub_node_agent::nat::Firewall::Nftables),
            },
            index,
            KubeApi::new(self.client.clone(), "bench"),
            self.worker.clone(),
            Arc::new(Metrics::default()),
            Arc::new(Health::new(Duration::from_secs(60))),
            Arc::new(StatusQueue::default()),
        )
    }

    /// A restarted agent: fresh index and loop state, its start passes while the list pages
    /// arrive, then the first full sync. Also returns the time spent decoding and feeding the
    /// pages and the tail from the list's end to convergence.
    async fn cold_start(&self, pages: Pages) -> (Agent, Arc<SharedIndex>, Duration, Duration) {
        let index = Arc::new(SharedIndex::default());
        list_servers_and_secrets(&index, &self.server, &self.secret);
        let mut agent = self.agent(index.clone());
        let lister = tokio::spawn(list_peers(index.clone(), pages));
        assert!(agent.start(&CancellationToken::new()).await);
        agent.sync(true).await;
        let converged = Instant::now();
        let (decoding, list_end) = lister.await.unwrap();
        (agent, index, decoding, converged - list_end)
    }
}

fn range(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    format!(
        "median {:?} (min {:?}, max {:?})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    )
}

fn median(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2].as_secs_f64()
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

    // The harness's inputs, built before the memory baseline.
    let port = 51900;
    let server_key = PrivateKey::generate().to_base64();
    let server: WgServer = serde_json::from_value(json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgServer",
        "metadata": {"name": "bench", "namespace": "bench", "generation": 1},
        "spec": {
            "endpoint": "vpn.example.com:51900",
            "listenPort": port,
            "interfaceName": interface,
            "addressPool": "10.0.0.0/16",
            "nodeName": "bench",
            "privateKeySecretRef": {"name": "bench-key"},
        }
    }))
    .unwrap();
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
                list_page(
                    (start..count.min(start + PAGE))
                        .map(|i| peer_json(i, &keys[i], true, expires))
                        .collect(),
                )
            })
            .collect(),
    );
    let empty = write(
        dir.path(),
        "empty.conf",
        &conf(&server_key, port, &[], None),
    );
    let full = write(
        dir.path(),
        "full.conf",
        &conf(&server_key, port, &keys, None),
    );
    let which = |round: usize| (round * 997) % count;
    let without: Vec<PathBuf> = (0..rounds)
        .map(|round| {
            let text = conf(&server_key, port, &keys, Some(which(round)));
            write(dir.path(), &format!("without-{round}.conf"), &text)
        })
        .collect();
    let changed: Vec<(WatchedPeer, WatchedPeer)> = (0..rounds)
        .map(|round| {
            let i = which(round);
            let object =
                |enabled| serde_json::from_value(peer_json(i, &keys[i], enabled, expires)).unwrap();
            (object(false), object(true))
        })
        .collect();
    let bench = Bench {
        server,
        secret,
        client,
        worker: Worker::start(Some(format!("/var/run/netns/{ns}").into())).unwrap(),
    };
    // The interface with its key and port but no peers: both contenders start from here.
    let (agent, _, _, _) = bench.cold_start(Pages::Decoded(Vec::new())).await;
    drop(agent);

    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    let baseline = status_kib("VmRSS:");

    let mut agent_cold = Vec::new();
    let mut agent_decoding = Vec::new();
    let mut agent_tail = Vec::new();
    let mut syncconf_cold = Vec::new();
    let mut last = None;
    for round in 0..rounds {
        for turn in 0..2 {
            syncconf(&interface, &empty);
            if (round + turn) % 2 == 0 {
                drop(last.take());
                let start = Instant::now();
                let (agent, index, decoding, tail) =
                    bench.cold_start(Pages::Json(pages.clone())).await;
                agent_cold.push(start.elapsed());
                agent_decoding.push(decoding);
                agent_tail.push(tail);
                last = Some((agent, index));
            } else {
                syncconf_cold.push(syncconf(&interface, &full));
            }
        }
    }
    let (mut agent, index) = last.take().unwrap();
    agent.sync(true).await;
    let mut settled = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        agent.sync(true).await;
        settled.push(start.elapsed());
    }
    agent.queue_status().await;
    let steady = status_kib("VmRSS:");

    let mut agent_one = Vec::new();
    let mut syncconf_one = Vec::new();
    for (round, (disabled, enabled)) in changed.into_iter().enumerate() {
        // Both start from every peer on the interface; who goes first alternates.
        let mut listed = Default::default();
        for turn in 0..2 {
            if (round + turn) % 2 == 0 {
                feed(&index, &mut listed, Event::Apply(disabled.clone()));
                let start = Instant::now();
                agent.sync(false).await;
                agent_one.push(start.elapsed());
                feed(&index, &mut listed, Event::Apply(enabled.clone()));
                agent.sync(false).await;
            } else {
                syncconf_one.push(syncconf(&interface, &without[round]));
                syncconf(&interface, &full);
            }
        }
    }
    let peak = status_kib("VmHWM:");
    drop((agent, index));

    // The agent fed the same pages already decoded, against `wg syncconf` again (after the
    // memory measures: the decoded copies are the harness's, not the agent's).
    let decoded: Vec<Vec<WatchedPeer>> = pages
        .iter()
        .map(|page| {
            serde_json::from_slice::<ObjectList<WatchedPeer>>(page)
                .unwrap()
                .items
        })
        .collect();
    let mut decoded_cold = Vec::new();
    let mut decoded_syncconf = Vec::new();
    for round in 0..rounds {
        for turn in 0..2 {
            syncconf(&interface, &empty);
            if (round + turn) % 2 == 0 {
                let pages = Pages::Decoded(decoded.clone());
                let start = Instant::now();
                let converged = bench.cold_start(pages).await;
                decoded_cold.push(start.elapsed());
                drop(converged);
            } else {
                decoded_syncconf.push(syncconf(&interface, &full));
            }
        }
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

    let ratios: Vec<f64> = agent_one
        .iter()
        .zip(&syncconf_one)
        .map(|(agent, syncconf)| syncconf.as_secs_f64() / agent.as_secs_f64())
        .collect();
    println!("peers: {count}, rounds: {rounds}, backend: wireguard-go (userspace)");
    println!(
        "cold convergence: agent {}\n                  wg syncconf {}\n                  agent/syncconf (medians) = {:.2}",
        range(&agent_cold),
        range(&syncconf_cold),
        median(&agent_cold) / median(&syncconf_cold)
    );
    let cold_ratios: Vec<f64> = agent_cold
        .iter()
        .zip(&syncconf_cold)
        .map(|(agent, syncconf)| agent.as_secs_f64() / syncconf.as_secs_f64())
        .collect();
    let mut sorted_ratios = cold_ratios.clone();
    sorted_ratios.sort_by(f64::total_cmp);
    let at_most_one = cold_ratios.iter().filter(|r| **r <= 1.0).count();
    println!(
        "                  agent/syncconf per round (same round): median {:.2}, from {:.2} to {:.2}; agent no slower in {at_most_one} of {} rounds",
        sorted_ratios[sorted_ratios.len() / 2],
        sorted_ratios[0],
        sorted_ratios[sorted_ratios.len() - 1],
        cold_ratios.len(),
    );
    println!(
        "  decoding and feeding the list pages (overlapped with wireguard-go): {}",
        range(&agent_decoding)
    );
    println!(
        "  from the list's end to convergence: {}",
        range(&agent_tail)
    );
    println!(
        "cold convergence from decoded objects: agent {}\n                  wg syncconf {}\n                  agent/syncconf (medians) = {:.2}",
        range(&decoded_cold),
        range(&decoded_syncconf),
        median(&decoded_cold) / median(&decoded_syncconf)
    );
    println!(
        "full resync with nothing to change: agent {}",
        range(&settled)
    );
    println!(
        "one changed peer: agent {}\n                  wg syncconf {}\n                  syncconf/agent: medians {:.0}x, per round (same round) from {:.0}x to {:.0}x",
        range(&agent_one),
        range(&syncconf_one),
        median(&syncconf_one) / median(&agent_one),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
    println!(
        "agent memory over the harness baseline ({} MiB): steady {:.1} MiB, peak {:.1} MiB",
        baseline / 1024,
        steady.saturating_sub(baseline) as f64 / 1024.0,
        peak.saturating_sub(baseline) as f64 / 1024.0
    );
}
