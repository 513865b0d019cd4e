//! The writes a user makes on their own devices, shared by the api and the bot: add a device,
//! rename it, delete it, and rotate its key.
//!
//! The pure part decides the objects: the peer of a new device ([`device_to_add`], refused at
//! `maxDevices`), the replacement of a device whose key is rotated ([`replacement_peer`]: the
//! same name, switch and owner under the next device number, with no key and no address, so the
//! operator gives it a fresh key), and the merge patch of the subscription's
//! [`ANNOTATION_DEVICES_REMOVED`] mark ([`removed_mark_patch`]). [`DeviceWriter`] carries them
//! out against the API server:
//!
//! - **delete**: when the device is the user's last, the subscription is marked first (so the
//!   operator, which gives a subscription without devices its first one, does not give this one
//!   back), then the peer is deleted with its uid as precondition (a newer peer of the same name
//!   is never deleted). The node-agent takes it off the interface at once and the operator
//!   deletes its key Secret (its key collection follows peer deletions).
//! - **rotate**: the replacement is created first, then the old peer deleted, so a user never
//!   has no device in between; when the old one cannot be deleted the replacement is deleted
//!   again and nothing is left changed. The operator's key writer is untouched: a new peer gets
//!   a new key as every new peer does.
//! - **add** creates the peer and removes the mark, if the subscription carries it.
//!
//! The callers check first that the device is the user's (and, for add and rotate, that the
//! subscription is active).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use wgsub_crds::devices::{ANNOTATION_DEVICES_REMOVED, device_index, wants_first_device};
use wgsub_crds::resources::{GROUP, LABEL_SERVER, LABEL_SUBSCRIPTION, VERSION, peer_name};
use wgsub_crds::{VpnSubscription, WgPeer, WgPeerSpec};

/// The smallest device number ≥ 1 not used by `existing`.
pub fn next_device_index<'a>(
    subscription: &str,
    existing: impl IntoIterator<Item = &'a str>,
) -> u32 {
    let used: std::collections::BTreeSet<u32> = existing
        .into_iter()
        .filter_map(|name| device_index(subscription, name))
        .collect();
    (1..).find(|n| !used.contains(n)).unwrap_or(1)
}

/// The `WgPeer` the API creates for an extra device: labels, an owner reference to the
/// subscription, the server, enabled, the name — no key and no address (the operator fills
/// them in).
pub fn new_device_peer(
    subscription: &VpnSubscription,
    index: u32,
    server: &str,
    device_name: Option<String>,
) -> WgPeer {
    let sub_name = subscription.name_any();
    let labels = BTreeMap::from([
        (LABEL_SUBSCRIPTION.to_owned(), sub_name.clone()),
        (LABEL_SERVER.to_owned(), server.to_owned()),
    ]);
    let owner = OwnerReference {
        api_version: VpnSubscription::api_version(&()).into_owned(),
        kind: VpnSubscription::kind(&()).into_owned(),
        name: sub_name.clone(),
        uid: subscription.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    WgPeer {
        metadata: ObjectMeta {
            name: Some(peer_name(&sub_name, index)),
            namespace: subscription.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: WgPeerSpec {
            device_name,
            ..WgPeerSpec::on_server(server)
        },
        status: None,
    }
}

/// The server a subscription's new devices go to: its own, or the default one.
pub fn subscription_server(subscription: &VpnSubscription, default_server: &str) -> String {
    subscription
        .spec
        .server
        .clone()
        .unwrap_or_else(|| default_server.to_owned())
}

/// Why a device cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddRefused {
    /// The user has `max` devices already, all the plan allows.
    Limit { max: i32 },
}

/// The peer of the device the user adds, given the names of their devices now: the next device
/// number, on the subscription's server; refused when `maxDevices` are there already.
pub fn device_to_add(
    subscription: &VpnSubscription,
    devices: &[String],
    default_server: &str,
    device_name: Option<String>,
) -> Result<WgPeer, AddRefused> {
    let max = subscription.spec.max_devices;
    if devices.len() >= usize::try_from(max).unwrap_or(0) {
        return Err(AddRefused::Limit { max });
    }
    let index = next_device_index(&subscription.name_any(), devices.iter().map(String::as_str));
    let server = subscription_server(subscription, default_server);
    Ok(new_device_peer(subscription, index, &server, device_name))
}

/// The peer that replaces `old` when its key is rotated: the next device number among
/// `devices` (the user's device names, `old`'s included), the same device name and switch, on
/// the subscription's server, with no key and no address — the operator gives it a fresh key,
/// and the old key goes with the old peer.
pub fn replacement_peer(
    subscription: &VpnSubscription,
    old: &WgPeer,
    devices: &[String],
    default_server: &str,
) -> WgPeer {
    let index = next_device_index(&subscription.name_any(), devices.iter().map(String::as_str));
    let server = subscription_server(subscription, default_server);
    let mut peer = new_device_peer(subscription, index, &server, old.spec.device_name.clone());
    peer.spec.enabled = old.spec.enabled;
    peer
}

/// The JSON merge patch that sets (`true`) or removes (`false`) the subscription's
/// [`ANNOTATION_DEVICES_REMOVED`] mark.
pub fn removed_mark_patch(set: bool) -> serde_json::Value {
    let value = if set { json!("true") } else { json!(null) };
    json!({"metadata": {"annotations": {ANNOTATION_DEVICES_REMOVED: value}}})
}

/// The server-side-apply patch of the user's switch and name on a peer (the fields the api and
/// the bot own). Both are always sent, so the ownership of them never lapses; a removed name is
/// sent as `null` (the field is nullable), not left out: leaving it out would remove it only
/// when these applies alone own it, and the create of a device peer owns it as an update, so
/// the name would stay.
pub fn switch_patch(name: &str, enabled: bool, device_name: Option<&str>) -> serde_json::Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "WgPeer",
        "metadata": {"name": name},
        "spec": {"enabled": enabled, "deviceName": device_name},
    })
}

/// A device write that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The device is gone (deleted meanwhile, or replaced by a newer peer of the same name).
    #[error("the device no longer exists")]
    Gone,
    /// A peer of the new device's name was created meanwhile.
    #[error("another device was added at the same time")]
    Conflict,
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Carries out device writes with one field manager.
#[derive(Clone)]
pub struct DeviceWriter {
    peers: Api<WgPeer>,
    subscriptions: Api<VpnSubscription>,
    field_manager: String,
}

impl std::fmt::Debug for DeviceWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWriter")
            .field("field_manager", &self.field_manager)
            .finish_non_exhaustive()
    }
}

impl DeviceWriter {
    /// Writes in `namespace` as `field_manager`.
    pub fn new(client: kube::Client, namespace: &str, field_manager: &str) -> Self {
        Self {
            peers: Api::namespaced(client.clone(), namespace),
            subscriptions: Api::namespaced(client, namespace),
            field_manager: field_manager.to_owned(),
        }
    }

    /// Reads the subscription `name` from the API server (the bot, which caches none).
    pub async fn subscription(&self, name: &str) -> Result<Option<VpnSubscription>, kube::Error> {
        self.subscriptions.get_opt(name).await
    }

    fn post_params(&self) -> PostParams {
        PostParams {
            field_manager: Some(self.field_manager.clone()),
            ..PostParams::default()
        }
    }

    async fn create(&self, peer: &WgPeer) -> Result<WgPeer, WriteError> {
        match self.peers.create(&self.post_params(), peer).await {
            Ok(created) => Ok(created),
            Err(error) if is_status(&error, 409) => Err(WriteError::Conflict),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes exactly `peer` (its uid as precondition).
    async fn delete_peer(&self, peer: &WgPeer) -> Result<(), WriteError> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: peer.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.peers.delete(&peer.name_any(), &params).await {
            Ok(_) => Ok(()),
            // 404: deleted meanwhile; 409: the name now belongs to a newer peer.
            Err(error) if is_status(&error, 404) || is_status(&error, 409) => Err(WriteError::Gone),
            Err(error) => Err(error.into()),
        }
    }

    async fn mark(&self, subscription: &str, set: bool) -> Result<(), kube::Error> {
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        match self
            .subscriptions
            .patch(
                subscription,
                &params,
                &Patch::Merge(removed_mark_patch(set)),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Creates the peer of a new device ([`device_to_add`]) and removes the subscription's
    /// mark of removed devices, if it carries one (a failure there is logged: the mark only
    /// matters once the user has no device).
    pub async fn add(
        &self,
        subscription: &VpnSubscription,
        peer: &WgPeer,
    ) -> Result<WgPeer, WriteError> {
        let created = self.create(peer).await?;
        self.clear_removed_mark(subscription).await;
        Ok(created)
    }

    /// Removes the subscription's mark of removed devices when it carries one (after the user
    /// added a device); a failure is logged: the mark only matters once the user has no device.
    pub async fn clear_removed_mark(&self, subscription: &VpnSubscription) {
        if !wants_first_device(subscription)
            && let Err(error) = self.mark(&subscription.name_any(), false).await
        {
            tracing::warn!(%error, subscription = %subscription.name_any(),
                "removing the mark of removed devices failed");
        }
    }

    /// Renames `peer` to `device_name` (server-side apply), keeping the user's switch.
    pub async fn rename(&self, peer: &WgPeer, device_name: &str) -> Result<WgPeer, WriteError> {
        let name = peer.name_any();
        let params = PatchParams::apply(&self.field_manager).force();
        let patch = switch_patch(&name, peer.spec.enabled, Some(device_name));
        match self.peers.patch(&name, &params, &Patch::Apply(patch)).await {
            Ok(patched) => Ok(patched),
            Err(error) if is_status(&error, 404) => Err(WriteError::Gone),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the user's device `peer`; `last` says it is the user's only device, so the
    /// subscription `subscription` is marked first (and unmarked again when the delete fails).
    pub async fn delete(
        &self,
        subscription: &str,
        peer: &WgPeer,
        last: bool,
    ) -> Result<(), WriteError> {
        if last {
            self.mark(subscription, true).await?;
        }
        let deleted = self.delete_peer(peer).await;
        if last
            && deleted.is_err()
            && let Err(error) = self.mark(subscription, false).await
        {
            tracing::warn!(%error, subscription, "unmarking after a failed delete failed");
        }
        deleted
    }

    /// Rotates `old`'s key: creates `replacement` ([`replacement_peer`]), then deletes `old`;
    /// when `old` cannot be deleted, the replacement is deleted again. Returns the replacement
    /// as created.
    pub async fn rotate(&self, old: &WgPeer, replacement: &WgPeer) -> Result<WgPeer, WriteError> {
        let created = self.create(replacement).await?;
        match self.delete_peer(old).await {
            Ok(()) => Ok(created),
            Err(error) => {
                if let Err(undo) = self.delete_peer(&created).await {
                    tracing::warn!(error = %undo, peer = %created.name_any(),
                        "deleting the replacement of a device that could not be rotated failed");
                }
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::VpnSubscriptionSpec;

    fn subscription(max_devices: i32, server: Option<&str>) -> VpnSubscription {
        let mut spec = VpnSubscriptionSpec::for_user(42);
        spec.max_devices = max_devices;
        spec.server = server.map(Into::into);
        let mut sub = VpnSubscription::new("tg-42", spec);
        sub.metadata.uid = Some("uid-1".into());
        sub.metadata.namespace = Some("wgsub".into());
        sub
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_next_device_fills_the_first_gap() {
        assert_eq!(next_device_index("tg-1", []), 1);
        assert_eq!(next_device_index("tg-1", ["tg-1-1", "tg-1-2"]), 3);
        assert_eq!(next_device_index("tg-1", ["tg-1-1", "tg-1-3"]), 2);
        assert_eq!(next_device_index("tg-1", ["tg-1-2", "other"]), 1);
    }

    #[test]
    fn a_new_device_peer_is_labelled_owned_and_keyless() {
        let peer = new_device_peer(&subscription(2, None), 2, "main", Some("Laptop".into()));
        assert_eq!(peer.name_any(), "tg-42-2");
        assert_eq!(peer.namespace().as_deref(), Some("wgsub"));
        assert_eq!(peer.labels()[LABEL_SUBSCRIPTION], "tg-42");
        assert_eq!(peer.labels()[LABEL_SERVER], "main");
        let owner = &peer.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("VpnSubscription", "tg-42", "uid-1")
        );
        assert_eq!(owner.api_version, "wgsub.io/v1alpha1");
        assert!(peer.spec.public_key.is_none() && peer.spec.address.is_none());
        assert!(peer.spec.enabled);
        assert!(wgsub_crds::devices::is_users_peer(42, &peer));
    }

    #[test]
    fn a_device_is_added_below_the_limit_only() {
        let sub = subscription(2, Some("fi"));
        let added = device_to_add(&sub, &names(&["tg-42-1"]), "main", None).unwrap();
        assert_eq!(added.name_any(), "tg-42-2");
        assert_eq!(added.spec.server, "fi");
        assert_eq!(
            device_to_add(&sub, &names(&["tg-42-1", "tg-42-3"]), "main", None).unwrap_err(),
            AddRefused::Limit { max: 2 }
        );
        let first = device_to_add(&subscription(1, None), &[], "main", Some("Phone".into()));
        let first = first.unwrap();
        assert_eq!(
            (first.name_any(), first.spec.server, first.spec.device_name),
            ("tg-42-1".into(), "main".into(), Some("Phone".into()))
        );
    }

    #[test]
    fn a_replacement_keeps_name_and_switch_under_a_new_number_without_key_or_address() {
        let sub = subscription(1, None);
        let mut old = new_device_peer(&sub, 1, "main", Some("Phone".into()));
        old.spec.enabled = false;
        old.spec.public_key = Some("old public key".into());
        old.spec.address = Some("10.8.0.2/32".into());
        let new = replacement_peer(&sub, &old, &names(&["tg-42-1"]), "main");
        assert_eq!(new.name_any(), "tg-42-2");
        assert_eq!(new.spec.device_name.as_deref(), Some("Phone"));
        assert!(!new.spec.enabled);
        assert!(new.spec.public_key.is_none() && new.spec.private_key_secret_ref.is_none());
        assert!(new.spec.address.is_none() && new.spec.address6.is_none());
        assert_eq!(new.owner_references()[0].uid, "uid-1");
        // At the limit too: a rotation replaces, it does not add.
        let new = replacement_peer(&sub, &old, &names(&["tg-42-2", "tg-42-1"]), "main");
        assert_eq!(new.name_any(), "tg-42-3");
    }

    #[test]
    fn the_mark_patch_sets_and_removes_only_the_annotation() {
        assert_eq!(
            removed_mark_patch(true),
            json!({"metadata": {"annotations": {"wgsub.io/devices-removed-by-user": "true"}}})
        );
        assert_eq!(
            removed_mark_patch(false),
            json!({"metadata": {"annotations": {"wgsub.io/devices-removed-by-user": null}}})
        );
    }

    #[test]
    fn the_switch_patch_carries_only_the_users_fields() {
        assert_eq!(
            switch_patch("tg-1-1", false, Some("Phone")),
            json!({"apiVersion": "wgsub.io/v1alpha1", "kind": "WgPeer",
                   "metadata": {"name": "tg-1-1"},
                   "spec": {"enabled": false, "deviceName": "Phone"}})
        );
        assert_eq!(
            switch_patch("tg-1-1", true, None)["spec"],
            json!({"enabled": true, "deviceName": null})
        );
    }
}
