//! The rendered RBAC grants each component's ServiceAccount exactly the Kubernetes API calls its
//! binary lists in `<crate>/api-calls.yaml` — no more, no less, and in the namespace it lists
//! (its own, the peer keys' or the server keys', as the chart tells the binaries) — and nothing
//! else in the chart grants anything.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

use crate::support::{
    NAMESPACE, component, find, kind_of, name_of, of_kind, render, render_every_option_on,
    repo_root,
};

/// One entry of an `api-calls.yaml`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApiCall {
    api_group: String,
    resource: String,
    verbs: Vec<String>,
    scope: String,
}

/// One permission: (scope, API group, resource, verb). Scope is `namespace` (the release's),
/// `peer-keys`, `server-keys` or `cluster`.
type Grant = (String, String, String, String);

const SCOPES: [&str; 4] = ["namespace", "peer-keys", "server-keys", "cluster"];

const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The calls a crate lists, as grants; a clear failure when the file is missing or malformed.
fn listed_calls(crate_dir: &str) -> BTreeSet<Grant> {
    let path = repo_root().join(crate_dir).join("api-calls.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{crate_dir}/api-calls.yaml cannot be read ({e}): the {crate_dir} binary must list the \
             Kubernetes API calls it makes there, and the chart's RBAC is tested against it"
        )
    });
    let calls: Vec<ApiCall> = serde_yaml::from_str::<Option<Vec<ApiCall>>>(&text)
        .unwrap_or_else(|e| panic!("{crate_dir}/api-calls.yaml does not parse: {e}"))
        .unwrap_or_default();
    let mut grants = BTreeSet::new();
    for call in calls {
        assert!(
            SCOPES.contains(&call.scope.as_str()),
            "{crate_dir}/api-calls.yaml: scope {:?} of {} is none of {SCOPES:?}",
            call.scope,
            call.resource
        );
        assert!(
            !call.verbs.is_empty(),
            "{crate_dir}/api-calls.yaml: {} lists no verbs",
            call.resource
        );
        for verb in call.verbs {
            assert!(
                VERBS.contains(&verb.as_str()),
                "{crate_dir}/api-calls.yaml: unknown verb {verb:?}"
            );
            grants.insert((
                call.scope.clone(),
                call.api_group.clone(),
                call.resource.clone(),
                verb,
            ));
        }
    }
    grants
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// The value of the environment variable `variable` of the container of `kind` `name`.
fn env_value<'a>(docs: &'a [Value], kind: &str, name: &str, variable: &str) -> &'a str {
    find(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == variable)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{kind} {name} sets no {variable}"))
}

/// The scope a namespaced binding grants in: the release's namespace, or the key namespace the
/// chart tells the binaries (the operator's `WGSUB_KEYS_NAMESPACE`, the node-agent's
/// `WGSUB_SERVER_KEYS_NAMESPACE`).
fn scope_of_namespace(docs: &[Value], namespace: &str) -> &'static str {
    let peer_keys = env_value(
        docs,
        "Deployment",
        &component("operator"),
        "WGSUB_KEYS_NAMESPACE",
    );
    let server_keys = env_value(
        docs,
        "DaemonSet",
        &component("node-agent"),
        "WGSUB_SERVER_KEYS_NAMESPACE",
    );
    if namespace == NAMESPACE {
        "namespace"
    } else if namespace == peer_keys {
        "peer-keys"
    } else if namespace == server_keys {
        "server-keys"
    } else {
        panic!("a binding in namespace {namespace}, which no binary is told about")
    }
}

/// What the rendered bindings grant the ServiceAccount `account` of the release's namespace.
fn rendered_grants(docs: &[Value], account: &str) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|d| matches!(kind_of(d), "RoleBinding" | "ClusterRoleBinding"))
    {
        let bound = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == NAMESPACE
            });
        if !bound {
            continue;
        }
        let scope = if kind_of(binding) == "RoleBinding" {
            scope_of_namespace(docs, binding["metadata"]["namespace"].as_str().unwrap())
        } else {
            "cluster"
        };
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role_name = binding["roleRef"]["name"].as_str().unwrap();
        let role = find_in(
            docs,
            role_kind,
            role_name,
            &binding["metadata"]["namespace"],
        );
        for rule in role["rules"].as_array().into_iter().flatten() {
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{role_name} grants non-resource URLs"
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "{role_name} grants a wildcard"
                        );
                        grants.insert((scope.to_owned(), group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    grants
}

/// The one document of `kind` named `name` in `namespace` (null for cluster-scoped ones).
fn find_in<'a>(docs: &'a [Value], kind: &str, name: &str, namespace: &Value) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            kind_of(d) == kind && name_of(d) == name && &d["metadata"]["namespace"] == namespace
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name} in {namespace}");
    found[0]
}

fn assert_rbac_matches(crate_dir: &str, component_name: &str) {
    let listed = listed_calls(crate_dir);
    let elsewhere = render(&[
        "keyNamespaces.peers=device-keys",
        "keyNamespaces.servers=vpn-node-keys",
    ]);
    for docs in [render(&[]), render_every_option_on(), elsewhere] {
        let granted = rendered_grants(&docs, &component(component_name));
        let missing: Vec<&Grant> = listed.difference(&granted).collect();
        let extra: Vec<&Grant> = granted.difference(&listed).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "RBAC of {component_name} differs from {crate_dir}/api-calls.yaml (scope, group, resource, verb):\n\
             listed but not granted: {missing:#?}\ngranted but not listed: {extra:#?}"
        );
    }
}

#[test]
fn operator_rbac_grants_exactly_its_api_calls() {
    assert_rbac_matches("operator", "operator");
}

#[test]
fn api_rbac_grants_exactly_its_api_calls() {
    assert_rbac_matches("api", "api");
}

#[test]
fn bot_rbac_grants_exactly_its_api_calls() {
    assert_rbac_matches("bot", "bot");
}

#[test]
fn node_agent_rbac_grants_exactly_its_api_calls() {
    assert_rbac_matches("node-agent", "node-agent");
}

#[test]
fn every_binding_binds_one_component_account_and_the_migrations_job_gets_none() {
    let docs = render_every_option_on();
    // The four components, and the key migration hook (charts/wgsub/templates/migrate-keys.yaml).
    let accounts: BTreeSet<String> = ["operator", "api", "bot", "node-agent", "migrate-keys"]
        .map(component)
        .into();
    for binding in docs
        .iter()
        .filter(|d| matches!(kind_of(d), "RoleBinding" | "ClusterRoleBinding"))
    {
        let subjects = binding["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1, "{} binds one subject", name_of(binding));
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert!(
            accounts.contains(subjects[0]["name"].as_str().unwrap()),
            "{}",
            name_of(binding)
        );
        // A namespaced binding never pulls in a ClusterRole's cluster-wide rules by accident.
        if kind_of(binding) == "RoleBinding" {
            assert_eq!(binding["roleRef"]["kind"], "Role", "{}", name_of(binding));
        }
    }
    let job = find(&docs, "Job", &component("migrate"));
    assert!(job["spec"]["template"]["spec"]["serviceAccountName"].is_null());
    assert_eq!(
        job["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    // Cluster-scoped objects carry the namespace in their name so two releases do not collide.
    for cluster in of_kind(&docs, "ClusterRole")
        .into_iter()
        .chain(of_kind(&docs, "ClusterRoleBinding"))
    {
        assert!(
            name_of(cluster).starts_with(&format!("{NAMESPACE}-")),
            "{}",
            name_of(cluster)
        );
    }
}

#[test]
fn the_comparison_sees_a_missing_or_extra_verb() {
    let docs = render(&[]);
    let account = component("node-agent");
    let before = rendered_grants(&docs, &account);
    let mut edited = docs.clone();
    let role = edited
        .iter_mut()
        .find(|d| {
            d["kind"] == "Role"
                && d["metadata"]["name"] == account.as_str()
                && d["metadata"]["namespace"] == NAMESPACE
        })
        .unwrap();
    role["rules"][0]["verbs"]
        .as_array_mut()
        .unwrap()
        .push("delete".into());
    let after = rendered_grants(&edited, &account);
    assert_eq!(after.difference(&before).count(), 1);
}
