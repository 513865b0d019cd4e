//! Free time and suspension: the once-per-user trial, administrators' grants and the suspend
//! switch. Administrators' actions are written to `admin_actions` in the same transaction.

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use serde_json::json;
use sqlx::postgres::PgConnection;

use crate::audit::AdminAction;
use crate::entitlement::Entitlement;
use crate::txn::{bump, lock_user, refold};
use crate::{Ledger, LedgerError};

/// Time an administrator gives a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminGrant {
    pub user_id: i64,
    /// Days to add (1–3660).
    pub days: u32,
    /// The administrator's Telegram id.
    pub admin_id: i64,
    /// Why (shown in the audit trail).
    pub reason: String,
}

fn checked_days(days: u32) -> Result<i32, LedgerError> {
    if (1..=3660).contains(&days) {
        Ok(days as i32)
    } else {
        Err(LedgerError::Invalid(format!(
            "days must be 1–3660, got {days}"
        )))
    }
}

pub(crate) async fn record_admin_action(
    conn: &mut PgConnection,
    persistent: bool,
    action: &AdminAction,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO admin_actions (at, admin_id, user_id, action, reason, details) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .persistent(persistent)
    .bind(action.at.to_sqlx())
    .bind(action.admin_id)
    .bind(action.user_id)
    .bind(&action.action)
    .bind(&action.reason)
    .bind(&action.details)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Ledger {
    /// Grants the trial of `days` days starting `now`, once per user ever (a unique index, so
    /// concurrent calls grant it once). `None` when `days` is 0, the trial was granted before or
    /// the user was imported (a customer of the old server is not new).
    pub async fn grant_trial(
        &self,
        user_id: i64,
        days: u32,
        now: Timestamp,
    ) -> Result<Option<Entitlement>, LedgerError> {
        if days == 0 {
            return Ok(None);
        }
        let days = checked_days(days)?;
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, user_id, self.persistent).await?;
        let inserted = sqlx::query(
            "INSERT INTO grants (user_id, kind, days, granted_at) SELECT $1, 'trial', $2, $3 \
             WHERE NOT EXISTS (SELECT 1 FROM grants WHERE user_id = $1 AND kind = 'import') \
             ON CONFLICT (user_id) WHERE kind = 'trial' DO NOTHING RETURNING id",
        )
        .persistent(self.persistent)
        .bind(user_id)
        .bind(days)
        .bind(now.to_sqlx())
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        let (folded, _) = refold(&mut tx, user_id, self.persistent).await?;
        tx.commit().await?;
        Ok(Some(folded))
    }

    /// Adds an administrator's grant starting `now` and audits it.
    pub async fn admin_grant(
        &self,
        grant: &AdminGrant,
        now: Timestamp,
    ) -> Result<Entitlement, LedgerError> {
        let days = checked_days(grant.days)?;
        let reason = grant.reason.trim();
        if reason.is_empty() {
            return Err(LedgerError::Invalid("a grant needs a reason".into()));
        }
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, grant.user_id, self.persistent).await?;
        sqlx::query(
            "INSERT INTO grants (user_id, kind, days, granted_at, granted_by, reason) \
             VALUES ($1, 'admin', $2, $3, $4, $5)",
        )
        .persistent(self.persistent)
        .bind(grant.user_id)
        .bind(days)
        .bind(now.to_sqlx())
        .bind(grant.admin_id)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        let action = AdminAction {
            at: now,
            admin_id: grant.admin_id,
            user_id: grant.user_id,
            action: "grant".into(),
            reason: reason.into(),
            details: json!({"days": days}),
        };
        record_admin_action(&mut tx, self.persistent, &action).await?;
        let (folded, _) = refold(&mut tx, grant.user_id, self.persistent).await?;
        tx.commit().await?;
        Ok(folded)
    }

    /// Suspends or unsuspends the user and audits it; false when it already was so.
    pub async fn set_suspended(
        &self,
        user_id: i64,
        suspended: bool,
        admin_id: i64,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, LedgerError> {
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, user_id, self.persistent).await?;
        let changed = sqlx::query(
            "UPDATE users SET suspended = $2 WHERE telegram_id = $1 AND suspended <> $2",
        )
        .persistent(self.persistent)
        .bind(user_id)
        .bind(suspended)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            tx.rollback().await?;
            return Ok(false);
        }
        let action = AdminAction {
            at: now,
            admin_id,
            user_id,
            action: if suspended { "suspend" } else { "unsuspend" }.into(),
            reason: reason.trim().into(),
            details: json!({}),
        };
        record_admin_action(&mut tx, self.persistent, &action).await?;
        bump(&mut tx, user_id, None, self.persistent).await?;
        tx.commit().await?;
        Ok(true)
    }
}
