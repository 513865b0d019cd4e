//! The cluster, in this process: one Kubernetes API server with list and watch over HTTP
//! (`wgsub_testkit::fake_api`) shared by every component, each with its own client; the operator's real
//! `controller::run` (its watches, mappers, scheduler and reconciles) and the node-agent's real
//! watches, status writer and loop on a wireguard-go interface in the lab's server namespace —
//! wired as their `main`s wire them, configured from the flags the chart gives them. Every
//! request is recorded under the component that made it, so the test can hold each one to its
//! RBAC contract (`api-calls.yaml`).

use std::sync::Arc;

use clap::Parser as _;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ListParams};
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
use wgsub_testkit::fake_api::{FakeApi, ungranted};

/// The namespace wgsub is installed in.
pub const NAMESPACE: &str = "wgsub";
/// The node the VPN server runs on.
pub const NODE: &str = "vpn-node-1";

/// Each component that talks to the API, by the name its requests are recorded under, with
/// its RBAC contract.
const CONTRACTS: &[(&str, &str)] = &[
    ("operator", include_str!("../../../operator/api-calls.yaml")),
    (
        "node-agent",
        include_str!("../../../node-agent/api-calls.yaml"),
    ),
    ("api", include_str!("../../../api/api-calls.yaml")),
];

/// The operator, configured as its binary is (defaults plus the chart's flags), running its
/// controller until `shutdown`.
fn start_operator(
    client: kube::Client,
    default_server: &str,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    let config = wgsub_operator::config::Config::try_parse_from([
        "wgsub-operator",
        "--namespace",
        NAMESPACE,
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
        },
        Arc::new(wgsub_operator::metrics::Metrics::new()),
        Arc::new(jiff::Timestamp::now),
    ));
    tokio::spawn(wgsub_operator::controller::run(
        ctx,
        Some(NAMESPACE.to_owned()),
        config.concurrency,
        shutdown.clone().cancelled_owned(),
    ))
}

/// The node-agent, configured as the chart configures it (plus the lab's network namespace):
/// its watches, status writer and loop, until `shutdown`.
fn start_node_agent(
    client: kube::Client,
    netns: &std::path::Path,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let config = wgsub_node_agent::config::Config::try_parse_from([
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
    config
        .validate()
        .expect("the node-agent's settings are valid");
    let index = Arc::new(SharedIndex::default());
    let metrics = Arc::new(wgsub_node_agent::metrics::Metrics::default());
    let api = KubeApi::new(client.clone(), config.namespace.clone());
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
    let watches_shutdown = shutdown.clone();
    vec![
        tokio::spawn(async move {
            run_watches(client, &namespace, index, watches_shutdown).await;
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

/// The cluster and its running components; stopped on drop.
pub struct Cluster {
    server: FakeApi,
    /// The test's own client (recorded as "test", held to no contract).
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
        let api_server = FakeApi::start().await;
        let mut node = Node::default();
        node.metadata.name = Some(NODE.to_owned());
        api_server.create(&node);
        let server_name = server.name_any();
        api_server.create(&server);
        let shutdown = CancellationToken::new();
        let mut tasks = vec![start_operator(
            api_server.client_named("operator"),
            &server_name,
            &shutdown,
        )];
        tasks.extend(start_node_agent(
            api_server.client_named("node-agent"),
            netns,
            &shutdown,
        ));
        Cluster {
            client: api_server.client_named("test"),
            server: api_server,
            shutdown,
            tasks,
        }
    }

    /// A client for a component held to a contract in [`Cluster::refused_requests`].
    pub fn client_for(&self, component: &str) -> kube::Client {
        assert!(
            CONTRACTS.iter().any(|(name, _)| *name == component),
            "{component} has no RBAC contract here"
        );
        self.server.client_named(component)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Every request so far that its component's `api-calls.yaml` does not grant or that the
    /// API refused, and every request from a client that is no component's; empty when all is
    /// well.
    pub fn refused_requests(&self) -> Vec<String> {
        let requests = self.server.requests();
        let mut refused = Vec::new();
        for (component, contract) in CONTRACTS {
            let made = self.server.requests_from(component);
            assert!(!made.is_empty(), "{component} made no request");
            refused.extend(
                ungranted(contract, &made)
                    .into_iter()
                    .map(|line| format!("{component}: {line}")),
            );
        }
        refused.extend(
            requests
                .iter()
                .filter(|r| {
                    r.client.as_deref() != Some("test")
                        && !CONTRACTS
                            .iter()
                            .any(|(name, _)| r.client.as_deref() == Some(name))
                })
                .map(|r| format!("a request from no known component: {r:?}")),
        );
        refused
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
