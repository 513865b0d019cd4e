//! Numbers for the administrators' `/admin`: users by subscription state and revenue (net of
//! refunds) today (UTC) and in the last 30 days; and the business activity of a window (new
//! users, first payments, renewals, revenue, the latest payment) for the api's gauges.
//!
//! Payments in YooKassa and in Telegram Stars count alike as payments (a first payment is the
//! first of either kind); their money is summed per currency, Stars as `XTR` on their own,
//! never added into roubles.

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use sqlx::FromRow;

use crate::session::RunOn;
use crate::stars::STARS_CURRENCY;
use crate::{Ledger, LedgerError};

/// Money in one currency.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Revenue {
    pub currency: String,
    /// In the currency's minor unit; for `XTR` (Telegram Stars, which have none) in Stars.
    #[sqlx(rename = "amount")]
    pub amount_minor: i64,
}

/// The ledger at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub users: i64,
    /// Paid until after now and not suspended.
    pub active: i64,
    /// Paid once, the period is over, not suspended.
    pub expired: i64,
    pub never_paid: i64,
    pub suspended: i64,
    /// Since 00:00 UTC today.
    pub revenue_today: Vec<Revenue>,
    pub revenue_30_days: Vec<Revenue>,
}

/// What happened in the ledger since a moment (applied YooKassa payments count once, at their
/// `succeeded_at`; Stars payments at their `paid_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Users created since then.
    pub new_users: i64,
    /// Applied payments of users who had no earlier applied payment.
    pub first_payments: i64,
    /// Applied payments of users who had paid before.
    pub renewals: i64,
    /// Net of refunds, per currency.
    pub revenue: Vec<Revenue>,
    /// The latest applied payment ever (not only in the window); `None` before the first.
    pub last_payment_at: Option<Timestamp>,
}

/// The users by state, as one row.
#[derive(FromRow)]
struct UserCounts {
    users: i64,
    active: i64,
    expired: i64,
    never_paid: i64,
    suspended: i64,
}

/// The counts of [`Activity`], as one row.
#[derive(FromRow)]
struct ActivityCounts {
    new_users: i64,
    first_payments: i64,
    renewals: i64,
    last_payment_at: Option<jiff_sqlx::Timestamp>,
}

/// The start of `now`'s day in UTC.
pub fn start_of_day_utc(now: Timestamp) -> Timestamp {
    let seconds = now.as_second();
    let day = seconds.div_euclid(86_400) * 86_400;
    Timestamp::from_second(day).unwrap_or(now)
}

impl Ledger {
    /// Counts users by state at `now` and sums revenue.
    pub async fn stats(&self, now: Timestamp) -> Result<Stats, LedgerError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS users, \
                COUNT(*) FILTER (WHERE NOT suspended AND paid_until > $1) AS active, \
                COUNT(*) FILTER (WHERE NOT suspended AND paid_until <= $1) AS expired, \
                COUNT(*) FILTER (WHERE NOT suspended AND paid_until IS NULL) AS never_paid, \
                COUNT(*) FILTER (WHERE suspended) AS suspended \
             FROM users",
        )
        .bind(now.to_sqlx())
        .fetch_one_on(self)
        .await?;
        let counts = UserCounts::from_row(&row)?;
        Ok(Stats {
            users: counts.users,
            active: counts.active,
            expired: counts.expired,
            never_paid: counts.never_paid,
            suspended: counts.suspended,
            revenue_today: self.revenue_since(start_of_day_utc(now)).await?,
            revenue_30_days: self
                .revenue_since(now - SignedDuration::from_hours(24 * 30))
                .await?,
        })
    }

    /// New users, first payments, renewals and revenue since `since`, and the latest payment.
    pub async fn activity_since(&self, since: Timestamp) -> Result<Activity, LedgerError> {
        let row = sqlx::query(
            "WITH paid AS ( \
                SELECT p.user_id, p.id, p.succeeded_at AS at FROM payments p \
                  JOIN payment_applications a ON a.payment_id = p.id \
                UNION ALL \
                SELECT s.user_id, s.id, s.paid_at FROM star_payments s \
             ), numbered AS ( \
                SELECT at, row_number() OVER (PARTITION BY user_id ORDER BY at, id) AS nth \
                FROM paid \
             ) \
             SELECT \
                (SELECT COUNT(*) FROM users WHERE created_at >= $1) AS new_users, \
                COUNT(*) FILTER (WHERE at >= $1 AND nth = 1) AS first_payments, \
                COUNT(*) FILTER (WHERE at >= $1 AND nth > 1) AS renewals, \
                MAX(at) AS last_payment_at \
             FROM numbered",
        )
        .bind(since.to_sqlx())
        .fetch_one_on(self)
        .await?;
        let counts = ActivityCounts::from_row(&row)?;
        Ok(Activity {
            new_users: counts.new_users,
            first_payments: counts.first_payments,
            renewals: counts.renewals,
            revenue: self.revenue_since(since).await?,
            last_payment_at: counts.last_payment_at.map(jiff_sqlx::Timestamp::to_jiff),
        })
    }

    /// Applied payments since `since` minus refunds since `since`, per currency; Stars
    /// payments and their refunds as [`STARS_CURRENCY`].
    pub async fn revenue_since(&self, since: Timestamp) -> Result<Vec<Revenue>, LedgerError> {
        let rows = sqlx::query(
            "SELECT currency, SUM(amount)::BIGINT AS amount FROM ( \
                SELECT p.currency, p.amount_minor AS amount FROM payments p \
                  JOIN payment_applications a ON a.payment_id = p.id WHERE p.succeeded_at >= $1 \
                UNION ALL \
                SELECT r.currency, -r.amount_minor FROM refunds r WHERE r.refunded_at >= $1 \
                UNION ALL \
                SELECT $2::TEXT, s.stars FROM star_payments s WHERE s.paid_at >= $1 \
                UNION ALL \
                SELECT $2::TEXT, -s.stars FROM star_refunds r \
                  JOIN star_payments s ON s.id = r.payment_id WHERE r.refunded_at >= $1 \
             ) money GROUP BY currency ORDER BY currency",
        )
        .bind(since.to_sqlx())
        .bind(STARS_CURRENCY)
        .fetch_all_on(self)
        .await?;
        rows.iter().map(|row| Ok(Revenue::from_row(row)?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_starts_at_midnight_utc() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            start_of_day_utc(t("2026-03-04T17:45:12Z")),
            t("2026-03-04T00:00:00Z")
        );
        assert_eq!(
            start_of_day_utc(t("2026-03-04T00:00:00Z")),
            t("2026-03-04T00:00:00Z")
        );
        assert_eq!(
            start_of_day_utc(t("1969-12-31T23:00:00Z")),
            t("1969-12-31T00:00:00Z")
        );
    }
}
