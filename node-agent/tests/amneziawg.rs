//! AmneziaWG on real tunnels. Two network namespaces (`server`, `client`) joined by a veth pair;
//! the agent runs against the real API server (its watches, status writes and Secret creation)
//! with its worker thread in the server namespace, where it drives amneziawg-go for an AmneziaWG
//! `WgServer` — beside wireguard-go for a WireGuard one. Clients are configured from the `.conf`
//! of the product's renderer: an amneziawg-go client gets it translated to UAPI (as the
//! AmneziaWG apps read it), a plain wireguard-go client gets its WireGuard lines.
//!
//! Proves: the agent waits for the parameters before bringing the interface up; the matching
//! client pings through; a plain WireGuard client with the right keys gets no handshake (the
//! obfuscation is really on); a client with one parameter off gets no traffic; a parameter
//! change reaches the interface; expiry, disable and renewal cut and restore the tunnel; a node
//! without amneziawg-go says so on the `WgServer` and keeps serving WireGuard.
//!
//! Needs root, amneziawg-go (`WGSUB_AMNEZIAWG_GO`, built by `scripts/install-test-deps`),
//! wireguard-go, wireguard-tools, iproute2 and ping: fails with a message otherwise.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;
use wgsub_crds::config::ClientConfig;
use wgsub_crds::keys::{PrivateKey, PublicKey};
use wgsub_crds::resources::{LABEL_SUBSCRIPTION, condition};
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec, WgPeer, WgServer, WgServerSpec};
use wgsub_node_agent::agent::Agent;
use wgsub_node_agent::config::Config;
use wgsub_node_agent::http::Health;
use wgsub_node_agent::index::SharedIndex;
use wgsub_node_agent::interface::Worker;
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue, run_watches};
use wgsub_node_agent::metrics::Metrics;
use wgsub_testkit::envtest::ControlPlane;

const SERVER_VETH: &str = "172.31.0.1";
const AWG_PORT: u16 = 51821;
const WG_PORT: u16 = 51820;
const AWG_SERVER: &str = "awg";
const WG_SERVER: &str = "wg";
/// A peer put back on the server has lost its session; the client notices after WireGuard's
/// keepalive timeout plus rekey timeout (15 s) and makes a new handshake by itself.
const REHANDSHAKE: Duration = Duration::from_secs(25);
/// The `.conf` keys of AmneziaWG's `[Interface]` (lower case: the UAPI keys).
const AWG_KEYS: [&str; 16] = [
    "jc", "jmin", "jmax", "s1", "s2", "s3", "s4", "h1", "h2", "h3", "h4", "i1", "i2", "i3", "i4",
    "i5",
];

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The amneziawg-go the test command built (`WGSUB_AMNEZIAWG_GO`).
fn amneziawg_go() -> PathBuf {
    let path = std::env::var_os("WGSUB_AMNEZIAWG_GO").map(PathBuf::from);
    match path {
        Some(path) if path.is_file() => path,
        other => panic!(
            "the AmneziaWG tests need amneziawg-go: WGSUB_AMNEZIAWG_GO is {other:?}; \
             scripts/install-test-deps builds it into $WGSUB_TOOLS_DIR/bin/amneziawg-go \
             (scripts/test exports the variable)"
        ),
    }
}

/// One UAPI request to an amneziawg-go socket, answered up to its closing blank line.
fn uapi(interface: &str, request: &str) -> String {
    let path = format!("/var/run/amneziawg/{interface}.sock");
    let mut stream = UnixStream::connect(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let mut reader = BufReader::new(stream);
    loop {
        let before = answer.len();
        if reader.read_line(&mut answer).unwrap() == 0 || &answer[before..] == "\n" {
            return answer;
        }
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client `.conf` as the AmneziaWG apps import it, translated to the UAPI: the `set=1` body,
/// the addresses and the routes.
struct UapiClient {
    body: String,
    addresses: Vec<String>,
    routes: Vec<String>,
}

fn conf_to_uapi(conf: &str) -> UapiClient {
    let mut device = Vec::new();
    let mut peer = Vec::new();
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    let mut section = "";
    let list =
        |value: &str| -> Vec<String> { value.split(',').map(|s| s.trim().to_owned()).collect() };
    for line in conf.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('[') {
            section = if line == "[Peer]" {
                "peer"
            } else {
                "interface"
            };
            continue;
        }
        let (key, value) = line.split_once('=').expect("key = value");
        let (key, value) = (key.trim(), value.trim());
        let lower = key.to_ascii_lowercase();
        match (section, key) {
            ("interface", "PrivateKey") => device.push(format!(
                "private_key={}",
                hex(PrivateKey::from_base64(value).unwrap().as_bytes())
            )),
            ("interface", "Address") => addresses = list(value),
            ("interface", "DNS" | "MTU") => {}
            ("interface", _) if AWG_KEYS.contains(&lower.as_str()) => {
                device.push(format!("{lower}={value}"))
            }
            ("peer", "PublicKey") => peer.push(format!(
                "public_key={}",
                hex(PublicKey::from_base64(value).unwrap().as_bytes())
            )),
            ("peer", "Endpoint") => peer.push(format!("endpoint={value}")),
            ("peer", "AllowedIPs") => {
                routes = list(value);
                peer.extend(routes.iter().map(|r| format!("allowed_ip={r}")));
            }
            ("peer", "PersistentKeepalive") => {
                peer.push(format!("persistent_keepalive_interval={value}"))
            }
            other => panic!("the client .conf has a line this test does not know: {other:?}"),
        }
    }
    let body = device
        .into_iter()
        .chain(peer)
        .map(|line| line + "\n")
        .collect();
    UapiClient {
        body,
        addresses,
        routes,
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair, with names unique to this process and test; removed on
/// drop (which ends the amneziawg-go and wireguard-go processes whose tun devices lived there).
struct Lab {
    id: String,
    server_ns: String,
    client_ns: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        wgsub_testkit::host::require_root_and_tools(
            "the AmneziaWG tests",
            "network namespaces, veth pairs, amneziawg-go, wireguard-go",
            &["wireguard-go", "wg", "wg-quick", "ip", "ping"],
        );
        amneziawg_go();
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab {
            server_ns: format!("wgsub-awg-s{id}"),
            client_ns: format!("wgsub-awg-c{id}"),
            dir: tempfile::tempdir().unwrap(),
            id,
        };
        let (va, vb) = (format!("vas{}", lab.id), format!("vbc{}", lab.id));
        run("ip", &["netns", "add", &lab.server_ns]);
        run("ip", &["netns", "add", &lab.client_ns]);
        run(
            "ip",
            &["link", "add", &va, "type", "veth", "peer", "name", &vb],
        );
        run("ip", &["link", "set", &va, "netns", &lab.server_ns]);
        run("ip", &["link", "set", &vb, "netns", &lab.client_ns]);
        for (ns, dev, address) in [
            (&lab.server_ns, &va, "172.31.0.1/24"),
            (&lab.client_ns, &vb, "172.31.0.2/24"),
        ] {
            run("ip", &["-n", ns, "addr", "add", address, "dev", dev]);
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// Interface names: `awgs` (the agent's AmneziaWG server), `wgs` (its WireGuard server),
    /// `awgc`/`awgx` (AmneziaWG clients), `wgc` (a WireGuard client).
    fn interface(&self, role: &str) -> String {
        format!("{role}{}", self.id)
    }

    fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.server_ns))
    }

    fn server_has_link(&self, name: &str) -> bool {
        succeeds("ip", &["-n", &self.server_ns, "link", "show", name])
    }

    fn client_link_del(&self, name: &str) {
        let _ = Command::new("ip")
            .args(["-n", &self.client_ns, "link", "del", name])
            .output();
    }

    fn client_addresses_and_routes(&self, name: &str, addresses: &[String], routes: &[String]) {
        let ns = self.client_ns.as_str();
        for address in addresses {
            run("ip", &["-n", ns, "addr", "add", address, "dev", name]);
        }
        run("ip", &["-n", ns, "link", "set", name, "up"]);
        for route in routes {
            run("ip", &["-n", ns, "route", "replace", route, "dev", name]);
        }
    }

    /// Brings up an amneziawg-go client named `name` from `client` (the `.conf` in UAPI form).
    fn connect_amneziawg(&self, name: &str, client: &UapiClient) {
        self.client_link_del(name);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.client_ns,
                amneziawg_go().to_str().unwrap(),
                name,
            ],
        );
        let answer = uapi(name, &format!("set=1\n{}\n", client.body));
        assert!(answer.contains("errno=0"), "client set: {answer}");
        self.client_addresses_and_routes(name, &client.addresses, &client.routes);
    }

    /// Brings up a plain wireguard-go client from the `.conf` without its AmneziaWG lines, as
    /// wg-quick would.
    fn connect_wireguard(&self, name: &str, conf: &str) {
        self.client_link_del(name);
        let plain: String = conf
            .lines()
            .filter(|line| {
                let key = line
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                !AWG_KEYS.contains(&key.as_str())
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let path = self.dir.path().join(format!("{name}.conf"));
        std::fs::write(&path, plain).unwrap();
        let stripped = run("wg-quick", &["strip", path.to_str().unwrap()]);
        let stripped_path = self.dir.path().join(format!("{name}.stripped"));
        std::fs::write(&stripped_path, stripped).unwrap();
        run(
            "ip",
            &["netns", "exec", &self.client_ns, "wireguard-go", name],
        );
        run("wg", &["setconf", name, stripped_path.to_str().unwrap()]);
        let conf = ClientLines::of(conf);
        self.client_addresses_and_routes(name, &conf.addresses, &conf.routes);
    }

    fn ping_once(&self, address: &str) -> bool {
        succeeds(
            "ip",
            &[
                "netns",
                "exec",
                &self.client_ns,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                address,
            ],
        )
    }

    /// Pings until one answer arrives or `within` passes.
    fn ping_works(&self, address: &str, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.ping_once(address) {
                return true;
            }
        }
        false
    }

    /// The public keys (hex) on an amneziawg-go interface and their last handshake (seconds).
    fn amneziawg_peers(&self, name: &str) -> BTreeMap<String, u64> {
        if !self.server_has_link(name) {
            return BTreeMap::new();
        }
        let answer = uapi(name, "get=1\n\n");
        let mut peers = BTreeMap::new();
        let mut current = None;
        for line in answer.lines() {
            if let Some(key) = line.strip_prefix("public_key=") {
                current = Some(key.to_owned());
                peers.insert(key.to_owned(), 0);
            } else if let (Some(seconds), Some(key)) =
                (line.strip_prefix("last_handshake_time_sec="), &current)
            {
                peers.insert(key.clone(), seconds.parse().unwrap());
            }
        }
        peers
    }

    /// One device line of an amneziawg-go interface (`h4`, …).
    fn amneziawg_value(&self, name: &str, key: &str) -> Option<String> {
        uapi(name, "get=1\n\n")
            .lines()
            .take_while(|line| !line.starts_with("public_key="))
            .find_map(|line| line.strip_prefix(&format!("{key}=")).map(str::to_owned))
    }

    /// The public keys (base64) on a wireguard-go interface of the server, by `wg show`.
    fn wireguard_peers(&self, name: &str) -> Vec<String> {
        match Command::new("wg").args(["show", name, "peers"]).output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The latest handshake a wireguard-go client saw, in seconds since the epoch (0: none).
    fn wireguard_client_handshake(&self, name: &str) -> u64 {
        run("wg", &["show", name, "latest-handshakes"])
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for role in ["awgs", "awgc", "awgx"] {
            let name = self.interface(role);
            let _ = std::fs::remove_file(format!("/var/run/amneziawg/{name}.sock"));
        }
        for role in ["wgs", "wgc"] {
            let name = self.interface(role);
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}

/// Addresses and routes of a `.conf`.
struct ClientLines {
    addresses: Vec<String>,
    routes: Vec<String>,
}

impl ClientLines {
    fn of(conf: &str) -> ClientLines {
        let value = |key: &str| -> Vec<String> {
            conf.lines()
                .find_map(|line| {
                    let (k, v) = line.split_once('=')?;
                    (k.trim() == key).then(|| v.split(',').map(|s| s.trim().to_owned()).collect())
                })
                .unwrap_or_default()
        };
        ClientLines {
            addresses: value("Address"),
            routes: value("AllowedIPs"),
        }
    }
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

fn in_secs(seconds: i64) -> Timestamp {
    Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap()
}

/// Parameters of an AWG 1.0 server, as an administrator writes them.
fn params() -> serde_json::Value {
    serde_json::json!({
        "jc": 4, "jmin": 40, "jmax": 70, "s1": 25, "s2": 61,
        "h1": "1234567", "h2": "2345678", "h3": "3456789", "h4": "4567890",
    })
}

/// The lab, a fresh namespace of the real API server with a Node, and the agent serving it.
struct Scenario {
    lab: Lab,
    client: kube::Client,
    namespace: String,
    node: String,
    shutdown: CancellationToken,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Scenario {
    /// Starts the agent with `amneziawg_go` as its amneziawg-go.
    async fn start(amneziawg_go: &str) -> Scenario {
        let lab = Lab::new();
        let plane = ControlPlane::with_crds();
        let namespace = plane.namespace("awg").await;
        let client = plane.admin_client();
        let node = format!("awg-node-{}", lab.id);
        let mut object = Node::default();
        object.metadata.name = Some(node.clone());
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
        let subscription = VpnSubscription::new("tg-1", VpnSubscriptionSpec::for_user(1));
        Api::<VpnSubscription>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &subscription)
            .await
            .unwrap();
        let netns = lab.netns_path();
        let config = Config::try_parse_from([
            "wgsub-node-agent",
            "--node-name",
            &node,
            "--namespace",
            &namespace,
            "--backend",
            "userspace",
            "--netns",
            netns.to_str().unwrap(),
            "--amneziawg-go",
            amneziawg_go,
            "--resync-interval",
            "3600",
            "--status-interval",
            "0.3",
        ])
        .unwrap();
        config.validate().unwrap();
        let shutdown = CancellationToken::new();
        let index = Arc::new(SharedIndex::default());
        let metrics = Arc::new(Metrics::default());
        let api = KubeApi::new(client.clone(), namespace.clone());
        let status = Arc::new(StatusQueue::default());
        let agent = Agent::new(
            config.agent_settings(),
            index.clone(),
            api.clone(),
            Worker::start(config.netns.clone()).unwrap(),
            metrics.clone(),
            Arc::new(Health::new(config.health_deadline())),
            status.clone(),
        );
        let watch_client = client.clone();
        let watch_namespace = namespace.clone();
        let watch_shutdown = shutdown.clone();
        tokio::spawn(async move {
            run_watches(
                watch_client,
                &watch_namespace,
                &watch_namespace,
                index,
                watch_shutdown,
            )
            .await;
        });
        tokio::spawn(status.run_writer(api, 1000, metrics, shutdown.clone()));
        tokio::spawn(agent.run(shutdown.clone()));
        Scenario {
            lab,
            client,
            namespace,
            node,
            shutdown,
        }
    }

    fn servers(&self) -> Api<WgServer> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn peers(&self) -> Api<WgPeer> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn server_spec(&self, name: &str) -> WgServerSpec {
        let (role, port, pool) = if name == AWG_SERVER {
            ("awgs", AWG_PORT, "10.9.0.0/24")
        } else {
            ("wgs", WG_PORT, "10.8.0.0/24")
        };
        serde_json::from_value(serde_json::json!({
            "endpoint": format!("{SERVER_VETH}:{port}"),
            "listenPort": port,
            "interfaceName": self.lab.interface(role),
            "addressPool": pool,
            "clientAllowedIPs": [pool],
            "mtu": 1420,
            "nodeName": self.node,
            "privateKeySecretRef": {"name": format!("{name}-key"), "key": "privateKey"},
        }))
        .unwrap()
    }

    /// Creates the WireGuard server, or the AmneziaWG one with `amneziawg` as its parameters.
    async fn create_server(&self, name: &str, amneziawg: Option<serde_json::Value>) {
        let mut value = serde_json::to_value(self.server_spec(name)).unwrap();
        if name == AWG_SERVER {
            value["protocol"] = "amneziawg".into();
            if let Some(block) = amneziawg {
                value["amneziawg"] = block;
            }
        }
        let server = WgServer::new(name, serde_json::from_value(value).unwrap());
        self.servers()
            .create(&PostParams::default(), &server)
            .await
            .unwrap();
    }

    async fn set_parameters(&self, block: serde_json::Value) {
        self.servers()
            .patch(
                AWG_SERVER,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"amneziawg": block}})),
            )
            .await
            .unwrap();
    }

    async fn ready(&self, server: &str) -> Option<(String, String, String)> {
        let status = self.servers().get(server).await.ok()?.status?;
        condition(&status.conditions, "Ready")
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    async fn wait_ready_reason(&self, server: &str, reason: &str) -> String {
        let mut message = String::new();
        wait_for(
            &format!("{server} Ready reason {reason}"),
            Duration::from_secs(20),
            async || match self.ready(server).await {
                Some((_, why, text)) if why == reason => {
                    message = text;
                    true
                }
                _ => false,
            },
        )
        .await;
        message
    }

    /// A new peer of `server` with its own key, created in the API.
    async fn add_peer(
        &self,
        name: &str,
        server: &str,
        address: &str,
        expires_at: Timestamp,
    ) -> PrivateKey {
        let key = PrivateKey::generate();
        let peer: WgPeer = serde_json::from_value(serde_json::json!({
            "apiVersion": "wgsub.io/v1alpha1",
            "kind": "WgPeer",
            "metadata": {"name": name, "labels": {LABEL_SUBSCRIPTION: "tg-1"}},
            "spec": {
                "server": server,
                "publicKey": key.public_key().to_base64(),
                "address": address,
                "expiresAt": expires_at.to_string(),
                "enabled": true,
            },
        }))
        .unwrap();
        self.peers()
            .create(&PostParams::default(), &peer)
            .await
            .unwrap();
        key
    }

    async fn patch_peer(&self, name: &str, spec: serde_json::Value) {
        self.peers()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    async fn peer_reason(&self, name: &str) -> Option<String> {
        let peer = self.peers().get(name).await.ok()?;
        condition(&peer.status?.conditions, "Ready").map(|c| c.reason.clone())
    }

    /// The peer's client `.conf`, rendered by the product from the resources as they are now.
    async fn client_conf(&self, server: &str, peer: &str, key: &PrivateKey) -> String {
        let mut public = None;
        wait_for(
            "the server's public key in its status",
            Duration::from_secs(20),
            async || {
                public = self
                    .servers()
                    .get(server)
                    .await
                    .ok()
                    .and_then(|s| s.status?.public_key);
                public.is_some()
            },
        )
        .await;
        let server_object = self.servers().get(server).await.unwrap();
        let peer_object = self.peers().get(peer).await.unwrap();
        let config = ClientConfig::for_peer(
            &server_object.spec,
            Some(public.unwrap().parse().unwrap()),
            &peer_object.spec,
            key.clone(),
            None,
        )
        .unwrap();
        config.render().to_string()
    }

    async fn wait_amneziawg_peer(&self, key: &PrivateKey, present: bool) {
        let name = self.lab.interface("awgs");
        let hex_key = hex(key.public_key().as_bytes());
        wait_for(
            if present {
                "the peer on the AmneziaWG interface"
            } else {
                "the peer gone from the AmneziaWG interface"
            },
            Duration::from_secs(15),
            async || self.lab.amneziawg_peers(&name).contains_key(&hex_key) == present,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amneziawg_server_comes_up_with_its_parameters_and_only_a_matching_client_gets_through()
{
    let binary = amneziawg_go();
    let s = Scenario::start(binary.to_str().unwrap()).await;
    let (awgs, wgs) = (s.lab.interface("awgs"), s.lab.interface("wgs"));

    // Side by side: a WireGuard server, and an AmneziaWG one whose parameters are not chosen
    // yet — it stays down until they are.
    s.create_server(WG_SERVER, None).await;
    s.create_server(AWG_SERVER, None).await;
    s.wait_ready_reason(AWG_SERVER, "ParametersPending").await;
    s.wait_ready_reason(WG_SERVER, "Synced").await;
    assert!(s.lab.server_has_link(&wgs));
    assert!(
        !s.lab.server_has_link(&awgs),
        "an AmneziaWG interface came up without its parameters"
    );
    s.set_parameters(params()).await;
    s.wait_ready_reason(AWG_SERVER, "Synced").await;
    assert_eq!(
        s.lab.amneziawg_value(&awgs, "h4").as_deref(),
        Some("4567890")
    );
    assert_eq!(s.lab.amneziawg_value(&awgs, "jc").as_deref(), Some("4"));

    let awg_key = s
        .add_peer("tg-1-1", AWG_SERVER, "10.9.0.2/32", in_secs(3600))
        .await;
    let wg_key = s
        .add_peer("tg-1-2", WG_SERVER, "10.8.0.2/32", in_secs(3600))
        .await;
    s.wait_amneziawg_peer(&awg_key, true).await;
    wait_for(
        "the WireGuard peer on its interface",
        Duration::from_secs(15),
        async || {
            s.lab
                .wireguard_peers(&wgs)
                .contains(&wg_key.public_key().to_base64())
        },
    )
    .await;

    // The AmneziaWG client from the product's .conf pings through; so does the WireGuard one.
    let conf = s.client_conf(AWG_SERVER, "tg-1-1", &awg_key).await;
    for key in ["Jc", "Jmin", "Jmax", "S1", "S2", "H1", "H2", "H3", "H4"] {
        assert!(
            conf.contains(&format!("\n{key} = ")),
            "{key} missing:\n{conf}"
        );
    }
    let client = conf_to_uapi(&conf);
    let awgc = s.lab.interface("awgc");
    s.lab.connect_amneziawg(&awgc, &client);
    assert!(
        s.lab.ping_works("10.9.0.1", Duration::from_secs(8)),
        "ping through the AmneziaWG tunnel failed"
    );
    let wg_conf = s.client_conf(WG_SERVER, "tg-1-2", &wg_key).await;
    assert!(
        !wg_conf.contains("\nJc = "),
        "a WireGuard .conf with AmneziaWG lines:\n{wg_conf}"
    );
    let wgc = s.lab.interface("wgc");
    s.lab.connect_wireguard(&wgc, &wg_conf);
    assert!(
        s.lab.ping_works("10.8.0.1", Duration::from_secs(8)),
        "ping through the WireGuard tunnel beside it failed"
    );
    s.lab.client_link_del(&wgc);
    s.lab.client_link_del(&awgc);

    // A plain WireGuard client with the right keys: the server never answers its handshake.
    s.lab.connect_wireguard(&wgc, &conf);
    assert!(
        !s.lab.ping_works("10.9.0.1", Duration::from_secs(6)),
        "a plain WireGuard client got through an AmneziaWG server"
    );
    assert_eq!(
        s.lab.wireguard_client_handshake(&wgc),
        0,
        "a plain WireGuard client completed a handshake"
    );
    s.lab.client_link_del(&wgc);

    // One parameter off — a padding, or the transport header (the handshake passes, the data
    // does not) — and no traffic flows.
    let awgx = s.lab.interface("awgx");
    for (key, wrong) in [("s1", "26"), ("h4", "5678901")] {
        let mut off = conf_to_uapi(&conf);
        let good = client
            .body
            .lines()
            .find(|line| line.starts_with(&format!("{key}=")))
            .unwrap()
            .to_owned();
        off.body = off.body.replace(&good, &format!("{key}={wrong}"));
        s.lab.connect_amneziawg(&awgx, &off);
        assert!(
            !s.lab.ping_works("10.9.0.1", Duration::from_secs(6)),
            "a client with {key} off got through"
        );
        s.lab.client_link_del(&awgx);
    }

    // A deliberate parameter change reaches the interface: the server now speaks h4=5678901,
    // and a client with that value (a re-imported config) gets through.
    let mut changed = params();
    changed["h4"] = "5678901".into();
    s.set_parameters(changed).await;
    wait_for(
        "the new h4 on the interface",
        Duration::from_secs(15),
        async || s.lab.amneziawg_value(&awgs, "h4").as_deref() == Some("5678901"),
    )
    .await;
    let renewed = conf_to_uapi(&s.client_conf(AWG_SERVER, "tg-1-1", &awg_key).await);
    assert!(renewed.body.contains("h4=5678901\n"), "{}", renewed.body);
    s.lab.connect_amneziawg(&awgc, &renewed);
    assert!(
        s.lab.ping_works("10.9.0.1", REHANDSHAKE),
        "ping fails after the parameter change"
    );
    assert!(
        s.lab
            .wireguard_peers(&wgs)
            .contains(&wg_key.public_key().to_base64()),
        "the WireGuard server lost its peer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_disable_and_renewal_cut_and_restore_an_amneziawg_tunnel() {
    let binary = amneziawg_go();
    let s = Scenario::start(binary.to_str().unwrap()).await;
    s.create_server(AWG_SERVER, Some(params())).await;
    let expires = in_secs(10);
    let key = s
        .add_peer("tg-1-1", AWG_SERVER, "10.9.0.2/32", expires)
        .await;
    s.wait_amneziawg_peer(&key, true).await;
    let conf = s.client_conf(AWG_SERVER, "tg-1-1", &key).await;
    let awgc = s.lab.interface("awgc");
    s.lab.connect_amneziawg(&awgc, &conf_to_uapi(&conf));
    assert!(
        s.lab.ping_works("10.9.0.1", Duration::from_secs(8)),
        "ping through the AmneziaWG tunnel failed"
    );

    // Expiry: the agent's own timer removes the peer at expiresAt.
    s.wait_amneziawg_peer(&key, false).await;
    let late = Timestamp::now().duration_since(expires);
    assert!(
        late < jiff::SignedDuration::from_secs(3),
        "removed {late:?} after expiresAt"
    );
    assert!(
        !s.lab.ping_works("10.9.0.1", Duration::from_secs(3)),
        "ping still works after expiry"
    );
    wait_for("status Expired", Duration::from_secs(10), async || {
        s.peer_reason("tg-1-1").await.as_deref() == Some("Expired")
    })
    .await;

    // Renewal brings the same key back: the same config works again.
    s.patch_peer(
        "tg-1-1",
        serde_json::json!({"expiresAt": in_secs(3600).to_string()}),
    )
    .await;
    s.wait_amneziawg_peer(&key, true).await;
    assert!(
        s.lab.ping_works("10.9.0.1", REHANDSHAKE),
        "ping fails after renewal"
    );

    // Disable cuts, enable restores.
    s.patch_peer("tg-1-1", serde_json::json!({"enabled": false}))
        .await;
    s.wait_amneziawg_peer(&key, false).await;
    assert!(
        !s.lab.ping_works("10.9.0.1", Duration::from_secs(3)),
        "ping works while disabled"
    );
    s.patch_peer("tg-1-1", serde_json::json!({"enabled": true}))
        .await;
    s.wait_amneziawg_peer(&key, true).await;
    assert!(
        s.lab.ping_works("10.9.0.1", REHANDSHAKE),
        "ping fails after enable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_amneziawg_go_says_so_and_keeps_serving_wireguard() {
    let s = Scenario::start("/nonexistent/amneziawg-go").await;
    s.create_server(WG_SERVER, None).await;
    s.create_server(AWG_SERVER, Some(params())).await;
    let message = s
        .wait_ready_reason(AWG_SERVER, "AmneziaWGUnavailable")
        .await;
    assert!(message.contains("amneziawg-go"), "{message}");
    let (status, _, _) = s.ready(AWG_SERVER).await.unwrap();
    assert_eq!(status, "False");
    assert!(!s.lab.server_has_link(&s.lab.interface("awgs")));

    s.wait_ready_reason(WG_SERVER, "Synced").await;
    let key = s
        .add_peer("tg-1-1", WG_SERVER, "10.8.0.2/32", in_secs(3600))
        .await;
    let wgs = s.lab.interface("wgs");
    wait_for(
        "the WireGuard peer on its interface",
        Duration::from_secs(15),
        async || {
            s.lab
                .wireguard_peers(&wgs)
                .contains(&key.public_key().to_base64())
        },
    )
    .await;
    let conf = s.client_conf(WG_SERVER, "tg-1-1", &key).await;
    let wgc = s.lab.interface("wgc");
    s.lab.connect_wireguard(&wgc, &conf);
    assert!(
        s.lab.ping_works("10.8.0.1", Duration::from_secs(8)),
        "the WireGuard server next to an unservable AmneziaWG one does not carry traffic"
    );
    assert_eq!(
        s.ready(AWG_SERVER).await.map(|(_, why, _)| why).as_deref(),
        Some("AmneziaWGUnavailable")
    );
}
