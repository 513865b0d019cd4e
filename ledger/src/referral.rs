//! Referral rewards. A user's personal link is `t.me/<bot>?start=ref_<their Telegram id>`; the
//! bot records who brought a user at their first `/start` (`bot_referrals`). When that user's
//! first payment is applied, the referrer gets [`Ledger::with_referral_days`] days: a
//! `referral` grant folded into their `paidUntil`, a `referral_rewards` row (its primary key is
//! the referee, so once per referee whatever races) and a notification — all in the payment's
//! transaction. Never for oneself, never for a referrer who is not a user.
//!
//! A payment in YooKassa or in Telegram Stars earns it alike (`EarnedBy`): the referee's
//! first payment of either kind is their first payment, and a later one of the other kind is
//! not. The reward row points at the payment that earned it (`payment_id` or
//! `star_payment_id`).
//!
//! Refunds: only the referee's *first* applied payment can earn the reward. If that payment is
//! later refunded in full (a YooKassa refund summing to its amount, or a Stars refund, which is
//! always full), the reward is revoked in the refund's transaction (the grant is kept for the
//! audit trail and taken out of the fold; the referrer is told). A later payment of the same
//! referee does not earn it again.

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use serde::Serialize;
use sqlx::FromRow;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::outbox::{NotificationEvent, enqueue};
use crate::session::RunOn;
use crate::txn::{lock_user, refold};
use crate::{Ledger, LedgerError};

/// The `/start` payload of a user's personal link.
pub fn referral_payload(user_id: i64) -> String {
    format!("ref_{user_id}")
}

/// The user's personal link to the bot `bot_username` (with or without the `@`).
pub fn referral_link(bot_username: &str, user_id: i64) -> String {
    format!(
        "https://t.me/{}?start={}",
        bot_username.trim().trim_start_matches('@'),
        referral_payload(user_id)
    )
}

/// What the ledger knows when a referee's payment is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewardFacts {
    pub referee_id: i64,
    /// Who brought the referee, if anyone (and whether they are a user).
    pub referrer_id: Option<i64>,
    pub referrer_is_user: bool,
    /// Applied payments of the referee including this one.
    pub applied_payments: i64,
    /// A reward for this referee exists already.
    pub already_rewarded: bool,
    /// Days a reward gives (0 turns rewards off).
    pub days: u32,
}

/// The payment that earned (or may earn) a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EarnedBy {
    /// A YooKassa payment (`payments.id`).
    YooKassa(Uuid),
    /// A Telegram Stars payment (`star_payments.id`).
    Stars(Uuid),
}

impl EarnedBy {
    /// The reward row's columns `(payment_id, star_payment_id)`.
    fn columns(self) -> (Option<Uuid>, Option<Uuid>) {
        match self {
            Self::YooKassa(id) => (Some(id), None),
            Self::Stars(id) => (None, Some(id)),
        }
    }
}

/// The referrer to reward and the days, or `None`.
pub fn reward_due(facts: &RewardFacts) -> Option<(i64, u32)> {
    let referrer = facts.referrer_id?;
    let due = facts.days > 0
        && referrer != facts.referee_id
        && facts.referrer_is_user
        && facts.applied_payments == 1
        && !facts.already_rewarded;
    due.then_some((referrer, facts.days))
}

/// What the reward decision reads of the referee, as one row.
#[derive(FromRow)]
struct RewardRow {
    referrer_id: Option<i64>,
    referrer_is_user: bool,
    applied: i64,
    rewarded: bool,
}

/// In the transaction of applying the payment `earned_by` of `referee_id` (whose row is locked,
/// the payment already counted as applied): rewards the referrer when [`reward_due`] says so.
/// Returns the rewarded referrer.
pub(crate) async fn reward_referrer(
    conn: &mut PgConnection,
    persistent: bool,
    referee_id: i64,
    earned_by: EarnedBy,
    days: u32,
    now: Timestamp,
) -> Result<Option<i64>, LedgerError> {
    if days == 0 {
        return Ok(None);
    }
    let row = sqlx::query_as::<_, RewardRow>(
        "SELECT \
           (SELECT b.referrer_id FROM bot_referrals b WHERE b.user_id = $1) AS referrer_id, \
           EXISTS (SELECT 1 FROM users u JOIN bot_referrals b ON u.telegram_id = b.referrer_id \
                   WHERE b.user_id = $1) AS referrer_is_user, \
           (SELECT count(*) FROM payment_applications a JOIN payments p ON p.id = a.payment_id \
             WHERE p.user_id = $1) \
           + (SELECT count(*) FROM star_payments s WHERE s.user_id = $1) AS applied, \
           EXISTS (SELECT 1 FROM referral_rewards r WHERE r.referee_id = $1) AS rewarded",
    )
    .persistent(persistent)
    .bind(referee_id)
    .fetch_one(&mut *conn)
    .await?;
    let facts = RewardFacts {
        referee_id,
        referrer_id: row.referrer_id,
        referrer_is_user: row.referrer_is_user,
        applied_payments: row.applied,
        already_rewarded: row.rewarded,
        days,
    };
    let Some((referrer_id, days)) = reward_due(&facts) else {
        return Ok(None);
    };
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let (payment_id, star_payment_id) = earned_by.columns();
    lock_user(conn, referrer_id, persistent).await?;
    let grant_id: i64 = sqlx::query_scalar(
        "INSERT INTO grants (user_id, kind, days, granted_at, reason) \
         VALUES ($1, 'referral', $2, $3, $4) RETURNING id",
    )
    .persistent(persistent)
    .bind(referrer_id)
    .bind(days)
    .bind(now.to_sqlx())
    .bind(format!("referred user {referee_id} paid"))
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO referral_rewards (referee_id, referrer_id, payment_id, star_payment_id, \
                                       grant_id, days, rewarded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .persistent(persistent)
    .bind(referee_id)
    .bind(referrer_id)
    .bind(payment_id)
    .bind(star_payment_id)
    .bind(grant_id)
    .bind(days)
    .bind(now.to_sqlx())
    .execute(&mut *conn)
    .await?;
    let (entitlement, _) = refold(conn, referrer_id, persistent).await?;
    let event = NotificationEvent::ReferralRewarded {
        days,
        paid_until: entitlement.paid_until,
    };
    enqueue(conn, persistent, referrer_id, &event, now).await?;
    Ok(Some(referrer_id))
}

/// In the transaction of a refund that took the payment `earned_by` out in full: revokes the
/// reward that payment earned, if any. Returns the referrer whose time shrank.
pub(crate) async fn revoke_reward(
    conn: &mut PgConnection,
    persistent: bool,
    earned_by: EarnedBy,
    now: Timestamp,
) -> Result<Option<i64>, LedgerError> {
    let (payment_id, star_payment_id) = earned_by.columns();
    let Some((referee_id, referrer_id, grant_id, days)) =
        sqlx::query_as::<_, (i64, i64, i64, i32)>(
            "SELECT referee_id, referrer_id, grant_id, days FROM referral_rewards \
         WHERE (payment_id = $1 OR star_payment_id = $2) AND revoked_at IS NULL",
        )
        .persistent(persistent)
        .bind(payment_id)
        .bind(star_payment_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    lock_user(conn, referrer_id, persistent).await?;
    sqlx::query("UPDATE referral_rewards SET revoked_at = $2 WHERE referee_id = $1")
        .persistent(persistent)
        .bind(referee_id)
        .bind(now.to_sqlx())
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE grants SET revoked_at = $2 WHERE id = $1")
        .persistent(persistent)
        .bind(grant_id)
        .bind(now.to_sqlx())
        .execute(&mut *conn)
        .await?;
    let (entitlement, _) = refold(conn, referrer_id, persistent).await?;
    let event = NotificationEvent::ReferralRevoked {
        days,
        paid_until: entitlement.paid_until,
    };
    enqueue(conn, persistent, referrer_id, &event, now).await?;
    Ok(Some(referrer_id))
}

/// What a user's link brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ReferralSummary {
    /// Users who started the bot through the link.
    pub joined: i64,
    /// Of them, those whose first payment earned a reward that still stands.
    pub rewarded: i64,
    /// Days those rewards gave.
    #[sqlx(rename = "days")]
    pub days_earned: i64,
}

impl Ledger {
    /// How many joined through the user's link and the days their rewards gave.
    pub async fn referral_summary(&self, user_id: i64) -> Result<ReferralSummary, LedgerError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT count(*) FROM bot_referrals WHERE referrer_id = $1 AND user_id <> $1) \
                 AS joined, \
               (SELECT count(*) FROM referral_rewards WHERE referrer_id = $1 \
                  AND revoked_at IS NULL) AS rewarded, \
               (SELECT COALESCE(sum(days), 0)::BIGINT FROM referral_rewards \
                  WHERE referrer_id = $1 AND revoked_at IS NULL) AS days",
        )
        .bind(user_id)
        .fetch_one_on(self)
        .await?;
        Ok(ReferralSummary::from_row(&row)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RewardFacts {
        RewardFacts {
            referee_id: 20,
            referrer_id: Some(10),
            referrer_is_user: true,
            applied_payments: 1,
            already_rewarded: false,
            days: 7,
        }
    }

    #[test]
    fn the_first_payment_of_a_referred_user_rewards_the_referrer() {
        assert_eq!(reward_due(&facts()), Some((10, 7)));
    }

    #[test]
    fn no_reward_in_every_other_case() {
        let cases = [
            (
                "nobody referred",
                RewardFacts {
                    referrer_id: None,
                    ..facts()
                },
            ),
            (
                "self-referral",
                RewardFacts {
                    referrer_id: Some(20),
                    ..facts()
                },
            ),
            (
                "referrer unknown",
                RewardFacts {
                    referrer_is_user: false,
                    ..facts()
                },
            ),
            (
                "second payment",
                RewardFacts {
                    applied_payments: 2,
                    ..facts()
                },
            ),
            (
                "no payment",
                RewardFacts {
                    applied_payments: 0,
                    ..facts()
                },
            ),
            (
                "rewarded before",
                RewardFacts {
                    already_rewarded: true,
                    ..facts()
                },
            ),
            ("rewards off", RewardFacts { days: 0, ..facts() }),
        ];
        for (name, case) in cases {
            assert_eq!(reward_due(&case), None, "{name}");
        }
    }

    #[test]
    fn links_carry_the_payload_of_the_user() {
        assert_eq!(referral_payload(42), "ref_42");
        assert_eq!(
            referral_link("@wgsub_bot", 42),
            "https://t.me/wgsub_bot?start=ref_42"
        );
        assert_eq!(
            referral_link("wgsub_bot", 7),
            "https://t.me/wgsub_bot?start=ref_7"
        );
    }
}
