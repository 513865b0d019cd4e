//! The user-facing endpoints of the Mini App. Every one authenticates with
//! `Authorization: tma <initData>` and acts only on the initData user: no user id appears in
//! any path, and a device that is not the caller's answers 404 exactly like one that does not
//! exist.
//!
//! Reads answer from the watch-backed [`wgsub_devices::Caches`] and never call the API server
//! (503 `cache_not_ready` until the caches have synced, or when their watch has failed for
//! longer than they serve stale answers); writes go to the API server, and a handler that
//! wrote waits (at most [`WRITE_VISIBLE_WITHIN`]) until the caches hold its write, so the
//! user's next read sees it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wgsub_crds::liveness::subscription_phase;
use wgsub_crds::resources::LABEL_SUBSCRIPTION;
use wgsub_crds::resources::Protocol;
use wgsub_crds::resources::subscription_name;
use wgsub_crds::{SubscriptionPhase, VpnSubscription, VpnSubscriptionSpec, WgPeer};
use wgsub_devices::usage::{DeviceTraffic, Usage};
use wgsub_ledger::{PaymentError, PaymentOrder, User};
use zeroize::Zeroizing;

use crate::devices::{
    DeviceView, clean_device_name, device_index, device_views, is_users_peer, new_device_peer,
    next_device_index, required_device_name, switch_patch,
};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::initdata::{self, InitData};
use crate::qr::QrImage;
use crate::state::{FIELD_MANAGER, SharedState};
use wgsub_devices::{DeviceConfigError, render_device_config};

/// How long a write waits for the caches to hold it before answering anyway.
pub const WRITE_VISIBLE_WITHIN: std::time::Duration = wgsub_devices::cache::DEFAULT_WRITE_WAIT;

/// The authenticated Mini App user.
#[derive(Debug)]
pub struct AuthUser(pub InitData);

impl FromRequestParts<SharedState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("Authorization: tma <initData> is required"))?;
        let raw = header
            .strip_prefix("tma ")
            .ok_or_else(|| ApiError::unauthorized("Authorization must use the tma scheme"))?;
        initdata::validate(
            raw.trim(),
            &state.settings.bot_token,
            state.settings.init_data_max_age,
            Timestamp::now(),
        )
        .map(AuthUser)
        .map_err(ApiError::from_init_data)
    }
}

/// The initData user as the ledger keeps them, recorded at `now` (inserted, or their names,
/// language and last-seen refreshed: [`wgsub_ledger::Ledger::upsert_user`]).
pub(crate) async fn ledger_user(
    state: &SharedState,
    init: &InitData,
    now: Timestamp,
) -> Result<User, ApiError> {
    state
        .ledger
        .upsert_user(&init.user, now)
        .await
        .map_err(ApiError::from_ledger)
}

/// The user as the Mini App shows them.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: i64,
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
    pub language_code: Option<String>,
}

/// Where the subscription stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    /// `Pending`, `Active`, `Expired` or `Suspended`.
    pub phase: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_until: Option<Timestamp>,
    pub plan: Option<String>,
    pub max_devices: i32,
    /// The `WgServer` the devices use: the user's location, or the default server.
    pub server: String,
    /// The traffic used this period against the plan's quota, and in total.
    pub usage: UsageView,
}

/// The subscription's traffic, as the operator counted it (`rx`: received from the devices,
/// the user's upload; `tx`: sent to them).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    /// Bytes (received plus sent) the plan allows per period; absent: no quota.
    pub quota_bytes: Option<i64>,
    /// Bytes received plus sent this period.
    pub used_bytes: i64,
    /// What is left of the quota this period (never below 0); absent without a quota.
    pub remaining_bytes: Option<i64>,
    pub period_rx_bytes: i64,
    pub period_tx_bytes: i64,
    /// When the period started (absent until counted).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub period_start: Option<Timestamp>,
    /// When the period ends and the quota starts again (absent without a quota).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub period_end: Option<Timestamp>,
    pub total_rx_bytes: i64,
    pub total_tx_bytes: i64,
    /// The quota is used up: the devices are paused until `periodEnd` or a purchase.
    pub exhausted: bool,
}

impl From<Usage> for UsageView {
    fn from(usage: Usage) -> Self {
        Self {
            quota_bytes: usage.quota_bytes,
            used_bytes: usage.period_bytes(),
            remaining_bytes: usage.remaining_bytes(),
            period_rx_bytes: usage.period_rx_bytes,
            period_tx_bytes: usage.period_tx_bytes,
            period_start: usage.period_start,
            period_end: usage.period_end,
            total_rx_bytes: usage.total_rx_bytes,
            total_tx_bytes: usage.total_tx_bytes,
            exhausted: usage.exhausted,
        }
    }
}

/// `GET /api/v1/me`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub subscription: SubscriptionView,
    pub devices: Vec<DeviceView>,
}

/// One plan on offer.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    pub id: String,
    pub title_ru: String,
    pub title_en: String,
    pub days: u32,
    /// Price in minor units (kopecks).
    pub price_minor: i64,
    /// Price as a decimal string, e.g. `199.00`.
    pub price: String,
    pub currency: String,
    pub devices: u8,
    /// Price in Telegram Stars; absent when the plan is not sold for Stars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_stars: Option<u32>,
    /// Traffic (received plus sent) one period of the plan allows, in GiB; absent: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_gib: Option<u32>,
    /// The same in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_bytes: Option<i64>,
    /// Days of one quota period (the plan's days); absent: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_period_days: Option<i32>,
}

/// `POST /api/v1/payments` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePaymentRequest {
    pub plan: String,
    /// A location to move to, checked as `PUT /api/v1/me/location` checks it (404
    /// `location_not_found`, 409 `server_full`, and then no payment is created) and applied
    /// when the payment is created.
    #[serde(default)]
    pub server: Option<String>,
    /// Save the card for automatic renewal (see `/api/v1/me/renewal`).
    #[serde(default)]
    pub save_card: bool,
}

/// A created payment.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResponse {
    pub payment_id: String,
    /// Open this to pay (with `Telegram.WebApp.openLink`).
    pub confirmation_url: String,
}

/// `POST /api/v1/me/peers` body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddDeviceRequest {
    #[serde(default)]
    pub device_name: Option<String>,
}

/// `PATCH /api/v1/me/peers/{name}` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateDeviceRequest {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new name (1 to 64 characters once trimmed; empty is refused with 400
    /// `invalid_device_name`); absent keeps the name.
    #[serde(default)]
    pub device_name: Option<String>,
}

/// `?format=` of the QR code.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QrFormat {
    #[default]
    Png,
    Svg,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QrQuery {
    /// `png` (default) or `svg`.
    #[serde(default)]
    pub format: QrFormat,
}

fn peer_not_ready(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "peer_not_ready", message)
}

/// Fails with 503 `cache_not_ready` when the caches cannot answer now.
fn caches_ready(state: &SharedState) -> Result<(), ApiError> {
    state.caches.check().map_err(ApiError::from_cache)
}

/// The user's subscription as the cache has it.
fn subscription_of(
    state: &SharedState,
    user_id: i64,
) -> Result<Option<Arc<VpnSubscription>>, ApiError> {
    caches_ready(state)?;
    Ok(state.caches.subscription(&subscription_name(user_id)))
}

pub(crate) fn active_subscription(
    state: &SharedState,
    user_id: i64,
    now: Timestamp,
) -> Result<Arc<VpnSubscription>, ApiError> {
    match subscription_of(state, user_id)? {
        Some(sub) if subscription_phase(&sub.spec, now) == SubscriptionPhase::Active => Ok(sub),
        _ => Err(ApiError::subscription_inactive()),
    }
}

/// The peers labelled with the user's subscription, as the cache has them.
pub(crate) fn users_peers(state: &SharedState, user_id: i64) -> Result<Vec<WgPeer>, ApiError> {
    caches_ready(state)?;
    Ok(state
        .caches
        .peers_of(&subscription_name(user_id))
        .iter()
        .map(|peer| WgPeer::clone(peer))
        .collect())
}

/// The caller's peer `name`, or 404 whether it is missing or someone else's.
pub(crate) fn owned_peer(
    state: &SharedState,
    user_id: i64,
    name: &str,
) -> Result<Arc<WgPeer>, ApiError> {
    if device_index(&subscription_name(user_id), name).is_none() {
        return Err(ApiError::peer_not_found());
    }
    caches_ready(state)?;
    match state.caches.peer(name) {
        Some(peer) if is_users_peer(user_id, &peer) => Ok(peer),
        _ => Err(ApiError::peer_not_found()),
    }
}

/// The protocol of the server named `server`, as the cache has it (`None`: not known).
fn server_protocol(state: &SharedState, server: &str) -> Option<Protocol> {
    state.caches.server(server).map(|s| s.spec.protocol)
}

/// The view of a peer the user's call wrote, with its server's protocol and the traffic its
/// subscription (by the peer's label, from the cache) counted for it.
pub(crate) fn device_view(state: &SharedState, peer: &WgPeer) -> DeviceView {
    let subscription = peer
        .labels()
        .get(LABEL_SUBSCRIPTION)
        .and_then(|name| state.caches.subscription(name));
    DeviceView::of(
        peer,
        server_protocol(state, &peer.spec.server),
        DeviceTraffic::of(subscription.as_deref(), &peer.name_any()),
        Timestamp::now(),
    )
}

/// The user's devices as [`device_views`] lists them, with their servers' protocols and their
/// traffic from the user's cached subscription.
fn devices_of(state: &SharedState, user_id: i64, peers: &[WgPeer]) -> Vec<DeviceView> {
    let subscription = state.caches.subscription(&subscription_name(user_id));
    device_views(
        user_id,
        peers,
        subscription.as_deref(),
        Timestamp::now(),
        |server| server_protocol(state, server),
    )
}

/// Waits until the caches hold `written` (bounded), so the user's next read sees it.
pub(crate) async fn until_visible(state: &SharedState, written: &WgPeer) {
    if !state.caches.wait_for(written, WRITE_VISIBLE_WITHIN).await {
        tracing::warn!(
            peer = %written.name_any(),
            "the cache did not show the write within {}s",
            WRITE_VISIBLE_WITHIN.as_secs()
        );
    }
}

#[utoipa::path(get, path = "/api/v1/me", tag = "miniapp",
    security(("tma" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
) -> Result<Json<MeResponse>, ApiError> {
    me_view(&state, &init).await.map(Json)
}

/// The `/api/v1/me` view of the initData user.
pub(crate) async fn me_view(state: &SharedState, init: &InitData) -> Result<MeResponse, ApiError> {
    let now = Timestamp::now();
    let user = ledger_user(state, init, now).await?;
    let subscription = subscription_of(state, user.telegram_id)?;
    let usage = subscription.as_deref().map(Usage::of).unwrap_or(Usage {
        quota_bytes: user.entitlement.traffic_quota.map(|quota| quota.bytes),
        ..Usage::default()
    });
    let spec = subscription
        .map(|s| s.spec.clone())
        .unwrap_or_else(|| VpnSubscriptionSpec {
            paid_until: user.entitlement.paid_until,
            plan: user.entitlement.plan.clone(),
            max_devices: user.entitlement.max_devices,
            suspended: user.suspended,
            traffic_quota: user.entitlement.traffic_quota,
            ..VpnSubscriptionSpec::for_user(user.telegram_id)
        });
    let peers = users_peers(state, user.telegram_id)?;
    let server = spec
        .server
        .clone()
        .unwrap_or_else(|| state.settings.default_server.clone());
    Ok(MeResponse {
        user: UserView {
            id: user.telegram_id,
            first_name: user.first_name,
            last_name: user.last_name,
            username: user.username,
            language_code: user.language_code,
        },
        subscription: SubscriptionView {
            phase: subscription_phase(&spec, now).as_str().to_owned(),
            paid_until: spec.paid_until,
            plan: spec.plan,
            max_devices: spec.max_devices,
            server,
            usage: usage.into(),
        },
        devices: devices_of(state, user.telegram_id, &peers),
    })
}

#[utoipa::path(get, path = "/api/v1/plans", tag = "miniapp",
    responses((status = 200, body = Vec<PlanView>)))]
pub async fn plans(State(state): State<SharedState>) -> Json<Vec<PlanView>> {
    Json(
        state
            .plans
            .plans()
            .iter()
            .map(|plan| PlanView {
                id: plan.id.clone(),
                title_ru: plan.title.ru.clone(),
                title_en: plan.title.en.clone(),
                days: plan.days,
                price_minor: plan.price_minor,
                price: plan.price_decimal(),
                currency: plan.currency.clone(),
                devices: plan.devices,
                price_stars: plan.price_stars,
                traffic_gib: plan.traffic_gib,
                traffic_bytes: plan.traffic_quota().map(|quota| quota.bytes),
                traffic_period_days: plan.traffic_quota().map(|quota| quota.period_days),
            })
            .collect(),
    )
}

#[utoipa::path(post, path = "/api/v1/payments", tag = "miniapp",
    security(("tma" = [])),
    request_body = CreatePaymentRequest,
    responses((status = 201, body = PaymentResponse), (status = 401, body = ErrorBody),
        (status = 404, description = "location_not_found: `server` is not offered", body = ErrorBody),
        (status = 409, description = "receipts need an e-mail or phone (contact_required), or `server` is full (server_full)", body = ErrorBody),
        (status = 422, description = "unknown plan", body = ErrorBody),
        (status = 429, description = "too many payments started; `Retry-After` says when to try again", body = ErrorBody),
        (status = 502, description = "YooKassa failed", body = ErrorBody)))]
pub async fn create_payment(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiJson(request): ApiJson<CreatePaymentRequest>,
) -> Result<Response, ApiError> {
    let plan = state
        .plans
        .get(&request.plan)
        .ok_or_else(|| ApiError::unknown_plan(&request.plan))?;
    if let Some(server) = &request.server {
        crate::locations::check_location(&state, init.user.id, server)?;
    }
    let now = Timestamp::now();
    let user = ledger_user(&state, &init, now).await?;
    if let Some(server) = &request.server {
        crate::locations::apply_location(&state, user.telegram_id, server).await?;
    }
    let order = PaymentOrder {
        user_id: user.telegram_id,
        plan,
        return_url: &state.settings.return_url,
        receipt: state.settings.receipt,
    };
    match state
        .ledger
        .create_payment_saving_card(&state.yookassa, order, request.save_card, now)
        .await
    {
        Ok(created) => {
            state.metrics.payment("created");
            Ok((
                StatusCode::CREATED,
                Json(PaymentResponse {
                    payment_id: created.id.to_string(),
                    confirmation_url: created.confirmation_url,
                }),
            )
                .into_response())
        }
        Err(PaymentError::Limited(limited)) => {
            state.metrics.payment("limited");
            let seconds = limited.retry_after.as_secs();
            Ok((
                [(header::RETRY_AFTER, seconds.to_string())],
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_payments",
                    format!("too many payments started: try again in {seconds} seconds"),
                ),
            )
                .into_response())
        }
        Err(PaymentError::ContactRequired) => {
            state.metrics.payment("contact_required");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "contact_required",
                "receipts need your e-mail or phone: send it to the bot first",
            ))
        }
        Err(PaymentError::Ledger(error)) => Err(ApiError::from_ledger(error)),
        Err(error) => {
            state.metrics.payment("provider_error");
            tracing::warn!(%error, "creating a YooKassa payment failed");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "payment_provider_error",
                "the payment provider is unavailable, try again",
            ))
        }
    }
}

#[utoipa::path(get, path = "/api/v1/me/peers", tag = "miniapp",
    security(("tma" = [])),
    responses((status = 200, body = Vec<DeviceView>), (status = 401, body = ErrorBody)))]
pub async fn list_peers(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
) -> Result<Json<Vec<DeviceView>>, ApiError> {
    let peers = users_peers(&state, init.user.id)?;
    Ok(Json(devices_of(&state, init.user.id, &peers)))
}

#[utoipa::path(post, path = "/api/v1/me/peers", tag = "miniapp",
    security(("tma" = [])),
    request_body = AddDeviceRequest,
    responses((status = 201, body = DeviceView), (status = 401, body = ErrorBody),
        (status = 403, description = "subscription_inactive", body = ErrorBody),
        (status = 409, description = "device_limit", body = ErrorBody)))]
pub async fn add_peer(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiJson(request): ApiJson<AddDeviceRequest>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    let user_id = init.user.id;
    let device_name = clean_device_name(request.device_name.as_deref())
        .map_err(|message| ApiError::bad_request("invalid_device_name", message))?;
    let subscription = active_subscription(&state, user_id, Timestamp::now())?;
    let peers = users_peers(&state, user_id)?;
    let mine: Vec<&WgPeer> = peers.iter().filter(|p| is_users_peer(user_id, p)).collect();
    if mine.len() >= usize::try_from(subscription.spec.max_devices).unwrap_or(0) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "device_limit",
            format!(
                "your plan allows {} device(s)",
                subscription.spec.max_devices
            ),
        ));
    }
    let sub_name = subscription.name_any();
    let names: Vec<String> = mine.iter().map(|p| p.name_any()).collect();
    let index = next_device_index(&sub_name, names.iter().map(String::as_str));
    let server = subscription
        .spec
        .server
        .clone()
        .unwrap_or_else(|| state.settings.default_server.clone());
    let peer = new_device_peer(&subscription, index, &server, device_name);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let created = match state.kube.peers.create(&params, &peer).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "device_conflict",
                "another device was added at the same time, try again",
            ));
        }
        Err(error) => return Err(ApiError::from_kube(error)),
    };
    until_visible(&state, &created).await;
    crate::device_actions::clear_removed_mark(&state, &subscription).await;
    Ok((StatusCode::CREATED, Json(device_view(&state, &created))))
}

#[utoipa::path(patch, path = "/api/v1/me/peers/{name}", tag = "miniapp",
    security(("tma" = [])),
    params(("name" = String, Path, description = "the device's peer name")),
    request_body = UpdateDeviceRequest,
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update_peer(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateDeviceRequest>,
) -> Result<Json<DeviceView>, ApiError> {
    let peer = owned_peer(&state, init.user.id, &name)?;
    let enabled = request.enabled.unwrap_or(peer.spec.enabled);
    let device_name = match &request.device_name {
        Some(text) => Some(
            required_device_name(text)
                .map_err(|message| ApiError::bad_request("invalid_device_name", message))?,
        ),
        None => peer.spec.device_name.clone(),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patched = state
        .kube
        .peers
        .patch(
            &name,
            &params,
            &Patch::Apply(switch_patch(&name, enabled, device_name.as_deref())),
        )
        .await
        .map_err(ApiError::from_kube)?;
    until_visible(&state, &patched).await;
    Ok(Json(device_view(&state, &patched)))
}

/// The device's `.conf` and its download file name, from the caches alone.
fn client_config(
    state: &SharedState,
    user_id: i64,
    name: &str,
) -> Result<(Zeroizing<String>, String), ApiError> {
    let peer = owned_peer(state, user_id, name)?;
    active_subscription(state, user_id, Timestamp::now())?;
    let fallback = device_index(&subscription_name(user_id), name)
        .unwrap_or(1)
        .to_string();
    match render_device_config(&state.caches, &peer, &fallback) {
        Ok(rendered) => Ok((rendered.text, rendered.file_name)),
        Err(DeviceConfigError::Cache(error)) => Err(ApiError::from_cache(error)),
        Err(DeviceConfigError::NotReady(message)) => Err(peer_not_ready(message)),
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
    response
}

#[utoipa::path(get, path = "/api/v1/me/peers/{name}/config", tag = "miniapp",
    security(("tma" = [])),
    params(("name" = String, Path, description = "the device's peer name")),
    responses((status = 200, description = "wg-quick .conf", content_type = "text/plain"),
        (status = 403, description = "subscription_inactive", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "peer_not_ready", body = ErrorBody)))]
pub async fn peer_config(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (text, file) = client_config(&state, init.user.id, &name)?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
        .map_err(|e| ApiError::internal(&e))?;
    Ok(no_store(
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            text.as_str().to_owned(),
        )
            .into_response(),
    ))
}

#[utoipa::path(get, path = "/api/v1/me/peers/{name}/qr", tag = "miniapp",
    security(("tma" = [])),
    params(("name" = String, Path, description = "the device's peer name"), QrQuery),
    responses((status = 200, description = "QR code of the config", content_type = "image/png"),
        (status = 403, description = "subscription_inactive", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "peer_not_ready", body = ErrorBody)))]
pub async fn peer_qr(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<QrQuery>,
) -> Result<Response, ApiError> {
    let (text, _) = client_config(&state, init.user.id, &name)?;
    let format = match query.format {
        QrFormat::Png => QrImage::Png,
        QrFormat::Svg => QrImage::Svg,
    };
    let image = state
        .qr_cache
        .get_or_render(format, text)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(no_store(
        ([(header::CONTENT_TYPE, format.content_type())], image).into_response(),
    ))
}
