//! The running agent, wired from its settings: connects Kubernetes, starts the interface worker
//! (in `--netns` when set), the health/metrics server, the watches that feed the index, the
//! status writer and the agent loop, and runs them until SIGTERM or Ctrl-C. [`run`] is what
//! `main` hands over to.

use std::sync::Arc;

use crate::agent::Agent;
use crate::awg_kernel::AwgImplementation;
use crate::config::Config;
use crate::http::{Health, probes};
use crate::index::SharedIndex;
use crate::interface::Worker;
use crate::kube_shell::{KubeApi, StatusQueue, run_watches};
use crate::metrics::Metrics;

/// Runs the agent until SIGTERM or Ctrl-C; an error is a failed start (no Kubernetes
/// configuration, the worker, the port) or a failed health server.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let settings = config.agent_settings();
    tracing::info!(
        node = config.node_name,
        namespace = config.namespace,
        backend = settings.backend.as_str(),
        amneziawg = settings
            .amneziawg
            .as_ref()
            .map_or("none", AwgImplementation::as_str),
        "starting"
    );

    let client = kube::Client::try_default().await?;
    let shutdown = wgsub_runtime::shutdown::on_signal();

    let index = Arc::new(SharedIndex::default());
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(config.health_deadline()));
    let status = Arc::new(StatusQueue::default());
    let api = KubeApi::new(client.clone(), config.namespace.clone())
        .with_server_keys_namespace(config.server_keys_namespace());
    let worker = Worker::start(config.netns.clone())?;

    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    let server = wgsub_runtime::http::serve(
        listener,
        probes(health.clone(), metrics.clone()).router(),
        shutdown.clone(),
    );

    let agent = Agent::new(
        settings,
        index.clone(),
        api.clone(),
        worker,
        metrics.clone(),
        health,
        status.clone(),
    );
    let (served, (), (), ()) = tokio::join!(
        server,
        run_watches(
            client,
            &config.namespace,
            config.server_keys_namespace(),
            index,
            shutdown.clone()
        ),
        status.run_writer(
            api,
            config.status_writes_per_second,
            metrics,
            shutdown.clone()
        ),
        agent.run(shutdown.clone()),
    );
    served?;
    Ok(())
}
