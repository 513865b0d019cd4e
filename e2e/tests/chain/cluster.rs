//! The cluster, in this process: one in-memory Kubernetes API (kube-fake-client) shared by every
//! component, the operator's `reconcile` / `error_policy` driven by kube-runtime's own scheduler
//! (`applier`, the core of its `Controller`, so requeues and backoff are the real ones), and the
//! node-agent's loop on a wireguard-go interface in the lab's server namespace.
//!
//! kube-fake-client has no watch, so [`ListWatch`] plays one: it lists a kind every few
//! milliseconds and turns resourceVersion changes into the `Apply` / `Delete` events a watch
//! would deliver. The same events feed the operator (its subscription store and triggers, mapped
//! as its Controller maps them) and the node-agent's index (as its watches do).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use futures::StreamExt as _;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams, ObjectMeta};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use kube::runtime::{applier, controller};
use kube::{Resource, ResourceExt};
use kube_fake_client::ClientBuilder;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_node_agent::agent::{Agent, Settings as AgentSettings};
use wgsub_node_agent::http::Health;
use wgsub_node_agent::index::{Index, Kind, SharedIndex};
use wgsub_node_agent::interface::{Backend, Worker};
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue};
use wgsub_operator::controller::{
    Context, Settings as OperatorSettings, error_policy, owning_subscription, reconcile,
    subscriptions_on_server,
};

/// The namespace wgsub is installed in.
pub const NAMESPACE: &str = "wgsub";
/// The node the VPN server runs on.
pub const NODE: &str = "vpn-node-1";
/// How often the stand-in watches list the API.
const WATCH_POLL: Duration = Duration::from_millis(10);

/// Stands for `K` when telling the in-memory API server that `K` has a status subresource (as
/// the CRDs declare): kube-fake-client reads the kind from a default instance, and the CRD types
/// have no `Default`.
struct StatusOf<K>(ObjectMeta, PhantomData<K>);

impl<K> Default for StatusOf<K> {
    fn default() -> Self {
        Self(ObjectMeta::default(), PhantomData)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for StatusOf<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0
    }
}

impl<K: Resource<DynamicType = ()>> serde::Serialize for StatusOf<K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("apiVersion", &K::api_version(&()))?;
        map.serialize_entry("kind", &K::kind(&()))?;
        map.serialize_entry("metadata", &self.0)?;
        map.end()
    }
}

/// A watch played by listing: remembers what it delivered and reports the differences.
struct ListWatch<K> {
    api: Api<K>,
    known: BTreeMap<String, K>,
    listed: bool,
}

impl<K> ListWatch<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    fn new(api: Api<K>) -> Self {
        Self {
            api,
            known: BTreeMap::new(),
            listed: false,
        }
    }

    /// The events since the previous call. The first call is the initial list (`Init`, an
    /// `InitApply` per object, `InitDone`); later ones give `Apply` for new or changed objects
    /// and `Delete` for vanished ones.
    async fn changes(&mut self) -> Result<Vec<Event<K>>, kube::Error> {
        let listed = self.api.list(&ListParams::default()).await?.items;
        if !self.listed {
            self.listed = true;
            let mut events = vec![Event::Init];
            for object in listed {
                events.push(Event::InitApply(object.clone()));
                self.known.insert(object.name_any(), object);
            }
            events.push(Event::InitDone);
            return Ok(events);
        }
        let mut events = Vec::new();
        let mut present = BTreeMap::new();
        for object in listed {
            let name = object.name_any();
            let changed = self
                .known
                .get(&name)
                .is_none_or(|old| old.resource_version() != object.resource_version());
            if changed {
                events.push(Event::Apply(object.clone()));
            }
            present.insert(name, object);
        }
        for (name, object) in &self.known {
            if !present.contains_key(name) {
                events.push(Event::Delete(object.clone()));
            }
        }
        self.known = present;
        Ok(events)
    }
}

fn object_of<K>(event: &Event<K>) -> Option<&K> {
    match event {
        Event::Apply(object) | Event::Delete(object) | Event::InitApply(object) => Some(object),
        Event::Init | Event::InitDone => None,
    }
}

/// Feeds one event into the node-agent's index.
fn feed<K: ResourceExt + Clone>(
    index: &SharedIndex,
    event: &Event<K>,
    apply: impl FnOnce(&mut Index, K),
    delete: impl FnOnce(&mut Index, &str),
) {
    match event {
        Event::Apply(object) | Event::InitApply(object) => {
            index.update(|i| apply(i, object.clone()))
        }
        Event::Delete(object) => index.update(|i| delete(i, &object.name_any())),
        Event::Init | Event::InitDone => {}
    }
}

type Trigger<K> = mpsc::UnboundedSender<Result<K, Infallible>>;

/// The operator's inputs: the streams its Controller would build from its watches.
struct OperatorTriggers {
    subscriptions: Trigger<VpnSubscription>,
    peers: Trigger<WgPeer>,
    secrets: Trigger<Secret>,
    servers: Trigger<WgServer>,
}

/// Where the watches deliver.
struct Consumers {
    index: Arc<SharedIndex>,
    subscriptions: reflector::store::Writer<VpnSubscription>,
    operator: OperatorTriggers,
}

fn trigger<K>(sender: &Trigger<K>, event: &Event<K>)
where
    K: Clone,
{
    if let Some(object) = object_of(event) {
        // A closed channel means the operator stopped, which only happens at shutdown.
        let _ = sender.unbounded_send(Ok(object.clone()));
    }
}

/// Lists every watched kind until `shutdown`, delivering the changes.
async fn run_watches(client: kube::Client, mut to: Consumers, shutdown: CancellationToken) {
    let mut servers = ListWatch::<WgServer>::new(Api::namespaced(client.clone(), NAMESPACE));
    let mut peers = ListWatch::<WgPeer>::new(Api::namespaced(client.clone(), NAMESPACE));
    let mut subscriptions =
        ListWatch::<VpnSubscription>::new(Api::namespaced(client.clone(), NAMESPACE));
    let mut secrets = ListWatch::<Secret>::new(Api::namespaced(client, NAMESPACE));
    let mut synced = false;
    loop {
        let round: Result<(), kube::Error> = async {
            for event in subscriptions.changes().await? {
                to.subscriptions.apply_watcher_event(&event);
                feed(
                    &to.index,
                    &event,
                    |i, s| i.apply_subscription(&s),
                    Index::delete_subscription,
                );
                // The Controller reconciles the primary kind on applied objects only.
                if matches!(event, Event::Apply(_) | Event::InitApply(_)) {
                    trigger(&to.operator.subscriptions, &event);
                }
            }
            for event in servers.changes().await? {
                feed(&to.index, &event, Index::apply_server, Index::delete_server);
                trigger(&to.operator.servers, &event);
            }
            for event in peers.changes().await? {
                feed(&to.index, &event, Index::apply_peer, Index::delete_peer);
                trigger(&to.operator.peers, &event);
            }
            for event in secrets.changes().await? {
                feed(
                    &to.index,
                    &event,
                    |i, s| i.apply_secret(&s),
                    Index::delete_secret,
                );
                trigger(&to.operator.secrets, &event);
            }
            Ok(())
        }
        .await;
        match round {
            Ok(()) if !synced => {
                synced = true;
                for kind in Kind::ALL {
                    to.index.mark_synced(kind);
                }
            }
            Ok(()) => {}
            Err(error) => eprintln!("chain: a stand-in watch failed to list: {error}"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_POLL) => {}
        }
    }
}

/// The operator, configured as its binary is (defaults plus the chart's flags), reconciling
/// through kube-runtime's scheduler until the trigger streams end.
fn start_operator(
    client: &kube::Client,
    default_server: &str,
    store: Store<VpnSubscription>,
) -> (JoinHandle<()>, OperatorTriggers) {
    let config = wgsub_operator::config::Config::try_parse_from([
        "wgsub-operator",
        "--namespace",
        NAMESPACE,
        "--default-server",
        default_server,
    ])
    .expect("the operator accepts the chart's flags");
    let ctx = Arc::new(Context::new(
        client.clone(),
        Reporter {
            controller: wgsub_operator::patches::FIELD_MANAGER.to_owned(),
            instance: Some("wgsub-operator-0".to_owned()),
        },
        OperatorSettings {
            default_server: config.default_server.clone(),
            retention: config.retention,
        },
        Arc::new(wgsub_operator::metrics::Metrics::new()),
        Arc::new(jiff::Timestamp::now),
    ));
    let (subscription_tx, subscription_rx) = mpsc::unbounded::<Result<VpnSubscription, _>>();
    let (peer_tx, peer_rx) = mpsc::unbounded::<Result<WgPeer, _>>();
    let (secret_tx, secret_rx) = mpsc::unbounded::<Result<Secret, _>>();
    let (server_tx, server_rx) = mpsc::unbounded::<Result<WgServer, _>>();
    let server_store = store.clone();
    let default_server = config.default_server.clone();
    let queue = futures::stream::select_all([
        controller::trigger_self(subscription_rx, ()).boxed(),
        controller::trigger_with(peer_rx, |peer: WgPeer| owning_subscription(&peer)).boxed(),
        controller::trigger_with(secret_rx, |secret: Secret| owning_subscription(&secret)).boxed(),
        controller::trigger_with(server_rx, move |server: WgServer| {
            subscriptions_on_server(&server_store, &server, &default_server)
        })
        .boxed(),
    ]);
    let running = applier(
        |subscription, ctx| Box::pin(reconcile(subscription, ctx)),
        error_policy,
        ctx,
        store,
        queue,
        controller::Config::default().concurrency(config.concurrency),
    )
    // Failures are the operator's to log (its error_policy does) and to retry.
    .for_each(|_| async {});
    (
        tokio::spawn(running),
        OperatorTriggers {
            subscriptions: subscription_tx,
            peers: peer_tx,
            secrets: secret_tx,
            servers: server_tx,
        },
    )
}

/// The cluster and its running components; stopped on drop.
pub struct Cluster {
    pub client: kube::Client,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// An API server holding `server` and its node, with the operator and the node-agent (whose
    /// interfaces live in `netns`) running against it.
    pub async fn start(server: WgServer, netns: &std::path::Path) -> Cluster {
        let mut node = Node::default();
        node.metadata.name = Some(NODE.to_owned());
        let server_name = server.name_any();
        let client = ClientBuilder::new()
            .with_resource::<VpnSubscription>()
            .with_resource::<WgPeer>()
            .with_resource::<WgServer>()
            .with_status_subresource::<StatusOf<VpnSubscription>>()
            .with_status_subresource::<StatusOf<WgPeer>>()
            .with_status_subresource::<StatusOf<WgServer>>()
            .with_object(server)
            .with_object(node)
            .build()
            .await
            .expect("the in-memory API server starts");
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let (store, writer) = reflector::store::<VpnSubscription>();
        let (operator, triggers) = start_operator(&client, &server_name, store);
        tasks.push(operator);

        let agent_config = wgsub_node_agent::config::Config::try_parse_from([
            "wgsub-node-agent",
            "--node-name",
            NODE,
            "--namespace",
            NAMESPACE,
            "--backend",
            "userspace",
            "--netns",
            netns.to_str().expect("a UTF-8 netns path"),
        ])
        .expect("the node-agent accepts the chart's flags");
        agent_config
            .validate()
            .expect("the node-agent's settings are valid");
        let index = Arc::new(SharedIndex::default());
        let metrics = Arc::new(wgsub_node_agent::metrics::Metrics::default());
        let api = KubeApi::new(client.clone(), agent_config.namespace.clone());
        let status = Arc::new(StatusQueue::default());
        tasks.push(tokio::spawn(status.clone().run_writer(
            api.clone(),
            agent_config.status_writes_per_second,
            metrics.clone(),
            shutdown.clone(),
        )));
        let agent = Agent::new(
            AgentSettings {
                node_name: agent_config.node_name.clone(),
                backend: Backend::resolve(agent_config.backend),
                resync_interval: agent_config.resync_interval,
                status_interval: agent_config.status_interval,
                counters_interval: agent_config.counters_interval,
                firewall: agent_config.firewall.fixed(),
            },
            index.clone(),
            api,
            Worker::start(agent_config.netns.clone()).expect("the worker enters the netns"),
            metrics,
            Arc::new(Health::new(
                agent_config.resync_interval * 4 + Duration::from_secs(60),
            )),
            status,
        );
        tasks.push(tokio::spawn(agent.run(shutdown.clone())));

        tasks.push(tokio::spawn(run_watches(
            client.clone(),
            Consumers {
                index,
                subscriptions: writer,
                operator: triggers,
            },
            shutdown.clone(),
        )));
        Cluster {
            client,
            shutdown,
            tasks,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }
}

impl Cluster {
    /// What the API holds, for failure messages: each subscription, peer and server with its
    /// spec and status (Secrets by name only).
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        let yaml =
            |value: serde_json::Value| serde_json::to_string_pretty(&value).unwrap_or_default();
        for subscription in self.list::<VpnSubscription>().await {
            out += &format!(
                "VpnSubscription {}: spec {} status {}\n",
                subscription.name_any(),
                yaml(serde_json::json!(subscription.spec)),
                yaml(serde_json::json!(subscription.status))
            );
        }
        for peer in self.list::<WgPeer>().await {
            out += &format!(
                "WgPeer {}: spec {} status {}\n",
                peer.name_any(),
                yaml(serde_json::json!(peer.spec)),
                yaml(serde_json::json!(peer.status))
            );
        }
        for server in self.list::<WgServer>().await {
            out += &format!(
                "WgServer {}: status {}\n",
                server.name_any(),
                yaml(serde_json::json!(server.status))
            );
        }
        let secrets: Vec<String> = self
            .list::<Secret>()
            .await
            .iter()
            .map(|s| s.name_any())
            .collect();
        out += &format!("Secrets: {secrets:?}\n");
        out
    }

    async fn list<K>(&self) -> Vec<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        match self.api::<K>().list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(error) => {
                eprintln!("chain: listing {} failed: {error}", K::kind(&()));
                Vec::new()
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}
