//! The `wgsub-node-agent` binary: parses the settings, starts logging, the watches, the status
//! writer, the HTTP server and the agent loop, and stops them all on SIGTERM or Ctrl-C.

use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use wgsub_node_agent::agent::Agent;
use wgsub_node_agent::awg_kernel::AwgImplementation;
use wgsub_node_agent::config::{Config, LogFormat};
use wgsub_node_agent::http::{Health, app};
use wgsub_node_agent::index::SharedIndex;
use wgsub_node_agent::interface::Worker;
use wgsub_node_agent::kube_shell::{KubeApi, StatusQueue, run_watches};
use wgsub_node_agent::metrics::Metrics;

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match start().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "wgsub-node-agent: {}",
                wgsub_crds::error_line::error_line(&*error)
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// The binary; its error is printed as one line naming its cause.
async fn start() -> anyhow::Result<()> {
    let config = Config::parse();
    // One TLS crypto provider, named here: with two compiled in (as a build with test
    // dependencies has), rustls would refuse to pick one at the first connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(error) = config.validate() {
        eprintln!("wgsub-node-agent: {error}");
        std::process::exit(2);
    }
    init_logging(&config);
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
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));

    let index = Arc::new(SharedIndex::default());
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(config.health_deadline()));
    let status = Arc::new(StatusQueue::default());
    let api = KubeApi::new(client.clone(), config.namespace.clone())
        .with_server_keys_namespace(config.server_keys_namespace());
    let worker = Worker::start(config.netns.clone())?;

    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    let server = axum::serve(listener, app(health.clone(), metrics.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());

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
