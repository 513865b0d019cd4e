//! The bot's HTTP: its probes on the shared `/healthz`, `/readyz` (database reachable, caches
//! synced and fresh), `/metrics` server ([`wgsub_runtime::http`]), and in webhook mode the
//! update endpoint, which accepts an update only when it carries the configured secret token
//! (compared in constant time).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use subtle::ConstantTimeEq;
use teloxide::stop::{StopToken, mk_stop_token};
use teloxide::types::Update;
use teloxide::update_listeners::{StatefulListener, UpdateListener};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use wgsub_runtime::http::{Probes, Unavailable, error};

use crate::app::App;
use crate::config::Secret;

/// The header Telegram puts the webhook secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The probes: ready when the database answers and the caches are synced and fresh.
pub fn probes(app: &Arc<App>) -> Probes {
    let (scraped, checked) = (app.clone(), app.clone());
    Probes::new(move || scraped.metrics.encode()).ready_when(move || {
        let app = checked.clone();
        async move { readiness(&app).await }
    })
}

/// `/healthz`, `/readyz`, `/metrics` on a server of their own.
pub fn ops_router(app: Arc<App>) -> Router {
    probes(&app).router()
}

async fn readiness(app: &App) -> Result<(), Unavailable> {
    if let Err(e) = app.ledger.ping().await {
        tracing::warn!(error = %e, "not ready: database");
        return Err(Unavailable::new(
            "database_unavailable",
            "the database cannot be reached",
        ));
    }
    if let Err(e) = app.caches.check() {
        tracing::warn!(error = %e, "not ready: caches");
        return Err(Unavailable::new("cache_not_ready", e.to_string()));
    }
    Ok(())
}

#[derive(Clone)]
struct WebhookState {
    secret: Arc<Secret>,
    updates: mpsc::UnboundedSender<Update>,
}

/// The webhook endpoint at `path`: updates with the right secret token go to `updates`.
pub fn webhook_router(
    path: &str,
    secret: Secret,
    updates: mpsc::UnboundedSender<Update>,
) -> Router {
    Router::new()
        .route(path, post(receive))
        .with_state(WebhookState {
            secret: Arc::new(secret),
            updates,
        })
}

async fn receive(State(state): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let given = headers
        .get(SECRET_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(state.secret.expose().as_bytes())) {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_secret_token",
            "the secret token is missing or wrong",
        );
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => {
            tracing::warn!(error = %e, "webhook body is not an update");
            return error(
                StatusCode::BAD_REQUEST,
                "bad_update",
                "the body is not a Telegram update",
            );
        }
    };
    if state.updates.send(update).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the bot is shutting down",
        );
    }
    StatusCode::OK.into_response()
}

type UpdateStream =
    futures::stream::Map<UnboundedReceiverStream<Update>, fn(Update) -> Result<Update, Infallible>>;

/// The dispatcher's listener over the updates the webhook endpoint receives.
pub fn webhook_listener(
    updates: mpsc::UnboundedReceiver<Update>,
) -> impl UpdateListener<Err = Infallible> {
    let (stop_token, _stop_flag) = mk_stop_token();
    let stream: UpdateStream =
        UnboundedReceiverStream::new(updates).map(Ok as fn(Update) -> Result<Update, Infallible>);
    StatefulListener::new(
        (stream, stop_token),
        stream_of,
        |state: &mut (UpdateStream, StopToken)| state.1.clone(),
    )
}

fn stream_of(state: &mut (UpdateStream, StopToken)) -> &mut UpdateStream {
    &mut state.0
}
