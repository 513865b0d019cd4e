//! The steps every ledger-changing transaction shares: lock the user's row (so concurrent
//! changes to one user serialise and each re-fold sees the others), and re-fold the user's
//! entitlement into the `users` row with a new `ledger_version`.

use jiff_sqlx::ToSqlx;
use sqlx::FromRow;
use sqlx::postgres::PgConnection;
use uuid::Uuid;
use wgsub_crds::resources::TrafficQuota;

use crate::LedgerError;
use crate::entitlement::{Entitlement, GrantFact, GrantKind, PaymentFact, entitlement};

/// The quota stored in a row's `traffic_bytes` / `traffic_period_days` (both set or both NULL,
/// a constraint of each table).
pub(crate) fn traffic_quota(bytes: Option<i64>, period_days: Option<i32>) -> Option<TrafficQuota> {
    Some(TrafficQuota {
        bytes: bytes?,
        period_days: period_days?,
    })
}

/// Locks the user's row for the rest of the transaction.
pub(crate) async fn lock_user(
    conn: &mut PgConnection,
    user_id: i64,
    persistent: bool,
) -> Result<(), LedgerError> {
    sqlx::query("SELECT telegram_id FROM users WHERE telegram_id = $1 FOR UPDATE")
        .persistent(persistent)
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|_| ())
        .ok_or(LedgerError::UnknownUser(user_id))
}

/// An applied payment as the fold reads it.
#[derive(FromRow)]
struct AppliedPaymentRow {
    id: Uuid,
    succeeded_at: Option<jiff_sqlx::Timestamp>,
    days: i32,
    plan: String,
    devices: i32,
    traffic_bytes: Option<i64>,
    traffic_period_days: Option<i32>,
    amount_minor: i64,
    refunded: i64,
}

/// A grant as the fold reads it.
#[derive(FromRow)]
struct GrantRow {
    id: i64,
    kind: String,
    granted_at: jiff_sqlx::Timestamp,
    days: i32,
    revoked: bool,
}

/// Re-folds the user's applied payments and grants, stores the result and bumps
/// `ledger_version`. Returns the entitlement and the new version.
pub(crate) async fn refold(
    conn: &mut PgConnection,
    user_id: i64,
    persistent: bool,
) -> Result<(Entitlement, i64), LedgerError> {
    let payment_rows = sqlx::query_as::<_, AppliedPaymentRow>(
        "SELECT p.id, p.succeeded_at, p.days, p.plan, p.devices, p.traffic_bytes, \
                p.traffic_period_days, p.amount_minor, \
                COALESCE((SELECT SUM(r.amount_minor) FROM refunds r WHERE r.payment_id = p.id), 0)::BIGINT AS refunded \
         FROM payments p JOIN payment_applications a ON a.payment_id = p.id \
         WHERE p.user_id = $1",
    )
    .persistent(persistent)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut payments = Vec::with_capacity(payment_rows.len());
    for row in payment_rows {
        let id = row.id;
        let at = row
            .succeeded_at
            .ok_or_else(|| {
                LedgerError::Corrupt(format!("applied payment {id} has no succeeded_at"))
            })?
            .to_jiff();
        payments.push(PaymentFact {
            id,
            at,
            days: row.days,
            plan: row.plan,
            devices: row.devices,
            traffic_quota: traffic_quota(row.traffic_bytes, row.traffic_period_days),
            amount_minor: row.amount_minor,
            refunded_minor: row.refunded,
        });
    }
    payments.extend(crate::stars::payment_facts(conn, user_id, persistent).await?);
    let grant_rows =
        sqlx::query_as::<_, GrantRow>("SELECT id, kind, granted_at, days, revoked_at IS NOT NULL AS revoked FROM grants WHERE user_id = $1")
            .persistent(persistent)
            .bind(user_id)
            .fetch_all(&mut *conn)
            .await?;
    let mut grants = Vec::with_capacity(grant_rows.len());
    for row in grant_rows {
        let kind = row.kind;
        grants.push(GrantFact {
            id: row.id,
            kind: GrantKind::parse(&kind)
                .ok_or_else(|| LedgerError::Corrupt(format!("grant kind {kind:?}")))?,
            at: row.granted_at.to_jiff(),
            days: row.days,
            revoked: row.revoked,
        });
    }
    let folded = entitlement(&payments, &grants);
    let version = bump(conn, user_id, Some(&folded), persistent).await?;
    Ok((folded, version))
}

/// Bumps `ledger_version` (storing a new fold when given); returns the new version.
pub(crate) async fn bump(
    conn: &mut PgConnection,
    user_id: i64,
    folded: Option<&Entitlement>,
    persistent: bool,
) -> Result<i64, LedgerError> {
    let version = match folded {
        Some(folded) => {
            sqlx::query_scalar(
                "UPDATE users SET paid_until = $2, plan = $3, max_devices = $4, \
                    traffic_bytes = $5, traffic_period_days = $6, \
                    ledger_version = ledger_version + 1 \
                 WHERE telegram_id = $1 RETURNING ledger_version",
            )
            .persistent(persistent)
            .bind(user_id)
            .bind(folded.paid_until.map(|t| t.to_sqlx()))
            .bind(folded.plan.as_deref())
            .bind(folded.max_devices)
            .bind(folded.traffic_quota.map(|quota| quota.bytes))
            .bind(folded.traffic_quota.map(|quota| quota.period_days))
            .fetch_optional(&mut *conn)
            .await?
        }
        None => {
            sqlx::query_scalar(
                "UPDATE users SET ledger_version = ledger_version + 1 \
                 WHERE telegram_id = $1 RETURNING ledger_version",
            )
            .persistent(persistent)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    version.ok_or(LedgerError::UnknownUser(user_id))
}
