//! `wgsub-operator migrate-keys`: the upgrade from key Secrets beside the resources (the release
//! namespace) to key Secrets in namespaces of their own (`keyNamespaces` of the chart). Without
//! it, an upgraded operator would find no key in the peer keys namespace and give every device a
//! new key, and the node-agent a new server key — every client config on users' phones broken.
//!
//! [`plan`] (pure) decides the copies from the old Secrets, the peers and the servers:
//! - each device key Secret (labelled `wgsub.io/peer`, owned by its `WgPeer`) goes to the peer
//!   keys namespace under the same name, its owner reference replaced by the
//!   `wgsub.io/peer-uid` label the operator (and its key collection) recognises;
//! - each `WgServer`'s `privateKeySecretRef` Secret and each peer's `presharedKeySecretRef`
//!   Secret goes to the server keys namespace, without owner references and without the
//!   `wgsub.io/peer` label (the node-agent does not watch Secrets so labelled).
//!
//! [`compare`] (pure) judges an existing target: the same data and type is already migrated, any
//! other is a conflict — reported, never overwritten. [`run`] is the shell: list, get, create,
//! and (with `--delete-originals`) delete the originals once every copy of them is in place. It
//! prints a report naming Secrets only, never their data.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use wgsub_crds::resources::LABEL_PEER;
use wgsub_crds::{WgPeer, WgServer};

use crate::decision::LABEL_PEER_UID;

/// `wgsub-operator migrate-keys`: copies the key Secrets of the release namespace into the key
/// namespaces (the chart runs it as a pre-upgrade hook).
#[derive(Debug, Clone, Parser)]
#[command(name = "wgsub-operator migrate-keys", about)]
pub struct MigrateConfig {
    /// The release namespace: the peers, the servers and the old key Secrets.
    #[arg(long, env = "WGSUB_NAMESPACE", value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub namespace: String,

    /// Where the devices' key Secrets go (the chart's keyNamespaces.peers).
    #[arg(long, env = "WGSUB_KEYS_NAMESPACE", value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub keys_namespace: String,

    /// Where the server and preshared key Secrets go (the chart's keyNamespaces.servers).
    #[arg(long, env = "WGSUB_SERVER_KEYS_NAMESPACE", value_parser = wgsub_runtime::settings::kubernetes_name)]
    pub server_keys_namespace: String,

    /// Delete each original once all its copies are in place (needs `delete` on Secrets of the
    /// release namespace, which the chart's hook does not have: run it by hand after checking).
    #[arg(long)]
    pub delete_originals: bool,
    #[command(flatten)]
    pub log: wgsub_runtime::logging::LogArgs,
}

impl MigrateConfig {
    /// Parses the arguments after `migrate-keys`; the error names the flag at fault.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Self::try_parse_from(args)?;
        let distinct: BTreeSet<&str> = [
            config.namespace.as_str(),
            &config.keys_namespace,
            &config.server_keys_namespace,
        ]
        .into();
        if distinct.len() != 3 {
            use clap::CommandFactory;
            return Err(Self::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--namespace, --keys-namespace and --server-keys-namespace must be three \
                 different namespaces",
            ));
        }
        Ok(config)
    }
}

/// What an old Secret is to the new layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The private key of the device `peer` (uid `peer_uid`).
    PeerKey { peer: String, peer_uid: String },
    /// Referenced by `privateKeySecretRef` of these servers and/or `presharedKeySecretRef` of
    /// these peers.
    ServerKey { referenced_by: Vec<String> },
}

/// One Secret to make: `secret` (namespace and name set) copied from the original `source`.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub source: String,
    pub role: Role,
    pub secret: Secret,
}

/// Everything [`plan`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub copies: Vec<Copy>,
    /// Device key Secrets whose owning peer is gone (the garbage collector's to delete): not
    /// copied.
    pub orphans: Vec<String>,
    /// Secrets referenced by a server or a peer that do not exist in the release namespace
    /// (the node-agent will create a missing server key, as it always did).
    pub missing: Vec<String>,
}

/// The copies that move `old` (the release namespace's relevant Secrets: those labelled
/// `wgsub.io/peer` and those the servers and peers reference) into the key namespaces.
pub fn plan(
    old: &[Secret],
    peers: &[WgPeer],
    servers: &[WgServer],
    keys_namespace: &str,
    server_keys_namespace: &str,
) -> Plan {
    let by_name: BTreeMap<String, &Secret> = old.iter().map(|s| (s.name_any(), s)).collect();
    let peer_by_uid: BTreeMap<String, &WgPeer> =
        peers.iter().filter_map(|p| Some((p.uid()?, p))).collect();
    let mut result = Plan::default();

    for secret in old {
        if !secret.labels().contains_key(LABEL_PEER) {
            continue;
        }
        let owner = secret
            .owner_references()
            .iter()
            .filter(|o| o.kind == "WgPeer")
            .find_map(|o| peer_by_uid.get(&o.uid).map(|peer| (o.uid.clone(), *peer)));
        let Some((peer_uid, peer)) = owner else {
            result.orphans.push(secret.name_any());
            continue;
        };
        let mut copy = bare_copy(secret, keys_namespace);
        copy.labels_mut()
            .insert(LABEL_PEER_UID.to_owned(), peer_uid.clone());
        result.copies.push(Copy {
            source: secret.name_any(),
            role: Role::PeerKey {
                peer: peer.name_any(),
                peer_uid,
            },
            secret: copy,
        });
    }

    let mut references: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for server in servers {
        references
            .entry(server.spec.private_key_secret_ref.name.clone())
            .or_default()
            .push(format!("WgServer {}", server.name_any()));
    }
    for peer in peers {
        if let Some(reference) = &peer.spec.preshared_key_secret_ref {
            references
                .entry(reference.name.clone())
                .or_default()
                .push(format!("WgPeer {}", peer.name_any()));
        }
    }
    for (name, referenced_by) in references {
        let Some(secret) = by_name.get(&name) else {
            result.missing.push(name);
            continue;
        };
        let mut copy = bare_copy(secret, server_keys_namespace);
        copy.labels_mut().remove(LABEL_PEER);
        copy.labels_mut().remove(LABEL_PEER_UID);
        result.copies.push(Copy {
            source: name,
            role: Role::ServerKey { referenced_by },
            secret: copy,
        });
    }
    result
}

/// `secret`'s name, labels, type and data in `namespace`: no owner, uid, version or annotations.
fn bare_copy(secret: &Secret, namespace: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: secret.metadata.name.clone(),
            namespace: Some(namespace.to_owned()),
            labels: Some(secret.labels().clone()),
            ..ObjectMeta::default()
        },
        type_: secret.type_.clone(),
        data: secret.data.clone(),
        immutable: secret.immutable,
        ..Secret::default()
    }
}

/// How an existing target stands against the copy wanted there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// The same data (and type): migrated before.
    Same,
    /// Something else: never overwritten, reported.
    Conflict,
}

/// Judges `existing` against `wanted` (labels may differ: the operator relabels its keys).
pub fn compare(existing: &Secret, wanted: &Secret) -> Existing {
    let data = |s: &Secret| s.data.clone().unwrap_or_default();
    let kind = |s: &Secret| s.type_.clone().unwrap_or_else(|| "Opaque".to_owned());
    if data(existing) == data(wanted) && kind(existing) == kind(wanted) {
        Existing::Same
    } else {
        Existing::Conflict
    }
}

/// What happened to one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Created,
    AlreadyThere,
    Conflict,
}

/// Runs the migration and prints its report; fails when a target conflicts (so a hook stops
/// the upgrade before an operator or agent would use a key that is not the device's).
pub async fn run(config: MigrateConfig) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration")?;
    let ns = &config.namespace;
    let old_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let peers = Api::<WgPeer>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .context("listing the WgPeers")?
        .items;
    let servers = Api::<WgServer>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .context("listing the WgServers")?
        .items;
    // Only the key Secrets are read, never the release's other credentials.
    let mut old = old_api
        .list(&ListParams::default().labels(LABEL_PEER))
        .await
        .context("listing the device key Secrets")?
        .items;
    let referenced: BTreeSet<String> = servers
        .iter()
        .map(|s| s.spec.private_key_secret_ref.name.clone())
        .chain(
            peers
                .iter()
                .filter_map(|p| Some(p.spec.preshared_key_secret_ref.as_ref()?.name.clone())),
        )
        .collect();
    let listed: BTreeSet<String> = old.iter().map(|s| s.name_any()).collect();
    for name in referenced.difference(&listed) {
        if let Some(secret) = old_api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Secret {ns}/{name}"))?
        {
            old.push(secret);
        }
    }

    let found = plan(
        &old,
        &peers,
        &servers,
        &config.keys_namespace,
        &config.server_keys_namespace,
    );
    let mut outcomes: Vec<(String, Done)> = Vec::new();
    for copy in &found.copies {
        let target_ns = copy.secret.namespace().unwrap_or_default();
        let target = format!("{target_ns}/{}", copy.secret.name_any());
        let api: Api<Secret> = Api::namespaced(client.clone(), &target_ns);
        let done = match api.get_opt(&copy.secret.name_any()).await? {
            Some(existing) => judge(&existing, &copy.secret),
            None => match api.create(&PostParams::default(), &copy.secret).await {
                Ok(_) => Done::Created,
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    judge(&api.get(&copy.secret.name_any()).await?, &copy.secret)
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("creating Secret {target}"));
                }
            },
        };
        let what = match &copy.role {
            Role::PeerKey { peer, .. } => format!("key of WgPeer {peer}"),
            Role::ServerKey { referenced_by } => format!("key of {}", referenced_by.join(", ")),
        };
        let verdict = match done {
            Done::Created => "copied",
            Done::AlreadyThere => "already migrated",
            Done::Conflict => "CONFLICT (a different Secret is there; left alone)",
        };
        println!("{verdict}: {ns}/{} -> {target} ({what})", copy.source);
        outcomes.push((copy.source.clone(), done));
    }
    for name in &found.orphans {
        println!("skipped: {ns}/{name} (its WgPeer is gone)");
    }
    for name in &found.missing {
        println!("missing: {ns}/{name} (referenced, not found; nothing to copy)");
    }
    let conflicts = outcomes
        .iter()
        .filter(|(_, done)| *done == Done::Conflict)
        .count();
    println!(
        "{} copied, {} already migrated, {conflicts} conflicts, {} orphans skipped, {} missing",
        outcomes.iter().filter(|(_, d)| *d == Done::Created).count(),
        outcomes
            .iter()
            .filter(|(_, d)| *d == Done::AlreadyThere)
            .count(),
        found.orphans.len(),
        found.missing.len(),
    );
    if conflicts > 0 {
        anyhow::bail!("{conflicts} key Secrets conflict with what the key namespaces hold");
    }
    if config.delete_originals {
        delete_originals(&old_api, &old, &outcomes).await?;
    }
    Ok(())
}

fn judge(existing: &Secret, wanted: &Secret) -> Done {
    match compare(existing, wanted) {
        Existing::Same => Done::AlreadyThere,
        Existing::Conflict => Done::Conflict,
    }
}

/// Deletes each original all of whose copies are in place, on the uid and version it was read
/// with (an original changed since is kept).
async fn delete_originals(
    api: &Api<Secret>,
    old: &[Secret],
    outcomes: &[(String, Done)],
) -> anyhow::Result<()> {
    let copied: BTreeSet<&str> = outcomes.iter().map(|(name, _)| name.as_str()).collect();
    for secret in old
        .iter()
        .filter(|s| copied.contains(s.name_any().as_str()))
    {
        let name = secret.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.uid(),
                resource_version: secret.resource_version(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => println!("deleted original: {name}"),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                println!("kept original: {name} (changed or gone since it was read)");
            }
            Err(error) => return Err(error).with_context(|| format!("deleting Secret {name}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use wgsub_crds::{SecretKeyRef, WgPeerSpec, WgServerSpec};

    use super::*;

    fn secret(name: &str, labels: &[(&str, &str)], owner_uid: Option<&str>, data: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("vpn".into()),
                uid: Some(format!("secret-uid-{name}")),
                resource_version: Some("7".into()),
                annotations: Some(BTreeMap::from([("by".into(), "hand".into())])),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                owner_references: owner_uid.map(|uid| {
                    vec![OwnerReference {
                        api_version: "wgsub.io/v1alpha1".into(),
                        kind: "WgPeer".into(),
                        name: "owner".into(),
                        uid: uid.into(),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "privateKey".to_owned(),
                ByteString(data.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn peer(name: &str, uid: &str, psk: Option<&str>) -> WgPeer {
        let mut spec: WgPeerSpec =
            serde_json::from_value(serde_json::json!({"server": "wg"})).unwrap();
        spec.preshared_key_secret_ref = psk.map(|n| SecretKeyRef::new(n, "presharedKey"));
        let mut peer = WgPeer::new(name, spec);
        peer.metadata.uid = Some(uid.into());
        peer
    }

    fn server(name: &str, key: &str) -> WgServer {
        let mut spec: WgServerSpec = serde_json::from_value(serde_json::json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": key, "key": "privateKey"},
        }))
        .unwrap();
        spec.listen_port = 51820;
        WgServer::new(name, spec)
    }

    fn plan_of(old: &[Secret], peers: &[WgPeer], servers: &[WgServer]) -> Plan {
        plan(old, peers, servers, "vpn-keys", "vpn-server-keys")
    }

    #[test]
    fn a_device_key_moves_to_the_peer_keys_namespace_labelled_with_its_peer_uid_not_owned() {
        let old = [secret(
            "tg-1-1-key",
            &[(LABEL_PEER, "tg-1-1"), ("wgsub.io/subscription", "tg-1")],
            Some("uid-1"),
            "k1",
        )];
        let found = plan_of(&old, &[peer("tg-1-1", "uid-1", None)], &[]);
        let [copy] = found.copies.as_slice() else {
            panic!("one copy: {found:?}")
        };
        assert_eq!(copy.source, "tg-1-1-key");
        assert_eq!(
            copy.role,
            Role::PeerKey {
                peer: "tg-1-1".into(),
                peer_uid: "uid-1".into()
            }
        );
        let made = &copy.secret;
        assert_eq!(made.namespace().as_deref(), Some("vpn-keys"));
        assert_eq!(made.name_any(), "tg-1-1-key");
        assert!(made.metadata.owner_references.is_none());
        assert!(made.metadata.uid.is_none() && made.metadata.resource_version.is_none());
        assert!(made.metadata.annotations.is_none());
        assert_eq!(made.labels()[LABEL_PEER_UID], "uid-1");
        assert_eq!(made.labels()[LABEL_PEER], "tg-1-1");
        assert_eq!(made.labels()["wgsub.io/subscription"], "tg-1");
        assert_eq!(made.data, old[0].data);
    }

    #[test]
    fn a_device_key_whose_owning_peer_is_gone_is_skipped_as_an_orphan() {
        let old = [
            secret("tg-2-1-key", &[(LABEL_PEER, "tg-2-1")], Some("gone"), "k"),
            secret("unowned-key", &[(LABEL_PEER, "tg-3-1")], None, "k"),
        ];
        let found = plan_of(&old, &[peer("tg-1-1", "uid-1", None)], &[]);
        assert!(found.copies.is_empty());
        assert_eq!(found.orphans, ["tg-2-1-key", "unowned-key"]);
    }

    #[test]
    fn server_and_preshared_keys_move_to_the_server_keys_namespace_once_each() {
        let old = [
            secret("wg-key", &[], None, "server"),
            secret("psk", &[(LABEL_PEER, "tg-1-1")], None, "psk"),
            secret("bot-token", &[], None, "not a key"),
        ];
        let peers = [
            peer("tg-1-1", "uid-1", Some("psk")),
            peer("tg-1-2", "uid-2", Some("psk")),
        ];
        let servers = [server("wg", "wg-key"), server("wg2", "wg-key")];
        let found = plan_of(&old, &peers, &servers);
        // The psk Secret is labelled wgsub.io/peer but owned by no peer: not a device key.
        assert_eq!(found.orphans, ["psk"]);
        let copies: Vec<(&str, &Role)> = found
            .copies
            .iter()
            .map(|c| (c.source.as_str(), &c.role))
            .collect();
        assert_eq!(
            copies,
            [
                (
                    "psk",
                    &Role::ServerKey {
                        referenced_by: vec!["WgPeer tg-1-1".into(), "WgPeer tg-1-2".into()]
                    }
                ),
                (
                    "wg-key",
                    &Role::ServerKey {
                        referenced_by: vec!["WgServer wg".into(), "WgServer wg2".into()]
                    }
                ),
            ]
        );
        for copy in &found.copies {
            assert_eq!(copy.secret.namespace().as_deref(), Some("vpn-server-keys"));
            assert!(
                !copy.secret.labels().contains_key(LABEL_PEER),
                "the node-agent ignores Secrets labelled wgsub.io/peer"
            );
            assert!(copy.secret.metadata.owner_references.is_none());
        }
        assert!(found.copies.iter().all(|c| c.source != "bot-token"));
    }

    #[test]
    fn a_referenced_secret_that_does_not_exist_is_reported_missing() {
        let found = plan_of(&[], &[], &[server("wg", "wg-key")]);
        assert!(found.copies.is_empty());
        assert_eq!(found.missing, ["wg-key"]);
    }

    #[test]
    fn an_existing_target_with_the_same_data_is_migrated_and_any_other_is_a_conflict() {
        let wanted = secret("k", &[(LABEL_PEER, "p")], None, "key");
        let relabelled = secret("k", &[(LABEL_PEER_UID, "u")], Some("x"), "key");
        assert_eq!(compare(&relabelled, &wanted), Existing::Same);
        let other = secret("k", &[], None, "another key");
        assert_eq!(compare(&other, &wanted), Existing::Conflict);
        let mut typed = wanted.clone();
        typed.type_ = Some("kubernetes.io/tls".into());
        assert_eq!(compare(&typed, &wanted), Existing::Conflict);
        let mut opaque = wanted.clone();
        opaque.type_ = Some("Opaque".into());
        assert_eq!(compare(&opaque, &wanted), Existing::Same);
    }

    #[test]
    fn the_three_namespaces_must_differ_and_bad_names_are_refused_naming_the_flag() {
        let parse = |args: &[&str]| {
            MigrateConfig::try_parse_checked(std::iter::once("migrate-keys").chain(args.to_vec()))
        };
        let ok = parse(&[
            "--namespace",
            "vpn",
            "--keys-namespace",
            "vpn-keys",
            "--server-keys-namespace",
            "vpn-server-keys",
        ])
        .unwrap();
        assert!(!ok.delete_originals);
        let same = parse(&[
            "--namespace",
            "vpn",
            "--keys-namespace",
            "vpn",
            "--server-keys-namespace",
            "vpn-server-keys",
        ])
        .unwrap_err()
        .to_string();
        assert!(same.contains("--keys-namespace"), "{same}");
        let bad = parse(&[
            "--namespace",
            "vpn",
            "--keys-namespace",
            "Keys",
            "--server-keys-namespace",
            "s",
        ])
        .unwrap_err()
        .to_string();
        assert!(bad.contains("--keys-namespace"), "{bad}");
    }
}
