//! The operator's collection of key Secrets (`key_cleanup`) on the real API server, as the
//! chart's `wgsub-operator` ServiceAccount: a key whose peer was deleted while no operator ran
//! is found by the sweep after the first list; keys of live peers, keys rewritten since they
//! were seen, and Secrets that are not the operator's are kept. Keys written as today's operator
//! writes them (a key id, a write time, no peer uid) are judged by the operator's clock, moved
//! here instead of waiting out [`KEY_GRACE`]: one whose key id a live peer carries is kept
//! however old; one whose peer is gone or was never written (the operator stopped between the
//! Secret and the peer) is kept for the grace after its write and deleted once it has passed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::LABEL_PEER;
use wgsub_crds::{SecretKeyRef, VpnSubscription, VpnSubscriptionSpec, WgPeer, WgPeerSpec};
use wgsub_operator::decision::{KEY_ID, LABEL_PEER_UID, NewKey};
use wgsub_operator::key_cleanup::{KEY_GRACE, KeyCleanup};
use wgsub_operator::patches::{FIELD_MANAGER, key_secret};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::eventually;

fn key(name: &str, labels: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "privateKey".to_owned(),
            ByteString(b"made up for the test".to_vec()),
        )])),
        ..Secret::default()
    }
}

async fn exists(keys: &Api<Secret>, name: &str) -> bool {
    keys.get_opt(name).await.expect("an admin read").is_some()
}

#[tokio::test]
async fn the_sweep_deletes_only_keys_whose_peer_is_gone() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("operator-key-sweep").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let admin: Client = plane.admin_client();
    let keys_namespace = peer_keys_namespace(&ns);
    let keys: Api<Secret> = Api::namespaced(admin.clone(), &keys_namespace);
    let live = Api::<WgPeer>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &WgPeer::new(
                "tg-1-1",
                serde_json::from_value::<WgPeerSpec>(serde_json::json!({"server": "wg"})).unwrap(),
            ),
        )
        .await
        .expect("a peer");
    let live_uid = live.uid().unwrap();
    for secret in [
        key(
            "tg-1-1-key",
            &[("wgsub.io/peer", "tg-1-1"), (LABEL_PEER_UID, &live_uid)],
        ),
        key(
            "tg-2-1-key",
            &[
                ("wgsub.io/peer", "tg-2-1"),
                (LABEL_PEER_UID, "uid-of-a-deleted-peer"),
            ],
        ),
        key("psk-by-hand", &[("wgsub.io/peer", "tg-1-1")]),
    ] {
        keys.create(&PostParams::default(), &secret)
            .await
            .expect("a key");
    }

    let client = component_client(plane, &ns, "operator").await;
    let cleanup = tokio::spawn(
        KeyCleanup::new(client, &ns, &keys_namespace, Arc::new(Timestamp::now))
            .run(std::future::pending()),
    );
    eventually(
        "the orphaned key is deleted after the first list",
        Duration::from_secs(10),
        async || (!exists(&keys, "tg-2-1-key").await).then_some(()),
    )
    .await;
    assert!(
        exists(&keys, "tg-1-1-key").await,
        "the live peer's key stays"
    );
    assert!(
        exists(&keys, "psk-by-hand").await,
        "a Secret without the uid label is not the operator's"
    );

    // Deleting the live peer takes its key at once.
    Api::<WgPeer>::namespaced(admin, &ns)
        .delete("tg-1-1", &Default::default())
        .await
        .expect("deleted");
    eventually(
        "the deleted peer's key goes",
        Duration::from_secs(5),
        async || (!exists(&keys, "tg-1-1-key").await).then_some(()),
    )
    .await;
    assert!(exists(&keys, "psk-by-hand").await);
    cleanup.abort();
    assert_nothing_forbidden(plane, &ns, "operator");
}

/// Writes the key Secret of `peer` (of `subscription`) into `keys_namespace` as the operator
/// writes a new device's key before the peer exists: its own builder, server-side applied as the
/// operator, stamped `at`. Returns the key id and the public key.
async fn write_key_as_the_operator(
    operator: &Client,
    subscription: &VpnSubscription,
    peer: &str,
    keys_namespace: &str,
    at: Timestamp,
) -> (String, String) {
    let key = NewKey {
        reference: SecretKeyRef::new(format!("{peer}-key"), "privateKey"),
        private_key: PrivateKey::generate(),
        peer_uid: None,
    };
    let secret = key_secret(subscription, peer, &key, keys_namespace, at).expect("a key body");
    Api::<Secret>::namespaced(operator.clone(), keys_namespace)
        .patch(
            &key.reference.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("the operator writes a key Secret");
    (key.id(), key.private_key.public_key().to_base64())
}

/// The peer `name` carrying the key `(id, public key)` written by [`write_key_as_the_operator`].
async fn write_peer_with_key(peers: &Api<WgPeer>, name: &str, (id, public_key): &(String, String)) {
    let spec: WgPeerSpec = serde_json::from_value(serde_json::json!({
        "server": "wg",
        "publicKey": public_key,
        "privateKeySecretRef": {"name": format!("{name}-key"), "key": "privateKey"},
    }))
    .unwrap();
    let mut peer = WgPeer::new(name, spec);
    peer.metadata.annotations = Some(BTreeMap::from([(KEY_ID.to_owned(), id.clone())]));
    peers
        .create(&PostParams::default(), &peer)
        .await
        .expect("a peer");
}

/// The names of the key Secrets left in `keys`.
async fn key_names(keys: &Api<Secret>) -> Vec<String> {
    let mut names: Vec<String> = keys
        .list_metadata(&ListParams::default().labels(LABEL_PEER))
        .await
        .expect("an admin list")
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_key_no_live_peer_carries_is_deleted_only_once_the_grace_after_its_write_has_passed() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("operator-key-grace").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let admin: Client = plane.admin_client();
    let keys_namespace = peer_keys_namespace(&ns);
    let keys: Api<Secret> = Api::namespaced(admin.clone(), &keys_namespace);
    let peers: Api<WgPeer> = Api::namespaced(admin.clone(), &ns);
    let subscription = Api::<VpnSubscription>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &VpnSubscription::new("tg-1", VpnSubscriptionSpec::for_user(1)),
        )
        .await
        .expect("a subscription");
    let operator = component_client(plane, &ns, "operator").await;
    let written: Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
    let clock = Arc::new(Mutex::new(written));
    let by = clock.clone();
    let cleanup = KeyCleanup::new(
        operator.clone(),
        &ns,
        &keys_namespace,
        Arc::new(move || *by.lock().unwrap()),
    );
    let write = async |peer: &str, at: Timestamp| {
        write_key_as_the_operator(&operator, &subscription, peer, &keys_namespace, at).await
    };
    let long_ago = written - SignedDuration::from_hours(24 * 30);

    // tg-1-1: a live peer carries the key id of a key written a month ago.
    let live = write("tg-1-1", long_ago).await;
    write_peer_with_key(&peers, "tg-1-1", &live).await;
    // tg-2-1: its peer is gone, its key written a month ago.
    let gone_long_ago = write("tg-2-1", long_ago).await;
    write_peer_with_key(&peers, "tg-2-1", &gone_long_ago).await;
    // tg-3-1: its peer is gone, its key written just now.
    let gone_just_now = write("tg-3-1", written).await;
    write_peer_with_key(&peers, "tg-3-1", &gone_just_now).await;
    for name in ["tg-2-1", "tg-3-1"] {
        peers
            .delete(name, &Default::default())
            .await
            .expect("a peer deleted");
    }
    // tg-4-1: the operator wrote the key and stopped before the peer (which never comes).
    write("tg-4-1", written).await;
    // tg-5-1: the operator wrote the key; its peer comes after the next sweep.
    let late = write("tg-5-1", written).await;

    *clock.lock().unwrap() = written + KEY_GRACE - SignedDuration::from_secs(1);
    assert_eq!(cleanup.sweep().await.expect("a sweep"), 1);
    assert_eq!(
        key_names(&keys).await,
        ["tg-1-1-key", "tg-3-1-key", "tg-4-1-key", "tg-5-1-key"],
        "within the grace only the key of the peer gone long ago goes"
    );

    write_peer_with_key(&peers, "tg-5-1", &late).await;
    *clock.lock().unwrap() = written + KEY_GRACE;
    assert_eq!(cleanup.sweep().await.expect("a sweep"), 2);
    assert_eq!(
        key_names(&keys).await,
        ["tg-1-1-key", "tg-5-1-key"],
        "once the grace has passed, the keys no live peer carries go"
    );

    *clock.lock().unwrap() = written + KEY_GRACE * 100;
    assert_eq!(cleanup.sweep().await.expect("a sweep"), 0);
    assert_eq!(key_names(&keys).await, ["tg-1-1-key", "tg-5-1-key"]);
    assert_nothing_forbidden(plane, &ns, "operator");
}
