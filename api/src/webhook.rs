//! `POST /api/v1/webhooks/yookassa`: YooKassa's notifications. They are unsigned, so: accept
//! only from YooKassa's addresses (the client address seen through trusted proxies), take
//! nothing from the body but the event and the object id, re-fetch the object from YooKassa,
//! and act only when YooKassa itself says so and it matches our pending record. The answer is
//! 200 once the outcome is recorded (YooKassa stops retrying) and non-200 when it could not be
//! (YooKassa retries); a request that can never succeed (wrong address, not a notification, an
//! object id that is not one) is a 4xx, which YooKassa does not retry.
//!
//! A payment applied or canceled is then handed to [`wgsub_ledger::Ledger::settle_renewal`]
//! with YooKassa's copy: the card it saved is stored (when the buyer agreed), a renewal charge
//! is marked succeeded or failed. The user's `VpnSubscription` is written beside that and the
//! audit row, not after them: the operator starts on the new peer while the rest is recorded.
//!
//! Every delivery that reaches a decision is audited, one row each. Refusals before that —
//! which anyone on the internet can send as fast as they like — touch neither YooKassa nor the
//! database (a wrong address is refused before the body is even read): each is counted in
//! `wgsub_api_webhook_rejections_total{reason}` and only sampled into the audit (a few rows per
//! reason per window, one writer at a time, see [`wgsub_ledger::audit`]), with a log line per
//! sample saying how many were left out since the last.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;
use wgsub_ledger::yookassa::PaymentDetails;
use wgsub_ledger::yookassa::is_object_id;
use wgsub_ledger::{
    ApplyError, ApplyOutcome, DeliveryOutcome, LedgerError, PaymentRecord, RefundOutcome, Sampled,
    WebhookDelivery, YooKassaError,
};

use crate::clientip::{allowed, client_addr};
use crate::error::ApiError;
use crate::metrics::{ReasonLabels, StatusLabels};
use crate::state::SharedState;

#[derive(Debug, Deserialize)]
struct Notification {
    event: String,
    object: NotificationObject,
}

#[derive(Debug, Deserialize)]
struct NotificationObject {
    id: String,
}

/// What a delivery came to, before it is audited.
#[derive(Debug)]
struct Decision {
    outcome: DeliveryOutcome,
    reason: String,
    /// The user whose subscription must be written after the ledger changed.
    sync_user: Option<i64>,
    /// The payment to settle ([`wgsub_ledger::Ledger::settle_renewal`]) before the audit.
    settle: Option<Box<(PaymentRecord, PaymentDetails)>>,
}

impl Decision {
    fn new(outcome: DeliveryOutcome, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            reason: reason.into(),
            sync_user: None,
            settle: None,
        }
    }
}

/// A failure that must make YooKassa retry.
enum Retry {
    Ledger(LedgerError),
    Provider(YooKassaError),
}

fn yookassa_not_found(error: &YooKassaError) -> bool {
    matches!(error, YooKassaError::Rejected { status: 404, .. })
}

async fn decide(state: &SharedState, event: &str, object_id: &str) -> Result<Decision, Retry> {
    let now = Timestamp::now();
    match event {
        "payment.succeeded" | "payment.canceled" => {
            let details = match state.yookassa.get_payment_details(object_id).await {
                Ok(details) => details,
                Err(error) if yookassa_not_found(&error) => {
                    return Ok(Decision::new(DeliveryOutcome::Rejected, "unknown_payment"));
                }
                Err(error) => return Err(Retry::Provider(error)),
            };
            let fetched = &details.payment;
            let Some(record) = state
                .ledger
                .payment_for(fetched)
                .await
                .map_err(Retry::Ledger)?
            else {
                return Ok(Decision::new(DeliveryOutcome::Rejected, "unknown_payment"));
            };
            let decision = match fetched.status.as_str() {
                "succeeded" => match state.ledger.apply_payment(record.id, fetched, now).await {
                    Ok(ApplyOutcome::Applied { user_id, .. }) => {
                        state.metrics.payment("succeeded");
                        Ok(Decision {
                            sync_user: Some(user_id),
                            ..Decision::new(DeliveryOutcome::Applied, "payment_applied")
                        })
                    }
                    Ok(ApplyOutcome::AlreadyApplied { .. }) => {
                        Ok(Decision::new(DeliveryOutcome::Duplicate, "already_applied"))
                    }
                    Err(ApplyError::Mismatch(mismatch)) => {
                        tracing::warn!(%mismatch, payment = %record.id, "YooKassa payment does not match our record");
                        Ok(Decision::new(DeliveryOutcome::Rejected, mismatch.label()))
                    }
                    Err(ApplyError::UnknownPayment(_)) => {
                        Ok(Decision::new(DeliveryOutcome::Rejected, "unknown_payment"))
                    }
                    Err(ApplyError::Ledger(error)) => Err(Retry::Ledger(error)),
                },
                "canceled" => {
                    let changed = state
                        .ledger
                        .cancel_payment(record.id, now)
                        .await
                        .map_err(Retry::Ledger)?;
                    if changed {
                        state.metrics.payment("canceled");
                        Ok(Decision::new(DeliveryOutcome::Applied, "payment_canceled"))
                    } else {
                        Ok(Decision::new(DeliveryOutcome::Duplicate, "not_pending"))
                    }
                }
                other => Ok(Decision::new(
                    DeliveryOutcome::Recorded,
                    format!("payment_{other}"),
                )),
            }?;
            // A saved card is stored, a renewal charge settled: once, however often YooKassa
            // repeats the notification.
            let settle = matches!(
                decision.outcome,
                DeliveryOutcome::Applied | DeliveryOutcome::Duplicate
            )
            .then(|| Box::new((record, details)));
            Ok(Decision { settle, ..decision })
        }
        "refund.succeeded" => {
            let refund = match state.yookassa.get_refund(object_id).await {
                Ok(refund) => refund,
                Err(error) if yookassa_not_found(&error) => {
                    return Ok(Decision::new(DeliveryOutcome::Rejected, "unknown_refund"));
                }
                Err(error) => return Err(Retry::Provider(error)),
            };
            match state.ledger.record_refund(&refund, now).await {
                Ok(RefundOutcome::Recorded { user_id, .. }) => {
                    state.metrics.payment("refunded");
                    Ok(Decision {
                        sync_user: Some(user_id),
                        ..Decision::new(DeliveryOutcome::Applied, "refund_recorded")
                    })
                }
                Ok(RefundOutcome::AlreadyRecorded) => Ok(Decision::new(
                    DeliveryOutcome::Duplicate,
                    "already_recorded",
                )),
                Ok(RefundOutcome::UnknownPayment) => {
                    Ok(Decision::new(DeliveryOutcome::Rejected, "unknown_payment"))
                }
                Ok(RefundOutcome::NotSucceeded) => Ok(Decision::new(
                    DeliveryOutcome::Recorded,
                    format!("refund_{}", refund.status),
                )),
                Err(LedgerError::Invalid(message)) => {
                    tracing::warn!(%message, "refund refused");
                    Ok(Decision::new(DeliveryOutcome::Rejected, "refund_mismatch"))
                }
                Err(error) => Err(Retry::Ledger(error)),
            }
        }
        _ => Ok(Decision::new(DeliveryOutcome::Ignored, "event_not_handled")),
    }
}

fn count(state: &SharedState, outcome: DeliveryOutcome, reason: &str) {
    state
        .metrics
        .webhooks
        .get_or_create(&StatusLabels {
            status: outcome.as_str().to_owned(),
        })
        .inc();
    if outcome == DeliveryOutcome::Rejected {
        state
            .metrics
            .webhook_rejections
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// A delivery refused before any decision: counted, sampled into the audit (never waiting for
/// a database connection), and answered with `error` whatever became of the sample.
async fn refuse(state: &SharedState, delivery: WebhookDelivery, error: ApiError) -> ApiError {
    count(state, delivery.outcome, &delivery.reason);
    match state
        .ledger
        .sample_rejected_webhook(&delivery, Timestamp::now())
        .await
    {
        Ok(Sampled::Recorded { suppressed, .. }) => tracing::warn!(
            client = %delivery.remote_addr,
            reason = %delivery.reason,
            suppressed,
            "webhook refused (sampled; `suppressed` more of this reason were refused since the last sample)"
        ),
        Ok(Sampled::Suppressed | Sampled::PoolBusy) => {}
        Err(error) => tracing::debug!(%error, "sampling a refused webhook failed"),
    }
    error
}

async fn audit(state: &SharedState, delivery: WebhookDelivery) -> Result<(), ApiError> {
    count(state, delivery.outcome, &delivery.reason);
    state
        .ledger
        .record_webhook_delivery(&delivery, Timestamp::now())
        .await
        .map(|_| ())
        .map_err(|error| {
            tracing::error!(%error, "auditing a webhook delivery failed");
            ApiError::unavailable("the database", &error)
        })
}

/// A YooKassa notification (`payment.succeeded`, `payment.canceled`, `refund.succeeded`).
#[utoipa::path(post, path = "/api/v1/webhooks/yookassa", tag = "webhooks",
    request_body(content = serde_json::Value, description = "YooKassa notification"),
    responses((status = 200, description = "recorded"),
        (status = 400, description = "not a notification, or its object id is not a YooKassa id", body = crate::error::ErrorBody),
        (status = 403, description = "not from YooKassa's addresses", body = crate::error::ErrorBody),
        (status = 503, description = "not recorded; YooKassa retries", body = crate::error::ErrorBody)))]
pub async fn yookassa(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let forwarded: Vec<&str> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = client_addr(peer.ip(), &forwarded, &state.settings.trusted_proxies);
    let delivery =
        |event: Option<&str>, object: Option<&str>, outcome, reason: &str| WebhookDelivery {
            remote_addr: client.to_string(),
            event: event.map(str::to_owned),
            object_id: object.map(str::to_owned),
            outcome,
            reason: reason.to_owned(),
        };
    if !allowed(client, &state.settings.yookassa_allowed) {
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "notifications are accepted from YooKassa only",
        );
        let refused = delivery(None, None, DeliveryOutcome::Rejected, "forbidden_address");
        return Err(refuse(&state, refused, error).await);
    }
    let body = match Bytes::from_request(request, &state).await {
        Ok(body) => body,
        Err(rejection) => {
            let refused = delivery(None, None, DeliveryOutcome::Rejected, "bad_body");
            return Err(refuse(&state, refused, rejection.into()).await);
        }
    };
    let notification: Notification = match serde_json::from_slice(&body) {
        Ok(notification) => notification,
        Err(_) => {
            let error = ApiError::bad_request("malformed_body", "not a YooKassa notification");
            let refused = delivery(None, None, DeliveryOutcome::Rejected, "malformed_body");
            return Err(refuse(&state, refused, error).await);
        }
    };
    let event = notification.event.as_str();
    let object_id = notification.object.id.as_str();
    if !is_object_id(object_id) {
        // YooKassa could not be asked about it, and asking again will not help: 400, not 5xx.
        let error = ApiError::bad_request(
            "malformed_object_id",
            "the notification's object id is not a YooKassa id",
        );
        let refused = delivery(
            Some(event),
            None,
            DeliveryOutcome::Rejected,
            "malformed_object_id",
        );
        return Err(refuse(&state, refused, error).await);
    }
    match decide(&state, event, object_id).await {
        Ok(decision) => {
            let recording = async {
                if let Some(settle) = &decision.settle {
                    let (record, details) = settle.as_ref();
                    let settled = state
                        .ledger
                        .settle_renewal(record, details, Timestamp::now())
                        .await;
                    settled.map_err(|error| ledger_failure(&state, error))?;
                }
                audit(
                    &state,
                    delivery(
                        Some(event),
                        Some(object_id),
                        decision.outcome,
                        &decision.reason,
                    ),
                )
                .await
            };
            // The money is recorded in the ledger: the subscription is written at the same
            // time as the rest; a failed write is repaired by the drift loop.
            let syncing = async {
                if let Some(user_id) = decision.sync_user {
                    let result = state.kube.sync.sync_user(&state.ledger, user_id).await;
                    state.metrics.sync(result.is_ok());
                    if let Err(error) = result {
                        tracing::warn!(%error, user = user_id, "VpnSubscription write failed; the drift loop will retry");
                    }
                }
            };
            let (recorded, ()) = tokio::join!(recording, syncing);
            recorded?;
            Ok((
                StatusCode::OK,
                Json(json!({"outcome": decision.outcome.as_str(), "reason": decision.reason})),
            ))
        }
        Err(Retry::Provider(error)) => {
            tracing::warn!(%error, "re-fetching from YooKassa failed");
            audit(
                &state,
                delivery(
                    Some(event),
                    Some(object_id),
                    DeliveryOutcome::Rejected,
                    "provider_unavailable",
                ),
            )
            .await?;
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                "YooKassa could not be asked; retry later",
            ))
        }
        Err(Retry::Ledger(error)) => Err(ledger_failure(&state, error)),
    }
}

/// A ledger failure before the delivery was recorded: counted, and answered so that YooKassa
/// retries.
fn ledger_failure(state: &SharedState, error: LedgerError) -> ApiError {
    count(state, DeliveryOutcome::Rejected, "database_unavailable");
    if error.is_unavailable() {
        ApiError::unavailable("the database", &error)
    } else {
        ApiError::internal(&error)
    }
}
