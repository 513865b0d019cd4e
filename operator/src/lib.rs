//! `wgsub-operator`: the controller that turns paid `VpnSubscription`s into `WgPeer`s with x25519
//! keys (in Secrets), addresses from the server's pool and `expiresAt` mirrored from
//! `paidUntil`, keeps them through renewals, deletes them after the retention period, and writes
//! the subscription's status. Writes use server-side apply with field manager `wgsub-operator`.
//!
//! Functional core: [`addresses`], [`decision`], [`patches`] and [`usage`] (traffic and the
//! data quota) are pure and tested on hand-built objects. Imperative shell: [`controller`]
//! (Kubernetes reads and writes, the kube-rs Controller), [`amnezia`] (the leader's choice of
//! missing AmneziaWG parameters),
//! [`key_cleanup`] (deleting the keys of deleted peers when keys live in their own namespace),
//! [`pools`] (per-server locks), [`http`] and [`metrics`]; [`run`] wires them for `main`, with
//! leader election from `wgsub_runtime::lease`.

pub mod addresses;
pub mod amnezia;
pub mod config;
pub mod controller;
pub mod decision;
pub mod export_keys;
pub mod http;
pub mod key_cleanup;
pub mod metrics;
pub mod migrate_keys;
pub mod patches;
pub mod peer_view;
pub mod pools;
pub mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::events::Reporter;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wgsub_runtime::lease::{self, ElectionTiming, LeaseLock};

use crate::config::Config;
use crate::controller::{Clock, Context, Settings};
use crate::key_cleanup::KeyCleanup;
use crate::metrics::Metrics;

/// What the leader runs until `term` is cancelled: the Controller over `namespace` (all when
/// absent), the choice of missing AmneziaWG parameters ([`amnezia::run`]) and, over one
/// namespace, the collection of the keys of deleted peers ([`KeyCleanup`]) wherever the keys
/// live (`Settings::keys_namespace_for`). Each observes `term`: the parameter watch and the key
/// collection stop at once (also in the middle of a write or a sweep), the Controller within
/// [`controller::SHUTDOWN_GRACE`].
pub async fn lead(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    term: CancellationToken,
) {
    let cleanup = namespace.as_deref().map(|namespace| {
        KeyCleanup::new(
            ctx.client.clone(),
            namespace,
            ctx.settings.keys_namespace_for(namespace),
            ctx.clock.clone(),
        )
    });
    let cleanup_term = term.clone();
    let amnezia_term = term.clone();
    let amnezia = amnezia::run(ctx.client.clone(), namespace.clone(), async move {
        amnezia_term.cancelled().await
    });
    let controller = controller::run(ctx, namespace, concurrency, async move {
        term.cancelled().await
    });
    let controller = async move {
        match cleanup {
            Some(cleanup) => {
                tokio::join!(
                    controller,
                    cleanup.run(async move { cleanup_term.cancelled().await })
                );
            }
            None => controller.await,
        }
    };
    tokio::join!(controller, amnezia);
}

/// Runs the operator until SIGTERM: the HTTP server, and the Controller while this replica holds
/// the leader lease.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let lease_namespace = config.lease_namespace()?;
    let identity = config.identity();
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = wgsub_runtime::shutdown::on_signal();

    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", config.http_addr))?;
    info!(address = %config.http_addr, "serving /healthz, /readyz, /metrics");
    let server = tokio::spawn(wgsub_runtime::http::serve(
        listener,
        http::probes(metrics.clone(), ready.clone()).router(),
        shutdown.clone(),
    ));

    client
        .apiserver_version()
        .await
        .context("the Kubernetes API does not answer")?;
    ready.store(true, Ordering::Relaxed);

    let clock: Clock = Arc::new(jiff::Timestamp::now);
    let lock = LeaseLock::new(
        Api::<Lease>::namespaced(client.clone(), &lease_namespace),
        &config.lease_name,
        &identity,
        config.lease_duration,
    );
    let settings = Settings {
        default_server: config.default_server.clone(),
        retention: config.retention,
        keys_namespace: config.keys_namespace.clone(),
    };
    info!(
        identity = %identity,
        namespace = config.namespace.as_deref().unwrap_or("<all>"),
        keys_namespace = config.keys_namespace.as_deref().unwrap_or("<each peer's own>"),
        default_server = %settings.default_server,
        retention = %settings.retention,
        "waiting for the leader lease {lease_namespace}/{}", config.lease_name
    );
    lease::run_elected(
        lock,
        ElectionTiming::from_lease_duration(config.lease_duration),
        &*clock,
        metrics.leader(),
        shutdown.clone(),
        |term| {
            let ctx = Arc::new(
                Context::new(
                    client.clone(),
                    Reporter {
                        controller: patches::FIELD_MANAGER.to_owned(),
                        instance: Some(identity.clone()),
                    },
                    settings.clone(),
                    metrics.clone(),
                    clock.clone(),
                )
                .with_usage_write_interval(config.usage_write_interval),
            );
            lead(ctx, config.namespace.clone(), config.concurrency, term)
        },
    )
    .await;

    shutdown.cancel();
    server.await.context("the HTTP server task failed")??;
    info!("stopped");
    Ok(())
}
