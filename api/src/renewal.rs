//! The Mini App's automatic renewal, for the initData user only: `GET /api/v1/me/renewal`
//! shows whether it is on, the saved card (masked), when it is charged next, the plan and why
//! the last one failed; `DELETE /api/v1/me/renewal` switches it off, deleting the saved method
//! on our side (204 whether it was on or not). Agreeing to it is `saveCard` of
//! `POST /api/v1/payments`. The rules live in [`wgsub_ledger::renewal`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;
use wgsub_ledger::RenewalStatus;

use crate::error::{ApiError, ErrorBody};
use crate::state::SharedState;
use crate::user::{AuthUser, ledger_user};

/// The saved card, masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardView {
    /// e.g. `Visa •••• 4242`.
    pub title: String,
    /// `MM/YY`, when known.
    pub expires: Option<String>,
}

/// `GET /api/v1/me/renewal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenewalView {
    pub enabled: bool,
    pub card: Option<CardView>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_charge_at: Option<Timestamp>,
    /// The plan renewed.
    pub plan: Option<String>,
    /// Why the latest renewal was not charged (e.g. `insufficient_funds`, `plan_unavailable`).
    pub last_failure: Option<String>,
}

impl From<RenewalStatus> for RenewalView {
    fn from(status: RenewalStatus) -> Self {
        Self {
            enabled: status.enabled,
            card: status.card.map(|card| CardView {
                expires: card.expires(),
                title: card.title,
            }),
            next_charge_at: status.next_charge_at,
            plan: status.plan,
            last_failure: status.last_failure,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/me/renewal", tag = "miniapp",
    security(("tma" = [])),
    responses((status = 200, body = RenewalView), (status = 401, body = ErrorBody)))]
pub async fn renewal(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
) -> Result<Json<RenewalView>, ApiError> {
    let status = state
        .ledger
        .renewal_status(init.user.id)
        .await
        .map_err(ApiError::from_ledger)?;
    Ok(Json(status.into()))
}

#[utoipa::path(delete, path = "/api/v1/me/renewal", tag = "miniapp",
    security(("tma" = [])),
    responses((status = 204, description = "renewal is off and no card is kept"),
        (status = 401, body = ErrorBody)))]
pub async fn disable_renewal(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
) -> Result<StatusCode, ApiError> {
    let now = Timestamp::now();
    let user = ledger_user(&state, &init, now).await?;
    state
        .ledger
        .disable_renewal(user.telegram_id, now)
        .await
        .map_err(ApiError::from_ledger)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wgsub_ledger::SavedCard;

    #[test]
    fn the_view_is_the_contract_the_mini_app_reads() {
        let at: Timestamp = "2026-12-30T00:00:00Z".parse().unwrap();
        let view = RenewalView::from(RenewalStatus {
            enabled: true,
            card: Some(SavedCard {
                title: "Visa •••• 4242".into(),
                expiry_month: Some(12),
                expiry_year: Some(2027),
            }),
            next_charge_at: Some(at),
            plan: Some("month".into()),
            last_failure: None,
        });
        assert_eq!(
            serde_json::to_value(view).unwrap(),
            json!({"enabled": true, "card": {"title": "Visa •••• 4242", "expires": "12/27"},
                   "nextChargeAt": "2026-12-30T00:00:00Z", "plan": "month", "lastFailure": null})
        );
        let off = RenewalView::from(RenewalStatus {
            enabled: false,
            card: None,
            next_charge_at: None,
            plan: None,
            last_failure: Some("insufficient_funds".into()),
        });
        assert_eq!(
            serde_json::to_value(off).unwrap(),
            json!({"enabled": false, "card": null, "nextChargeAt": null, "plan": null,
                   "lastFailure": "insufficient_funds"})
        );
    }
}
