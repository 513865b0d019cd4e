//! The data quota end to end, on the real Kubernetes API server of this test process with the
//! chart's RBAC (every component as its ServiceAccount): a subscription with a tiny quota
//! (`spec.trafficQuota.bytes`, as the ledger would write it from the plan) gets its device from
//! the operator; the node-agent puts it on a real wireguard-go interface in a `server` network
//! namespace and reports its byte counters every second (its `--counters-interval`); a `client`
//! namespace configured from the device's own key and address pings the server through the
//! tunnel with large packets. Once the counters reach the quota the operator marks the
//! subscription `QuotaExhausted` and labels the peer over quota; the node-agent takes it off the
//! interface (`wg show`) and the client's pings stop. A purchase (a later `paidUntil`) starts a
//! new period: the peer is back on the interface and the same config pings again.
//!
//! Needs root, wireguard-go, wireguard-tools, iproute2, ping, nft and the control plane's
//! binaries (`KUBEBUILDER_ASSETS`), as scripts/test provides: fails with a message otherwise.

#[path = "chain/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[path = "chain/lab.rs"]
#[allow(dead_code)]
mod lab;

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use wgsub_crds::config::ClientConfig;
use wgsub_crds::keys::{PrivateKey, PublicKey};
use wgsub_crds::resources::{
    CONDITION_QUOTA_EXHAUSTED, TrafficQuota, condition, is_over_quota, peer_name, subscription_name,
};
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec, WgPeer, WgServer, WgServerSpec};

use crate::cluster::Cluster;
use crate::lab::{Lab, SERVER_VETH_ADDRESS};

const SERVER: &str = "main";
const LISTEN_PORT: u16 = 51820;
const POOL: &str = "10.8.0.0/24";
/// The server's own address in the pool: what the client pings.
const SERVER_TUNNEL_ADDRESS: &str = "10.8.0.1";
const USER_ID: i64 = 5_550_099;
/// The quota: a few hundred large pings' worth.
const QUOTA_BYTES: i64 = 300_000;
const WITHIN: Duration = Duration::from_secs(30);

fn server(lab: &Lab, cluster: &Cluster) -> WgServer {
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

/// Polls `check` every 100 ms until it gives a value; panics with what the API holds after
/// `within`.
async fn wait_for<T>(
    cluster: &Cluster,
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > within {
            panic!(
                "timed out after {within:?} waiting for {what}\n{}",
                cluster.describe().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The device's `.conf`, made from its key Secret, its address and the server's published key
/// (what the API's download holds).
async fn device_config(cluster: &Cluster, peer: &WgPeer) -> String {
    let server = cluster.api::<WgServer>().get(SERVER).await.unwrap();
    let server_key = server
        .status
        .and_then(|status| status.public_key)
        .and_then(|text| PublicKey::from_base64(&text).ok());
    let reference = peer.spec.private_key_secret_ref.clone().unwrap();
    let secret: Secret = cluster.key_secrets().get(&reference.name).await.unwrap();
    let bytes = secret.data.unwrap()[&reference.key].0.clone();
    let private = PrivateKey::from_base64(std::str::from_utf8(&bytes).unwrap()).unwrap();
    ClientConfig::for_peer(&server.spec, server_key, &peer.spec, private, None)
        .expect("a complete config")
        .render()
        .as_str()
        .to_owned()
}

/// Pings the server from the client `count` times with 1200-byte payloads, 10 ms apart
/// (about 2.5 KB through the tunnel per answered ping); whether any was answered.
async fn send_traffic(lab: &Lab, count: u32) -> bool {
    let count = count.to_string();
    tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "ping",
            "-q",
            "-c",
            &count,
            "-i",
            "0.01",
            "-s",
            "1200",
            "-W",
            "1",
            SERVER_TUNNEL_ADDRESS,
        ])
        .output()
        .await
        .is_ok_and(|output| output.status.success())
}

fn exhausted(subscription: &VpnSubscription) -> Option<bool> {
    let status = subscription.status.as_ref()?;
    condition(&status.conditions, CONDITION_QUOTA_EXHAUSTED).map(|c| c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_over_the_quota_cuts_the_peer_until_a_purchase() {
    let lab = Lab::new('q');
    let mut cluster = Cluster::new("quota").await.with_agent_flags(&[
        "--counters-interval",
        "1s",
        "--status-interval",
        "1s",
    ]);
    let server = server(&lab, &cluster);
    cluster.start(&server, &lab.server_netns_path()).await;
    let subscriptions = cluster.api::<VpnSubscription>();
    let peers = cluster.api::<WgPeer>();
    let name = subscription_name(USER_ID);
    let device = peer_name(&name, 1);

    let mut spec = VpnSubscriptionSpec::for_user(USER_ID);
    spec.paid_until = Some(Timestamp::now() + SignedDuration::from_hours(24));
    spec.traffic_quota = Some(TrafficQuota {
        bytes: QUOTA_BYTES,
        period_days: 30,
    });
    subscriptions
        .create(&PostParams::default(), &VpnSubscription::new(&name, spec))
        .await
        .expect("the subscription");
    let peer = wait_for(
        &cluster,
        "the device's key and address",
        WITHIN,
        async || {
            let peer = peers.get_opt(&device).await.ok()??;
            (peer.spec.public_key.is_some() && peer.spec.address.is_some()).then_some(peer)
        },
    )
    .await;
    let public_key = peer.spec.public_key.clone().unwrap();
    wait_for(&cluster, "the server's public key", WITHIN, async || {
        let server = cluster.api::<WgServer>().get(SERVER).await.ok()?;
        server.status?.public_key
    })
    .await;
    wait_for(&cluster, "the peer on the interface", WITHIN, async || {
        lab.server_peers().await.contains(&public_key).then_some(())
    })
    .await;
    let conf = device_config(&cluster, &peer).await;
    lab.connect_client(&conf);
    assert!(
        lab.ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(5))
            .await,
        "the tunnel works before the quota is used"
    );

    // Traffic until the peer is cut: the quota is about 120 answered pings.
    let started = Instant::now();
    let mut sent = 0;
    while lab.server_peers().await.contains(&public_key) {
        assert!(
            started.elapsed() < WITHIN,
            "the peer stays on the interface after {sent} pings\n{}",
            cluster.describe().await
        );
        send_traffic(&lab, 20).await;
        sent += 20;
    }
    println!(
        "quota: the peer left the interface {:?} after the traffic started ({sent} pings sent)",
        started.elapsed()
    );
    let subscription = subscriptions.get(&name).await.unwrap();
    assert_eq!(exhausted(&subscription), Some(true));
    let usage = subscription.status.unwrap().usage.unwrap();
    assert!(
        usage.period_bytes() >= QUOTA_BYTES,
        "{} bytes counted",
        usage.period_bytes()
    );
    let cut = peers.get(&device).await.unwrap();
    assert!(is_over_quota(&cut));
    assert!(cut.spec.enabled, "the user's switch is untouched");
    assert!(
        !lab.ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(3))
            .await,
        "the client's pings stop once the peer is cut"
    );

    // A purchase: a new period, and the same config works again.
    subscriptions
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "paidUntil": Timestamp::now() + SignedDuration::from_hours(48),
            }})),
        )
        .await
        .expect("the purchase");
    wait_for(
        &cluster,
        "the peer back on the interface",
        WITHIN,
        async || lab.server_peers().await.contains(&public_key).then_some(()),
    )
    .await;
    let subscription = subscriptions.get(&name).await.unwrap();
    assert_eq!(exhausted(&subscription), Some(false));
    let usage = subscription.status.unwrap().usage.unwrap();
    assert!(
        usage.period_bytes() < QUOTA_BYTES,
        "a new period: {} bytes",
        usage.period_bytes()
    );
    assert!(usage.total_bytes() >= QUOTA_BYTES);
    // The server lost the client's session with the peer; the client starts a new handshake
    // once its data has gone unanswered for 15 s (WireGuard's own timer), then every 5 s.
    let back = Instant::now();
    assert!(
        lab.ping_answers(SERVER_TUNNEL_ADDRESS, Duration::from_secs(30))
            .await,
        "the same config pings again after the purchase"
    );
    println!(
        "quota: the client's pings are answered {:?} after the peer is back",
        back.elapsed()
    );
    cluster.assert_nothing_forbidden();
}
