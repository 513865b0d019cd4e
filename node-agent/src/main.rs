//! The `wgsub-node-agent` binary: parses the settings, starts logging, the watches, the status
//! writer, the HTTP server and the agent loop, and stops them all on SIGTERM or Ctrl-C. The
//! shell around it (logging, SIGTERM, probes, the exit line) is [`wgsub_runtime`]'s.

use std::sync::Arc;

use clap::Parser;
use wgsub_node_agent::agent::Agent;
use wgsub_node_agent::awg_kernel::AwgImplementation;
use wgsub_node_agent::config::Config;
use wgsub_node_agent::http::{Health, probes};
use wgsub_node_agent::index::SharedIndex;
use wgsub_node_agent::interface::Worker;
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue, run_watches};
use wgsub_node_agent::metrics::Metrics;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    wgsub_runtime::process::exit("wgsub-node-agent", start().await)
}

/// The binary; a bad setting exits 2 naming it, any other error is printed as one line.
async fn start() -> anyhow::Result<()> {
    let config = Config::parse();
    wgsub_runtime::process::install_crypto_provider();
    if let Err(error) = config.validate() {
        eprintln!("wgsub-node-agent: {error}");
        std::process::exit(2);
    }
    config.log.init();
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
