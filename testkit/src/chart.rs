//! The chart's RBAC on the real control plane: the Roles, ClusterRoles and bindings
//! `charts/wgsub` renders (with the real `helm`, release `wgsub`) applied to a test's namespace
//! and its two key namespaces ([`peer_keys_namespace`], [`server_keys_namespace`], created here),
//! and a component's ServiceAccount credentials — how a process or chain test runs a binary with
//! exactly the rights the chart gives it, so a call the chart does not grant is the server's 403.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Deserialize;

use crate::envtest::{ControlPlane, TEST_FIELD_MANAGER};

/// The release name the tests install the chart under.
pub const RELEASE: &str = "wgsub";

/// The chart in this workspace.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/wgsub")
}

/// The helm binary from `WGSUB_HELM` (set by `scripts/test`); a clear failure when missing.
pub fn helm() -> PathBuf {
    let helm = std::env::var_os("WGSUB_HELM").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "WGSUB_HELM is not set: this test renders the chart with a real helm. Run it through \
             scripts/test, or export WGSUB_HELM=$HOME/.cache/wgsub-test-tools/bin/helm after \
             scripts/install-test-deps"
        )
    });
    assert!(
        helm.is_file(),
        "WGSUB_HELM={} is not a file (scripts/install-test-deps installs helm)",
        helm.display()
    );
    helm
}

/// The ServiceAccount the chart runs `component` (`operator`, `api`, `bot`, `node-agent`) under.
pub fn service_account(component: &str) -> String {
    format!("{RELEASE}-{component}")
}

/// The namespace of the devices' key Secrets the chart gives a release in `namespace` (its
/// default `keyNamespaces.peers`): the operator's, api's and bot's `--keys-namespace`.
pub fn peer_keys_namespace(namespace: &str) -> String {
    format!("{namespace}-keys")
}

/// The namespace of the server key Secrets the chart gives a release in `namespace` (its default
/// `keyNamespaces.servers`): the node-agent's `--server-keys-namespace`.
pub fn server_keys_namespace(namespace: &str) -> String {
    format!("{namespace}-server-keys")
}

/// The kinds [`apply_chart_rbac`] applies of the rendered chart.
const RBAC_KINDS: [&str; 5] = [
    "Namespace",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// Renders the chart for `namespace` with `--set` values `sets` and applies its RBAC and key
/// namespaces — hooks included, e.g. the `migrate-keys` upgrade hook's Roles — (the key
/// Namespaces first, then Roles, RoleBindings, ClusterRoles, ClusterRoleBindings) with the admin
/// client. ServiceAccounts are made by the control plane when a test asks for their client.
pub async fn apply_chart_rbac(plane: &ControlPlane, namespace: &str, sets: &[&str]) {
    let mut args = vec![
        "template".to_owned(),
        RELEASE.to_owned(),
        chart_dir().display().to_string(),
        "--namespace".to_owned(),
        namespace.to_owned(),
    ];
    for set in sets {
        args.push("--set".to_owned());
        args.push((*set).to_owned());
    }
    let scratch = std::env::temp_dir().join("wgsub-helm");
    let output = Command::new(helm())
        .args(&args)
        .env("HELM_CACHE_HOME", scratch.join("cache"))
        .env("HELM_CONFIG_HOME", scratch.join("config"))
        .env("HELM_DATA_HOME", scratch.join("data"))
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm template of the chart's RBAC: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    let client = plane.admin_client();
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        if let Some(object) = Option::<DynamicObject>::deserialize(document).expect("valid YAML")
            && object
                .types
                .as_ref()
                .is_some_and(|t| RBAC_KINDS.contains(&t.kind.as_str()))
        {
            objects.push(object);
        }
    }
    // Namespaces before what lives in them.
    objects.sort_by_key(|o| o.types.as_ref().is_none_or(|t| t.kind != "Namespace"));
    for object in objects {
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("a group/version/kind");
        let resource = ApiResource::from_gvk(&gvk);
        let name = object.metadata.name.clone().expect("a name");
        let api: Api<DynamicObject> = match &object.metadata.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply(TEST_FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
    }
}

/// A kubeconfig (YAML) authenticated as `component`'s ServiceAccount in `namespace`.
pub async fn component_kubeconfig(
    plane: &ControlPlane,
    namespace: &str,
    component: &str,
) -> String {
    plane
        .service_account_kubeconfig(namespace, &service_account(component))
        .await
}

/// A client authenticated as `component`'s ServiceAccount in `namespace`.
pub async fn component_client(
    plane: &ControlPlane,
    namespace: &str,
    component: &str,
) -> kube::Client {
    plane
        .service_account_client(namespace, &service_account(component))
        .await
}

/// Fails the test with the server's own 403s when `component` made calls the chart's RBAC does
/// not grant.
pub fn assert_nothing_forbidden(plane: &ControlPlane, namespace: &str, component: &str) {
    let forbidden = plane.forbidden(namespace, &service_account(component));
    assert!(
        forbidden.is_empty(),
        "the API server refused calls of {component} (the chart's RBAC does not grant them):\n{}",
        forbidden.join("\n")
    );
}
