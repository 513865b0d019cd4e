//! The Mini App's device deletion and key rotation: `DELETE /api/v1/me/peers/{name}` and
//! `POST /api/v1/me/peers/{name}/rotate`. Like every user endpoint they act only on the
//! initData user's own devices (another user's device, or one that does not exist, is 404
//! `peer_not_found`, and nothing changes); the writes are [`wgsub_devices::manage`]'s, shared
//! with the bot:
//!
//! - a deleted device's peer goes at once (the node-agent takes it off the interface, the
//!   operator deletes its key Secret); deleting the last device first marks the subscription so
//!   the operator does not create a first device again;
//! - a rotated device is replaced by a new peer with the same name and switch under the next
//!   device number (the answer's `name`), which the operator gives a fresh key and address —
//!   `ready` is false until it has — and the old peer, with the old key, is deleted.
//!
//! Each waits (bounded) until the caches show its writes, so the user's next read sees them.

use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use kube::ResourceExt;
use wgsub_crds::VpnSubscription;
use wgsub_crds::resources::subscription_name;
use wgsub_devices::manage::{DeviceWriter, WriteError, replacement_peer};

use crate::devices::{DeviceView, is_users_peer};
use crate::error::{ApiError, ApiPath, ErrorBody};
use crate::state::{FIELD_MANAGER, SharedState};
use crate::user::{
    AuthUser, WRITE_VISIBLE_WITHIN, active_subscription, device_view, owned_peer, until_visible,
    users_peers,
};

fn writer(state: &SharedState) -> DeviceWriter {
    DeviceWriter::new(
        state.kube.peers.clone().into_client(),
        state.caches.namespace(),
        FIELD_MANAGER,
    )
}

fn write_error(error: WriteError) -> ApiError {
    match error {
        WriteError::Gone => ApiError::peer_not_found(),
        WriteError::Conflict => ApiError::new(
            StatusCode::CONFLICT,
            "device_conflict",
            "another device was added at the same time, try again",
        ),
        WriteError::Kube(error) => ApiError::from_kube(error),
    }
}

/// After the user added a device: removes the subscription's mark of removed devices, if it
/// carries one (logged on failure: the mark only matters while the user has no device).
pub async fn clear_removed_mark(state: &SharedState, subscription: &VpnSubscription) {
    writer(state).clear_removed_mark(subscription).await;
}

#[utoipa::path(delete, path = "/api/v1/me/peers/{name}", tag = "miniapp",
    security(("tma" = [])),
    params(("name" = String, Path, description = "the device's peer name")),
    responses((status = 204, description = "the device, its key and its config are gone"),
        (status = 401, body = ErrorBody),
        (status = 404, description = "peer_not_found: not one of the caller's devices; nothing changed", body = ErrorBody)))]
pub async fn delete_peer(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let user_id = init.user.id;
    let peer = owned_peer(&state, user_id, &name)?;
    let peers = users_peers(&state, user_id)?;
    let last = peers
        .iter()
        .filter(|other| is_users_peer(user_id, other))
        .all(|other| other.name_any() == name);
    writer(&state)
        .delete(&subscription_name(user_id), &peer, last)
        .await
        .map_err(write_error)?;
    if !state.caches.wait_gone(&*peer, WRITE_VISIBLE_WITHIN).await {
        tracing::warn!(peer = %name, "the cache did not show the delete in time");
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/me/peers/{name}/rotate", tag = "miniapp",
    security(("tma" = [])),
    params(("name" = String, Path, description = "the device's peer name")),
    responses((status = 200, description = "the replacement device (a new `name`; `ready` is false until the operator has given it its new key and address); the old config no longer works", body = DeviceView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "subscription_inactive", body = ErrorBody),
        (status = 404, description = "peer_not_found: not one of the caller's devices; nothing changed", body = ErrorBody),
        (status = 409, description = "device_conflict", body = ErrorBody)))]
pub async fn rotate_peer(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    let user_id = init.user.id;
    let old = owned_peer(&state, user_id, &name)?;
    let subscription = active_subscription(&state, user_id, Timestamp::now())?;
    let names: Vec<String> = users_peers(&state, user_id)?
        .iter()
        .filter(|peer| is_users_peer(user_id, peer))
        .map(|peer| peer.name_any())
        .collect();
    let replacement = replacement_peer(&subscription, &old, &names, &state.settings.default_server);
    let created = writer(&state)
        .rotate(&old, &replacement)
        .await
        .map_err(write_error)?;
    until_visible(&state, &created).await;
    if !state.caches.wait_gone(&*old, WRITE_VISIBLE_WITHIN).await {
        tracing::warn!(peer = %name, "the cache did not show the rotated device's delete in time");
    }
    Ok(axum::Json(device_view(&state, &created)))
}
