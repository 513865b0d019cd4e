//! `wgsub-api import`: the shell around [`wgsub_crds::import`]. It reads the old server's
//! `wg0.conf` (or `wg show dump`) and the CSV, then what exists (the target `WgServer`, every
//! `WgPeer` and `VpnSubscription` of the namespace, the ledger's users), plans, and prints the
//! plan. With `apply` it writes, in an order that keeps the operator off the imported peers
//! until they are complete: each `VpnSubscription` without `paidUntil` (never paid, so the
//! operator leaves its peers alone), each `WgPeer` with the key and address it had, its key
//! Secret when the private key is known (labelled with the peer's uid like the operator's own,
//! and referenced from the peer only once it exists), then every user and `import` ledger entry in one
//! transaction, and last the sync that writes `paidUntil`. A conflict refuses the whole import
//! before anything is written; a second run finds everything done and writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use wgsub_crds::import::mapping::parse_mapping;
use wgsub_crds::import::plan::{Current, ExistingPeer, ImportDevice, TargetServer, plan};
use wgsub_crds::import::source::parse_server;
use wgsub_crds::pool;
use wgsub_crds::resources::{LABEL_PEER, LABEL_SUBSCRIPTION};
use wgsub_crds::{SecretKeyRef, VpnSubscription, WgPeer, WgServer};
use wgsub_ledger::import::ImportedUser;
use wgsub_ledger::{FIELD_MANAGER, Ledger, SubscriptionSync};

/// The field manager of the peers and key Secrets the import creates.
pub const IMPORT_FIELD_MANAGER: &str = "wgsub-import";
/// The operator's label tying a key Secret to its peer's uid (see the operator's `decision`).
const LABEL_PEER_UID: &str = "wgsub.io/peer-uid";
/// The field of a key Secret holding the private key (the operator's `PRIVATE_KEY_FIELD`).
const PRIVATE_KEY_FIELD: &str = "privateKey";

/// Where the import writes.
#[derive(Clone)]
pub struct Target {
    pub client: kube::Client,
    pub namespace: String,
    pub keys_namespace: String,
    /// The `WgServer` the peers move to.
    pub server: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("namespace", &self.namespace)
            .field("keys_namespace", &self.keys_namespace)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// What one run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: bool,
    pub devices: usize,
    pub subscriptions_created: usize,
    pub peers_created: usize,
    pub key_secrets_created: usize,
    pub ledger_users_created: usize,
    pub unchanged: usize,
    /// Server lines of peers no CSV row maps.
    pub unmapped: Vec<usize>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.applied { "created" } else { "to create" };
        write!(
            f,
            "{} device(s): {} subscription(s), {} peer(s), {} key Secret(s), {} ledger user(s) {verb}; {} already imported",
            self.devices,
            self.subscriptions_created,
            self.peers_created,
            self.key_secrets_created,
            self.ledger_users_created,
            self.unchanged
        )?;
        if !self.unmapped.is_empty() {
            let lines: Vec<String> = self.unmapped.iter().map(usize::to_string).collect();
            write!(
                f,
                "; server peers not in the CSV (lines {}) left out",
                lines.join(", ")
            )?;
        }
        if !self.applied {
            write!(f, "\ndry run: nothing was written; run again with --apply")?;
        }
        Ok(())
    }
}

fn describe(device: &ImportDevice) -> String {
    let mut steps = Vec::new();
    if device.create_subscription {
        steps.push(format!("VpnSubscription {}", device.subscription));
    }
    if device.create_peer {
        steps.push(format!(
            "WgPeer {} ({}, {}{})",
            device.peer,
            device.public_key,
            device.address,
            if device.private_key.is_some() {
                ", key Secret"
            } else {
                ""
            }
        ));
    }
    if device.ledger_entry.is_some() {
        steps.push(format!(
            "ledger user {} paid until {}",
            device.telegram_id, device.paid_until
        ));
    }
    if steps.is_empty() {
        format!(
            "CSV line {}: user {} already imported",
            device.line, device.telegram_id
        )
    } else {
        format!("CSV line {}: create {}", device.line, steps.join(", "))
    }
}

async fn read_current(
    target: &Target,
    ledger: &Ledger,
    ids: &[i64],
) -> anyhow::Result<(
    TargetServer,
    Vec<ExistingPeer>,
    BTreeSet<String>,
    BTreeMap<i64, wgsub_crds::import::plan::LedgerUser>,
)> {
    let servers: Api<WgServer> = Api::namespaced(target.client.clone(), &target.namespace);
    let server = servers
        .get_opt(&target.server)
        .await
        .context("reading the WgServer")?
        .with_context(|| format!("WgServer {} does not exist", target.server))?;
    let pool = pool::parse_pool_v4(&server.spec.address_pool)
        .with_context(|| format!("WgServer {} addressPool", target.server))?;
    let pool6 = match &server.spec.address_pool6 {
        Some(text) => Some(
            pool::parse_pool_v6(text)
                .with_context(|| format!("WgServer {} addressPool6", target.server))?,
        ),
        None => None,
    };
    let peers: Api<WgPeer> = Api::namespaced(target.client.clone(), &target.namespace);
    let peers = peers
        .list(&ListParams::default())
        .await
        .context("listing WgPeers")?
        .items
        .iter()
        .map(|peer| ExistingPeer {
            name: peer.name_any(),
            server: peer.spec.server.clone(),
            public_key: peer.spec.public_key.clone(),
            address: peer.spec.address.clone(),
        })
        .collect();
    let subscriptions: Api<VpnSubscription> =
        Api::namespaced(target.client.clone(), &target.namespace);
    let subscriptions = subscriptions
        .list_metadata(&ListParams::default())
        .await
        .context("listing VpnSubscriptions")?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let users = ledger
        .import_states(ids)
        .await
        .context("reading the ledger")?;
    let server = TargetServer {
        name: target.server.clone(),
        pool,
        pool6,
    };
    Ok((server, peers, subscriptions, users))
}

/// Plans the import of `wg_text` (the old server) with `csv_text`, prints each step to `out`,
/// and with `apply` writes it. `Err` names every conflict (nothing written) or the failed write.
pub async fn run(
    target: &Target,
    ledger: &Ledger,
    wg_text: &str,
    csv_text: &str,
    apply: bool,
    now: Timestamp,
    out: &mut Vec<String>,
) -> anyhow::Result<Report> {
    let source = parse_server(wg_text).map_err(|e| anyhow::anyhow!("server configuration {e}"))?;
    let rows = parse_mapping(csv_text)?;
    let ids: Vec<i64> = rows.iter().map(|row| row.telegram_id).collect();
    let (server, peers, subscriptions, users) = read_current(target, ledger, &ids).await?;
    let current = Current {
        server: &server,
        peers: &peers,
        users: &users,
        subscriptions: &subscriptions,
        now,
    };
    let planned = match plan(&source, &rows, current) {
        Ok(planned) => planned,
        Err(conflicts) => bail!(
            "the import is refused, nothing was written:\n{}",
            conflicts.join("\n")
        ),
    };
    let mut report = Report {
        applied: apply,
        devices: planned.devices.len(),
        unmapped: planned.unmapped.clone(),
        ..Report::default()
    };
    for device in &planned.devices {
        out.push(describe(device));
        report.subscriptions_created += usize::from(device.create_subscription);
        report.peers_created += usize::from(device.create_peer);
        report.key_secrets_created +=
            usize::from(device.create_peer && device.private_key.is_some());
        report.ledger_users_created += usize::from(device.ledger_entry.is_some());
        report.unchanged += usize::from(device.is_done());
    }
    if apply {
        write(target, ledger, &planned.devices, now).await?;
    }
    out.push(report.to_string());
    Ok(report)
}

async fn write(
    target: &Target,
    ledger: &Ledger,
    devices: &[ImportDevice],
    now: Timestamp,
) -> anyhow::Result<()> {
    let subscriptions: Api<VpnSubscription> =
        Api::namespaced(target.client.clone(), &target.namespace);
    let peers: Api<WgPeer> = Api::namespaced(target.client.clone(), &target.namespace);
    let secrets: Api<Secret> = Api::namespaced(target.client.clone(), &target.keys_namespace);
    for device in devices
        .iter()
        .filter(|d| d.create_subscription || d.create_peer)
    {
        let subscription = if device.create_subscription {
            let body = json!({
                "apiVersion": "wgsub.io/v1alpha1",
                "kind": "VpnSubscription",
                "metadata": {"name": device.subscription},
                "spec": {"telegramUserId": device.telegram_id},
            });
            subscriptions
                .patch(
                    &device.subscription,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .with_context(|| format!("creating VpnSubscription {}", device.subscription))?
        } else {
            subscriptions
                .get(&device.subscription)
                .await
                .with_context(|| format!("reading VpnSubscription {}", device.subscription))?
        };
        if device.create_peer {
            create_peer(&peers, &secrets, target, &subscription, device).await?;
        }
    }
    let users: Vec<ImportedUser> = devices
        .iter()
        .filter_map(|device| {
            device.ledger_entry.map(|entry| ImportedUser {
                telegram_id: device.telegram_id,
                entry,
            })
        })
        .collect();
    if !users.is_empty() {
        ledger
            .import_users(&users, now)
            .await
            .context("writing the ledger")?;
    }
    let sync = SubscriptionSync::new(target.client.clone(), &target.namespace);
    for device in devices.iter().filter(|d| !d.is_done()) {
        sync.sync_user(ledger, device.telegram_id)
            .await
            .with_context(|| format!("writing paidUntil of {}", device.subscription))?;
    }
    Ok(())
}

async fn create_peer(
    peers: &Api<WgPeer>,
    secrets: &Api<Secret>,
    target: &Target,
    subscription: &VpnSubscription,
    device: &ImportDevice,
) -> anyhow::Result<()> {
    let mut peer = wgsub_devices::manage::new_device_peer(
        subscription,
        1,
        &target.server,
        Some(device.device_name.clone()),
    );
    peer.spec.public_key = Some(device.public_key.to_base64());
    peer.spec.address = Some(pool::host_cidr_v4(device.address));
    peer.spec.address6 = device.address6.map(pool::host_cidr_v6);
    // The reference to the key Secret is added only once the Secret exists: until then the
    // peer is one whose user holds the key, which the operator keeps as it is.
    let secret_name = format!("{}-key", device.peer);
    let params = PostParams {
        field_manager: Some(IMPORT_FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let created = peers
        .create(&params, &peer)
        .await
        .with_context(|| format!("creating WgPeer {}", device.peer))?;
    let Some(private_key) = &device.private_key else {
        return Ok(());
    };
    let uid = created.uid().unwrap_or_default();
    let same_namespace = target.keys_namespace == target.namespace;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(target.keys_namespace.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_PEER.to_owned(), device.peer.clone()),
                (LABEL_PEER_UID.to_owned(), uid.clone()),
                (LABEL_SUBSCRIPTION.to_owned(), device.subscription.clone()),
            ])),
            owner_references: same_namespace.then(|| {
                vec![OwnerReference {
                    api_version: WgPeer::api_version(&()).into_owned(),
                    kind: WgPeer::kind(&()).into_owned(),
                    name: device.peer.clone(),
                    uid,
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            PRIVATE_KEY_FIELD.to_owned(),
            ByteString(private_key.to_base64().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    secrets
        .create(&params, &secret)
        .await
        .with_context(|| format!("creating key Secret {secret_name}"))?;
    let reference = json!({
        "spec": {"privateKeySecretRef": SecretKeyRef::new(&secret_name, PRIVATE_KEY_FIELD)}
    });
    let patch = PatchParams {
        field_manager: Some(IMPORT_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    peers
        .patch(&device.peer, &patch, &Patch::Merge(&reference))
        .await
        .with_context(|| {
            format!(
                "referencing key Secret {secret_name} from WgPeer {}",
                device.peer
            )
        })?;
    Ok(())
}
