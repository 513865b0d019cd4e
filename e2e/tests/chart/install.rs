//! The chart installed for real: `helm install`, `helm upgrade` and `helm uninstall` of
//! `charts/wgsub` with the real `helm` (v4, `WGSUB_HELM`) and `kubectl` (`WGSUB_KUBECTL`)
//! against this process's real API server (`wgsub_testkit::envtest`), each release in a
//! namespace of its own; and the CRD install and upgrade sequence `docs/quick-start.md`
//! documents, run command for command.
//!
//! There is no kubelet: installs skip the hooks (`--no-hooks`: the migrations Job would never
//! finish) and wait for no pod. The hooks are still shown to the server, which must admit them
//! (a server-side dry run).
//!
//! The CRDs are cluster-wide, so every test of this process shares them: the first install
//! creates them, later installs find them. Every test here holds [`CLUSTER_WIDE`] while it
//! runs, and a test that changes the CRDs puts the chart's own back when it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};
use wgsub_testkit::envtest::ControlPlane;

use crate::support::{
    NAMESPACE, RELEASE, chart_dir, every_option_on, helm_command, kind_of, kubectl, name_of,
    parse_documents, repo_root, run_helm,
};

/// Held by every test of this module: the CRDs (and the ServiceMonitor CRD) are cluster-wide,
/// and helm's and kubectl's server-side applies of them must not interleave.
static CLUSTER_WIDE: Mutex<()> = Mutex::new(());

fn cluster_wide() -> MutexGuard<'static, ()> {
    CLUSTER_WIDE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Prometheus Operator's ServiceMonitor CRD, cut down to the fields the chart sets, with
/// the upstream types and the upstream pattern of `interval`, so that the server can admit (or
/// refuse) the chart's ServiceMonitors. The Prometheus Operator itself is not installed.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [selector]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval:
                        type: string
                        pattern: ^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$
"#;

/// The real control plane as a user reaches it: helm and kubectl with its admin kubeconfig.
struct Cluster {
    kubeconfig: PathBuf,
}

impl Cluster {
    fn new(plane: &ControlPlane) -> Self {
        Self {
            kubeconfig: plane.admin_kubeconfig_path(),
        }
    }

    fn helm(&self, args: &[&str]) -> Output {
        helm_command(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("helm runs")
    }

    /// kubectl with `args`, `stdin` piped in when given.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(kubectl())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "KUBECACHEDIR",
                std::env::temp_dir().join("wgsub-kube-cache"),
            )
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(text) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("kubectl's stdin")
                .write_all(text.as_bytes())
                .expect("kubectl reads its stdin");
        }
        child.wait_with_output().expect("kubectl runs")
    }

    /// `kubectl get <args> -o json`, which must succeed.
    fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend(args);
        all.extend(["-o", "json"]);
        let out = succeeded(&all.join(" "), self.kubectl(&all, None));
        serde_json::from_str(&out).expect("kubectl prints JSON")
    }

    /// Whether `kubectl get <args>` finds the object.
    fn exists(&self, args: &[&str]) -> bool {
        let mut all = vec!["get"];
        all.extend(args);
        let out = self.kubectl(&all, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("NotFound"),
            "kubectl get {args:?}: {stderr}"
        );
        out.status.success()
    }
}

/// The stdout of a command that must have succeeded; otherwise fails with its stderr.
fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The stderr of a command that must have failed.
fn failed(what: &str, out: Output) -> String {
    assert!(
        !out.status.success(),
        "{what} succeeded, expected a failure:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `["--set", s1, "--set", s2, ...]`.
fn set_args(sets: &[&str]) -> Vec<String> {
    sets.iter()
        .flat_map(|set| ["--set".to_owned(), (*set).to_owned()])
        .collect()
}

/// `helm <verb> wgsub <chart> --namespace <ns> --no-hooks <extra...> --set ...`.
fn helm_release(
    cluster: &Cluster,
    verb: &str,
    chart: &Path,
    namespace: &str,
    extra: &[&str],
    sets: &[&str],
) -> Output {
    let mut args: Vec<String> = [
        verb,
        RELEASE,
        path_str(chart),
        "--namespace",
        namespace,
        "--no-hooks",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|e| (*e).to_owned()));
    args.extend(set_args(sets));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.helm(&args)
}

/// What `helm template` renders for a release in `namespace`: the CRDs and every object but the
/// hooks (`hooks == false`), or the hooks only (`hooks == true`).
fn rendered(namespace: &str, sets: &[&str], hooks: bool) -> Vec<Value> {
    let chart = chart_dir();
    let mut args: Vec<String> = [
        "template",
        RELEASE,
        path_str(&chart),
        "--namespace",
        namespace,
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(set_args(sets));
    if !hooks {
        args.extend(["--no-hooks".to_owned(), "--include-crds".to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = succeeded("helm template", run_helm(&args));
    parse_documents(&out)
        .into_iter()
        .filter(|doc| hooks != doc["metadata"]["annotations"]["helm.sh/hook"].is_null())
        .collect()
}

/// `kind/name` of each document, sorted.
fn identities(docs: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = docs
        .iter()
        .map(|doc| format!("{}/{}", kind_of(doc), name_of(doc)))
        .collect();
    ids.sort();
    ids
}

/// Writes `docs` as one multi-document manifest and returns its path.
fn manifest(dir: &Path, name: &str, docs: &[Value]) -> PathBuf {
    let text: Vec<String> = docs
        .iter()
        .map(|doc| serde_yaml::to_string(doc).expect("YAML"))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, text.join("\n---\n")).expect("the manifest is written");
    path
}

/// Every object the chart renders with `sets` (CRDs included, hooks left out) is on the server,
/// in `namespace` when namespaced (the Roles and bindings of the key Secrets in the key
/// namespaces the chart creates): `kubectl get -f` of the rendered manifest finds each one.
fn assert_rendered_objects_exist(cluster: &Cluster, namespace: &str, sets: &[&str]) {
    let expected = rendered(namespace, sets, false);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = manifest(dir.path(), "rendered.yaml", &expected);
    let found = cluster.get(&["-f", path_str(&file)]);
    let found: Vec<Value> = match found["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![found],
    };
    assert_eq!(identities(&found), identities(&expected));
    let key_namespaces = [
        format!("{namespace}-keys"),
        format!("{namespace}-server-keys"),
    ];
    for object in &found {
        if let Some(ns) = object["metadata"]["namespace"].as_str() {
            let keys_rbac = matches!(kind_of(object), "Role" | "RoleBinding")
                && key_namespaces.iter().any(|k| k == ns);
            assert!(
                ns == namespace || keys_rbac,
                "{}/{} in {ns}",
                kind_of(object),
                name_of(object)
            );
        }
    }
}

/// The server admits every hook the chart renders with `sets` (a server-side dry run: there is
/// no kubelet to run the migrations Job, so installs skip the hooks).
fn assert_hooks_admitted(cluster: &Cluster, namespace: &str, sets: &[&str]) {
    let hooks = rendered(namespace, sets, true);
    assert!(
        hooks.iter().any(|doc| kind_of(doc) == "Job"),
        "the migrations Job is a hook: {:?}",
        identities(&hooks)
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = manifest(dir.path(), "hooks.yaml", &hooks);
    succeeded(
        "kubectl create --dry-run=server of the hooks",
        cluster.kubectl(&["create", "--dry-run=server", "-f", path_str(&file)], None),
    );
}

fn release_status(cluster: &Cluster, namespace: &str) -> Value {
    let out = cluster.helm(&["status", RELEASE, "--namespace", namespace, "-o", "json"]);
    serde_json::from_str(&succeeded("helm status", out)).expect("helm prints JSON")
}

/// The value of the environment variable `name` of the first container of Deployment `deployment`.
fn deployment_env(deployment: &Value, name: &str) -> Value {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("an env list")
        .iter()
        .find(|var| var["name"] == name)
        .map(|var| var["value"].clone())
        .unwrap_or_else(|| panic!("no {name} in {}", name_of(deployment)))
}

fn component(name: &str) -> String {
    format!("{RELEASE}-{name}")
}

fn crd_dir(chart: &Path) -> String {
    chart.join("crds").display().to_string()
}

/// The chart's CRDs, applied the documented way: `kubectl apply --server-side --force-conflicts`.
fn apply_crds_documented_way(cluster: &Cluster, chart: &Path) {
    let dir = crd_dir(chart);
    succeeded(
        "kubectl apply --server-side --force-conflicts -f crds/",
        cluster.kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", &dir],
            None,
        ),
    );
    succeeded(
        "kubectl wait for the CRDs",
        cluster.kubectl(&["wait", "--for=condition=Established", "-f", &dir], None),
    );
}

/// Puts the chart's own CRDs back when a test that changed them ends (even by a panic), so the
/// other tests' installs find what the chart carries.
struct RestoreChartCrds<'a>(&'a Cluster);

impl Drop for RestoreChartCrds<'_> {
    fn drop(&mut self) {
        let out = self.0.kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &crd_dir(&chart_dir()),
            ],
            None,
        );
        if !out.status.success() {
            eprintln!(
                "restoring the chart's CRDs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A copy of the chart as its next version would ship it: the WgServer CRD gains a printer
/// column `Port` and a new description. Returns the folder holding the copy and the chart in it.
fn next_chart_version() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let chart = dir.path().join("wgsub");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(chart_dir())
        .arg(&chart)
        .status()
        .expect("cp runs");
    assert!(copied.success(), "copying the chart");
    let crd_path = chart.join("crds").join("wgservers.yaml");
    let text = std::fs::read_to_string(&crd_path).expect("the WgServer CRD");
    let mut crd: Value = serde_yaml::from_str(&text).expect("the CRD is YAML");
    let version = &mut crd["spec"]["versions"][0];
    version["additionalPrinterColumns"]
        .as_array_mut()
        .expect("printer columns")
        .push(json!({"name": "Port", "type": "integer", "jsonPath": ".spec.listenPort"}));
    version["schema"]["openAPIV3Schema"]["description"] =
        json!("One WireGuard endpoint: a node and its interface (next chart version).");
    std::fs::write(
        &crd_path,
        serde_yaml::to_string(&crd).expect("the CRD as YAML"),
    )
    .expect("the new CRD is written");
    (dir, chart)
}

/// The WgServer CRD on the server has the next version's `Port` column and description.
fn assert_next_version_crd(cluster: &Cluster) {
    let crd = cluster.get(&["crd", "wgservers.wgsub.io"]);
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(columns.contains(&"Port"), "columns: {columns:?}");
    assert_eq!(
        version["schema"]["openAPIV3Schema"]["description"],
        "One WireGuard endpoint: a node and its interface (next chart version)."
    );
}

const DEFAULT_SERVER: [&str; 2] = [
    "defaultServer.create=true",
    "defaultServer.endpoint=vpn.example.test:51820",
];

#[tokio::test]
async fn installs_with_default_values_and_its_own_crds() {
    let plane = ControlPlane::shared();
    let namespace = plane.namespace("chart-default").await;
    let _cluster_wide = cluster_wide();
    let cluster = Cluster::new(plane);

    succeeded(
        "helm install with default values",
        helm_release(&cluster, "install", &chart_dir(), &namespace, &[], &[]),
    );

    assert_eq!(
        release_status(&cluster, &namespace)["info"]["status"],
        "deployed"
    );
    assert_rendered_objects_exist(&cluster, &namespace, &[]);
    assert_hooks_admitted(&cluster, &namespace, &[]);
    let operator = cluster.get(&["-n", &namespace, "deployment", &component("operator")]);
    assert_eq!(operator["spec"]["replicas"], 2);
}

#[tokio::test]
async fn installs_with_every_option_the_server_can_admit() {
    let plane = ControlPlane::shared();
    let namespace = plane.namespace("chart-all").await;
    let _cluster_wide = cluster_wide();
    let cluster = Cluster::new(plane);
    // ServiceMonitors need the Prometheus Operator's CRD; everything else is built in or ours.
    succeeded(
        "applying the ServiceMonitor CRD",
        cluster.kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(SERVICE_MONITOR_CRD),
        ),
    );
    succeeded(
        "waiting for the ServiceMonitor CRD",
        cluster.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd/servicemonitors.monitoring.coreos.com",
            ],
            None,
        ),
    );
    let sets = every_option_on();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();

    succeeded(
        "helm install with every option on",
        helm_release(&cluster, "install", &chart_dir(), &namespace, &[], &sets),
    );

    assert_rendered_objects_exist(&cluster, &namespace, &sets);
    assert_hooks_admitted(&cluster, &namespace, &sets);
    let kinds = identities(&rendered(&namespace, &sets, false));
    for kind in [
        "Ingress/",
        "ServiceMonitor/",
        "NetworkPolicy/",
        "PodDisruptionBudget/",
        "WgServer/",
        "ConfigMap/wgsub-dashboard",
        "Service/wgsub-bot-webhook",
    ] {
        assert!(
            kinds.iter().any(|id| id.starts_with(kind)),
            "every option on renders {kind}: {kinds:?}"
        );
    }
    // The CEL rules of the WgServer CRD admitted the chart's server as the values describe it.
    let server = cluster.get(&["-n", &namespace, "wgserver", "main"]);
    assert_eq!(server["spec"]["addressPool6"], "fd00:8::/64");
    assert_eq!(server["spec"]["nodeName"], "vpn-1");
    assert_eq!(server["spec"]["nat"]["clientToClient"], true);
    assert_eq!(
        server["spec"]["nat"]["blockedDestinations"],
        json!(["198.51.100.0/24", "2001:db8:100::/48"])
    );
    // The server admitted the Ingress with only the public paths.
    let ingress = cluster.get(&["-n", &namespace, "ingress", &component("api")]);
    let paths: Vec<&str> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .expect("the Ingress's paths")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(paths, ["/api/", "/miniapp/", "/telegram/updates"]);
    // A network with host bits set matches the values schema's pattern; the CRD's CEL rule
    // refuses it.
    let mut sets = sets;
    sets.extend([
        "defaultServer.name=unmasked",
        "defaultServer.nat.blockedDestinations={198.51.100.7/24}",
    ]);
    let server = rendered(&namespace, &sets, false)
        .into_iter()
        .filter(|doc| kind_of(doc) == "WgServer")
        .collect::<Vec<_>>();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let file = manifest(dir.path(), "unmasked.yaml", &server);
    let out = cluster.kubectl(&["create", "--dry-run=server", "-f", path_str(&file)], None);
    assert!(!out.status.success(), "the server admitted 198.51.100.7/24");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("every blockedDestinations entry must be a network in CIDR form"),
        "{stderr}"
    );
}

#[tokio::test]
async fn upgrade_with_changed_values_changes_the_objects_on_the_server() {
    let plane = ControlPlane::shared();
    let namespace = plane.namespace("chart-upgrade").await;
    let _cluster_wide = cluster_wide();
    let cluster = Cluster::new(plane);
    succeeded(
        "helm install",
        helm_release(
            &cluster,
            "install",
            &chart_dir(),
            &namespace,
            &[],
            &DEFAULT_SERVER,
        ),
    );
    assert!(!cluster.exists(&["-n", &namespace, "networkpolicy", &component("operator")]));

    let changed = [
        "operator.replicas=3",
        "image.tag=0.2.0",
        "logLevel=debug",
        "defaultServer.persistentKeepalive=15",
        "networkPolicy.enabled=true",
    ];
    succeeded(
        "helm upgrade with changed values",
        helm_release(
            &cluster,
            "upgrade",
            &chart_dir(),
            &namespace,
            &["--reuse-values"],
            &changed,
        ),
    );

    let status = release_status(&cluster, &namespace);
    assert_eq!(status["version"], 2);
    assert_eq!(status["info"]["status"], "deployed");
    let all: Vec<&str> = DEFAULT_SERVER.iter().chain(&changed).copied().collect();
    assert_rendered_objects_exist(&cluster, &namespace, &all);
    let operator = cluster.get(&["-n", &namespace, "deployment", &component("operator")]);
    assert_eq!(operator["spec"]["replicas"], 3);
    assert_eq!(deployment_env(&operator, "WGSUB_LOG"), "debug");
    let api = cluster.get(&["-n", &namespace, "deployment", &component("api")]);
    assert_eq!(
        api["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/wgsub/wgsub:0.2.0"
    );
    let server = cluster.get(&["-n", &namespace, "wgserver", "main"]);
    assert_eq!(server["spec"]["persistentKeepalive"], 15);
    assert!(cluster.exists(&["-n", &namespace, "networkpolicy", &component("operator")]));

    // What the new values no longer render goes.
    succeeded(
        "helm upgrade turning network policies off",
        helm_release(
            &cluster,
            "upgrade",
            &chart_dir(),
            &namespace,
            &["--reuse-values"],
            &["networkPolicy.enabled=false"],
        ),
    );
    let policies = cluster.get(&["-n", &namespace, "networkpolicies"]);
    assert_eq!(policies["items"], json!([]));
}

#[tokio::test]
async fn uninstall_keeps_the_crds_and_every_custom_resource() {
    let plane = ControlPlane::shared();
    let namespace = plane.namespace("chart-uninstall").await;
    let _cluster_wide = cluster_wide();
    let cluster = Cluster::new(plane);
    succeeded(
        "helm install",
        helm_release(
            &cluster,
            "install",
            &chart_dir(),
            &namespace,
            &[],
            &DEFAULT_SERVER,
        ),
    );
    // What users and the components create: a second server, a subscription, a peer.
    let resources = format!(
        r#"
apiVersion: wgsub.io/v1alpha1
kind: WgServer
metadata: {{name: edge, namespace: {namespace}}}
spec:
  endpoint: edge.example.test:51820
  listenPort: 51820
  addressPool: 10.9.0.0/24
  privateKeySecretRef: {{name: edge-key, key: privateKey}}
---
apiVersion: wgsub.io/v1alpha1
kind: VpnSubscription
metadata: {{name: tg-123456789, namespace: {namespace}}}
spec: {{telegramUserId: 123456789, paidUntil: "2030-01-01T00:00:00Z", plan: month}}
---
apiVersion: wgsub.io/v1alpha1
kind: WgPeer
metadata: {{name: tg-123456789-1, namespace: {namespace}}}
spec:
  server: main
  publicKey: xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
  address: 10.8.0.2/32
  expiresAt: "2030-01-01T00:00:00Z"
"#
    );
    succeeded(
        "kubectl apply of the custom resources",
        cluster.kubectl(&["apply", "--server-side", "-f", "-"], Some(&resources)),
    );

    let out = succeeded(
        "helm uninstall",
        cluster.helm(&["uninstall", RELEASE, "--namespace", &namespace]),
    );
    assert!(out.contains("uninstalled"), "{out}");

    for crd in [
        "vpnsubscriptions.wgsub.io",
        "wgpeers.wgsub.io",
        "wgservers.wgsub.io",
    ] {
        assert!(cluster.exists(&["crd", crd]), "{crd} went with the release");
    }
    for resource in [
        "wgserver/edge",
        "vpnsubscription/tg-123456789",
        "wgpeer/tg-123456789-1",
        // The chart's own server is kept too (helm.sh/resource-policy: keep).
        "wgserver/main",
    ] {
        assert!(
            cluster.exists(&["-n", &namespace, resource]),
            "{resource} went with the release"
        );
    }
    // The release's other objects are gone.
    assert!(!cluster.exists(&["-n", &namespace, "deployment", &component("api")]));
    assert!(!cluster.exists(&["-n", &namespace, "configmap", &component("plans")]));

    // Installing again adopts the kept server.
    succeeded(
        "helm install after uninstall",
        helm_release(
            &cluster,
            "install",
            &chart_dir(),
            &namespace,
            &[],
            &[
                "defaultServer.create=true",
                "defaultServer.endpoint=vpn2.example.test:51820",
            ],
        ),
    );
    let server = cluster.get(&["-n", &namespace, "wgserver", "main"]);
    assert_eq!(server["spec"]["endpoint"], "vpn2.example.test:51820");
}

/// `docs/quick-start.md`, sections 5 and "Upgrading", command for command (plus `--no-hooks`):
/// the CRDs applied with `kubectl apply --server-side --force-conflicts`, `helm install
/// --skip-crds`; then the next chart version's CRDs applied the same way and `helm upgrade
/// --reset-then-reuse-values`.
#[tokio::test]
async fn documented_install_and_upgrade_bring_the_new_crds() {
    let plane = ControlPlane::shared();
    let namespace = plane.namespace("chart-documented").await;
    let _cluster_wide = cluster_wide();
    let cluster = Cluster::new(plane);
    let _restore = RestoreChartCrds(&cluster);

    apply_crds_documented_way(&cluster, &chart_dir());
    succeeded(
        "helm install --skip-crds",
        helm_release(
            &cluster,
            "install",
            &chart_dir(),
            &namespace,
            &["--skip-crds"],
            &DEFAULT_SERVER,
        ),
    );

    let (_next_dir, next_chart) = next_chart_version();
    apply_crds_documented_way(&cluster, &next_chart);
    succeeded(
        "helm upgrade --reset-then-reuse-values",
        helm_release(
            &cluster,
            "upgrade",
            &next_chart,
            &namespace,
            &["--reset-then-reuse-values"],
            &["image.tag=0.2.0", "nodeAgent.image.tag=0.2.0"],
        ),
    );

    assert_next_version_crd(&cluster);
    let table = succeeded(
        "kubectl get wgservers",
        cluster.kubectl(&["-n", &namespace, "get", "wgservers"], None),
    );
    assert!(
        table.lines().next().is_some_and(|h| h.contains("PORT")),
        "{table}"
    );
    let api = cluster.get(&["-n", &namespace, "deployment", &component("api")]);
    assert_eq!(
        api["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/wgsub/wgsub:0.2.0"
    );
    let server = cluster.get(&["-n", &namespace, "wgserver", "main"]);
    assert_eq!(server["spec"]["endpoint"], "vpn.example.test:51820");
    assert_eq!(release_status(&cluster, &namespace)["version"], 2);
}

/// Why the quick start's flags are there. Helm 4 applies a chart's CRDs server-side as the
/// field manager `helm`, even when they exist: a CRD installed by helm refuses kubectl's apply
/// of a newer one (`conflict with "helm": .spec.versions`) unless `--force-conflicts`; a CRD
/// kubectl owns with other content makes `helm install` fail (`conflict with "kubectl":
/// .spec.versions`) unless `--skip-crds`. With those flags, a release whose CRDs helm installed
/// upgrades the documented way too.
#[tokio::test]
async fn helm_v4_and_kubectl_conflict_on_the_crds_without_the_documented_flags() {
    let plane = ControlPlane::shared();
    let first = plane.namespace("chart-conflict").await;
    let second = plane.namespace("chart-conflict").await;
    let _cluster_wide = cluster_wide();
    let cluster = Cluster::new(plane);
    let _restore = RestoreChartCrds(&cluster);
    // A release installed the plain way: helm applies (and co-owns) the CRDs.
    succeeded(
        "helm install",
        helm_release(&cluster, "install", &chart_dir(), &first, &[], &[]),
    );
    let (_next_dir, next_chart) = next_chart_version();

    let stderr = failed(
        "kubectl apply --server-side of newer CRDs without --force-conflicts",
        cluster.kubectl(
            &["apply", "--server-side", "-f", &crd_dir(&next_chart)],
            None,
        ),
    );
    assert!(
        stderr.contains(r#"conflict with "helm": .spec.versions"#),
        "{stderr}"
    );
    apply_crds_documented_way(&cluster, &next_chart);
    succeeded(
        "helm upgrade after the documented CRD apply",
        helm_release(
            &cluster,
            "upgrade",
            &next_chart,
            &first,
            &["--reset-then-reuse-values"],
            &[],
        ),
    );
    assert_next_version_crd(&cluster);

    // The CRDs now belong to kubectl; a release of the chart whose CRDs differ (here: the
    // previous version) cannot install them.
    let stderr = failed(
        "helm install of CRDs kubectl owns with other content",
        helm_release(&cluster, "install", &chart_dir(), &second, &[], &[]),
    );
    assert!(
        stderr.contains(r#"conflict with "kubectl": .spec.versions"#),
        "{stderr}"
    );
    succeeded(
        "helm install --skip-crds",
        helm_release(
            &cluster,
            "install",
            &chart_dir(),
            &second,
            &["--skip-crds"],
            &[],
        ),
    );
    assert_next_version_crd(&cluster);
}

/// The docs say what these tests run: the quick start's install and upgrade commands carry the
/// flags the tests above show to be needed.
#[test]
fn quick_start_documents_the_crd_sequence() {
    let text = std::fs::read_to_string(repo_root().join("docs").join("quick-start.md"))
        .expect("docs/quick-start.md");
    let apply = "kubectl apply --server-side --force-conflicts -f charts/wgsub/crds/";
    assert!(
        text.matches(apply).count() >= 2,
        "the quick start applies the CRDs with `{apply}` before install and upgrade"
    );
    assert!(text.contains(&format!(
        "helm install {RELEASE} charts/wgsub -n {NAMESPACE} --skip-crds"
    )));
    assert!(text.contains(&format!(
        "helm upgrade {RELEASE} charts/wgsub -n {NAMESPACE} --reset-then-reuse-values"
    )));
}
