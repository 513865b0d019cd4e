//! The `wgsub-node-agent` binary as a process, configured as the chart configures it (the
//! environment), against an in-process API server (`wgsub_testkit::fake_api`, reached through
//! `KUBECONFIG`) and a wireguard-go interface in a throwaway network namespace: its `--help`, a
//! bad setting refused at start with the flag named; running, it serves `/healthz`, `/readyz`
//! and `/metrics`, logs JSON, creates the server's key Secret, publishes the public key, puts a
//! live `WgPeer` from its watch on the interface and reports it active; on SIGTERM it exits 0.
//! Every call it made is granted by `api-calls.yaml`.
//!
//! Needs root, wireguard-go, wireguard-tools and iproute2: fails with a message otherwise.

use std::process::Command;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Secret};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::LABEL_SUBSCRIPTION;
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec, WgServer};
use wgsub_testkit::fake_api::{FakeApi, ungranted};
use wgsub_testkit::process::{Process, assert_help_mentions, assert_refused_at_start, eventually};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-node-agent");
const NS: &str = "wgsub";
const NODE: &str = "vpn-node-1";
const WITHIN: Duration = Duration::from_secs(10);

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

#[test]
fn help_lists_every_setting_and_a_bad_setting_stops_the_start_with_the_flag_named() {
    assert_help_mentions(
        BINARY,
        &[],
        &[
            "--node-name",
            "--backend",
            "--resync-interval",
            "--firewall",
            "WGSUB_NETNS",
        ],
    );
    assert_refused_at_start(
        BINARY,
        &[
            "--node-name",
            NODE,
            "--namespace",
            NS,
            "--netns",
            "/nonexistent/netns",
        ],
        "--netns",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_process_serves_its_node_from_watches_and_stops_cleanly_on_sigterm() {
    wgsub_testkit::host::require_root_and_tools(
        "this test",
        "a network namespace, wireguard-go",
        &["wireguard-go", "wg", "ip"],
    );
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
    let kubeconfig = kubeconfig.display().to_string();
    let netns_path = format!("/var/run/netns/{}", netns.name);
    let mut agent = Process::start(
        BINARY,
        "node-agent",
        dir.path(),
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("WGSUB_NODE_NAME", NODE),
            ("WGSUB_NAMESPACE", NS),
            // As the chart's default: the kernel's WireGuard when it has it (this kernel may
            // not: then wireguard-go).
            ("WGSUB_BACKEND", "auto"),
            ("WGSUB_FIREWALL", "auto"),
            ("WGSUB_NETNS", netns_path.as_str()),
            ("WGSUB_STATUS_INTERVAL", "1"),
            ("WGSUB_LOG_FORMAT", "json"),
        ],
        &[],
    );
    agent.wait_ready(WITHIN).await;
    // The server's key: made, kept in the Secret the server names, published in its status.
    let public = eventually(
        "the server's public key in its status",
        WITHIN,
        async || api.get::<WgServer>(NS, "main")?.status?.public_key,
    )
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
    eventually("the peer on the interface", WITHIN, async || {
        (netns.peers() == vec![client_key.clone()]).then_some(())
    })
    .await;
    eventually("the peer reported active", WITHIN, async || {
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
    let exit = agent.terminate(WITHIN);
    assert!(exit.success(), "the agent exits 0 on SIGTERM: {exit:?}");
    let log = agent.json_log();
    let expected = if std::path::Path::new("/sys/module/wireguard").exists() {
        "kernel"
    } else {
        "userspace"
    };
    let started = log
        .iter()
        .find(|entry| entry["fields"]["message"] == "starting")
        .expect("a start line");
    assert_eq!(started["fields"]["backend"], expected, "{started}");
    assert!(
        !agent.log().contains(key.to_base64().as_str()),
        "the server's private key was logged"
    );
    let refused = ungranted(include_str!("../api-calls.yaml"), &api.requests());
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
