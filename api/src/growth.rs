//! The Mini App's promo codes and referrals, for the initData user only:
//! `POST /api/v1/me/promo` redeems a code (free days now — the subscription is written — or a
//! discount that prices the next payment), `GET /api/v1/me/promo` shows the discount waiting,
//! and `GET /api/v1/me/referrals` the personal `t.me/<bot>?start=ref_<id>` link with how many
//! joined and the days earned. The rules live in [`wgsub_ledger::promo`] and
//! [`wgsub_ledger::referral`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wgsub_ledger::referral::referral_payload;
use wgsub_ledger::{RedeemError, RedeemRefusal, Redeemed};

use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::state::SharedState;
use crate::user::{AuthUser, ledger_user};

/// `POST /api/v1/me/promo` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoRequest {
    pub code: String,
}

/// What a redeemed code gave.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromoResponse {
    /// The code as stored (upper case).
    pub code: String,
    /// `days` (free days added now) or `discount` (off the next payment).
    pub kind: String,
    pub days: Option<u32>,
    pub percent_off: Option<u8>,
    /// The subscription's end after free days.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub paid_until: Option<Timestamp>,
}

/// The discount waiting for the next payment.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscountView {
    pub code: String,
    pub percent_off: u8,
}

/// `GET /api/v1/me/referrals`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferralsView {
    /// `https://t.me/<bot>?start=ref_<id>`; absent when the API was not told the bot's name.
    pub link: Option<String>,
    /// The `/start` payload of the link (`ref_<id>`).
    pub payload: String,
    /// Users who started the bot through the link.
    pub joined: i64,
    /// Of them, those whose first payment earned a reward that stands.
    pub rewarded: i64,
    pub days_earned: i64,
    /// Days one reward gives (0: rewards are off).
    pub reward_days: u32,
}

/// The HTTP answer to a refused code: a stable code per reason.
pub fn refusal_error(refusal: RedeemRefusal) -> ApiError {
    let status = match refusal {
        RedeemRefusal::Unknown => StatusCode::NOT_FOUND,
        RedeemRefusal::Disabled | RedeemRefusal::Expired | RedeemRefusal::UsedUp => {
            StatusCode::GONE
        }
        RedeemRefusal::AlreadyRedeemed | RedeemRefusal::DiscountWaiting => StatusCode::CONFLICT,
    };
    ApiError::new(status, refusal.label(), refusal.to_string())
}

#[utoipa::path(post, path = "/api/v1/me/promo", tag = "miniapp",
    security(("tma" = [])),
    request_body = PromoRequest,
    responses((status = 200, body = PromoResponse),
        (status = 400, description = "`promo_malformed`: not a promo code", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "`promo_unknown`", body = ErrorBody),
        (status = 409, description = "`promo_already_redeemed`, `promo_discount_waiting`", body = ErrorBody),
        (status = 410, description = "`promo_expired`, `promo_disabled`, `promo_used_up`", body = ErrorBody)))]
pub async fn redeem_promo(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiJson(request): ApiJson<PromoRequest>,
) -> Result<Json<PromoResponse>, ApiError> {
    let now = Timestamp::now();
    let user = ledger_user(&state, &init, now).await?;
    let id = user.telegram_id;
    match state.ledger.redeem_promo_code(id, &request.code, now).await {
        Ok(Redeemed::Days {
            code,
            days,
            entitlement,
        }) => {
            tracing::info!(user = id, %code, days, "promo code redeemed for free days");
            if let Err(error) = state.kube.sync.sync_user(&state.ledger, id).await {
                tracing::warn!(user = id, %error, "VpnSubscription write failed; the drift loop retries");
            }
            Ok(Json(PromoResponse {
                code,
                kind: "days".into(),
                days: Some(days),
                percent_off: None,
                paid_until: entitlement.paid_until,
            }))
        }
        Ok(Redeemed::Discount { code, percent_off }) => {
            tracing::info!(user = id, %code, percent_off, "promo code redeemed for a discount");
            Ok(Json(PromoResponse {
                code,
                kind: "discount".into(),
                days: None,
                percent_off: Some(percent_off),
                paid_until: None,
            }))
        }
        Err(RedeemError::Syntax(error)) => {
            tracing::info!(user = id, %error, chars = request.code.chars().count(), "a promo code that does not parse was refused");
            Err(ApiError::bad_request("promo_malformed", error.to_string()))
        }
        Err(RedeemError::Refused(refusal)) => {
            tracing::info!(user = id, reason = refusal.label(), "promo code refused");
            Err(refusal_error(refusal))
        }
        Err(RedeemError::Ledger(error)) => Err(ApiError::from_ledger(error)),
    }
}

#[utoipa::path(get, path = "/api/v1/me/promo", tag = "miniapp",
    security(("tma" = [])),
    responses((status = 200, description = "the waiting discount, or null", body = Option<DiscountView>),
        (status = 401, body = ErrorBody)))]
pub async fn waiting_discount(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
) -> Result<Json<Option<DiscountView>>, ApiError> {
    let discount = state
        .ledger
        .waiting_discount(init.user.id)
        .await
        .map_err(ApiError::from_ledger)?;
    Ok(Json(discount.map(|discount| DiscountView {
        code: discount.code,
        percent_off: discount.percent_off,
    })))
}

#[utoipa::path(get, path = "/api/v1/me/referrals", tag = "miniapp",
    security(("tma" = [])),
    responses((status = 200, body = ReferralsView), (status = 401, body = ErrorBody)))]
pub async fn referrals(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
) -> Result<Json<ReferralsView>, ApiError> {
    let id = init.user.id;
    let summary = state
        .ledger
        .referral_summary(id)
        .await
        .map_err(ApiError::from_ledger)?;
    Ok(Json(ReferralsView {
        link: state.ledger.referral_link(id),
        payload: referral_payload(id),
        joined: summary.joined,
        rewarded: summary.rewarded,
        days_earned: summary.days_earned,
        reward_days: state.ledger.referral_days(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_a_stable_code_and_a_fitting_status() {
        let cases = [
            (
                RedeemRefusal::Unknown,
                StatusCode::NOT_FOUND,
                "promo_unknown",
            ),
            (RedeemRefusal::Disabled, StatusCode::GONE, "promo_disabled"),
            (RedeemRefusal::Expired, StatusCode::GONE, "promo_expired"),
            (RedeemRefusal::UsedUp, StatusCode::GONE, "promo_used_up"),
            (
                RedeemRefusal::AlreadyRedeemed,
                StatusCode::CONFLICT,
                "promo_already_redeemed",
            ),
            (
                RedeemRefusal::DiscountWaiting,
                StatusCode::CONFLICT,
                "promo_discount_waiting",
            ),
        ];
        for (refusal, status, code) in cases {
            let error = refusal_error(refusal);
            assert_eq!((error.status, error.code), (status, code), "{refusal:?}");
            assert!(!error.message.is_empty());
        }
    }
}
