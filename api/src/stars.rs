//! `POST /api/v1/stars/invoice`: the Mini App's invoice in Telegram Stars. The API signs the
//! same payload the bot puts on its invoices ([`wgsub_ledger::stars`]: user from initData,
//! plan, price in Stars), asks the Bot API for an invoice link (`createInvoiceLink`, currency
//! `XTR`, no provider token) and returns it for `Telegram.WebApp.openInvoice`. The payment
//! itself reaches the bot (`pre_checkout_query`, `successful_payment`), which checks and
//! applies it.
//!
//! The bot token is part of every Bot API URL, so no error or log line here carries a URL.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use wgsub_crds::plans::Plan;
use wgsub_ledger::stars::{
    InvoiceKey, InvoicePayload, STARS_CURRENCY, invoice_description, invoice_for, invoice_title,
};

use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::state::SharedState;
use crate::user::{AuthUser, ledger_user};

/// How long the Bot API may take to make an invoice link.
pub const TELEGRAM_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/v1/stars/invoice` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StarsInvoiceRequest {
    pub plan: String,
}

/// An invoice link to open with `Telegram.WebApp.openInvoice`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StarsInvoiceResponse {
    pub invoice_link: String,
    /// The price in Stars the invoice asks.
    pub stars: u32,
}

/// The body of `createInvoiceLink` for a plan's invoice.
pub fn create_invoice_link_body(
    language_code: Option<&str>,
    plan: &Plan,
    invoice: &InvoicePayload,
    key: &InvoiceKey,
) -> serde_json::Value {
    let title = invoice_title(language_code, plan);
    json!({
        "title": title,
        "description": invoice_description(language_code, plan),
        "payload": invoice.encode(key),
        "currency": STARS_CURRENCY,
        "prices": [{"label": title, "amount": invoice.stars}],
    })
}

/// What the Bot API answers.
#[derive(Debug, Deserialize)]
struct BotApiAnswer {
    ok: bool,
    result: Option<String>,
    description: Option<String>,
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(TELEGRAM_TIMEOUT)
            .build()
            .expect("an HTTP client with a timeout builds")
    })
}

fn telegram_failed(detail: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(%detail, "createInvoiceLink failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "telegram_unavailable",
        "Telegram did not make the invoice, try again",
    )
}

/// Asks the Bot API at `api_base` for an invoice link.
async fn create_invoice_link(
    api_base: &str,
    bot_token: &str,
    body: &serde_json::Value,
) -> Result<String, ApiError> {
    let url = format!(
        "{}/bot{bot_token}/createInvoiceLink",
        api_base.trim_end_matches('/')
    );
    let response = client()
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|error| telegram_failed(&error.without_url()))?;
    let status = response.status();
    let answer: BotApiAnswer = response
        .json()
        .await
        .map_err(|error| telegram_failed(&error.without_url()))?;
    match answer {
        BotApiAnswer {
            ok: true,
            result: Some(link),
            ..
        } if link.starts_with("https://") => Ok(link),
        BotApiAnswer { description, .. } => Err(telegram_failed(&format!(
            "HTTP {status}: {}",
            description
                .as_deref()
                .unwrap_or("no invoice link in the answer")
        ))),
    }
}

#[utoipa::path(post, path = "/api/v1/stars/invoice", tag = "miniapp",
    security(("tma" = [])),
    request_body = StarsInvoiceRequest,
    responses((status = 200, body = StarsInvoiceResponse), (status = 401, body = ErrorBody),
        (status = 403, description = "the user is suspended", body = ErrorBody),
        (status = 422, description = "unknown plan, or a plan not sold for Stars", body = ErrorBody),
        (status = 502, description = "Telegram did not make the invoice", body = ErrorBody)))]
pub async fn create_stars_invoice(
    State(state): State<SharedState>,
    AuthUser(init): AuthUser,
    ApiJson(request): ApiJson<StarsInvoiceRequest>,
) -> Result<Json<StarsInvoiceResponse>, ApiError> {
    let plan = state
        .plans
        .get(&request.plan)
        .ok_or_else(|| ApiError::unknown_plan(&request.plan))?;
    let user = ledger_user(&state, &init, Timestamp::now()).await?;
    if user.suspended {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "suspended",
            "the subscription is suspended",
        ));
    }
    let invoice = invoice_for(user.telegram_id, plan).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "stars_not_offered",
            format!("plan {:?} is not sold for Stars", plan.id),
        )
    })?;
    let key = InvoiceKey::from_bot_token(&state.settings.bot_token);
    let body = create_invoice_link_body(init.user.language_code.as_deref(), plan, &invoice, &key);
    let link = create_invoice_link(
        &state.settings.telegram_api_url,
        &state.settings.bot_token,
        &body,
    )
    .await?;
    Ok(Json(StarsInvoiceResponse {
        invoice_link: link,
        stars: invoice.stars,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgsub_crds::plans::PlanCatalogue;

    #[test]
    fn the_invoice_link_body_is_a_stars_invoice_with_a_signed_payload_and_no_provider_token() {
        let plans = PlanCatalogue::from_yaml_str(
            "plans: [{id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 1, priceStars: 150}]",
        )
        .unwrap();
        let plan = &plans.plans()[0];
        let key = InvoiceKey::from_bot_token("1:test-token-made-here");
        let invoice = invoice_for(42, plan).unwrap();
        let body = create_invoice_link_body(Some("en"), plan, &invoice, &key);
        assert_eq!(body["currency"], "XTR");
        assert_eq!(
            body["prices"],
            json!([{"label": "VPN: Month", "amount": 150}])
        );
        assert_eq!(body["title"], "VPN: Month");
        assert!(body.get("provider_token").is_none());
        let payload = body["payload"].as_str().unwrap();
        assert_eq!(InvoicePayload::decode(payload, &key), Ok(invoice));
        let russian =
            create_invoice_link_body(Some("ru"), plan, &invoice_for(42, plan).unwrap(), &key);
        assert_eq!(russian["title"], "VPN: Месяц");
    }
}
