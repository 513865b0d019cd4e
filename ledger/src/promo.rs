//! Promo codes: administrators create them (free days, or a percentage off the next payment,
//! with an expiry and a maximum number of uses), list and disable them; a user redeems a code
//! once. Free days become a `promo` grant folded into `paidUntil`; a percentage waits in the
//! user's redemption until [`Ledger::create_payment`] prices a payment with it, and is consumed
//! when that payment is applied (see `payments.rs`: the amount is re-checked there).
//!
//! Redeeming locks the user's row and then the code's row, so two redemptions of one code
//! serialise and `uses` never passes `max_uses` (a `CHECK` backs it); `UNIQUE (code, user_id)`
//! backs "once per user".

use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use sqlx::FromRow;
use sqlx::postgres::PgRow;

use crate::entitlement::Entitlement;
use crate::session::RunOn;
use crate::txn::{lock_user, refold};
use crate::{Ledger, LedgerError};

/// Shortest and longest code.
pub const CODE_LEN: std::ops::RangeInclusive<usize> = 3..=32;
/// Most free days one code may give (as an admin grant).
pub const MAX_PROMO_DAYS: u32 = 3660;

/// What a code gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromoBenefit {
    /// Free days, added now.
    Days(u32),
    /// A percentage (1–99) off the next payment.
    PercentOff(u8),
}

/// Why a typed code is not a code at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeSyntaxError {
    #[error("a promo code is empty")]
    Empty,
    #[error("a promo code has 3–32 characters, got {0}")]
    Length(usize),
    #[error(
        "a promo code has only letters A–Z, digits, '-' and '_' and starts with a letter or digit"
    )]
    Characters,
}

/// The stored form of a typed code: trimmed, upper case, `[A-Z0-9][A-Z0-9_-]{2,31}`.
pub fn normalize_code(text: &str) -> Result<String, CodeSyntaxError> {
    let code = text.trim().to_ascii_uppercase();
    if code.is_empty() {
        return Err(CodeSyntaxError::Empty);
    }
    let chars = code.chars().count();
    if !CODE_LEN.contains(&chars) {
        return Err(CodeSyntaxError::Length(chars));
    }
    let ok = code
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && code.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(code)
    } else {
        Err(CodeSyntaxError::Characters)
    }
}

/// The price after `percent_off` percent off, rounded to the nearest minor unit (halves up),
/// never below one minor unit.
pub fn discounted_price(list_minor: i64, percent_off: u8) -> i64 {
    let percent = i128::from(percent_off.min(100));
    let kept = (i128::from(list_minor) * (100 - percent) + 50) / 100;
    i64::try_from(kept).unwrap_or(i64::MAX).max(1)
}

/// A code as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoCode {
    pub code: String,
    pub benefit: PromoBenefit,
    pub expires_at: Timestamp,
    pub max_uses: u32,
    pub uses: u32,
    pub created_by: i64,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

/// A code an administrator creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPromoCode {
    /// As typed; stored by [`normalize_code`].
    pub code: String,
    pub benefit: PromoBenefit,
    pub expires_at: Timestamp,
    pub max_uses: u32,
    pub admin_id: i64,
}

/// Why a code could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateCodeError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Syntax(#[from] CodeSyntaxError),
    #[error("promo code {0} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
}

/// Why a user's redemption was refused (each a message the user gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedeemRefusal {
    #[error("there is no such promo code")]
    Unknown,
    #[error("the promo code was disabled")]
    Disabled,
    #[error("the promo code has expired")]
    Expired,
    #[error("the promo code has been used the maximum number of times")]
    UsedUp,
    #[error("you have already used this promo code")]
    AlreadyRedeemed,
    #[error("a discount is already waiting for your next payment")]
    DiscountWaiting,
}

impl RedeemRefusal {
    /// A short stable label (API error code, metrics, logs).
    pub fn label(self) -> &'static str {
        match self {
            RedeemRefusal::Unknown => "promo_unknown",
            RedeemRefusal::Disabled => "promo_disabled",
            RedeemRefusal::Expired => "promo_expired",
            RedeemRefusal::UsedUp => "promo_used_up",
            RedeemRefusal::AlreadyRedeemed => "promo_already_redeemed",
            RedeemRefusal::DiscountWaiting => "promo_discount_waiting",
        }
    }
}

/// Why a redemption did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Syntax(#[from] CodeSyntaxError),
    #[error(transparent)]
    Refused(#[from] RedeemRefusal),
}

/// What a redemption gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// Free days were added; the user's new entitlement.
    Days {
        code: String,
        days: u32,
        entitlement: Entitlement,
    },
    /// The percentage waits for the next payment.
    Discount { code: String, percent_off: u8 },
}

/// A discount waiting for the user's next payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingDiscount {
    pub redemption_id: i64,
    pub code: String,
    pub percent_off: u8,
}

/// Whether `code` may be redeemed now by a user who has (`already_redeemed`) or has not used
/// it, and who has (`discount_waiting`) or has not a discount waiting. A user's repeat is
/// named as such even when the code has since expired or run out.
pub fn redeemable(
    code: &PromoCode,
    already_redeemed: bool,
    discount_waiting: bool,
    now: Timestamp,
) -> Result<(), RedeemRefusal> {
    if already_redeemed {
        return Err(RedeemRefusal::AlreadyRedeemed);
    }
    if code.disabled_at.is_some() {
        return Err(RedeemRefusal::Disabled);
    }
    if code.expires_at <= now {
        return Err(RedeemRefusal::Expired);
    }
    if code.uses >= code.max_uses {
        return Err(RedeemRefusal::UsedUp);
    }
    if discount_waiting && matches!(code.benefit, PromoBenefit::PercentOff(_)) {
        return Err(RedeemRefusal::DiscountWaiting);
    }
    Ok(())
}

const CODE_COLUMNS: &str =
    "code, days, percent_off, expires_at, max_uses, uses, created_by, created_at, disabled_at";

/// A `promo_codes` row as stored; [`CodeRow::into_code`] checks its benefit and counts.
#[derive(sqlx::FromRow)]
struct CodeRow {
    code: String,
    days: Option<i32>,
    percent_off: Option<i32>,
    expires_at: jiff_sqlx::Timestamp,
    max_uses: i32,
    uses: i32,
    created_by: i64,
    created_at: jiff_sqlx::Timestamp,
    disabled_at: Option<jiff_sqlx::Timestamp>,
}

impl CodeRow {
    fn into_code(self) -> Result<PromoCode, LedgerError> {
        let code = self.code;
        let benefit = match (self.days, self.percent_off) {
            (Some(days), None) => u32::try_from(days).ok().map(PromoBenefit::Days),
            (None, Some(percent)) => u8::try_from(percent).ok().map(PromoBenefit::PercentOff),
            _ => None,
        }
        .ok_or_else(|| LedgerError::Corrupt(format!("promo code {code} has no single benefit")))?;
        let count = |column: &str, value: i32| -> Result<u32, LedgerError> {
            u32::try_from(value)
                .map_err(|_| LedgerError::Corrupt(format!("promo {column} {value}")))
        };
        Ok(PromoCode {
            benefit,
            expires_at: self.expires_at.to_jiff(),
            max_uses: count("max_uses", self.max_uses)?,
            uses: count("uses", self.uses)?,
            created_by: self.created_by,
            created_at: self.created_at.to_jiff(),
            disabled_at: self.disabled_at.map(jiff_sqlx::Timestamp::to_jiff),
            code,
        })
    }
}

fn code_from_row(row: &PgRow) -> Result<PromoCode, LedgerError> {
    CodeRow::from_row(row)?.into_code()
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

impl Ledger {
    /// Creates a code (normalised); refused when it exists, its benefit is out of range
    /// (1–3660 days, 1–99 %), it has no use or it has already expired.
    pub async fn create_promo_code(
        &self,
        new: &NewPromoCode,
        now: Timestamp,
    ) -> Result<PromoCode, CreateCodeError> {
        let code = normalize_code(&new.code)?;
        let (days, percent) = match new.benefit {
            PromoBenefit::Days(days) if (1..=MAX_PROMO_DAYS).contains(&days) => {
                (Some(days as i32), None)
            }
            PromoBenefit::PercentOff(percent) if (1..=99).contains(&percent) => {
                (None, Some(i32::from(percent)))
            }
            other => {
                return Err(CreateCodeError::Invalid(format!(
                    "{other:?} is out of range (1–{MAX_PROMO_DAYS} days or 1–99 %)"
                )));
            }
        };
        let max_uses = i32::try_from(new.max_uses)
            .ok()
            .filter(|uses| *uses > 0)
            .ok_or_else(|| CreateCodeError::Invalid("max uses must be at least 1".into()))?;
        if new.expires_at <= now {
            return Err(CreateCodeError::Invalid(
                "the expiry must be in the future".into(),
            ));
        }
        let sql = format!(
            "INSERT INTO promo_codes (code, days, percent_off, expires_at, max_uses, created_by, \
                                      created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (code) DO NOTHING \
             RETURNING {CODE_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&code)
            .bind(days)
            .bind(percent)
            .bind(new.expires_at.to_sqlx())
            .bind(max_uses)
            .bind(new.admin_id)
            .bind(now.to_sqlx())
            .fetch_optional_on(self)
            .await
            .map_err(LedgerError::from)?;
        match row {
            Some(row) => Ok(code_from_row(&row)?),
            None => Err(CreateCodeError::Exists(code)),
        }
    }

    /// Codes, newest first (at most `limit`).
    pub async fn promo_codes(&self, limit: i64) -> Result<Vec<PromoCode>, LedgerError> {
        let sql = format!(
            "SELECT {CODE_COLUMNS} FROM promo_codes ORDER BY created_at DESC, code LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all_on(self)
            .await?;
        rows.iter().map(code_from_row).collect()
    }

    /// The code, if it exists (the text is normalised first).
    pub async fn promo_code(&self, code: &str) -> Result<Option<PromoCode>, LedgerError> {
        let Ok(code) = normalize_code(code) else {
            return Ok(None);
        };
        let sql = format!("SELECT {CODE_COLUMNS} FROM promo_codes WHERE code = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(code)
            .fetch_optional_on(self)
            .await?;
        row.as_ref().map(code_from_row).transpose()
    }

    /// Disables a code (no further redemptions; waiting discounts stay); false when it does
    /// not exist or already was disabled.
    pub async fn disable_promo_code(
        &self,
        code: &str,
        admin_id: i64,
        now: Timestamp,
    ) -> Result<bool, LedgerError> {
        let Ok(code) = normalize_code(code) else {
            return Ok(false);
        };
        let done = sqlx::query(
            "UPDATE promo_codes SET disabled_at = $2, disabled_by = $3 \
             WHERE code = $1 AND disabled_at IS NULL",
        )
        .bind(code)
        .bind(now.to_sqlx())
        .bind(admin_id)
        .execute_on(self)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The discount waiting for the user's next payment, if any.
    pub async fn waiting_discount(
        &self,
        user_id: i64,
    ) -> Result<Option<WaitingDiscount>, LedgerError> {
        let row = sqlx::query(
            "SELECT id, code, percent_off FROM promo_redemptions \
             WHERE user_id = $1 AND percent_off IS NOT NULL AND consumed_by IS NULL",
        )
        .bind(user_id)
        .fetch_optional_on(self)
        .await?;
        row.as_ref().map(waiting_from_row).transpose()
    }

    /// Redeems a typed code for the user, once per (code, user): free days are granted now
    /// (a `promo` grant, re-folded), a percentage waits for the next payment.
    pub async fn redeem_promo_code(
        &self,
        user_id: i64,
        typed: &str,
        now: Timestamp,
    ) -> Result<Redeemed, RedeemError> {
        let code = normalize_code(typed)?;
        let mut tx = self.pool.begin().await.map_err(LedgerError::from)?;
        lock_user(&mut tx, user_id, self.persistent).await?;
        let sql = format!("SELECT {CODE_COLUMNS} FROM promo_codes WHERE code = $1 FOR UPDATE");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(self.persistent)
            .bind(&code)
            .fetch_optional(&mut *tx)
            .await
            .map_err(LedgerError::from)?
        else {
            return Err(RedeemRefusal::Unknown.into());
        };
        let promo = code_from_row(&row)?;
        let already =
            sqlx::query("SELECT 1 AS one FROM promo_redemptions WHERE code = $1 AND user_id = $2")
                .persistent(self.persistent)
                .bind(&code)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(LedgerError::from)?
                .is_some();
        let waiting = sqlx::query(
            "SELECT 1 AS one FROM promo_redemptions \
             WHERE user_id = $1 AND percent_off IS NOT NULL AND consumed_by IS NULL",
        )
        .persistent(self.persistent)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(LedgerError::from)?
        .is_some();
        redeemable(&promo, already, waiting, now)?;
        let redeemed = match promo.benefit {
            PromoBenefit::Days(days) => {
                let grant: i64 = sqlx::query_scalar(
                    "INSERT INTO grants (user_id, kind, days, granted_at, reason) \
                     VALUES ($1, 'promo', $2, $3, $4) RETURNING id",
                )
                .persistent(self.persistent)
                .bind(user_id)
                .bind(days as i32)
                .bind(now.to_sqlx())
                .bind(format!("promo code {code}"))
                .fetch_one(&mut *tx)
                .await
                .map_err(LedgerError::from)?;
                self.insert_redemption(&mut tx, &code, user_id, Some(grant), None, now)
                    .await?;
                let (entitlement, _) = refold(&mut tx, user_id, self.persistent).await?;
                Redeemed::Days {
                    code: code.clone(),
                    days,
                    entitlement,
                }
            }
            PromoBenefit::PercentOff(percent_off) => {
                self.insert_redemption(
                    &mut tx,
                    &code,
                    user_id,
                    None,
                    Some(i32::from(percent_off)),
                    now,
                )
                .await?;
                Redeemed::Discount {
                    code: code.clone(),
                    percent_off,
                }
            }
        };
        sqlx::query("UPDATE promo_codes SET uses = uses + 1 WHERE code = $1")
            .persistent(self.persistent)
            .bind(&code)
            .execute(&mut *tx)
            .await
            .map_err(LedgerError::from)?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(redeemed)
    }

    async fn insert_redemption(
        &self,
        tx: &mut sqlx::PgConnection,
        code: &str,
        user_id: i64,
        grant_id: Option<i64>,
        percent_off: Option<i32>,
        now: Timestamp,
    ) -> Result<(), RedeemError> {
        let inserted = sqlx::query(
            "INSERT INTO promo_redemptions (code, user_id, redeemed_at, grant_id, percent_off) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .persistent(self.persistent)
        .bind(code)
        .bind(user_id)
        .bind(now.to_sqlx())
        .bind(grant_id)
        .bind(percent_off)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // The checks above ran under the user's lock; this is only the constraints' backstop.
            Err(error) if is_unique_violation(&error) => Err(RedeemRefusal::AlreadyRedeemed.into()),
            Err(error) => Err(LedgerError::from(error).into()),
        }
    }
}

/// A waiting discount's `promo_redemptions` row as stored.
#[derive(sqlx::FromRow)]
struct WaitingRow {
    id: i64,
    code: String,
    percent_off: i32,
}

pub(crate) fn waiting_from_row(row: &PgRow) -> Result<WaitingDiscount, LedgerError> {
    let WaitingRow {
        id,
        code,
        percent_off,
    } = WaitingRow::from_row(row)?;
    Ok(WaitingDiscount {
        redemption_id: id,
        code,
        percent_off: u8::try_from(percent_off)
            .map_err(|_| LedgerError::Corrupt(format!("discount of {percent_off} %")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn code(benefit: PromoBenefit) -> PromoCode {
        PromoCode {
            code: "SPRING".into(),
            benefit,
            expires_at: t("2026-12-31T00:00:00Z"),
            max_uses: 2,
            uses: 0,
            created_by: 1,
            created_at: t("2026-12-01T00:00:00Z"),
            disabled_at: None,
        }
    }

    const NOW: &str = "2026-12-07T00:00:00Z";

    #[test]
    fn codes_are_trimmed_upper_cased_and_checked() {
        assert_eq!(normalize_code("  spring-26 "), Ok("SPRING-26".into()));
        assert_eq!(normalize_code("a_1"), Ok("A_1".into()));
        assert_eq!(normalize_code(""), Err(CodeSyntaxError::Empty));
        assert_eq!(normalize_code("   "), Err(CodeSyntaxError::Empty));
        assert_eq!(normalize_code("ab"), Err(CodeSyntaxError::Length(2)));
        assert_eq!(
            normalize_code(&"A".repeat(33)),
            Err(CodeSyntaxError::Length(33))
        );
        assert_eq!(normalize_code(&"A".repeat(32)), Ok("A".repeat(32)));
        for bad in [
            "-ABC",
            "_ABC",
            "AB C",
            "ВЕСНА",
            "AB;DROP",
            "ab\u{0}c",
            "50%",
        ] {
            assert!(normalize_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn discounts_round_to_the_nearest_minor_unit_and_never_reach_zero() {
        assert_eq!(discounted_price(19_900, 20), 15_920);
        assert_eq!(discounted_price(19_900, 50), 9_950);
        assert_eq!(discounted_price(999, 33), 669); // 669.33
        assert_eq!(discounted_price(1_001, 50), 501); // 500.5 rounds up
        assert_eq!(discounted_price(100, 99), 1);
        assert_eq!(discounted_price(1, 99), 1);
        assert_eq!(
            discounted_price(i64::MAX, 1),
            (i128::from(i64::MAX) * 99 / 100 + 1) as i64
        );
    }

    #[test]
    fn a_fresh_code_is_redeemable() {
        for benefit in [PromoBenefit::Days(7), PromoBenefit::PercentOff(20)] {
            assert_eq!(redeemable(&code(benefit), false, false, t(NOW)), Ok(()));
        }
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let days = code(PromoBenefit::Days(7));
        let disabled = PromoCode {
            disabled_at: Some(t("2026-12-02T00:00:00Z")),
            ..days.clone()
        };
        let expired = PromoCode {
            expires_at: t(NOW),
            ..days.clone()
        };
        let used_up = PromoCode {
            uses: 2,
            ..days.clone()
        };
        let now = t(NOW);
        assert_eq!(
            redeemable(&disabled, false, false, now),
            Err(RedeemRefusal::Disabled)
        );
        assert_eq!(
            redeemable(&expired, false, false, now),
            Err(RedeemRefusal::Expired)
        );
        assert_eq!(
            redeemable(&used_up, false, false, now),
            Err(RedeemRefusal::UsedUp)
        );
        assert_eq!(
            redeemable(&days, true, false, now),
            Err(RedeemRefusal::AlreadyRedeemed)
        );
        // A user's repeat is named as such whatever else became of the code.
        for other in [&disabled, &expired, &used_up] {
            assert_eq!(
                redeemable(other, true, false, now),
                Err(RedeemRefusal::AlreadyRedeemed)
            );
        }
    }

    #[test]
    fn a_waiting_discount_blocks_another_discount_but_not_free_days() {
        let now = t(NOW);
        assert_eq!(
            redeemable(&code(PromoBenefit::PercentOff(10)), false, true, now),
            Err(RedeemRefusal::DiscountWaiting)
        );
        assert_eq!(
            redeemable(&code(PromoBenefit::Days(3)), false, true, now),
            Ok(())
        );
    }

    #[test]
    fn refusal_labels_are_distinct() {
        let all = [
            RedeemRefusal::Unknown,
            RedeemRefusal::Disabled,
            RedeemRefusal::Expired,
            RedeemRefusal::UsedUp,
            RedeemRefusal::AlreadyRedeemed,
            RedeemRefusal::DiscountWaiting,
        ];
        let labels: std::collections::BTreeSet<_> = all.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), all.len());
    }
}
