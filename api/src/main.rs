//! `wgsub-api` binary: parses settings, sets up logging, then either runs the migrations
//! (`migrate`, for the Helm hook Job) or serves (`serve`: migrations, drift loop, HTTP with
//! graceful shutdown on SIGTERM/SIGINT).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wgsub_api::config::{Cli, Command, LogFormat, ServeArgs};
use wgsub_api::metrics::Metrics;
use wgsub_api::{AppState, KubeApis, Settings, app, system};
use wgsub_ledger::{Ledger, ReceiptSettings, YooKassa, YooKassaConfig, db};

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
    let return_url = args.return_url().map_err(anyhow::Error::msg)?;
    let pool = db::connect_lazy(&args.database.db_config()).context("--database-url")?;
    db::migrate(&pool).await.context("running migrations")?;
    let ledger = Ledger::new(pool, args.database.database_pgbouncer);
    let yookassa = YooKassa::new(YooKassaConfig {
        api_base: args.yookassa_api_url.clone(),
        shop_id: args.yookassa_shop_id.clone(),
        secret_key: args.yookassa_secret_key.0.clone(),
        timeout: std::time::Duration::from_secs(10),
        max_attempts: 4,
        retry_backoff: std::time::Duration::from_millis(500),
    })?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let state = Arc::new(AppState {
        ledger,
        yookassa,
        kube: KubeApis::new(client, &args.namespace),
        plans: args.plans_file.0.clone(),
        settings: Settings {
            bot_token: args.bot_token.0.clone(),
            init_data_max_age: args.init_data_max_age(),
            return_url,
            receipt: args.yookassa_receipts.then_some(ReceiptSettings {
                vat_code: args.yookassa_vat_code,
            }),
            yookassa_allowed: args.yookassa_allowed_ips.clone(),
            trusted_proxies: args.trusted_proxies.clone(),
            default_server: args.default_server.clone(),
            max_body_bytes: args.max_body_bytes as usize,
        },
        metrics: Metrics::new(),
    });
    let stop = CancellationToken::new();
    let drift = tokio::spawn(system::drift_loop(
        state.clone(),
        args.drift_interval,
        stop.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .with_context(|| format!("--listen-addr {}", args.listen_addr))?;
    tracing::info!(addr = %args.listen_addr, namespace = %args.namespace, "serving");
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_filter);
    match cli.command {
        Command::Migrate(database) => {
            let pool = db::connect_lazy(&database.db_config()).context("--database-url")?;
            db::migrate(&pool).await.context("running migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
    }
}
