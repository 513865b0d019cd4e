//! Automatic renewal with YooKassa: the card a user agreed to save at purchase, and the renewal
//! charged with it before the paid period ends — once per user and period, whatever happens.
//!
//! - **Saving.** A payment created with [`Ledger::create_payment_saving_card`] asks YooKassa to
//!   save the method (`save_payment_method`). When that payment is applied and YooKassa's own
//!   copy of it (re-fetched, never the webhook body) shows `payment_method.saved`,
//!   [`Ledger::settle_renewal`] stores the method (its id, a masked title such as
//!   `Visa •••• 4242`, the expiry) with the plan bought — once per payment
//!   (`payments.card_stored_at`), so a late repeat of that webhook cannot bring back a card the
//!   user switched off since.
//! - **Charging.** [`Ledger::run_renewals`] (the bot's job, on every replica) finds users whose
//!   period ends within the lead ([`Ledger::with_renewal_lead`], default a day) and claims each
//!   period in `renewal_charges` (primary key user + period end) under the user's row lock
//!   before YooKassa is asked, so two replicas or a restart cannot charge a period twice. The
//!   charge is a `payments` row whose Idempotence-Key is derived from the same pair
//!   ([`idempotence_key`]): a claim whose call never got an answer is asked again with that
//!   key and the very bytes of the first ask (stored with the claim, `request_body`: a body
//!   rebuilt later could differ, and YooKassa may refuse a key reused with another body), and
//!   YooKassa answers with the one payment. YooKassa keeps a key only 24 hours: once a claim is
//!   [`REASK_WINDOW`] old it is never sent again but marked `unknown` (logged and counted, for
//!   review; the user is not charged again), and a later webhook for the original payment —
//!   found by its metadata — still applies it once. It is applied like any payment — checked
//!   against our record and applied once, by the webhook or by this job's poll — and carries
//!   the 54-FZ receipt when receipts are on.
//! - **Failing.** A declined charge (or one YooKassa refused) adds no time; the user is told
//!   (an outbox [`NotificationEvent::RenewalFailed`], once: only the change of the claim from
//!   `charging` writes it) and a method YooKassa says is revoked or expired is deleted. A
//!   renewal of a plan no longer on sale is refused before YooKassa is asked: logged, nothing
//!   charged, the user told.
//! - **Giving up.** A charge asked but never answered that is not to be asked again (renewal
//!   switched off, the plan off sale, the grace over) is marked `unknown` with that reason, not
//!   `failed`: the first ask may have charged. The user is told it is being checked
//!   ([`NotificationEvent::RenewalUnconfirmed`]), never that it failed; a later webhook settles
//!   it either way (applied once, or failed and told).
//! - **Promo codes.** A percentage the user redeemed is off "the next payment": a renewal charge
//!   is one, so it is priced with the waiting discount ([`renewal_price`]) and consumes it when
//!   applied, as any payment does (`payments.rs`).
//! - **Switching off.** [`Ledger::disable_renewal`] deletes the stored method; the claim
//!   transaction re-reads it under the same row lock, so nothing is charged afterwards.
//!
//! Every step leaves a row in `renewal_events` (the audit trail).

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::{FromRow, Postgres, Transaction};
use uuid::Uuid;
use wgsub_crds::plans::{Plan, PlanCatalogue};

use crate::outbox::{NotificationEvent, enqueue};
use crate::payments::{ApplyError, ApplyOutcome, PaymentRecord, PaymentStatus};
use crate::promo::{WaitingDiscount, discounted_price, waiting_from_row};
use crate::session::RunOn;
use crate::txn::lock_user;
use crate::yookassa::{
    PaymentDetails, PaymentMethod, ReceiptCustomer, ReceiptSettings, YooKassa, YooKassaError,
    create_payment_body,
};
use crate::{Ledger, LedgerError};

/// How long before the end of a period its renewal is charged, unless configured.
pub const DEFAULT_RENEWAL_LEAD: SignedDuration = SignedDuration::from_hours(24);

/// How long after the end of a period a renewal that was not charged in time (the bot was
/// down) is still charged; later the user pays by hand.
pub const RENEWAL_GRACE: SignedDuration = SignedDuration::from_hours(24);

/// A claim whose YooKassa call got no answer is asked again (same Idempotence-Key) once it is
/// this old, so a replica still waiting for its answer is not raced.
pub const STALE_CLAIM: SignedDuration = SignedDuration::from_mins(5);

/// A claim is asked again only while it is younger than this: YooKassa keeps an
/// Idempotence-Key for 24 hours, and a later ask with the same key could charge a second time.
/// Measured from the claim, which is made before the first ask, so never later than it.
pub const REASK_WINDOW: SignedDuration = SignedDuration::from_hours(23);

/// Why a renewal was refused before YooKassa was asked, or failed there.
pub const REASON_PLAN_UNAVAILABLE: &str = "plan_unavailable";
pub const REASON_CONTACT_REQUIRED: &str = "contact_required";
pub const REASON_PROVIDER_UNAVAILABLE: &str = "provider_unavailable";
pub const REASON_RENEWAL_OFF: &str = "renewal_off";
/// Asked, never answered, and past [`REASK_WINDOW`]: `unknown`, for review.
pub const REASON_NO_ANSWER: &str = "no_answer";

/// Whether an unanswered claim made at `claimed_at` may still be asked again at `now`.
pub fn may_reask(claimed_at: Timestamp, now: Timestamp) -> bool {
    now.duration_since(claimed_at) < REASK_WINDOW
}

/// A saved card as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCard {
    /// Masked: `Visa •••• 4242`.
    pub title: String,
    pub expiry_month: Option<u8>,
    pub expiry_year: Option<u16>,
}

impl SavedCard {
    /// `MM/YY`, when YooKassa told the expiry.
    pub fn expires(&self) -> Option<String> {
        match (self.expiry_month, self.expiry_year) {
            (Some(month), Some(year)) => Some(format!("{month:02}/{:02}", year % 100)),
            _ => None,
        }
    }
}

/// The masked card of a payment method: brand and last four digits for a card, the kind of
/// method otherwise (a wallet's title can hold its account number: never shown).
pub fn saved_card(method: &PaymentMethod) -> SavedCard {
    let card = method.card.as_ref();
    let last4 = card
        .and_then(|card| card.last4.as_deref())
        .filter(|last4| last4.len() == 4 && last4.bytes().all(|b| b.is_ascii_digit()));
    let brand = card
        .and_then(|card| card.card_type.as_deref())
        .filter(|brand| !brand.is_empty() && brand.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|brand| match brand {
            "Unknown" => "Card",
            other => other,
        })
        .unwrap_or("Card");
    let title = match last4 {
        Some(last4) => format!("{brand} •••• {last4}"),
        None => match method.kind.as_str() {
            "bank_card" => brand.to_owned(),
            "yoo_money" => "YooMoney".to_owned(),
            "sberbank" => "SberPay".to_owned(),
            "sbp" => "SBP".to_owned(),
            _ => "Saved payment method".to_owned(),
        },
    };
    let expiry_month = card
        .and_then(|card| card.expiry_month.as_deref())
        .and_then(|month| month.parse::<u8>().ok())
        .filter(|month| (1..=12).contains(month));
    let expiry_year = card
        .and_then(|card| card.expiry_year.as_deref())
        .and_then(|year| year.parse::<u16>().ok())
        .filter(|year| (2000..=2200).contains(year));
    SavedCard {
        title,
        expiry_month,
        expiry_year,
    }
}

/// The Idempotence-Key (and our payment's `idempotence_key`) of the renewal of `user_id`'s
/// period ending at `period_end`: the same on every replica and after every restart.
pub fn idempotence_key(user_id: i64, period_end: Timestamp) -> Uuid {
    let digest = Sha256::digest(format!(
        "wgsub-renewal:{user_id}:{}",
        period_end.as_microsecond()
    ));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Whether the renewal of a period ending at `paid_until` is due at `now`: from `lead` before
/// the end until [`RENEWAL_GRACE`] after it.
pub fn is_due(paid_until: Timestamp, lead: SignedDuration, now: Timestamp) -> bool {
    let from = paid_until.saturating_sub(lead).unwrap_or(paid_until);
    let to = paid_until
        .saturating_add(RENEWAL_GRACE)
        .unwrap_or(paid_until);
    from <= now && now < to
}

/// When the renewal of a period ending at `paid_until` is charged.
pub fn next_charge_at(paid_until: Timestamp, lead: SignedDuration) -> Timestamp {
    paid_until.saturating_sub(lead).unwrap_or(paid_until)
}

/// Whether a charge canceled for `reason` means the saved method can no longer be used (the
/// user revoked it at their bank or YooKassa, or the card expired): it is deleted.
pub fn removes_method(reason: &str) -> bool {
    matches!(
        reason,
        "permission_revoked" | "card_expired" | "payment_method_restricted"
    )
}

/// The body of `POST /v3/payments` charging the saved method `method_id`: no confirmation
/// (the user is not there), captured at once, our metadata, the receipt when receipts are on.
pub fn renewal_charge_body(
    payment_id: Uuid,
    user_id: i64,
    plan: &Plan,
    method_id: &str,
    description: &str,
    receipt: Option<(&ReceiptCustomer, ReceiptSettings)>,
) -> serde_json::Value {
    let mut body = create_payment_body(payment_id, user_id, plan, description, "", receipt);
    if let Some(fields) = body.as_object_mut() {
        fields.remove("confirmation");
        fields.insert("payment_method_id".into(), json!(method_id));
    }
    body["metadata"]["wgsub_renewal"] = json!("true");
    body
}

/// The plan as a renewal charges it: its price less the waiting discount `percent_off` (a
/// promo code's "percentage off the next payment"), rounded as every discounted payment is.
pub fn renewal_price(plan: &Plan, percent_off: Option<u8>) -> Plan {
    Plan {
        price_minor: percent_off.map_or(plan.price_minor, |percent| {
            discounted_price(plan.price_minor, percent)
        }),
        ..plan.clone()
    }
}

/// Whether a charge of a due period came to `outcome` after YooKassa was asked (refusals and
/// periods claimed elsewhere or no longer due never reach it).
fn asked_first_time(outcome: &ChargeOutcome) -> bool {
    matches!(
        outcome,
        ChargeOutcome::Succeeded | ChargeOutcome::Failed { .. } | ChargeOutcome::Pending
    )
}

/// The discount waiting in the user's redemption (locked with the user's row by the caller),
/// if any: the next payment is priced with it.
async fn waiting_discount(
    conn: &mut PgConnection,
    persistent: bool,
    user_id: i64,
) -> Result<Option<WaitingDiscount>, LedgerError> {
    sqlx::query(
        "SELECT id, code, percent_off FROM promo_redemptions \
         WHERE user_id = $1 AND percent_off IS NOT NULL AND consumed_by IS NULL",
    )
    .persistent(persistent)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(waiting_from_row)
    .transpose()
}

/// A user's renewal as the bot and the Mini App show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalStatus {
    pub enabled: bool,
    pub card: Option<SavedCard>,
    /// When the next renewal will be charged (renewal on and a period to renew).
    pub next_charge_at: Option<Timestamp>,
    /// The plan renewed.
    pub plan: Option<String>,
    /// Why the latest renewal was not charged, when it was not (`insufficient_funds`, …).
    pub last_failure: Option<String>,
}

/// A period whose renewal is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRenewal {
    pub user_id: i64,
    pub period_end: Timestamp,
    pub plan: String,
}

/// What one renewal attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Another replica (or an earlier run) has the period; nothing done here.
    AlreadyClaimed,
    /// Renewal was switched off or the period moved before the claim; nothing charged.
    NoLongerDue,
    /// Refused before YooKassa was asked (`reason`); the user is told.
    Refused { reason: String },
    /// YooKassa charged it and it is applied.
    Succeeded,
    /// Declined or refused by YooKassa; no time added, the user is told.
    Failed { reason: String },
    /// Asked; YooKassa has not decided, or did not answer: the webhook or a later poll settles it.
    Pending,
    /// Asked, never answered, and too old to ask again: never sent again, left for review; a
    /// webhook for the original payment still applies it.
    Unknown,
    /// Asked, never answered, and not to be asked again (`reason`: renewal switched off, the
    /// plan off sale, the grace over): marked unknown, the user told it is being checked; a
    /// webhook for the original payment still settles it.
    GivenUp { reason: String },
}

/// What a renewal run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenewalReport {
    /// Charges sent to YooKassa (first asks and asks again).
    pub attempted: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub refused: u32,
    pub pending: u32,
    pub unknown: u32,
    pub given_up: u32,
}

impl RenewalReport {
    fn count(&mut self, outcome: &ChargeOutcome) {
        match outcome {
            ChargeOutcome::Succeeded => self.succeeded += 1,
            ChargeOutcome::Failed { .. } => self.failed += 1,
            ChargeOutcome::Refused { .. } => self.refused += 1,
            ChargeOutcome::Pending => self.pending += 1,
            ChargeOutcome::Unknown => self.unknown += 1,
            ChargeOutcome::GivenUp { .. } => self.given_up += 1,
            ChargeOutcome::AlreadyClaimed | ChargeOutcome::NoLongerDue => {}
        }
    }

    /// Counts `outcome` of a charge that was sent to YooKassa.
    fn count_asked(&mut self, outcome: &ChargeOutcome) {
        self.attempted += 1;
        self.count(outcome);
    }
}

/// What renewals need besides the ledger: YooKassa, the plans on sale, the receipt settings.
#[derive(Debug, Clone, Copy)]
pub struct RenewalContext<'a> {
    pub yookassa: &'a YooKassa,
    pub plans: &'a PlanCatalogue,
    /// `Some` when 54-FZ receipts are on.
    pub receipt: Option<ReceiptSettings>,
}

async fn audit(
    conn: &mut PgConnection,
    persistent: bool,
    user_id: i64,
    event: &str,
    details: serde_json::Value,
    now: Timestamp,
) -> Result<(), LedgerError> {
    sqlx::query("INSERT INTO renewal_events (user_id, at, event, details) VALUES ($1, $2, $3, $4)")
        .persistent(persistent)
        .bind(user_id)
        .bind(now.to_sqlx())
        .bind(event)
        .bind(details)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A user's saved method with what their renewal status needs of the user.
#[derive(FromRow)]
struct MethodRow {
    title: String,
    expiry_month: Option<i32>,
    expiry_year: Option<i32>,
    plan: String,
    paid_until: Option<jiff_sqlx::Timestamp>,
    suspended: bool,
}

impl MethodRow {
    fn card(&self) -> SavedCard {
        SavedCard {
            title: self.title.clone(),
            expiry_month: self.expiry_month.and_then(|m| u8::try_from(m).ok()),
            expiry_year: self.expiry_year.and_then(|y| u16::try_from(y).ok()),
        }
    }
}

/// A renewal charge as a change of its status returns it.
#[derive(FromRow)]
struct ChargeRow {
    user_id: i64,
    plan: String,
    period_end: jiff_sqlx::Timestamp,
}

/// The user's `paid_until` now, in `tx`.
async fn paid_until_in(
    tx: &mut PgConnection,
    persistent: bool,
    user_id: i64,
) -> Result<Option<Timestamp>, LedgerError> {
    let paid_until: Option<jiff_sqlx::Timestamp> =
        sqlx::query_scalar("SELECT paid_until FROM users WHERE telegram_id = $1")
            .persistent(persistent)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
    Ok(paid_until.map(jiff_sqlx::Timestamp::to_jiff))
}

/// A renewal charge still `charging`, with its payment and the user's saved method.
#[derive(FromRow)]
struct OpenCharge {
    id: Uuid,
    yookassa_id: Option<String>,
    created_at: jiff_sqlx::Timestamp,
    period_end: jiff_sqlx::Timestamp,
    yookassa_method_id: Option<String>,
    request_body: Option<String>,
}

/// Why an unanswered renewal charge is marked `unknown` rather than asked again.
#[derive(Debug, Clone, Copy)]
enum Unanswered<'a> {
    /// Claimed at `claimed_at` and too old to ask again: YooKassa may no longer know its
    /// Idempotence-Key. Logged for review; the user is not told: they may well have been charged.
    TooOld { claimed_at: Timestamp },
    /// Not to be asked again for `reason` (renewal switched off, plan off sale, grace over); the
    /// user is told it is being checked.
    GivenUp { reason: &'a str },
}

/// `charging` to `unknown`: the charge is never sent again and waits for the webhook.
const CHARGE_TO_UNKNOWN: &str = "UPDATE renewal_charges SET status = 'unknown', reason = $2, \
     updated_at = $3 WHERE payment_id = $1 AND status = 'charging' \
     RETURNING user_id, plan, period_end";

impl Ledger {
    /// The same ledger charging renewals `lead` before a period ends (default
    /// [`DEFAULT_RENEWAL_LEAD`]).
    pub fn with_renewal_lead(self, renewal_lead: SignedDuration) -> Self {
        Self {
            renewal_lead,
            ..self
        }
    }

    /// How long before a period ends its renewal is charged.
    pub fn renewal_lead(&self) -> SignedDuration {
        self.renewal_lead
    }

    /// The user's renewal: on (a saved card) or off, the masked card, when it is charged next.
    pub async fn renewal_status(&self, user_id: i64) -> Result<RenewalStatus, LedgerError> {
        let method = sqlx::query(
            "SELECT m.title, m.expiry_month, m.expiry_year, m.plan, u.paid_until, u.suspended \
             FROM payment_methods m JOIN users u ON u.telegram_id = m.user_id \
             WHERE m.user_id = $1",
        )
        .bind(user_id)
        .fetch_optional_on(self)
        .await?;
        let failure = sqlx::query(
            "SELECT status, reason FROM renewal_charges WHERE user_id = $1 \
             ORDER BY created_at DESC, period_end DESC LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional_on(self)
        .await?;
        let failure = failure
            .map(|row| <(String, Option<String>)>::from_row(&row))
            .transpose()?;
        let last_failure = match failure {
            Some((status, reason)) if !matches!(status.as_str(), "succeeded" | "unknown") => reason,
            _ => None,
        };
        let Some(row) = method else {
            return Ok(RenewalStatus {
                enabled: false,
                card: None,
                next_charge_at: None,
                plan: None,
                last_failure,
            });
        };
        let method = MethodRow::from_row(&row)?;
        Ok(RenewalStatus {
            enabled: true,
            card: Some(method.card()),
            next_charge_at: method
                .paid_until
                .filter(|_| !method.suspended)
                .map(|until| next_charge_at(until.to_jiff(), self.renewal_lead)),
            plan: Some(method.plan),
            last_failure,
        })
    }

    /// Switches renewal off: deletes the saved method on our side (audited). False when it was
    /// already off.
    pub async fn disable_renewal(&self, user_id: i64, now: Timestamp) -> Result<bool, LedgerError> {
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, user_id, self.persistent).await?;
        let deleted: Option<(String, String)> =
            sqlx::query_as("DELETE FROM payment_methods WHERE user_id = $1 RETURNING title, plan")
                .persistent(self.persistent)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((title, plan)) = deleted else {
            tx.rollback().await?;
            return Ok(false);
        };
        audit(
            &mut tx,
            self.persistent,
            user_id,
            "renewal_off",
            json!({"card": title, "plan": plan}),
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            user = user_id,
            "automatic renewal switched off; saved method deleted"
        );
        Ok(true)
    }

    /// Periods whose renewal is due at `now` and not yet claimed (users with renewal on, not
    /// suspended), oldest first.
    pub async fn due_renewals(
        &self,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<DueRenewal>, LedgerError> {
        let from = now.saturating_sub(RENEWAL_GRACE).unwrap_or(now);
        let to = now.saturating_add(self.renewal_lead).unwrap_or(now);
        let rows = sqlx::query(
            "SELECT u.telegram_id, u.paid_until, m.plan FROM users u \
             JOIN payment_methods m ON m.user_id = u.telegram_id \
             WHERE NOT u.suspended AND u.paid_until > $1 AND u.paid_until <= $2 \
               AND NOT EXISTS (SELECT 1 FROM renewal_charges c \
                               WHERE c.user_id = u.telegram_id AND c.period_end = u.paid_until) \
             ORDER BY u.paid_until LIMIT $3",
        )
        .bind(from.to_sqlx())
        .bind(to.to_sqlx())
        .bind(limit)
        .fetch_all_on(self)
        .await?;
        rows.iter()
            .map(|row| {
                let (user_id, paid_until, plan) =
                    <(i64, jiff_sqlx::Timestamp, String)>::from_row(row)?;
                Ok(DueRenewal {
                    user_id,
                    period_end: paid_until.to_jiff(),
                    plan,
                })
            })
            .collect()
    }

    /// Claims the renewal of `due` and charges it: refused (and the user told) when its plan
    /// is no longer on sale or a receipt has no contact; otherwise a payment with the saved
    /// method, decided by YooKassa's answer or later by the webhook or [`Ledger::run_renewals`].
    pub async fn charge_renewal(
        &self,
        ctx: RenewalContext<'_>,
        due: &DueRenewal,
        now: Timestamp,
    ) -> Result<ChargeOutcome, LedgerError> {
        let user = self
            .user(due.user_id)
            .await?
            .ok_or(LedgerError::UnknownUser(due.user_id))?;
        let plan = ctx.plans.get(&due.plan);
        let customer = user.receipt_customer();
        let refusal = match (plan, ctx.receipt, &customer) {
            (None, _, _) => Some(REASON_PLAN_UNAVAILABLE),
            (Some(_), Some(_), None) => Some(REASON_CONTACT_REQUIRED),
            _ => None,
        };
        let payment_id = Uuid::new_v4();
        let key = idempotence_key(due.user_id, due.period_end);
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, due.user_id, self.persistent).await?;
        let (paid_until, suspended, method_id, method_plan): (
            Option<jiff_sqlx::Timestamp>,
            bool,
            Option<String>,
            Option<String>,
        ) = sqlx::query_as(
            "SELECT u.paid_until, u.suspended, m.yookassa_method_id, m.plan FROM users u \
             LEFT JOIN payment_methods m ON m.user_id = u.telegram_id WHERE u.telegram_id = $1",
        )
        .persistent(self.persistent)
        .bind(due.user_id)
        .fetch_one(&mut *tx)
        .await?;
        let paid_until = paid_until.map(jiff_sqlx::Timestamp::to_jiff);
        if paid_until != Some(due.period_end)
            || suspended
            || method_plan.as_deref() != Some(due.plan.as_str())
        {
            tx.rollback().await?;
            return Ok(ChargeOutcome::NoLongerDue);
        }
        let Some(method_id) = method_id else {
            tx.rollback().await?;
            return Ok(ChargeOutcome::NoLongerDue);
        };
        if let Some(reason) = refusal {
            let claimed = sqlx::query(
                "INSERT INTO renewal_charges (user_id, period_end, plan, status, reason, \
                                              created_at, updated_at) \
                 VALUES ($1, $2, $3, 'refused', $4, $5, $5) ON CONFLICT DO NOTHING \
                 RETURNING user_id",
            )
            .persistent(self.persistent)
            .bind(due.user_id)
            .bind(due.period_end.to_sqlx())
            .bind(&due.plan)
            .bind(reason)
            .bind(now.to_sqlx())
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                tx.rollback().await?;
                return Ok(ChargeOutcome::AlreadyClaimed);
            }
            let event = NotificationEvent::RenewalFailed {
                plan: due.plan.clone(),
                reason: reason.to_owned(),
                paid_until,
            };
            enqueue(&mut tx, self.persistent, due.user_id, &event, now).await?;
            audit(
                &mut tx,
                self.persistent,
                due.user_id,
                "renewal_refused",
                json!({"plan": due.plan, "period_end": due.period_end.to_string(), "reason": reason}),
                now,
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(user = due.user_id, plan = %due.plan, reason, "renewal refused; nothing charged");
            return Ok(ChargeOutcome::Refused {
                reason: reason.to_owned(),
            });
        }
        let list_plan = plan.ok_or_else(|| LedgerError::Corrupt("checked above".into()))?;
        let discount = waiting_discount(&mut tx, self.persistent, due.user_id).await?;
        let charged = renewal_price(list_plan, discount.as_ref().map(|d| d.percent_off));
        let plan = &charged;
        sqlx::query(
            "INSERT INTO payments (id, user_id, plan, days, devices, amount_minor, currency, \
                                   status, idempotence_key, created_at, updated_at, \
                                   traffic_bytes, traffic_period_days, list_amount_minor, \
                                   discount_redemption_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $9, $10, $11, $12, $13) \
             ON CONFLICT (idempotence_key) DO NOTHING",
        )
        .persistent(self.persistent)
        .bind(payment_id)
        .bind(due.user_id)
        .bind(&plan.id)
        .bind(i32::try_from(plan.days).unwrap_or(i32::MAX))
        .bind(i32::from(plan.devices))
        .bind(plan.price_minor)
        .bind(&plan.currency)
        .bind(key)
        .bind(now.to_sqlx())
        .bind(plan.traffic_quota().map(|quota| quota.bytes))
        .bind(plan.traffic_quota().map(|quota| quota.period_days))
        .bind(discount.as_ref().map(|_| list_plan.price_minor))
        .bind(discount.as_ref().map(|d| d.redemption_id))
        .execute(&mut *tx)
        .await?;
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO renewal_charges (user_id, period_end, payment_id, plan, status, \
                                          created_at, updated_at) \
             SELECT $1, $2, id, $3, 'charging', $4, $4 FROM payments WHERE idempotence_key = $5 \
             ON CONFLICT DO NOTHING RETURNING payment_id",
        )
        .persistent(self.persistent)
        .bind(due.user_id)
        .bind(due.period_end.to_sqlx())
        .bind(&plan.id)
        .bind(now.to_sqlx())
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(payment_id) = claimed else {
            tx.rollback().await?;
            return Ok(ChargeOutcome::AlreadyClaimed);
        };
        let description = format!(
            "VPN: {}",
            plan.title.for_language(user.language_code.as_deref())
        );
        let body = renewal_charge_body(
            payment_id,
            due.user_id,
            plan,
            &method_id,
            &description,
            ctx.receipt
                .zip(customer.as_ref())
                .map(|(settings, customer)| (customer, settings)),
        );
        // Every ask of this charge sends exactly these bytes.
        let body_text = body.to_string();
        sqlx::query(
            "UPDATE renewal_charges SET request_body = $3 WHERE user_id = $1 AND period_end = $2",
        )
        .persistent(self.persistent)
        .bind(due.user_id)
        .bind(due.period_end.to_sqlx())
        .bind(&body_text)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            self.persistent,
            due.user_id,
            "renewal_claimed",
            json!({"plan": plan.id, "period_end": due.period_end.to_string(), "payment_id": payment_id}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.ask_yookassa(ctx, payment_id, key, &body_text, now)
            .await
    }

    /// Sends the charge of our payment `payment_id` (idempotence `key`, the stored request
    /// `body_text`) and acts on the answer.
    async fn ask_yookassa(
        &self,
        ctx: RenewalContext<'_>,
        payment_id: Uuid,
        key: Uuid,
        body_text: &str,
        now: Timestamp,
    ) -> Result<ChargeOutcome, LedgerError> {
        // Parsed from the stored text, the body serializes back to the same bytes.
        let body: serde_json::Value = serde_json::from_str(body_text).map_err(|error| {
            LedgerError::Corrupt(format!("renewal charge {payment_id}: stored body: {error}"))
        })?;
        match ctx
            .yookassa
            .create_payment::<PaymentDetails>(&body, &key.to_string())
            .await
        {
            Ok(created) => {
                sqlx::query(
                    "UPDATE payments SET yookassa_id = COALESCE(yookassa_id, $2), updated_at = $3 \
                     WHERE id = $1",
                )
                .bind(payment_id)
                .bind(&created.payment.id)
                .bind(now.to_sqlx())
                .execute_on(self)
                .await?;
                if created.payment.status == "pending"
                    || created.payment.status == "waiting_for_capture"
                {
                    return Ok(ChargeOutcome::Pending);
                }
                // Decided: act on YooKassa's own copy, as the webhook does.
                match ctx.yookassa.get_payment_details(&created.payment.id).await {
                    Ok(fetched) => self.settle_charge(payment_id, &fetched, now).await,
                    Err(error) => {
                        tracing::warn!(%error, payment = %payment_id, "re-fetching a renewal charge failed; the webhook or the next run settles it");
                        Ok(ChargeOutcome::Pending)
                    }
                }
            }
            Err(YooKassaError::Rejected {
                status,
                code,
                description,
            }) => {
                tracing::warn!(payment = %payment_id, status, %code, %description, "YooKassa refused the renewal charge");
                self.transition_payment(
                    payment_id,
                    &[PaymentStatus::Pending],
                    PaymentStatus::Failed,
                    now,
                )
                .await?;
                self.fail_charge(payment_id, &code, None, now).await?;
                Ok(ChargeOutcome::Failed { reason: code })
            }
            Err(error) => {
                tracing::warn!(%error, payment = %payment_id, "YooKassa did not answer the renewal charge; asked again with the same key later");
                Ok(ChargeOutcome::Pending)
            }
        }
    }

    /// Applies or fails our renewal payment `payment_id` from YooKassa's copy `fetched`.
    async fn settle_charge(
        &self,
        payment_id: Uuid,
        fetched: &PaymentDetails,
        now: Timestamp,
    ) -> Result<ChargeOutcome, LedgerError> {
        let record = self.payment(payment_id).await?.ok_or_else(|| {
            LedgerError::Corrupt(format!("renewal payment {payment_id} vanished"))
        })?;
        match fetched.payment.status.as_str() {
            "succeeded" => match self.apply_payment(payment_id, &fetched.payment, now).await {
                Ok(ApplyOutcome::Applied { .. }) => {
                    self.settle_renewal(&record, fetched, now).await?;
                    Ok(ChargeOutcome::Succeeded)
                }
                // Another replica's poll or the webhook applied it first: counted there.
                Ok(ApplyOutcome::AlreadyApplied { .. }) => {
                    self.settle_renewal(&record, fetched, now).await?;
                    Ok(ChargeOutcome::AlreadyClaimed)
                }
                Err(ApplyError::Ledger(error)) => Err(error),
                Err(error) => {
                    tracing::error!(%error, payment = %payment_id, "a renewal charge does not match our record; not applied");
                    Ok(ChargeOutcome::Pending)
                }
            },
            "canceled" => {
                let canceled_here = self.cancel_payment(payment_id, now).await?;
                self.settle_renewal(&record, fetched, now).await?;
                if !canceled_here {
                    // Canceled by another replica's poll or the webhook: counted there.
                    return Ok(ChargeOutcome::AlreadyClaimed);
                }
                let reason = fetched
                    .cancellation_details
                    .as_ref()
                    .map_or_else(|| "canceled".to_owned(), |d| d.reason.clone());
                Ok(ChargeOutcome::Failed { reason })
            }
            _ => Ok(ChargeOutcome::Pending),
        }
    }

    /// After a payment YooKassa reports (re-fetched) was applied or canceled: stores the card
    /// it saved, when the user agreed and it is the first time for this payment; marks a
    /// renewal charge succeeded, or failed (telling the user once and deleting a revoked
    /// method). The webhook calls it for every payment event; repeating it changes nothing.
    pub async fn settle_renewal(
        &self,
        record: &PaymentRecord,
        fetched: &PaymentDetails,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        match fetched.payment.status.as_str() {
            "succeeded" => {
                let applied = sqlx::query(
                    "SELECT 1 AS applied FROM payment_applications WHERE payment_id = $1",
                )
                .bind(record.id)
                .fetch_optional_on(self)
                .await?
                .is_some();
                if !applied {
                    return Ok(());
                }
                let done = sqlx::query(
                    "UPDATE renewal_charges SET status = 'succeeded', reason = NULL, \
                        updated_at = $2 \
                     WHERE payment_id = $1 AND status <> 'succeeded' RETURNING user_id",
                )
                .bind(record.id)
                .bind(now.to_sqlx())
                .fetch_optional_on(self)
                .await?;
                if done.is_some() {
                    tracing::info!(user = record.user_id, payment = %record.id, "renewal charged and applied");
                }
                if let Some(method) = fetched
                    .payment_method
                    .as_ref()
                    .filter(|method| method.saved)
                {
                    self.store_method(record, method, now).await?;
                }
                Ok(())
            }
            "canceled" => {
                let reason = fetched
                    .cancellation_details
                    .as_ref()
                    .map_or("canceled", |details| details.reason.as_str());
                let method = fetched.payment_method.as_ref().map(|m| m.id.as_str());
                self.fail_charge(record.id, reason, method, now).await
            }
            _ => Ok(()),
        }
    }

    /// Stores the method a payment saved, once per payment and only when its buyer agreed.
    async fn store_method(
        &self,
        record: &PaymentRecord,
        method: &PaymentMethod,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        let card = saved_card(method);
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, record.user_id, self.persistent).await?;
        let first = sqlx::query(
            "UPDATE payments SET card_stored_at = $2 \
             WHERE id = $1 AND save_card AND card_stored_at IS NULL RETURNING id",
        )
        .persistent(self.persistent)
        .bind(record.id)
        .bind(now.to_sqlx())
        .fetch_optional(&mut *tx)
        .await?;
        if first.is_none() {
            tx.rollback().await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO payment_methods (user_id, yookassa_method_id, title, expiry_month, \
                                          expiry_year, plan, saved_by, saved_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (user_id) DO UPDATE SET yookassa_method_id = EXCLUDED.yookassa_method_id, \
                title = EXCLUDED.title, expiry_month = EXCLUDED.expiry_month, \
                expiry_year = EXCLUDED.expiry_year, plan = EXCLUDED.plan, \
                saved_by = EXCLUDED.saved_by, saved_at = EXCLUDED.saved_at",
        )
        .persistent(self.persistent)
        .bind(record.user_id)
        .bind(&method.id)
        .bind(&card.title)
        .bind(card.expiry_month.map(i32::from))
        .bind(card.expiry_year.map(i32::from))
        .bind(&record.plan)
        .bind(record.id)
        .bind(now.to_sqlx())
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            self.persistent,
            record.user_id,
            "card_saved",
            json!({"card": card.title, "plan": record.plan, "payment_id": record.id}),
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user = record.user_id, card = %card.title, "card saved for automatic renewal");
        Ok(())
    }

    /// Opens a transaction and moves the renewal charge of our payment `payment_id` by `update`
    /// (an `UPDATE renewal_charges … RETURNING user_id, plan, period_end` taking the payment
    /// id, the reason and the time) in it: the transaction, to go on with, and the charge's
    /// user, plan and period end; `None`, the transaction rolled back, when the charge was not
    /// in a state the update moves.
    async fn begin_charge_move(
        &self,
        update: &'static str,
        payment_id: Uuid,
        reason: &str,
        now: Timestamp,
    ) -> Result<Option<(Transaction<'static, Postgres>, i64, String, Timestamp)>, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query_as::<_, ChargeRow>(update)
            .persistent(self.persistent)
            .bind(payment_id)
            .bind(reason)
            .bind(now.to_sqlx())
            .fetch_optional(&mut *tx)
            .await?;
        match moved {
            Some(ChargeRow {
                user_id,
                plan,
                period_end,
            }) => Ok(Some((tx, user_id, plan, period_end.to_jiff()))),
            None => {
                tx.rollback().await?;
                Ok(None)
            }
        }
    }

    /// Marks the renewal charge of our payment `payment_id` failed for `reason`, once: tells
    /// the user and, when the reason says so, deletes the saved method `method` (or, unknown,
    /// the user's one). A payment that is no renewal charge, or one already decided, is left.
    async fn fail_charge(
        &self,
        payment_id: Uuid,
        reason: &str,
        method: Option<&str>,
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        let failed = self.begin_charge_move(
            "UPDATE renewal_charges SET status = 'failed', reason = $2, updated_at = $3 \
             WHERE payment_id = $1 AND status IN ('charging', 'unknown') \
             RETURNING user_id, plan, period_end",
            payment_id,
            reason,
            now,
        );
        let Some((mut tx, user_id, plan, period_end)) = failed.await? else {
            return Ok(());
        };
        let removed = if removes_method(reason) {
            sqlx::query(
                "DELETE FROM payment_methods WHERE user_id = $1 \
                 AND ($2::TEXT IS NULL OR yookassa_method_id = $2) RETURNING user_id",
            )
            .persistent(self.persistent)
            .bind(user_id)
            .bind(method)
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        } else {
            false
        };
        let paid_until = paid_until_in(&mut tx, self.persistent, user_id).await?;
        let event = NotificationEvent::RenewalFailed {
            plan: plan.clone(),
            reason: reason.to_owned(),
            paid_until,
        };
        enqueue(&mut tx, self.persistent, user_id, &event, now).await?;
        audit(
            &mut tx,
            self.persistent,
            user_id,
            "renewal_failed",
            json!({"plan": plan, "period_end": period_end.to_string(), "payment_id": payment_id,
                   "reason": reason, "method_removed": removed}),
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::warn!(user = user_id, payment = %payment_id, reason, removed, "renewal charge failed; no time added");
        Ok(())
    }

    /// Marks the unanswered renewal charge of our payment `payment_id` `unknown`, for `why`: it
    /// is never sent again, but the first ask may have charged, so it is not failed; its payment
    /// stays pending for the webhook. Only the change from `charging` writes (and tells) anything.
    async fn mark_unknown(
        &self,
        payment_id: Uuid,
        why: Unanswered<'_>,
        now: Timestamp,
    ) -> Result<ChargeOutcome, LedgerError> {
        let reason = match why {
            Unanswered::TooOld { .. } => REASON_NO_ANSWER,
            Unanswered::GivenUp { reason } => reason,
        };
        let moved = self.begin_charge_move(CHARGE_TO_UNKNOWN, payment_id, reason, now);
        let Some((mut tx, user_id, plan, period_end)) = moved.await? else {
            return Ok(ChargeOutcome::AlreadyClaimed);
        };
        let mut details = json!({"plan": plan, "period_end": period_end.to_string(),
                                 "payment_id": payment_id, "reason": reason});
        let audit_event = match why {
            Unanswered::TooOld { claimed_at } => {
                details["claimed_at"] = json!(claimed_at.to_string());
                "renewal_unknown"
            }
            Unanswered::GivenUp { .. } => {
                let paid_until = paid_until_in(&mut tx, self.persistent, user_id).await?;
                let event = NotificationEvent::RenewalUnconfirmed {
                    plan: plan.clone(),
                    paid_until,
                };
                enqueue(&mut tx, self.persistent, user_id, &event, now).await?;
                "renewal_given_up"
            }
        };
        audit(&mut tx, self.persistent, user_id, audit_event, details, now).await?;
        tx.commit().await?;
        Ok(match why {
            Unanswered::TooOld { claimed_at } => {
                tracing::error!(user = user_id, payment = %payment_id, %claimed_at, "renewal charge never answered and too old to ask again; needs review, not sent again");
                ChargeOutcome::Unknown
            }
            Unanswered::GivenUp { reason } => {
                tracing::warn!(user = user_id, payment = %payment_id, reason, "unanswered renewal charge given up; outcome unknown, not sent again");
                ChargeOutcome::GivenUp {
                    reason: reason.to_owned(),
                }
            }
        })
    }

    /// Renewal charges still `charging`: those never answered (asked again with the same key
    /// and body once [`STALE_CLAIM`] old; failed once their period's grace is over; `unknown`
    /// once [`REASK_WINDOW`] old) and those YooKassa has not decided (polled).
    async fn recover_open_charges(
        &self,
        ctx: RenewalContext<'_>,
        now: Timestamp,
        report: &mut RenewalReport,
    ) -> Result<(), LedgerError> {
        let rows = sqlx::query(
            "SELECT c.user_id, c.period_end, c.created_at, c.request_body, p.id, p.yookassa_id, \
                    p.idempotence_key, m.yookassa_method_id \
             FROM renewal_charges c JOIN payments p ON p.id = c.payment_id \
             LEFT JOIN payment_methods m ON m.user_id = c.user_id \
             WHERE c.status = 'charging' ORDER BY c.created_at LIMIT 100",
        )
        .fetch_all_on(self)
        .await?;
        for row in rows {
            let OpenCharge {
                id: payment_id,
                yookassa_id,
                created_at,
                period_end,
                yookassa_method_id: method,
                request_body,
            } = OpenCharge::from_row(&row)?;
            let (created_at, period_end) = (created_at.to_jiff(), period_end.to_jiff());
            let outcome = match yookassa_id {
                Some(id) => match ctx.yookassa.get_payment_details(&id).await {
                    Ok(fetched) => self.settle_charge(payment_id, &fetched, now).await?,
                    Err(error) => {
                        tracing::warn!(%error, payment = %payment_id, "polling a renewal charge failed");
                        ChargeOutcome::Pending
                    }
                },
                None if now.duration_since(created_at) < STALE_CLAIM => continue,
                None => {
                    let past_grace = now
                        >= period_end
                            .saturating_add(RENEWAL_GRACE)
                            .unwrap_or(period_end);
                    let record = self.payment(payment_id).await?.ok_or_else(|| {
                        LedgerError::Corrupt(format!("renewal payment {payment_id} vanished"))
                    })?;
                    let give_up = match (&method, ctx.plans.get(&record.plan), past_grace) {
                        (None, _, _) => Some(REASON_RENEWAL_OFF),
                        (_, None, _) => Some(REASON_PLAN_UNAVAILABLE),
                        (_, _, true) => Some(REASON_PROVIDER_UNAVAILABLE),
                        _ => None,
                    };
                    match (request_body, may_reask(created_at, now), give_up) {
                        // YooKassa may have forgotten the key (or the exact first body is not
                        // known): asking again could charge twice.
                        (None, _, _) | (_, false, _) => {
                            self.mark_unknown(
                                payment_id,
                                Unanswered::TooOld {
                                    claimed_at: created_at,
                                },
                                now,
                            )
                            .await?
                        }
                        (Some(_), true, Some(reason)) => {
                            // With the method gone, the plan off sale or the grace over it is
                            // not sent again; should the first ask have charged after all, its
                            // webhook still applies it once.
                            self.mark_unknown(payment_id, Unanswered::GivenUp { reason }, now)
                                .await?
                        }
                        (Some(body_text), true, None) => {
                            let outcome = self
                                .ask_yookassa(
                                    ctx,
                                    payment_id,
                                    record.idempotence_key,
                                    &body_text,
                                    now,
                                )
                                .await?;
                            report.count_asked(&outcome);
                            continue;
                        }
                    }
                }
            };
            report.count(&outcome);
        }
        Ok(())
    }

    /// One renewal run (the bot's job; safe on every replica at once): settles or re-asks the
    /// charges still open, then charges the periods due at `now`.
    pub async fn run_renewals(
        &self,
        ctx: RenewalContext<'_>,
        now: Timestamp,
        limit: i64,
    ) -> Result<RenewalReport, LedgerError> {
        let mut report = RenewalReport::default();
        self.recover_open_charges(ctx, now, &mut report).await?;
        for due in self.due_renewals(now, limit).await? {
            let outcome = self.charge_renewal(ctx, &due, now).await?;
            if asked_first_time(&outcome) {
                report.count_asked(&outcome);
            } else {
                report.count(&outcome);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yookassa::Card;
    use wgsub_crds::plans::LocalizedText;

    fn card(kind: &str, brand: Option<&str>, last4: Option<&str>) -> PaymentMethod {
        PaymentMethod {
            kind: kind.into(),
            id: "pm-1".into(),
            saved: true,
            card: Some(Card {
                last4: last4.map(str::to_owned),
                expiry_month: Some("07".into()),
                expiry_year: Some("2027".into()),
                card_type: brand.map(str::to_owned),
            }),
        }
    }

    #[test]
    fn a_saved_card_shows_brand_and_last_four_digits_only() {
        let saved = saved_card(&card("bank_card", Some("Visa"), Some("4242")));
        assert_eq!(saved.title, "Visa •••• 4242");
        assert_eq!(saved.expires().as_deref(), Some("07/27"));
        assert_eq!(
            saved_card(&card("bank_card", None, Some("4444"))).title,
            "Card •••• 4444"
        );
        // Anything that is not four digits is not shown.
        assert_eq!(
            saved_card(&card("bank_card", Some("Mir"), Some("4111111111111111"))).title,
            "Mir"
        );
        let wallet = PaymentMethod {
            kind: "yoo_money".into(),
            id: "pm-2".into(),
            saved: true,
            card: None,
        };
        let saved = saved_card(&wallet);
        assert_eq!(saved.title, "YooMoney");
        assert_eq!(saved.expires(), None);
    }

    #[test]
    fn the_idempotence_key_is_one_per_user_and_period() {
        let end: Timestamp = "2026-12-31T00:00:00Z".parse().unwrap();
        assert_eq!(idempotence_key(42, end), idempotence_key(42, end));
        assert_ne!(idempotence_key(42, end), idempotence_key(43, end));
        assert_ne!(
            idempotence_key(42, end),
            idempotence_key(42, end + SignedDuration::from_secs(1))
        );
    }

    #[test]
    fn a_renewal_is_due_from_the_lead_until_the_grace_after_the_end() {
        let end: Timestamp = "2026-12-31T00:00:00Z".parse().unwrap();
        let lead = SignedDuration::from_hours(24);
        let at = |hours: i64| end + SignedDuration::from_hours(hours);
        assert!(!is_due(end, lead, at(-25)));
        assert!(is_due(end, lead, at(-24)));
        assert!(is_due(end, lead, at(0)));
        assert!(is_due(end, lead, at(23)));
        assert!(!is_due(end, lead, at(24)));
        assert_eq!(next_charge_at(end, lead), at(-24));
    }

    #[test]
    fn an_unanswered_claim_is_asked_again_only_within_the_window() {
        let claimed: Timestamp = "2026-12-31T00:00:00Z".parse().unwrap();
        let at = |mins: i64| claimed + SignedDuration::from_mins(mins);
        assert!(may_reask(claimed, at(0)));
        assert!(may_reask(claimed, at(23 * 60 - 1)));
        assert!(!may_reask(claimed, at(23 * 60)));
        assert!(!may_reask(claimed, at(48 * 60)));
        assert!(REASK_WINDOW < SignedDuration::from_hours(24));
    }

    #[test]
    fn only_a_revoked_or_expired_method_is_deleted_on_failure() {
        for reason in [
            "permission_revoked",
            "card_expired",
            "payment_method_restricted",
        ] {
            assert!(removes_method(reason), "{reason}");
        }
        for reason in [
            "insufficient_funds",
            "general_decline",
            "canceled",
            "fraud_suspected",
        ] {
            assert!(!removes_method(reason), "{reason}");
        }
    }

    fn month() -> Plan {
        Plan {
            id: "month".into(),
            title: LocalizedText {
                ru: "Месяц".into(),
                en: "Month".into(),
            },
            days: 30,
            price_minor: 19_900,
            currency: "RUB".into(),
            devices: 1,
            price_stars: None,
            traffic_gib: None,
        }
    }

    #[test]
    fn a_waiting_percentage_is_taken_off_the_renewal_and_nothing_else_changes() {
        let plan = month();
        assert_eq!(renewal_price(&plan, None), plan);
        let charged = renewal_price(&plan, Some(25));
        assert_eq!(charged.price_minor, 14_925);
        assert_eq!(
            Plan {
                price_minor: 19_900,
                ..charged.clone()
            },
            plan
        );
        // Rounded half up, never below one minor unit, as every discounted payment.
        assert_eq!(renewal_price(&plan, Some(33)).price_minor, 13_333);
        assert_eq!(
            renewal_price(
                &Plan {
                    price_minor: 1,
                    ..month()
                },
                Some(99)
            )
            .price_minor,
            1
        );
        let body =
            renewal_charge_body(Uuid::from_u128(7), 42, &charged, "pm-1", "VPN: Month", None);
        assert_eq!(body["amount"]["value"], json!("149.25"));
    }

    #[test]
    fn the_report_counts_asks_and_every_outcome_apart() {
        let failed = ChargeOutcome::Failed {
            reason: "insufficient_funds".into(),
        };
        let given_up = ChargeOutcome::GivenUp {
            reason: REASON_RENEWAL_OFF.into(),
        };
        for asked in [
            ChargeOutcome::Succeeded,
            failed.clone(),
            ChargeOutcome::Pending,
        ] {
            assert!(asked_first_time(&asked), "{asked:?}");
        }
        for not_asked in [
            ChargeOutcome::AlreadyClaimed,
            ChargeOutcome::NoLongerDue,
            ChargeOutcome::Refused {
                reason: REASON_PLAN_UNAVAILABLE.into(),
            },
        ] {
            assert!(!asked_first_time(&not_asked), "{not_asked:?}");
        }
        let mut report = RenewalReport::default();
        report.count_asked(&ChargeOutcome::Succeeded);
        report.count_asked(&failed);
        report.count(&given_up);
        report.count(&ChargeOutcome::Unknown);
        report.count(&ChargeOutcome::AlreadyClaimed);
        assert_eq!(
            report,
            RenewalReport {
                attempted: 2,
                succeeded: 1,
                failed: 1,
                refused: 0,
                pending: 0,
                unknown: 1,
                given_up: 1,
            }
        );
    }

    #[test]
    fn the_charge_uses_the_saved_method_without_confirmation() {
        let plan = Plan {
            id: "month".into(),
            title: LocalizedText {
                ru: "Месяц".into(),
                en: "Month".into(),
            },
            days: 30,
            price_minor: 19_900,
            currency: "RUB".into(),
            devices: 1,
            price_stars: None,
            traffic_gib: None,
        };
        let customer = ReceiptCustomer::Email("user@example.com".into());
        let body = renewal_charge_body(
            Uuid::from_u128(7),
            42,
            &plan,
            "pm-1",
            "VPN: Month",
            Some((&customer, ReceiptSettings { vat_code: 1 })),
        );
        assert_eq!(body["payment_method_id"], json!("pm-1"));
        assert!(body.get("confirmation").is_none());
        assert!(body.get("save_payment_method").is_none());
        assert_eq!(body["capture"], json!(true));
        assert_eq!(body["amount"]["value"], json!("199.00"));
        assert_eq!(body["metadata"]["wgsub_user_id"], json!("42"));
        assert_eq!(
            body["receipt"]["items"][0]["amount"]["value"],
            json!("199.00")
        );
    }
}
