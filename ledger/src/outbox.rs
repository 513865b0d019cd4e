//! The notification outbox: rows written in the same transaction as the ledger event they
//! report, which the bot sends and marks sent. Every bot replica drains it, so a row is claimed
//! before it is sent ([`Ledger::claim_notifications`]): only the claimer sends it, a claim left
//! by a replica that stopped mid-send is taken over once [`OUTBOX_STALE_CLAIM`] old, and a
//! passing failure gives the claim back ([`Ledger::release_notification`]).

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::session::RunOn;
use crate::{Ledger, LedgerError};

/// A claim older than this was left by a replica that stopped mid-send; the row is claimable
/// again. Longer than a drain of a full batch takes, paced.
pub const OUTBOX_STALE_CLAIM: SignedDuration = SignedDuration::from_mins(15);

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
        /// The user's first purchase (no payment applied before, by card or in Stars): the
        /// notice leads to the connection guide. Absent in older rows: not the first.
        #[serde(default)]
        first_purchase: bool,
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
    /// The automatic renewal of `plan` was asked of YooKassa but never answered and is not
    /// asked again: whether it was charged is being checked (a late answer adds the time, or
    /// says it failed).
    RenewalUnconfirmed {
        plan: String,
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
            NotificationEvent::RenewalUnconfirmed { .. } => "renewal_unconfirmed",
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

/// In the transaction applying a payment of `user_id` (their row locked, the payment already
/// recorded as applied): whether it is their only applied payment, by card or in Stars.
pub(crate) async fn is_first_purchase(
    conn: &mut PgConnection,
    persistent: bool,
    user_id: i64,
) -> Result<bool, LedgerError> {
    let (applied,): (i64,) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payment_applications a \
                 JOIN payments p ON p.id = a.payment_id WHERE p.user_id = $1) \
              + (SELECT count(*) FROM star_payments WHERE user_id = $1)",
    )
    .persistent(persistent)
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(applied <= 1)
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

/// A notification row as stored; its payload is the event.
#[derive(FromRow)]
struct NotificationRow {
    id: i64,
    user_id: i64,
    created_at: jiff_sqlx::Timestamp,
    payload: serde_json::Value,
}

fn notification_of(row: &sqlx::postgres::PgRow) -> Result<Notification, LedgerError> {
    let NotificationRow {
        id,
        user_id,
        created_at,
        payload,
    } = NotificationRow::from_row(row)?;
    Ok(Notification {
        id,
        user_id,
        created_at: created_at.to_jiff(),
        event: serde_json::from_value(payload)
            .map_err(|e| LedgerError::Corrupt(format!("notification payload: {e}")))?,
    })
}

impl Ledger {
    /// Notifications not yet marked sent (claimed or not), oldest first.
    pub async fn unsent_notifications(&self, limit: i64) -> Result<Vec<Notification>, LedgerError> {
        let rows = sqlx::query(
            "SELECT id, user_id, created_at, payload FROM notifications \
             WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all_on(self)
        .await?;
        rows.iter().map(notification_of).collect()
    }

    /// Claims up to `limit` unsent notifications for sending at `now`, oldest first: those
    /// nobody holds and those whose claim is [`OUTBOX_STALE_CLAIM`] old. Rows another drain is
    /// claiming at the same moment are skipped, so concurrent drains get disjoint rows. Each
    /// claimed row is then either marked sent ([`Ledger::mark_notification_sent`]) or given back
    /// ([`Ledger::release_notification`] with the same `now`).
    pub async fn claim_notifications(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<Notification>, LedgerError> {
        let rows = sqlx::query(
            "UPDATE notifications SET claimed_at = $1 \
             WHERE id IN ( \
                 SELECT id FROM notifications \
                 WHERE sent_at IS NULL AND (claimed_at IS NULL OR claimed_at < $2) \
                 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED \
             ) \
             RETURNING id, user_id, created_at, payload",
        )
        .bind(now.to_sqlx())
        .bind((now - OUTBOX_STALE_CLAIM).to_sqlx())
        .bind(limit)
        .fetch_all_on(self)
        .await?;
        let mut claimed = rows
            .iter()
            .map(notification_of)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|notification| notification.id);
        Ok(claimed)
    }

    /// Gives back the claim made at `claimed_at` on an unsent notification so the next drain
    /// sends it; false when it is sent or no longer held by that claim (taken over as stale).
    pub async fn release_notification(
        &self,
        id: i64,
        claimed_at: Timestamp,
    ) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "UPDATE notifications SET claimed_at = NULL \
             WHERE id = $1 AND sent_at IS NULL AND claimed_at = $2",
        )
        .bind(id)
        .bind(claimed_at.to_sqlx())
        .execute_on(self)
        .await?;
        Ok(done.rows_affected() == 1)
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
