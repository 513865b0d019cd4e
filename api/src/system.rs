//! Operational endpoints: the probes on [`wgsub_runtime::http`]'s `/healthz` (the process
//! serves), `/readyz` (the database reachable and the caches synced and fresh — see
//! [`wgsub_devices::cache`] for how stale they may be) and `/metrics`; `/openapi.json`, the
//! request metrics middleware and the drift loop that repairs every difference between the
//! ledger and the `VpnSubscription`s (and refreshes the ledger's business gauges).

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use wgsub_runtime::http::{Probes, Unavailable};

use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::SharedState;

/// The probes: ready when [`readiness`] is, metrics from the state's registry.
pub fn probes(state: &SharedState) -> Probes {
    let (scraped, checked) = (state.clone(), state.clone());
    Probes::new(move || scraped.metrics.encode()).ready_when(move || {
        let state = checked.clone();
        async move { readiness(&state).await }
    })
}

/// Ready when the database answers and the caches have synced and are not stale (no call to
/// the API server: the caches' watches are what proves it reachable).
pub async fn readiness(state: &SharedState) -> Result<(), Unavailable> {
    let database = state.ledger.ping().await;
    let caches = state.caches.check();
    if database.is_ok() && caches.is_ok() {
        return Ok(());
    }
    let mut failing = Vec::new();
    if let Err(error) = &database {
        tracing::warn!(%error, "not ready: database");
        failing.push("database unreachable".to_owned());
    }
    if let Err(error) = &caches {
        tracing::warn!(%error, "not ready: caches");
        failing.push(error.to_string());
    }
    let code = if caches.is_err() {
        "cache_not_ready"
    } else {
        "not_ready"
    };
    Err(Unavailable::new(code, failing.join("; ")))
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::ApiDoc::openapi())
}

/// Counts every routed request by route template, method and status, and times it.
pub async fn track(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Sets the business gauges from the ledger: users by state now, and the last 24 hours' new
/// users, payments and revenue.
async fn refresh_ledger_gauges(state: &SharedState) {
    let now = jiff::Timestamp::now();
    let day_ago = now - jiff::SignedDuration::from_hours(24);
    match tokio::try_join!(
        state.ledger.stats(now),
        state.ledger.activity_since(day_ago)
    ) {
        Ok((stats, activity)) => state.metrics.set_ledger(&stats, &activity),
        Err(error) => tracing::warn!(%error, "reading the ledger's numbers failed"),
    }
}

/// Keeps every `VpnSubscription` equal to the ledger until `stop`: over the subscriptions the
/// readers' cache holds (one watch for both), once it has listed them, a pass compares every
/// user with their resource and writes only what differs (edited, deleted or never written;
/// see [`wgsub_ledger::drift`]) — at start, then every `interval`. A pass with nothing to
/// repair makes no Kubernetes call. A pass is skipped while the cache is stale.
pub async fn drift_loop(state: SharedState, interval: Duration, stop: CancellationToken) {
    let Some(store) = state.caches.subscription_store() else {
        tracing::error!("the caches hold no VpnSubscriptions: the drift loop cannot run");
        return;
    };
    let drift = state.kube.sync.drift_repair_on(store);
    let passes = async {
        if !drift.ready().await {
            return;
        }
        loop {
            refresh_ledger_gauges(&state).await;
            if let Err(error) = state.caches.check() {
                tracing::warn!(%error, "drift pass skipped");
                tokio::time::sleep(interval).await;
                continue;
            }
            match drift.pass(&state.ledger).await {
                Ok(report) => {
                    for _ in 0..report.created + report.updated {
                        state.metrics.sync(true);
                    }
                    for _ in 0..report.failed {
                        state.metrics.sync(false);
                    }
                    if report.created + report.updated + report.failed > 0 {
                        tracing::info!(
                            users = report.users,
                            created = report.created,
                            updated = report.updated,
                            failed = report.failed,
                            elapsed_ms = report.elapsed.as_millis(),
                            "ledger drift repaired"
                        );
                    } else {
                        tracing::debug!(
                            users = report.users,
                            elapsed_ms = report.elapsed.as_millis(),
                            "no ledger drift"
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "ledger drift pass failed"),
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = passes => {}
    }
}
