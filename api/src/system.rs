//! Operational endpoints: `/healthz` (the process serves), `/readyz` (database and Kubernetes
//! reachable), `/metrics`, `/openapi.json`, the request metrics middleware and the drift loop
//! that re-applies ledger → `VpnSubscription` differences.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kube::api::ListParams;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::SharedState;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<SharedState>) -> Response {
    let database = state.ledger.ping().await;
    let kubernetes = state
        .kube
        .peers
        .list_metadata(&ListParams::default().limit(1))
        .await;
    match (database, kubernetes) {
        (Ok(()), Ok(_)) => (StatusCode::OK, "ready").into_response(),
        (database, kubernetes) => {
            if let Err(error) = &database {
                tracing::warn!(%error, "not ready: database");
            }
            if let Err(error) = &kubernetes {
                tracing::warn!(%error, "not ready: Kubernetes");
            }
            let failing: Vec<&str> = [
                database.is_err().then_some("database"),
                kubernetes.is_err().then_some("kubernetes"),
            ]
            .into_iter()
            .flatten()
            .collect();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"code": "not_ready", "message": format!("unreachable: {}", failing.join(", "))})),
            )
                .into_response()
        }
    }
}

pub async fn metrics(State(state): State<SharedState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response()
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

/// Applies every user at start, then every `interval` the users whose ledger changed since
/// their last write, until `stop`.
pub async fn drift_loop(state: SharedState, interval: Duration, stop: CancellationToken) {
    match state.kube.sync.sync_all(&state.ledger).await {
        Ok(report) => tracing::info!(
            applied = report.applied,
            failed = report.failed,
            "initial ledger sync"
        ),
        Err(error) => tracing::warn!(%error, "initial ledger sync failed"),
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match state.kube.sync.sync_unsynced(&state.ledger, 500).await {
            Ok(report) => {
                for _ in 0..report.applied {
                    state.metrics.sync(true);
                }
                for _ in 0..report.failed {
                    state.metrics.sync(false);
                }
                if report.applied + report.failed > 0 {
                    tracing::info!(
                        applied = report.applied,
                        failed = report.failed,
                        "ledger drift repaired"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "ledger drift pass failed"),
        }
    }
}
