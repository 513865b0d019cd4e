//! The Kubernetes shell of the operator: reads what one subscription's reconcile needs (its
//! existing peers — known from the peer watch and its own writes, see `peer_view` — and their
//! Secrets fresh from the API, its server from the watched servers), calls
//! [`decision::decide`] on the server's address book (see `pools`), and writes the result — `WgPeer`s and key `Secret`s by
//! server-side apply with field manager `wgsub-operator`, deletions after retention, the
//! `VpnSubscription` status through the status subresource, Events (queued to one publisher, so
//! a burst of reconciles does not wait for them) — then requeues at the next liveness change.
//! Also the kube-rs `Controller` wiring and the error policy.
//!
//! A new key is written in two steps: the key Secret first (labelled with the key id, stamped
//! with its write time), then the peer, once, with its address, `publicKey`,
//! `privateKeySecretRef` and the key id (see [`decision::KeyStep`]); a failure in between leaves
//! a Secret no peer carries (kept for `key_cleanup::KEY_GRACE`, then collected), never a
//! published key without its Secret. The status is applied beside those two writes (its Events
//! go once it is written, even if a key write fails), so a new device costs two round trips in
//! a row and three writes.
//!
//! Traffic: each reconcile folds the peers' counters into the subscription's usage
//! ([`crate::usage`]); the latest fold of every subscription is kept in memory for the leadership
//! term as the base of the next (so bytes seen between two status writes survive a counter
//! restart), and the status gets it when [`crate::usage::should_write`] says so. A peer's status
//! write by the node-agent changes its `resourceVersion`, which the peers' metadata watch
//! delivers, so it triggers its subscription's reconcile like any other change of the peer.
//!
//! Fields written: `WgPeer` metadata labels/ownerReferences and `spec.server`, `publicKey`,
//! `privateKeySecretRef`, `address`, `address6`, `expiresAt`; key `Secret`s; `VpnSubscription`
//! `status`. Never `WgPeer.spec.enabled` or `deviceName` (the API's).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wgsub_crds::keys::PrivateKey;
use wgsub_crds::liveness::subscription_phase;
use wgsub_crds::pool;
use wgsub_crds::resources::{LABEL_PEER, LABEL_SUBSCRIPTION, TrafficUsage};
use wgsub_crds::{SubscriptionPhase, VpnSubscription, WgPeer, WgServer};

use crate::addresses::WriteOutcome;
use crate::addresses::{PeerAddresses, UsedAddresses};
use crate::decision::{self, EventKind, Observed, Plan, Problem};
use crate::metrics::Metrics;
use crate::patches::{self, FIELD_MANAGER, PatchError};
use crate::peer_view::{Known, PeerView};
use crate::pools::{Reserved, ServerPools};

/// The longest a subscription waits between two reconciles when nothing happens to it.
pub const MAX_REQUEUE: Duration = Duration::from_secs(24 * 3600);
/// The first retry delay after a failed reconcile; it doubles with every further failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How many Events may wait for the publisher of [`run`]; more are dropped and counted
/// (`wgsub_operator_events_dropped_total`), so a burst of reconciles (a cold start over
/// thousands of new subscriptions) neither waits for its Events nor queues them without bound.
pub const EVENT_QUEUE: usize = 256;
/// The longest a reconcile waits for the watched peers to show deletions the API server has
/// already made (see `Context::peers`); then it fails and is retried.
pub const STORE_CATCH_UP: Duration = Duration::from_secs(5);
/// The least time between two Events [`run`] publishes (at most 20 a second): a burst of
/// payments gets the API server's time for its peers first, and its Events follow.
pub const EVENT_INTERVAL: Duration = Duration::from_millis(50);
/// How long [`run`] takes at most to stop once its shutdown signal came: running reconciles
/// may finish within it (one still running then is dropped: every reconcile's writes are safe to
/// stop between any two of them, and the next leader starts over), and the queued Events are
/// published in what is left of it (the rest are dropped).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the reconcile needs besides the API.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `WgServer` of subscriptions that name none.
    pub default_server: String,
    /// How long peers outlive the paid period.
    pub retention: SignedDuration,
    /// Where key Secrets are read and written (`--keys-namespace`); absent: each peer's own
    /// namespace.
    pub keys_namespace: Option<String>,
}

impl Settings {
    /// The namespace of the key Secrets of peers in `namespace`.
    pub fn keys_namespace_for<'a>(&'a self, namespace: &'a str) -> &'a str {
        self.keys_namespace.as_deref().unwrap_or(namespace)
    }
}

/// The latest traffic fold of each subscription, by namespace and name, with the uid of the
/// subscription it was folded for.
type KeptUsage = HashMap<(String, String), (Option<String>, TrafficUsage)>;

/// The source of the current time (a parameter so tests can move it).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of every reconcile of one leadership term.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub pools: ServerPools,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    failures: Mutex<HashMap<ObjectRef<VpnSubscription>, u32>>,
    own_writes: OwnWrites,
    /// The `WgServer`s, from the watch [`run`] keeps (absent when reconciles are called
    /// without it: then each reads its server from the API).
    servers: std::sync::OnceLock<(Store<WgServer>, Listed)>,
    /// The `WgPeer`s' metadata, from the watch [`run`] keeps (absent when reconciles are
    /// called without it: then each reads every candidate peer from the API), seen through
    /// [`PeerView`].
    peers: std::sync::OnceLock<(Store<PartialObjectMeta<WgPeer>>, Listed)>,
    peer_view: PeerView,
    /// The queue of the Event publisher [`run`] keeps (absent when reconciles are called
    /// without it: then each publishes its Events itself).
    events: std::sync::OnceLock<tokio::sync::mpsc::Sender<(Event, ObjectReference)>>,
    /// The latest traffic fold of each subscription (by namespace and name, with its uid).
    usage: Mutex<KeptUsage>,
    /// How long a folded usage waits at most to be written (`--usage-write-interval`).
    usage_write_interval: SignedDuration,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("pools", &self.pools)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for one leadership term: empty address bookkeeping, to be loaded from the API.
    pub fn new(
        client: Client,
        reporter: Reporter,
        settings: Settings,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            pools: ServerPools::default(),
            metrics,
            clock,
            failures: Mutex::default(),
            own_writes: OwnWrites::default(),
            servers: std::sync::OnceLock::new(),
            peers: std::sync::OnceLock::new(),
            peer_view: PeerView::default(),
            events: std::sync::OnceLock::new(),
            usage: Mutex::default(),
            usage_write_interval: crate::usage::DEFAULT_WRITE_INTERVAL,
        }
    }

    /// The same context writing a subscription's folded usage at most once per `interval`
    /// when nothing else forces a write.
    pub fn with_usage_write_interval(mut self, interval: SignedDuration) -> Self {
        self.usage_write_interval = interval;
        self
    }

    /// The latest fold kept for the subscription `namespace/name` with uid `uid`.
    fn kept_usage(&self, namespace: &str, name: &str, uid: Option<&str>) -> Option<TrafficUsage> {
        let kept = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(&(namespace.to_owned(), name.to_owned()))
            .filter(|(kept_uid, _)| kept_uid.as_deref() == uid)
            .map(|(_, usage)| usage.clone())
    }

    /// Keeps `usage` as the latest fold of the subscription (or forgets it when `None`).
    fn keep_usage(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        usage: Option<TrafficUsage>,
    ) {
        let mut kept = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_owned(), name.to_owned());
        match usage {
            Some(usage) => {
                kept.insert(key, (uid.map(str::to_owned), usage));
            }
            None => {
                kept.remove(&key);
            }
        }
    }

    /// Forgets the folds of subscriptions that no longer exist.
    fn forget_usage_except(&self, existing: &std::collections::HashSet<(String, String)>) {
        let mut kept = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|key, _| existing.contains(key));
    }

    /// Hands `event` to the publisher, or drops it (counted) when [`EVENT_QUEUE`] are waiting;
    /// publishes it in place when there is no publisher.
    async fn publish(&self, event: Event, reference: ObjectReference, subscription: &str) {
        use tokio::sync::mpsc::error::TrySendError;
        let Some(queue) = self.events.get() else {
            publish_event(&self.recorder, &event, &reference).await;
            return;
        };
        match queue.try_send((event, reference)) {
            Ok(()) => {}
            Err(TrySendError::Full((event, _)) | TrySendError::Closed((event, _))) => {
                self.metrics.event_dropped();
                debug!(subscription, reason = %event.reason, "Event queue full; Event dropped");
            }
        }
    }

    /// The peers `names` of a subscription that exist. With the watched peers: a name neither
    /// they nor this operator's own writes hold does not exist (no read); a peer whose newest
    /// version this operator wrote itself is that write (no read); the others are read fresh
    /// from the API ([`PeerView`]). Without the watch, every name is read.
    ///
    /// A peer read as gone while the watched store still holds it shows the store behind the
    /// API server: then what the store says is absent may exist already (a device the API
    /// added just before it deleted another, as a key rotation does), and a reconcile that
    /// saw no device at all would give the subscription a first one again. So the reconcile
    /// waits until the store has caught up with those deletions (at most
    /// [`STORE_CATCH_UP`]) and looks again.
    async fn peers(
        &self,
        api: &Api<WgPeer>,
        namespace: &str,
        names: Vec<String>,
    ) -> Result<Vec<WgPeer>, Error> {
        let Some((store, listed)) = self.peers.get() else {
            let mut peers = Vec::new();
            for name in names {
                peers.extend(api.get_opt(&name).await?);
            }
            return Ok(peers);
        };
        listed.wait().await?;
        let held = |name: &str| store.get(&ObjectRef::new(name).within(namespace)).is_some();
        let deadline = tokio::time::Instant::now() + STORE_CATCH_UP;
        loop {
            let mut peers = Vec::new();
            let mut behind = Vec::new();
            for name in &names {
                let known = self.peer_view.known(namespace, name, || {
                    store
                        .get(&ObjectRef::new(name).within(namespace))
                        .map(|meta| meta.resource_version())
                });
                match known {
                    Known::Absent => {}
                    Known::Written(peer) => peers.push(peer.as_ref().clone()),
                    Known::Read => match api.get_opt(name).await? {
                        Some(peer) => peers.push(peer),
                        None if held(name) => behind.push(name.as_str()),
                        None => {}
                    },
                }
            }
            if behind.is_empty() {
                return Ok(peers);
            }
            debug!(namespace, peers = ?behind, "peers gone from the API are still in the watched store; waiting for it");
            while behind.iter().any(|name| held(name)) {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::StoreBehind);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Whether the watched peers hold `namespace/name` now.
    fn peer_cached(&self, namespace: &str, name: &str) -> bool {
        self.peers
            .get()
            .is_some_and(|(store, _)| store.get(&ObjectRef::new(name).within(namespace)).is_some())
    }

    /// The server `name`: from the watched servers once they are listed, else from the API.
    async fn server(&self, namespace: &str, name: &str) -> Result<Option<WgServer>, Error> {
        match self.servers.get() {
            Some((store, listed)) => {
                // Listed once at start (a handful of objects), then kept by the watch.
                listed.wait().await?;
                let reference = ObjectRef::new(name).within(namespace);
                Ok(store.get(&reference).map(|server| server.as_ref().clone()))
            }
            None => Ok(Api::<WgServer>::namespaced(self.client.clone(), namespace)
                .get_opt(name)
                .await?),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<VpnSubscription>, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The end of a watched cache's first list, for any number of reconciles to wait for at once —
/// or to give up on when the controller stops (the watch that would list it is no longer
/// polled then, so the cache may never be listed).
///
/// A reflector `Store`'s own `wait_until_ready` cannot be awaited by two tasks at a time: it
/// polls a one-shot channel that keeps the waker of the last task that polled it only, so the
/// other waiters are never woken (kube-runtime 4.2). Two reconciles that started before the
/// peers were listed (a new leader with two subscriptions) would wait forever, and so would a
/// graceful shutdown waiting for them. Here one shared future polls it and wakes every waiter.
#[derive(Clone)]
pub struct Listed {
    listed: futures::future::Shared<futures::future::BoxFuture<'static, bool>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listed")
            .field("stopped", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Listed {
    /// The first list of `store`, given up on once `stop` is cancelled.
    pub fn new<K>(store: &Store<K>, stop: CancellationToken) -> Self
    where
        K: kube::runtime::reflector::Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let store = store.clone();
        let listed = async move { store.wait_until_ready().await.is_ok() }
            .boxed()
            .shared();
        Self { listed, stop }
    }

    /// Waits until the cache holds its first list; [`Error::Stopping`] when the controller
    /// stops first (or the cache's writer is gone).
    pub async fn wait(&self) -> Result<(), Error> {
        tokio::select! {
            biased;
            listed = self.listed.clone() => listed.then_some(()).ok_or(Error::Stopping),
            () = self.stop.cancelled() => Err(Error::Stopping),
        }
    }
}

/// The versions of objects this operator wrote itself and whose watch events have not come back
/// yet: such an event shows the reconcile that wrote it nothing new (it already knew that state
/// and chose its requeue), so it triggers no reconcile. On a cold start this spares each
/// subscription the three or four reconciles its own peer, Secret and status writes would
/// otherwise cause. A change by anyone else has a version of its own and still triggers one.
///
/// Kept per object (kind, namespace, name): the last [`OWN_WRITES_KEPT`] versions written
/// (the events of a peer's two applies may both be pending); an entry goes when its event is
/// seen, so the map holds about one entry per object written since its last event.
#[derive(Debug, Default)]
pub struct OwnWrites {
    versions: Mutex<HashMap<ObjectKey, Vec<String>>>,
}

/// Kind, namespace and name.
type ObjectKey = (&'static str, String, String);

/// How many versions of one object [`OwnWrites`] remembers.
pub const OWN_WRITES_KEPT: usize = 4;

impl OwnWrites {
    /// Records that this operator wrote `object` (the API's answer, carrying its new version).
    pub fn wrote<K: Resource>(&self, kind: &'static str, object: &K) {
        let meta = object.meta();
        let (Some(namespace), Some(name), Some(version)) = (
            meta.namespace.clone(),
            meta.name.clone(),
            meta.resource_version.clone(),
        ) else {
            return;
        };
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let kept = versions.entry((kind, namespace, name)).or_default();
        if kept.len() >= OWN_WRITES_KEPT {
            kept.remove(0);
        }
        kept.push(version);
    }

    /// Whether a watch event of `object` shows a version this operator wrote (forgetting it).
    pub fn is_own<K: Resource>(&self, kind: &'static str, object: &K) -> bool {
        let meta = object.meta();
        let (Some(namespace), Some(name), Some(version)) = (
            meta.namespace.as_ref(),
            meta.name.as_ref(),
            meta.resource_version.as_ref(),
        ) else {
            return false;
        };
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind, namespace.clone(), name.clone());
        let Some(kept) = versions.get_mut(&key) else {
            return false;
        };
        let Some(at) = kept.iter().position(|v| v == version) else {
            return false;
        };
        kept.remove(at);
        if kept.is_empty() {
            versions.remove(&key);
        }
        true
    }
}

/// Why a reconcile failed. The variant names double as the `reason` label of the error metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Owner(#[from] PatchError),
    #[error("VpnSubscription {0} has no namespace")]
    NoNamespace(String),
    #[error("{}", .0.message())]
    Problem(Problem),
    #[error("the controller stops before the watched objects were listed")]
    Stopping,
    #[error("the watched peers did not catch up with the API server within {STORE_CATCH_UP:?}")]
    StoreBehind,
}

impl Error {
    /// The metric label of the error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::Owner(_) => "NoUid",
            Error::NoNamespace(_) => "NoNamespace",
            Error::Problem(problem) => problem.reason(),
            Error::Stopping => "Stopping",
            Error::StoreBehind => "StoreBehind",
        }
    }
}

/// The delay before the `attempt`-th retry (1-based): 1 s, 2 s, 4 s, … up to 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

/// The requeue for the next change by the clock: just after it, at most [`MAX_REQUEUE`] away.
pub fn requeue_action(at: Option<Timestamp>, now: Timestamp) -> Action {
    let Some(at) = at else {
        return Action::requeue(MAX_REQUEUE);
    };
    let until = now.duration_until(at);
    let wait = Duration::try_from(until)
        .unwrap_or(Duration::ZERO)
        .saturating_add(Duration::from_millis(1));
    Action::requeue(wait.min(MAX_REQUEUE))
}

/// Reconciles one subscription; records its duration and outcome in the metrics.
pub async fn reconcile(
    subscription: Arc<VpnSubscription>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_subscription(&subscription, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
    if result.is_ok() {
        ctx.failures()
            .remove(&ObjectRef::from_obj(subscription.as_ref()));
    }
    result
}

/// Retries a failed reconcile with exponential backoff per subscription.
pub fn error_policy(
    subscription: Arc<VpnSubscription>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let attempt = {
        let mut failures = ctx.failures();
        let count = failures
            .entry(ObjectRef::from_obj(subscription.as_ref()))
            .or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(attempt);
    warn!(
        subscription = %subscription.name_any(),
        namespace = subscription.namespace().unwrap_or_default(),
        reason = error.reason(),
        attempt,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

/// A list of `WgPeer`s as the address load parses it: of each peer only the fields
/// [`PeerAddresses`] holds; the rest (status, labels, owners, managedFields) is skipped while
/// parsing instead of being built and dropped.
#[derive(serde::Deserialize)]
struct ListedPeers {
    #[serde(default)]
    items: Vec<ListedPeer>,
}

#[derive(serde::Deserialize)]
struct ListedPeer {
    #[serde(default)]
    metadata: ListedMeta,
    #[serde(default)]
    spec: ListedSpec,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    creation_timestamp: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

#[derive(Default, serde::Deserialize)]
struct ListedSpec {
    #[serde(default)]
    server: String,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    address6: Option<String>,
}

impl From<ListedPeer> for PeerAddresses {
    fn from(peer: ListedPeer) -> Self {
        Self {
            name: peer.metadata.name,
            created: peer.metadata.creation_timestamp.map(|t| t.0),
            server: peer.spec.server,
            address: peer.spec.address,
            address6: peer.spec.address6,
        }
    }
}

/// Reads every `WgPeer` of the namespace (fresh from the API) and keeps the addresses of
/// `server`'s.
async fn load_addresses(
    client: &Client,
    namespace: &str,
    server: &str,
) -> Result<UsedAddresses, kube::Error> {
    let request = kube::core::Request::new(WgPeer::url_path(&(), Some(namespace)))
        .list(&ListParams::default())
        .map_err(kube::Error::BuildRequest)?;
    let list: ListedPeers = client.request(request).await?;
    Ok(UsedAddresses::from_addresses(
        server,
        list.items.into_iter().map(PeerAddresses::from),
    ))
}

/// The addresses a plan's writes give their peers: those of every write carrying a fresh claim.
fn reservations(
    plan: &Plan,
) -> impl Iterator<Item = (String, Option<Ipv4Addr>, Option<Ipv6Addr>)> + '_ {
    plan.writes.iter().filter(|w| w.allocated).map(|w| {
        (
            w.peer.name.clone(),
            w.peer.address.as_deref().and_then(pool::parse_host_v4),
            w.peer.address6.as_deref().and_then(pool::parse_host_v6),
        )
    })
}

fn report_pool(ctx: &Context, namespace: &str, server: &WgServer, used: &UsedAddresses) {
    if let Ok(v4) = pool::parse_pool_v4(&server.spec.address_pool) {
        ctx.metrics.set_pool_usage(
            namespace,
            &server.name_any(),
            used.used_in_v4(v4) as u64,
            pool::client_capacity_v4(v4),
        );
    }
}

async fn reconcile_subscription(sub: &VpnSubscription, ctx: &Context) -> Result<Action, Error> {
    let name = sub.name_any();
    let namespace = sub
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let now = (ctx.clock)();
    let client = ctx.client.clone();
    let peers_api: Api<WgPeer> = Api::namespaced(client.clone(), &namespace);
    let secrets_api: Api<Secret> =
        Api::namespaced(client.clone(), ctx.settings.keys_namespace_for(&namespace));
    let subs_api: Api<VpnSubscription> = Api::namespaced(client, &namespace);

    // From the watched peers with this operator's own writes on top: a cache that has not
    // seen the peer written by the previous reconcile would make this one generate a second key.
    let own_peers = ctx
        .peers(&peers_api, &namespace, decision::candidate_peer_names(sub))
        .await?;
    let mut secrets = Vec::new();
    for secret in decision::key_secret_names(&own_peers) {
        secrets.extend(secrets_api.get_opt(&secret).await?);
    }
    let server_name = decision::server_name(&sub.spec, &ctx.settings.default_server).to_owned();
    let active = subscription_phase(&sub.spec, now) == SubscriptionPhase::Active;
    let server = if active {
        ctx.server(&namespace, &server_name).await?
    } else {
        None
    };

    let kept_usage = ctx.kept_usage(&namespace, &name, sub.metadata.uid.as_deref());
    let observed = Observed {
        subscription: sub,
        default_server: &ctx.settings.default_server,
        server: server.as_ref(),
        own_peers: &own_peers,
        secrets: &secrets,
        now,
        retention: ctx.settings.retention,
        usage_base: kept_usage.as_ref(),
        usage_write_interval: ctx.usage_write_interval,
    };
    let mut new_key = PrivateKey::generate;

    // Decide under the server's book lock (microseconds), reserve the addresses of the peers
    // to write, and write them without holding anything: concurrent reconciles on the same
    // server decide and write at the same time, each seeing the others' claims.
    let (plan, reserved) = match &server {
        Some(server) => {
            let pool = ctx.pools.pool(&namespace, &server_name);
            pool.load(false, || {
                load_addresses(&ctx.client, &namespace, &server_name)
            })
            .await?;
            let decide_and_reserve = |new_key: &mut dyn FnMut() -> PrivateKey| {
                // One lock for the decision's claims and their reservations, so no load comes
                // between them.
                let mut state = pool.state();
                let plan = decision::decide(&observed, &mut state.book.used, new_key);
                report_pool(ctx, &namespace, server, &state.book.used);
                let reserved = Reserved::new(pool.clone(), &mut state, reservations(&plan));
                (plan, reserved)
            };
            let (mut plan, mut reserved) = decide_and_reserve(&mut new_key);
            if matches!(plan.problem, Some(Problem::PoolExhausted { .. })) {
                // Free this decision's claims before a reload, then decide again on it.
                drop(reserved);
                let reloaded = pool
                    .load(true, || {
                        load_addresses(&ctx.client, &namespace, &server_name)
                    })
                    .await?;
                if reloaded {
                    debug!(server = %server_name, "pool looked full; read its peers again");
                }
                (plan, reserved) = decide_and_reserve(&mut new_key);
            }
            (plan, Some(reserved))
        }
        None => (
            decision::decide(&observed, &mut UsedAddresses::default(), &mut new_key),
            None,
        ),
    };

    let plan = decision::status_after_new_devices(plan, now);

    ctx.keep_usage(
        &namespace,
        &name,
        sub.metadata.uid.as_deref(),
        plan.usage.folded.clone(),
    );
    let (rx, tx) = plan.usage.accounted;
    ctx.metrics.traffic_accounted(rx, tx);
    if plan.usage.became_exhausted {
        ctx.metrics.quota_exhausted();
    }

    execute(
        sub,
        &namespace,
        ctx,
        &plan,
        reserved,
        &peers_api,
        &secrets_api,
        &subs_api,
    )
    .await?;

    match plan.problem {
        Some(problem) => Err(Error::Problem(problem)),
        None => Ok(requeue_action(plan.requeue_at, now)),
    }
}

/// What a write's result says about the peer on the server: a refusal (4xx) wrote nothing; a
/// 5xx or a broken connection may have written it.
fn write_outcome<T>(result: &Result<T, kube::Error>) -> WriteOutcome {
    match result {
        Ok(_) => WriteOutcome::Written,
        Err(kube::Error::Api(status)) if (400..500).contains(&status.code) => WriteOutcome::Refused,
        Err(_) => WriteOutcome::Unknown,
    }
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    sub: &VpnSubscription,
    namespace: &str,
    ctx: &Context,
    plan: &Plan,
    mut reserved: Option<Reserved>,
    peers_api: &Api<WgPeer>,
    secrets_api: &Api<Secret>,
    subs_api: &Api<VpnSubscription>,
) -> Result<(), Error> {
    let name = sub.name_any();
    let apply = PatchParams::apply(FIELD_MANAGER).force();

    // Each peer is written once, as it ends: a new key is stored in its Secret first (labelled
    // with the key id the peer then carries), so no key is published without its Secret. Each
    // reserved address is settled with its peer write's outcome. The status goes at the same
    // time (after the retention deletes), as it depends on no answer of these writes; a failed
    // write fails the reconcile, whose retry completes the peer under the same status.
    let keys_namespace = ctx.settings.keys_namespace_for(namespace);
    let publishing = async {
        let mut moved = Vec::new();
        let result = async {
            for write in &plan.writes {
                if let Some(key) = write.key_to_store() {
                    let secret = patches::key_secret(
                        sub,
                        &write.peer.name,
                        key,
                        keys_namespace,
                        (ctx.clock)(),
                    )?;
                    let stored = secrets_api
                        .patch(&key.reference.name, &apply, &Patch::Apply(&secret))
                        .await?;
                    ctx.own_writes.wrote(SECRET, &stored);
                }
                let body = patches::peer_apply(sub, &write.published())?;
                if let Some(reserved) = reserved.as_mut() {
                    reserved.sending(&write.peer.name);
                }
                let result = peers_api
                    .patch(&write.peer.name, &apply, &Patch::Apply(&body))
                    .await;
                if let Some(reserved) = reserved.as_mut() {
                    reserved.outcome(&write.peer.name, write_outcome(&result));
                }
                let applied = result?;
                ctx.own_writes.wrote(PEER, &applied);
                ctx.peer_view.applied(&applied);
                debug!(subscription = %name, peer = %write.peer.name, "applied peer");
                moved.extend(write.moved_from.clone());
            }
            Ok::<(), Error>(())
        }
        .await;
        drop(reserved);
        (result, moved)
    };
    let deleting_and_status = async {
        for holding in &plan.deletes {
            match peers_api
                .delete(&holding.peer, &DeleteParams::background())
                .await
            {
                Ok(_) => ctx.peer_view.deleted(namespace, &holding.peer),
                // Gone already; hidden too if the watch has not shown that yet.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    if ctx.peer_cached(namespace, &holding.peer) {
                        ctx.peer_view.deleted(namespace, &holding.peer);
                    }
                }
                Err(error) => return Err(error.into()),
            }
            let pool = ctx.pools.pool(namespace, &holding.server);
            holding.release_from(&mut pool.state().book.used);
            info!(subscription = %name, peer = %holding.peer, "deleted peer after retention");
        }
        if let Some(status) = &plan.status {
            let written = subs_api
                .patch_status(&name, &apply, &Patch::Apply(patches::status_apply(status)))
                .await?;
            ctx.own_writes.wrote(SUBSCRIPTION, &written);
        }
        Ok::<(), Error>(())
    };
    let ((published, moved), deleted) = futures::join!(publishing, deleting_and_status);
    // A peer moved to another server was applied there; its old addresses are free.
    for holding in moved {
        let pool = ctx.pools.pool(namespace, &holding.server);
        holding.release_from(&mut pool.state().book.used);
    }
    deleted?;
    // The status is written: its Events go with it, also when a key write failed (the retry
    // writes the same status, so it would not report these transitions again).
    for planned in &plan.events {
        let event = Event {
            type_: match planned.kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: planned.reason.to_owned(),
            note: Some(planned.note.clone()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        ctx.publish(event, sub.object_ref(&()), &name).await;
    }
    published
}

async fn publish_event(recorder: &Recorder, event: &Event, reference: &ObjectReference) {
    if let Err(error) = recorder.publish(event, reference).await {
        let subscription = reference.name.as_deref().unwrap_or_default();
        warn!(subscription, reason = %event.reason, "could not publish Event: {error}");
    }
}

/// The subscriptions a change of `server` concerns: those naming it, or naming none when it is
/// the default server.
pub fn subscriptions_on_server(
    subscriptions: &Store<VpnSubscription>,
    server: &WgServer,
    default_server: &str,
) -> Vec<ObjectRef<VpnSubscription>> {
    let name = server.name_any();
    let namespace = server.namespace();
    subscriptions
        .state()
        .iter()
        .filter(|s| s.namespace() == namespace)
        .filter(|s| decision::server_name(&s.spec, default_server) == name)
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The subscription a child (peer or key Secret) belongs to, by its `wgsub.io/subscription`
/// label or, failing that, its `VpnSubscription` owner.
pub fn owning_subscription<K: Resource>(child: &K) -> Option<ObjectRef<VpnSubscription>> {
    let namespace = child.meta().namespace.clone()?;
    let name = child
        .labels()
        .get(LABEL_SUBSCRIPTION)
        .cloned()
        .or_else(|| {
            child
                .owner_references()
                .iter()
                .find(|o| o.kind == "VpnSubscription" && o.api_version == "wgsub.io/v1alpha1")
                .map(|o| o.name.clone())
        })?;
    Some(ObjectRef::new(&name).within(&namespace))
}

fn scoped<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    }
}

fn count_phases(metrics: &Metrics, store: &Store<VpnSubscription>, now: Timestamp) {
    let mut counts: HashMap<SubscriptionPhase, i64> = HashMap::new();
    for sub in store.state() {
        *counts
            .entry(subscription_phase(&sub.spec, now))
            .or_default() += 1;
    }
    metrics.set_phase_counts(|phase| counts.get(&phase).copied().unwrap_or(0));
}

/// Trims what the subscription cache keeps of an object to what reconciles read: the
/// `managedFields` (often larger than the object itself) and a client-side-apply
/// `last-applied-configuration` annotation go.
pub fn trim_for_cache<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What the peer cache keeps of a watched peer: its name, namespace and resource version — all a
/// reconcile reads there (whether the peer exists, and whether this operator's own write is its
/// newest version, see [`PeerView`]). Its labels, annotations and owners, which map it to its
/// subscription, stay on the watch event: at 10,000 peers they would hold megabytes for nothing.
pub fn peer_identity<K>(peer: &PartialObjectMeta<K>) -> PartialObjectMeta<K> {
    PartialObjectMeta {
        types: None,
        metadata: kube::api::ObjectMeta {
            name: peer.metadata.name.clone(),
            namespace: peer.metadata.namespace.clone(),
            resource_version: peer.metadata.resource_version.clone(),
            ..kube::api::ObjectMeta::default()
        },
        _phantom: std::marker::PhantomData,
    }
}

/// `event` with each object reduced to [`peer_identity`].
fn identity_event<K>(
    event: &watcher::Event<PartialObjectMeta<K>>,
) -> watcher::Event<PartialObjectMeta<K>> {
    match event {
        watcher::Event::Apply(peer) => watcher::Event::Apply(peer_identity(peer)),
        watcher::Event::Delete(peer) => watcher::Event::Delete(peer_identity(peer)),
        watcher::Event::InitApply(peer) => watcher::Event::InitApply(peer_identity(peer)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The kinds [`OwnWrites`] tells apart.
const PEER: &str = "WgPeer";
const SECRET: &str = "Secret";
const SUBSCRIPTION: &str = "VpnSubscription";

/// The annotation `kubectl apply` (client-side) leaves on objects.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Runs the Controller until `shutdown` completes, then stops within [`SHUTDOWN_GRACE`]:
/// running reconciles may finish in it, queued Events are published in what is left of it.
///
/// Watches `VpnSubscription`s (primary, cached trimmed by [`trim_for_cache`]), `WgPeer`s and
/// key `Secret`s (metadata only — only their labels and owners are read, to map them to their
/// subscription; a Secret's data never reaches a watch; of the peers only their names and
/// versions are kept ([`peer_identity`]), to know which peers exist), and `WgServer`s (cached, and mapped to the subscriptions on them). A
/// reconcile reads its server from that cache, and fresh from the API only the Secrets and the
/// existing peers it did not write last itself ([`PeerView`]). Watch events of the operator's
/// own writes trigger no reconcile ([`OwnWrites`]). The initial lists of the three large kinds
/// are paged (the default consistent list semantic; `resourceVersion=0` would make the
/// API server answer in one piece, ignoring the page size); the few servers are listed from
/// the API server's watch cache.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let client = ctx.client.clone();
    let stop = CancellationToken::new();
    let ns = namespace.as_deref();
    let (queue, mut events) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let _ = ctx.events.set(queue);
    let (store, writer) = reflector::store::<VpnSubscription>();
    let subscriptions = watcher(scoped(client.clone(), ns), watcher::Config::default())
        .modify(trim_for_cache)
        .reflect(writer)
        .applied_objects()
        .try_filter({
            let ctx = ctx.clone();
            move |sub| std::future::ready(!ctx.own_writes.is_own(SUBSCRIPTION, sub))
        });
    let server_store = store.clone();
    let default_server = ctx.settings.default_server.clone();
    let (peer_cache, mut peer_writer) = reflector::store::<PartialObjectMeta<WgPeer>>();
    let peers_listed = Listed::new(&peer_cache, stop.clone());
    let _ = ctx.peers.set((peer_cache, peers_listed));
    let peers = watcher(
        scoped::<PartialObjectMeta<WgPeer>>(client.clone(), ns),
        watcher::Config::default(),
    )
    .modify(trim_for_cache)
    .map_ok(move |event| {
        // The cache keeps each peer's identity only; the event goes on whole to be mapped.
        peer_writer.apply_watcher_event(&identity_event(&event));
        event
    })
    .map_ok({
        let ctx = ctx.clone();
        move |event| {
            ctx.peer_view.seen(&event);
            event
        }
    })
    .touched_objects()
    .try_filter({
        let ctx = ctx.clone();
        move |peer| std::future::ready(!ctx.own_writes.is_own(PEER, peer))
    });
    // Key Secrets in the keys namespace belong to subscriptions of the watched one.
    let keys_namespace = ctx.settings.keys_namespace.clone();
    let home = namespace.clone();
    let secrets = watcher(
        match &keys_namespace {
            Some(keys) => Api::namespaced(client.clone(), keys),
            None => scoped::<PartialObjectMeta<Secret>>(client.clone(), ns),
        },
        watcher::Config::default().labels(LABEL_PEER),
    )
    .touched_objects()
    .try_filter({
        let ctx = ctx.clone();
        move |secret| std::future::ready(!ctx.own_writes.is_own(SECRET, secret))
    });

    // Few servers: listed whole from the API server's watch cache (a page size would make kube
    // drop `resourceVersion=0` and read etcd instead), and kept for the reconciles to read.
    let (server_cache, server_writer) = reflector::store::<WgServer>();
    let servers_listed = Listed::new(&server_cache, stop.clone());
    let _ = ctx.servers.set((server_cache, servers_listed));
    let servers = watcher(
        scoped::<WgServer>(client, ns),
        watcher::Config {
            page_size: None,
            ..watcher::Config::default().any_semantic()
        },
    )
    .reflect(server_writer)
    .touched_objects();

    let controller = Controller::for_stream(subscriptions, store.clone())
        .watches_stream(peers, |peer| owning_subscription(&peer))
        .watches_stream(secrets, move |secret| {
            let owner = owning_subscription(&secret)?;
            match (&keys_namespace, &home) {
                (Some(_), Some(home)) => Some(ObjectRef::new(&owner.name).within(home)),
                _ => Some(owner),
            }
        })
        .watches_stream(servers, move |server| {
            subscriptions_on_server(&server_store, &server, &default_server)
        })
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(subscription = %object.name, "reconciled"),
                Err(error) => debug!("controller: {error}"),
            }
        });

    let metrics = ctx.metrics.clone();
    let clock = ctx.clock.clone();
    let counted = ctx.clone();
    let counting = async move {
        loop {
            count_phases(&metrics, &store, clock());
            counted.forget_usage_except(
                &store
                    .state()
                    .iter()
                    .filter_map(|s| Some((s.namespace()?, s.name_any())))
                    .collect(),
            );
            metrics.set_peer_writes_unseen(counted.peer_view.pending());
            tokio::time::sleep(Duration::from_secs(15)).await;
        }
    };
    // Events are published one at a time beside the reconciles, which only queue them, and
    // paced (EVENT_INTERVAL).
    let publishing = async {
        let mut pace = tokio::time::interval(EVENT_INTERVAL);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while let Some((event, reference)) = events.recv().await {
            pace.tick().await;
            publish_event(&ctx.recorder, &event, &reference).await;
        }
    };
    let stopped = {
        let running = async {
            tokio::select! {
                () = controller => {}
                () = counting => {}
                () = publishing => {}
            }
        };
        let mut running = std::pin::pin!(running);
        tokio::select! {
            () = &mut running => None,
            () = shutdown => {
                let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
                stop.cancel();
                let finished = tokio::time::timeout_at(deadline, running).await.is_ok();
                if !finished {
                    warn!(
                        grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
                        "reconciles still running at the end of the shutdown grace were stopped"
                    );
                }
                Some(deadline)
            }
        }
    };
    stop.cancel();
    let deadline = stopped.unwrap_or_else(|| tokio::time::Instant::now() + SHUTDOWN_GRACE);
    let mut published = 0usize;
    let draining = async {
        while let Ok((event, reference)) = events.try_recv() {
            publish_event(&ctx.recorder, &event, &reference).await;
            published += 1;
        }
    };
    let drained = tokio::time::timeout_at(deadline, draining).await.is_ok();
    let dropped = events.len();
    for _ in 0..dropped {
        ctx.metrics.event_dropped();
    }
    info!(
        published,
        dropped, drained, "controller stopped; queued Events published"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_neither_managed_fields_nor_last_applied_but_everything_else() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut sub = VpnSubscription::new("tg-1", wgsub_crds::VpnSubscriptionSpec::for_user(1));
        sub.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("wgsub-api".into()),
            ..ManagedFieldsEntry::default()
        }]);
        sub.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{}".to_owned()),
                ("note".to_owned(), "kept".to_owned()),
            ]
            .into(),
        );
        let mut expected = sub.clone();
        expected.metadata.managed_fields = None;
        expected.metadata.annotations = Some([("note".to_owned(), "kept".to_owned())].into());
        trim_for_cache(&mut sub);
        assert_eq!(sub, expected);

        sub.metadata.annotations = Some([(LAST_APPLIED.to_owned(), "{}".to_owned())].into());
        trim_for_cache(&mut sub);
        assert_eq!(sub.metadata.annotations, None);
    }

    #[test]
    fn a_listed_peer_parses_to_the_same_addresses_as_the_whole_peer() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut peer = WgPeer::new(
            "tg-1-1",
            wgsub_crds::WgPeerSpec {
                address: Some("10.8.0.2/32".into()),
                address6: Some("fd00::2/128".into()),
                device_name: Some("phone".into()),
                ..wgsub_crds::WgPeerSpec::on_server("wg")
            },
        );
        peer.metadata.creation_timestamp = Some(Time("2026-06-01T00:00:00Z".parse().unwrap()));
        peer.metadata.labels = Some([(LABEL_SUBSCRIPTION.to_owned(), "tg-1".to_owned())].into());
        let bare = WgPeer::new("tg-2-1", peer.spec.clone());
        let list = serde_json::json!({
            "apiVersion": "wgsub.io/v1alpha1",
            "kind": "WgPeerList",
            "metadata": {"resourceVersion": "7"},
            "items": [peer, bare],
        });
        let listed: ListedPeers = serde_json::from_value(list).unwrap();
        let parsed: Vec<PeerAddresses> = listed.items.into_iter().map(Into::into).collect();
        assert_eq!(
            parsed,
            vec![PeerAddresses::of(&peer), PeerAddresses::of(&bare)]
        );
    }

    #[test]
    fn the_peer_cache_keeps_a_peers_identity_while_its_event_still_names_the_subscription() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
        use kube::api::{ObjectMeta, TypeMeta};
        let identity = ObjectMeta {
            name: Some("tg-1-1".into()),
            namespace: Some("vpn".into()),
            resource_version: Some("42".into()),
            ..ObjectMeta::default()
        };
        let peer = PartialObjectMeta::<WgPeer> {
            types: Some(TypeMeta {
                api_version: "wgsub.io/v1alpha1".into(),
                kind: "WgPeer".into(),
            }),
            metadata: ObjectMeta {
                uid: Some("peer-uid".into()),
                creation_timestamp: Some(Time("2026-06-01T00:00:00Z".parse().unwrap())),
                labels: Some([(LABEL_SUBSCRIPTION.to_owned(), "tg-1".to_owned())].into()),
                annotations: Some([(decision::KEY_ID.to_owned(), "00ff".to_owned())].into()),
                owner_references: Some(vec![OwnerReference {
                    kind: "VpnSubscription".into(),
                    name: "tg-1".into(),
                    ..OwnerReference::default()
                }]),
                ..identity.clone()
            },
            _phantom: std::marker::PhantomData,
        };
        let (store, mut writer) = reflector::store::<PartialObjectMeta<WgPeer>>();
        let reference = ObjectRef::new("tg-1-1").within("vpn");
        let event = watcher::Event::Apply(peer.clone());
        writer.apply_watcher_event(&identity_event(&event));
        let kept = store.get(&reference).expect("the peer is cached");
        assert_eq!(kept.metadata, identity);
        assert!(kept.types.is_none());
        let watcher::Event::Apply(whole) = event else {
            unreachable!()
        };
        assert_eq!(
            owning_subscription(&whole),
            Some(ObjectRef::new("tg-1").within("vpn"))
        );
        writer.apply_watcher_event(&identity_event(&watcher::Event::Delete(peer)));
        assert!(
            store.get(&reference).is_none(),
            "a deleted peer leaves the cache"
        );
    }

    fn versioned(name: &str, version: &str) -> WgPeer {
        let mut peer = WgPeer::new(name, wgsub_crds::WgPeerSpec::on_server("wg"));
        peer.metadata.namespace = Some("vpn".into());
        peer.metadata.resource_version = Some(version.into());
        peer
    }

    #[test]
    fn own_writes_are_recognised_once_each_and_other_versions_are_not() {
        let own = OwnWrites::default();
        own.wrote(PEER, &versioned("tg-1-1", "10"));
        own.wrote(PEER, &versioned("tg-1-1", "12"));
        // Another's change, another kind, another object: not ours.
        assert!(!own.is_own(PEER, &versioned("tg-1-1", "11")));
        assert!(!own.is_own(SECRET, &versioned("tg-1-1", "10")));
        assert!(!own.is_own(PEER, &versioned("tg-2-1", "10")));
        // Both our writes' events, in either order, each once.
        assert!(own.is_own(PEER, &versioned("tg-1-1", "12")));
        assert!(own.is_own(PEER, &versioned("tg-1-1", "10")));
        assert!(!own.is_own(PEER, &versioned("tg-1-1", "10")));
        assert!(own.versions.lock().unwrap().is_empty());
    }

    #[test]
    fn own_writes_keep_a_bounded_number_of_versions_per_object() {
        let own = OwnWrites::default();
        for version in 0..10 {
            own.wrote(PEER, &versioned("tg-1-1", &version.to_string()));
        }
        let kept: Vec<bool> = (0..10)
            .map(|v| own.is_own(PEER, &versioned("tg-1-1", &v.to_string())))
            .collect();
        let expected: Vec<bool> = (0..10).map(|v| v >= 10 - OWN_WRITES_KEPT).collect();
        assert_eq!(kept, expected);
    }

    /// A store whose first list has not ended, and the writer that ends it.
    fn unlisted() -> (Store<WgServer>, reflector::store::Writer<WgServer>) {
        reflector::store::<WgServer>()
    }

    fn end_first_list(writer: &mut reflector::store::Writer<WgServer>) {
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    #[tokio::test]
    async fn every_reconcile_waiting_for_a_cache_goes_on_once_it_is_listed() {
        let (store, mut writer) = unlisted();
        let listed = Listed::new(&store, CancellationToken::new());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let listed = listed.clone();
                tokio::spawn(async move { listed.wait().await })
            })
            .collect();
        // Every waiter polls before the list ends (the case a lone one-shot waker loses).
        tokio::time::sleep(Duration::from_millis(50)).await;
        end_first_list(&mut writer);
        for waiter in waiters {
            let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("a waiter was never woken")
                .unwrap();
            assert!(waited.is_ok());
        }
        assert!(listed.wait().await.is_ok(), "and a later one does not wait");
    }

    #[tokio::test]
    async fn a_reconcile_waiting_for_a_cache_never_listed_gives_up_when_the_controller_stops() {
        let (store, _writer) = unlisted();
        let stop = CancellationToken::new();
        let listed = Listed::new(&store, stop.clone());
        let waiter = tokio::spawn(async move { listed.wait().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter outlived the stop")
            .unwrap();
        assert!(matches!(waited, Err(Error::Stopping)));
    }

    #[tokio::test]
    async fn a_cache_whose_writer_is_gone_is_never_waited_for() {
        let (store, writer) = unlisted();
        let listed = Listed::new(&store, CancellationToken::new());
        drop(writer);
        assert!(matches!(listed.wait().await, Err(Error::Stopping)));
    }

    /// A reconcile's context on the real API server, with the watched peers played by `store`
    /// (fed by hand, its first list over).
    fn context_with_peers(client: Client, store: Store<PartialObjectMeta<WgPeer>>) -> Context {
        let ctx = Context::new(
            client,
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: None,
            },
            Settings {
                default_server: "wg".into(),
                retention: SignedDuration::from_hours(24),
                keys_namespace: None,
            },
            Arc::new(Metrics::new()),
            Arc::new(Timestamp::now),
        );
        let listed = Listed::new(&store, CancellationToken::new());
        let _ = ctx.peers.set((store, listed));
        ctx
    }

    fn identity(namespace: &str, name: &str, version: &str) -> PartialObjectMeta<WgPeer> {
        PartialObjectMeta {
            types: None,
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                resource_version: Some(version.into()),
                ..kube::api::ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    /// The API server holds the replacement tg-1-2 and no longer tg-1-1 (a key rotation); the
    /// watched store still holds tg-1-1 and not yet tg-1-2. Returns the peers API, the store's
    /// writer and the context.
    async fn rotated_behind_the_store() -> (
        Api<WgPeer>,
        reflector::store::Writer<PartialObjectMeta<WgPeer>>,
        Context,
        String,
    ) {
        let plane = wgsub_testkit::envtest::ControlPlane::with_crds();
        let namespace = plane.namespace("behind").await;
        let client = plane.admin_client();
        let peers: Api<WgPeer> = Api::namespaced(client.clone(), &namespace);
        let key = PrivateKey::generate();
        let replacement =
            wgsub_testkit::fixtures::peer("tg-1-2", "tg-1", "wg", &key, "10.8.0.3/32");
        peers
            .create(&Default::default(), &replacement)
            .await
            .expect("the replacement");
        let (store, mut writer) = reflector::store::<PartialObjectMeta<WgPeer>>();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(identity(
            &namespace, "tg-1-1", "1",
        )));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        (peers, writer, context_with_peers(client, store), namespace)
    }

    fn names() -> Vec<String> {
        vec!["tg-1-1".to_owned(), "tg-1-2".to_owned()]
    }

    #[tokio::test]
    async fn a_store_behind_a_deletion_is_waited_for_so_a_device_added_before_it_is_seen() {
        let (peers, mut writer, ctx, namespace) = rotated_behind_the_store().await;
        let watched = namespace.clone();
        let catching_up = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The watch delivers in order: the replacement's creation, then the deletion.
            writer.apply_watcher_event(&watcher::Event::Apply(identity(&watched, "tg-1-2", "2")));
            writer.apply_watcher_event(&watcher::Event::Delete(identity(&watched, "tg-1-1", "3")));
            writer
        });
        let started = Instant::now();
        let found = ctx.peers(&peers, &namespace, names()).await;
        let _writer = catching_up.await.unwrap();
        let found: Vec<String> = found.unwrap().iter().map(ResourceExt::name_any).collect();
        assert_eq!(
            found,
            ["tg-1-2"],
            "not an empty list: the subscription would get a first device again"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_store_that_never_catches_up_fails_the_reconcile_for_a_retry() {
        let (peers, _writer, ctx, namespace) = rotated_behind_the_store().await;
        let started = Instant::now();
        let result = ctx.peers(&peers, &namespace, names()).await;
        assert!(matches!(result, Err(Error::StoreBehind)), "{result:?}");
        assert!(started.elapsed() >= STORE_CATCH_UP);
        assert_eq!(Error::StoreBehind.reason(), "StoreBehind");
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=10).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn requeue_is_just_after_the_next_change_and_bounded() {
        let now: Timestamp = "2026-06-01T00:00:00Z".parse().unwrap();
        let soon = now + SignedDuration::from_secs(90);
        assert_eq!(
            requeue_action(Some(soon), now),
            Action::requeue(Duration::from_millis(90_001))
        );
        let far = now + SignedDuration::from_hours(24 * 40);
        assert_eq!(requeue_action(Some(far), now), Action::requeue(MAX_REQUEUE));
        assert_eq!(requeue_action(None, now), Action::requeue(MAX_REQUEUE));
        let past = now - SignedDuration::from_secs(1);
        assert_eq!(
            requeue_action(Some(past), now),
            Action::requeue(Duration::from_millis(1))
        );
    }
}
