//! How soon a `WgPeer`'s `Ready` follows the interface, with the `wgsub-node-agent` process run
//! as the chart runs it (its ServiceAccount's token under the chart's RBAC) against the real API
//! server and a wireguard-go interface in a throwaway network namespace, with a status interval
//! of a minute: a peer created while the agent runs reads `Ready` within a second (a user pays
//! and the Mini App says the tunnel works), a disable and an expiry cut it within a second, a
//! re-enable brings it back as fast — none of them waits for the next status batch.
//!
//! Needs root, wireguard-go, wireguard-tools and iproute2: fails with a message otherwise.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{CONDITION_READY, LABEL_SUBSCRIPTION, condition};
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec, WgServer};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_kubeconfig, server_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::{Process, eventually};

mod support;
use support::{Netns, create};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-node-agent");
const WITHIN: Duration = Duration::from_secs(10);
/// The status batch interval the agent runs with: far longer than any wait below.
const STATUS_INTERVAL_SECONDS: &str = "60";
/// How long after the change the peer's `Ready` may follow.
const PROMPTLY: Duration = Duration::from_secs(1);

/// Polls the peer's `Ready` until it has `status` and `reason`; returns when that was seen,
/// failing after [`WITHIN`].
async fn ready_seen(peers: &Api<WgPeer>, name: &str, status: &str, reason: &str) -> Instant {
    eventually(
        &format!("peer {name} Ready={status} ({reason})"),
        WITHIN,
        async || {
            let seen = peers.get_opt(name).await.expect("an admin read")?.status?;
            let ready = condition(&seen.conditions, CONDITION_READY)?;
            (ready.status == status && ready.reason == reason && seen.active == (status == "True"))
                .then(Instant::now)
        },
    )
    .await
}

/// Patches the peer's spec; returns when the change was sent.
async fn patch_spec(peers: &Api<WgPeer>, spec: serde_json::Value) -> Instant {
    let changed = Instant::now();
    peers
        .patch(
            "tg-1-1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("a spec patch");
    changed
}

fn assert_prompt(what: &str, from: Instant, seen: Instant) {
    let took = seen.saturating_duration_since(from);
    eprintln!("{what}: {took:?}");
    assert!(
        took <= PROMPTLY,
        "{what} took {took:?}: more than {PROMPTLY:?}, as if it waited for the status batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reads_ready_within_a_second_of_its_change_not_at_the_next_status_batch() {
    wgsub_testkit::host::require_root_and_tools(
        "this test",
        "a network namespace, wireguard-go",
        &["wireguard-go", "wg", "ip"],
    );
    let netns = Netns::new("ready", "wgr");
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("node-agent-ready").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let admin = plane.admin_client();
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
            ("WGSUB_BACKEND", "userspace"),
            ("WGSUB_FIREWALL", "auto"),
            ("WGSUB_NETNS", netns_path.as_str()),
            ("WGSUB_STATUS_INTERVAL", STATUS_INTERVAL_SECONDS),
            ("WGSUB_RESYNC_INTERVAL", "600"),
        ],
        &[],
    );
    agent.wait_ready(WITHIN).await;
    // The first status batch (at start) published the server's key; the next is a minute away.
    let batch_at_start = Instant::now();
    eventually(
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

    // Paid: the operator creates the peer; the agent puts it on and reports it Ready.
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
    let created = Instant::now();
    create(&peers, &peer).await;
    let seen = ready_seen(&peers, "tg-1-1", "True", "Active").await;
    assert_eq!(netns.peers(), vec![client_key.clone()]);
    assert_prompt("created → Ready", created, seen);

    // Switched off by the user, and on again.
    let disabled = patch_spec(&peers, serde_json::json!({"enabled": false})).await;
    let seen = ready_seen(&peers, "tg-1-1", "False", "Disabled").await;
    assert!(netns.peers().is_empty());
    assert_prompt("disabled → not Ready", disabled, seen);
    let enabled = patch_spec(&peers, serde_json::json!({"enabled": true})).await;
    let seen = ready_seen(&peers, "tg-1-1", "True", "Active").await;
    assert_prompt("enabled → Ready", enabled, seen);

    // Expiry: the agent's own timer takes the peer off, and its Ready is cut with it.
    let expires_in = Duration::from_secs(2);
    let expires_at = Timestamp::now() + SignedDuration::try_from(expires_in).expect("short");
    patch_spec(
        &peers,
        serde_json::json!({"expiresAt": expires_at.to_string()}),
    )
    .await;
    let expired = Instant::now() + expires_in;
    let seen = ready_seen(&peers, "tg-1-1", "False", "Expired").await;
    assert!(netns.peers().is_empty());
    assert_prompt("expiresAt → not Ready", expired, seen);

    assert!(
        batch_at_start.elapsed() < Duration::from_secs(50),
        "the test outlasted the status interval, so a batch may have written the status"
    );
    let exit = agent.terminate(WITHIN);
    assert!(exit.success(), "the agent exits 0 on SIGTERM: {exit:?}");
    assert_nothing_forbidden(plane, &ns, "node-agent");
}
