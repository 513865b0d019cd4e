//! The running bot, wired from its settings: connects PostgreSQL, Kubernetes (client and
//! watch-backed caches), YooKassa and Telegram; runs the handler tree (long polling while this
//! replica holds the bot's Lease, or webhook on every replica), the renewal, reminder, outbox
//! and notice (server change, location move, quota) loops and the health/metrics server until
//! SIGTERM — and stops within `--shutdown-timeout` of it even when the Bot API does not answer
//! (teloxide's last `getUpdates` would otherwise wait on it). [`run`] is what `main` hands over
//! to.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use teloxide::prelude::*;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use wgsub_crds::plans::PlanCatalogue;
use wgsub_devices::{CacheOptions, Caches};
use wgsub_ledger::{
    DbConfig, Ledger, ReceiptSettings, SubscriptionSync, YooKassa, YooKassaConfig, db,
};
use wgsub_runtime::lease::{self, ElectionTiming, LeaseLock};

use crate::app::{App, Settings};
use crate::broadcast::Pacing;
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::{handlers, http, jobs, location_moves, quota, server_changes, telegram};

/// Broadcast progress is edited into the admin's message every this many chats.
const PROGRESS_EVERY: u32 = 50;
/// Outbox rows sent per run.
const OUTBOX_BATCH: i64 = 100;

/// Runs the bot until SIGTERM (then within `--shutdown-timeout`); an error is a failed start
/// (a setting, a connection, a port) or a failed webhook registration.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let plans = load_plans(&config)?;
    let ledger = connect_ledger(&config).await?;
    let kube = kube::Client::try_default().await?;
    let app = app(&config, plans, ledger, kube)?;

    let bot = Bot::new(config.bot_token.expose()).set_api_url(config.telegram_api_url.clone());
    if let Err(error) = telegram::register_commands(&bot).await {
        tracing::warn!(%error, "setMyCommands failed; the command menu may be stale");
    }

    let shutdown = wgsub_runtime::shutdown::on_signal();
    let mut tasks = JoinSet::new();
    spawn_ops_server(&mut tasks, &config, &app, &shutdown).await?;
    spawn_jobs(&mut tasks, &shutdown, &config, &app, &bot);

    serve_until_stopped(&config, &bot, &app, tasks, &shutdown).await
}

/// The plan catalogue of `--plans-file`.
fn load_plans(config: &Config) -> anyhow::Result<PlanCatalogue> {
    let plans_text = std::fs::read_to_string(&config.plans_file)
        .map_err(|e| anyhow::anyhow!("--plans-file {}: {e}", config.plans_file.display()))?;
    PlanCatalogue::from_yaml_str(&plans_text)
        .map_err(|e| anyhow::anyhow!("--plans-file {}: {e}", config.plans_file.display()))
}

/// The ledger on `--database-url`, migrated first when `--migrate` is set.
async fn connect_ledger(config: &Config) -> anyhow::Result<Ledger> {
    let db_config = DbConfig {
        max_connections: config.database_max_connections,
        pgbouncer: config.database_pgbouncer,
        ..DbConfig::new(config.database_url.expose())
    };
    let pool = db::connect_lazy(&db_config).map_err(|e| anyhow::anyhow!("--database-url: {e}"))?;
    if config.migrate {
        db::migrate_with(&pool, config.database_pgbouncer).await?;
    }
    Ok(Ledger::new(pool, config.database_pgbouncer)
        .with_referral_days(config.referral_reward_days)
        .with_renewal_lead(jiff::SignedDuration::from_hours(i64::from(
            config.renewal_lead_hours,
        ))))
}

/// What the handlers and jobs are given: the YooKassa client, the caches (their watches
/// started), the ledger, the plans and the settings.
fn app(
    config: &Config,
    plans: PlanCatalogue,
    ledger: Ledger,
    kube: kube::Client,
) -> anyhow::Result<Arc<App>> {
    let yookassa = YooKassa::new(YooKassaConfig {
        api_base: config
            .yookassa_api_url
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
        shop_id: config.yookassa_shop_id.clone(),
        secret_key: config.yookassa_secret_key.expose().to_owned().into(),
        timeout: Duration::from_secs(10),
        max_attempts: 3,
        retry_backoff: Duration::from_millis(500),
    })?;
    let pacing = Pacing::new(config.broadcast_rate, 1)
        .map_err(|e| anyhow::anyhow!("--broadcast-rate: {e}"))?;
    let metrics = Arc::new(Metrics::new());
    Ok(Arc::new(App {
        sync: SubscriptionSync::new(kube.clone(), &config.namespace),
        caches: Caches::spawn(
            kube.clone(),
            &config.namespace,
            CacheOptions {
                keys_namespace: config.keys_namespace.clone(),
                // `/status` shows the traffic and the quota notices follow QuotaExhausted.
                subscriptions: true,
                ..CacheOptions::default()
            },
        ),
        ledger,
        kube,
        namespace: config.namespace.clone(),
        yookassa,
        plans,
        settings: Settings {
            admin_ids: config.admin_ids.clone(),
            trial_days: config.trial_days,
            miniapp_url: config.miniapp_url.clone(),
            return_url: config.yookassa_return_url.to_string(),
            receipts: config.receipts.then_some(ReceiptSettings {
                vat_code: config.receipt_vat_code,
            }),
            pacing,
            progress_every: PROGRESS_EVERY,
        },
        metrics,
    }))
}

/// The health/metrics server on `--http-addr` (bound before this returns), until shutdown.
async fn spawn_ops_server(
    tasks: &mut JoinSet<()>,
    config: &Config,
    app: &Arc<App>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let ops = tokio::net::TcpListener::bind(config.http_addr).await?;
    let ops_router = http::ops_router(app.clone());
    let ops_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(error) = wgsub_runtime::http::serve(ops, ops_router, ops_shutdown).await {
            tracing::error!(%error, "health server failed");
        }
    });
    Ok(())
}

/// The background jobs, each looping until shutdown: automatic renewals every
/// `--renewal-interval`, expiry reminders every `--reminder-interval`, and the notice outbox
/// and the notice queues (server change, location move, quota) every `--outbox-interval`.
fn spawn_jobs(
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
    config: &Config,
    app: &Arc<App>,
    bot: &Bot,
) {
    let mut loops = Loops { tasks, shutdown };
    let with_bot = (app.clone(), bot.clone());
    loops.every(config.renewal_interval, app.clone(), renewal_run);
    loops.every(config.reminder_interval, with_bot.clone(), reminder_run);
    loops.every(config.outbox_interval, with_bot.clone(), outbox_run);
    loops.every(config.outbox_interval, with_bot, notice_run);
}

/// One run of automatic renewals, logged when it did anything.
async fn renewal_run(app: Arc<App>) {
    match jobs::run_renewals(&app, Timestamp::now()).await {
        Ok(report) if report != Default::default() => tracing::info!(
            attempted = report.attempted,
            succeeded = report.succeeded,
            failed = report.failed,
            refused = report.refused,
            pending = report.pending,
            unknown = report.unknown,
            given_up = report.given_up,
            "automatic renewals"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "renewal run failed"),
    }
}

/// One run of expiry reminders, logged when it sent any.
async fn reminder_run((app, bot): (Arc<App>, Bot)) {
    match jobs::send_due_reminders(&app, &bot, Timestamp::now()).await {
        Ok(report) if report.sent + report.failed > 0 => {
            tracing::info!(sent = report.sent, failed = report.failed, "reminders")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "reminder run failed"),
    }
}

/// One run of the notice outbox, [`OUTBOX_BATCH`] rows at most.
async fn outbox_run((app, bot): (Arc<App>, Bot)) {
    if let Err(error) = jobs::drain_outbox(&app, &bot, Timestamp::now(), OUTBOX_BATCH).await {
        tracing::warn!(%error, "outbox run failed");
    }
}

/// One run of the server change, location move and quota notices, in that order.
async fn notice_run((app, bot): (Arc<App>, Bot)) {
    let now = Timestamp::now();
    if let Err(error) = server_changes::run(&app, &bot, now, OUTBOX_BATCH).await {
        tracing::warn!(%error, "server change run failed");
    }
    if let Err(error) = location_moves::run(&app, &bot, now, OUTBOX_BATCH).await {
        tracing::warn!(%error, "location move run failed");
    }
    if let Err(error) = quota::run(&app, &bot, now, OUTBOX_BATCH).await {
        tracing::warn!(%error, "quota notice run failed");
    }
}

/// Receives updates until shutdown, then waits for `tasks` — or, once shutdown has begun, for
/// at most `--shutdown-timeout`.
async fn serve_until_stopped(
    config: &Config,
    bot: &Bot,
    app: &Arc<App>,
    mut tasks: JoinSet<()>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let shutdown_timeout = config.shutdown_timeout;
    let work = async {
        receive_updates(config, bot, app, &mut tasks, shutdown).await?;
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        anyhow::Ok(())
    };
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(shutdown_timeout).await;
    };
    tokio::select! {
        result = work => result,
        () = deadline => {
            tracing::warn!(
                timeout_seconds = config.shutdown_timeout.as_secs_f64(),
                "stopping at the shutdown timeout: the Bot API or a job did not finish in time"
            );
            Ok(())
        }
    }
}

type BotDispatcher = Dispatcher<Bot, handlers::HandlerError, teloxide::dispatching::DefaultKey>;

fn dispatcher(bot: &Bot, app: &Arc<App>) -> BotDispatcher {
    Dispatcher::builder(bot.clone(), handlers::handler_tree())
        .dependencies(dptree::deps![app.clone()])
        .error_handler(LoggingErrorHandler::with_custom_text(
            "update handling failed",
        ))
        .build()
}

/// Runs `dispatch` (a future borrowing `token`'s dispatcher) until it ends, shutting the
/// dispatcher down once `stop` is cancelled (it may not be running yet: retried until it is).
async fn dispatch_until(
    dispatch: impl Future<Output = ()>,
    token: teloxide::dispatching::ShutdownToken,
    stop: CancellationToken,
) {
    tokio::pin!(dispatch);
    tokio::select! {
        () = &mut dispatch => return,
        () = stop.cancelled() => {}
    }
    while token.shutdown().is_err() {
        tokio::select! {
            () = &mut dispatch => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    dispatch.await;
}

/// Receives updates until shutdown: in polling mode only while this replica holds the bot's
/// Lease (one `getUpdates` caller per bot), in webhook mode on every replica.
async fn receive_updates(
    config: &Config,
    bot: &Bot,
    app: &Arc<App>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    match config.mode {
        Mode::Polling => {
            poll_while_leader(config, bot, app, shutdown).await;
            Ok(())
        }
        Mode::Webhook => receive_by_webhook(config, bot, app, tasks, shutdown).await,
    }
}

/// Long polling in each term this replica holds the Lease `--lease-name`, until shutdown.
async fn poll_while_leader(
    config: &Config,
    bot: &Bot,
    app: &Arc<App>,
    shutdown: &CancellationToken,
) {
    let lock = LeaseLock::new(
        kube::Api::namespaced(app.kube.clone(), &config.namespace),
        &config.lease_name,
        &config.identity(),
        config.lease_duration,
    );
    tracing::info!(
        identity = lock.identity(),
        "waiting for the lease {}/{} to poll for updates",
        config.namespace,
        config.lease_name
    );
    let timing = ElectionTiming::from_lease_duration(config.lease_duration);
    lease::run_elected(
        lock,
        timing,
        Timestamp::now,
        app.metrics.leader(),
        shutdown.clone(),
        |term| {
            let (bot, app) = (bot.clone(), app.clone());
            async move {
                let mut dispatcher = dispatcher(&bot, &app);
                let token = dispatcher.shutdown_token();
                tracing::info!("receiving updates by long polling");
                dispatch_until(dispatcher.dispatch(), token, term).await;
            }
        },
    )
    .await;
}

/// The webhook server on `--webhook-listen` (one of `tasks`), the webhook registered with the
/// Bot API, and its updates dispatched until shutdown.
async fn receive_by_webhook(
    config: &Config,
    bot: &Bot,
    app: &Arc<App>,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let url = config
        .webhook_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--webhook-url is required in webhook mode"))?;
    let secret = config
        .webhook_secret
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--webhook-secret is required in webhook mode"))?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind(config.webhook_listen).await?;
    let router = http::webhook_router(&config.webhook_path(), secret.clone(), sender);
    let webhook_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(webhook_shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "webhook server failed");
        }
    });
    bot.set_webhook(url)
        .secret_token(secret.expose().to_owned())
        .await?;
    tracing::info!(listen = %config.webhook_listen, "receiving updates by webhook");
    let mut dispatcher = dispatcher(bot, app);
    let token = dispatcher.shutdown_token();
    let dispatch = dispatcher.dispatch_with_listener(
        http::webhook_listener(receiver),
        LoggingErrorHandler::with_custom_text("webhook listener failed"),
    );
    dispatch_until(dispatch, token, shutdown.clone()).await;
    Ok(())
}

/// Background loops spawned onto `tasks`, each running until `shutdown`.
struct Loops<'a> {
    tasks: &'a mut JoinSet<()>,
    shutdown: &'a CancellationToken,
}

impl Loops<'_> {
    /// Runs `step` on a clone of `context` every `period` (the first at once; a late tick
    /// delays the next) until shutdown.
    fn every<C, F, Fut>(&mut self, period: Duration, context: C, step: F)
    where
        C: Clone + Send + 'static,
        F: Fn(C) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => step(context.clone()).await,
                }
            }
        });
    }
}
