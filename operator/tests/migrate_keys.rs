//! The upgrade to key namespaces on the real API server: a release laid out as before them (the
//! operator of those charts wrote the device's key Secret beside its peer, owned by the peer and
//! labelled with its uid, with no key id; the server key sits in the release namespace too) —
//! built here by hand, write for write as that operator made it, since today's operator writes
//! another layout — then `wgsub-operator migrate-keys` as the chart's pre-upgrade hook runs it
//! (the `wgsub-migrate-keys` ServiceAccount under the Roles the chart renders for it), then the
//! operator as the chart runs it (`--keys-namespace`, its own ServiceAccount). The device keeps
//! its private key (its published public key is unchanged after the upgraded operator reconciled
//! a renewal), the server key is in the server keys namespace, a second run changes nothing, a
//! different Secret already at a target is reported and left alone, and the server refused none
//! of the calls.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{LABEL_PEER, LABEL_SERVER, LABEL_SUBSCRIPTION};
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_operator::decision::LABEL_PEER_UID;
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_kubeconfig, peer_keys_namespace,
    server_keys_namespace,
};
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::fixtures;
use wgsub_testkit::process::{Process, eventually};

const BINARY: &str = env!("CARGO_BIN_EXE_wgsub-operator");
const WITHIN: Duration = Duration::from_secs(30);

/// A server key Secret as the node-agent made them before the key namespaces.
fn server_key(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "privateKey".to_owned(),
            ByteString(PrivateKey::generate().to_base64().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

fn write_kubeconfig(dir: &Path, name: &str, kubeconfig: &str) -> String {
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, kubeconfig).expect("writing a kubeconfig");
    path.display().to_string()
}

/// The operator as the chart now runs it, its keys in `keys_namespace`.
fn operator(ns: &str, kubeconfig: &str, dir: &Path, keys_namespace: &str) -> Process {
    let env = [
        ("KUBECONFIG", kubeconfig),
        ("WGSUB_NAMESPACE", ns),
        ("WGSUB_DEFAULT_SERVER", "wg"),
        ("WGSUB_IDENTITY", "operator"),
        ("WGSUB_LEASE_DURATION", "3s"),
        ("WGSUB_KEYS_NAMESPACE", keys_namespace),
    ];
    Process::start(BINARY, "operator", dir, &env, &[])
}

/// The field manager of the operator, then and now.
const OPERATOR: &str = "wgsub-operator";

/// The device `peer` of `subscription` keyed as the operator of charts before the key
/// namespaces keyed it, in its three writes: the peer with its address and expiry (no key), the
/// key Secret beside it (owned by the peer, labelled with the peer's name, uid and subscription,
/// no key id, no write time), then the peer again with the public key and the Secret reference.
/// Returns the public key and the peer's uid.
async fn key_as_the_old_operator(
    admin: &Client,
    ns: &str,
    subscription: &VpnSubscription,
    peer: &str,
    address: &str,
) -> (String, String) {
    let apply = PatchParams::apply(OPERATOR).force();
    let peers = Api::<WgPeer>::namespaced(admin.clone(), ns);
    let owner = subscription
        .controller_owner_ref(&())
        .expect("a stored subscription");
    let mut body = json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgPeer",
        "metadata": {
            "name": peer,
            "labels": {
                LABEL_SUBSCRIPTION: subscription.name_any(),
                LABEL_SERVER: "wg",
            },
            "ownerReferences": [owner],
        },
        "spec": {
            "server": "wg",
            "address": address,
            "expiresAt": subscription.spec.paid_until,
        },
    });
    let written = peers
        .patch(peer, &apply, &Patch::Apply(&body))
        .await
        .expect("the old operator's first write of the peer");
    let uid = written.uid().expect("a stored peer");
    let key = PrivateKey::generate();
    let secret_name = format!("{peer}-key");
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "labels": {
                LABEL_PEER: peer,
                LABEL_PEER_UID: uid,
                LABEL_SUBSCRIPTION: subscription.name_any(),
            },
            "ownerReferences": [{
                "apiVersion": "wgsub.io/v1alpha1",
                "kind": "WgPeer",
                "name": peer,
                "uid": uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "type": "Opaque",
        "data": {"privateKey": ByteString(key.to_base64().as_bytes().to_vec())},
    });
    Api::<Secret>::namespaced(admin.clone(), ns)
        .patch(&secret_name, &apply, &Patch::Apply(&secret))
        .await
        .expect("the old operator's key Secret");
    let public_key = key.public_key().to_base64();
    body["spec"]["publicKey"] = json!(public_key);
    body["spec"]["privateKeySecretRef"] = json!({"name": secret_name, "key": "privateKey"});
    peers
        .patch(peer, &apply, &Patch::Apply(&body))
        .await
        .expect("the old operator's publication of the key");
    (public_key, uid)
}

/// `wgsub-operator migrate-keys` run to its end as the hook Job runs it.
fn migrate_keys(ns: &str, kubeconfig: &str) -> Output {
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .env("WGSUB_NAMESPACE", ns)
        .env("WGSUB_KEYS_NAMESPACE", peer_keys_namespace(ns))
        .env("WGSUB_SERVER_KEYS_NAMESPACE", server_keys_namespace(ns))
        .arg("migrate-keys")
        .output()
        .expect("migrate-keys runs");
    eprintln!(
        "migrate-keys: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn published_key(peers: &Api<WgPeer>, name: &str) -> Option<String> {
    peers
        .get_opt(name)
        .await
        .expect("an admin read")?
        .spec
        .public_key
}

async fn data_of(secrets: &Api<Secret>, name: &str) -> Option<BTreeMap<String, ByteString>> {
    secrets.get_opt(name).await.expect("an admin read")?.data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_release_keeps_every_devices_and_servers_key() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("operator-migrate-keys").await;
    apply_chart_rbac(plane, &ns, &[]).await;
    let dir = tempfile::tempdir().expect("a scratch dir");
    let admin: Client = plane.admin_client();
    let in_ns = |namespace: &str| Api::<Secret>::namespaced(admin.clone(), namespace);
    let (old, peer_keys, server_keys) = (
        in_ns(&ns),
        in_ns(&peer_keys_namespace(&ns)),
        in_ns(&server_keys_namespace(&ns)),
    );
    let peers = Api::<WgPeer>::namespaced(admin.clone(), &ns);
    let subscriptions = Api::<VpnSubscription>::namespaced(admin.clone(), &ns);

    // The old layout: a device keyed by the operator of charts before the key namespaces (its
    // key beside its peer), a server key the node-agent made in the release namespace.
    Api::<WgServer>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &fixtures::server("wg", "10.8.0.0/24"),
        )
        .await
        .expect("a server");
    old.create(&PostParams::default(), &server_key("wg-key"))
        .await
        .expect("the old server key");
    let subscription = subscriptions
        .create(
            &PostParams::default(),
            &fixtures::paid_subscription(1, Timestamp::now() + SignedDuration::from_hours(24)),
        )
        .await
        .expect("tg-1");
    let (public_key, peer_uid) =
        key_as_the_old_operator(&admin, &ns, &subscription, "tg-1-1", "10.8.0.2/32").await;
    let old_key = old.get("tg-1-1-key").await.expect("the old device key");
    assert_eq!(
        published_key(&peers, "tg-1-1").await.as_deref(),
        Some(public_key.as_str())
    );
    let old_server_key = data_of(&old, "wg-key").await;

    // The pre-upgrade hook.
    let hook = write_kubeconfig(
        dir.path(),
        "hook",
        &component_kubeconfig(plane, &ns, "migrate-keys").await,
    );
    let first = migrate_keys(&ns, &hook);
    assert!(first.status.success(), "{first:?}");
    let report = String::from_utf8_lossy(&first.stdout);
    assert!(
        report.contains(&format!(
            "copied: {ns}/tg-1-1-key -> {}/tg-1-1-key (key of WgPeer tg-1-1)",
            peer_keys_namespace(&ns)
        )),
        "{report}"
    );
    assert!(
        report.contains("2 copied, 0 already migrated, 0 conflicts"),
        "{report}"
    );
    let copy = peer_keys.get("tg-1-1-key").await.expect("the copied key");
    assert_eq!(copy.data, old_key.data);
    assert_eq!(copy.labels()[LABEL_PEER_UID], peer_uid);
    assert!(copy.owner_references().is_empty());
    assert_eq!(data_of(&server_keys, "wg-key").await, old_server_key);
    assert!(
        old.get_opt("tg-1-1-key").await.unwrap().is_some(),
        "the originals are left"
    );
    let again = migrate_keys(&ns, &hook);
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 copied, 2 already migrated"),
        "a second run changes nothing"
    );

    // The upgraded operator, as the chart runs it, finds the same key.
    let operator_kubeconfig = write_kubeconfig(
        dir.path(),
        "operator",
        &component_kubeconfig(plane, &ns, "operator").await,
    );
    let keys_namespace = peer_keys_namespace(&ns);
    let mut after = operator(&ns, &operator_kubeconfig, dir.path(), &keys_namespace);
    after.wait_ready(WITHIN).await;
    // A renewal: the operator reconciles tg-1 and rewrites its peer's expiry.
    let expires = peers.get("tg-1-1").await.unwrap().spec.expires_at;
    let renewed = (Timestamp::now() + SignedDuration::from_hours(48)).to_string();
    subscriptions
        .patch(
            "tg-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paidUntil": renewed}})),
        )
        .await
        .expect("a renewal");
    eventually("the upgraded operator renews tg-1-1", WITHIN, async || {
        let now = peers.get("tg-1-1").await.ok()?.spec.expires_at;
        (now != expires).then_some(())
    })
    .await;
    assert_eq!(
        published_key(&peers, "tg-1-1").await.as_deref(),
        Some(public_key.as_str()),
        "the device keeps its key: its config on the phone still works"
    );
    assert_eq!(data_of(&peer_keys, "tg-1-1-key").await, old_key.data);
    assert!(after.terminate(WITHIN).success());

    // A different Secret already at a target: reported, never overwritten, and the hook fails.
    Api::<WgServer>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &fixtures::server("wg2", "10.8.0.0/24"),
        )
        .await
        .expect("a second server");
    old.create(&PostParams::default(), &server_key("wg2-key"))
        .await
        .unwrap();
    server_keys
        .create(&PostParams::default(), &server_key("wg2-key"))
        .await
        .unwrap();
    let there = data_of(&server_keys, "wg2-key").await;
    let conflict = migrate_keys(&ns, &hook);
    assert!(!conflict.status.success(), "a conflict fails the hook");
    assert!(
        String::from_utf8_lossy(&conflict.stdout).contains(&format!(
            "CONFLICT (a different Secret is there; left alone): {ns}/wg2-key"
        )),
        "{conflict:?}"
    );
    assert_eq!(data_of(&server_keys, "wg2-key").await, there);

    assert_nothing_forbidden(plane, &ns, "migrate-keys");
    assert_nothing_forbidden(plane, &ns, "operator");
}
