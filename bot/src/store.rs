//! The bot's own queries: reminders sent (claimed before sending so restarts and replicas never
//! send twice), referrals, the admin command log, broadcasts and their recipients. The bot's
//! tables come from its migration; `users` is read as the ledger keeps it.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use sqlx::FromRow;
use wgsub_ledger::session::RunOn;
use wgsub_ledger::{Ledger, LedgerError};

use crate::admin::Audience;
use crate::broadcast::Tally;
use crate::reminders::{PaidPeriod, ReminderKey, ReminderKind};

/// A reminder candidate's row as stored.
#[derive(FromRow)]
struct CandidateRow {
    telegram_id: i64,
    paid_until: jiff_sqlx::Timestamp,
    period_began_at: Option<jiff_sqlx::Timestamp>,
    suspended: bool,
    language_code: Option<String>,
}

/// A recorded reminder's row as stored.
#[derive(FromRow)]
struct SentRow {
    user_id: i64,
    paid_until: jiff_sqlx::Timestamp,
    kind: String,
}

/// A paid period that may have a reminder due, with the user's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderCandidate {
    pub period: PaidPeriod,
    pub language_code: Option<String>,
}

/// Users whose `paidUntil` lies in `(from, to]`, with when their period began: the latest
/// ledger change that can move `paidUntil` (a grant or its revocation, an applied YooKassa or
/// Stars payment, a refund of either).
pub async fn reminder_candidates(
    ledger: &Ledger,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<ReminderCandidate>, LedgerError> {
    let rows = sqlx::query(
        "SELECT u.telegram_id, u.paid_until, u.suspended, u.language_code, GREATEST( \
           (SELECT max(GREATEST(g.granted_at, g.revoked_at)) FROM grants g \
              WHERE g.user_id = u.telegram_id), \
           (SELECT max(a.applied_at) FROM payment_applications a \
              JOIN payments p ON p.id = a.payment_id WHERE p.user_id = u.telegram_id), \
           (SELECT max(r.refunded_at) FROM refunds r \
              JOIN payments p ON p.id = r.payment_id WHERE p.user_id = u.telegram_id), \
           (SELECT max(s.paid_at) FROM star_payments s WHERE s.user_id = u.telegram_id), \
           (SELECT max(r.refunded_at) FROM star_refunds r \
              JOIN star_payments s ON s.id = r.payment_id WHERE s.user_id = u.telegram_id) \
         ) AS period_began_at \
         FROM users u WHERE u.paid_until > $1 AND u.paid_until <= $2 ORDER BY u.telegram_id",
    )
    .bind(from.to_sqlx())
    .bind(to.to_sqlx())
    .fetch_all_on(ledger)
    .await?;
    rows.iter()
        .map(|row| {
            let row = CandidateRow::from_row(row)?;
            Ok(ReminderCandidate {
                period: PaidPeriod {
                    user_id: row.telegram_id,
                    paid_until: row.paid_until.to_jiff(),
                    began_at: row.period_began_at.map(|at| at.to_jiff()),
                    suspended: row.suspended,
                },
                language_code: row.language_code,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(LedgerError::from)
}

/// The reminders recorded for these users (claimed, delivered or failed).
pub async fn sent_reminders(
    ledger: &Ledger,
    user_ids: &[i64],
) -> Result<BTreeSet<ReminderKey>, LedgerError> {
    let rows = sqlx::query(
        "SELECT user_id, paid_until, kind FROM bot_reminders_sent WHERE user_id = ANY($1)",
    )
    .bind(user_ids)
    .fetch_all_on(ledger)
    .await?;
    let mut sent = BTreeSet::new();
    for row in &rows {
        let row = SentRow::from_row(row)?;
        let kind = ReminderKind::parse(&row.kind)
            .ok_or_else(|| LedgerError::Corrupt(format!("reminder kind {:?}", row.kind)))?;
        sent.insert(ReminderKey {
            user_id: row.user_id,
            paid_until: row.paid_until.to_jiff(),
            kind,
        });
    }
    Ok(sent)
}

/// Records the reminder as being sent; false when someone already did (it must not be sent).
pub async fn claim_reminder(
    ledger: &Ledger,
    key: &ReminderKey,
    now: Timestamp,
) -> Result<bool, LedgerError> {
    let inserted = sqlx::query(
        "INSERT INTO bot_reminders_sent (user_id, paid_until, kind, claimed_at, outcome) \
         VALUES ($1, $2, $3, $4, 'claimed') ON CONFLICT DO NOTHING",
    )
    .bind(key.user_id)
    .bind(key.paid_until.to_sqlx())
    .bind(key.kind.as_str())
    .bind(now.to_sqlx())
    .execute_on(ledger)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Records how a claimed reminder went: delivered, or failed for good (blocked bot).
pub async fn finish_reminder(
    ledger: &Ledger,
    key: &ReminderKey,
    delivered: bool,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE bot_reminders_sent SET outcome = $4 \
         WHERE user_id = $1 AND paid_until = $2 AND kind = $3",
    )
    .bind(key.user_id)
    .bind(key.paid_until.to_sqlx())
    .bind(key.kind.as_str())
    .bind(if delivered { "delivered" } else { "failed" })
    .execute_on(ledger)
    .await?;
    Ok(())
}

/// Gives a claim back after a passing failure, so the next run tries again.
pub async fn release_reminder(ledger: &Ledger, key: &ReminderKey) -> Result<(), LedgerError> {
    sqlx::query(
        "DELETE FROM bot_reminders_sent \
         WHERE user_id = $1 AND paid_until = $2 AND kind = $3 AND outcome = 'claimed'",
    )
    .bind(key.user_id)
    .bind(key.paid_until.to_sqlx())
    .bind(key.kind.as_str())
    .execute_on(ledger)
    .await?;
    Ok(())
}

/// Records the `/start` referral of a user, once (the first one counts).
pub async fn record_referral(
    ledger: &Ledger,
    user_id: i64,
    payload: &str,
    referrer_id: Option<i64>,
    now: Timestamp,
) -> Result<bool, LedgerError> {
    let inserted = sqlx::query(
        "INSERT INTO bot_referrals (user_id, payload, referrer_id, recorded_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(payload)
    .bind(referrer_id)
    .bind(now.to_sqlx())
    .execute_on(ledger)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The referrer recorded for a user.
pub async fn referral_of(ledger: &Ledger, user_id: i64) -> Result<Option<i64>, LedgerError> {
    let row = sqlx::query("SELECT referrer_id FROM bot_referrals WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional_on(ledger)
        .await?;
    Ok(match row {
        Some(row) => <(Option<i64>,)>::from_row(&row)?.0,
        None => None,
    })
}

/// One line of the admin command log.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AdminLogEntry {
    pub admin_id: i64,
    pub command: String,
    pub arguments: String,
    pub outcome: String,
}

/// Appends an administrator's command and its outcome to the log.
pub async fn log_admin(
    ledger: &Ledger,
    entry: &AdminLogEntry,
    now: Timestamp,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO bot_admin_log (at, admin_id, command, arguments, outcome) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(now.to_sqlx())
    .bind(entry.admin_id)
    .bind(&entry.command)
    .bind(&entry.arguments)
    .bind(&entry.outcome)
    .execute_on(ledger)
    .await?;
    Ok(())
}

/// The admin log, oldest first.
pub async fn admin_log(ledger: &Ledger) -> Result<Vec<AdminLogEntry>, LedgerError> {
    let rows =
        sqlx::query("SELECT admin_id, command, arguments, outcome FROM bot_admin_log ORDER BY id")
            .fetch_all_on(ledger)
            .await?;
    rows.iter()
        .map(AdminLogEntry::from_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(LedgerError::from)
}

/// The chats a broadcast goes to, in id order.
pub async fn recipients(
    ledger: &Ledger,
    audience: Audience,
    now: Timestamp,
) -> Result<Vec<i64>, LedgerError> {
    let query = match audience {
        Audience::All => sqlx::query("SELECT telegram_id FROM users ORDER BY telegram_id"),
        Audience::Active => sqlx::query(
            "SELECT telegram_id FROM users WHERE NOT suspended AND paid_until > $1 \
             ORDER BY telegram_id",
        )
        .bind(now.to_sqlx()),
    };
    let rows = query.fetch_all_on(ledger).await?;
    rows.iter()
        .map(|row| <(i64,)>::from_row(row).map(|(id,)| id))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(LedgerError::from)
}

/// Records a broadcast as started; returns its id.
pub async fn start_broadcast(
    ledger: &Ledger,
    admin_id: i64,
    audience: Audience,
    text: &str,
    recipients: u32,
    now: Timestamp,
) -> Result<i64, LedgerError> {
    let row = sqlx::query(
        "INSERT INTO bot_broadcasts (admin_id, audience, text, started_at, recipients) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(admin_id)
    .bind(audience.as_str())
    .bind(text)
    .bind(now.to_sqlx())
    .bind(i32::try_from(recipients).unwrap_or(i32::MAX))
    .fetch_one_on(ledger)
    .await?;
    Ok(<(i64,)>::from_row(&row)?.0)
}

/// Records how a broadcast ended.
pub async fn finish_broadcast(
    ledger: &Ledger,
    id: i64,
    tally: Tally,
    now: Timestamp,
) -> Result<(), LedgerError> {
    sqlx::query(
        "UPDATE bot_broadcasts SET finished_at = $2, delivered = $3, failed = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(now.to_sqlx())
    .bind(i32::try_from(tally.delivered).unwrap_or(i32::MAX))
    .bind(i32::try_from(tally.failed).unwrap_or(i32::MAX))
    .execute_on(ledger)
    .await?;
    Ok(())
}

/// A finished or running broadcast as recorded.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct BroadcastRecord {
    pub admin_id: i64,
    pub audience: String,
    pub text: String,
    pub recipients: i32,
    pub delivered: i32,
    pub failed: i32,
    pub finished: bool,
}

/// Every broadcast, oldest first.
pub async fn broadcasts(ledger: &Ledger) -> Result<Vec<BroadcastRecord>, LedgerError> {
    let rows = sqlx::query(
        "SELECT admin_id, audience, text, recipients, delivered, failed, \
                finished_at IS NOT NULL AS finished FROM bot_broadcasts ORDER BY id",
    )
    .fetch_all_on(ledger)
    .await?;
    rows.iter()
        .map(BroadcastRecord::from_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(LedgerError::from)
}
