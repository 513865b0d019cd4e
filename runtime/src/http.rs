//! The operational endpoints of every binary: `/healthz` (the process is alive), `/readyz` (it
//! can do its work) and `/metrics` (Prometheus text of its registry), with the checks the binary
//! supplies ([`Probes`]); errors are JSON `{code, message}` with a stable code ([`error`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// A JSON error `{code, message}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

/// Why a probe fails: answered as 503 with `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub code: &'static str,
    pub message: String,
}

impl Unavailable {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), Unavailable>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;
type Exposition = Arc<dyn Fn() -> String + Send + Sync>;

/// The checks behind `/healthz` and `/readyz` and the text behind `/metrics`.
#[derive(Clone)]
pub struct Probes {
    live: Check,
    ready: Check,
    metrics: Exposition,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes").finish_non_exhaustive()
    }
}

fn always() -> Check {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

fn boxed<F, Fut>(check: F) -> Check
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Unavailable>> + Send + 'static,
{
    Arc::new(move || Box::pin(check()))
}

impl Probes {
    /// Alive and ready always, `/metrics` the text `metrics` makes at each scrape (usually
    /// [`crate::metrics::encode`] of the binary's registry).
    pub fn new(metrics: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self {
            live: always(),
            ready: always(),
            metrics: Arc::new(metrics),
        }
    }

    /// `/readyz` answers 200 only when `check` succeeds.
    pub fn ready_when<F, Fut>(self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Unavailable>> + Send + 'static,
    {
        Self {
            ready: boxed(check),
            ..self
        }
    }

    /// `/healthz` answers 200 only when `check` succeeds.
    pub fn live_when<F, Fut>(self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Unavailable>> + Send + 'static,
    {
        Self {
            live: boxed(check),
            ..self
        }
    }

    /// The three routes, to merge into a binary's own router (whatever its state).
    pub fn routes<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let Self {
            live,
            ready,
            metrics,
        } = self;
        Router::new()
            .route("/healthz", get(move || answer(live.clone())))
            .route("/readyz", get(move || answer(ready.clone())))
            .route(
                "/metrics",
                get(move || {
                    let text = metrics();
                    async move { ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text) }
                }),
            )
    }

    /// The three routes as a server of their own: any other path is a JSON 404.
    pub fn router(self) -> Router {
        self.routes()
            .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such path") })
    }
}

async fn answer(check: Check) -> Response {
    match check().await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(Unavailable { code, message }) => {
            error(StatusCode::SERVICE_UNAVAILABLE, code, &message)
        }
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then finishes the requests under
/// way.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    async fn call(router: Router, path: &str) -> (StatusCode, String, Option<String>) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            content_type,
        )
    }

    fn flag_check(
        flag: &Arc<AtomicBool>,
        code: &'static str,
    ) -> impl Fn() -> std::future::Ready<Result<(), Unavailable>> + Send + Sync + 'static {
        let flag = flag.clone();
        move || {
            std::future::ready(if flag.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(Unavailable::new(code, "not yet"))
            })
        }
    }

    #[tokio::test]
    async fn probes_answer_ok_or_503_with_the_checks_code() {
        let ready = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicBool::new(true));
        let router = Probes::new(String::new)
            .ready_when(flag_check(&ready, "not_ready"))
            .live_when(flag_check(&live, "loop_stalled"))
            .router();
        let (status, body, _) = call(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "not_ready");
        assert_eq!(body["message"], "not yet");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(call(router.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(call(router.clone(), "/healthz").await.1, "ok");
        live.store(false, Ordering::Relaxed);
        let (status, body, _) = call(router, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"loop_stalled\""), "{body}");
    }

    #[tokio::test]
    async fn without_checks_the_process_is_alive_and_ready() {
        let router = Probes::new(String::new).router();
        assert_eq!(call(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(call(router, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_the_registrys_text_made_at_each_scrape() {
        let registry = Arc::new(crate::metrics::registry("wgsub_test"));
        let scrapes = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = scrapes.clone();
        let router = Probes::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            crate::metrics::encode(&registry)
        })
        .router();
        let (status, body, content_type) = call(router.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(crate::metrics::CONTENT_TYPE));
        assert!(body.ends_with("# EOF\n"), "{body}");
        call(router, "/metrics").await;
        assert_eq!(scrapes.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn other_paths_are_json_404_and_routes_merge_into_a_stateful_router() {
        let (status, body, _) = call(Probes::new(String::new).router(), "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"not_found\""), "{body}");
        let app: Router = Router::new()
            .route(
                "/own",
                get(|axum::extract::State(n): axum::extract::State<u8>| async move {
                    n.to_string()
                }),
            )
            .merge(Probes::new(String::new).routes())
            .with_state(7u8);
        assert_eq!(call(app.clone(), "/own").await.1, "7");
        assert_eq!(call(app, "/healthz").await.0, StatusCode::OK);
    }
}
