//! The data quota on the real API server (`wgsub_testkit::envtest`), the operator's real
//! `controller::run` authenticated as the chart's `wgsub-operator` ServiceAccount under the
//! Roles the chart renders, with the test playing the node-agent (it writes the peers'
//! `status.rxBytes/txBytes` as the agent does): the counters are folded into the subscription's
//! `status.usage`; when they reach `spec.trafficQuota.bytes` the subscription gets
//! `QuotaExhausted` and every peer the `wgsub.io/over-quota` label (the user's `enabled` switch
//! untouched); a purchase (a later `paidUntil`) starts a new period and lifts both. More bytes
//! within the write interval are not written until something forces a write. The API server
//! itself refuses a bad `trafficQuota` and a negative usage. Ends with none of the operator's
//! calls refused by the server's RBAC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wgsub_crds::liveness::PeerLiveness;
use wgsub_crds::resources::{
    CONDITION_QUOTA_EXHAUSTED, LABEL_OVER_QUOTA, LABEL_SERVER, LABEL_SUBSCRIPTION, condition,
    is_over_limit, is_over_quota,
};
use wgsub_crds::{VpnSubscription, VpnSubscriptionSpec, VpnSubscriptionStatus, WgPeer, WgServer};
use wgsub_operator::controller::{self, Context, Settings};
use wgsub_operator::decision::reasons;
use wgsub_operator::metrics::Metrics;
use wgsub_operator::patches::FIELD_MANAGER;
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::eventually;

const WITHIN: Duration = Duration::from_secs(20);
const SUBSCRIPTION: &str = "tg-7";
const DAY: SignedDuration = SignedDuration::from_hours(24);

fn server() -> WgServer {
    serde_json::from_value(json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgServer",
        "metadata": {"name": "wg"},
        "spec": {
            "endpoint": "vpn.example.com:51820",
            "listenPort": 51820,
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "wg-key", "key": "privateKey"},
        },
    }))
    .expect("a server")
}

/// A second device as the API creates it: labels, the subscription as controller, switched
/// off by its user.
fn api_device(subscription: &VpnSubscription) -> Value {
    let owner = OwnerReference {
        api_version: "wgsub.io/v1alpha1".into(),
        kind: "VpnSubscription".into(),
        name: SUBSCRIPTION.into(),
        uid: subscription.uid().expect("a stored subscription"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgPeer",
        "metadata": {
            "name": format!("{SUBSCRIPTION}-2"),
            "labels": BTreeMap::from([
                (LABEL_SUBSCRIPTION, SUBSCRIPTION),
                (LABEL_SERVER, "wg"),
            ]),
            "ownerReferences": [owner],
        },
        "spec": {"server": "wg", "enabled": false, "deviceName": "laptop"},
    })
}

/// The operator's Controller over `ns`, with a usage write interval of `interval`.
async fn start_operator(
    plane: &'static ControlPlane,
    ns: &str,
    interval: SignedDuration,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let ctx = Context::new(
        component_client(plane, ns, "operator").await,
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test".into()),
        },
        Settings {
            default_server: "wg".into(),
            retention: DAY * 30,
            keys_namespace: Some(peer_keys_namespace(ns)),
        },
        Arc::new(Metrics::new()),
        Arc::new(Timestamp::now),
    )
    .with_usage_write_interval(interval);
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(
        Arc::new(ctx),
        Some(ns.to_owned()),
        2,
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, running)
}

async fn stop_operator((stop, running): (oneshot::Sender<()>, JoinHandle<()>)) {
    stop.send(()).expect("the controller is running");
    tokio::time::timeout(WITHIN, running)
        .await
        .expect("the controller stops within the deadline")
        .expect("the controller does not panic");
}

/// Writes a peer's counters as the node-agent does.
async fn report(peers: &Api<WgPeer>, name: &str, rx: i64, tx: i64) {
    peers
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": true, "rxBytes": rx, "txBytes": tx}})),
        )
        .await
        .expect("the agent's status write");
}

async fn status(subscriptions: &Api<VpnSubscription>) -> VpnSubscriptionStatus {
    subscriptions
        .get(SUBSCRIPTION)
        .await
        .expect("the subscription")
        .status
        .unwrap_or_default()
}

fn quota_condition(status: &VpnSubscriptionStatus) -> Option<(String, String)> {
    condition(&status.conditions, CONDITION_QUOTA_EXHAUSTED)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The names of the peers a node-agent would put on the interface now.
async fn live(peers: &Api<WgPeer>) -> Vec<String> {
    let list = peers.list(&ListParams::default()).await.expect("a list");
    list.items
        .into_iter()
        .filter(|peer| {
            PeerLiveness {
                enabled: peer.spec.enabled,
                over_limit: is_over_limit(peer),
                over_quota: is_over_quota(peer),
                subscription_suspended: false,
                expires_at: peer.spec.expires_at,
            }
            .is_live(Timestamp::now())
        })
        .map(|peer| peer.name_any())
        .collect()
}

/// A subscription paid for 30 days and two devices, with a quota of `bytes` per 30 days; its
/// first device made by the operator, the second by the API.
async fn subscribe(admin: &Client, ns: &str, bytes: i64) -> VpnSubscription {
    let subscriptions: Api<VpnSubscription> = Api::namespaced(admin.clone(), ns);
    let peers: Api<WgPeer> = Api::namespaced(admin.clone(), ns);
    let mut spec = VpnSubscriptionSpec::for_user(7);
    spec.paid_until = Some(Timestamp::now() + DAY * 30);
    spec.max_devices = 2;
    spec.traffic_quota = Some(wgsub_crds::resources::TrafficQuota {
        bytes,
        period_days: 30,
    });
    let subscription = subscriptions
        .create(
            &PostParams::default(),
            &VpnSubscription::new(SUBSCRIPTION, spec),
        )
        .await
        .expect("the subscription");
    eventually("device 1 gets its key", WITHIN, async || {
        peers.get_opt("tg-7-1").await.ok()??.spec.public_key
    })
    .await;
    let device: WgPeer = serde_json::from_value(api_device(&subscription)).unwrap();
    peers
        .create(
            &PostParams {
                field_manager: Some("wgsub-api".into()),
                ..PostParams::default()
            },
            &device,
        )
        .await
        .expect("the second device");
    eventually("both devices get their keys", WITHIN, async || {
        let list = peers.list(&ListParams::default()).await.ok()?;
        (list.items.len() == 2 && list.items.iter().all(|p| p.spec.public_key.is_some()))
            .then_some(())
    })
    .await;
    subscription
}

async fn prepared(prefix: &str) -> (&'static ControlPlane, String, Client) {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace(prefix).await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let admin = plane.admin_client();
    Api::<WgServer>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &server())
        .await
        .expect("the server");
    (plane, ns, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_over_the_quota_stops_every_device_until_a_purchase() {
    let (plane, ns, admin) = prepared("operator-quota").await;
    let subscriptions: Api<VpnSubscription> = Api::namespaced(admin.clone(), &ns);
    let peers: Api<WgPeer> = Api::namespaced(admin.clone(), &ns);
    let operator = start_operator(plane, &ns, SignedDuration::from_secs(1)).await;
    subscribe(&admin, &ns, 1000).await;
    assert_eq!(live(&peers).await, ["tg-7-1"]);

    report(&peers, "tg-7-1", 400, 300).await;
    report(&peers, "tg-7-2", 100, 150).await;
    let counted = eventually("950 bytes are counted", WITHIN, async || {
        let status = status(&subscriptions).await;
        let usage = status.usage.clone()?;
        (usage.period_bytes() == 950).then_some(status)
    })
    .await;
    let usage = counted.usage.clone().unwrap();
    assert_eq!((usage.period_rx_bytes, usage.period_tx_bytes), (500, 450));
    let device = usage.device("tg-7-1").expect("device 1 is listed");
    assert_eq!((device.period_rx_bytes, device.period_tx_bytes), (400, 300));
    assert!(
        usage
            .period_end
            .is_some_and(|end| end > Timestamp::now() + DAY * 29)
    );
    assert_eq!(quota_condition(&counted), None);
    assert_eq!(live(&peers).await, ["tg-7-1"]);

    // 50 more bytes reach the quota to the byte.
    report(&peers, "tg-7-1", 450, 300).await;
    let exhausted = eventually("the quota is exhausted", WITHIN, async || {
        let status = status(&subscriptions).await;
        (quota_condition(&status)?.0 == "True").then_some(status)
    })
    .await;
    assert_eq!(
        quota_condition(&exhausted),
        Some(("True".into(), reasons::QUOTA_EXHAUSTED.into()))
    );
    assert_eq!(exhausted.usage.unwrap().period_bytes(), 1000);
    eventually(
        "every device carries the over-quota label",
        WITHIN,
        async || {
            let list = peers.list(&ListParams::default()).await.ok()?;
            list.items.iter().all(is_over_quota).then_some(())
        },
    )
    .await;
    assert!(live(&peers).await.is_empty());
    assert!(peers.get("tg-7-1").await.unwrap().spec.enabled);
    assert!(
        !peers.get("tg-7-2").await.unwrap().spec.enabled,
        "the user's switches are untouched"
    );
    eventually("an Event says the quota is used up", WITHIN, async || {
        let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reasons::QUOTA_EXHAUSTED)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(SUBSCRIPTION)
        })
    })
    .await;

    // The user buys again: a new period starts and the devices come back.
    subscriptions
        .patch(
            SUBSCRIPTION,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paidUntil": Timestamp::now() + DAY * 60}})),
        )
        .await
        .expect("the purchase");
    let lifted = eventually("the purchase lifts the quota", WITHIN, async || {
        let status = status(&subscriptions).await;
        (quota_condition(&status)?.0 == "False").then_some(status)
    })
    .await;
    assert_eq!(
        quota_condition(&lifted),
        Some(("False".into(), reasons::WITHIN_QUOTA.into()))
    );
    let usage = lifted.usage.unwrap();
    assert_eq!(usage.period_bytes(), 0);
    assert_eq!(usage.total_bytes(), 1000);
    eventually("the labels are gone", WITHIN, async || {
        let list = peers.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .all(|peer| !peer.labels().contains_key(LABEL_OVER_QUOTA))
            .then_some(())
    })
    .await;
    assert_eq!(live(&peers).await, ["tg-7-1"]);

    stop_operator(operator).await;
    assert_nothing_forbidden(plane, &ns, "operator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_bytes_within_the_write_interval_wait_but_the_quota_is_written_at_once() {
    let (plane, ns, admin) = prepared("operator-quota-writes").await;
    let subscriptions: Api<VpnSubscription> = Api::namespaced(admin.clone(), &ns);
    let peers: Api<WgPeer> = Api::namespaced(admin.clone(), &ns);
    let operator = start_operator(plane, &ns, SignedDuration::from_hours(1)).await;
    subscribe(&admin, &ns, 10_000).await;

    report(&peers, "tg-7-1", 100, 100).await;
    eventually("the first counts are written", WITHIN, async || {
        let usage = status(&subscriptions).await.usage?;
        (usage.period_bytes() == 200).then_some(())
    })
    .await;
    let version = subscriptions
        .get(SUBSCRIPTION)
        .await
        .unwrap()
        .resource_version();
    for step in 1..=5 {
        report(&peers, "tg-7-1", 100 + step * 100, 100).await;
    }
    // Each status write of the agent is reconciled; none becomes a subscription write.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = subscriptions.get(SUBSCRIPTION).await.unwrap();
    assert_eq!(held.resource_version(), version);
    assert_eq!(held.status.unwrap().usage.unwrap().period_bytes(), 200);

    // Crossing the quota is written at once, with every byte seen since.
    report(&peers, "tg-7-1", 9_900, 100).await;
    let exhausted = eventually("the quota is exhausted", WITHIN, async || {
        let status = status(&subscriptions).await;
        (quota_condition(&status)?.0 == "True").then_some(status)
    })
    .await;
    assert_eq!(exhausted.usage.unwrap().period_bytes(), 10_000);

    stop_operator(operator).await;
    assert_nothing_forbidden(plane, &ns, "operator");
}

#[tokio::test]
async fn the_api_server_refuses_a_bad_traffic_quota_and_a_negative_usage() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("operator-quota-schema").await;
    let subscriptions: Api<VpnSubscription> = Api::namespaced(plane.admin_client(), &ns);
    let raw: Api<DynamicObject> = Api::namespaced_with(
        plane.admin_client(),
        &ns,
        &ApiResource::erase::<VpnSubscription>(&()),
    );
    let with_quota = |quota: Value| {
        json!({
            "apiVersion": "wgsub.io/v1alpha1",
            "kind": "VpnSubscription",
            "metadata": {"name": SUBSCRIPTION},
            "spec": {"telegramUserId": 7, "trafficQuota": quota},
        })
    };
    for (quota, field) in [
        (
            json!({"bytes": 0, "periodDays": 30}),
            "spec.trafficQuota.bytes",
        ),
        (
            json!({"bytes": -5, "periodDays": 30}),
            "spec.trafficQuota.bytes",
        ),
        (
            json!({"bytes": 1000, "periodDays": 0}),
            "spec.trafficQuota.periodDays",
        ),
        (
            json!({"bytes": 1000, "periodDays": 3661}),
            "spec.trafficQuota.periodDays",
        ),
        (json!({"periodDays": 30}), "spec.trafficQuota.bytes"),
        (json!({"bytes": 1000}), "spec.trafficQuota.periodDays"),
    ] {
        let object: DynamicObject = serde_json::from_value(with_quota(quota.clone())).unwrap();
        let refused = raw
            .create(&PostParams::default(), &object)
            .await
            .expect_err("refused");
        assert_refused(refused, &quota, field);
    }
    let good = subscriptions
        .create(
            &PostParams::default(),
            &serde_json::from_value(with_quota(json!({"bytes": 1, "periodDays": 3660}))).unwrap(),
        )
        .await
        .expect("the smallest quota over the longest period");
    assert_eq!(good.spec.traffic_quota.unwrap().bytes, 1);

    let usage = |bytes: i64| {
        json!({"status": {"usage": {
            "periodStart": "2026-06-01T00:00:00Z",
            "periodRxBytes": bytes,
            "devices": [{"peer": "tg-7-1", "totalTxBytes": 5}],
        }}})
    };
    subscriptions
        .patch_status(
            SUBSCRIPTION,
            &PatchParams::default(),
            &Patch::Merge(usage(5)),
        )
        .await
        .expect("a good usage");
    let refused = subscriptions
        .patch_status(
            SUBSCRIPTION,
            &PatchParams::default(),
            &Patch::Merge(usage(-1)),
        )
        .await
        .expect_err("a negative usage is refused");
    assert_refused(refused, &json!(-1), "status.usage.periodRxBytes");
}

fn assert_refused(error: kube::Error, what: &Value, field: &str) {
    match error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{what}: {}", status.message);
            assert!(
                status.message.contains(field),
                "{what}: the message names {field}: {}",
                status.message
            );
        }
        other => panic!("{what}: the server did not answer: {other}"),
    }
}
