//! `wgsub-api` binary: parses settings, sets up logging, then either runs the migrations
//! (`migrate`, for the Helm hook Job), imports an old server's customers (`import`) or serves
//! (`serve`: migrations, drift loop, HTTP with graceful shutdown on SIGTERM/SIGINT).

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wgsub_api::config::{Cli, Command, ImportArgs, LogFormat, ServeArgs};
use wgsub_api::state::state_from_args;
use wgsub_api::{app, import, system};
use wgsub_ledger::db;

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal(stop: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
    stop.cancel();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let state = state_from_args(&args, client).await?;
    let stop = CancellationToken::new();
    let drift = tokio::spawn(system::drift_loop(
        state.clone(),
        args.drift_interval,
        stop.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("--http-addr {}", args.http_addr))?;
    tracing::info!(addr = %args.http_addr, namespace = %args.namespace, "serving");
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal(stop.clone()))
    .await
    .context("serving HTTP")?;
    stop.cancel();
    drift.await.context("drift loop")?;
    Ok(())
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let wg_text = std::fs::read_to_string(&args.wg_config)
        .with_context(|| format!("--wg-config {}", args.wg_config.display()))?;
    let csv_text = std::fs::read_to_string(&args.csv)
        .with_context(|| format!("--csv {}", args.csv.display()))?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let pool = db::connect_lazy(&args.database.db_config()).context("--database-url")?;
    let ledger = wgsub_ledger::Ledger::new(pool, args.database.database_pgbouncer);
    let target = import::Target {
        client,
        keys_namespace: args
            .keys_namespace
            .unwrap_or_else(|| args.namespace.clone()),
        namespace: args.namespace,
        server: args.server,
    };
    let mut out = Vec::new();
    let result = import::run(
        &target,
        &ledger,
        &wg_text,
        &csv_text,
        args.apply,
        jiff::Timestamp::now(),
        &mut out,
    )
    .await;
    for line in out {
        println!("{line}");
    }
    result.map(|_| ())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match start().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wgsub-api: {}", wgsub_crds::error_line::error_line(&*error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The binary; its error is printed as one line naming its cause.
async fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One TLS crypto provider, named here: with two compiled in (as a build with test
    // dependencies has), rustls would refuse to pick one at the first connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(cli.log_format, &cli.log_filter);
    match cli.command {
        Command::Migrate(database) => {
            let pool = db::connect_lazy(&database.db_config()).context("--database-url")?;
            db::migrate_with(&pool, database.database_pgbouncer)
                .await
                .context("running migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
        Command::Import(args) => import(*args).await,
    }
}
