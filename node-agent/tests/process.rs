//! The `wgsub-node-agent` binary as a process, configured as the chart configures it (the
//! environment), against the real API server (`wgsub_testkit::envtest`) through a `KUBECONFIG`
//! with the token of the chart's `wgsub-node-agent` ServiceAccount, under the Role and
//! ClusterRole the chart renders, and a wireguard-go interface in a throwaway network namespace:
//! its `--help`, a bad setting refused at start with the flag named, no Kubernetes configuration
//! stopping the start with one line naming the cause; running, it reads its Node,
//! serves `/healthz`, `/readyz` and `/metrics`, logs JSON, creates the server's key Secret,
//! publishes the public key, puts a live `WgPeer` from its watch on the interface and reports it
//! active (both through the status subresource), takes it off while the operator marks it over
//! its subscription's device limit (reason `OverLimit`) and back after; on SIGTERM it exits 0. The server refused none
//! of its calls.
//!
//! Needs root, wireguard-go, wireguard-tools and iproute2: fails with a message otherwise.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{CONDITION_READY, LABEL_OVER_LIMIT, LABEL_SUBSCRIPTION, condition};
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec, WgServer};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_kubeconfig, server_keys_namespace,
    service_account,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::{
    Process, assert_help_mentions, assert_refused_at_start, assert_stops_without_kubeconfig,
    eventually,
};

mod support;
use support::{Netns, create};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-node-agent");
/// The namespace of the refused-setting check (no server involved).
const NS: &str = "wgsub";
const WITHIN: Duration = Duration::from_secs(10);

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
            "--server-keys-namespace",
            "WGSUB_NETNS",
        ],
    );
    assert_refused_at_start(
        BINARY,
        &[
            "--node-name",
            "vpn-node-1",
            "--namespace",
            NS,
            "--netns",
            "/nonexistent/netns",
        ],
        "--netns",
    );
}

#[test]
fn without_a_kubernetes_configuration_the_start_stops_with_one_line_naming_the_cause() {
    assert_stops_without_kubeconfig(
        BINARY,
        &[],
        &["--node-name", "vpn-node-1", "--namespace", NS],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_process_serves_its_node_from_watches_and_stops_cleanly_on_sigterm() {
    wgsub_testkit::host::require_root_and_tools(
        "this test",
        "a network namespace, wireguard-go",
        &["wireguard-go", "wg", "ip"],
    );
    let netns = Netns::new("proc", "wgp");
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("node-agent-process").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let admin = plane.admin_client();
    // The agent reads its own Node (cluster scope): one per test, named after the namespace.
    let node_name = format!("node-{ns}");
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name, "labels": {"wgsub.io/vpn": "true"}},
    }))
    .expect("a Node");
    create(&Api::all(admin.clone()), &node).await;
    let server: WgServer = serde_json::from_value(serde_json::json!({
        "apiVersion": "wgsub.io/v1alpha1", "kind": "WgServer",
        "metadata": {"name": "main"},
        "spec": {
            "endpoint": "vpn.example.com:51820",
            "listenPort": 51820,
            "interfaceName": netns.interface,
            "addressPool": "10.8.0.0/24",
            "nodeSelector": {"wgsub.io/vpn": "true"},
            "privateKeySecretRef": {"name": "main-key", "key": "privateKey"},
        }
    }))
    .expect("a WgServer");
    let servers: Api<WgServer> = Api::namespaced(admin.clone(), &ns);
    let peers: Api<WgPeer> = Api::namespaced(admin.clone(), &ns);
    let server_keys = server_keys_namespace(&ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &server_keys);
    create(&servers, &server).await;
    create(
        &Api::namespaced(admin.clone(), &ns),
        &VpnSubscription::new("tg-1", VpnSubscriptionSpec::for_user(1)),
    )
    .await;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        component_kubeconfig(plane, &ns, "node-agent").await,
    )
    .expect("a kubeconfig");
    let kubeconfig = kubeconfig.display().to_string();
    let netns_path = format!("/var/run/netns/{}", netns.name);
    let mut agent = Process::start(
        BINARY,
        "node-agent",
        dir.path(),
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("WGSUB_NODE_NAME", node_name.as_str()),
            ("WGSUB_NAMESPACE", ns.as_str()),
            ("WGSUB_SERVER_KEYS_NAMESPACE", server_keys.as_str()),
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
        async || {
            servers
                .get_opt("main")
                .await
                .expect("an admin read")?
                .status?
                .public_key
        },
    )
    .await;
    let secret = secrets
        .get("main-key")
        .await
        .expect("the agent made the key Secret, in the server keys namespace");
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
    peer.metadata.labels = Some([(LABEL_SUBSCRIPTION.to_owned(), "tg-1".to_owned())].into());
    create(&peers, &peer).await;
    eventually("the peer on the interface", WITHIN, async || {
        (netns.peers() == vec![client_key.clone()]).then_some(())
    })
    .await;
    eventually("the peer reported active", WITHIN, async || {
        peers
            .get_opt("tg-1-1")
            .await
            .expect("an admin read")?
            .status?
            .active
            .then_some(())
    })
    .await;
    // Over its subscription's device limit (the operator's label), the peer leaves the
    // interface with the reason in its status, and comes back when the label goes.
    let label = |value: Option<&str>| serde_json::json!({"metadata": {"labels": {LABEL_OVER_LIMIT: value}}});
    peers
        .patch(
            "tg-1-1",
            &PatchParams::default(),
            &Patch::Merge(label(Some("true"))),
        )
        .await
        .expect("the over-limit label");
    eventually(
        "the peer over the limit off the interface",
        WITHIN,
        async || netns.peers().is_empty().then_some(()),
    )
    .await;
    eventually(
        "the peer's status says it is over the limit",
        WITHIN,
        async || {
            let status = peers
                .get_opt("tg-1-1")
                .await
                .expect("an admin read")?
                .status?;
            let ready = condition(&status.conditions, CONDITION_READY)?;
            (!status.active && ready.status == "False" && ready.reason == "OverLimit").then_some(())
        },
    )
    .await;
    peers
        .patch(
            "tg-1-1",
            &PatchParams::default(),
            &Patch::Merge(label(None)),
        )
        .await
        .expect("the over-limit label removed");
    eventually("the peer back on the interface", WITHIN, async || {
        (netns.peers() == vec![client_key.clone()]).then_some(())
    })
    .await;

    // Statuses are the agent's through the status subresource, nothing of the main resource.
    for fields in [
        peers
            .get("tg-1-1")
            .await
            .expect("the peer")
            .managed_fields()
            .to_vec(),
        servers
            .get("main")
            .await
            .expect("the server")
            .managed_fields()
            .to_vec(),
    ] {
        let agents: Vec<_> = fields
            .iter()
            .filter(|e| e.manager.as_deref() == Some("wgsub-node-agent"))
            .collect();
        assert!(
            !agents.is_empty()
                && agents
                    .iter()
                    .all(|e| e.subresource.as_deref() == Some("status")),
            "{fields:?}"
        );
    }
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
        .find(|entry| entry["message"] == "starting")
        .expect("a start line");
    assert_eq!(started["backend"], expected, "{started}");
    assert!(
        !agent.log().contains(key.to_base64().as_str()),
        "the server's private key was logged"
    );
    // Its Node was read under the chart's ClusterRole (the server's nodeSelector matched).
    let made = plane.requests_of(&ns, &service_account("node-agent"));
    assert!(
        made.iter().any(|r| r.verb == "get"
            && r.resource.as_deref() == Some("nodes")
            && r.code == Some(200)),
        "the agent read its Node: {made:?}"
    );
    assert_nothing_forbidden(plane, &ns, "node-agent");
}
