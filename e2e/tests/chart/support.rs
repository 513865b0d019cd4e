//! Runs the real `helm` on `charts/wgsub` and hands the rendered manifests to the tests as JSON
//! values and typed Kubernetes objects.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Namespace every render uses.
pub const NAMESPACE: &str = "wgsub";
/// Release name every render uses.
pub const RELEASE: &str = "wgsub";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("wgsub")
}

/// The helm binary from `WGSUB_HELM` (set by `scripts/test`); a clear failure when it is missing.
pub fn helm() -> PathBuf {
    let path = std::env::var_os("WGSUB_HELM").unwrap_or_else(|| {
        panic!(
            "WGSUB_HELM is not set: the chart tests need a real helm binary. Run them through \
             scripts/test, or export WGSUB_HELM=$HOME/.cache/wgsub-test-tools/bin/helm \
             (scripts/install-test-deps installs it)"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "WGSUB_HELM={} does not exist; run scripts/install-test-deps",
        path.display()
    );
    path
}

/// A helm command with `args` and its own cache, config and data folders (no repository or
/// plugin of the user's leaks in).
pub fn helm_command(args: &[&str]) -> Command {
    let mut command = Command::new(helm());
    command
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("wgsub-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("wgsub-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("wgsub-helm-data"),
        );
    command
}

/// Runs helm with `args` and returns its output (whatever the exit status).
pub fn run_helm(args: &[&str]) -> Output {
    helm_command(args).output().expect("helm runs")
}

/// The kubectl binary from `WGSUB_KUBECTL` (set by `scripts/test`); a clear failure when missing.
pub fn kubectl() -> PathBuf {
    let path = std::env::var_os("WGSUB_KUBECTL").unwrap_or_else(|| {
        panic!(
            "WGSUB_KUBECTL is not set: the chart install tests run a real kubectl. Run them \
             through scripts/test, or export \
             WGSUB_KUBECTL=$HOME/.cache/wgsub-test-tools/bin/kubectl \
             (scripts/install-test-deps installs it)"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "WGSUB_KUBECTL={} does not exist; run scripts/install-test-deps",
        path.display()
    );
    path
}

/// `helm template` with `--set`-style values; Err carries helm's stderr.
pub fn try_render(sets: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let chart = chart.to_str().expect("chart path is UTF-8");
    let mut args = vec!["template", RELEASE, chart, "--namespace", NAMESPACE];
    for set in sets {
        args.push("--set");
        args.push(set);
    }
    let output = run_helm(&args);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    Ok(parse_documents(&text))
}

/// `helm template` that must succeed.
pub fn render(sets: &[&str]) -> Vec<Value> {
    try_render(sets).unwrap_or_else(|stderr| panic!("helm template {sets:?} failed:\n{stderr}"))
}

/// Splits a multi-document YAML stream into JSON values, leaving out empty documents.
pub fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Values that turn every option of the chart on. Secret values are made up at test time.
pub fn every_option_on() -> Vec<String> {
    let made_up = |what: &str| format!("test-{what}-{}", std::process::id());
    vec![
        "defaultServer.create=true".into(),
        "defaultServer.endpoint=vpn.example.test:51820".into(),
        "defaultServer.addressPool6=fd00:8::/64".into(),
        "defaultServer.mtu=1420".into(),
        "defaultServer.nodeName=vpn-1".into(),
        "defaultServer.nat.enabled=true".into(),
        "defaultServer.nat.egressInterface=eth0".into(),
        "defaultServer.nat.clientToClient=true".into(),
        "defaultServer.nat.blockedDestinations={198.51.100.0/24,2001:db8:100::/48}".into(),
        "api.ingress.enabled=true".into(),
        "api.ingress.className=traefik".into(),
        "api.ingress.host=vpn.example.test".into(),
        "api.ingress.tls.enabled=true".into(),
        "api.trustedProxies={10.42.0.0/16}".into(),
        "api.driftInterval=5m".into(),
        "yookassa.returnUrl=https://vpn.example.test/miniapp/paid".into(),
        "yookassa.receipts.enabled=true".into(),
        "yookassa.receipts.vatCode=6".into(),
        "database.pgbouncer=true".into(),
        "bot.adminIds={1001,1002}".into(),
        "bot.username=wgsub_test_bot".into(),
        "bot.mode=webhook".into(),
        "bot.webhook.url=https://vpn.example.test/telegram/updates".into(),
        "bot.webhook.port=8444".into(),
        "bot.webhook.existingSecret=tg-webhook".into(),
        "bot.webhook.secretKey=webhook-secret".into(),
        "nodeAgent.backend=userspace".into(),
        "nodeAgent.nodeSelector.wgsub\\.io/vpn=enabled".into(),
        "serviceMonitor.enabled=true".into(),
        "grafanaDashboard.enabled=true".into(),
        "networkPolicy.enabled=true".into(),
        "podDisruptionBudget.enabled=true".into(),
        "backup.pgDump.enabled=true".into(),
        "backup.pgDump.destination=s3".into(),
        "backup.pgDump.s3.endpoint=https://s3.example.test".into(),
        "backup.pgDump.s3.bucket=wgsub-backups".into(),
        "backup.pgDump.timeZone=Europe/Moscow".into(),
        "secrets.createFromValues=true".into(),
        format!("secrets.values.botToken={}", made_up("bot-token")),
        format!("secrets.values.yookassaShopId={}", made_up("shop")),
        format!("secrets.values.yookassaSecretKey={}", made_up("secret-key")),
        format!(
            "secrets.values.databaseUrl=postgres://wgsub:{}@db.example.test/wgsub",
            made_up("password")
        ),
    ]
}

pub fn render_every_option_on() -> Vec<Value> {
    let sets = every_option_on();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    render(&sets)
}

pub fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| kind_of(doc) == kind).collect()
}

/// The one document of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|doc| kind_of(doc) == kind && name_of(doc) == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name}, found {}",
        found.len()
    );
    found[0]
}

/// A rendered document as a typed object (k8s-openapi), failing with the document's name.
pub fn typed<T: DeserializeOwned>(doc: &Value) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{} {} does not decode as its type: {e}",
            kind_of(doc),
            name_of(doc)
        )
    })
}

/// The release's name for a component: `<release>-<component>` (the release is named like the chart).
pub fn component(name: &str) -> String {
    format!("{RELEASE}-{name}")
}
