//! The watch-backed caches the api and the bot read from, so that no read path calls the API
//! server: kube-runtime reflector [`Store`]s of one namespace's `WgPeer`s (with an index by the
//! `wgsub.io/subscription` label), `WgServer`s, peer key `Secret`s and, for the api,
//! `VpnSubscription`s (by name). The key Secrets are listed in the peer keys namespace
//! ([`CacheOptions::keys_namespace`]; the chart gives the api and the bot no Secret access
//! anywhere else) with the label selector `wgsub.io/peer`: only the Secrets the operator made for
//! peers are cached; a preshared-key Secret must be there and carry that label too to be served.
//!
//! Each kind is fed by its own task: a `watcher` (list, then watch; the server closes every
//! watch after [`WATCH_TIMEOUT_SECS`] and it is re-opened from the last resource version, and a
//! watch that stays silent past that plus 5 s is treated as dead and re-opened). On an error the
//! task drops its watcher and re-lists from scratch after a backoff of 0.5 s doubling to
//! [`MAX_RELIST_BACKOFF`]; the store keeps serving what it had until that list is complete.
//!
//! **How stale an answer can be.** Until a kind has been listed once, [`Caches::check`] fails
//! with [`CacheError::NotSynced`] (the api answers 503 `cache_not_ready` and `/readyz` is not
//! ready — never a wrong "no subscription"). After an error, answers from the old contents are
//! served for at most `stale_after` ([`DEFAULT_STALE_AFTER`], 10 s); past that every read fails
//! with [`CacheError::Stale`] until a re-list completes. A connection that dies silently is
//! noticed within [`WATCH_TIMEOUT_SECS`] + 5 s (35 s) and counts from then, so the worst case
//! of a stale answer is about 45 s; with a live watch an answer trails the server by one watch
//! event's delay.
//!
//! **Reading one's own write.** A writer passes the object the server returned to
//! [`Caches::wait_for`], which waits (bounded) until the cache holds that resource version or a
//! newer one, so a read right after the user's own write sees it.
//!
//! Memory: every cached object is kept without `managedFields` and without the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::NamespaceResourceScope;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use wgsub_crds::resources::{LABEL_PEER, LABEL_SUBSCRIPTION};
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};

/// Seconds after which the server closes a watch (it is re-opened from where it was).
pub const WATCH_TIMEOUT_SECS: u32 = 30;
/// How long answers are served from a cache whose watch has failed, before reads fail.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(10);
/// The longest wait between two re-lists of a failing watch.
pub const MAX_RELIST_BACKOFF: Duration = Duration::from_secs(10);
/// How long a writer waits for the cache to hold its write by default.
pub const DEFAULT_WRITE_WAIT: Duration = Duration::from_secs(2);

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The cached kinds, as errors and logs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Subscriptions,
    Peers,
    Servers,
    Secrets,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Subscriptions => "VpnSubscriptions",
            Kind::Peers => "WgPeers",
            Kind::Servers => "WgServers",
            Kind::Secrets => "peer key Secrets",
        }
    }
}

/// Why the caches cannot answer now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The kind has not been listed yet.
    #[error("the cache of {} has not synced yet", .0.as_str())]
    NotSynced(Kind),
    /// The kind's watch has been failing for longer than the caches serve stale answers.
    #[error("the cache of {} is stale: its watch has failed for {}s", .0.as_str(), .1.as_secs())]
    Stale(Kind, Duration),
}

/// Where one kind's watch stands: the pure bookkeeping behind [`Caches::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    synced: bool,
    failing_since: Option<Instant>,
}

impl Health {
    /// A list completed (the store holds the server's state as of now).
    pub fn listed(&mut self) {
        self.synced = true;
        self.failing_since = None;
    }

    /// A watch event arrived: the watch is live.
    pub fn event(&mut self) {
        if self.synced {
            self.failing_since = None;
        }
    }

    /// The watch failed at `now` (the first failure of a streak counts).
    pub fn failed(&mut self, now: Instant) {
        self.failing_since.get_or_insert(now);
    }

    /// Whether reads may be answered at `now`, serving stale answers for at most `stale_after`.
    pub fn check(&self, kind: Kind, now: Instant, stale_after: Duration) -> Result<(), CacheError> {
        if !self.synced {
            return Err(CacheError::NotSynced(kind));
        }
        match self.failing_since {
            Some(since) if now.saturating_duration_since(since) > stale_after => Err(
                CacheError::Stale(kind, now.saturating_duration_since(since)),
            ),
            _ => Ok(()),
        }
    }
}

/// The names of the peers of each subscription (by the `wgsub.io/subscription` label), kept
/// from the same watch events as the peer store and with the same semantics: a re-list is
/// buffered and replaces the index when it is complete.
#[derive(Debug, Default)]
pub struct PeerIndex {
    by_subscription: HashMap<String, BTreeSet<String>>,
    label_of: HashMap<String, String>,
    buffer: Option<Vec<(String, String)>>,
}

impl PeerIndex {
    /// Applies one watch event.
    pub fn apply(&mut self, event: &watcher::Event<WgPeer>) {
        match event {
            watcher::Event::Apply(peer) => {
                let name = peer.name_any();
                self.remove(&name);
                if let Some(label) = peer.labels().get(LABEL_SUBSCRIPTION) {
                    self.insert(name, label.clone());
                }
            }
            watcher::Event::Delete(peer) => self.remove(&peer.name_any()),
            watcher::Event::Init => self.buffer = Some(Vec::new()),
            watcher::Event::InitApply(peer) => {
                if let Some(label) = peer.labels().get(LABEL_SUBSCRIPTION) {
                    self.buffer
                        .get_or_insert_with(Vec::new)
                        .push((peer.name_any(), label.clone()));
                }
            }
            watcher::Event::InitDone => {
                self.by_subscription.clear();
                self.label_of.clear();
                for (name, label) in self.buffer.take().unwrap_or_default() {
                    self.insert(name, label);
                }
            }
        }
    }

    /// The names of `subscription`'s peers, in name order.
    pub fn peers_of(&self, subscription: &str) -> Vec<String> {
        self.by_subscription
            .get(subscription)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn insert(&mut self, name: String, label: String) {
        self.by_subscription
            .entry(label.clone())
            .or_default()
            .insert(name.clone());
        self.label_of.insert(name, label);
    }

    fn remove(&mut self, name: &str) {
        if let Some(label) = self.label_of.remove(name)
            && let Some(names) = self.by_subscription.get_mut(&label)
        {
            names.remove(name);
            if names.is_empty() {
                self.by_subscription.remove(&label);
            }
        }
    }
}

/// Whether a cached object at `cached` holds a write that returned `written`: the same
/// resource version, or (resource versions being etcd revisions on every real server) a newer
/// one.
pub fn holds_version(cached: &str, written: &str) -> bool {
    match (cached.parse::<u64>(), written.parse::<u64>()) {
        (Ok(cached), Ok(written)) => cached >= written,
        _ => cached == written,
    }
}

/// A kind the caches hold (namespaced, watched); see [`Caches::wait_for`].
pub trait Cached:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The caches' store of this kind, if they hold it.
    fn store(caches: &Caches) -> Option<&Store<Self>>;

    /// The namespace the caches hold this kind of.
    fn namespace(caches: &Caches) -> &str {
        &caches.inner.namespace
    }
}

impl Cached for WgPeer {
    fn store(caches: &Caches) -> Option<&Store<Self>> {
        Some(&caches.inner.peers)
    }
}
impl Cached for WgServer {
    fn store(caches: &Caches) -> Option<&Store<Self>> {
        Some(&caches.inner.servers)
    }
}
impl Cached for Secret {
    fn store(caches: &Caches) -> Option<&Store<Self>> {
        Some(&caches.inner.secrets)
    }
    fn namespace(caches: &Caches) -> &str {
        &caches.inner.keys_namespace
    }
}
impl Cached for VpnSubscription {
    fn store(caches: &Caches) -> Option<&Store<Self>> {
        caches.inner.subscriptions.as_ref()
    }
}

/// The caches of one namespace; cheap to clone. The watch tasks stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct Caches {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    keys_namespace: String,
    subscriptions: Option<Store<VpnSubscription>>,
    peers: Store<WgPeer>,
    servers: Store<WgServer>,
    secrets: Store<Secret>,
    peer_index: Arc<RwLock<PeerIndex>>,
    health: Arc<Mutex<HashMap<Kind, Health>>>,
    stale_after: Duration,
    changed: watch::Sender<u64>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for Caches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caches")
            .field("namespace", &self.inner.namespace)
            .field("keys_namespace", &self.inner.keys_namespace)
            .field("peers", &self.inner.peers.len())
            .field("servers", &self.inner.servers.len())
            .field("secrets", &self.inner.secrets.len())
            .field(
                "subscriptions",
                &self.inner.subscriptions.as_ref().map(Store::len),
            )
            .finish_non_exhaustive()
    }
}

/// Which kinds to cache, and how long stale answers may be served.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Also cache `VpnSubscription`s (the api reads them; the bot reads the ledger instead).
    pub subscriptions: bool,
    pub stale_after: Duration,
    /// The namespace of the peers' key Secrets (`--keys-namespace`); absent: the cached
    /// namespace itself.
    pub keys_namespace: Option<String>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            subscriptions: false,
            stale_after: DEFAULT_STALE_AFTER,
            keys_namespace: None,
        }
    }
}

/// Drops what a reader never needs from a cached object.
fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

impl Caches {
    /// Starts the watches of `namespace` (and of the key Secrets in
    /// [`CacheOptions::keys_namespace`]) on the current tokio runtime and returns the caches
    /// at once; they answer [`CacheError::NotSynced`] until each kind is listed
    /// ([`Caches::synced`] waits for that).
    pub fn spawn(client: kube::Client, namespace: &str, options: CacheOptions) -> Self {
        let health = Arc::new(Mutex::new(HashMap::new()));
        let (changed, _) = watch::channel(0u64);
        let peer_index = Arc::new(RwLock::new(PeerIndex::default()));
        let watch_config = || watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
        let mut feed = Feed {
            client,
            health: health.clone(),
            changed: changed.clone(),
            tasks: Vec::new(),
        };

        let subscriptions = options
            .subscriptions
            .then(|| feed.watch(Kind::Subscriptions, namespace, watch_config(), |_| {}));
        let index = peer_index.clone();
        let peers = feed.watch(Kind::Peers, namespace, watch_config(), move |event| {
            index
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .apply(event)
        });
        let servers = feed.watch(Kind::Servers, namespace, watch_config(), |_| {});
        let keys_namespace = options
            .keys_namespace
            .clone()
            .unwrap_or_else(|| namespace.to_owned());
        let secrets_config = watch_config().labels(LABEL_PEER);
        let secrets = feed.watch(Kind::Secrets, &keys_namespace, secrets_config, |_| {});
        let tasks = feed.tasks;
        Self {
            inner: Arc::new(Inner {
                namespace: namespace.to_owned(),
                keys_namespace,
                subscriptions,
                peers,
                servers,
                secrets,
                peer_index,
                health,
                stale_after: options.stale_after,
                changed,
                tasks,
            }),
        }
    }

    /// The namespace cached.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Whether reads may be answered now: every kind listed, none failing for longer than the
    /// stale limit.
    pub fn check(&self) -> Result<(), CacheError> {
        let now = Instant::now();
        let health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for kind in self.kinds() {
            health.get(&kind).cloned().unwrap_or_default().check(
                kind,
                now,
                self.inner.stale_after,
            )?;
        }
        Ok(())
    }

    fn kinds(&self) -> impl Iterator<Item = Kind> {
        [
            self.inner
                .subscriptions
                .is_some()
                .then_some(Kind::Subscriptions),
            Some(Kind::Peers),
            Some(Kind::Servers),
            Some(Kind::Secrets),
        ]
        .into_iter()
        .flatten()
    }

    /// Waits until every kind has been listed once, or `limit` passed; true when synced.
    pub async fn synced(&self, limit: Duration) -> bool {
        let mut changed = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if !matches!(self.check(), Err(CacheError::NotSynced(_))) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return !matches!(self.check(), Err(CacheError::NotSynced(_))),
            }
        }
    }

    fn key<K: Resource<DynamicType = ()>>(&self, name: &str) -> ObjectRef<K> {
        ObjectRef::new(name).within(&self.inner.namespace)
    }

    /// The `VpnSubscription` `name`; `None` also when the caches hold no subscriptions.
    pub fn subscription(&self, name: &str) -> Option<Arc<VpnSubscription>> {
        self.inner.subscriptions.as_ref()?.get(&self.key(name))
    }

    /// The store of `VpnSubscription`s, when cached (the api's drift loop shares it).
    pub fn subscription_store(&self) -> Option<Store<VpnSubscription>> {
        self.inner.subscriptions.clone()
    }

    /// The `WgPeer` `name`.
    pub fn peer(&self, name: &str) -> Option<Arc<WgPeer>> {
        self.inner.peers.get(&self.key(name))
    }

    /// The peers labelled with `subscription`, in name order.
    pub fn peers_of(&self, subscription: &str) -> Vec<Arc<WgPeer>> {
        let names = self
            .inner
            .peer_index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .peers_of(subscription);
        names.iter().filter_map(|name| self.peer(name)).collect()
    }

    /// The `WgServer` `name`.
    pub fn server(&self, name: &str) -> Option<Arc<WgServer>> {
        self.inner.servers.get(&self.key(name))
    }

    /// Every cached `WgServer`, in no particular order.
    pub fn servers(&self) -> Vec<Arc<WgServer>> {
        self.inner.servers.state()
    }

    /// Every cached `VpnSubscription`, in no particular order (none when they are not
    /// cached).
    pub fn subscriptions(&self) -> Vec<Arc<VpnSubscription>> {
        self.inner
            .subscriptions
            .as_ref()
            .map(Store::state)
            .unwrap_or_default()
    }

    /// Every cached `WgPeer`, in no particular order.
    pub fn peers(&self) -> Vec<Arc<WgPeer>> {
        self.inner.peers.state()
    }

    /// The namespace of the cached key Secrets.
    pub fn keys_namespace(&self) -> &str {
        &self.inner.keys_namespace
    }

    /// The peer key `Secret` `name` of the keys namespace (only Secrets labelled
    /// `wgsub.io/peer` are cached).
    pub fn secret(&self, name: &str) -> Option<Arc<Secret>> {
        self.inner
            .secrets
            .get(&ObjectRef::new(name).within(&self.inner.keys_namespace))
    }

    /// Waits until the cache no longer holds `deleted` (the same name and uid), for at most
    /// `limit`; true when it does not. A deleting writer calls it so that the user's next read
    /// no longer lists what they deleted.
    pub async fn wait_gone<K: Cached>(&self, deleted: &K, limit: Duration) -> bool {
        let Some(store) = K::store(self) else {
            return true;
        };
        let Some(name) = deleted.meta().name.clone() else {
            return true;
        };
        let uid = deleted.meta().uid.clone();
        let key = ObjectRef::<K>::new(&name).within(K::namespace(self));
        let gone = || {
            store
                .get(&key)
                .is_none_or(|cached| uid.is_some() && cached.meta().uid != uid)
        };
        self.wait_until(limit, gone).await
    }

    /// Waits until the cache holds `written` (the object a write returned) at its resource
    /// version or a newer one, for at most `limit`; true when it does. An object without a
    /// resource version, or of a kind not cached, is not waited for.
    pub async fn wait_for<K: Cached>(&self, written: &K, limit: Duration) -> bool {
        let Some(store) = K::store(self) else {
            return true;
        };
        let (Some(name), Some(version)) = (
            written.meta().name.clone(),
            written.meta().resource_version.clone(),
        ) else {
            return true;
        };
        let key = ObjectRef::<K>::new(&name).within(K::namespace(self));
        let holds = || {
            store.get(&key).is_some_and(|cached| {
                cached
                    .meta()
                    .resource_version
                    .as_deref()
                    .is_some_and(|have| holds_version(have, &version))
            })
        };
        self.wait_until(limit, holds).await
    }

    /// Whether `done` holds of the cache, asked now and again after every change the watches
    /// bring, for at most `limit`: true as soon as it does, else its answer at the deadline.
    async fn wait_until(&self, limit: Duration, done: impl Fn() -> bool) -> bool {
        let mut changed = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if done() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return done(),
            }
        }
    }
}

/// What the watch tasks share, and the tasks started.
struct Feed {
    client: kube::Client,
    health: Arc<Mutex<HashMap<Kind, Health>>>,
    changed: watch::Sender<u64>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Feed {
    /// Starts the watch of `kind` in `namespace` and returns the store it fills.
    fn watch<K: Cached>(
        &mut self,
        kind: Kind,
        namespace: &str,
        config: watcher::Config,
        on_event: impl FnMut(&watcher::Event<K>) + Send + 'static,
    ) -> Store<K> {
        let (store, writer) = kube::runtime::reflector::store();
        let api = Api::namespaced(self.client.clone(), namespace);
        let health = self.health.clone();
        let changed = self.changed.clone();
        let task = tokio::spawn(feed(kind, api, config, writer, health, changed, on_event));
        self.tasks.push(task.abort_handle());
        store
    }
}

/// One kind's task: watch, apply every event to the store (and `on_event`), and on an error
/// re-list from scratch after a backoff.
async fn feed<K: Cached>(
    kind: Kind,
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    health: Arc<Mutex<HashMap<Kind, Health>>>,
    changed: watch::Sender<u64>,
    mut on_event: impl FnMut(&watcher::Event<K>),
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    let mut backoff = FIRST_BACKOFF;
    let update = |change: &dyn Fn(&mut Health)| {
        let mut all = health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(all.entry(kind).or_default());
    };
    loop {
        let mut events = std::pin::pin!(watcher(api.clone(), config.clone()).modify(strip));
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => {
                    writer.apply_watcher_event(&event);
                    on_event(&event);
                    match event {
                        watcher::Event::InitDone => {
                            update(&Health::listed);
                            backoff = FIRST_BACKOFF;
                        }
                        watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                            update(&Health::event)
                        }
                        watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    }
                    changed.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(error) => {
                    update(&|health| health.failed(Instant::now()));
                    changed.send_modify(|n| *n = n.wrapping_add(1));
                    tracing::warn!(kind = kind.as_str(), %error, retry_in_ms = backoff.as_millis(),
                        "cache watch failed; re-listing");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RELIST_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::WgPeerSpec;

    fn peer(name: &str, subscription: Option<&str>) -> WgPeer {
        let mut peer = WgPeer::new(name, WgPeerSpec::on_server("main"));
        if let Some(label) = subscription {
            peer.labels_mut()
                .insert(LABEL_SUBSCRIPTION.into(), label.into());
        }
        peer
    }

    #[test]
    fn the_peer_index_follows_applies_relabels_and_deletes() {
        let mut index = PeerIndex::default();
        index.apply(&watcher::Event::Apply(peer("tg-1-2", Some("tg-1"))));
        index.apply(&watcher::Event::Apply(peer("tg-1-1", Some("tg-1"))));
        index.apply(&watcher::Event::Apply(peer("tg-2-1", Some("tg-2"))));
        index.apply(&watcher::Event::Apply(peer("stray", None)));
        assert_eq!(index.peers_of("tg-1"), ["tg-1-1", "tg-1-2"]);
        index.apply(&watcher::Event::Apply(peer("tg-1-2", Some("tg-2"))));
        assert_eq!(index.peers_of("tg-1"), ["tg-1-1"]);
        assert_eq!(index.peers_of("tg-2"), ["tg-1-2", "tg-2-1"]);
        index.apply(&watcher::Event::Apply(peer("tg-1-1", None)));
        index.apply(&watcher::Event::Delete(peer("tg-2-1", Some("tg-2"))));
        assert!(index.peers_of("tg-1").is_empty());
        assert_eq!(index.peers_of("tg-2"), ["tg-1-2"]);
        assert!(
            !index.by_subscription.contains_key("tg-1"),
            "no empty sets kept"
        );
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let mut index = PeerIndex::default();
        index.apply(&watcher::Event::Apply(peer("tg-1-1", Some("tg-1"))));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(peer("tg-2-1", Some("tg-2"))));
        assert_eq!(index.peers_of("tg-1"), ["tg-1-1"], "old answers until done");
        assert!(index.peers_of("tg-2").is_empty());
        index.apply(&watcher::Event::InitDone);
        assert!(index.peers_of("tg-1").is_empty(), "gone from the new list");
        assert_eq!(index.peers_of("tg-2"), ["tg-2-1"]);
        index.apply(&watcher::Event::Delete(peer("tg-2-1", Some("tg-2"))));
        assert!(index.peers_of("tg-2").is_empty());
    }

    #[test]
    fn health_refuses_before_the_first_list_and_after_failing_too_long() {
        let limit = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut health = Health::default();
        assert_eq!(
            health.check(Kind::Peers, t0, limit),
            Err(CacheError::NotSynced(Kind::Peers))
        );
        health.failed(t0);
        health.event();
        assert_eq!(
            health.check(Kind::Peers, t0, limit),
            Err(CacheError::NotSynced(Kind::Peers)),
            "an event during a first list does not make it synced"
        );
        health.listed();
        assert_eq!(health.check(Kind::Peers, t0, limit), Ok(()));
        health.failed(t0);
        health.failed(t0 + Duration::from_secs(5));
        assert_eq!(
            health.check(Kind::Peers, t0 + limit, limit),
            Ok(()),
            "stale answers within the limit"
        );
        assert!(
            matches!(
                health.check(Kind::Peers, t0 + limit + Duration::from_secs(1), limit),
                Err(CacheError::Stale(Kind::Peers, _))
            ),
            "the streak counts from its first failure"
        );
        health.event();
        assert_eq!(
            health.check(Kind::Peers, t0 + limit * 2, limit),
            Ok(()),
            "a live watch ends the streak"
        );
        health.failed(t0);
        health.listed();
        assert_eq!(health.check(Kind::Peers, t0 + limit * 2, limit), Ok(()));
    }

    #[test]
    fn a_cached_version_holds_a_write_at_it_or_newer() {
        assert!(holds_version("120", "120"));
        assert!(holds_version("121", "120"));
        assert!(!holds_version("119", "120"));
        assert!(!holds_version("99", "120"), "compared as numbers");
        assert!(holds_version("abc", "abc"));
        assert!(!holds_version("abd", "abc"));
    }
}
