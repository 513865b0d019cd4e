//! The cluster: the real Kubernetes API server of this test process (`wgsub_testkit::envtest`,
//! with its garbage collector), a namespace per test with the chart's RBAC applied to it and a
//! Node for the VPN server; the operator's real `controller::run` (its watches, mappers,
//! scheduler and reconciles) and the node-agent's real watches, status writer and loop on a
//! wireguard-go interface in the lab's server namespace — wired as `wgsub_operator::run` and
//! `wgsub_node_agent::service::run` wire them, configured from the flags the chart gives them.
//! Every component talks to the server with a client authenticated as the ServiceAccount the
//! chart runs it under, so a call the chart's RBAC does not grant is the server's own 403, and
//! the server's audit log tells the test.

use std::sync::Arc;

use clap::Parser as _;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::Reporter;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wgsub_crds::{VpnSubscription, WgPeer, WgServer};
use wgsub_node_agent::agent::Agent;
use wgsub_node_agent::http::Health;
use wgsub_node_agent::index::SharedIndex;
use wgsub_node_agent::interface::Worker;
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue, run_watches};
use wgsub_operator::controller::{Context, Settings as OperatorSettings};
use wgsub_testkit::chart::{
    apply_chart_rbac, assert_nothing_forbidden, component_client, peer_keys_namespace,
    server_keys_namespace, service_account,
};
use wgsub_testkit::envtest::{AuditedRequest, ControlPlane};

/// The operator, configured as its binary is (defaults plus the chart's flags), running its
/// controller until `shutdown`.
fn start_operator(
    client: kube::Client,
    namespace: &str,
    default_server: &str,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    let keys = peer_keys_namespace(namespace);
    let config = wgsub_operator::config::Config::try_parse_checked([
        "wgsub-operator",
        "--namespace",
        namespace,
        "--keys-namespace",
        &keys,
        "--default-server",
        default_server,
    ])
    .expect("the operator accepts the chart's flags");
    let ctx = Arc::new(Context::new(
        client,
        Reporter {
            controller: wgsub_operator::patches::FIELD_MANAGER.to_owned(),
            instance: Some("wgsub-operator-0".to_owned()),
        },
        OperatorSettings {
            default_server: config.default_server.clone(),
            retention: config.retention,
            keys_namespace: config.keys_namespace.clone(),
        },
        Arc::new(wgsub_operator::metrics::Metrics::new()),
        Arc::new(jiff::Timestamp::now),
    ));
    tokio::spawn(wgsub_operator::lead(
        ctx,
        Some(namespace.to_owned()),
        config.concurrency,
        shutdown.clone(),
    ))
}

/// The node-agent, configured as the chart configures it (plus the lab's network namespace and
/// the test's `extra` flags): its watches, status writer and loop, until `shutdown`.
fn start_node_agent(
    client: kube::Client,
    namespace: &str,
    node: &str,
    netns: &std::path::Path,
    extra: &[String],
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let server_keys = server_keys_namespace(namespace);
    let mut args = vec![
        "wgsub-node-agent".to_owned(),
        "--node-name".to_owned(),
        node.to_owned(),
        "--namespace".to_owned(),
        namespace.to_owned(),
        "--server-keys-namespace".to_owned(),
        server_keys,
        "--backend".to_owned(),
        "userspace".to_owned(),
        "--netns".to_owned(),
        netns.to_str().expect("a UTF-8 netns path").to_owned(),
    ];
    args.extend(extra.iter().cloned());
    let config = wgsub_node_agent::config::Config::try_parse_from(args)
        .expect("the node-agent accepts the chart's flags");
    config
        .validate()
        .expect("the node-agent's settings are valid");
    let index = Arc::new(SharedIndex::default());
    let metrics = Arc::new(wgsub_node_agent::metrics::Metrics::default());
    let api = KubeApi::new(client.clone(), config.namespace.clone())
        .with_server_keys_namespace(config.server_keys_namespace());
    let status = Arc::new(StatusQueue::default());
    let agent = Agent::new(
        config.agent_settings(),
        index.clone(),
        api.clone(),
        Worker::start(config.netns.clone()).expect("the worker enters the netns"),
        metrics.clone(),
        Arc::new(Health::new(config.health_deadline())),
        status.clone(),
    );
    let namespace = config.namespace.clone();
    let server_keys = config.server_keys_namespace().to_owned();
    let watches_shutdown = shutdown.clone();
    vec![
        tokio::spawn(async move {
            run_watches(client, &namespace, &server_keys, index, watches_shutdown).await;
        }),
        tokio::spawn(status.run_writer(
            api,
            config.status_writes_per_second,
            metrics,
            shutdown.clone(),
        )),
        tokio::spawn(agent.run(shutdown.clone())),
    ]
}

/// A namespace of the shared control plane with the chart's RBAC, the VPN node, and the
/// components running in it; the components stop on drop (the namespace stays until the
/// control plane ends with the test process).
pub struct Cluster {
    plane: &'static ControlPlane,
    /// The namespace wgsub is installed in.
    pub namespace: String,
    /// The node the VPN server runs on (a Node object; no kubelet behind it).
    pub node: String,
    /// The test's own client (admin): setup, checks and what an administrator does.
    pub client: kube::Client,
    /// The components that were given a client, in order.
    components: Vec<&'static str>,
    /// Flags the node-agent gets beyond the chart's ([`Cluster::with_agent_flags`]).
    agent_flags: Vec<String>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A fresh namespace (`<prefix>-…`) on the real API server with the chart's RBAC (default
    /// values) and a Node for the VPN server; nothing runs yet.
    pub async fn new(prefix: &str) -> Cluster {
        let plane = ControlPlane::with_crds();
        let namespace = plane.namespace(prefix).await;
        apply_chart_rbac(plane, &namespace, &[]).await;
        let client = plane.admin_client();
        let node = format!("{namespace}-vpn");
        let mut object = Node::default();
        object.metadata.name = Some(node.clone());
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("creating the Node {node}: {e}"));
        Cluster {
            plane,
            namespace,
            node,
            client,
            components: Vec::new(),
            agent_flags: Vec::new(),
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// The same cluster giving the node-agent `flags` too when it starts (a test's quicker
    /// intervals, e.g. `--counters-interval 1s`).
    #[allow(dead_code, reason = "tests/quota.rs uses it; tests/chain.rs does not")]
    pub fn with_agent_flags(mut self, flags: &[&str]) -> Self {
        self.agent_flags = flags.iter().map(|flag| (*flag).to_owned()).collect();
        self
    }

    /// Creates `server` (as the chart does) and starts the operator and the node-agent (whose
    /// interfaces live in `netns`), each with its ServiceAccount's client.
    pub async fn start(&mut self, server: &WgServer, netns: &std::path::Path) {
        self.create_server(server).await;
        self.start_components(&server.name_any(), netns).await;
    }

    /// Creates `server` as the chart does, without starting anything.
    pub async fn create_server(&self, server: &WgServer) {
        self.api::<WgServer>()
            .create(&PostParams::default(), server)
            .await
            .expect("the API server admits the WgServer");
    }

    /// Starts the operator (with `default_server`) and the node-agent (whose interfaces live
    /// in `netns`), each with its ServiceAccount's client.
    pub async fn start_components(&mut self, default_server: &str, netns: &std::path::Path) {
        let operator = self.client_for("operator").await;
        self.tasks.push(start_operator(
            operator,
            &self.namespace,
            default_server,
            &self.shutdown,
        ));
        let agent = self.client_for("node-agent").await;
        self.tasks.extend(start_node_agent(
            agent,
            &self.namespace,
            &self.node,
            netns,
            &self.agent_flags,
            &self.shutdown,
        ));
    }

    /// A client authenticated as the ServiceAccount the chart runs `component` under; the
    /// component is then held to the chart's RBAC by [`Cluster::assert_nothing_forbidden`].
    pub async fn client_for(&mut self, component: &'static str) -> kube::Client {
        if !self.components.contains(&component) {
            self.components.push(component);
        }
        component_client(self.plane, &self.namespace, component).await
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The devices' key Secrets (the peer keys namespace the chart gives the release).
    pub fn key_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &peer_keys_namespace(&self.namespace))
    }

    /// Every call `component` made so far, from the server's audit log.
    pub fn requests_of(&self, component: &str) -> Vec<AuditedRequest> {
        self.plane
            .requests_of(&self.namespace, &service_account(component))
    }

    /// Every component's write whose URI contains `fragment`, in order (see
    /// `ControlPlane::writes_naming`).
    pub fn writes_naming(&self, fragment: &str) -> Vec<String> {
        self.plane.writes_naming(fragment)
    }

    /// Fails the test unless every component given a client made calls and the server refused
    /// none of them (its own 403s, from its audit log).
    pub fn assert_nothing_forbidden(&self) {
        for component in &self.components {
            assert!(
                !self.requests_of(component).is_empty(),
                "{component} made no request"
            );
            assert_nothing_forbidden(self.plane, &self.namespace, component);
        }
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
        for namespace in [
            peer_keys_namespace(&self.namespace),
            server_keys_namespace(&self.namespace),
        ] {
            let secrets: Vec<String> = Api::<Secret>::namespaced(self.client.clone(), &namespace)
                .list(&ListParams::default())
                .await
                .map(|list| list.items.iter().map(|s| s.name_any()).collect())
                .unwrap_or_default();
            out += &format!("Secrets of {namespace}: {secrets:?}\n");
        }
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
