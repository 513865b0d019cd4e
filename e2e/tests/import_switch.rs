//! Moving the customers of a running WireGuard server to wgsub without touching their phones,
//! end to end. An "old server" — wireguard-go in the lab's `server` network namespace, set up
//! from a `wg0.conf` whose keys `wg genkey` / `wg pubkey` made — serves a customer's phone (the
//! `client` namespace, with its own config) that pings the server's tunnel address all along.
//! `wgsub-api import --apply` (the library call the subcommand makes, with an administrator's
//! client, on the real Kubernetes API server and a real PostgreSQL) brings the peers
//! over with the phone's private key; the old server's private key goes where the `WgServer`'s
//! `privateKeySecretRef` points. Then the old wireguard-go stops and the product's operator and
//! node-agent (as the chain test runs them) bring the interface up in the same namespace, same
//! key, same port, same peers. The phone's unchanged config handshakes again and its pings
//! resume within a bound; the test prints the gap and the pings lost.
//!
//! Needs what `chain.rs` needs: root, wireguard-go, wireguard-tools, iproute2, ping, nft,
//! PostgreSQL (`WGSUB_TEST_DATABASE_URL`) and the control plane's binaries
//! (`KUBEBUILDER_ASSETS`), as scripts/test provides.

#[path = "chain/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "chain/lab.rs"]
#[allow(dead_code)]
mod lab;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use wgsub_api::import::{Target, run};
use wgsub_crds::{WgPeer, WgServer, WgServerSpec};
use wgsub_testkit::chart::{peer_keys_namespace, server_keys_namespace};

use crate::cluster::Cluster;
use crate::lab::{Lab, SERVER_VETH_ADDRESS};

const SERVER: &str = "main";
const LISTEN_PORT: u16 = 51820;
const POOL: &str = "10.8.0.0/24";
/// The old server's own tunnel address: what the phone pings, before and after.
const SERVER_TUNNEL_ADDRESS: &str = "10.8.0.1";
const PHONE_ADDRESS: &str = "10.8.0.7";
/// How long the phone may go without an answer across the switch. A WireGuard client starts a
/// new handshake only when what it sent got no reply for 15 s (keepalive 10 s + rekey timeout
/// 5 s): the new interface does not know the old session, so most of the gap is that timer.
const GAP_BOUND: Duration = Duration::from_secs(30);
/// How often the phone pings.
const PING_INTERVAL: &str = "0.1";

/// Runs a wireguard-tools command with `stdin`; its trimmed output.
fn wg(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wg runs");
    let mut input = child.stdin.take().expect("a stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to wg");
    }
    drop(input);
    let output = child.wait_with_output().expect("wg ends");
    assert!(
        output.status.success(),
        "wg {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .trim()
        .to_owned()
}

/// A key pair as an administrator makes one: `wg genkey | tee private | wg pubkey`.
fn genkey() -> (String, String) {
    let private = wg(&["genkey"], None);
    let public = wg(&["pubkey"], Some(&format!("{private}\n")));
    (private, public)
}

/// Brings up the old server: wireguard-go on `lab.server_if` in the server namespace, loaded
/// from `wg0.conf` as wg-quick would (`wg-quick strip` + `wg setconf`, then the address).
fn start_old_server(lab: &Lab, conf: &str, dir: &std::path::Path) {
    let path = dir.join(format!("{}.conf", lab.server_if));
    std::fs::write(&path, conf).expect("write wg0.conf");
    let stripped = lab::run("wg-quick", &["strip", path.to_str().expect("a UTF-8 path")]);
    let stripped_path = dir.join("old-server-setconf.conf");
    std::fs::write(&stripped_path, stripped).expect("write the stripped config");
    let ns = lab.server_ns.as_str();
    lab::run("ip", &["netns", "exec", ns, "wireguard-go", &lab.server_if]);
    lab::run(
        "wg",
        &[
            "setconf",
            &lab.server_if,
            stripped_path.to_str().expect("a UTF-8 path"),
        ],
    );
    lab::run(
        "ip",
        &[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{SERVER_TUNNEL_ADDRESS}/24"),
            "dev",
            &lab.server_if,
        ],
    );
    lab::run("ip", &["-n", ns, "link", "set", &lab.server_if, "up"]);
}

/// Stops the old server: deleting a wireguard-go interface (and its UAPI socket) ends it.
fn stop_old_server(lab: &Lab) {
    lab::run("ip", &["-n", &lab.server_ns, "link", "del", &lab.server_if]);
    let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", lab.server_if));
}

/// What `ping -D -O` printed: the sequence numbers answered with their times (seconds), and
/// the highest sequence number sent.
#[derive(Debug, Default, PartialEq)]
struct PingLog {
    answered: Vec<(u64, f64)>,
    last_sent: u64,
}

impl PingLog {
    fn parse(text: &str) -> PingLog {
        let mut log = PingLog::default();
        for line in text.lines() {
            let Some(seq) = line
                .split("icmp_seq=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|seq| seq.parse::<u64>().ok())
            else {
                continue;
            };
            log.last_sent = log.last_sent.max(seq);
            if line.contains(" bytes from ") {
                let at = line
                    .strip_prefix('[')
                    .and_then(|rest| rest.split(']').next())
                    .and_then(|at| at.parse::<f64>().ok())
                    .expect("ping -D stamps each reply");
                log.answered.push((seq, at));
            }
        }
        log
    }

    /// The longest time between two consecutive answers.
    fn longest_gap(&self) -> Duration {
        self.answered
            .windows(2)
            .map(|pair| Duration::from_secs_f64((pair[1].1 - pair[0].1).max(0.0)))
            .max()
            .unwrap_or_default()
    }

    /// Requests between the first and the last answer that got none.
    fn lost(&self) -> u64 {
        let (Some(first), Some(last)) = (self.answered.first(), self.answered.last()) else {
            return 0;
        };
        (last.0 - first.0 + 1) - self.answered.len() as u64
    }
}

/// The phone's continuous ping; stopped with SIGINT so it flushes what it printed.
struct Pinger(tokio::process::Child);

impl Pinger {
    fn start(lab: &Lab) -> Pinger {
        let child = tokio::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.client_ns,
                "ping",
                "-D",
                "-O",
                "-n",
                "-i",
                PING_INTERVAL,
                "-W",
                "1",
                SERVER_TUNNEL_ADDRESS,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("ping runs");
        Pinger(child)
    }

    async fn stop(mut self) -> PingLog {
        let pid = self.0.id().expect("ping is running").to_string();
        lab::run("kill", &["-INT", &pid]);
        let mut text = String::new();
        self.0
            .stdout
            .take()
            .expect("a stdout")
            .read_to_string(&mut text)
            .await
            .expect("read ping's output");
        let _ = self.0.wait().await;
        PingLog::parse(&text)
    }
}

/// Polls `check` every 50 ms until it gives a value; panics after `within`.
async fn wait_for<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn server_resource(lab: &Lab, cluster: &Cluster) -> WgServer {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imported_clients_keep_pinging_across_the_switch_from_wireguard_go_to_the_node_agent() {
    let lab = Lab::new('m');
    let dir = tempfile::tempdir().expect("a temporary directory");

    // The old server and its customers, as `wg` made them: the phone (whose private key the
    // operator of the old service kept) and a laptop known only by its public key.
    let (server_private, server_public) = genkey();
    let (phone_private, phone_public) = genkey();
    let (_, laptop_public) = genkey();
    let wg0_conf = format!(
        "[Interface]\nAddress = {SERVER_TUNNEL_ADDRESS}/24\nListenPort = {LISTEN_PORT}\n\
         PrivateKey = {server_private}\n\n\
         # phone\n[Peer]\nPublicKey = {phone_public}\nAllowedIPs = {PHONE_ADDRESS}/32\n\n\
         # laptop\n[Peer]\nPublicKey = {laptop_public}\nAllowedIPs = 10.8.0.9/32\n"
    );
    start_old_server(&lab, &wg0_conf, dir.path());
    let phone_conf = format!(
        "[Interface]\nPrivateKey = {phone_private}\nAddress = {PHONE_ADDRESS}/32\nMTU = 1420\n\n\
         [Peer]\nPublicKey = {server_public}\nEndpoint = {SERVER_VETH_ADDRESS}:{LISTEN_PORT}\n\
         AllowedIPs = {POOL}\n"
    );
    lab.connect_client(&phone_conf);
    assert!(
        lab.ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(5))
            .await,
        "the phone reaches the old server"
    );
    let pinger = Pinger::start(&lab);

    // wgsub's cluster: the WgServer with the old port and pool, and the old server's key where
    // its privateKeySecretRef points — nothing runs yet.
    let (pool, _) = wgsub_ledger::testing::fresh_database("e2e_import").await;
    let ledger = wgsub_ledger::Ledger::new(pool, false);
    let mut cluster = Cluster::new("import").await;
    let server = server_resource(&lab, &cluster);
    cluster.create_server(&server).await;
    let mut key_secret = Secret::default();
    key_secret.metadata.name = Some("main-key".to_owned());
    key_secret.data = Some(
        [(
            "privateKey".to_owned(),
            ByteString(format!("{server_private}\n").into_bytes()),
        )]
        .into(),
    );
    Api::<Secret>::namespaced(
        cluster.client.clone(),
        &server_keys_namespace(&cluster.namespace),
    )
    .create(&PostParams::default(), &key_secret)
    .await
    .expect("the old server's key stored");

    // The import, applied, as the platform engineer runs it (an administrator's kubeconfig).
    let target = Target {
        client: cluster.client.clone(),
        namespace: cluster.namespace.clone(),
        keys_namespace: peer_keys_namespace(&cluster.namespace),
        server: SERVER.to_owned(),
    };
    let csv = format!(
        "peer,telegram_id,paid_until,device_name,private_key\n\
         {phone_public},7201,2030-01-31,phone,{phone_private}\n\
         10.8.0.9,7202,2030-02-01,laptop,\n"
    );
    let mut out = Vec::new();
    let report = run(
        &target,
        &ledger,
        &wg0_conf,
        &csv,
        true,
        Timestamp::now(),
        &mut out,
    )
    .await
    .expect("the import applies");
    assert_eq!(
        (
            report.devices,
            report.peers_created,
            report.key_secrets_created
        ),
        (2, 2, 1),
        "{out:?}"
    );

    // The switch: the old wireguard-go stops, the product's components start.
    let phone_handshake_before = lab.client_handshake().await;
    assert!(phone_handshake_before > 0, "the phone handshook before");
    let switched_at = Instant::now();
    stop_old_server(&lab);
    let stopped_in = switched_at.elapsed();
    cluster
        .start_components(SERVER, &lab.server_netns_path())
        .await;

    let servers = cluster.api::<WgServer>();
    let published = wait_for(
        "the server's public key in the WgServer status",
        Duration::from_secs(15),
        async || servers.get(SERVER).await.ok()?.status?.public_key,
    )
    .await;
    assert_eq!(published, server_public, "the node-agent kept the old key");
    let mut expected_peers = vec![phone_public.clone(), laptop_public.clone()];
    expected_peers.sort();
    wait_for(
        "both imported peers on the new interface",
        Duration::from_secs(15),
        async || {
            let mut on = lab.server_peers().await;
            on.sort();
            (on == expected_peers).then_some(())
        },
    )
    .await;
    let agent_up_in = switched_at.elapsed();
    let listen_port = lab::run("wg", &["show", &lab.server_if, "listen-port"]);
    assert_eq!(listen_port.trim(), LISTEN_PORT.to_string());
    let allowed = lab::run("wg", &["show", &lab.server_if, "allowed-ips"]);
    assert!(
        allowed
            .lines()
            .any(|line| line.starts_with(&phone_public) && line.contains(PHONE_ADDRESS)),
        "the phone keeps its address: {allowed}"
    );

    // The phone's unchanged config handshakes again and its pings get answers again.
    let handshake = wait_for(
        "the phone's new handshake",
        GAP_BOUND + Duration::from_secs(10),
        async || {
            let now = lab.client_handshake().await;
            (now > phone_handshake_before).then_some(now)
        },
    )
    .await;
    let resumed_in = switched_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = pinger.stop().await;
    assert!(handshake > phone_handshake_before);

    // The operator left the imported peers as they came: same key, same address.
    let peers = cluster.api::<WgPeer>();
    let phone = peers.get("tg-7201-1").await.expect("the phone's WgPeer");
    assert_eq!(
        phone.spec.public_key.as_deref(),
        Some(phone_public.as_str())
    );
    assert_eq!(
        phone.spec.address.as_deref(),
        Some(format!("{PHONE_ADDRESS}/32").as_str())
    );

    let gap = log.longest_gap();
    let lost = log.lost();
    println!(
        "switch: old wireguard-go stopped in {} ms, node-agent's interface with both peers {} ms \
         after, the phone's new handshake seen {} ms after; longest gap between answered pings \
         {} ms, {lost} of {} pings lost (one every {PING_INTERVAL} s)",
        stopped_in.as_millis(),
        agent_up_in.as_millis(),
        resumed_in.as_millis(),
        gap.as_millis(),
        log.last_sent,
    );
    let last_answer = log.answered.last().map_or(0, |answer| answer.0);
    assert!(
        last_answer + 15 >= log.last_sent,
        "the pings did not resume after the switch: last answer #{last_answer} of {}",
        log.last_sent
    );
    assert!(gap > Duration::ZERO, "the switch interrupted the pings");
    assert!(gap < GAP_BOUND, "the pings stopped for {gap:?}");
    cluster.assert_nothing_forbidden();
}

#[test]
fn ping_log_counts_the_answers_the_gap_and_the_losses() {
    let text = "PING 10.8.0.1 (10.8.0.1) 56(84) bytes of data.\n\
                [1000.100000] 64 bytes from 10.8.0.1: icmp_seq=1 ttl=64 time=0.5 ms\n\
                [1000.200000] 64 bytes from 10.8.0.1: icmp_seq=2 ttl=64 time=0.5 ms\n\
                [1000.400000] no answer yet for icmp_seq=3\n\
                [1000.500000] no answer yet for icmp_seq=4\n\
                [1001.700000] 64 bytes from 10.8.0.1: icmp_seq=5 ttl=64 time=0.5 ms\n\
                [1001.900000] no answer yet for icmp_seq=6\n";
    let log = PingLog::parse(text);
    assert_eq!(log.answered.len(), 3);
    assert_eq!(log.last_sent, 6);
    assert_eq!(log.lost(), 2);
    assert_eq!(log.longest_gap().as_millis(), 1500);
}
