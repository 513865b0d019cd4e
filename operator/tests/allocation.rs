//! Address allocation for a burst of purchases on the real API server (`wgsub_testkit::envtest`),
//! the operator's `controller::run` authenticated as the chart's `wgsub-operator` ServiceAccount
//! under the Roles the chart renders: 100 subscriptions created at once all get keyed peers with
//! distinct addresses (the time from the first create to the last keyed peer is printed), and
//! so they do when the operator dies mid-burst and a new one — its address book rebuilt from the
//! peers on the server — finishes the burst.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::Ipv4Net;
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_operator::addresses::is_client_v4;
use wgsub_operator::controller::{self, Context, Settings};
use wgsub_operator::metrics::Metrics;
use wgsub_operator::patches::FIELD_MANAGER;
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;
use wgsub_testkit::process::eventually;

const BURST: usize = 100;
const POOL: &str = "10.8.0.0/24";
const WITHIN: Duration = Duration::from_secs(120);
/// Reconciles at the same time, as a deployment facing bursts would set `WGSUB_CONCURRENCY`.
const CONCURRENCY: u16 = 32;

/// A namespace with the chart's RBAC and the server `wg`.
async fn namespace(prefix: &str) -> (&'static ControlPlane, String, Client) {
    let plane = ControlPlane::with_crds();
    let name = plane.namespace(prefix).await;
    apply_chart_rbac(plane, &name, &[]).await;
    let admin = plane.admin_client();
    Api::<WgServer>::namespaced(admin.clone(), &name)
        .create(&PostParams::default(), &fixtures::server("wg", POOL))
        .await
        .expect("creating the server");
    (plane, name, admin)
}

/// The controller as the chart's ServiceAccount, a fresh context (an empty address book).
async fn start_operator(plane: &ControlPlane, namespace: &str) -> JoinHandle<()> {
    let client = component_client(plane, namespace, "operator").await;
    let ctx = Arc::new(Context::new(
        client,
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test".into()),
        },
        Settings {
            default_server: "wg".into(),
            retention: SignedDuration::from_hours(24 * 30),
            keys_namespace: Some(peer_keys_namespace(namespace)),
        },
        Arc::new(Metrics::new()),
        Arc::new(Timestamp::now),
    ));
    tokio::spawn(controller::run(
        ctx,
        Some(namespace.to_owned()),
        CONCURRENCY,
        std::future::pending(),
    ))
}

/// Creates the burst's subscriptions all at once; returns when the first create was sent.
fn create_burst(admin: &Client, namespace: &str) -> (Instant, JoinHandle<()>) {
    let api: Api<VpnSubscription> = Api::namespaced(admin.clone(), namespace);
    let paid_until = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    let started = Instant::now();
    let creating = tokio::spawn(async move {
        futures::stream::iter(0..BURST)
            .for_each_concurrent(BURST, |i| {
                let api = api.clone();
                async move {
                    let sub = fixtures::paid_subscription(5_000 + i as i64, paid_until);
                    api.create(&PostParams::default(), &sub)
                        .await
                        .unwrap_or_else(|e| panic!("subscription {i}: {e}"));
                }
            })
            .await;
    });
    (started, creating)
}

/// The peers with an address and a published key, by name.
async fn keyed_peers(admin: &Client, namespace: &str) -> BTreeMap<String, String> {
    Api::<WgPeer>::namespaced(admin.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("an admin list")
        .into_iter()
        .filter(|p| p.spec.public_key.is_some() && p.spec.private_key_secret_ref.is_some())
        .filter_map(|p| Some((p.name_any(), p.spec.address.clone()?)))
        .collect()
}

/// Waits until every subscription of the burst has a keyed peer; fails on two peers with one
/// address or an address outside the pool's clients.
async fn all_keyed_with_distinct_addresses(admin: &Client, namespace: &str) {
    let peers = eventually("every subscription has a keyed peer", WITHIN, async || {
        let peers = keyed_peers(admin, namespace).await;
        (peers.len() == BURST).then_some(peers)
    })
    .await;
    let pool: Ipv4Net = POOL.parse().unwrap();
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (peer, address) in peers {
        let host = wgsub_crds::pool::parse_host_v4(&address).expect("a /32");
        assert!(is_client_v4(pool, host), "{peer}: {address} is no client");
        holders.entry(address).or_default().push(peer);
    }
    let shared: Vec<_> = holders.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(shared.is_empty(), "peers sharing an address: {shared:?}");
    assert_eq!(holders.len(), BURST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_purchases_at_once_all_get_distinct_addresses() {
    let (plane, ns, admin) = namespace("burst").await;
    let operator = start_operator(plane, &ns).await;
    let (started, creating) = create_burst(&admin, &ns);
    creating.await.expect("creating the burst");
    all_keyed_with_distinct_addresses(&admin, &ns).await;
    println!(
        "{BURST} subscriptions created at once: the last keyed peer {:.2} s after the first create",
        started.elapsed().as_secs_f64()
    );
    operator.abort();
    assert_nothing_forbidden(plane, &ns, "operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_dying_mid_burst_leaves_a_successor_that_allocates_no_address_twice() {
    let (plane, ns, admin) = namespace("burst-restart").await;
    let first = start_operator(plane, &ns).await;
    let (_, creating) = create_burst(&admin, &ns);
    let peers: Api<WgPeer> = Api::namespaced(admin.clone(), &ns);
    let written = eventually("the first operator writes some peers", WITHIN, async || {
        let n = peers.list(&ListParams::default()).await.ok()?.items.len();
        (n >= BURST / 5).then_some(n)
    })
    .await;
    // Dies with reconciles half-way (peers without keys, claims not yet written).
    first.abort();
    let _ = first.await;
    let keyed_at_death = keyed_peers(&admin, &ns).await.len();
    assert!(
        keyed_at_death < BURST,
        "the first operator finished the burst before it died ({written} peers written)"
    );
    // In a cluster the successor leads only after the lease expired (15 s by default): by
    // then any request the dead one had sent has been served.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = start_operator(plane, &ns).await;
    creating.await.expect("creating the burst");
    all_keyed_with_distinct_addresses(&admin, &ns).await;
    println!("the first operator died with {written} peers written, {keyed_at_death} keyed");
    second.abort();
    assert_nothing_forbidden(plane, &ns, "operator");
}
