//! The fake API's server-side apply follows the real server's field ownership: what a manager
//! stops applying goes unless shared, others' fields stay, conflicts need `force`, and status
//! applies are owned apart from the main resource.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use wgsub_crds::{SecretKeyRef, WgServer, WgServerSpec};
use wgsub_testkit::fake_api::FakeApi;

const NS: &str = "ns";

async fn apply(
    api: &Api<Secret>,
    manager: &str,
    force: bool,
    wanted: Value,
) -> kube::Result<Secret> {
    let mut params = PatchParams::apply(manager);
    params.force = force;
    api.patch(
        "cm",
        &params,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cm", "labels": wanted}})),
    )
    .await
}

fn labels(secret: &Secret) -> Value {
    json!(secret.metadata.labels)
}

#[tokio::test]
async fn a_field_left_out_of_the_next_apply_goes_unless_another_manager_owns_it() {
    let server = FakeApi::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), NS);
    apply(&api, "a", false, json!({"x": "1", "y": "2"}))
        .await
        .unwrap();
    apply(&api, "b", false, json!({"z": "3", "y": "2"}))
        .await
        .unwrap();
    let now = apply(&api, "a", false, json!({"x": "1"})).await.unwrap();
    assert_eq!(
        labels(&now),
        json!({"x": "1", "y": "2", "z": "3"}),
        "y is b's too"
    );
    let now = apply(&api, "b", false, json!({"z": "3"})).await.unwrap();
    assert_eq!(
        labels(&now),
        json!({"x": "1", "z": "3"}),
        "nobody owns y any more"
    );
}

#[tokio::test]
async fn another_managers_field_with_another_value_is_a_conflict_unless_forced() {
    let server = FakeApi::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), NS);
    apply(&api, "a", false, json!({"x": "1"})).await.unwrap();
    let refused = apply(&api, "b", false, json!({"x": "2"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(status) if status.code == 409),
        "{refused}"
    );
    let taken = apply(&api, "b", true, json!({"x": "2"})).await.unwrap();
    assert_eq!(labels(&taken), json!({"x": "2"}));
    // a lost x: leaving it out no longer removes it.
    let now = apply(&api, "a", false, json!({"w": "0"})).await.unwrap();
    assert_eq!(labels(&now), json!({"w": "0", "x": "2"}));
}

#[tokio::test]
async fn a_merge_patch_that_changes_a_field_takes_it_from_its_applier() {
    let server = FakeApi::start().await;
    let api: Api<Secret> = Api::namespaced(server.client(), NS);
    apply(&api, "a", false, json!({"x": "1", "y": "2"}))
        .await
        .unwrap();
    api.patch(
        "cm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"y": "9"}}})),
    )
    .await
    .unwrap();
    let now = apply(&api, "a", false, json!({"x": "1"})).await.unwrap();
    assert_eq!(labels(&now), json!({"x": "1", "y": "9"}));
}

#[tokio::test]
async fn status_and_main_resource_applies_are_owned_apart() {
    let server = FakeApi::start().await;
    let api: Api<WgServer> = Api::namespaced(server.client(), NS);
    let mut object = WgServer::new(
        "wg",
        WgServerSpec {
            endpoint: "vpn.example.com:51820".into(),
            listen_port: 51820,
            interface_name: "wg0".into(),
            address_pool: "10.8.0.0/24".into(),
            address_pool6: None,
            dns: vec![],
            mtu: Some(1420),
            persistent_keepalive: None,
            client_allowed_ips: vec![],
            node_name: None,
            node_selector: None,
            private_key_secret_ref: SecretKeyRef::new("wg-key", "privateKey"),
            nat: None,
        },
    );
    object.metadata.namespace = Some(NS.into());
    let params = PatchParams::apply("m");
    api.patch("wg", &params, &Patch::Apply(&object))
        .await
        .unwrap();
    let status = json!({"apiVersion": "wgsub.io/v1alpha1", "kind": "WgServer", "status": {"activePeers": 3}});
    api.patch_status("wg", &params, &Patch::Apply(&status))
        .await
        .unwrap();
    object.spec.mtu = None;
    let now = api
        .patch("wg", &params, &Patch::Apply(&object))
        .await
        .unwrap();
    assert_eq!(now.spec.mtu, None, "the manager left mtu out");
    assert_eq!(
        now.status.and_then(|s| s.active_peers),
        Some(3),
        "its status apply stands"
    );
}
