//! The operator's collection of key Secrets (`key_cleanup`) on the real API server, as the
//! chart's `wgsub-operator` ServiceAccount: a key whose peer was deleted while no operator ran
//! is found by the sweep after the first list; keys of live peers, keys rewritten since they
//! were seen, and Secrets that are not the operator's are kept.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use wgsub_crds::{WgPeer, WgPeerSpec};
use wgsub_operator::decision::LABEL_PEER_UID;
use wgsub_operator::key_cleanup::KeyCleanup;
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
    let cleanup =
        tokio::spawn(KeyCleanup::new(client, &ns, &keys_namespace).run(std::future::pending()));
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
