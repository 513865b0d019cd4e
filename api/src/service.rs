//! What `main` hands the parsed command to: `migrate` (the migrations, for the Helm hook Job),
//! `serve` (the state wired from its settings, the drift loop and HTTP until SIGTERM/SIGINT,
//! then a graceful shutdown) and `import` (an old server's customers, dry run unless
//! `--apply`, its plan printed line by line on standard output).

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wgsub_ledger::db;

use crate::config::{Command, DatabaseArgs, ImportArgs, ServeArgs};
use crate::state::{SharedState, state_from_args};
use crate::{app, import, system};

/// Runs `command` to its end; an error is printed by `main` as one line.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate(database) => migrate(database).await,
        Command::Serve(args) => serve(*args).await,
        Command::Import(args) => import(*args).await,
    }
}

/// Applies the pending migrations and returns.
async fn migrate(database: DatabaseArgs) -> anyhow::Result<()> {
    let pool = db::connect_lazy(&database.db_config()).context("--database-url")?;
    db::migrate_with(&pool, database.database_pgbouncer)
        .await
        .context("running migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Serves HTTP on `--http-addr` with the drift loop beside it, until SIGTERM or SIGINT.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let state = state_from_args(&args, client).await?;
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("--http-addr {}", args.http_addr))?;
    tracing::info!(addr = %args.http_addr, namespace = %args.namespace, "serving");
    serve_until(
        state,
        listener,
        args.drift_interval,
        wgsub_runtime::shutdown::on_signal(),
    )
    .await
}

/// Serves the API on `listener` with the drift loop (every `drift_interval`) beside it until
/// `stop` is cancelled; the drift loop is waited for after the last request.
pub async fn serve_until(
    state: SharedState,
    listener: tokio::net::TcpListener,
    drift_interval: std::time::Duration,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let drift = tokio::spawn(system::drift_loop(
        state.clone(),
        drift_interval,
        stop.clone(),
    ));
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
