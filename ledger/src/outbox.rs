//! The notification outbox: rows written in the same transaction as the ledger event they
//! report, which the bot sends and marks sent.

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::session::RunOn;
use crate::{Ledger, LedgerError};

/// What happened, as the user should be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotificationEvent {
    /// A payment was applied; the subscription now runs until `paid_until`.
    PaymentSucceeded {
        payment_id: Uuid,
        plan: String,
        amount_minor: i64,
        currency: String,
        paid_until: Option<Timestamp>,
    },
    /// A refund was recorded; the subscription now runs until `paid_until`.
    RefundRecorded {
        payment_id: Uuid,
        amount_minor: i64,
        currency: String,
        paid_until: Option<Timestamp>,
    },
    /// A referred user's first payment earned the referrer `days` days.
    ReferralRewarded {
        days: i32,
        paid_until: Option<Timestamp>,
    },
    /// That payment was refunded: the reward's `days` were taken back.
    ReferralRevoked {
        days: i32,
        paid_until: Option<Timestamp>,
    },
    /// The automatic renewal of `plan` was not charged (`reason`: YooKassa's cancellation
    /// reason, or `plan_unavailable`, `contact_required`, …): no time added.
    RenewalFailed {
        plan: String,
        reason: String,
        paid_until: Option<Timestamp>,
    },
}

impl NotificationEvent {
    /// The `kind` stored beside the payload.
    pub fn kind(&self) -> &'static str {
        match self {
            NotificationEvent::PaymentSucceeded { .. } => "payment_succeeded",
            NotificationEvent::RefundRecorded { .. } => "refund_recorded",
            NotificationEvent::ReferralRewarded { .. } => "referral_rewarded",
            NotificationEvent::ReferralRevoked { .. } => "referral_revoked",
            NotificationEvent::RenewalFailed { .. } => "renewal_failed",
        }
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub user_id: i64,
    pub created_at: Timestamp,
    pub event: NotificationEvent,
}

pub(crate) async fn enqueue(
    conn: &mut PgConnection,
    persistent: bool,
    user_id: i64,
    event: &NotificationEvent,
    now: Timestamp,
) -> Result<(), LedgerError> {
    let payload = serde_json::to_value(event)
        .map_err(|e| LedgerError::Corrupt(format!("notification payload: {e}")))?;
    sqlx::query(
        "INSERT INTO notifications (user_id, kind, payload, created_at) VALUES ($1, $2, $3, $4)",
    )
    .persistent(persistent)
    .bind(user_id)
    .bind(event.kind())
    .bind(payload)
    .bind(now.to_sqlx())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Ledger {
    /// Notifications not yet marked sent, oldest first.
    pub async fn unsent_notifications(&self, limit: i64) -> Result<Vec<Notification>, LedgerError> {
        let rows = sqlx::query(
            "SELECT id, user_id, created_at, payload FROM notifications \
             WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all_on(self)
        .await?;
        rows.iter()
            .map(|row| {
                let payload: serde_json::Value = row.try_get("payload")?;
                Ok(Notification {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    created_at: row
                        .try_get::<jiff_sqlx::Timestamp, _>("created_at")?
                        .to_jiff(),
                    event: serde_json::from_value(payload)
                        .map_err(|e| LedgerError::Corrupt(format!("notification payload: {e}")))?,
                })
            })
            .collect()
    }

    /// Marks a notification sent; false when it already was (or does not exist).
    pub async fn mark_notification_sent(
        &self,
        id: i64,
        now: Timestamp,
    ) -> Result<bool, LedgerError> {
        let done =
            sqlx::query("UPDATE notifications SET sent_at = $2 WHERE id = $1 AND sent_at IS NULL")
                .bind(id)
                .bind(now.to_sqlx())
                .execute_on(self)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
