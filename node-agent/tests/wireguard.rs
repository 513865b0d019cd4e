//! Real WireGuard against the real Kubernetes API server. Two network namespaces (`server`,
//! `client`) joined by a veth pair; the agent's loop drives a wireguard-go interface in the server
//! namespace (its worker thread enters it) and its watches watch a namespace of the envtest API
//! server (`wgsub_testkit::envtest`), where the test creates and patches the `WgServer`, `WgPeer`s,
//! `VpnSubscription` and key Secret and waits, with bounded polling, for the interface and the
//! status to follow. The client interface is configured from the `.conf` the crds renderer
//! makes for the peer (`wg-quick strip` + `wg setconf`, address and route by `ip`).
//!
//! Covers: the tunnel and the expiry timer, the agent's own clock, disable/enable/renewal and
//! suspension, resync repairing drift, address conflicts and a malformed server key, NAT rules
//! (nftables and iptables, and switched by the server), and peers added while the `WgPeer` list
//! still arrives (its pages held by the test between the agent and the API server).
//!
//! Needs root, wireguard-go, wireguard-tools, iproute2, ping and nft: fails with a message
//! otherwise.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

// The `http` crate's types, as axum re-exports them (the ones kube's client takes).
use axum::http::{Request, Uri};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wgsub_crds::config::ClientConfig;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{LABEL_SUBSCRIPTION, NatSpec, condition};
use wgsub_crds::{
    VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec, WgServer, WgServerSpec,
};
use wgsub_node_agent::agent::{Agent, Clock, Settings};
use wgsub_node_agent::http::Health;
use wgsub_node_agent::index::SharedIndex;
use wgsub_node_agent::interface::{Backend, Worker};
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue, run_watches};
use wgsub_node_agent::metrics::Metrics;
use wgsub_node_agent::nat::{self, Firewall, NatPlan};
use wgsub_testkit::envtest::ControlPlane;

const SERVER: &str = "main";
const SERVER_VETH: &str = "172.31.0.1";
const LISTEN_PORT: u16 = 51820;
/// A peer put back on the server has lost its session; the client notices after WireGuard's
/// keepalive timeout plus rekey timeout (15 s) and makes a new handshake by itself.
const REHANDSHAKE: Duration = Duration::from_secs(25);

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

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair, with names unique to this process and test; removed on
/// drop (which also ends the wireguard-go processes whose tun devices lived there).
struct Lab {
    server_ns: String,
    client_ns: String,
    /// The veth end in the server namespace: where NAT sends clients' traffic out.
    server_veth: String,
    server_if: String,
    client_if: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        wgsub_testkit::host::require_root_and_tools(
            "the WireGuard tests",
            "network namespaces, veth pairs, wireguard-go",
            &["wireguard-go", "wg", "wg-quick", "ip", "ping", "nft"],
        );
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab {
            server_ns: format!("wgsub-na-s{id}"),
            client_ns: format!("wgsub-na-c{id}"),
            server_veth: format!("vas{id}"),
            server_if: format!("wgs{id}"),
            client_if: format!("wgc{id}"),
            dir: tempfile::tempdir().unwrap(),
        };
        let (va, vb) = (&lab.server_veth, format!("vbc{id}"));
        run("ip", &["netns", "add", &lab.server_ns]);
        run("ip", &["netns", "add", &lab.client_ns]);
        run(
            "ip",
            &["link", "add", va, "type", "veth", "peer", "name", &vb],
        );
        run("ip", &["link", "set", va, "netns", &lab.server_ns]);
        run("ip", &["link", "set", &vb, "netns", &lab.client_ns]);
        for (ns, dev, address) in [
            (&lab.server_ns, va, "172.31.0.1/24"),
            (&lab.client_ns, &vb, "172.31.0.2/24"),
        ] {
            run("ip", &["-n", ns, "addr", "add", address, "dev", dev]);
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.server_ns))
    }

    /// Brings up the client from the rendered `.conf`, as wg-quick would.
    fn connect_client(&self, config: &ClientConfig) {
        let conf = self.dir.path().join(format!("{}.conf", self.client_if));
        std::fs::write(&conf, config.render().as_bytes()).unwrap();
        let stripped = run("wg-quick", &["strip", conf.to_str().unwrap()]);
        let stripped_path = self.dir.path().join("stripped.conf");
        std::fs::write(&stripped_path, stripped).unwrap();
        if !succeeds(
            "ip",
            &["-n", &self.client_ns, "link", "show", &self.client_if],
        ) {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.client_ns,
                    "wireguard-go",
                    &self.client_if,
                ],
            );
        }
        run(
            "wg",
            &["setconf", &self.client_if, stripped_path.to_str().unwrap()],
        );
        run(
            "ip",
            &[
                "-n",
                &self.client_ns,
                "addr",
                "flush",
                "dev",
                &self.client_if,
            ],
        );
        for address in &config.addresses {
            run(
                "ip",
                &[
                    "-n",
                    &self.client_ns,
                    "addr",
                    "add",
                    address,
                    "dev",
                    &self.client_if,
                ],
            );
        }
        run(
            "ip",
            &["-n", &self.client_ns, "link", "set", &self.client_if, "up"],
        );
        for route in &config.allowed_ips {
            run(
                "ip",
                &[
                    "-n",
                    &self.client_ns,
                    "route",
                    "replace",
                    route,
                    "dev",
                    &self.client_if,
                ],
            );
        }
    }

    fn ping_once(&self) -> bool {
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
                "10.8.0.1",
            ],
        )
    }

    /// Pings until one answer arrives or `within` passes.
    fn ping_works(&self, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.ping_once() {
                return true;
            }
        }
        false
    }

    /// The public keys on the server interface, by `wg show`.
    fn server_peers(&self) -> Vec<String> {
        match Command::new("wg")
            .args(["show", &self.server_if, "peers"])
            .output()
        {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for name in [&self.server_if, &self.client_if] {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
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

/// How the agent's `WgPeer` watch gets its list.
enum PeerList {
    /// As the API server answers it.
    Whole,
    /// One peer a page, each page asked for only once the test releases it
    /// ([`Scenario::release_peer_pages`], [`Scenario::end_peer_list`]).
    HeldPageByPage,
}

/// A lab, a namespace of the real API server with a Node, the `WgServer` of the lab's interface
/// and the subscription `tg-1`, and the agent serving that node with its watches on the namespace
/// (server keys in the same namespace).
struct Scenario {
    lab: Lab,
    client: kube::Client,
    namespace: String,
    metrics: Arc<Metrics>,
    /// The permits of the `WgPeer` list's pages ([`PeerList::HeldPageByPage`]); closed when
    /// nothing is held.
    peer_pages: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn server_spec(lab: &Lab, node: &str) -> WgServerSpec {
    serde_json::from_value(serde_json::json!({
        "endpoint": format!("{SERVER_VETH}:{LISTEN_PORT}"),
        "listenPort": LISTEN_PORT,
        "interfaceName": lab.server_if,
        "addressPool": "10.8.0.0/24",
        "clientAllowedIPs": ["10.8.0.0/24"],
        "mtu": 1420,
        "nodeName": node,
        "privateKeySecretRef": {"name": "main-key", "key": "privateKey"},
    }))
    .unwrap()
}

/// `client` with the list requests of `WgPeer`s (not their watches) asking for one object a
/// page, each sent only when it gets a permit of `pages`; once `pages` is closed, they go
/// straight through. The API server's answers are passed on untouched.
fn with_held_peer_pages(client: kube::Client, pages: Arc<Semaphore>) -> kube::Client {
    let service = tower::service_fn(move |mut request: Request<kube::client::Body>| {
        let (client, pages) = (client.clone(), pages.clone());
        async move {
            let uri = request.uri();
            let query = uri.query().unwrap_or_default();
            if uri.path().ends_with("/wgpeers") && !query.contains("watch=") {
                let one_a_page: Vec<&str> = query
                    .split('&')
                    .filter(|pair| !pair.is_empty() && !pair.starts_with("limit="))
                    .chain(["limit=1"])
                    .collect();
                let paged = format!("{}?{}", uri.path(), one_a_page.join("&"));
                *request.uri_mut() = paged.parse::<Uri>().expect("a request URI");
                if let Ok(permit) = pages.acquire().await {
                    permit.forget();
                }
            }
            client.send(request).await
        }
    });
    kube::Client::new(service, "default")
}

impl Scenario {
    async fn start(resync: Duration) -> Scenario {
        Self::start_with(resync, Clock::default(), PeerList::Whole).await
    }

    /// The agent deciding with `clock`, its watches getting the `WgPeer` list as `peer_list`
    /// says.
    async fn start_with(resync: Duration, clock: Clock, peer_list: PeerList) -> Scenario {
        let lab = Lab::new();
        let plane = ControlPlane::with_crds();
        let namespace = plane.namespace("wireguard").await;
        let client = plane.admin_client();
        let node_name = format!("node-{}", lab.server_ns);
        let mut node = Node::default();
        node.metadata.name = Some(node_name.clone());
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        let server = WgServer::new(SERVER, server_spec(&lab, &node_name));
        Api::<WgServer>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &server)
            .await
            .unwrap();
        let subscription = VpnSubscription::new("tg-1", VpnSubscriptionSpec::for_user(1));
        Api::<VpnSubscription>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &subscription)
            .await
            .unwrap();

        let peer_pages = Arc::new(Semaphore::new(0));
        let watch_client = match peer_list {
            PeerList::Whole => {
                peer_pages.close();
                client.clone()
            }
            PeerList::HeldPageByPage => with_held_peer_pages(client.clone(), peer_pages.clone()),
        };
        let index = Arc::new(SharedIndex::default());
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let (namespace, index, shutdown) = (namespace.clone(), index.clone(), shutdown.clone());
            async move { run_watches(watch_client, &namespace, &namespace, index, shutdown).await }
        });
        let api = KubeApi::new(client.clone(), namespace.clone());
        let status = Arc::new(StatusQueue::default());
        tokio::spawn(status.clone().run_writer(
            api.clone(),
            1000,
            metrics.clone(),
            shutdown.clone(),
        ));
        let agent = Agent::new(
            Settings {
                node_name,
                backend: Backend::Userspace,
                amneziawg: None,
                resync_interval: resync,
                status_interval: Duration::from_millis(300),
                counters_interval: Duration::from_secs(60),
                firewall: Some(Firewall::Nftables),
            },
            index,
            api,
            Worker::start(Some(lab.netns_path())).unwrap(),
            metrics.clone(),
            Arc::new(Health::new(Duration::from_secs(60))),
            status,
        )
        .with_clock(clock);
        tokio::spawn(agent.run(shutdown.clone()));
        Scenario {
            lab,
            client,
            namespace,
            metrics,
            peer_pages,
            shutdown,
        }
    }

    fn peers(&self) -> Api<WgPeer> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn servers(&self) -> Api<WgServer> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A new peer with its own key, created in the API.
    async fn add_peer(
        &self,
        name: &str,
        address: &str,
        expires_at: Timestamp,
    ) -> (WgPeer, PrivateKey) {
        let key = PrivateKey::generate();
        let mut peer = WgPeer::new(
            name,
            WgPeerSpec {
                server: SERVER.into(),
                public_key: Some(key.public_key().to_base64()),
                private_key_secret_ref: None,
                preshared_key_secret_ref: None,
                address: Some(address.into()),
                address6: None,
                expires_at: Some(expires_at),
                enabled: true,
                device_name: None,
            },
        );
        peer.metadata.labels = Some([(LABEL_SUBSCRIPTION.to_owned(), "tg-1".to_owned())].into());
        let created = self
            .peers()
            .create(&PostParams::default(), &peer)
            .await
            .unwrap();
        (created, key)
    }

    /// Lets the next `pages` pages of the `WgPeer` list through.
    fn release_peer_pages(&self, pages: usize) {
        self.peer_pages.add_permits(pages);
    }

    /// Lets the rest of the `WgPeer` list through: its last page ends it (the watch's
    /// `InitDone`).
    fn end_peer_list(&self) {
        self.peer_pages.close();
    }

    /// Merge-patches the spec of the peer `name`.
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

    async fn server_status(&self) -> Option<wgsub_crds::WgServerStatus> {
        self.servers().get(SERVER).await.ok().and_then(|s| s.status)
    }

    async fn server_public_key(&self) -> wgsub_crds::keys::PublicKey {
        wait_for(
            "the server's public key in its status",
            Duration::from_secs(10),
            async || {
                self.server_status()
                    .await
                    .is_some_and(|s| s.public_key.is_some())
            },
        )
        .await;
        let text = self.server_status().await.unwrap().public_key.unwrap();
        text.parse().unwrap()
    }

    async fn client_config(&self, peer: &WgPeer, key: &PrivateKey) -> ClientConfig {
        let server_public = self.server_public_key().await;
        let server = self.servers().get(SERVER).await.unwrap();
        ClientConfig::for_peer(
            &server.spec,
            Some(server_public),
            &peer.spec,
            key.clone(),
            None,
        )
        .unwrap()
    }

    async fn ready_reason(&self, peer: &str) -> Option<String> {
        let peer = self.peers().get(peer).await.ok()?;
        condition(&peer.status?.conditions, "Ready").map(|c| c.reason.clone())
    }

    async fn wait_on_interface(&self, key: &PrivateKey, present: bool) {
        let text = key.public_key().to_base64();
        let what = if present {
            "the peer on the interface"
        } else {
            "the peer gone from the interface"
        };
        wait_for(what, Duration::from_secs(10), async || {
            self.lab.server_peers().contains(&text) == present
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_pings_and_the_expiry_timer_alone_removes_the_peer() {
    // A resync far away: only the expiry timer can remove the peer.
    let s = Scenario::start(Duration::from_secs(3600)).await;
    let expires = in_secs(8);
    let (peer, key) = s.add_peer("tg-1-1", "10.8.0.2/32", expires).await;
    s.wait_on_interface(&key, true).await;
    s.lab.connect_client(&s.client_config(&peer, &key).await);
    assert!(
        s.lab.ping_works(Duration::from_secs(5)),
        "ping through the tunnel failed"
    );

    // The agent created the server's key Secret, and published the matching public key.
    let secret = Api::<Secret>::namespaced(s.client.clone(), &s.namespace)
        .get("main-key")
        .await
        .expect("the agent creates the missing key Secret");
    let stored = secret.data.unwrap()["privateKey"].0.clone();
    let stored = PrivateKey::from_base64(&String::from_utf8(stored).unwrap()).unwrap();
    assert_eq!(stored.public_key(), s.server_public_key().await);
    wait_for(
        "the peer's status to say active",
        Duration::from_secs(10),
        async || {
            s.peers()
                .get("tg-1-1")
                .await
                .ok()
                .and_then(|p| p.status)
                .is_some_and(|st| st.active)
        },
    )
    .await;

    // Nothing else happens: the timer alone removes the peer at expiresAt.
    let until_expiry =
        Duration::try_from(expires.duration_since(Timestamp::now())).unwrap_or_default();
    tokio::time::sleep(until_expiry.saturating_sub(Duration::from_millis(500))).await;
    assert!(
        s.lab.server_peers().contains(&key.public_key().to_base64()),
        "removed before expiresAt"
    );
    s.wait_on_interface(&key, false).await;
    let late = Timestamp::now().duration_since(expires);
    assert!(
        late < jiff::SignedDuration::from_secs(2),
        "removed {late:?} after expiresAt"
    );
    assert!(
        !s.lab.ping_works(Duration::from_secs(3)),
        "ping still works after expiry"
    );
    wait_for("status Expired", Duration::from_secs(10), async || {
        s.ready_reason("tg-1-1").await.as_deref() == Some("Expired")
    })
    .await;
}

/// The agent judges expiry by its own clock, not the system's: with a clock two hours behind it
/// serves a peer whose `expiresAt` passed an hour ago (through every resync), and once that clock
/// is moved to the present the next pass removes the peer and reports it Expired — no real time
/// is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_clock_alone_decides_when_a_peer_has_expired() {
    let offset = Arc::new(AtomicI64::new(-7200));
    let clock = Clock::new({
        let offset = offset.clone();
        move || Timestamp::now() + jiff::SignedDuration::from_secs(offset.load(Ordering::SeqCst))
    });
    let s = Scenario::start_with(Duration::from_secs(1), clock, PeerList::Whole).await;
    let (peer, key) = s.add_peer("tg-1-1", "10.8.0.2/32", in_secs(-3600)).await;
    s.wait_on_interface(&key, true).await;
    s.lab.connect_client(&s.client_config(&peer, &key).await);
    assert!(
        s.lab.ping_works(Duration::from_secs(5)),
        "ping through the tunnel of a peer live by the agent's clock failed"
    );
    // Full resyncs (one a second) decide with the same clock: the peer stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        s.lab.server_peers().contains(&key.public_key().to_base64()),
        "a resync removed a peer the agent's clock says is live"
    );
    assert_ne!(s.ready_reason("tg-1-1").await.as_deref(), Some("Expired"));

    // The agent's clock reaches the present: expiresAt is an hour behind it.
    offset.store(0, Ordering::SeqCst);
    s.wait_on_interface(&key, false).await;
    assert!(
        !s.lab.ping_works(Duration::from_secs(3)),
        "ping still works after the agent's clock passed expiresAt"
    );
    wait_for("status Expired", Duration::from_secs(10), async || {
        s.ready_reason("tg-1-1").await.as_deref() == Some("Expired")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_and_renewal_bring_the_same_key_back() {
    let s = Scenario::start(Duration::from_secs(3600)).await;
    let (peer, key) = s.add_peer("tg-1-1", "10.8.0.2/32", in_secs(3600)).await;
    s.wait_on_interface(&key, true).await;
    s.lab.connect_client(&s.client_config(&peer, &key).await);
    assert!(
        s.lab.ping_works(Duration::from_secs(5)),
        "ping through the tunnel failed"
    );

    s.patch_peer("tg-1-1", serde_json::json!({"enabled": false}))
        .await;
    s.wait_on_interface(&key, false).await;
    assert!(
        !s.lab.ping_works(Duration::from_secs(2)),
        "ping works while disabled"
    );

    s.patch_peer("tg-1-1", serde_json::json!({"enabled": true}))
        .await;
    s.wait_on_interface(&key, true).await;
    assert!(s.lab.ping_works(REHANDSHAKE), "ping fails after enable");

    // Expired (the operator mirrored an old paidUntil), then renewed: same key, same config.
    s.patch_peer(
        "tg-1-1",
        serde_json::json!({"expiresAt": in_secs(-60).to_string()}),
    )
    .await;
    s.wait_on_interface(&key, false).await;
    assert!(
        !s.lab.ping_works(Duration::from_secs(2)),
        "ping works while expired"
    );
    s.patch_peer(
        "tg-1-1",
        serde_json::json!({"expiresAt": in_secs(3600).to_string()}),
    )
    .await;
    s.wait_on_interface(&key, true).await;
    assert!(
        s.lab.ping_works(REHANDSHAKE),
        "ping fails after renewal without re-import"
    );

    // Suspension of the subscription takes the peer off too.
    Api::<VpnSubscription>::namespaced(s.client.clone(), &s.namespace)
        .patch(
            "tg-1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"suspended": true}})),
        )
        .await
        .unwrap();
    s.wait_on_interface(&key, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_removes_hand_added_peers_restores_the_port_and_recreates_a_deleted_interface() {
    let s = Scenario::start(Duration::from_secs(1)).await;
    let (peer, key) = s.add_peer("tg-1-1", "10.8.0.2/32", in_secs(3600)).await;
    s.wait_on_interface(&key, true).await;
    s.lab.connect_client(&s.client_config(&peer, &key).await);
    assert!(
        s.lab.ping_works(Duration::from_secs(5)),
        "ping through the tunnel failed"
    );

    let stranger = PrivateKey::generate().public_key().to_base64();
    run(
        "wg",
        &[
            "set",
            &s.lab.server_if,
            "peer",
            &stranger,
            "allowed-ips",
            "10.8.0.99/32",
        ],
    );
    run("wg", &["set", &s.lab.server_if, "listen-port", "40000"]);
    assert!(s.lab.server_peers().contains(&stranger));
    wait_for(
        "the hand-added peer removed by resync",
        Duration::from_secs(4),
        async || !s.lab.server_peers().contains(&stranger),
    )
    .await;
    wait_for(
        "the listen port restored",
        Duration::from_secs(4),
        async || {
            run("wg", &["show", &s.lab.server_if, "listen-port"]).trim() == LISTEN_PORT.to_string()
        },
    )
    .await;
    assert!(s.lab.server_peers().contains(&key.public_key().to_base64()));

    run(
        "ip",
        &["-n", &s.lab.server_ns, "link", "del", &s.lab.server_if],
    );
    wait_for(
        "the interface recreated with its peer",
        Duration::from_secs(10),
        async || s.lab.server_peers().contains(&key.public_key().to_base64()),
    )
    .await;
    assert!(
        s.lab.ping_works(REHANDSHAKE),
        "ping fails after the interface was recreated"
    );
    let metrics = s.metrics.encode();
    let drift_line = metrics
        .lines()
        .find(|l| l.starts_with("wgsub_node_agent_drift_corrections_total"))
        .unwrap_or_else(|| panic!("no drift metric in\n{metrics}"));
    let drift: f64 = drift_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(drift >= 3.0, "{drift_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_address_refuses_the_second_peer_with_conflict_and_the_first_keeps_working() {
    let s = Scenario::start(Duration::from_secs(2)).await;
    let (first, first_key) = s.add_peer("tg-1-1", "10.8.0.2/32", in_secs(3600)).await;
    s.wait_on_interface(&first_key, true).await;
    s.lab
        .connect_client(&s.client_config(&first, &first_key).await);
    assert!(
        s.lab.ping_works(Duration::from_secs(5)),
        "ping through the tunnel failed"
    );

    let (_, second_key) = s.add_peer("tg-1-2", "10.8.0.2/32", in_secs(3600)).await;
    let (_, outside_key) = s.add_peer("tg-1-3", "10.9.0.2/32", in_secs(3600)).await;
    wait_for(
        "Conflict on the second peer",
        Duration::from_secs(10),
        async || s.ready_reason("tg-1-2").await.as_deref() == Some("Conflict"),
    )
    .await;
    wait_for(
        "OutOfPool on the peer outside the pool",
        Duration::from_secs(10),
        async || s.ready_reason("tg-1-3").await.as_deref() == Some("OutOfPool"),
    )
    .await;
    assert_eq!(s.ready_reason("tg-1-1").await.as_deref(), Some("Active"));
    let on = s.lab.server_peers();
    assert!(on.contains(&first_key.public_key().to_base64()));
    assert!(!on.contains(&second_key.public_key().to_base64()));
    assert!(!on.contains(&outside_key.public_key().to_base64()));
    assert!(
        s.lab.ping_works(Duration::from_secs(5)),
        "the first peer stopped working"
    );

    // A malformed server key in the Secret the agent created: condition InvalidKey, the
    // interface is left as it was.
    Api::<Secret>::namespaced(s.client.clone(), &s.namespace)
        .patch(
            "main-key",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"privateKey": "not-a-key"}})),
        )
        .await
        .unwrap();
    wait_for(
        "InvalidKey on the server",
        Duration::from_secs(10),
        async || {
            s.server_status()
                .await
                .and_then(|st| condition(&st.conditions, "Ready").map(|c| c.reason.clone()))
                .as_deref()
                == Some("InvalidKey")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        s.lab
            .server_peers()
            .contains(&first_key.public_key().to_base64())
    );
    assert!(
        s.lab.ping_works(Duration::from_secs(5)),
        "the interface was touched on a bad key"
    );
    let listed = s.peers().list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_rules_are_applied_idempotently_and_removed_on_opt_out() {
    let lab = Lab::new();
    let worker = Worker::start(Some(lab.netns_path())).unwrap();
    let table = nat::table_name(&lab.server_if);
    let plan = NatPlan {
        interface: lab.server_if.clone(),
        pool4: "10.8.0.0/24".parse().unwrap(),
        pool6: None,
        egress: lab.server_veth.clone(),
        client_to_client: false,
        blocked: Vec::new(),
        dns: false,
    };
    let list = {
        let ns = lab.server_ns.clone();
        let table = table.clone();
        move || {
            Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "list", "table", "inet", &table])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        }
    };
    let applied = plan.clone();
    worker
        .run(move || nat::apply(Firewall::Nftables, &applied))
        .await
        .unwrap()
        .unwrap();
    let first = list().expect("the NAT table exists");
    assert!(first.contains("masquerade"), "{first}");
    assert!(first.contains("10.8.0.0/24"), "{first}");
    let forwarding = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.server_ns,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ],
    );
    assert_eq!(forwarding.trim(), "1");
    let again = plan.clone();
    worker
        .run(move || nat::apply(Firewall::Nftables, &again))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(list().unwrap(), first, "applying twice changed the rules");
    let name = plan.interface.clone();
    worker
        .run(move || nat::remove(Firewall::Nftables, &name))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(list(), None, "the NAT table survived opt-out");
    let name = plan.interface.clone();
    worker
        .run(move || nat::remove(Firewall::Nftables, &name))
        .await
        .unwrap()
        .unwrap();
    // The host's namespace never saw the table.
    assert!(!run("nft", &["list", "tables"]).contains(&table));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat_rules_through_iptables_are_applied_idempotently_and_removed_on_opt_out() {
    let lab = Lab::new();
    let worker = Worker::start(Some(lab.netns_path())).unwrap();
    let plan = NatPlan {
        interface: lab.server_if.clone(),
        pool4: "10.8.0.0/24".parse().unwrap(),
        pool6: Some("fd00:8::/64".parse().unwrap()),
        egress: lab.server_veth.clone(),
        client_to_client: false,
        blocked: Vec::new(),
        dns: false,
    };
    let tag = nat::rule_comment(&plan.interface);
    // Every rule of both families and both tables, as `iptables -S` prints them.
    let listing = || {
        let mut out = String::new();
        for binary in ["iptables", "ip6tables"] {
            for table in ["filter", "nat"] {
                out += &run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &lab.server_ns,
                        binary,
                        "-w",
                        "-t",
                        table,
                        "-S",
                    ],
                );
            }
        }
        out
    };
    let ours = |text: &str| text.lines().filter(|l| l.contains(&tag)).count();
    let before = listing();
    let applied = plan.clone();
    worker
        .run(move || nat::apply(Firewall::Iptables, &applied))
        .await
        .unwrap()
        .unwrap();
    let first = listing();
    assert_eq!(
        ours(&first),
        8,
        "two jumps into FORWARD, one into INPUT and the masquerade, per family: {first}"
    );
    assert!(
        first.contains("-s 10.8.0.0/24") && first.contains("-s fd00:8::/64"),
        "{first}"
    );
    assert!(first.contains("-j MASQUERADE"), "{first}");
    for _ in 0..2 {
        let again = plan.clone();
        worker
            .run(move || nat::apply(Firewall::Iptables, &again))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(listing(), first, "applying again changed the rules");
    }
    // A changed egress interface replaces the masquerade rules, nothing else.
    let mut moved = plan.clone();
    moved.egress = "lo".into();
    let applied = moved.clone();
    worker
        .run(move || nat::apply(Firewall::Iptables, &applied))
        .await
        .unwrap()
        .unwrap();
    let after_move = listing();
    assert_eq!(ours(&after_move), 8, "{after_move}");
    assert!(after_move.contains("-o lo -m comment"), "{after_move}");
    assert!(!after_move.contains(&format!("-o {} -m comment", plan.egress)));
    for _ in 0..2 {
        let name = plan.interface.clone();
        worker
            .run(move || nat::remove(Firewall::Iptables, &name))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(listing(), before, "opt-out left rules behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_turns_nat_on_and_off_with_the_server_without_waiting_for_a_resync() {
    // A resync far beyond the deadlines below: only the server's change can act.
    let s = Scenario::start(Duration::from_secs(600)).await;
    let table = nat::table_name(&s.lab.server_if);
    let ns = s.lab.server_ns.clone();
    let table_exists = move || {
        Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "list", "table", "inet", &table])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    wait_for("the interface", Duration::from_secs(10), async || {
        Command::new("wg")
            .args(["show", &s.lab.server_if])
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .await;
    assert!(!table_exists(), "NAT rules without NAT asked for");
    let set_nat = async |enabled: bool| {
        let nat = NatSpec {
            enabled,
            egress_interface: Some(s.lab.server_veth.clone()),
            ..Default::default()
        };
        s.servers()
            .patch(
                SERVER,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"nat": nat}})),
            )
            .await
            .unwrap();
    };
    set_nat(true).await;
    wait_for(
        "NAT rules after opt-in",
        Duration::from_secs(10),
        async || table_exists(),
    )
    .await;
    set_nat(false).await;
    wait_for(
        "no NAT rules after opt-out",
        Duration::from_secs(10),
        async || !table_exists(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_added_while_the_list_arrives_without_taking_an_address_and_the_list_end_settles_conflicts()
 {
    let s = Scenario::start_with(
        Duration::from_secs(60),
        Clock::default(),
        PeerList::HeldPageByPage,
    )
    .await;
    // The list (in name order) is taken when its first page is asked for: every peer is in it.
    // `tg-1-a` is listed first but created after `tg-1-b`, which wants the same address: the
    // loser of their conflict. `tg-1-d` is the last page, which comes with the list's end.
    let (older, older_key) = s.add_peer("tg-1-b", "10.8.0.2/32", in_secs(3600)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (newer, newer_key) = s.add_peer("tg-1-a", "10.8.0.2/32", in_secs(3600)).await;
    let (_, other_key) = s.add_peer("tg-1-c", "10.8.0.3/32", in_secs(3600)).await;
    let (_, last_key) = s.add_peer("tg-1-d", "10.8.0.4/32", in_secs(3600)).await;
    assert!(
        older.metadata.creation_timestamp < newer.metadata.creation_timestamp,
        "the API server gave both peers the same creation time"
    );

    s.release_peer_pages(1);
    s.wait_on_interface(&newer_key, true).await;
    s.release_peer_pages(2);
    s.wait_on_interface(&other_key, true).await;
    // The older peer's address is held on the interface: it waits for the whole list.
    let holder = |key: &PrivateKey| {
        let text = key.public_key().to_base64();
        run("wg", &["show", &s.lab.server_if, "allowed-ips"])
            .lines()
            .any(|line| line.starts_with(&text) && line.contains("10.8.0.2/32"))
    };
    assert!(
        holder(&newer_key),
        "the peer listed first was not added early"
    );
    assert!(
        !s.lab
            .server_peers()
            .contains(&older_key.public_key().to_base64()),
        "a peer was added before the list ended although its address was taken"
    );

    s.end_peer_list();
    s.wait_on_interface(&newer_key, false).await;
    s.wait_on_interface(&older_key, true).await;
    s.wait_on_interface(&last_key, true).await;
    assert!(
        holder(&older_key),
        "the older peer does not hold its address"
    );
    assert!(
        s.lab
            .server_peers()
            .contains(&other_key.public_key().to_base64())
    );
    wait_for(
        "Conflict on the newer peer",
        Duration::from_secs(10),
        async || s.ready_reason("tg-1-a").await.as_deref() == Some("Conflict"),
    )
    .await;
    // The additions made while the list arrived are counted as start applies.
    let metrics = s.metrics.encode();
    let start_applies = format!(
        "wgsub_node_agent_applies_total{{interface=\"{}\",kind=\"Start\"}}",
        s.lab.server_if
    );
    assert!(metrics.contains(&start_applies), "{metrics}");
}
