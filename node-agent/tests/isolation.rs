//! Client isolation on real tunnels: what a VPN client can reach through the server once the
//! agent's firewall rules are in, in nftables and in iptables mode.
//!
//! Five network namespaces, all made here (the host's firewall is never touched: every rule goes
//! in through a worker thread inside the server namespace):
//!
//! ```text
//!  client A ── veth 172.30.1.0/24 ──┐                 ┌── veth 198.51.100.0/24 (egress) ── internet
//!  (wireguard-go 10.8.0.2)          │                 │   2001:db8:100::/64                 198.51.100.2
//!                                   ├── server ───────┤                                   + 169.254.169.254
//!  client B ── veth 172.30.2.0/24 ──┘   wireguard-go  │                                   + 10.0.5.5 (a VPC host
//!  (wireguard-go 10.8.0.3)              10.8.0.1      └── veth 10.42.0.0/24 ── cluster      behind the egress)
//!                                       fd00:8::1                              10.96.0.1 (a Service address)
//! ```
//!
//! The clients are real wireguard-go peers routing every probed destination into the tunnel.
//! Without the agent's rules every probed destination answers (checked first, so each refusal
//! means something), and the host's own rules accept everything, in iptables and nftables
//! alike: the agent's refusals must hold regardless.
//! The server offers DNS on its tunnel address (its `spec.dns` lists it); a UDP echo on port 53
//! stands for the resolver and a TCP listener on another port for a service it does not offer.
//!
//! Needs root, wireguard-go, wireguard-tools, iproute2, ping, nft and iptables: fails with a
//! message otherwise.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use wgsub_crds::WgServerSpec;
use wgsub_crds::keys::PrivateKey;
use wgsub_node_agent::desired::Pools;
use wgsub_node_agent::interface::Worker;
use wgsub_node_agent::nat::{self, Firewall, NatPlan};

const LISTEN_PORT: u16 = 51820;
const INTERNET: &str = "198.51.100.2";
const INTERNET6: &str = "2001:db8:100::2";
const METADATA: &str = "169.254.169.254";
const VPC_HOST: &str = "10.0.5.5";
const CLUSTER_SERVICE: &str = "10.96.0.1";
const SERVER_TUNNEL: &str = "10.8.0.1";
const PEER_B: &str = "10.8.0.3";
const PEER_B6: &str = "fd00:8::3";
/// Ports on the server's tunnel address: DNS (offered) and a service that is not.
const DNS_PORT: u16 = 53;
const UNOFFERED_PORT: u16 = 8080;
/// Addresses of the server namespace itself that are not its tunnel address: the egress side,
/// the cluster side and the side facing client B's underlay.
const SERVER_OWN: [&str; 3] = ["198.51.100.1", "10.42.0.1", "172.30.2.1"];

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

fn ip(ns: &str, args: &str) {
    let mut all = vec!["-n", ns];
    all.extend(args.split_whitespace());
    run("ip", &all);
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One WireGuard client: its namespace, interface, key and tunnel addresses.
struct Client {
    ns: String,
    interface: String,
    key: PrivateKey,
    address: &'static str,
    address6: &'static str,
}

/// The five namespaces and three wireguard-go interfaces; removed on drop (deleting a namespace
/// ends the wireguard-go whose tun device lived there).
struct Lab {
    server_ns: String,
    internet_ns: String,
    cluster_ns: String,
    server_if: String,
    egress_if: String,
    a: Client,
    b: Client,
    /// Stops the listener threads in the server namespace.
    stop: Arc<AtomicBool>,
}

impl Lab {
    fn new() -> Lab {
        wgsub_testkit::host::require_root_and_tools(
            "the isolation tests",
            "network namespaces, veth pairs, wireguard-go, firewall rules inside them",
            &[
                "wireguard-go",
                "wg",
                "ip",
                "ping",
                "nft",
                "iptables",
                "ip6tables",
                "iptables-restore",
                "ip6tables-restore",
            ],
        );
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let client = |tag: &str, address, address6| Client {
            ns: format!("wgsub-iso-{tag}{id}"),
            interface: format!("wi{tag}{id}"),
            key: PrivateKey::generate(),
            address,
            address6,
        };
        let lab = Lab {
            server_ns: format!("wgsub-iso-s{id}"),
            internet_ns: format!("wgsub-iso-i{id}"),
            cluster_ns: format!("wgsub-iso-k{id}"),
            server_if: format!("wis{id}"),
            egress_if: format!("ie{id}"),
            a: client("a", "10.8.0.2", "fd00:8::2"),
            b: client("b", PEER_B, PEER_B6),
            stop: Arc::new(AtomicBool::new(false)),
        };
        for ns in [
            &lab.server_ns,
            &lab.internet_ns,
            &lab.cluster_ns,
            &lab.a.ns,
            &lab.b.ns,
        ] {
            run("ip", &["netns", "add", ns]);
            ip(ns, "link set lo up");
        }
        let s = &lab.server_ns;
        lab.veth(
            &format!("isa{id}"),
            "172.30.1.1/24",
            &lab.a.ns,
            "172.30.1.2/24",
        );
        lab.veth(
            &format!("isb{id}"),
            "172.30.2.1/24",
            &lab.b.ns,
            "172.30.2.2/24",
        );
        lab.veth(
            &lab.egress_if,
            "198.51.100.1/24",
            &lab.internet_ns,
            "198.51.100.2/24",
        );
        lab.veth(
            &format!("ik{id}"),
            "10.42.0.1/24",
            &lab.cluster_ns,
            "10.42.0.2/24",
        );
        ip(
            s,
            &format!("-6 addr add 2001:db8:100::1/64 dev {} nodad", lab.egress_if),
        );
        ip(
            &lab.internet_ns,
            &format!("-6 addr add {INTERNET6}/64 dev {}p nodad", lab.egress_if),
        );
        // The internet's far side: the cloud's metadata service and a VPC host, both reached
        // through the egress interface like on a cloud VM.
        ip(&lab.internet_ns, &format!("addr add {METADATA}/32 dev lo"));
        ip(&lab.internet_ns, &format!("addr add {VPC_HOST}/32 dev lo"));
        ip(s, &format!("route add default via {INTERNET}"));
        ip(s, &format!("-6 route add default via {INTERNET6}"));
        // The cluster's Service network behind another interface; it knows the way back to the
        // pool, as a pod network on the node would.
        ip(
            &lab.cluster_ns,
            &format!("addr add {CLUSTER_SERVICE}/32 dev lo"),
        );
        ip(s, "route add 10.96.0.0/12 via 10.42.0.2");
        ip(&lab.cluster_ns, "route add 10.8.0.0/24 via 10.42.0.1");
        // So is the internet side, so that without the agent's rules (no masquerade) every
        // probed destination answers: the control that makes each refusal below mean something.
        ip(&lab.internet_ns, "route add 10.8.0.0/24 via 198.51.100.1");
        ip(
            &lab.internet_ns,
            "-6 route add fd00:8::/64 via 2001:db8:100::1",
        );
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            run("ip", &["netns", "exec", s, "sysctl", "-qw", sysctl]);
        }
        lab.start_server();
        lab.start_client(&lab.a, "172.30.1.1");
        lab.start_client(&lab.b, "172.30.2.1");
        lab
    }

    /// A veth pair from the server namespace (`name`) to `ns` (`name` + `p`), both ends up.
    fn veth(&self, name: &str, address: &str, ns: &str, far_address: &str) {
        let far = format!("{name}p");
        run(
            "ip",
            &["link", "add", name, "type", "veth", "peer", "name", &far],
        );
        run("ip", &["link", "set", name, "netns", &self.server_ns]);
        run("ip", &["link", "set", &far, "netns", ns]);
        ip(&self.server_ns, &format!("addr add {address} dev {name}"));
        ip(&self.server_ns, &format!("link set {name} up"));
        ip(ns, &format!("addr add {far_address} dev {far}"));
        ip(ns, &format!("link set {far} up"));
    }

    fn netns_path(ns: &str) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{ns}"))
    }

    fn wireguard_go(ns: &str, interface: &str) {
        run("ip", &["netns", "exec", ns, "wireguard-go", interface]);
    }

    /// `wg set` with the private key passed through a file, as `wg` wants it.
    fn wg_set(interface: &str, key: &PrivateKey, args: &[&str]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), key.to_base64().as_bytes()).unwrap();
        let mut all = vec![
            "set",
            interface,
            "private-key",
            file.path().to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run("wg", &all);
    }

    fn start_server(&self) {
        let (s, wg) = (&self.server_ns, &self.server_if);
        Self::wireguard_go(s, wg);
        let port = LISTEN_PORT.to_string();
        let allowed_a = format!("{}/32,{}/128", self.a.address, self.a.address6);
        let allowed_b = format!("{}/32,{}/128", self.b.address, self.b.address6);
        let (public_a, public_b) = (
            self.a.key.public_key().to_base64(),
            self.b.key.public_key().to_base64(),
        );
        Self::wg_set(
            wg,
            &PrivateKey::generate(),
            &[
                "listen-port",
                &port,
                "peer",
                &public_a,
                "allowed-ips",
                &allowed_a,
                "peer",
                &public_b,
                "allowed-ips",
                &allowed_b,
            ],
        );
        ip(s, &format!("addr add {SERVER_TUNNEL}/24 dev {wg}"));
        ip(s, &format!("-6 addr add fd00:8::1/64 dev {wg} nodad"));
        ip(s, &format!("link set {wg} up"));
        self.serve_udp_echo(DNS_PORT);
        self.serve_tcp(UNOFFERED_PORT);
    }

    fn server_public_key(&self) -> String {
        run("wg", &["show", &self.server_if, "public-key"])
            .trim()
            .to_owned()
    }

    /// A client routing the pool, the internet, the cluster, the metadata address and the
    /// server's own addresses into its tunnel.
    fn start_client(&self, client: &Client, endpoint: &str) {
        let (ns, wg) = (&client.ns, &client.interface);
        Self::wireguard_go(ns, wg);
        let server = self.server_public_key();
        let endpoint = format!("{endpoint}:{LISTEN_PORT}");
        Self::wg_set(
            wg,
            &client.key,
            &[
                "peer",
                &server,
                "endpoint",
                &endpoint,
                "allowed-ips",
                "0.0.0.0/0,::/0",
                "persistent-keepalive",
                "1",
            ],
        );
        ip(ns, &format!("addr add {}/32 dev {wg}", client.address));
        ip(
            ns,
            &format!("-6 addr add {}/128 dev {wg} nodad", client.address6),
        );
        ip(ns, &format!("link set {wg} up"));
        let routes = [
            "10.8.0.0/24",
            "198.51.100.0/24",
            "10.96.0.0/12",
            "10.42.0.0/24",
            "172.30.2.0/24",
            "169.254.169.254/32",
            "10.0.5.5/32",
            "fd00:8::/64",
            "2001:db8:100::/64",
        ];
        for route in routes {
            // Client B's own underlay is not sent into its tunnel.
            if route == "172.30.2.0/24" && endpoint.starts_with("172.30.2.") {
                continue;
            }
            ip(ns, &format!("route add {route} dev {wg}"));
        }
    }

    /// A UDP echo on the server's tunnel address (stands for a resolver).
    fn serve_udp_echo(&self, port: u16) {
        let socket = bind_in(&self.server_ns, move || {
            UdpSocket::bind((SERVER_TUNNEL, port))
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(&buffer[..n], from);
                }
            }
        });
    }

    /// A TCP listener on the server's tunnel address that accepts and closes.
    fn serve_tcp(&self, port: u16) {
        let listener = bind_in(&self.server_ns, move || {
            TcpListener::bind((SERVER_TUNNEL, port))
        });
        listener.set_nonblocking(true).unwrap();
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }

    /// Whether one ping from `from` to `to` is answered within a second.
    fn ping(from: &Client, to: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &from.ns, "ping", "-c", "1", "-W", "1", to])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Pings until an answer arrives or `within` passes (a handshake may still be under way).
    fn ping_within(from: &Client, to: &str, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if Self::ping(from, to) {
                return true;
            }
        }
        false
    }

    /// Whether a TCP connection from `from` to `to` is established within a second.
    fn tcp_connects(from: &Client, to: SocketAddr) -> bool {
        in_netns(&from.ns, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
        })
    }

    /// Whether a UDP datagram from `from` to `to` is echoed within a second.
    fn udp_echoes(from: &Client, to: SocketAddr) -> bool {
        in_netns(&from.ns, move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            socket.send_to(b"query", to).unwrap();
            let mut buffer = [0u8; 16];
            socket
                .recv_from(&mut buffer)
                .is_ok_and(|(n, _)| &buffer[..n] == b"query")
        })
    }

    /// The plan the agent makes of a server whose `spec.dns` lists its own tunnel address.
    fn plan(&self, client_to_client: bool) -> NatPlan {
        let spec: WgServerSpec = serde_json::from_value(serde_json::json!({
            "endpoint": format!("172.30.1.1:{LISTEN_PORT}"),
            "listenPort": LISTEN_PORT,
            "interfaceName": self.server_if,
            "addressPool": "10.8.0.0/24",
            "addressPool6": "fd00:8::/64",
            "dns": [SERVER_TUNNEL, "1.1.1.1"],
            "privateKeySecretRef": {"name": "main-key", "key": "privateKey"},
            "nat": {
                "enabled": true,
                "egressInterface": self.egress_if,
                "clientToClient": client_to_client,
            },
        }))
        .unwrap();
        let pools = Pools {
            v4: spec.address_pool.parse().unwrap(),
            v6: Some("fd00:8::/64".parse().unwrap()),
        };
        NatPlan::for_server(&self.server_if, pools, &spec)
            .unwrap()
            .expect("NAT is enabled")
    }

    /// Rules of the host's own that accept everything forwarded or delivered, in iptables and
    /// in an nftables table of its own, as kube-proxy's and flannel's ACCEPTs for the pod
    /// network or a permissive host firewall would.
    fn host_accepts_everything(&self) {
        let s = &self.server_ns;
        for binary in ["iptables", "ip6tables"] {
            for chain in ["FORWARD", "INPUT"] {
                run(
                    "ip",
                    &[
                        "netns", "exec", s, binary, "-w", "-A", chain, "-j", "ACCEPT",
                    ],
                );
            }
        }
        let nft = |command: &str| run("ip", &["netns", "exec", s, "nft", command]);
        nft("add table inet node_own");
        for (chain, hook) in [("own_forward", "forward"), ("own_input", "input")] {
            nft(&format!(
                "add chain inet node_own {chain} {{ type filter hook {hook} priority -10; policy accept; }}"
            ));
            nft(&format!("add rule inet node_own {chain} accept"));
        }
    }

    async fn apply(&self, firewall: Firewall, plan: NatPlan) {
        let worker = Worker::start(Some(Self::netns_path(&self.server_ns))).unwrap();
        worker
            .run(move || nat::apply(firewall, &plan))
            .await
            .unwrap()
            .unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for ns in [
            &self.server_ns,
            &self.internet_ns,
            &self.cluster_ns,
            &self.a.ns,
            &self.b.ns,
        ] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for name in [&self.server_if, &self.a.interface, &self.b.interface] {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}

/// Runs `f` on a fresh thread inside the namespace `ns`: a socket made there stays there.
fn in_netns<R: Send + 'static>(ns: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let path = Lab::netns_path(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn bind_in<S: Send + 'static>(
    ns: &str,
    bind: impl FnOnce() -> std::io::Result<S> + Send + 'static,
) -> S {
    in_netns(ns, bind).unwrap_or_else(|e| panic!("binding in {ns}: {e}"))
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Both clients are up and reach the internet through the server.
fn assert_clients_reach_the_internet(lab: &Lab) {
    for client in [&lab.a, &lab.b] {
        assert!(
            Lab::ping_within(client, INTERNET, Duration::from_secs(10)),
            "{} does not reach the internet through the tunnel",
            client.ns
        );
    }
    assert!(
        Lab::ping_within(&lab.a, INTERNET6, Duration::from_secs(5)),
        "A does not reach the IPv6 internet"
    );
}

/// Everything but the internet and what the server offers is out of A's reach.
fn assert_a_reaches_nothing_else(lab: &Lab, client_to_client: bool) {
    let a = &lab.a;
    assert_eq!(
        Lab::ping(a, PEER_B),
        client_to_client,
        "A reaching B with client-to-client {client_to_client}"
    );
    assert_eq!(
        Lab::ping(a, PEER_B6),
        client_to_client,
        "A reaching B over IPv6 with client-to-client {client_to_client}"
    );
    for (what, target) in [
        ("the cluster's Service address", CLUSTER_SERVICE),
        ("the cloud metadata address", METADATA),
        ("a VPC host behind the egress interface", VPC_HOST),
    ] {
        assert!(!Lab::ping(a, target), "A reaches {what} {target}");
    }
    for own in SERVER_OWN {
        assert!(!Lab::ping(a, own), "A reaches the node's own address {own}");
    }
    assert!(
        !Lab::tcp_connects(a, addr(SERVER_TUNNEL, UNOFFERED_PORT)),
        "A reaches a service the server does not offer on its tunnel address"
    );
    assert!(
        Lab::udp_echoes(a, addr(SERVER_TUNNEL, DNS_PORT)),
        "A does not reach the DNS the server offers on its tunnel address"
    );
    assert!(
        Lab::ping(a, SERVER_TUNNEL),
        "A cannot ping the server's tunnel address"
    );
}

/// Without any rule of the agent's, A reaches every destination probed.
fn assert_a_reaches_everything_without_rules(lab: &Lab) {
    let a = &lab.a;
    let targets = [
        INTERNET,
        INTERNET6,
        PEER_B,
        PEER_B6,
        CLUSTER_SERVICE,
        METADATA,
        VPC_HOST,
    ];
    for target in targets.into_iter().chain(SERVER_OWN) {
        assert!(
            Lab::ping_within(a, target, Duration::from_secs(10)),
            "the lab is broken: A does not reach {target} even without rules"
        );
    }
    assert!(Lab::tcp_connects(a, addr(SERVER_TUNNEL, UNOFFERED_PORT)));
    assert!(Lab::udp_echoes(a, addr(SERVER_TUNNEL, DNS_PORT)));
}

async fn clients_reach_only_the_internet(firewall: Firewall) {
    let lab = Lab::new();
    lab.host_accepts_everything();
    assert_a_reaches_everything_without_rules(&lab);
    lab.apply(firewall, lab.plan(false)).await;
    assert_clients_reach_the_internet(&lab);
    assert_a_reaches_nothing_else(&lab, false);
    lab.apply(firewall, lab.plan(true)).await;
    assert!(
        Lab::ping_within(&lab.a, PEER_B, Duration::from_secs(3)),
        "A does not reach B with client-to-client on"
    );
    assert_a_reaches_nothing_else(&lab, true);
    assert!(Lab::ping(&lab.a, INTERNET), "A lost the internet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nftables_clients_reach_only_the_internet_and_offered_dns() {
    clients_reach_only_the_internet(Firewall::Nftables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_iptables_clients_reach_only_the_internet_and_offered_dns() {
    clients_reach_only_the_internet(Firewall::Iptables).await;
}
