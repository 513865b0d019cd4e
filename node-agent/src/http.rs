//! The agent's HTTP surface: `/healthz` (the agent loop has run recently), `/readyz` (every
//! watch has listed once and the first full sync is done) and `/metrics`. Errors are JSON
//! `{code, message}` with a stable code.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;

/// What the probes look at, updated by the agent loop.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    last_loop: AtomicI64,
    stale_after: Duration,
}

impl Health {
    /// `stale_after`: how long the loop may go without a turn before `/healthz` fails.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            ready: AtomicBool::new(false),
            last_loop: AtomicI64::new(jiff::Timestamp::now().as_second()),
            stale_after,
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records a turn of the agent loop.
    pub fn beat(&self) {
        self.last_loop
            .store(jiff::Timestamp::now().as_second(), Ordering::Relaxed);
    }

    fn is_alive(&self, now: jiff::Timestamp) -> bool {
        let last = self.last_loop.load(Ordering::Relaxed);
        let age = now.as_second().saturating_sub(last);
        u64::try_from(age).map_or(true, |age| age <= self.stale_after.as_secs())
    }
}

#[derive(Debug, Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.health.is_alive(jiff::Timestamp::now()) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "loop_stalled",
            "the agent loop has not run recently",
        )
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.health.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "watches have not synced or the first interface sync has not finished",
        )
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.ready.set(i64::from(state.health.is_ready()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such path")
}

/// The router.
pub fn app(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self::metrics))
        .fallback(not_found)
        .with_state(AppState { health, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_follows_the_first_sync() {
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let app = app(health.clone(), Arc::new(Metrics::default()));
        let (status, body) = call(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["code"], "not_ready");
        health.set_ready();
        assert_eq!(call(app.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(call(app.clone(), "/healthz").await.0, StatusCode::OK);
        let (status, body) = call(app.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("# EOF"));
        let (status, body) = call(app, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"code\":\"not_found\""));
    }

    #[tokio::test]
    async fn the_ready_gauge_follows_readiness_at_each_scrape() {
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let app = app(health.clone(), Arc::new(Metrics::default()));
        let (_, body) = call(app.clone(), "/metrics").await;
        assert!(body.contains("wgsub_node_agent_ready 0\n"), "{body}");
        health.set_ready();
        let (_, body) = call(app, "/metrics").await;
        assert!(body.contains("wgsub_node_agent_ready 1\n"), "{body}");
    }

    #[test]
    fn a_stalled_loop_fails_liveness() {
        let health = Health::new(Duration::from_secs(60));
        let now = jiff::Timestamp::now();
        assert!(health.is_alive(now));
        let later = now
            .checked_add(jiff::SignedDuration::from_secs(120))
            .unwrap();
        assert!(!health.is_alive(later));
        health.beat();
        assert!(health.is_alive(now));
    }
}
