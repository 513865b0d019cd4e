//! `wgsub-operator export-keys`: a backup of the key Secrets of one key namespace (the chart's
//! `keyNamespaces.peers` or `keyNamespaces.servers`) — the devices' and the servers' private keys,
//! the one thing of the cluster that cannot be made again without every user importing a new
//! config — as a file that `kubectl create -n <namespace> -f <file>` restores
//! (docs/backup-restore.md).
//!
//! [`export_document`] (pure) turns the Secrets read into a `v1` `List` holding, per Secret, only
//! what a restore needs: name, labels, annotations (without kubectl's last-applied copy), type and
//! data. No namespace (the restore names it), no uid, resourceVersion, owner references or
//! managed fields (a create refuses or ignores them). ServiceAccount token Secrets are left out:
//! the API server makes those. [`run`] is the shell: one list call, and the file written new with
//! mode 0600 (an existing file is never overwritten). It prints Secret names only, never data.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};

/// The annotation kubectl keeps the last applied object in (it may hold the data again).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The type of the token Secrets the API server makes for ServiceAccounts.
const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

/// `wgsub-operator export-keys`: writes the key Secrets of one namespace to a file that
/// `kubectl create -n <namespace> -f <file>` restores.
#[derive(Debug, Clone, Parser)]
#[command(name = "wgsub-operator export-keys", about)]
pub struct ExportConfig {
    /// The key namespace to export (keyNamespaces.peers or keyNamespaces.servers).
    #[arg(long, value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub namespace: String,

    /// The file to write (JSON, mode 0600); it must not exist yet.
    #[arg(long)]
    pub out: PathBuf,
}

/// The restorable copy of `secrets`: a `v1` `List` sorted by name.
pub fn export_document(secrets: &[Secret]) -> Value {
    let mut kept: Vec<&Secret> = secrets
        .iter()
        .filter(|s| s.type_.as_deref() != Some(SERVICE_ACCOUNT_TOKEN))
        .collect();
    kept.sort_by_key(|s| s.name_any());
    let items: Vec<Value> = kept.into_iter().map(restorable).collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

fn restorable(secret: &Secret) -> Value {
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(secret.name_any()));
    if !secret.labels().is_empty() {
        metadata.insert("labels".into(), json!(secret.labels()));
    }
    let mut annotations = secret.annotations().clone();
    annotations.remove(LAST_APPLIED);
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), json!(annotations));
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!("v1"));
    object.insert("kind".into(), json!("Secret"));
    object.insert("metadata".into(), Value::Object(metadata));
    if let Some(type_) = &secret.type_ {
        object.insert("type".into(), json!(type_));
    }
    if let Some(data) = &secret.data {
        object.insert("data".into(), json!(data));
    }
    if secret.immutable == Some(true) {
        object.insert("immutable".into(), json!(true));
    }
    Value::Object(object)
}

/// Lists the namespace's Secrets and writes the export; prints how many and their names.
pub async fn run(config: ExportConfig) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (KUBECONFIG or in-cluster)")?;
    export(client, &config).await
}

/// [`run`] with a given client.
pub async fn export(client: Client, config: &ExportConfig) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client, &config.namespace);
    let listed = secrets
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing the Secrets of namespace {}", config.namespace))?;
    let document = export_document(&listed.items);
    let mut text = serde_json::to_string_pretty(&document)?;
    text.push('\n');
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&config.out)
        .with_context(|| format!("--out {}: cannot create it new", config.out.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("--out {}: cannot write it", config.out.display()))?;
    let items = document["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    println!(
        "exported {} Secrets of namespace {} to {}",
        items.len(),
        config.namespace,
        config.out.display()
    );
    for item in items {
        println!(
            "  {}",
            item["metadata"]["name"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn secret(name: &str, type_: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("vpn-keys".into()),
                uid: Some(format!("uid-of-{name}")),
                resource_version: Some("42".into()),
                creation_timestamp: None,
                labels: Some(BTreeMap::from([(
                    "wgsub.io/peer-uid".to_owned(),
                    "peer-1".to_owned(),
                )])),
                annotations: Some(BTreeMap::from([
                    (LAST_APPLIED.to_owned(), "{\"data\":{}}".to_owned()),
                    ("note".to_owned(), "kept".to_owned()),
                ])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "wgsub.io/v1alpha1".into(),
                    kind: "WgPeer".into(),
                    name: "tg-1-1".into(),
                    uid: "peer-1".into(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(
                "privateKey".to_owned(),
                ByteString(b"key bytes".to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn the_export_keeps_what_a_create_needs_and_nothing_the_server_sets() {
        let document = export_document(&[secret("tg-1-1-key", "Opaque")]);
        assert_eq!(
            document,
            json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": [{
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "tg-1-1-key",
                        "labels": {"wgsub.io/peer-uid": "peer-1"},
                        "annotations": {"note": "kept"},
                    },
                    "type": "Opaque",
                    "data": {"privateKey": "a2V5IGJ5dGVz"},
                }]
            })
        );
    }

    #[test]
    fn token_secrets_are_left_out_and_the_rest_sorted_by_name() {
        let document = export_document(&[
            secret("b-key", "Opaque"),
            secret("default-token", SERVICE_ACCOUNT_TOKEN),
            secret("a-key", "Opaque"),
        ]);
        let names: Vec<&str> = document["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a-key", "b-key"]);
    }

    #[test]
    fn a_bare_secret_exports_without_empty_maps() {
        let bare = Secret {
            metadata: ObjectMeta {
                name: Some("plain".into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        assert_eq!(
            export_document(&[bare])["items"][0],
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"}})
        );
    }

    #[test]
    fn the_namespace_must_be_a_name() {
        let parsed = ExportConfig::try_parse_from([
            "export-keys",
            "--namespace",
            "Not A Name",
            "--out",
            "x",
        ]);
        assert!(parsed.unwrap_err().to_string().contains("--namespace"));
    }
}
