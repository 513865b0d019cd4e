//! The rules every rendered pod must follow, as a pure function over rendered manifests, and the
//! tests that the chart follows them with default values and with every option on.
//!
//! Every container: not privileged, no privilege escalation, read-only root filesystem, all
//! capabilities dropped, CPU and memory requests and a memory limit, non-root, and (except Jobs and
//! CronJobs, which run to completion) liveness, readiness and startup probes on a declared port.
//! The operator's, the api's and the bot's replicas prefer different nodes unless given their own
//! affinity.
//! The one stated exception is the node-agent: it owns the host's WireGuard interface, so it runs
//! in the host network namespace as uid 0 with exactly one added capability, NET_ADMIN (a
//! non-root process does not get added capabilities in its effective set), and mounts exactly
//! two host paths: the TUN device and the host's iptables lock.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};

use crate::support::{component, kind_of, name_of, render, render_every_option_on, typed};

/// A pod template found in a rendered workload.
struct Workload {
    kind: String,
    name: String,
    spec: PodSpec,
}

fn workloads(docs: &[Value]) -> Vec<Workload> {
    let mut found = Vec::new();
    for doc in docs {
        let spec = match kind_of(doc) {
            "Deployment" => typed::<Deployment>(doc).spec.and_then(|s| s.template.spec),
            "DaemonSet" => typed::<DaemonSet>(doc).spec.and_then(|s| s.template.spec),
            "Job" => typed::<Job>(doc).spec.and_then(|s| s.template.spec),
            "CronJob" => typed::<CronJob>(doc)
                .spec
                .and_then(|s| s.job_template.spec)
                .and_then(|s| s.template.spec),
            "StatefulSet" | "ReplicaSet" | "Pod" => {
                panic!("the rules do not know {} yet", kind_of(doc))
            }
            _ => continue,
        };
        found.push(Workload {
            kind: kind_of(doc).to_owned(),
            name: name_of(doc).to_owned(),
            spec: spec.unwrap_or_else(|| panic!("{} has no pod spec", name_of(doc))),
        });
    }
    found
}

/// Every rule a rendered manifest set breaks, one line each; empty when all hold.
pub fn violations(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let node_agent = component("node-agent");
    for workload in workloads(docs) {
        let is_node_agent = workload.kind == "DaemonSet" && workload.name == node_agent;
        let runs_to_completion = matches!(workload.kind.as_str(), "Job" | "CronJob");
        check_pod(&workload, is_node_agent, &mut out);
        let containers = workload
            .spec
            .containers
            .iter()
            .chain(workload.spec.init_containers.iter().flatten());
        for container in containers {
            let at = format!("{} {}/{}", workload.kind, workload.name, container.name);
            check_container(
                &workload.spec,
                container,
                is_node_agent,
                runs_to_completion,
                &at,
                &mut out,
            );
        }
    }
    out
}

fn check_pod(workload: &Workload, is_node_agent: bool, out: &mut Vec<String>) {
    let at = format!("{} {}", workload.kind, workload.name);
    let spec = &workload.spec;
    let host_network = spec.host_network.unwrap_or(false);
    if host_network != is_node_agent {
        out.push(format!(
            "{at}: hostNetwork is {host_network}; only the node-agent uses the host network"
        ));
    }
    if spec.host_pid.unwrap_or(false) || spec.host_ipc.unwrap_or(false) {
        out.push(format!("{at}: uses the host PID or IPC namespace"));
    }
    let host_paths: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.as_str()))
        .collect();
    let allowed: &[&str] = if is_node_agent {
        &["/dev/net/tun", "/run/xtables.lock"]
    } else {
        &[]
    };
    if host_paths != allowed {
        out.push(format!(
            "{at}: host paths {host_paths:?}, allowed {allowed:?}"
        ));
    }
    let seccomp = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    if seccomp != Some("RuntimeDefault") {
        out.push(format!(
            "{at}: pod seccompProfile is {seccomp:?}, want RuntimeDefault"
        ));
    }
    let runs_to_completion = matches!(workload.kind.as_str(), "Job" | "CronJob");
    if !runs_to_completion && spec.service_account_name.is_none() {
        out.push(format!(
            "{at}: runs as the namespace's default ServiceAccount"
        ));
    }
    if runs_to_completion
        && spec.service_account_name.is_none()
        && spec.automount_service_account_token != Some(false)
    {
        out.push(format!(
            "{at}: a Job without a ServiceAccount of its own makes no API calls and must not mount a token"
        ));
    }
}

fn check_container(
    pod: &PodSpec,
    container: &Container,
    is_node_agent: bool,
    runs_to_completion: bool,
    at: &str,
    out: &mut Vec<String>,
) {
    let pod_sc = pod.security_context.as_ref();
    let Some(sc) = container.security_context.as_ref() else {
        out.push(format!("{at}: no securityContext"));
        return;
    };
    if sc.privileged != Some(false) {
        out.push(format!(
            "{at}: privileged is {:?}, must be false",
            sc.privileged
        ));
    }
    if sc.allow_privilege_escalation != Some(false) {
        out.push(format!("{at}: allowPrivilegeEscalation must be false"));
    }
    if sc.read_only_root_filesystem != Some(true) {
        out.push(format!("{at}: readOnlyRootFilesystem must be true"));
    }
    let caps = sc.capabilities.as_ref();
    let dropped = caps.and_then(|c| c.drop.clone()).unwrap_or_default();
    if dropped != ["ALL"] {
        out.push(format!(
            "{at}: capabilities.drop is {dropped:?}, must be [ALL]"
        ));
    }
    let added = caps.and_then(|c| c.add.clone()).unwrap_or_default();
    let allowed_added: &[&str] = if is_node_agent { &["NET_ADMIN"] } else { &[] };
    if added != allowed_added {
        out.push(format!(
            "{at}: capabilities.add is {added:?}, allowed {allowed_added:?}"
        ));
    }
    let run_as_non_root = sc
        .run_as_non_root
        .or(pod_sc.and_then(|s| s.run_as_non_root));
    let run_as_user = sc.run_as_user.or(pod_sc.and_then(|s| s.run_as_user));
    if is_node_agent {
        // The stated exception: uid 0 so that NET_ADMIN is effective; nothing else added.
        if run_as_user != Some(0) || run_as_non_root != Some(false) {
            out.push(format!(
                "{at}: the node-agent must state that it runs as uid 0 (runAsUser {run_as_user:?}, runAsNonRoot {run_as_non_root:?})"
            ));
        }
    } else {
        if run_as_non_root != Some(true) {
            out.push(format!("{at}: runAsNonRoot must be true"));
        }
        if run_as_user.is_none_or(|uid| uid == 0) {
            out.push(format!(
                "{at}: runAsUser must be a non-zero uid, is {run_as_user:?}"
            ));
        }
    }
    let resources = container.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    for name in ["cpu", "memory"] {
        if requests.is_none_or(|r| !r.contains_key(name)) {
            out.push(format!("{at}: no {name} request"));
        }
    }
    if limits.is_none_or(|l| !l.contains_key("memory")) {
        out.push(format!("{at}: no memory limit"));
    }
    let ports: Vec<&str> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.as_deref())
        .collect();
    for (what, probe) in [
        ("liveness", container.liveness_probe.as_ref()),
        ("readiness", container.readiness_probe.as_ref()),
        ("startup", container.startup_probe.as_ref()),
    ] {
        match (probe, runs_to_completion) {
            (None, false) => out.push(format!("{at}: no {what} probe")),
            (Some(_), true) => out.push(format!(
                "{at}: a run-to-completion container has a {what} probe"
            )),
            (None, true) => {}
            (Some(probe), false) => {
                let port = probe
                    .http_get
                    .as_ref()
                    .map(|h| serde_json::to_value(&h.port).unwrap());
                match port {
                    Some(Value::String(name)) if ports.contains(&name.as_str()) => {}
                    other => out.push(format!(
                        "{at}: {what} probe must be an httpGet on a named container port ({ports:?}), is {other:?}"
                    )),
                }
            }
        }
    }
}

#[test]
fn default_values_render_pods_that_follow_every_rule() {
    let docs = render(&[]);
    let found = violations(&docs);
    assert!(found.is_empty(), "rule violations:\n{}", found.join("\n"));
    assert_eq!(
        workloads(&docs).len(),
        6,
        "operator, api, bot, node-agent, the migrations Job and the key-migration hook Job"
    );
}

#[test]
fn every_option_on_renders_pods_that_follow_every_rule() {
    let docs = render_every_option_on();
    let found = violations(&docs);
    assert!(found.is_empty(), "rule violations:\n{}", found.join("\n"));
}

/// Applies `edit` to the JSON of the named workload's first container.
fn with_container_edit(name: &str, edit: impl Fn(&mut Value)) -> Vec<Value> {
    let mut docs = render(&[]);
    let doc = docs
        .iter_mut()
        .find(|d| name_of(d) == name && d["spec"]["template"].is_object())
        .unwrap_or_else(|| panic!("no workload {name}"));
    edit(&mut doc["spec"]["template"]["spec"]["containers"][0]);
    docs
}

fn assert_caught(docs: &[Value], fragment: &str) {
    let found = violations(docs);
    assert!(
        found.iter().any(|line| line.contains(fragment)),
        "expected a violation containing {fragment:?}, got {found:#?}"
    );
}

#[test]
fn the_rules_catch_a_privileged_or_root_or_writable_container() {
    let api = component("api");
    assert_caught(
        &with_container_edit(&api, |c| c["securityContext"]["privileged"] = json!(true)),
        "privileged",
    );
    assert_caught(
        &with_container_edit(&api, |c| {
            c["securityContext"]["runAsNonRoot"] = json!(false)
        }),
        "runAsNonRoot",
    );
    assert_caught(
        &with_container_edit(&api, |c| {
            c["securityContext"]["readOnlyRootFilesystem"] = json!(false)
        }),
        "readOnlyRootFilesystem",
    );
    assert_caught(
        &with_container_edit(&api, |c| {
            c["securityContext"]["capabilities"]["drop"] = json!([])
        }),
        "capabilities.drop",
    );
    assert_caught(
        &with_container_edit(&api, |c| {
            c["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"])
        }),
        "capabilities.add",
    );
}

#[test]
fn the_rules_catch_missing_probes_and_resources() {
    let operator = component("operator");
    assert_caught(
        &with_container_edit(&operator, |c| {
            c.as_object_mut()
                .unwrap()
                .remove("livenessProbe")
                .map(drop)
                .unwrap()
        }),
        "no liveness probe",
    );
    assert_caught(
        &with_container_edit(&operator, |c| {
            c.as_object_mut()
                .unwrap()
                .remove("readinessProbe")
                .map(drop)
                .unwrap()
        }),
        "no readiness probe",
    );
    assert_caught(
        &with_container_edit(&operator, |c| {
            c.as_object_mut()
                .unwrap()
                .remove("startupProbe")
                .map(drop)
                .unwrap()
        }),
        "no startup probe",
    );
    assert_caught(
        &with_container_edit(&operator, |c| {
            c["readinessProbe"]["httpGet"]["port"] = json!("nope")
        }),
        "named container port",
    );
    assert_caught(
        &with_container_edit(&operator, |c| c["resources"] = json!({})),
        "no memory limit",
    );
    assert_caught(
        &with_container_edit(&operator, |c| {
            c["resources"]["requests"] = json!({"memory": "1Mi"})
        }),
        "no cpu request",
    );
}

#[test]
fn the_node_agent_exception_is_narrow() {
    let agent = component("node-agent");
    assert_caught(
        &with_container_edit(&agent, |c| {
            c["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN", "SYS_ADMIN"])
        }),
        "capabilities.add",
    );
    assert_caught(
        &with_container_edit(&agent, |c| c["securityContext"]["privileged"] = json!(true)),
        "privileged",
    );
    assert_caught(
        &with_container_edit(&agent, |c| {
            c["securityContext"]["readOnlyRootFilesystem"] = json!(false)
        }),
        "readOnlyRootFilesystem",
    );
    // The same settings on any other workload are refused.
    let mut docs = render(&[]);
    let api = docs
        .iter_mut()
        .find(|d| d["kind"] == "Deployment" && name_of(d) == component("api"))
        .unwrap();
    api["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    assert_caught(&docs, "only the node-agent uses the host network");
}

#[test]
fn the_node_agent_runs_on_the_host_network_with_net_admin_and_the_tun_device() {
    let docs = render_every_option_on();
    let agent = workloads(&docs)
        .into_iter()
        .find(|w| w.name == component("node-agent"))
        .unwrap();
    assert_eq!(agent.kind, "DaemonSet");
    assert_eq!(agent.spec.host_network, Some(true));
    assert_eq!(
        agent.spec.dns_policy.as_deref(),
        Some("ClusterFirstWithHostNet")
    );
    let container = &agent.spec.containers[0];
    let env = |name: &str| {
        container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .cloned()
    };
    let node_name = env("WGSUB_NODE_NAME").expect("WGSUB_NODE_NAME");
    assert_eq!(
        node_name
            .value_from
            .and_then(|v| v.field_ref)
            .map(|f| f.field_path)
            .as_deref(),
        Some("spec.nodeName"),
        "the node name comes from the downward API"
    );
    assert_eq!(
        env("WGSUB_BACKEND").and_then(|e| e.value).as_deref(),
        Some("userspace")
    );
    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/dev/net/tun"), "{mounts:?}");
    assert!(
        mounts.contains(&"/var/run/wireguard"),
        "wireguard-go's UAPI socket directory is writable: {mounts:?}"
    );
    let tun = agent
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "dev-net-tun")
        .unwrap();
    assert_eq!(
        tun.host_path.as_ref().and_then(|h| h.type_.as_deref()),
        Some("CharDevice")
    );
    assert_eq!(
        agent
            .spec
            .node_selector
            .as_ref()
            .and_then(|s| s.get("wgsub.io/vpn"))
            .map(String::as_str),
        Some("enabled"),
        "nodeSelector comes from values"
    );
}

#[test]
fn the_replicas_of_operator_api_and_bot_prefer_different_nodes_unless_given_an_affinity() {
    let docs = render(&["bot.replicas=2"]);
    for name in ["operator", "api", "bot"] {
        let deployment: Deployment = typed(
            docs.iter()
                .find(|d| kind_of(d) == "Deployment" && name_of(d) == component(name))
                .unwrap_or_else(|| panic!("no Deployment {name}")),
        );
        let spec = deployment.spec.unwrap();
        let labels = spec.selector.match_labels.clone().unwrap();
        let preferred = spec
            .template
            .spec
            .unwrap()
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .unwrap_or_else(|| panic!("{name}: no preferred pod anti-affinity"));
        assert_eq!(preferred.len(), 1, "{name}");
        let term = &preferred[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname", "{name}");
        assert_eq!(
            term.label_selector.as_ref().unwrap().match_labels.as_ref(),
            Some(&labels),
            "{name}: the anti-affinity selects the component's own pods"
        );
        if name == "bot" {
            assert_eq!(spec.replicas, Some(2));
        }
    }
    let given = render(&[
        "api.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=wgsub.io/api",
        "api.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
    ]);
    let api = given
        .iter()
        .find(|d| kind_of(d) == "Deployment" && name_of(d) == component("api"))
        .unwrap();
    let affinity = &api["spec"]["template"]["spec"]["affinity"];
    assert!(affinity["podAntiAffinity"].is_null(), "{affinity}");
    assert!(affinity["nodeAffinity"].is_object(), "{affinity}");
}
