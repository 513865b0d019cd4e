//! The operator's Kubernetes shell (`controller::reconcile`, called directly with a movable clock)
//! against the real API server (`wgsub_testkit::envtest`), a namespace per test, the operator
//! authenticated as the chart's `wgsub-operator` ServiceAccount under the chart's Roles:
//! reconciles write peers, key Secrets, statuses and Events through the same calls they make in
//! a cluster, admitted by the real schemas and CEL rules, and the server refused none of them.
//! The other actors (the API's field manager, a hand edit) write with the admin client. Faults a
//! real server cannot be made to show are in `faults.rs`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use serde_json::json;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::liveness::PeerLiveness;
use wgsub_crds::resources::{
    CONDITION_READY, LABEL_PEER, LABEL_SERVER, LABEL_SUBSCRIPTION, condition,
};
use wgsub_crds::{
    SubscriptionPhase, VpnSubscription, VpnSubscriptionSpec, VpnSubscriptionStatus, WgPeer,
    WgServer,
};
use wgsub_operator::controller::{self, Context, Error, Settings};
use wgsub_operator::decision::{
    CONDITION_KEY_REGENERATED, KEY_ID, LABEL_PEER_UID, STATUS_FOLLOW_UP, reasons,
};
use wgsub_operator::key_cleanup::KeyCleanup;
use wgsub_operator::metrics::Metrics;
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;
use wgsub_testkit::process::eventually;

const DAY: SignedDuration = SignedDuration::from_hours(24);
/// A deleted peer's key Secret is gone within this (the operator's key collection sees the
/// deletion on its watch; no garbage collector discovery to wait for).
const KEY_GONE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

fn start() -> Timestamp {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

/// A namespace of the real server with the chart's RBAC, a movable clock and one operator
/// context whose client is the operator's ServiceAccount.
struct Cluster {
    plane: &'static ControlPlane,
    namespace: String,
    /// The operator's client.
    client: Client,
    /// Everyone else's (the test's own setup and reads, the API, a hand edit).
    admin: Client,
    clock: Arc<Mutex<Timestamp>>,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    async fn new(servers: Vec<WgServer>) -> Self {
        let plane = ControlPlane::with_crds();
        let namespace = plane.namespace("operator-shell").await;
        apply_chart_rbac(plane, &namespace, &[]).await;
        let client = component_client(plane, &namespace, "operator").await;
        let clock = Arc::new(Mutex::new(start()));
        // The operator collects the keys of deleted peers while it leads, by its clock; here,
        // all along.
        let keys = peer_keys_namespace(&namespace);
        let by = clock.clone();
        tokio::spawn(
            KeyCleanup::new(
                client.clone(),
                &namespace,
                &keys,
                Arc::new(move || *by.lock().unwrap()),
            )
            .run(std::future::pending()),
        );
        let admin = plane.admin_client();
        for server in servers {
            Api::<WgServer>::namespaced(admin.clone(), &namespace)
                .create(&PostParams::default(), &server)
                .await
                .unwrap();
        }
        let metrics = Arc::new(Metrics::new());
        let ctx = Self::context(&client, &namespace, &clock, &metrics);
        Self {
            plane,
            namespace,
            client,
            admin,
            clock,
            ctx,
            metrics,
        }
    }

    /// Fails the test with the server's 403s for calls of the operator the chart does not grant.
    fn assert_nothing_forbidden(&self) {
        assert_nothing_forbidden(self.plane, &self.namespace, "operator");
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    fn context(
        client: &Client,
        namespace: &str,
        clock: &Arc<Mutex<Timestamp>>,
        metrics: &Arc<Metrics>,
    ) -> Arc<Context> {
        let clock = clock.clone();
        Arc::new(Context::new(
            client.clone(),
            Reporter {
                controller: "wgsub-operator".into(),
                instance: Some("test".into()),
            },
            Settings {
                default_server: "wg".into(),
                retention: DAY * 30,
                keys_namespace: Some(peer_keys_namespace(namespace)),
            },
            metrics.clone(),
            Arc::new(move || *clock.lock().unwrap()),
        ))
    }

    /// A new operator process: fresh context, nothing remembered.
    fn restart(&mut self) {
        self.ctx = Self::context(&self.client, &self.namespace, &self.clock, &self.metrics);
    }

    fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    fn advance(&self, by: SignedDuration) {
        let mut clock = self.clock.lock().unwrap();
        *clock += by;
    }

    fn subs(&self) -> Api<VpnSubscription> {
        self.api()
    }
    fn peers(&self) -> Api<WgPeer> {
        self.api()
    }
    /// The key Secrets (in the peer keys namespace).
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin.clone(), &peer_keys_namespace(&self.namespace))
    }

    async fn subscribe(&self, user: i64, paid_until: Option<Timestamp>) -> String {
        let mut spec = VpnSubscriptionSpec::for_user(user);
        spec.paid_until = paid_until;
        let mut sub = VpnSubscription::new(&format!("tg-{user}"), spec);
        sub.status = Some(VpnSubscriptionStatus::default());
        self.subs()
            .create(&PostParams::default(), &sub)
            .await
            .unwrap();
        sub.name_any()
    }

    /// The API (another field manager) changes the subscription's spec, forcing as it does.
    async fn set_spec(&self, name: &str, spec: serde_json::Value) {
        self.subs()
            .patch(
                name,
                &PatchParams::apply("wgsub-api").force(),
                &Patch::Apply(json!({
                    "apiVersion": "wgsub.io/v1alpha1", "kind": "VpnSubscription",
                    "metadata": {"name": name}, "spec": spec,
                })),
            )
            .await
            .unwrap();
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let sub = self.subs().get(name).await.unwrap();
        controller::reconcile(Arc::new(sub), self.ctx.clone()).await
    }

    /// Serves a subscription whose devices are new: the reconcile that keys them, then the one
    /// that writes the status held back for them (`decision::status_after_new_devices`; in a
    /// cluster the node-agent's first status of the peers brings it). The second's action.
    async fn serve(&self, name: &str) -> Action {
        self.reconcile(name).await.unwrap();
        self.reconcile(name).await.unwrap()
    }

    async fn sub(&self, name: &str) -> VpnSubscription {
        self.subs().get(name).await.unwrap()
    }

    async fn peer(&self, name: &str) -> WgPeer {
        self.peers().get(name).await.unwrap()
    }

    async fn private_key_of(&self, peer: &str) -> PrivateKey {
        let reference = self.peer(peer).await.spec.private_key_secret_ref.unwrap();
        let secret = self.secrets().get(&reference.name).await.unwrap();
        let bytes = &secret.data.unwrap()[&reference.key].0;
        PrivateKey::from_base64(std::str::from_utf8(bytes).unwrap()).unwrap()
    }

    async fn event_reasons(&self, subscription: &str) -> Vec<String> {
        let events: Api<Event> = self.api();
        let mut list: Vec<Event> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(subscription))
            .collect();
        list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }
}

impl Cluster {
    async fn event_count(&self, subscription: &str, reason: &str) -> i32 {
        let events: Api<Event> = self.api();
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(subscription))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.map_or(1, |s| s.count))
            .sum()
    }
}

fn phase(sub: &VpnSubscription) -> Option<SubscriptionPhase> {
    sub.status.as_ref().and_then(|s| s.phase)
}

fn ready_reason(sub: &VpnSubscription) -> String {
    condition(&sub.status.as_ref().unwrap().conditions, CONDITION_READY)
        .unwrap()
        .reason
        .clone()
}

fn requeue(action: &Action, expected: SignedDuration) {
    let expected =
        std::time::Duration::try_from(expected).unwrap() + std::time::Duration::from_millis(1);
    assert_eq!(*action, Action::requeue(expected));
}

#[tokio::test]
async fn a_paid_subscription_becomes_a_peer_with_key_secret_address_and_active_status() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let paid_until = start() + DAY * 30;
    let name = cluster.subscribe(1, Some(paid_until)).await;

    let action = cluster.reconcile(&name).await.unwrap();
    requeue(&action, STATUS_FOLLOW_UP);
    assert_eq!(
        phase(&cluster.sub(&name).await),
        None,
        "the status follows the new device"
    );
    assert!(cluster.event_reasons(&name).await.is_empty());
    let action = cluster.reconcile(&name).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(controller::MAX_REQUEUE),
        "30 days away: at most a day"
    );

    let peer = cluster.peer("tg-1-1").await;
    assert_eq!(peer.spec.address.as_deref(), Some("10.8.0.2/32"));
    assert_eq!(peer.spec.expires_at, Some(paid_until));
    assert!(peer.spec.enabled);
    assert_eq!(peer.labels()[LABEL_SUBSCRIPTION], "tg-1");
    assert_eq!(peer.labels()[LABEL_SERVER], "wg");
    let owner = &peer.owner_references()[0];
    assert_eq!(owner.kind, "VpnSubscription");
    assert_eq!(
        Some(&owner.uid),
        cluster.sub(&name).await.metadata.uid.as_ref()
    );
    assert_eq!(owner.controller, Some(true));

    let secret = cluster.secrets().get("tg-1-1-key").await.unwrap();
    assert_eq!(secret.labels()[LABEL_PEER], "tg-1-1");
    assert_eq!(
        secret.labels().get(KEY_ID),
        peer.annotations().get(KEY_ID),
        "the key is tied to this very peer by its key id"
    );
    assert!(
        !secret.labels().contains_key(LABEL_PEER_UID),
        "written before its peer existed"
    );
    assert!(
        secret.metadata.owner_references.is_none(),
        "no owner reference across namespaces (the collector would delete the key)"
    );
    assert_eq!(
        cluster
            .private_key_of("tg-1-1")
            .await
            .public_key()
            .to_base64(),
        peer.spec.public_key.unwrap()
    );

    let sub = cluster.sub(&name).await;
    assert_eq!(phase(&sub), Some(SubscriptionPhase::Active));
    assert_eq!(
        sub.status.as_ref().unwrap().peers,
        vec!["tg-1-1".to_owned()]
    );
    assert_eq!(sub.status.as_ref().unwrap().expires_at, Some(paid_until));
    assert_eq!(ready_reason(&sub), reasons::READY);
    assert_eq!(cluster.event_reasons(&name).await, vec![reasons::ACTIVATED]);
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn reconciling_twice_changes_nothing() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let name = cluster.subscribe(1, Some(start() + DAY)).await;
    cluster.serve(&name).await;
    let versions = |p: WgPeer, s: Secret, v: VpnSubscription| {
        (
            p.resource_version(),
            s.resource_version(),
            v.resource_version(),
        )
    };
    let before = versions(
        cluster.peer("tg-1-1").await,
        cluster.secrets().get("tg-1-1-key").await.unwrap(),
        cluster.sub(&name).await,
    );
    cluster.reconcile(&name).await.unwrap();
    let after = versions(
        cluster.peer("tg-1-1").await,
        cluster.secrets().get("tg-1-1-key").await.unwrap(),
        cluster.sub(&name).await,
    );
    assert_eq!(before, after);
    assert_eq!(cluster.event_reasons(&name).await, vec![reasons::ACTIVATED]);
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn renewal_keeps_key_and_address() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let name = cluster.subscribe(1, Some(start() + DAY)).await;
    cluster.serve(&name).await;
    let before = cluster.peer("tg-1-1").await;
    let key = cluster.private_key_of("tg-1-1").await;

    cluster.advance(SignedDuration::from_hours(2));
    let renewed = start() + DAY * 31;
    cluster
        .set_spec(&name, json!({"telegramUserId": 1, "paidUntil": renewed}))
        .await;
    cluster.reconcile(&name).await.unwrap();

    let after = cluster.peer("tg-1-1").await;
    assert_eq!(after.spec.public_key, before.spec.public_key);
    assert_eq!(after.spec.address, before.spec.address);
    assert_eq!(after.spec.expires_at, Some(renewed));
    assert_eq!(cluster.private_key_of("tg-1-1").await, key);
    assert_eq!(
        cluster.event_reasons(&name).await,
        vec![reasons::ACTIVATED, reasons::RENEWED]
    );
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn expiry_stops_the_peer_and_retention_deletes_it_with_its_secret() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let paid_until = start() + DAY;
    let name = cluster.subscribe(1, Some(paid_until)).await;
    cluster.reconcile(&name).await.unwrap();

    cluster.advance(SignedDuration::from_hours(20));
    let action = cluster.reconcile(&name).await.unwrap();
    requeue(&action, SignedDuration::from_hours(4));
    cluster.advance(SignedDuration::from_hours(4));
    cluster.reconcile(&name).await.unwrap();
    let sub = cluster.sub(&name).await;
    assert_eq!(phase(&sub), Some(SubscriptionPhase::Expired));
    let peer = cluster.peer("tg-1-1").await;
    let live = PeerLiveness {
        enabled: peer.spec.enabled,
        over_limit: wgsub_crds::resources::is_over_limit(&peer),
        over_quota: wgsub_crds::resources::is_over_quota(&peer),
        subscription_suspended: sub.spec.suspended,
        expires_at: peer.spec.expires_at,
    }
    .is_live(cluster.now());
    assert!(!live);

    cluster.advance(DAY * 30);
    cluster.reconcile(&name).await.unwrap();
    assert!(cluster.peers().get_opt("tg-1-1").await.unwrap().is_none());
    // The key Secret (in the keys namespace, which no owner reference reaches) goes with its
    // peer: the operator's key collection deletes it.
    eventually("the key Secret is collected", KEY_GONE_WITHIN, async || {
        cluster
            .secrets()
            .get_opt("tg-1-1-key")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(cluster.sub(&name).await.status.unwrap().peers.is_empty());
    assert_eq!(
        cluster.event_reasons(&name).await,
        vec![reasons::ACTIVATED, reasons::EXPIRED, reasons::PEERS_DELETED]
    );

    // The freed address goes to the next subscriber.
    let next = cluster.subscribe(2, Some(cluster.now() + DAY)).await;
    cluster.reconcile(&next).await.unwrap();
    assert_eq!(
        cluster.peer("tg-2-1").await.spec.address.as_deref(),
        Some("10.8.0.2/32")
    );
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn suspend_and_unsuspend_keep_the_config() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let name = cluster.subscribe(1, Some(start() + DAY * 10)).await;
    cluster.serve(&name).await;
    let before = cluster.peer("tg-1-1").await;

    cluster
        .set_spec(
            &name,
            json!({"telegramUserId": 1, "paidUntil": start() + DAY * 10, "suspended": true}),
        )
        .await;
    cluster.reconcile(&name).await.unwrap();
    let sub = cluster.sub(&name).await;
    assert_eq!(phase(&sub), Some(SubscriptionPhase::Suspended));
    assert_eq!(ready_reason(&sub), reasons::SUSPENDED);

    cluster
        .set_spec(
            &name,
            json!({"telegramUserId": 1, "paidUntil": start() + DAY * 10, "suspended": false}),
        )
        .await;
    cluster.reconcile(&name).await.unwrap();
    assert_eq!(
        phase(&cluster.sub(&name).await),
        Some(SubscriptionPhase::Active)
    );
    let after = cluster.peer("tg-1-1").await;
    assert_eq!(after.spec, before.spec);
    // The second Activated joins the first as an Event series.
    assert_eq!(
        cluster.event_reasons(&name).await,
        vec![reasons::ACTIVATED, reasons::SUSPENDED]
    );
    assert_eq!(cluster.event_count(&name, reasons::ACTIVATED).await, 2);
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_missing_server_is_reported_and_retried_without_peers() {
    let cluster = Cluster::new(vec![]).await;
    let name = cluster.subscribe(1, Some(start() + DAY)).await;
    let error = cluster.reconcile(&name).await.unwrap_err();
    assert_eq!(error.reason(), reasons::SERVER_NOT_FOUND);
    let sub = cluster.sub(&name).await;
    assert_eq!(ready_reason(&sub), reasons::SERVER_NOT_FOUND);
    assert!(cluster.peers().get_opt("tg-1-1").await.unwrap().is_none());
    let retry = controller::error_policy(Arc::new(sub.clone()), &error, cluster.ctx.clone());
    assert_eq!(retry, Action::requeue(std::time::Duration::from_secs(1)));
    let retry = controller::error_policy(Arc::new(sub), &error, cluster.ctx.clone());
    assert_eq!(retry, Action::requeue(std::time::Duration::from_secs(2)));

    // The server appears: the next reconcile serves the subscription.
    cluster
        .api::<WgServer>()
        .create(
            &PostParams::default(),
            &fixtures::server("wg", "10.8.0.0/24"),
        )
        .await
        .unwrap();
    cluster.serve(&name).await;
    assert_eq!(ready_reason(&cluster.sub(&name).await), reasons::READY);
    assert!(
        cluster
            .metrics
            .encode()
            .contains("reason=\"ServerNotFound\"} 1")
    );
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn an_exhausted_pool_fails_only_the_subscription_that_does_not_fit() {
    let cluster = Cluster::new(vec![
        fixtures::server("wg", "10.8.0.0/30"),
        fixtures::server("big", "10.9.0.0/24"),
    ])
    .await;
    let first = cluster.subscribe(1, Some(start() + DAY)).await;
    let second = cluster.subscribe(2, Some(start() + DAY)).await;
    let elsewhere = cluster.subscribe(3, Some(start() + DAY)).await;
    cluster
        .set_spec(
            &elsewhere,
            json!({"telegramUserId": 3, "paidUntil": start() + DAY, "server": "big"}),
        )
        .await;

    cluster.serve(&first).await;
    let error = cluster.reconcile(&second).await.unwrap_err();
    assert_eq!(error.reason(), reasons::POOL_EXHAUSTED);
    assert_eq!(
        ready_reason(&cluster.sub(&second).await),
        reasons::POOL_EXHAUSTED
    );
    assert!(
        cluster
            .event_reasons(&second)
            .await
            .contains(&reasons::POOL_EXHAUSTED.to_owned())
    );
    assert!(cluster.peers().get_opt("tg-2-1").await.unwrap().is_none());
    cluster.reconcile(&elsewhere).await.unwrap();
    assert_eq!(ready_reason(&cluster.sub(&first).await), reasons::READY);
    assert_eq!(
        cluster.peer("tg-3-1").await.spec.address.as_deref(),
        Some("10.9.0.2/32")
    );
    let metrics = cluster.metrics.encode();
    let used = format!(
        "wgsub_operator_pool_addresses_used{{namespace=\"{}\",server=\"wg\"}} 1",
        cluster.namespace
    );
    assert!(metrics.contains(&used), "{metrics}");
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn two_hundred_concurrent_reconciles_on_a_slash_24_give_two_hundred_distinct_addresses() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let mut names = Vec::new();
    for user in 1..=200 {
        names.push(cluster.subscribe(user, Some(start() + DAY)).await);
    }
    let cluster = Arc::new(cluster);
    let tasks: Vec<_> = names
        .iter()
        .cloned()
        .map(|name| {
            let cluster = cluster.clone();
            tokio::spawn(async move { cluster.reconcile(&name).await.map(|_| ()) })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let peers = cluster
        .peers()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(peers.len(), 200);
    let addresses: BTreeSet<String> = peers
        .iter()
        .filter_map(|p| p.spec.address.clone())
        .collect();
    assert_eq!(addresses.len(), 200);
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_restarted_operator_reallocates_nothing() {
    let mut cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    for user in 1..=3 {
        let name = cluster.subscribe(user, Some(start() + DAY)).await;
        cluster.reconcile(&name).await.unwrap();
    }
    let before = cluster
        .peers()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    cluster.restart();
    for user in 1..=3 {
        cluster.reconcile(&format!("tg-{user}")).await.unwrap();
    }
    let after = cluster
        .peers()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let versions = |peers: &[WgPeer]| {
        peers
            .iter()
            .map(|p| (p.name_any(), p.resource_version()))
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&before), versions(&after));

    let name = cluster.subscribe(4, Some(start() + DAY)).await;
    cluster.reconcile(&name).await.unwrap();
    assert_eq!(
        cluster.peer("tg-4-1").await.spec.address.as_deref(),
        Some("10.8.0.5/32")
    );
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_key_secret_deleted_by_hand_gives_a_new_key_and_tells_the_user() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let name = cluster.subscribe(1, Some(start() + DAY)).await;
    cluster.reconcile(&name).await.unwrap();
    let before = cluster.peer("tg-1-1").await;
    cluster
        .secrets()
        .delete("tg-1-1-key", &DeleteParams::default())
        .await
        .unwrap();

    cluster.reconcile(&name).await.unwrap();
    let after = cluster.peer("tg-1-1").await;
    assert_ne!(after.spec.public_key, before.spec.public_key);
    assert_eq!(after.spec.address, before.spec.address);
    assert_eq!(
        cluster
            .private_key_of("tg-1-1")
            .await
            .public_key()
            .to_base64(),
        after.spec.public_key.unwrap()
    );
    let sub = cluster.sub(&name).await;
    let regenerated = condition(
        &sub.status.as_ref().unwrap().conditions,
        CONDITION_KEY_REGENERATED,
    )
    .unwrap();
    assert_eq!(regenerated.status, "True");
    assert!(
        cluster
            .event_reasons(&name)
            .await
            .contains(&reasons::KEY_REGENERATED.to_owned())
    );
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_device_added_by_the_api_gets_key_and_address_and_keeps_the_api_fields() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let name = cluster.subscribe(1, Some(start() + DAY)).await;
    cluster
        .set_spec(
            &name,
            json!({"telegramUserId": 1, "paidUntil": start() + DAY, "maxDevices": 2}),
        )
        .await;
    cluster.serve(&name).await;
    cluster
        .peers()
        .patch(
            "tg-1-2",
            &PatchParams::apply("wgsub-api"),
            &Patch::Apply(json!({
                "apiVersion": "wgsub.io/v1alpha1", "kind": "WgPeer",
                "metadata": {"name": "tg-1-2", "labels": {LABEL_SUBSCRIPTION: "tg-1"}},
                "spec": {"server": "wg", "enabled": false, "deviceName": "laptop"},
            })),
        )
        .await
        .unwrap();

    cluster.serve(&name).await;
    let device = cluster.peer("tg-1-2").await;
    assert_eq!(device.spec.address.as_deref(), Some("10.8.0.3/32"));
    assert!(device.spec.public_key.is_some());
    assert!(!device.spec.enabled);
    assert_eq!(device.spec.device_name.as_deref(), Some("laptop"));
    assert_eq!(
        cluster.sub(&name).await.status.unwrap().peers,
        vec!["tg-1-1".to_owned(), "tg-1-2".to_owned()]
    );
    cluster.assert_nothing_forbidden();
}

#[tokio::test]
async fn a_never_paid_subscription_is_pending_without_peers() {
    let cluster = Cluster::new(vec![fixtures::server("wg", "10.8.0.0/24")]).await;
    let name = cluster.subscribe(1, None).await;
    cluster.reconcile(&name).await.unwrap();
    assert_eq!(
        phase(&cluster.sub(&name).await),
        Some(SubscriptionPhase::Pending)
    );
    assert!(
        cluster
            .peers()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    cluster.assert_nothing_forbidden();
}
