//! The server-side apply bodies the operator sends: a `WgPeer`'s operator-owned fields, a key
//! `Secret` (in the peer keys namespace), a `VpnSubscription` status. Pure builders, so what the operator claims ownership of
//! is visible (and tested) in one place: never `enabled` or `deviceName`, which belong to the API.
//! A device over its subscription's limit carries the operator's own `wgsub.io/over-limit`
//! label, and every device of a subscription that used up its data quota the
//! `wgsub.io/over-quota` label; each is left out otherwise, so server-side apply removes it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use wgsub_crds::resources::{
    LABEL_OVER_LIMIT, LABEL_OVER_QUOTA, LABEL_PEER, LABEL_SERVER, LABEL_SUBSCRIPTION,
};
use wgsub_crds::{VpnSubscription, VpnSubscriptionStatus};

use crate::decision::{ANNOTATION_WRITTEN_AT, DesiredPeer, KEY_ID, LABEL_PEER_UID, NewKey};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "wgsub-operator";

/// Why a body could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("{kind} {name} has no uid yet, so nothing can be owned by it")]
    NoUid { kind: &'static str, name: String },
}

fn controller_ref<K: Resource<DynamicType = ()>>(
    owner: &K,
    kind: &'static str,
) -> Result<OwnerReference, PatchError> {
    owner
        .controller_owner_ref(&())
        .ok_or_else(|| PatchError::NoUid {
            kind,
            name: owner.name_any(),
        })
}

/// The apply body of a peer: labels, controller owner (the subscription) and the spec fields
/// the operator owns.
pub fn peer_apply(
    subscription: &VpnSubscription,
    desired: &DesiredPeer,
) -> Result<Value, PatchError> {
    let owner = controller_ref(subscription, "VpnSubscription")?;
    let mut spec = serde_json::Map::new();
    spec.insert("server".into(), json!(desired.server));
    if let Some(key) = &desired.public_key {
        spec.insert("publicKey".into(), json!(key));
    }
    if let Some(reference) = &desired.private_key_secret_ref {
        spec.insert(
            "privateKeySecretRef".into(),
            json!({"name": reference.name, "key": reference.key}),
        );
    }
    if let Some(address) = &desired.address {
        spec.insert("address".into(), json!(address));
    }
    if let Some(address) = &desired.address6 {
        spec.insert("address6".into(), json!(address));
    }
    if let Some(at) = desired.expires_at {
        spec.insert("expiresAt".into(), json!(at));
    }
    let mut labels = json!({
        LABEL_SUBSCRIPTION: subscription.name_any(),
        LABEL_SERVER: desired.server,
    });
    if desired.over_limit {
        labels[LABEL_OVER_LIMIT] = json!("true");
    }
    if desired.over_quota {
        labels[LABEL_OVER_QUOTA] = json!("true");
    }
    let mut metadata = json!({
        "name": desired.name,
        "labels": labels,
        "ownerReferences": [owner],
    });
    if let Some(id) = &desired.key_id {
        metadata["annotations"] = json!({ KEY_ID: id });
    }
    Ok(json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "WgPeer",
        "metadata": metadata,
        "spec": spec,
    }))
}

/// The key Secret of the peer `peer` of `subscription`, for the namespace `keys_namespace`,
/// written at `written_at` ([`ANNOTATION_WRITTEN_AT`]) before the peer is written with the key:
/// labelled with the peer's name, the subscription and the key's [`KEY_ID`], and with the peer's
/// uid ([`LABEL_PEER_UID`]) when the peer exists already. In the peer's own namespace it is owned
/// by the peer when that exists, else by the subscription (so the garbage collector deletes it
/// with either); elsewhere no owner reference can reach them and the operator deletes it itself
/// (see `key_cleanup`, which also collects the keys of deleted peers in the peer's namespace).
pub fn key_secret(
    subscription: &VpnSubscription,
    peer: &str,
    key: &NewKey,
    keys_namespace: &str,
    written_at: Timestamp,
) -> Result<Secret, PatchError> {
    let same_namespace = subscription.namespace().as_deref() == Some(keys_namespace);
    let owner = if same_namespace {
        Some(match &key.peer_uid {
            Some(uid) => OwnerReference {
                api_version: "wgsub.io/v1alpha1".to_owned(),
                kind: "WgPeer".to_owned(),
                name: peer.to_owned(),
                uid: uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            None => controller_ref(subscription, "VpnSubscription")?,
        })
    } else {
        None
    };
    let mut labels = BTreeMap::from([
        (LABEL_PEER.to_owned(), peer.to_owned()),
        (LABEL_SUBSCRIPTION.to_owned(), subscription.name_any()),
        (KEY_ID.to_owned(), key.id()),
    ]);
    if let Some(uid) = &key.peer_uid {
        labels.insert(LABEL_PEER_UID.to_owned(), uid.clone());
    }
    let text = key.private_key.to_base64();
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(key.reference.name.clone()),
            namespace: Some(keys_namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_WRITTEN_AT.to_owned(),
                written_at.to_string(),
            )])),
            owner_references: owner.map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            key.reference.key.clone(),
            ByteString(text.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

/// The apply body of a subscription's status. `peers` and `devicesOverLimit` are always sent,
/// also when empty, so the lists empty whatever merge the server applies.
pub fn status_apply(status: &VpnSubscriptionStatus) -> Value {
    let mut body = json!({
        "apiVersion": "wgsub.io/v1alpha1",
        "kind": "VpnSubscription",
        "status": status,
    });
    body["status"]["peers"] = json!(status.peers);
    body["status"]["devicesOverLimit"] = json!(status.devices_over_limit);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::keys::PrivateKey;
    use wgsub_crds::{SecretKeyRef, VpnSubscriptionSpec, WgPeer};

    fn subscription() -> VpnSubscription {
        let mut sub = VpnSubscription::new("tg-7", VpnSubscriptionSpec::for_user(7));
        sub.metadata.uid = Some("sub-uid".into());
        sub
    }

    fn desired() -> DesiredPeer {
        DesiredPeer {
            name: "tg-7-1".into(),
            server: "wg".into(),
            public_key: Some(PrivateKey::generate().public_key().to_base64()),
            private_key_secret_ref: Some(SecretKeyRef::new("tg-7-1-key", "privateKey")),
            address: Some("10.8.0.2/32".into()),
            address6: Some("fd00::2/128".into()),
            expires_at: Some("2030-01-01T00:00:00Z".parse().unwrap()),
            over_limit: false,
            over_quota: false,
            key_id: None,
        }
    }

    #[test]
    fn status_apply_always_carries_the_peer_lists() {
        let body = status_apply(&VpnSubscriptionStatus::default());
        assert_eq!(body["status"]["peers"], json!([]));
        assert_eq!(body["status"]["devicesOverLimit"], json!([]));
        assert_eq!(body["kind"], "VpnSubscription");
    }

    #[test]
    fn peer_apply_never_claims_the_api_fields() {
        let body = peer_apply(&subscription(), &desired()).unwrap();
        let spec = body["spec"].as_object().unwrap();
        assert!(!spec.contains_key("enabled"));
        assert!(!spec.contains_key("deviceName"));
        assert_eq!(spec["address"], "10.8.0.2/32");
        assert_eq!(spec["address6"], "fd00::2/128");
        assert_eq!(spec["expiresAt"], "2030-01-01T00:00:00Z");
        assert_eq!(spec["privateKeySecretRef"]["name"], "tg-7-1-key");
    }

    #[test]
    fn peer_apply_labels_and_is_controlled_by_the_subscription() {
        let body = peer_apply(&subscription(), &desired()).unwrap();
        assert_eq!(body["metadata"]["labels"][LABEL_SUBSCRIPTION], "tg-7");
        assert_eq!(body["metadata"]["labels"][LABEL_SERVER], "wg");
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], "sub-uid");
        assert_eq!(owner["kind"], "VpnSubscription");
        assert_eq!(owner["controller"], true);
        let back: WgPeer = serde_json::from_value(body).unwrap();
        assert!(
            back.spec.enabled,
            "enabled defaults to true when the API never set it"
        );
    }

    #[test]
    fn the_over_limit_label_is_sent_only_for_a_device_over_the_limit() {
        let within = peer_apply(&subscription(), &desired()).unwrap();
        assert!(within["metadata"]["labels"].get(LABEL_OVER_LIMIT).is_none());
        let over = DesiredPeer {
            over_limit: true,
            ..desired()
        };
        let body = peer_apply(&subscription(), &over).unwrap();
        assert_eq!(body["metadata"]["labels"][LABEL_OVER_LIMIT], "true");
        assert!(!body["spec"].as_object().unwrap().contains_key("enabled"));
        let back: WgPeer = serde_json::from_value(body).unwrap();
        assert!(wgsub_crds::resources::is_over_limit(&back));
    }

    #[test]
    fn the_over_quota_label_is_sent_only_for_a_device_of_an_exhausted_subscription() {
        let within = peer_apply(&subscription(), &desired()).unwrap();
        assert!(within["metadata"]["labels"].get(LABEL_OVER_QUOTA).is_none());
        let over = DesiredPeer {
            over_quota: true,
            ..desired()
        };
        let body = peer_apply(&subscription(), &over).unwrap();
        assert_eq!(body["metadata"]["labels"][LABEL_OVER_QUOTA], "true");
        assert!(body["metadata"]["labels"].get(LABEL_OVER_LIMIT).is_none());
        assert!(!body["spec"].as_object().unwrap().contains_key("enabled"));
        let back: WgPeer = serde_json::from_value(body).unwrap();
        assert!(wgsub_crds::resources::is_over_quota(&back));
        assert!(!wgsub_crds::resources::is_over_limit(&back));
    }

    #[test]
    fn peer_apply_omits_absent_fields() {
        let mut bare = desired();
        bare.public_key = None;
        bare.private_key_secret_ref = None;
        bare.address6 = None;
        let body = peer_apply(&subscription(), &bare).unwrap();
        let spec = body["spec"].as_object().unwrap();
        assert!(!spec.contains_key("publicKey"));
        assert!(!spec.contains_key("privateKeySecretRef"));
        assert!(!spec.contains_key("address6"));
    }

    #[test]
    fn nothing_is_owned_by_an_object_without_uid() {
        let mut sub = subscription();
        sub.metadata.uid = None;
        let err = peer_apply(&sub, &desired()).unwrap_err();
        assert!(err.to_string().contains("tg-7"));
    }

    #[test]
    fn the_key_id_goes_on_the_peer_as_an_annotation_only_when_known() {
        let without = peer_apply(&subscription(), &desired()).unwrap();
        assert!(without["metadata"].get("annotations").is_none());
        let keyed = DesiredPeer {
            key_id: Some("00ff".into()),
            ..desired()
        };
        let body = peer_apply(&subscription(), &keyed).unwrap();
        assert_eq!(body["metadata"]["annotations"][KEY_ID], "00ff");
    }

    fn new_key(peer_uid: Option<&str>) -> NewKey {
        NewKey {
            reference: SecretKeyRef::new("tg-7-1-key", "privateKey"),
            private_key: PrivateKey::generate(),
            peer_uid: peer_uid.map(str::to_owned),
        }
    }

    fn in_namespace(namespace: &str) -> VpnSubscription {
        let mut sub = subscription();
        sub.metadata.namespace = Some(namespace.into());
        sub
    }

    #[test]
    fn a_key_secret_carries_the_peer_subscription_key_id_and_write_time() {
        let key = new_key(None);
        let at: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let secret = key_secret(&in_namespace("vpn"), "tg-7-1", &key, "vpn-keys", at).unwrap();
        assert_eq!(secret.namespace().as_deref(), Some("vpn-keys"));
        assert_eq!(secret.labels()[LABEL_PEER], "tg-7-1");
        assert_eq!(secret.labels()[LABEL_SUBSCRIPTION], "tg-7");
        assert_eq!(secret.labels()[KEY_ID], key.id());
        assert_eq!(
            key.id(),
            crate::decision::key_id(&key.private_key.public_key())
        );
        assert!(!secret.labels().contains_key(LABEL_PEER_UID));
        assert_eq!(
            secret.annotations()[ANNOTATION_WRITTEN_AT],
            "2030-01-01T00:00:00Z"
        );
        assert!(
            secret.metadata.owner_references.is_none(),
            "an owner reference across namespaces would make the collector delete the key"
        );
        let stored = &secret.data.as_ref().unwrap()["privateKey"].0;
        assert_eq!(
            PrivateKey::from_base64(std::str::from_utf8(stored).unwrap()).unwrap(),
            key.private_key
        );
    }

    #[test]
    fn a_key_of_an_existing_peer_also_carries_its_uid() {
        let at = Timestamp::UNIX_EPOCH;
        let secret = key_secret(
            &in_namespace("vpn"),
            "tg-7-1",
            &new_key(Some("peer-uid")),
            "vpn-keys",
            at,
        )
        .unwrap();
        assert_eq!(secret.labels()[LABEL_PEER_UID], "peer-uid");
        assert!(secret.metadata.owner_references.is_none());
    }

    #[test]
    fn beside_its_peer_a_key_is_owned_by_the_peer_or_before_it_exists_by_the_subscription() {
        let at = Timestamp::UNIX_EPOCH;
        let sub = in_namespace("vpn");
        let existing = key_secret(&sub, "tg-7-1", &new_key(Some("peer-uid")), "vpn", at).unwrap();
        let owner = &existing.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("WgPeer", "tg-7-1", "peer-uid")
        );
        assert_eq!(owner.controller, Some(true));
        let fresh = key_secret(&sub, "tg-7-1", &new_key(None), "vpn", at).unwrap();
        let owner = &fresh.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("VpnSubscription", "sub-uid")
        );
    }
}
