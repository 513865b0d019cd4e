//! `wgsub-api` binary: parses settings, sets up logging, then either runs the migrations
//! (`migrate`, for the Helm hook Job), imports an old server's customers (`import`) or serves
//! (`serve`: migrations, drift loop, HTTP with graceful shutdown on SIGTERM/SIGINT). The shell
//! around it (logging, SIGTERM, the exit line) is [`wgsub_runtime`]'s.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use wgsub_api::config::{Cli, Command, ImportArgs, ServeArgs};
use wgsub_api::state::state_from_args;
use wgsub_api::{app, import, system};
use wgsub_ledger::db;

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let state = state_from_args(&args, client).await?;
    let stop = wgsub_runtime::shutdown::on_signal();
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
    .with_graceful_shutdown(stop.clone().cancelled_owned())
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
    wgsub_runtime::process::exit("wgsub-api", start().await)
}

/// The binary; a bad setting exits 2 naming it, any other error is printed as one line.
async fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    wgsub_runtime::process::install_crypto_provider();
    cli.log.init();
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
