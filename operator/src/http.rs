//! The operator's probes on the shared `/healthz`, `/readyz`, `/metrics` server
//! ([`wgsub_runtime::http`]): alive while the process runs, ready once the Kubernetes API has
//! answered this replica, metrics from [`Metrics`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wgsub_runtime::http::{Probes, Unavailable};

use crate::metrics::Metrics;

/// The probes: `ready` is set once the Kubernetes API answered this replica.
pub fn probes(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Probes {
    Probes::new(move || metrics.encode()).ready_when(move || {
        let answered = ready.load(Ordering::Relaxed);
        async move {
            if answered {
                Ok(())
            } else {
                Err(Unavailable::new(
                    "not_ready",
                    "the Kubernetes API has not answered yet",
                ))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(probes: &Probes, path: &str) -> (StatusCode, String) {
        let response = probes
            .clone()
            .router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_ready_flag_and_answers_json_when_not_ready() {
        let ready = Arc::new(AtomicBool::new(false));
        let probes = probes(Arc::new(Metrics::new()), ready.clone());
        let (status, body) = get(&probes, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "not_ready");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get(&probes, "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(&probes, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_served_and_unknown_paths_are_json_404() {
        let metrics = Arc::new(Metrics::new());
        metrics.leader().set_leader(true);
        let probes = probes(metrics, Arc::new(AtomicBool::new(false)));
        let (status, body) = get(&probes, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("wgsub_operator_leader 1"), "{body}");
        let (status, body) = get(&probes, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"not_found\""));
    }
}
