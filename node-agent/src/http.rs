//! The agent's probes on the shared `/healthz`, `/readyz`, `/metrics` server
//! ([`wgsub_runtime::http`]): alive while the agent loop has run recently, ready once every
//! watch has listed and the first full sync is done ([`Health`]), metrics from [`Metrics`] with
//! the ready gauge set at each scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use wgsub_runtime::http::{Probes, Unavailable};

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

/// The probes over `health`, with `metrics` served (and its ready gauge set) at each scrape.
pub fn probes(health: Arc<Health>, metrics: Arc<Metrics>) -> Probes {
    let (live, ready) = (health.clone(), health.clone());
    Probes::new(move || {
        metrics.ready.set(i64::from(health.is_ready()));
        metrics.encode()
    })
    .live_when(move || {
        let alive = live.is_alive(jiff::Timestamp::now());
        async move {
            if alive {
                Ok(())
            } else {
                Err(Unavailable::new(
                    "loop_stalled",
                    "the agent loop has not run recently",
                ))
            }
        }
    })
    .ready_when(move || {
        let is_ready = ready.is_ready();
        async move {
            if is_ready {
                Ok(())
            } else {
                Err(Unavailable::new(
                    "not_ready",
                    "watches have not synced or the first interface sync has not finished",
                ))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
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
        let app = probes(health.clone(), Arc::new(Metrics::default())).router();
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
        let app = probes(health.clone(), Arc::new(Metrics::default())).router();
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
