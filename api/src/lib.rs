//! `wgsub-api`: the HTTP API of wgsub — the Telegram Mini App's endpoints and static page, the
//! YooKassa webhook, and the drift loop that keeps `VpnSubscription`s equal to the ledger.
//!
//! What it writes in Kubernetes: `WgPeer.spec.enabled / deviceName` (server-side apply, field
//! manager `wgsub-api`), extra device `WgPeer`s up to `maxDevices` (created with field
//! manager `wgsub-api`), deleted and rotated devices ([`device_actions`]), the
//! `wgsub.io/devices-removed-by-user` annotation of a `VpnSubscription` (merge patch); through
//! the shared ledger crate, `VpnSubscription.spec.paidUntil / plan / maxDevices / suspended`
//! (field manager `wgsub-ledger`); `VpnSubscription.spec.server`, the user's location (field
//! manager `wgsub-location`, [`locations`]). Every read (the subscription, the user's peers,
//! the peers' key `Secret`s and `WgServer`s to render configs) answers from watch-backed caches
//! ([`wgsub_devices::Caches`]), never from the API server.
//! The money lives in PostgreSQL ([`wgsub_ledger`]).
//!
//! The binary (`main.rs`) only parses and hands over to [`service`], which wires: settings →
//! state → [`app`] → serve.

pub mod clientip;
pub mod config;
pub mod device_actions;
pub mod devices;
pub mod error;
pub mod growth;
pub mod import;
pub mod initdata;
pub mod locations;
pub mod metrics;
pub mod miniapp;
pub mod openapi;
pub mod qr;
pub mod renewal;
pub mod service;
pub mod stars;
pub mod state;
pub mod system;
pub mod user;
pub mod webhook;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, patch, post, put};

pub use state::{AppState, KubeApis, Settings, SharedState};

/// The whole HTTP surface.
pub fn app(state: SharedState) -> Router {
    let body_limit = state.settings.max_body_bytes;
    Router::new()
        .route("/api/v1/me", get(user::me))
        .route("/api/v1/plans", get(user::plans))
        .route("/api/v1/locations", get(locations::locations))
        .route("/api/v1/me/location", put(locations::put_location))
        .route("/api/v1/payments", post(user::create_payment))
        .route(
            "/api/v1/me/promo",
            get(growth::waiting_discount).post(growth::redeem_promo),
        )
        .route("/api/v1/me/referrals", get(growth::referrals))
        .route(
            "/api/v1/me/renewal",
            get(renewal::renewal).delete(renewal::disable_renewal),
        )
        .route("/api/v1/stars/invoice", post(stars::create_stars_invoice))
        .route(
            "/api/v1/me/peers",
            get(user::list_peers).post(user::add_peer),
        )
        .route(
            "/api/v1/me/peers/{name}",
            patch(user::update_peer).delete(device_actions::delete_peer),
        )
        .route(
            "/api/v1/me/peers/{name}/rotate",
            post(device_actions::rotate_peer),
        )
        .route("/api/v1/me/peers/{name}/config", get(user::peer_config))
        .route("/api/v1/me/peers/{name}/qr", get(user::peer_qr))
        .route("/api/v1/webhooks/yookassa", post(webhook::yookassa))
        .route("/openapi.json", get(system::openapi_json))
        .route("/miniapp", get(miniapp::redirect))
        .route("/miniapp/", get(miniapp::index))
        .route("/miniapp/{file}", get(miniapp::asset))
        .merge(system::probes(&state).routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), system::track))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
