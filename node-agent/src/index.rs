//! The in-memory index of what the agent watches: `WgServer`s, `WgPeer`s, whether each
//! `VpnSubscription` is suspended, and the data of Secrets. Watches feed it with `apply_*` /
//! `delete_*`; decisions read it through plain methods, so they are tested on hand-built objects.
//! Secret data is kept zeroized-on-drop and never printed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use wgsub_crds::keys::{KeyError, PresharedKey, PrivateKey};
use wgsub_crds::liveness::PeerLiveness;
use wgsub_crds::resources::{LABEL_SUBSCRIPTION, is_over_limit, is_over_quota};
use wgsub_crds::{
    SecretKeyRef, VpnSubscription, WgPeer, WgPeerSpec, WgPeerStatus, WgServer, WgServerSpec,
};
use zeroize::Zeroizing;

use crate::desired::{PeerInput, PresharedKeyInput};

/// The data of one Secret: key → bytes, zeroized on drop.
#[derive(Default, Clone)]
pub struct SecretData(BTreeMap<String, Zeroizing<Vec<u8>>>);

impl std::fmt::Debug for SecretData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretData {
    pub fn from_secret(secret: &Secret) -> Self {
        let mut out = BTreeMap::new();
        for (key, value) in secret.data.iter().flatten() {
            out.insert(key.clone(), Zeroizing::new(value.0.clone()));
        }
        for (key, value) in secret.string_data.iter().flatten() {
            out.insert(key.clone(), Zeroizing::new(value.as_bytes().to_vec()));
        }
        Self(out)
    }

    fn same_as(&self, other: &SecretData) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((ka, va), (kb, vb))| ka == kb && va.as_slice() == vb.as_slice())
    }

    fn text(&self, key: &str) -> Option<Zeroizing<String>> {
        let bytes = self.0.get(key)?;
        Some(Zeroizing::new(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// The kinds the agent watches; the index is ready when each has been listed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    WgServer,
    WgPeer,
    VpnSubscription,
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::WgServer,
        Kind::WgPeer,
        Kind::VpnSubscription,
        Kind::Secret,
    ];
}

/// The server's private key as found in its Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKey {
    Found(PrivateKey),
    /// The Secret does not exist: the agent creates it.
    SecretMissing,
    /// The Secret exists but lacks the key: left to the user.
    KeyMissing,
    Invalid(KeyError),
}

/// What changed since the agent last looked, as far as the peer decision is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    /// A server or its key changed: decide every peer again.
    pub all: bool,
    /// Peers whose decision inputs may have changed.
    pub peers: BTreeSet<String>,
}

/// What the index keeps of a `WgPeer`: what the decision and the status need, nothing of its
/// metadata but the subscription it belongs to, whether the operator keeps it off for the
/// device limit or the data quota (its `wgsub.io/over-limit` and `wgsub.io/over-quota` labels),
/// its creation time and generation. At 10k peers
/// this is a fraction of the whole object (labels, owner references, uid, resource version).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedPeer {
    pub spec: WgPeerSpec,
    pub subscription: Option<String>,
    pub over_limit: bool,
    pub over_quota: bool,
    pub created: Option<Timestamp>,
    pub generation: Option<i64>,
    pub status: Option<WgPeerStatus>,
}

impl IndexedPeer {
    fn from_object(peer: WgPeer) -> Self {
        Self {
            subscription: Index::subscription_of(&peer),
            over_limit: is_over_limit(&peer),
            over_quota: is_over_quota(&peer),
            created: peer.metadata.creation_timestamp.as_ref().map(|t| t.0),
            generation: peer.metadata.generation,
            spec: peer.spec,
            status: peer.status,
        }
    }
}

/// The index itself.
#[derive(Debug, Default)]
pub struct Index {
    servers: BTreeMap<String, WgServer>,
    /// Boxed: the map's nodes hold pointers, not half-empty slots of whole records.
    peers: BTreeMap<String, Box<IndexedPeer>>,
    suspended: BTreeMap<String, bool>,
    secrets: BTreeMap<String, SecretData>,
    dirty: Dirty,
}

fn strip(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
}

impl Index {
    pub fn apply_server(&mut self, mut server: WgServer) {
        strip(&mut server.metadata);
        let name = server.name_any();
        if self
            .servers
            .get(&name)
            .is_none_or(|old| old.spec != server.spec)
        {
            self.dirty.all = true;
        }
        self.servers.insert(name, server);
    }
    pub fn delete_server(&mut self, name: &str) {
        self.servers.remove(name);
        self.dirty.all = true;
    }
    pub fn apply_peer(&mut self, peer: WgPeer) {
        let name = peer.name_any();
        let peer = IndexedPeer::from_object(peer);
        let inputs_changed = self.peers.get(&name).is_none_or(|old| {
            old.spec != peer.spec
                || old.subscription != peer.subscription
                || old.over_limit != peer.over_limit
                || old.over_quota != peer.over_quota
                || old.created != peer.created
        });
        if inputs_changed {
            self.dirty.peers.insert(name.clone());
        }
        self.peers.insert(name, Box::new(peer));
    }
    pub fn delete_peer(&mut self, name: &str) {
        self.peers.remove(name);
        self.dirty.peers.insert(name.to_owned());
    }
    fn mark_subscription_peers(&mut self, subscription: &str) {
        for (name, peer) in &self.peers {
            if peer.subscription.as_deref() == Some(subscription) {
                self.dirty.peers.insert(name.clone());
            }
        }
    }
    pub fn apply_subscription(&mut self, subscription: &VpnSubscription) {
        let name = subscription.name_any();
        let suspended = subscription.spec.suspended;
        if self.suspended.insert(name.clone(), suspended) != Some(suspended) {
            self.mark_subscription_peers(&name);
        }
    }
    pub fn delete_subscription(&mut self, name: &str) {
        if self.suspended.remove(name).is_some() {
            self.mark_subscription_peers(name);
        }
    }
    fn mark_secret_users(&mut self, secret: &str) {
        if self
            .servers
            .values()
            .any(|s| s.spec.private_key_secret_ref.name == secret)
        {
            self.dirty.all = true;
        }
        for (name, peer) in &self.peers {
            if peer
                .spec
                .preshared_key_secret_ref
                .as_ref()
                .is_some_and(|r| r.name == secret)
            {
                self.dirty.peers.insert(name.clone());
            }
        }
    }
    pub fn apply_secret(&mut self, secret: &Secret) {
        let name = secret.name_any();
        let data = SecretData::from_secret(secret);
        if self
            .secrets
            .get(&name)
            .is_none_or(|old| !old.same_as(&data))
        {
            self.mark_secret_users(&name);
        }
        self.secrets.insert(name, data);
    }
    pub fn delete_secret(&mut self, name: &str) {
        if self.secrets.remove(name).is_some() {
            self.mark_secret_users(name);
        }
    }

    /// What changed since the last call.
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    pub fn server_names(&self) -> BTreeSet<String> {
        self.servers.keys().cloned().collect()
    }
    pub fn peer_names(&self) -> BTreeSet<String> {
        self.peers.keys().cloned().collect()
    }
    pub fn subscription_names(&self) -> BTreeSet<String> {
        self.suspended.keys().cloned().collect()
    }
    pub fn secret_names(&self) -> BTreeSet<String> {
        self.secrets.keys().cloned().collect()
    }

    pub fn server(&self, name: &str) -> Option<&WgServer> {
        self.servers.get(name)
    }

    pub fn peer(&self, name: &str) -> Option<&IndexedPeer> {
        self.peers.get(name).map(|peer| &**peer)
    }

    /// The servers this node serves.
    pub fn servers_for_node(
        &self,
        node: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<&WgServer> {
        self.servers
            .values()
            .filter(|server| serves(&server.spec, node, labels))
            .collect()
    }

    /// The subscription a peer belongs to: its label, else its `VpnSubscription` owner.
    fn subscription_of(peer: &WgPeer) -> Option<String> {
        peer.labels().get(LABEL_SUBSCRIPTION).cloned().or_else(|| {
            peer.owner_references()
                .iter()
                .find(|owner| owner.kind == "VpnSubscription")
                .map(|owner| owner.name.clone())
        })
    }

    fn preshared_key(&self, reference: Option<&SecretKeyRef>) -> PresharedKeyInput {
        let Some(reference) = reference else {
            return PresharedKeyInput::NotUsed;
        };
        match self
            .secrets
            .get(&reference.name)
            .and_then(|s| s.text(&reference.key))
        {
            None => PresharedKeyInput::Missing,
            Some(text) => match PresharedKey::from_base64(&text) {
                Ok(key) => PresharedKeyInput::Found(key),
                Err(_) => PresharedKeyInput::Invalid,
            },
        }
    }

    fn input_of(&self, name: &str, peer: &IndexedPeer) -> PeerInput {
        let suspended = peer
            .subscription
            .as_ref()
            .and_then(|name| self.suspended.get(name).copied())
            .unwrap_or(false);
        PeerInput {
            name: name.to_owned(),
            created: peer.created,
            public_key: peer.spec.public_key.clone(),
            address: peer.spec.address.clone(),
            address6: peer.spec.address6.clone(),
            liveness: PeerLiveness {
                enabled: peer.spec.enabled,
                over_limit: peer.over_limit,
                over_quota: peer.over_quota,
                subscription_suspended: suspended,
                expires_at: peer.spec.expires_at,
            },
            preshared_key: self.preshared_key(peer.spec.preshared_key_secret_ref.as_ref()),
        }
    }

    /// The decision inputs of every peer of `server`.
    pub fn peer_inputs(&self, server: &str) -> Vec<PeerInput> {
        self.peers
            .iter()
            .filter(|(_, peer)| peer.spec.server == server)
            .map(|(name, peer)| self.input_of(name, peer))
            .collect()
    }

    /// The decision input of one peer, if it exists and belongs to `server`.
    pub fn peer_input(&self, server: &str, name: &str) -> Option<PeerInput> {
        self.peers
            .get(name)
            .filter(|peer| peer.spec.server == server)
            .map(|peer| self.input_of(name, peer))
    }

    /// The server's private key from the Secret it names.
    pub fn server_key(&self, spec: &WgServerSpec) -> ServerKey {
        let reference = &spec.private_key_secret_ref;
        let Some(secret) = self.secrets.get(&reference.name) else {
            return ServerKey::SecretMissing;
        };
        match secret.text(&reference.key) {
            None => ServerKey::KeyMissing,
            Some(text) => match PrivateKey::from_base64(&text) {
                Ok(key) => ServerKey::Found(key),
                Err(e) => ServerKey::Invalid(e),
            },
        }
    }
}

/// Whether the agent of `node` (with `labels`) serves a server: its `nodeName` is the node, or
/// every label of its `nodeSelector` matches.
pub fn serves(spec: &WgServerSpec, node: &str, labels: &BTreeMap<String, String>) -> bool {
    match (&spec.node_name, &spec.node_selector) {
        (Some(name), _) => name == node,
        (None, Some(selector)) => selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value)),
        (None, None) => false,
    }
}

/// The index shared between the watches (writers) and the agent loop (reader), with a wake-up
/// for the loop and the readiness of each watch.
#[derive(Debug, Default)]
pub struct SharedIndex {
    index: Mutex<Index>,
    changed: tokio::sync::Notify,
    synced: Mutex<BTreeSet<Kind>>,
    all_synced: tokio::sync::Notify,
}

impl SharedIndex {
    /// Changes the index and wakes the agent loop.
    pub fn update<R>(&self, f: impl FnOnce(&mut Index) -> R) -> R {
        let out = f(&mut self.lock());
        self.changed.notify_one();
        out
    }

    /// Reads the index.
    pub fn read<R>(&self, f: impl FnOnce(&Index) -> R) -> R {
        f(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves plain maps behind; they stay usable.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what changed since the last call (without waking the loop).
    pub fn take_dirty(&self) -> Dirty {
        self.lock().take_dirty()
    }

    /// Waits for the next change.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Records that a watch has listed its kind once.
    pub fn mark_synced(&self, kind: Kind) {
        let all = {
            let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
            synced.insert(kind);
            synced.len() == Kind::ALL.len()
        };
        if all {
            self.all_synced.notify_waiters();
        }
        self.changed.notify_one();
    }

    /// Every watch has listed its kind once.
    pub fn is_synced(&self) -> bool {
        self.synced.lock().unwrap_or_else(|e| e.into_inner()).len() == Kind::ALL.len()
    }

    /// Every watch but `kind`'s has listed its kind once.
    pub fn is_synced_except(&self, kind: Kind) -> bool {
        let synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        Kind::ALL
            .iter()
            .all(|other| *other == kind || synced.contains(other))
    }

    /// Waits until every watch has listed its kind once.
    pub async fn wait_synced(&self) {
        loop {
            let notified = self.all_synced.notified();
            if self.is_synced() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use wgsub_crds::{VpnSubscriptionSpec, WgPeerSpec};

    fn server(node_name: Option<&str>, selector: Option<&[(&str, &str)]>) -> WgServerSpec {
        let mut spec: WgServerSpec = serde_json::from_value(serde_json::json!({
            "endpoint": "vpn.example.com:51820",
            "addressPool": "10.8.0.0/24",
            "privateKeySecretRef": {"name": "main-key"}
        }))
        .unwrap();
        spec.node_name = node_name.map(str::to_owned);
        spec.node_selector = selector.map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        });
        spec
    }

    fn peer(name: &str, subscription_label: Option<&str>, owner: Option<&str>) -> WgPeer {
        let mut peer = WgPeer::new(
            name,
            WgPeerSpec {
                preshared_key_secret_ref: Some(SecretKeyRef::new("psk", "presharedKey")),
                address: Some("10.8.0.2/32".into()),
                ..WgPeerSpec::on_server("main")
            },
        );
        if let Some(label) = subscription_label {
            peer.metadata.labels = Some([(LABEL_SUBSCRIPTION.to_owned(), label.to_owned())].into());
        }
        if let Some(owner) = owner {
            peer.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "wgsub.io/v1alpha1".into(),
                kind: "VpnSubscription".into(),
                name: owner.into(),
                uid: "u".into(),
                ..Default::default()
            }]);
        }
        peer
    }

    fn subscription(name: &str, suspended: bool) -> VpnSubscription {
        let mut spec = VpnSubscriptionSpec::for_user(1);
        spec.suspended = suspended;
        VpnSubscription::new(name, spec)
    }

    fn secret(name: &str, key: &str, value: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.data = Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into());
        secret
    }

    #[test]
    fn node_name_or_every_selector_label_selects_the_server() {
        let labels: BTreeMap<String, String> = [
            ("wgsub.io/vpn".to_owned(), "true".to_owned()),
            ("zone".to_owned(), "a".to_owned()),
        ]
        .into();
        assert!(serves(&server(Some("n1"), None), "n1", &labels));
        assert!(!serves(&server(Some("n2"), None), "n1", &labels));
        assert!(serves(
            &server(None, Some(&[("wgsub.io/vpn", "true")])),
            "n1",
            &labels
        ));
        assert!(!serves(
            &server(None, Some(&[("wgsub.io/vpn", "true"), ("zone", "b")])),
            "n1",
            &labels
        ));
        assert!(!serves(&server(None, None), "n1", &labels));
    }

    #[test]
    fn suspension_is_found_through_the_label_or_the_owner() {
        let mut index = Index::default();
        index.apply_subscription(&subscription("tg-1", true));
        index.apply_subscription(&subscription("tg-2", false));
        index.apply_peer(peer("by-label", Some("tg-1"), None));
        index.apply_peer(peer("by-owner", None, Some("tg-1")));
        index.apply_peer(peer("active", Some("tg-2"), None));
        index.apply_peer(peer("orphan", None, None));
        let inputs: BTreeMap<String, bool> = index
            .peer_inputs("main")
            .into_iter()
            .map(|p| (p.name, p.liveness.subscription_suspended))
            .collect();
        assert_eq!(
            inputs,
            [
                ("active".to_owned(), false),
                ("by-label".to_owned(), true),
                ("by-owner".to_owned(), true),
                ("orphan".to_owned(), false)
            ]
            .into()
        );
        index.delete_subscription("tg-1");
        assert!(
            index
                .peer_inputs("main")
                .iter()
                .all(|p| !p.liveness.subscription_suspended)
        );
        assert!(index.peer_inputs("other").is_empty());
    }

    #[test]
    fn preshared_keys_are_read_from_their_secret() {
        let mut index = Index::default();
        index.apply_peer(peer("p", None, None));
        assert_eq!(
            index.peer_inputs("main")[0].preshared_key,
            PresharedKeyInput::Missing
        );
        let psk = PresharedKey::generate();
        index.apply_secret(&secret("psk", "presharedKey", &psk.to_base64()));
        assert_eq!(
            index.peer_inputs("main")[0].preshared_key,
            PresharedKeyInput::Found(psk)
        );
        index.apply_secret(&secret("psk", "presharedKey", "garbage"));
        assert_eq!(
            index.peer_inputs("main")[0].preshared_key,
            PresharedKeyInput::Invalid
        );
    }

    #[test]
    fn server_key_states() {
        let mut index = Index::default();
        let spec = server(Some("n1"), None);
        assert_eq!(index.server_key(&spec), ServerKey::SecretMissing);
        index.apply_secret(&secret("main-key", "other", "x"));
        assert_eq!(index.server_key(&spec), ServerKey::KeyMissing);
        index.apply_secret(&secret("main-key", "privateKey", "short"));
        assert!(matches!(index.server_key(&spec), ServerKey::Invalid(_)));
        let key = PrivateKey::generate();
        index.apply_secret(&secret(
            "main-key",
            "privateKey",
            &format!("{}\n", key.to_base64().as_str()),
        ));
        assert_eq!(index.server_key(&spec), ServerKey::Found(key));
    }

    #[test]
    fn secret_data_debug_shows_only_key_names() {
        let value = PrivateKey::generate().to_base64();
        let data = SecretData::from_secret(&secret("s", "privateKey", &value));
        let printed = format!("{data:?}");
        assert!(printed.contains("privateKey"));
        assert!(!printed.contains(value.as_str()));
    }

    #[tokio::test]
    async fn readiness_waits_for_every_kind() {
        let shared = std::sync::Arc::new(SharedIndex::default());
        for kind in &Kind::ALL[..3] {
            shared.mark_synced(*kind);
        }
        assert!(!shared.is_synced());
        let waiter = tokio::spawn({
            let shared = shared.clone();
            async move { shared.wait_synced().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        shared.mark_synced(Kind::Secret);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn only_changes_of_decision_inputs_mark_peers_dirty() {
        let mut index = Index::default();
        index.apply_server(WgServer::new("main", server(Some("n1"), None)));
        index.apply_peer(peer("a", Some("tg-1"), None));
        index.apply_peer(peer("b", Some("tg-2"), None));
        let first = index.take_dirty();
        assert!(first.all);
        assert_eq!(first.peers, ["a".to_owned(), "b".to_owned()].into());
        assert_eq!(index.take_dirty(), Dirty::default());

        // A status echo is not a change of inputs.
        let mut echoed = peer("a", Some("tg-1"), None);
        echoed.status = Some(wgsub_crds::WgPeerStatus::default());
        index.apply_peer(echoed);
        let mut server_echo = WgServer::new("main", server(Some("n1"), None));
        server_echo.status = Some(wgsub_crds::WgServerStatus::default());
        index.apply_server(server_echo);
        assert_eq!(index.take_dirty(), Dirty::default());

        let mut disabled = peer("a", Some("tg-1"), None);
        disabled.spec.enabled = false;
        index.apply_peer(disabled);
        assert_eq!(index.take_dirty().peers, ["a".to_owned()].into());

        // The operator's device-limit label is an input of the peer's liveness.
        let mut over_limit = peer("b", Some("tg-2"), None);
        over_limit.labels_mut().insert(
            wgsub_crds::resources::LABEL_OVER_LIMIT.into(),
            "true".into(),
        );
        index.apply_peer(over_limit);
        assert_eq!(index.take_dirty().peers, ["b".to_owned()].into());
        assert!(index.peer_input("main", "b").unwrap().liveness.over_limit);
        index.apply_peer(peer("b", Some("tg-2"), None));
        assert_eq!(index.take_dirty().peers, ["b".to_owned()].into());
        assert!(!index.peer_input("main", "b").unwrap().liveness.over_limit);

        // So is its data-quota label.
        let mut over_quota = peer("b", Some("tg-2"), None);
        over_quota.labels_mut().insert(
            wgsub_crds::resources::LABEL_OVER_QUOTA.into(),
            "true".into(),
        );
        index.apply_peer(over_quota);
        assert_eq!(index.take_dirty().peers, ["b".to_owned()].into());
        assert!(index.peer_input("main", "b").unwrap().liveness.over_quota);
        index.apply_peer(peer("b", Some("tg-2"), None));
        assert_eq!(index.take_dirty().peers, ["b".to_owned()].into());
        assert!(!index.peer_input("main", "b").unwrap().liveness.over_quota);

        index.apply_subscription(&subscription("tg-2", true));
        assert_eq!(index.take_dirty().peers, ["b".to_owned()].into());
        index.apply_subscription(&subscription("tg-2", true));
        assert_eq!(index.take_dirty(), Dirty::default());

        index.apply_secret(&secret("psk", "presharedKey", "x"));
        assert_eq!(
            index.take_dirty().peers,
            ["a".to_owned(), "b".to_owned()].into()
        );
        index.apply_secret(&secret("main-key", "privateKey", "x"));
        assert!(index.take_dirty().all);
        index.apply_secret(&secret("unrelated", "k", "x"));
        assert_eq!(index.take_dirty(), Dirty::default());
        index.delete_peer("a");
        assert_eq!(index.take_dirty().peers, ["a".to_owned()].into());
        assert!(index.peer_input("main", "a").is_none());
        assert!(index.peer_input("main", "b").is_some());
        assert!(index.peer_input("other", "b").is_none());
    }
}
