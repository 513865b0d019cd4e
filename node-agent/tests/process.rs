//! The `wgsub-node-agent` binary as a process, configured as the chart configures it (the
//! environment), against an in-process API server (`wgsub_fake_api`, reached through
//! `KUBECONFIG`) and a wireguard-go interface in a throwaway network namespace: its `--help`, a
//! bad setting refused at start with the flag named; running, it serves `/healthz`, `/readyz`
//! and `/metrics`, logs JSON, creates the server's key Secret, publishes the public key, puts a
//! live `WgPeer` from its watch on the interface and reports it active; on SIGTERM it exits 0.
//! Every call it made is granted by `api-calls.yaml`.
//!
//! Needs root, wireguard-go, wireguard-tools and iproute2: fails with a message otherwise.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Secret};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::LABEL_SUBSCRIPTION;
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec, WgServer};
use wgsub_fake_api::{FakeApi, ungranted};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-node-agent");
const NS: &str = "wgsub";
const NODE: &str = "vpn-node-1";
const WITHIN: Duration = Duration::from_secs(10);

fn require_root_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(
        uid,
        Some("0"),
        "this test needs root (a network namespace, wireguard-go): run it as root, e.g. with scripts/test"
    );
    for tool in ["wireguard-go", "wg", "ip"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
        assert!(
            found,
            "this test needs `{tool}` on PATH (scripts/test installs it)"
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A network namespace of its own; removed on drop, with the wireguard-go socket.
struct Netns {
    name: String,
    interface: String,
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id() % 100_000;
        let netns = Netns {
            name: format!("wgsub-proc-{id}"),
            interface: format!("wgp{id}"),
        };
        let added = Command::new("ip")
            .args(["netns", "add", &netns.name])
            .output()
            .expect("ip runs");
        assert!(added.status.success(), "ip netns add: {added:?}");
        netns
    }

    fn peers(&self) -> Vec<String> {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "wg",
                "show",
                &self.interface,
                "peers",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.interface));
    }
}

struct Agent {
    child: Child,
    port: u16,
    logs: std::path::PathBuf,
}

impl Agent {
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[test]
fn help_lists_every_setting_and_a_bad_setting_stops_the_start_with_the_flag_named() {
    let help = Command::new(BINARY).arg("--help").output().expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--node-name",
        "--backend",
        "--resync-interval",
        "--firewall",
        "WGSUB_NETNS",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}: {text}");
    }
    let bad = Command::new(BINARY)
        .env_clear()
        .args(["--node-name", NODE, "--namespace", NS])
        .args(["--netns", "/nonexistent/netns"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2), "a bad setting exits 2");
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("--netns"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_process_serves_its_node_from_watches_and_stops_cleanly_on_sigterm() {
    require_root_and_tools();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let netns = Netns::new();
    let api = FakeApi::start().await;
    let mut node = Node::default();
    node.metadata.name = Some(NODE.into());
    api.create(&node);
    let mut server: WgServer = serde_json::from_value(serde_json::json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgServer",
        "metadata": {"name": "main", "namespace": NS},
        "spec": {
            "endpoint": "vpn.example.com:51820",
            "listenPort": 51820,
            "interfaceName": netns.interface,
            "addressPool": "10.8.0.0/24",
            "nodeName": NODE,
            "privateKeySecretRef": {"name": "main-key", "key": "privateKey"},
        }
    }))
    .expect("a WgServer");
    server.metadata.namespace = Some(NS.into());
    api.create(&server);
    let mut subscription = VpnSubscription::new("tg-1", VpnSubscriptionSpec::for_user(1));
    subscription.metadata.namespace = Some(NS.into());
    api.create(&subscription);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("node-agent")).expect("a kubeconfig");
    let logs = dir.path().join("agent.log");
    let port = free_port();
    let child = Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &kubeconfig)
        .env("WGSUB_NODE_NAME", NODE)
        .env("WGSUB_NAMESPACE", NS)
        .env("WGSUB_BACKEND", "userspace")
        .env("WGSUB_FIREWALL", "auto")
        .env("WGSUB_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("WGSUB_NETNS", format!("/var/run/netns/{}", netns.name))
        .env("WGSUB_STATUS_INTERVAL", "1")
        .env("WGSUB_LOG_FORMAT", "json")
        .stdout(std::fs::File::create(&logs).expect("a log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the agent starts");
    let mut agent = Agent { child, port, logs };

    for path in ["/healthz", "/readyz"] {
        eventually(&format!("the agent answers {path} with 200"), async || {
            (agent.get(path).await?.0 == 200).then_some(())
        })
        .await;
    }
    // The server's key: made, kept in the Secret the server names, published in its status.
    let public = eventually("the server's public key in its status", async || {
        api.get::<WgServer>(NS, "main")?.status?.public_key
    })
    .await;
    let secret = api
        .get::<Secret>(NS, "main-key")
        .expect("the agent made the key Secret");
    let stored = &secret.data.as_ref().expect("data")["privateKey"].0;
    let key = PrivateKey::from_base64(std::str::from_utf8(stored).expect("text")).expect("a key");
    assert_eq!(key.public_key().to_base64(), public);

    // A live peer arrives through the watch, goes on the interface, is reported active.
    let client_key = PrivateKey::generate().public_key().to_base64();
    let mut peer = WgPeer::new(
        "tg-1-1",
        WgPeerSpec {
            server: "main".into(),
            public_key: Some(client_key.clone()),
            private_key_secret_ref: None,
            preshared_key_secret_ref: None,
            address: Some("10.8.0.2/32".into()),
            address6: None,
            expires_at: Some(Timestamp::now() + SignedDuration::from_hours(1)),
            enabled: true,
            device_name: None,
        },
    );
    peer.metadata.namespace = Some(NS.into());
    peer.metadata.labels = Some([(LABEL_SUBSCRIPTION.to_owned(), "tg-1".to_owned())].into());
    api.create(&peer);
    eventually("the peer on the interface", async || {
        (netns.peers() == vec![client_key.clone()]).then_some(())
    })
    .await;
    eventually("the peer reported active", async || {
        api.get::<WgPeer>(NS, "tg-1-1")?
            .status?
            .active
            .then_some(())
    })
    .await;
    let (status, metrics) = agent.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("wgsub_node_agent_peers"), "{metrics}");

    // SIGTERM: a clean exit, within the pod's grace period.
    let sent = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + WITHIN;
    let exit = loop {
        if let Some(exit) = agent.child.try_wait().expect("waiting") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the agent still runs {WITHIN:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "the agent exits 0 on SIGTERM: {exit:?}");

    let logs = std::fs::read_to_string(&agent.logs).expect("the log");
    assert!(!logs.is_empty(), "the agent logged nothing");
    for line in logs.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(entry.get("level").is_some(), "{line}");
    }
    assert!(
        !logs.contains(key.to_base64().as_str()),
        "the server's private key was logged"
    );
    let refused = ungranted(include_str!("../api-calls.yaml"), &api.requests());
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
