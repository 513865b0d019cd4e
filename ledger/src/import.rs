//! Customers imported from an existing WireGuard server (`wgsub-api import`): what earlier
//! imports left in the ledger, and the users with their one `import` entry (a grant whose days
//! end at the paid-until date they had), all written in one transaction.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use wgsub_crds::import::plan::{ImportEntry, LedgerUser};

use crate::entitlement::Entitlement;
use crate::txn::refold;
use crate::{Ledger, LedgerError};

/// One user to import: their Telegram id and the ledger entry giving them their paid time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedUser {
    pub telegram_id: i64,
    pub entry: ImportEntry,
}

impl Ledger {
    /// The users among `ids` that the ledger holds, each with the `paidUntil` their import
    /// entry gives (`None` for a user who was not imported).
    pub async fn import_states(
        &self,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, LedgerUser>, LedgerError> {
        let rows = sqlx::query_as::<_, (i64, Option<jiff_sqlx::Timestamp>, Option<i32>)>(
            "SELECT u.telegram_id, g.granted_at, g.days FROM users u \
             LEFT JOIN grants g ON g.user_id = u.telegram_id AND g.kind = 'import' \
             WHERE u.telegram_id = ANY($1)",
        )
        .persistent(self.persistent)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut users = BTreeMap::new();
        for (telegram_id, granted_at, days) in rows {
            let at = granted_at.map(jiff_sqlx::Timestamp::to_jiff);
            let imported_until = match (at, days) {
                (Some(at), Some(days)) => {
                    Some(at + SignedDuration::from_hours(24 * i64::from(days)))
                }
                _ => None,
            };
            users.insert(telegram_id, LedgerUser { imported_until });
        }
        Ok(users)
    }

    /// Writes every user and their import entry in one transaction, re-folding each. A user
    /// the ledger already holds refuses the whole batch (nothing is written).
    pub async fn import_users(
        &self,
        users: &[ImportedUser],
        now: Timestamp,
    ) -> Result<Vec<(i64, Entitlement)>, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let mut folded = Vec::with_capacity(users.len());
        for user in users {
            let inserted = sqlx::query(
                "INSERT INTO users (telegram_id, created_at, last_seen_at) VALUES ($1, $2, $2) \
                 ON CONFLICT (telegram_id) DO NOTHING RETURNING telegram_id",
            )
            .persistent(self.persistent)
            .bind(user.telegram_id)
            .bind(now.to_sqlx())
            .fetch_optional(&mut *tx)
            .await?;
            if inserted.is_none() {
                tx.rollback().await?;
                return Err(LedgerError::Invalid(format!(
                    "user {} is already in the ledger",
                    user.telegram_id
                )));
            }
            sqlx::query(
                "INSERT INTO grants (user_id, kind, days, granted_at, reason) \
                 VALUES ($1, 'import', $2, $3, 'imported from an existing WireGuard server')",
            )
            .persistent(self.persistent)
            .bind(user.telegram_id)
            .bind(user.entry.days)
            .bind(user.entry.at.to_sqlx())
            .execute(&mut *tx)
            .await?;
            let (entitlement, _) = refold(&mut tx, user.telegram_id, self.persistent).await?;
            folded.push((user.telegram_id, entitlement));
        }
        tx.commit().await?;
        Ok(folded)
    }
}
