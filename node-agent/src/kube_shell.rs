//! The Kubernetes shell: watches that feed the [`SharedIndex`] (WgServers, WgPeers,
//! VpnSubscriptions for `suspended`, and the Secrets of the server keys namespace for the server
//! and preshared keys — the agent is granted no Secret of its own namespace),
//! the node's labels, creating a missing server key Secret, and status writes — batched through a
//! latest-wins queue and rate-limited, sent with server-side apply on the status subresource
//! under the field manager `wgsub-node-agent`. Every call made here is listed in
//! `node-agent/api-calls.yaml`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::object::HasStatus;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::resources::{LABEL_PEER, LABEL_SERVER};
use wgsub_crds::{
    SecretKeyRef, VpnSubscription, WgPeer, WgPeerSpec, WgPeerStatus, WgServer, WgServerStatus,
};

use crate::index::{Index, Kind, SharedIndex};
use crate::metrics::{Metrics, WriteLabels};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "wgsub-node-agent";

/// A watched kind and how its objects go into the index.
pub trait Indexed:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static
{
    const KIND: Kind;
    fn apply(index: &mut Index, object: Self);
    fn delete(index: &mut Index, name: &str);
    fn names(index: &Index) -> BTreeSet<String>;
}

/// Implements [`Indexed`] for `$ty`: its [`Kind`], how one object goes into the index, and
/// the index's methods that delete one by name and list the names.
macro_rules! indexed {
    ($ty:ty, $kind:expr, $apply:expr, $delete:path, $names:path) => {
        impl Indexed for $ty {
            const KIND: Kind = $kind;
            fn apply(index: &mut Index, object: Self) {
                let apply: fn(&mut Index, Self) = $apply;
                apply(index, object);
            }
            fn delete(index: &mut Index, name: &str) {
                $delete(index, name);
            }
            fn names(index: &Index) -> BTreeSet<String> {
                $names(index)
            }
        }
    };
}

indexed!(
    WgServer,
    Kind::WgServer,
    Index::apply_server,
    Index::delete_server,
    Index::server_names
);
indexed!(
    WatchedPeer,
    Kind::WgPeer,
    |index, peer| index.apply_peer(peer.0),
    Index::delete_peer,
    Index::peer_names
);
indexed!(
    VpnSubscription,
    Kind::VpnSubscription,
    |index, sub| index.apply_subscription(&sub),
    Index::delete_subscription,
    Index::subscription_names
);
indexed!(
    Secret,
    Kind::Secret,
    |index, secret| index.apply_secret(&secret),
    Index::delete_secret,
    Index::secret_names
);

/// A `WgPeer` as the agent decodes it from list and watch responses. Only the metadata the
/// agent reads is decoded (name, namespace, uid, resource version, generation, creation and
/// deletion time, labels, owner references); `managedFields`, annotations and the rest are
/// skipped by the parser, never built — at 10k peers with several field managers each they
/// are most of the list's bytes.
#[derive(Debug, Clone)]
pub struct WatchedPeer(pub WgPeer);

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(serde::Deserialize)]
struct LeanPeer {
    metadata: LeanMeta,
    spec: WgPeerSpec,
    #[serde(default)]
    status: Option<WgPeerStatus>,
}

impl<'de> serde::Deserialize<'de> for WatchedPeer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let LeanPeer {
            metadata,
            spec,
            status,
        } = LeanPeer::deserialize(deserializer)?;
        let mut peer = WgPeer::new(metadata.name.as_deref().unwrap_or_default(), spec);
        peer.metadata = ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            resource_version: metadata.resource_version,
            generation: metadata.generation,
            creation_timestamp: metadata.creation_timestamp,
            deletion_timestamp: metadata.deletion_timestamp,
            labels: metadata.labels,
            owner_references: metadata.owner_references,
            ..ObjectMeta::default()
        };
        peer.status = status;
        Ok(WatchedPeer(peer))
    }
}

impl Resource for WatchedPeer {
    type DynamicType = ();
    type Scope = <WgPeer as Resource>::Scope;
    fn kind(dt: &()) -> Cow<'_, str> {
        WgPeer::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        WgPeer::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        WgPeer::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        WgPeer::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// Feeds one watch event into the index; `listed` collects names during a relist so objects
/// that vanished while the watch was down are dropped at `InitDone`. Public so the benchmark
/// fills the index exactly as the watches do.
pub fn feed<K: Indexed>(shared: &SharedIndex, listed: &mut BTreeSet<String>, event: Event<K>) {
    match event {
        Event::Init => listed.clear(),
        Event::InitApply(object) => {
            listed.insert(object.name_any());
            shared.update(|index| K::apply(index, object));
        }
        Event::InitDone => {
            let stale: Vec<String> = shared
                .read(K::names)
                .into_iter()
                .filter(|name| !listed.contains(name))
                .collect();
            shared.update(|index| {
                for name in &stale {
                    K::delete(index, name);
                }
            });
            shared.mark_synced(K::KIND);
        }
        Event::Apply(object) => shared.update(|index| K::apply(index, object)),
        Event::Delete(object) => shared.update(|index| K::delete(index, &object.name_any())),
    }
}

async fn watch_kind<K>(
    client: &Client,
    namespace: &str,
    config: watcher::Config,
    shared: &SharedIndex,
    shutdown: &CancellationToken,
) where
    K: Indexed + Resource<Scope = kube::core::NamespaceResourceScope>,
{
    let mut listed = BTreeSet::new();
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            next = stream.next() => match next {
                Some(Ok(event)) => feed(shared, &mut listed, event),
                Some(Err(error)) => tracing::warn!(kind = ?K::KIND, %error, "watch error; retrying"),
                None => return,
            },
        }
    }
}

/// The Secrets the agent watches: every Secret of the server keys namespace but any labelled
/// `wgsub.io/peer` (a device's private key, which a server never needs; the operator writes
/// those to the peer keys namespace, out of the agent's reach).
fn secret_selector() -> String {
    format!("!{LABEL_PEER}")
}

/// Runs the four watches until `shutdown`: the custom resources of `namespace` and the Secrets
/// of `server_keys_namespace`.
pub async fn run_watches(
    client: Client,
    namespace: &str,
    server_keys_namespace: &str,
    shared: Arc<SharedIndex>,
    shutdown: CancellationToken,
) {
    let (shared, shutdown) = (&*shared, &shutdown);
    let config = watcher::Config::default;
    tokio::join!(
        watch_kind::<WgServer>(&client, namespace, config(), shared, shutdown),
        watch_kind::<WatchedPeer>(&client, namespace, config(), shared, shutdown),
        watch_kind::<VpnSubscription>(&client, namespace, config(), shared, shutdown),
        watch_kind::<Secret>(
            &client,
            server_keys_namespace,
            config().labels(&secret_selector()),
            shared,
            shutdown
        ),
    );
}

/// The Kubernetes calls the agent loop makes.
#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    namespace: String,
    server_keys_namespace: String,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("namespace", &self.namespace)
            .field("server_keys_namespace", &self.server_keys_namespace)
            .finish()
    }
}

impl KubeApi {
    /// The calls on `namespace`, with the server keys in the same namespace until
    /// [`Self::with_server_keys_namespace`] says otherwise.
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Self {
            client,
            server_keys_namespace: namespace.clone(),
            namespace,
        }
    }

    /// Server key Secrets are created (and read back) in `namespace`.
    pub fn with_server_keys_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.server_keys_namespace = namespace.into();
        self
    }

    /// The labels of this node (for `nodeSelector`).
    pub async fn node_labels(&self, node: &str) -> Result<BTreeMap<String, String>, kube::Error> {
        let node = Api::<Node>::all(self.client.clone()).get(node).await?;
        Ok(node.metadata.labels.unwrap_or_default())
    }

    /// Creates the Secret holding a new server key, in the server keys namespace. An existing
    /// Secret is never overwritten: when one appeared meanwhile, that one is returned.
    pub async fn create_server_secret(
        &self,
        server: &str,
        reference: &SecretKeyRef,
        key: &PrivateKey,
    ) -> Result<Secret, kube::Error> {
        let api = Api::<Secret>::namespaced(self.client.clone(), &self.server_keys_namespace);
        let mut secret = Secret::default();
        secret.metadata.name = Some(reference.name.clone());
        secret.metadata.namespace = Some(self.server_keys_namespace.clone());
        secret.metadata.labels = Some([(LABEL_SERVER.to_owned(), server.to_owned())].into());
        secret.type_ = Some("Opaque".into());
        secret.data = Some(
            [(
                reference.key.clone(),
                ByteString(key.to_base64().as_bytes().to_vec()),
            )]
            .into(),
        );
        match api.create(&PostParams::default(), &secret).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(status)) if status.code == 409 => api.get(&reference.name).await,
            Err(other) => Err(other),
        }
    }

    /// Writes the status of the `K` named `name` (a peer's or a server's) by server-side apply
    /// on its `status` subresource, as [`FIELD_MANAGER`].
    pub async fn patch_status<K>(&self, name: &str, status: &K::Status) -> Result<(), kube::Error>
    where
        K: HasStatus<Status: serde::Serialize>
            + Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = Api::<K>::namespaced(self.client.clone(), &self.namespace);
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        api.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(drop)
    }
}

/// One queued status write.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusWrite {
    Peer(WgPeerStatus),
    Server(WgServerStatus),
}

/// Which object a write is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Peer(String),
    Server(String),
}

/// How soon a queued status write should go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A change users wait on (first `Ready`, a cut, a new reason or generation): sent before
    /// every routine write.
    Urgent,
    /// Counters and handshakes: sent when no urgent write waits.
    Routine,
}

/// Status writes that may be in flight at once.
const WRITES_IN_FLIGHT: usize = 4;

/// The latest-wins queue of status writes between the agent loop and the writer task, in two
/// lanes: urgent writes go out before routine ones.
#[derive(Debug, Default)]
pub struct StatusQueue {
    pending: Mutex<Lanes>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Lanes {
    urgent: BTreeMap<Target, StatusWrite>,
    routine: BTreeMap<Target, StatusWrite>,
}

impl StatusQueue {
    /// Queues a write, replacing an older unsent write for the same object. A routine write
    /// that replaces an unsent urgent one stays urgent: it carries the urgent change too.
    pub fn push(&self, target: Target, write: StatusWrite, priority: Priority) {
        {
            let mut lanes = self.lock();
            if priority == Priority::Urgent || lanes.urgent.contains_key(&target) {
                lanes.routine.remove(&target);
                lanes.urgent.insert(target, write);
            } else {
                lanes.routine.insert(target, write);
            }
        }
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pop(&self) -> Option<(Target, StatusWrite)> {
        let mut lanes = self.lock();
        lanes
            .urgent
            .pop_first()
            .or_else(|| lanes.routine.pop_first())
    }

    /// Puts back a write that failed, unless a newer one for the object is queued.
    fn retry(&self, target: Target, write: StatusWrite) {
        let mut lanes = self.lock();
        if !lanes.routine.contains_key(&target) {
            lanes.urgent.entry(target).or_insert(write);
        }
    }

    /// Writes still waiting.
    pub fn len(&self) -> usize {
        let lanes = self.lock();
        lanes.urgent.len() + lanes.routine.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends queued writes until `shutdown`: at most `per_second` a second on average, with
    /// bursts of up to a second's worth (so a batch of new peers reads `Ready` at once) and up
    /// to `WRITES_IN_FLIGHT` at a time. Failed writes are queued again unless the object is
    /// gone (404) or a newer write replaced them.
    pub async fn run_writer(
        self: Arc<Self>,
        api: KubeApi,
        per_second: u32,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let per_second = per_second.max(1);
        let mut bucket = TokenBucket::new(per_second, tokio::time::Instant::now());
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            while in_flight.len() >= WRITES_IN_FLIGHT {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = in_flight.join_next() => {}
                }
            }
            let Some((target, write)) = self.pop() else {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.wake.notified() => continue,
                    Some(_) = in_flight.join_next() => continue,
                }
            };
            if let Err(wait) = bucket.take(tokio::time::Instant::now()) {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                bucket
                    .take(tokio::time::Instant::now())
                    .expect("a token is due after the wait");
            }
            let queue = Arc::clone(&self);
            let api = api.clone();
            let metrics = Arc::clone(&metrics);
            in_flight.spawn(async move { queue.write(&api, target, write, &metrics).await });
        }
    }

    async fn write(&self, api: &KubeApi, target: Target, write: StatusWrite, metrics: &Metrics) {
        let (result, resource) = match (&target, &write) {
            (Target::Peer(name), StatusWrite::Peer(status)) => {
                (api.patch_status::<WgPeer>(name, status).await, "wgpeers")
            }
            (Target::Server(name), StatusWrite::Server(status)) => (
                api.patch_status::<WgServer>(name, status).await,
                "wgservers",
            ),
            _ => return,
        };
        let outcome = match result {
            Ok(()) => "ok",
            Err(kube::Error::Api(status)) if status.code == 404 => "gone",
            Err(error) => {
                tracing::warn!(?target, %error, "status write failed; will retry");
                self.retry(target, write);
                "error"
            }
        };
        metrics
            .status_writes
            .get_or_create(&WriteLabels {
                resource,
                result: outcome,
            })
            .inc();
    }
}

/// A token bucket holding at most `per_second` tokens, refilled at `per_second` a second.
#[derive(Debug)]
struct TokenBucket {
    per_second: u32,
    tokens: f64,
    at: tokio::time::Instant,
}

impl TokenBucket {
    fn new(per_second: u32, now: tokio::time::Instant) -> Self {
        Self {
            per_second,
            tokens: f64::from(per_second),
            at: now,
        }
    }

    /// Takes a token, or says how long until one is due.
    fn take(&mut self, now: tokio::time::Instant) -> Result<(), Duration> {
        let rate = f64::from(self.per_second);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_peer_keeps_what_the_agent_reads_and_drops_managed_fields() {
        let json = serde_json::json!({
            "apiVersion": "wgsub.io/v1alpha1",
            "kind": "WgPeer",
            "metadata": {
                "name": "tg-1-1", "namespace": "vpn", "uid": "u-1", "resourceVersion": "7",
                "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"wgsub.io/subscription": "tg-1"},
                "annotations": {"note": "x"},
                "ownerReferences": [{"apiVersion": "wgsub.io/v1alpha1", "kind": "VpnSubscription",
                    "name": "tg-1", "uid": "s-1"}],
                "managedFields": [{"manager": "wgsub-operator", "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:enabled": {}}}}]
            },
            "spec": {"server": "main", "address": "10.8.0.2/32", "enabled": true},
            "status": {"active": true, "rxBytes": 5}
        });
        let full: WgPeer = serde_json::from_value(json.clone()).unwrap();
        let WatchedPeer(lean) = serde_json::from_value(json).unwrap();
        assert_eq!(lean.spec, full.spec);
        assert_eq!(lean.status, full.status);
        let mut expected = full.metadata.clone();
        expected.managed_fields = None;
        expected.annotations = None;
        assert_eq!(lean.metadata, expected);
        assert_eq!(
            WatchedPeer::url_path(&(), Some("vpn")),
            WgPeer::url_path(&(), Some("vpn"))
        );
    }

    #[test]
    fn queue_keeps_only_the_latest_write_per_object() {
        let queue = StatusQueue::default();
        let first = WgPeerStatus {
            rx_bytes: 1,
            ..Default::default()
        };
        let second = WgPeerStatus {
            rx_bytes: 2,
            ..Default::default()
        };
        queue.push(
            Target::Peer("a".into()),
            StatusWrite::Peer(first),
            Priority::Routine,
        );
        queue.push(
            Target::Peer("a".into()),
            StatusWrite::Peer(second.clone()),
            Priority::Routine,
        );
        queue.push(
            Target::Server("s".into()),
            StatusWrite::Server(WgServerStatus::default()),
            Priority::Routine,
        );
        assert_eq!(queue.len(), 2);
        assert_eq!(
            queue.pop(),
            Some((Target::Peer("a".into()), StatusWrite::Peer(second)))
        );
        assert!(matches!(queue.pop(), Some((Target::Server(_), _))));
        assert!(queue.is_empty());
    }

    fn peer_write(rx_bytes: i64) -> StatusWrite {
        StatusWrite::Peer(WgPeerStatus {
            rx_bytes,
            ..Default::default()
        })
    }

    #[test]
    fn urgent_writes_go_before_routine_ones_and_a_later_routine_write_keeps_them_urgent() {
        let queue = StatusQueue::default();
        let peer = |name: &str| Target::Peer(name.into());
        queue.push(peer("a"), peer_write(1), Priority::Routine);
        queue.push(peer("b"), peer_write(1), Priority::Routine);
        queue.push(peer("z"), peer_write(1), Priority::Urgent);
        queue.push(peer("z"), peer_write(2), Priority::Routine);
        queue.push(peer("b"), peer_write(2), Priority::Urgent);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.pop(), Some((peer("b"), peer_write(2))));
        assert_eq!(queue.pop(), Some((peer("z"), peer_write(2))));
        assert_eq!(queue.pop(), Some((peer("a"), peer_write(1))));
        assert!(queue.is_empty());
    }

    #[test]
    fn a_failed_write_is_retried_urgently_unless_a_newer_write_is_queued() {
        let queue = StatusQueue::default();
        let peer = |name: &str| Target::Peer(name.into());
        queue.retry(peer("a"), peer_write(1));
        queue.push(peer("b"), peer_write(2), Priority::Routine);
        queue.retry(peer("b"), peer_write(1));
        assert_eq!(queue.pop(), Some((peer("a"), peer_write(1))));
        assert_eq!(queue.pop(), Some((peer("b"), peer_write(2))));
        assert!(queue.is_empty());
    }

    #[test]
    fn the_bucket_allows_a_second_of_writes_at_once_then_the_rate() {
        let start = tokio::time::Instant::now();
        let mut bucket = TokenBucket::new(20, start);
        for _ in 0..20 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        let wait = bucket.take(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(50));
        assert_eq!(bucket.take(start + Duration::from_millis(50)), Ok(()));
        assert!(bucket.take(start + Duration::from_millis(60)).is_err());
        // Idle time refills at most one second's worth.
        let later = start + Duration::from_secs(60);
        for _ in 0..20 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn a_relist_drops_objects_that_vanished() {
        let shared = SharedIndex::default();
        let mut listed = BTreeSet::new();
        let peer = |name: &str| {
            WatchedPeer(WgPeer::new(
                name,
                serde_json::from_value(serde_json::json!({"server": "main"})).unwrap(),
            ))
        };
        feed(&shared, &mut listed, Event::Apply(peer("old")));
        feed(&shared, &mut listed, Event::<WatchedPeer>::Init);
        feed(&shared, &mut listed, Event::InitApply(peer("new")));
        assert!(!shared.is_synced());
        feed(&shared, &mut listed, Event::<WatchedPeer>::InitDone);
        assert_eq!(shared.read(|i| i.peer_names()), ["new".to_owned()].into());
        feed(&shared, &mut listed, Event::Delete(peer("new")));
        assert!(shared.read(|i| i.peer_names()).is_empty());
    }
}
