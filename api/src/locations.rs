//! The user's location: `GET /api/v1/locations` (the `WgServer`s offered to users, in the
//! user's language with their country's flag and name, the full ones and the user's own
//! marked), `PUT /api/v1/me/location` (move
//! there), and the same check for the optional `server` of `POST /api/v1/payments`.
//!
//! What is offered, what is full and whether a pick is allowed is decided by
//! [`wgsub_crds::locations`] from the watch-backed caches (servers and peers; capacity counts
//! users with a device on the server). A pick is written as `VpnSubscription.spec.server` by a
//! server-side apply with field manager [`wgsub_ledger::sync::LOCATION_FIELD_MANAGER`]; the
//! operator then moves the user's devices (new addresses from the new server's pool, the same
//! keys) and the bot tells the user their configs changed. A refused pick (404
//! `location_not_found` for an unknown, unoffered or hidden server, 409 `server_full`) writes
//! nothing.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wgsub_crds::locations::{ChoiceError, check_choice, locations_for};
use wgsub_crds::resources::subscription_name;

use crate::devices::DeviceProtocol;
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::state::SharedState;
use crate::user::{AuthUser, MeResponse, WRITE_VISIBLE_WITHIN, me_view};

/// One location as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocationView {
    /// The `WgServer`'s name: what `PUT /api/v1/me/location` takes.
    pub server: String,
    /// The name in the user's language (initData `language_code`: English for `en*`, Russian
    /// otherwise).
    pub display_name: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// The country's flag emoji.
    pub flag: String,
    /// The country's name in the user's language (CLDR's).
    pub country_name: String,
    /// What to show: flag, country name and display name (`🇩🇪 Германия · Франкфурт`; the
    /// name once when the display name is the country's).
    pub label: String,
    /// Other users fill its capacity: it cannot be picked.
    pub full: bool,
    /// The user's location now.
    pub current: bool,
    /// The protocol its configs need an app for.
    pub protocol: DeviceProtocol,
}

/// `PUT /api/v1/me/location` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationRequest {
    /// The `WgServer`'s name, as `GET /api/v1/locations` lists it.
    pub server: String,
}

/// The server the user's devices use: their pick, or the default server.
pub(crate) fn current_server(state: &SharedState, user_id: i64) -> Result<String, ApiError> {
    state.caches.check().map_err(ApiError::from_cache)?;
    Ok(state
        .caches
        .subscription(&subscription_name(user_id))
        .and_then(|sub| sub.spec.server.clone())
        .unwrap_or_else(|| state.settings.default_server.clone()))
}

/// Refuses a pick of `server` by the user: 404 `location_not_found` when it is not offered,
/// 409 `server_full` when other users fill it.
pub(crate) fn check_location(
    state: &SharedState,
    user_id: i64,
    server: &str,
) -> Result<(), ApiError> {
    state.caches.check().map_err(ApiError::from_cache)?;
    let servers = state.caches.servers();
    let peers = state.caches.peers();
    check_choice(&servers, &peers, &subscription_name(user_id), server).map_err(|error| match error
    {
        ChoiceError::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "location_not_found",
            format!("there is no location {server:?}"),
        ),
        ChoiceError::Full => ApiError::new(
            StatusCode::CONFLICT,
            "server_full",
            format!("the location {server:?} is full: pick another one"),
        ),
    })
}

/// Puts the user on `server` (checked before) unless they are there by their own pick
/// already, and waits (bounded) until the cache shows it.
pub(crate) async fn apply_location(
    state: &SharedState,
    user_id: i64,
    server: &str,
) -> Result<(), ApiError> {
    let picked = state
        .caches
        .subscription(&subscription_name(user_id))
        .and_then(|sub| sub.spec.server.clone());
    if picked.as_deref() == Some(server) {
        return Ok(());
    }
    let written = state
        .kube
        .sync
        .set_server(user_id, server)
        .await
        .map_err(ApiError::from_kube)?;
    if !state.caches.wait_for(&written, WRITE_VISIBLE_WITHIN).await {
        tracing::warn!(
            user = user_id,
            "the cache did not show the new location within {}s",
            WRITE_VISIBLE_WITHIN.as_secs()
        );
    }
    tracing::info!(user = user_id, server, "location picked");
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/locations", tag = "miniapp",
    security(("tma" = [])),
    responses((status = 200, body = Vec<LocationView>), (status = 401, body = ErrorBody),
        (status = 503, description = "cache_not_ready", body = ErrorBody)))]
pub async fn locations(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
) -> Result<Json<Vec<LocationView>>, ApiError> {
    let user_id = init.user.id;
    let current = current_server(&state, user_id)?;
    let servers = state.caches.servers();
    let peers = state.caches.peers();
    let list = locations_for(
        &servers,
        &peers,
        &subscription_name(user_id),
        Some(&current),
        init.user.language_code.as_deref(),
    );
    Ok(Json(
        list.into_iter()
            .map(|l| LocationView {
                server: l.server,
                display_name: l.display_name,
                country: l.country,
                flag: l.flag,
                country_name: l.country_name,
                label: l.label,
                full: l.full,
                current: l.current,
                protocol: l.protocol.into(),
            })
            .collect(),
    ))
}

#[utoipa::path(put, path = "/api/v1/me/location", tag = "miniapp",
    security(("tma" = [])),
    request_body = LocationRequest,
    responses((status = 200, description = "moved (the user's devices follow within seconds)", body = MeResponse),
        (status = 401, body = ErrorBody),
        (status = 404, description = "location_not_found: unknown, not offered or hidden", body = ErrorBody),
        (status = 409, description = "server_full", body = ErrorBody),
        (status = 503, description = "cache_not_ready", body = ErrorBody)))]
pub async fn put_location(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiJson(request): ApiJson<LocationRequest>,
) -> Result<Json<MeResponse>, ApiError> {
    check_location(&state, init.user.id, &request.server)?;
    apply_location(&state, init.user.id, &request.server).await?;
    me_view(&state, &init).await.map(Json)
}
