//! The real control plane of the test support: it starts, serves wgsub's CRDs, authenticates a
//! ServiceAccount by a TokenRequest token and holds it to RBAC (the refusal shows in the audit
//! log), and collects the dependents of a deleted owner.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use wgsub_crds::WgServer;
use wgsub_testkit::envtest::ControlPlane;
use wgsub_testkit::process::eventually;

fn config_map(name: &str, owner: Option<&ConfigMap>) -> ConfigMap {
    let mut object = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}
    });
    if let Some(owner) = owner {
        object["metadata"]["ownerReferences"] = serde_json::json!([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "name": owner.metadata.name, "uid": owner.metadata.uid,
        }]);
    }
    serde_json::from_value(object).expect("a config map")
}

#[tokio::test]
async fn a_service_account_is_held_to_rbac_and_its_refusals_are_audited() {
    let plane = ControlPlane::with_crds();
    let ns = plane.namespace("envtest-rbac").await;
    let client = plane.service_account_client(&ns, "nobody").await;

    let servers: Api<WgServer> = Api::namespaced(client, &ns);
    let refused = servers
        .list(&Default::default())
        .await
        .expect_err("no rights");
    assert!(
        matches!(&refused, kube::Error::Api(status) if status.code == 403),
        "the server's own 403: {refused}"
    );
    let forbidden = plane.forbidden(&ns, "nobody");
    assert_eq!(forbidden.len(), 1, "one refusal audited: {forbidden:?}");
    assert!(
        forbidden[0].starts_with("list wgservers -> 403"),
        "{forbidden:?}"
    );

    let admin: Api<WgServer> = Api::namespaced(plane.admin_client(), &ns);
    assert!(
        admin
            .list(&Default::default())
            .await
            .expect("admin lists")
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn the_garbage_collector_deletes_dependents_of_a_deleted_owner() {
    let plane = ControlPlane::shared();
    let ns = plane.namespace("envtest-gc").await;
    let maps: Api<ConfigMap> = Api::namespaced(plane.admin_client(), &ns);
    let owner = maps
        .create(&PostParams::default(), &config_map("owner", None))
        .await
        .expect("owner");
    maps.create(
        &PostParams::default(),
        &config_map("dependent", Some(&owner)),
    )
    .await
    .expect("dependent");
    maps.delete("owner", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually(
        "the dependent is collected",
        Duration::from_secs(60),
        async || {
            maps.get_opt("dependent")
                .await
                .expect("a read")
                .is_none()
                .then_some(())
        },
    )
    .await;
}
