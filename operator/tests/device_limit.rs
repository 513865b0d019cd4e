//! The device limit on the real API server (`wgsub_testkit::envtest`), the operator's real
//! `controller::run` authenticated as the chart's `wgsub-operator` ServiceAccount under the
//! Roles the chart renders: when a subscription's `maxDevices` falls below its number of
//! devices, the newest devices get the operator's `wgsub.io/over-limit` label (the user's
//! `enabled` switch untouched, keys and addresses kept), the subscription's status names them
//! (`devicesOverLimit`, the `DevicesOverLimit` condition) and an Event says so; the API's own
//! applies leave the label alone; when the limit rises the label goes and the same configs are
//! live again. Ends with none of the operator's calls refused by the server's RBAC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use serde_json::json;
use tokio::sync::oneshot;
use wgsub_crds::liveness::PeerLiveness;
use wgsub_crds::resources::{
    CONDITION_DEVICES_OVER_LIMIT, LABEL_OVER_LIMIT, LABEL_SERVER, LABEL_SUBSCRIPTION, condition,
    is_over_limit,
};
use wgsub_crds::{VpnSubscription, VpnSubscriptionStatus, WgPeer, WgPeerSpec, WgServer};
use wgsub_operator::controller::{self, Context, Settings};
use wgsub_operator::decision::reasons;
use wgsub_operator::metrics::Metrics;
use wgsub_operator::patches::FIELD_MANAGER;
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;
use wgsub_testkit::process::eventually;

const WITHIN: Duration = Duration::from_secs(20);
/// The field manager of the API (`api/src/state.rs`).
const API_MANAGER: &str = "wgsub-api";
const SUBSCRIPTION: &str = "tg-7";

/// An extra device as the API creates it: labels, the subscription as controller, switched
/// on, no key and no address.
fn api_device(subscription: &VpnSubscription, index: u32) -> WgPeer {
    let mut peer = WgPeer::new(
        &format!("{SUBSCRIPTION}-{index}"),
        WgPeerSpec {
            server: "wg".into(),
            public_key: None,
            private_key_secret_ref: None,
            preshared_key_secret_ref: None,
            address: None,
            address6: None,
            expires_at: None,
            enabled: true,
            device_name: Some(format!("device {index}")),
        },
    );
    peer.metadata.labels = Some(BTreeMap::from([
        (LABEL_SUBSCRIPTION.to_owned(), SUBSCRIPTION.to_owned()),
        (LABEL_SERVER.to_owned(), "wg".to_owned()),
    ]));
    peer.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "wgsub.io/v1alpha1".into(),
        kind: "VpnSubscription".into(),
        name: SUBSCRIPTION.into(),
        uid: subscription.uid().expect("a stored subscription"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    peer
}

/// What a device's config is made of: its public key, address and the private key stored in
/// its Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    public_key: String,
    address: String,
    private_key: Vec<u8>,
}

async fn config_of(peers: &Api<WgPeer>, secrets: &Api<Secret>, name: &str) -> Option<Config> {
    let peer = peers.get_opt(name).await.expect("a read")?;
    let reference = peer.spec.private_key_secret_ref.clone()?;
    let secret = secrets.get_opt(&reference.name).await.expect("a read")?;
    Some(Config {
        public_key: peer.spec.public_key.clone()?,
        address: peer.spec.address.clone()?,
        private_key: secret.data?.get(&reference.key)?.0.clone(),
    })
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
                over_quota: false,
                subscription_suspended: false,
                expires_at: peer.spec.expires_at,
            }
            .is_live(Timestamp::now())
        })
        .map(|peer| peer.name_any())
        .collect()
}

async fn status(subscriptions: &Api<VpnSubscription>) -> VpnSubscriptionStatus {
    subscriptions
        .get(SUBSCRIPTION)
        .await
        .expect("the subscription")
        .status
        .unwrap_or_default()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_over_a_lowered_limit_stop_keeping_their_configs_and_come_back_when_it_rises() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("operator-device-limit").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let admin = plane.admin_client();
    let servers: Api<WgServer> = Api::namespaced(admin.clone(), &ns);
    let subscriptions: Api<VpnSubscription> = Api::namespaced(admin.clone(), &ns);
    let peers: Api<WgPeer> = Api::namespaced(admin.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &peer_keys_namespace(&ns));
    servers
        .create(
            &PostParams::default(),
            &fixtures::server("wg", "10.8.0.0/24"),
        )
        .await
        .expect("the server");

    let ctx = Arc::new(Context::new(
        component_client(plane, &ns, "operator").await,
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some("test".into()),
        },
        Settings {
            default_server: "wg".into(),
            retention: SignedDuration::from_hours(24 * 30),
            keys_namespace: Some(peer_keys_namespace(&ns)),
        },
        Arc::new(Metrics::new()),
        Arc::new(Timestamp::now),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(ctx, Some(ns.clone()), 2, async move {
        let _ = stopped.await;
    }));

    // A subscription paid for three devices, device 1 made by the operator, 2 and 3 by the API.
    let mut subscription =
        fixtures::paid_subscription(7, Timestamp::now() + SignedDuration::from_hours(24 * 30));
    subscription.spec.max_devices = 3;
    let subscription = subscriptions
        .create(&PostParams::default(), &subscription)
        .await
        .expect("the subscription");
    eventually("device 1 gets its config", WITHIN, async || {
        config_of(&peers, &secrets, "tg-7-1").await
    })
    .await;
    let as_api = PostParams {
        field_manager: Some(API_MANAGER.into()),
        ..PostParams::default()
    };
    for index in [2, 3] {
        peers
            .create(&as_api, &api_device(&subscription, index))
            .await
            .expect("an extra device");
    }
    let all = names(&["tg-7-1", "tg-7-2", "tg-7-3"]);
    let mut before = BTreeMap::new();
    for name in &all {
        let config = eventually(&format!("{name} gets its config"), WITHIN, async || {
            config_of(&peers, &secrets, name).await
        })
        .await;
        before.insert(name.clone(), config);
    }
    eventually("all three devices are live", WITHIN, async || {
        (live(&peers).await == all).then_some(())
    })
    .await;

    // The plan is renewed with a one-device plan.
    let lower = |max: i32| json!({"spec": {"maxDevices": max}});
    subscriptions
        .patch(
            SUBSCRIPTION,
            &PatchParams::default(),
            &Patch::Merge(lower(1)),
        )
        .await
        .expect("maxDevices lowered");
    let over = eventually("devices 2 and 3 are over the limit", WITHIN, async || {
        let status = status(&subscriptions).await;
        (status.devices_over_limit == names(&["tg-7-2", "tg-7-3"])).then_some(status)
    })
    .await;
    let over_limit = condition(&over.conditions, CONDITION_DEVICES_OVER_LIMIT).unwrap();
    assert_eq!(over_limit.status, "True");
    assert_eq!(over_limit.reason, reasons::MAX_DEVICES_EXCEEDED);
    assert!(
        over_limit.message.contains("tg-7-2, tg-7-3"),
        "{}",
        over_limit.message
    );
    assert_eq!(live(&peers).await, names(&["tg-7-1"]));
    for name in &all {
        let peer = peers.get(name).await.unwrap();
        assert!(
            peer.spec.enabled,
            "the user's switch of {name} is untouched"
        );
        assert_eq!(
            config_of(&peers, &secrets, name).await.as_ref(),
            before.get(name),
            "{name} keeps its key and address"
        );
    }
    eventually("an Event names the stopped devices", WITHIN, async || {
        let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
        let list = events.list(&ListParams::default()).await.expect("events");
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reasons::MAX_DEVICES_EXCEEDED)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(SUBSCRIPTION)
            })
            .filter(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("tg-7-2, tg-7-3"))
            })
    })
    .await;

    // The API's own apply of the user's switch (forced, as `api/src/user.rs` sends it) leaves
    // the operator's label alone.
    peers
        .patch(
            "tg-7-3",
            &PatchParams::apply(API_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "wgsub.io/v1alpha1",
                "kind": "WgPeer",
                "metadata": {"name": "tg-7-3"},
                "spec": {"enabled": true, "deviceName": "laptop"},
            })),
        )
        .await
        .expect("the API's switch");
    let peer = peers.get("tg-7-3").await.unwrap();
    assert_eq!(
        peer.labels().get(LABEL_OVER_LIMIT).map(String::as_str),
        Some("true")
    );
    assert_eq!(live(&peers).await, names(&["tg-7-1"]));

    // A plan for three devices again: the same configs come back.
    subscriptions
        .patch(
            SUBSCRIPTION,
            &PatchParams::default(),
            &Patch::Merge(lower(3)),
        )
        .await
        .expect("maxDevices raised");
    let within = eventually("every device is within the limit", WITHIN, async || {
        let status = status(&subscriptions).await;
        let condition = condition(&status.conditions, CONDITION_DEVICES_OVER_LIMIT)?;
        (status.devices_over_limit.is_empty() && condition.status == "False")
            .then(|| condition.reason.clone())
    })
    .await;
    assert_eq!(within, reasons::WITHIN_LIMIT);
    eventually("all three devices are live again", WITHIN, async || {
        (live(&peers).await == all).then_some(())
    })
    .await;
    for name in &all {
        let peer = peers.get(name).await.unwrap();
        assert!(!peer.labels().contains_key(LABEL_OVER_LIMIT), "{name}");
        assert_eq!(
            config_of(&peers, &secrets, name).await.as_ref(),
            before.get(name),
            "{name} comes back with the same key and address"
        );
    }

    stop.send(()).expect("the controller is running");
    tokio::time::timeout(WITHIN, running)
        .await
        .expect("the controller stops within the deadline")
        .expect("the controller does not panic");
    assert_nothing_forbidden(plane, &ns, "operator");
}
