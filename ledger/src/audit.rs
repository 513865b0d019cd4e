//! The audit trail: every YooKassa webhook delivery (what came, from where, what was done and
//! why) and every administrator action.

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::session::RunOn;
use crate::{Ledger, LedgerError};

/// What became of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// It changed the ledger (a payment applied, a refund recorded, a payment canceled).
    Applied,
    /// It had already been applied.
    Duplicate,
    /// Recorded without a ledger change (e.g. YooKassa says the payment is still pending).
    Recorded,
    /// Nothing to do (an event wgsub does not act on).
    Ignored,
    /// Refused (wrong sender, bad body, unknown or mismatching payment).
    Rejected,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Applied => "applied",
            DeliveryOutcome::Duplicate => "duplicate",
            DeliveryOutcome::Recorded => "recorded",
            DeliveryOutcome::Ignored => "ignored",
            DeliveryOutcome::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            DeliveryOutcome::Applied,
            DeliveryOutcome::Duplicate,
            DeliveryOutcome::Recorded,
            DeliveryOutcome::Ignored,
            DeliveryOutcome::Rejected,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == text)
    }
}

/// One webhook delivery as audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The client address the decision was made on.
    pub remote_addr: String,
    /// The notification's `event` (`payment.succeeded`, …) when it parsed.
    pub event: Option<String>,
    /// The YooKassa object id when it parsed.
    pub object_id: Option<String>,
    pub outcome: DeliveryOutcome,
    /// A stable reason label (`applied`, `forbidden_address`, `amount_mismatch`, …).
    pub reason: String,
}

/// One administrator action.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminAction {
    pub at: Timestamp,
    pub admin_id: i64,
    pub user_id: i64,
    pub action: String,
    pub reason: String,
    pub details: serde_json::Value,
}

impl Ledger {
    /// Audits one webhook delivery; returns its id.
    pub async fn record_webhook_delivery(
        &self,
        delivery: &WebhookDelivery,
        now: Timestamp,
    ) -> Result<i64, LedgerError> {
        let row = sqlx::query(
            "INSERT INTO webhook_deliveries (received_at, remote_addr, event, object_id, outcome, reason) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(now.to_sqlx())
        .bind(&delivery.remote_addr)
        .bind(delivery.event.as_deref().map(|e| e.chars().take(64).collect::<String>()))
        .bind(delivery.object_id.as_deref().map(|e| e.chars().take(64).collect::<String>()))
        .bind(delivery.outcome.as_str())
        .bind(&delivery.reason)
        .fetch_one_on(self)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// The latest webhook deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        limit: i64,
    ) -> Result<Vec<(Timestamp, WebhookDelivery)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT received_at, remote_addr, event, object_id, outcome, reason \
             FROM webhook_deliveries ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all_on(self)
        .await?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome")?;
                Ok((
                    row.try_get::<jiff_sqlx::Timestamp, _>("received_at")?
                        .to_jiff(),
                    WebhookDelivery {
                        remote_addr: row.try_get("remote_addr")?,
                        event: row.try_get("event")?,
                        object_id: row.try_get("object_id")?,
                        outcome: DeliveryOutcome::parse(&outcome).ok_or_else(|| {
                            LedgerError::Corrupt(format!("delivery outcome {outcome:?}"))
                        })?,
                        reason: row.try_get("reason")?,
                    },
                ))
            })
            .collect()
    }

    /// The administrator actions on a user, oldest first.
    pub async fn admin_actions(&self, user_id: i64) -> Result<Vec<AdminAction>, LedgerError> {
        let rows = sqlx::query(
            "SELECT at, admin_id, user_id, action, reason, details FROM admin_actions \
             WHERE user_id = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all_on(self)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AdminAction {
                    at: row.try_get::<jiff_sqlx::Timestamp, _>("at")?.to_jiff(),
                    admin_id: row.try_get("admin_id")?,
                    user_id: row.try_get("user_id")?,
                    action: row.try_get("action")?,
                    reason: row.try_get("reason")?,
                    details: row.try_get("details")?,
                })
            })
            .collect()
    }
}
