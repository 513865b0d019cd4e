//! Users: who a Telegram user is to the ledger (names, language, receipt contact, suspension,
//! the cached fold), created or refreshed from Telegram's user object.

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use sqlx::postgres::PgRow;

use crate::entitlement::Entitlement;
use crate::session::RunOn;
use crate::yookassa::ReceiptCustomer;
use crate::{Ledger, LedgerError};

/// A Telegram user as Telegram describes them (from a bot update or Mini App initData).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelegramUser {
    pub id: i64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub language_code: Option<String>,
}

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub telegram_id: i64,
    pub username: Option<String>,
    pub first_name: String,
    pub last_name: Option<String>,
    pub language_code: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub suspended: bool,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// The ledger fold as of the latest ledger change.
    pub entitlement: Entitlement,
    /// Bumped by every ledger change.
    pub ledger_version: i64,
    /// The `ledger_version` last written to the `VpnSubscription`.
    pub synced_version: i64,
}

impl User {
    /// The contact a receipt goes to: the e-mail if known, else the phone.
    pub fn receipt_customer(&self) -> Option<ReceiptCustomer> {
        self.email
            .clone()
            .map(ReceiptCustomer::Email)
            .or_else(|| self.phone.clone().map(ReceiptCustomer::Phone))
    }
}

pub(crate) const USER_COLUMNS: &str = "telegram_id, username, first_name, last_name, \
    language_code, email, phone, suspended, created_at, last_seen_at, paid_until, plan, \
    max_devices, traffic_bytes, traffic_period_days, ledger_version, synced_version";

/// A `users` row as stored.
#[derive(FromRow)]
struct UserRow {
    telegram_id: i64,
    username: Option<String>,
    first_name: String,
    last_name: Option<String>,
    language_code: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    suspended: bool,
    created_at: jiff_sqlx::Timestamp,
    last_seen_at: jiff_sqlx::Timestamp,
    paid_until: Option<jiff_sqlx::Timestamp>,
    plan: Option<String>,
    max_devices: i32,
    traffic_bytes: Option<i64>,
    traffic_period_days: Option<i32>,
    ledger_version: i64,
    synced_version: i64,
}

pub(crate) fn user_from_row(row: &PgRow) -> Result<User, sqlx::Error> {
    let row = UserRow::from_row(row)?;
    Ok(User {
        telegram_id: row.telegram_id,
        username: row.username,
        first_name: row.first_name,
        last_name: row.last_name,
        language_code: row.language_code,
        email: row.email,
        phone: row.phone,
        suspended: row.suspended,
        created_at: row.created_at.to_jiff(),
        last_seen_at: row.last_seen_at.to_jiff(),
        entitlement: Entitlement {
            paid_until: row.paid_until.map(jiff_sqlx::Timestamp::to_jiff),
            plan: row.plan,
            max_devices: row.max_devices,
            traffic_quota: crate::txn::traffic_quota(row.traffic_bytes, row.traffic_period_days),
        },
        ledger_version: row.ledger_version,
        synced_version: row.synced_version,
    })
}

fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// How stale the stored last-seen time may be: a visit within this much of it, with names and
/// language unchanged, is answered from a read alone (no write, so no WAL flush on the Mini
/// App's hot path). Last-seen is therefore kept to the minute.
pub const LAST_SEEN_RESOLUTION: SignedDuration = SignedDuration::from_secs(60);

/// Whether a visit by `seen` at `now` must write the stored user: a name, the username or the
/// language differs from what would be stored, or last-seen is older than
/// [`LAST_SEEN_RESOLUTION`].
pub fn visit_needs_write(stored: &User, seen: &TelegramUser, now: Timestamp) -> bool {
    stored.username != seen.username.as_deref().map(|u| clip(u, 64))
        || stored.first_name != clip(&seen.first_name, 128)
        || stored.last_name != seen.last_name.as_deref().map(|n| clip(n, 128))
        || stored.language_code != seen.language_code.as_deref().map(|c| clip(c, 16))
        || now.duration_since(stored.last_seen_at) >= LAST_SEEN_RESOLUTION
}

impl Ledger {
    /// Inserts the user or refreshes their names and language; touches last-seen either way (to
    /// [`LAST_SEEN_RESOLUTION`]: an unchanged user seen within it is only read).
    pub async fn upsert_user(
        &self,
        user: &TelegramUser,
        now: Timestamp,
    ) -> Result<User, LedgerError> {
        if user.id <= 0 {
            return Err(LedgerError::Invalid(format!(
                "telegram user id must be positive, got {}",
                user.id
            )));
        }
        if let Some(stored) = self.user(user.id).await?
            && !visit_needs_write(&stored, user, now)
        {
            return Ok(stored);
        }
        let sql = format!(
            "INSERT INTO users (telegram_id, username, first_name, last_name, language_code, \
                                created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (telegram_id) DO UPDATE SET username = EXCLUDED.username, \
                first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, \
                language_code = EXCLUDED.language_code, \
                last_seen_at = GREATEST(users.last_seen_at, EXCLUDED.last_seen_at) \
             RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.id)
            .bind(user.username.as_deref().map(|u| clip(u, 64)))
            .bind(clip(&user.first_name, 128))
            .bind(user.last_name.as_deref().map(|n| clip(n, 128)))
            .bind(user.language_code.as_deref().map(|c| clip(c, 16)))
            .bind(now.to_sqlx())
            .fetch_one_on(self)
            .await?;
        Ok(user_from_row(&row)?)
    }

    /// Records that the user was seen at `now`; false when the user is unknown.
    pub async fn touch_last_seen(&self, user_id: i64, now: Timestamp) -> Result<bool, LedgerError> {
        let done = sqlx::query(
            "UPDATE users SET last_seen_at = GREATEST(last_seen_at, $2) WHERE telegram_id = $1",
        )
        .bind(user_id)
        .bind(now.to_sqlx())
        .execute_on(self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The user with this Telegram id.
    pub async fn user(&self, user_id: i64) -> Result<Option<User>, LedgerError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE telegram_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_optional_on(self)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The user with this username (with or without `@`, any case).
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, LedgerError> {
        let name = username.trim().trim_start_matches('@');
        if name.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1) \
             ORDER BY last_seen_at DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional_on(self)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Stores where 54-FZ receipts go (an e-mail replaces the phone and vice versa); false when
    /// the user is unknown.
    pub async fn set_receipt_contact(
        &self,
        user_id: i64,
        contact: &ReceiptCustomer,
    ) -> Result<bool, LedgerError> {
        let (email, phone) = match contact {
            ReceiptCustomer::Email(email) => (Some(email.as_str()), None),
            ReceiptCustomer::Phone(phone) => (None, Some(phone.as_str())),
        };
        let done = sqlx::query("UPDATE users SET email = $2, phone = $3 WHERE telegram_id = $1")
            .bind(user_id)
            .bind(email)
            .bind(phone)
            .execute_on(self)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Users whose ledger changed since their subscription was last written, oldest id first.
    pub async fn unsynced_users(&self, limit: i64) -> Result<Vec<User>, LedgerError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE ledger_version <> synced_version \
             ORDER BY telegram_id LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all_on(self)
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// One page of all users with an id above `after`, in id order.
    pub async fn users_after(&self, after: i64, limit: i64) -> Result<Vec<User>, LedgerError> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE telegram_id > $1 \
             ORDER BY telegram_id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(limit)
            .fetch_all_on(self)
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// Records that `version` of the user's ledger is now in their `VpnSubscription` (never
    /// moves backwards).
    pub async fn mark_synced(&self, user_id: i64, version: i64) -> Result<(), LedgerError> {
        sqlx::query(
            "UPDATE users SET synced_version = $2 \
             WHERE telegram_id = $1 AND synced_version < $2",
        )
        .bind(user_id)
        .bind(version)
        .execute_on(self)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn seen() -> TelegramUser {
        TelegramUser {
            id: 7,
            username: Some("anna".into()),
            first_name: "Anna".into(),
            last_name: Some("K".into()),
            language_code: Some("ru".into()),
        }
    }

    fn stored(last_seen: &str) -> User {
        let seen = seen();
        User {
            telegram_id: 7,
            username: seen.username,
            first_name: seen.first_name,
            last_name: seen.last_name,
            language_code: seen.language_code,
            email: None,
            phone: None,
            suspended: false,
            created_at: t("2026-01-01T00:00:00Z"),
            last_seen_at: t(last_seen),
            entitlement: Entitlement::default(),
            ledger_version: 0,
            synced_version: 0,
        }
    }

    #[test]
    fn an_unchanged_user_seen_within_the_resolution_needs_no_write() {
        let stored = stored("2026-01-01T12:00:00Z");
        assert!(!visit_needs_write(
            &stored,
            &seen(),
            t("2026-01-01T12:00:00Z")
        ));
        assert!(!visit_needs_write(
            &stored,
            &seen(),
            t("2026-01-01T12:00:59Z")
        ));
        // A clock behind the stored time writes nothing either (last-seen never goes back).
        assert!(!visit_needs_write(
            &stored,
            &seen(),
            t("2026-01-01T11:59:00Z")
        ));
        assert!(visit_needs_write(
            &stored,
            &seen(),
            t("2026-01-01T12:01:00Z")
        ));
    }

    #[test]
    fn any_changed_name_or_language_needs_a_write() {
        let stored = stored("2026-01-01T12:00:00Z");
        let now = t("2026-01-01T12:00:01Z");
        let changes: [fn(&mut TelegramUser); 6] = [
            |u| u.username = Some("anna2".into()),
            |u| u.username = None,
            |u| u.first_name = "Anya".into(),
            |u| u.last_name = None,
            |u| u.language_code = Some("en".into()),
            |u| u.language_code = None,
        ];
        for change in changes {
            let mut visitor = seen();
            change(&mut visitor);
            assert!(visit_needs_write(&stored, &visitor, now), "{visitor:?}");
        }
    }

    #[test]
    fn names_are_compared_as_they_are_stored_clipped() {
        let mut visitor = seen();
        visitor.first_name = "x".repeat(200);
        let mut stored = stored("2026-01-01T12:00:00Z");
        stored.first_name = "x".repeat(128);
        assert!(!visit_needs_write(
            &stored,
            &visitor,
            t("2026-01-01T12:00:01Z")
        ));
    }
}
