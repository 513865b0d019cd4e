//! Payments: creating one at YooKassa for (user, plan) with our pending record — within the
//! user's limits on open payments and on payments started per window ([`payment_allowance`],
//! decided under the user's row lock so concurrent requests cannot slip past) —, applying a
//! succeeded one exactly once (a primary key on `payment_applications`, not check-then-insert),
//! canceling, and recording refunds. Each ledger change re-folds the user's entitlement and
//! writes the notification outbox row in the same transaction.
//!
//! A payment's status changes only from the status the writer expects
//! ([`Ledger::transition_payment`]: `UPDATE … WHERE status = ANY(expected)`), because two
//! writers can race — a webhook applying the payment while the call that created it at
//! YooKassa is still answering, say. The loser is told what it found and changes nothing: a
//! succeeded payment is never set back to pending or failed.
//!
//! A discount the user redeemed (see [`crate::promo`]) prices every payment created while it
//! waits; applying such a payment re-checks that its amount is the discounted list price and
//! consumes the discount in the same transaction, once: a second payment priced with an
//! already consumed discount is refused as an amount mismatch (nothing credited). Applying a
//! user's first payment rewards their referrer, and refunding it in full revokes that reward
//! (see [`crate::referral`]).

use jiff::{SignedDuration, Timestamp};
use jiff_sqlx::ToSqlx;
use sqlx::FromRow;
use sqlx::postgres::PgRow;
use uuid::Uuid;
use wgsub_crds::plans::Plan;

use crate::entitlement::Entitlement;
use crate::outbox::{NotificationEvent, enqueue, is_first_purchase};
use crate::promo::{discounted_price, waiting_from_row};
use crate::referral::{EarnedBy, revoke_reward, reward_referrer};
use crate::session::RunOn;
use crate::txn::{lock_user, refold};
use crate::yookassa::{
    self, ExpectedPayment, PaymentMismatch, ReceiptSettings, YooKassa, YooKassaError,
    check_succeeded_payment, create_payment_body, parse_amount_minor,
};
use crate::{Ledger, LedgerError};

/// Where a payment stands in our records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Canceled,
    /// YooKassa could not be asked or refused; a webhook may still prove it succeeded.
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(PaymentStatus::Pending),
            "succeeded" => Some(PaymentStatus::Succeeded),
            "canceled" => Some(PaymentStatus::Canceled),
            "failed" => Some(PaymentStatus::Failed),
            _ => None,
        }
    }
}

/// A payment row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: Uuid,
    pub yookassa_id: Option<String>,
    pub user_id: i64,
    pub plan: String,
    pub days: i32,
    pub devices: i32,
    pub amount_minor: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub idempotence_key: Uuid,
    pub confirmation_url: Option<String>,
    pub created_at: Timestamp,
    pub succeeded_at: Option<Timestamp>,
}

impl PaymentRecord {
    /// What a fetched payment must match.
    pub fn expected(&self) -> ExpectedPayment<'_> {
        ExpectedPayment {
            our_id: self.id,
            yookassa_id: self.yookassa_id.as_deref(),
            user_id: self.user_id,
            amount_minor: self.amount_minor,
            currency: &self.currency,
        }
    }
}

const PAYMENT_COLUMNS: &str = "id, yookassa_id, user_id, plan, days, devices, amount_minor, \
    currency, status, idempotence_key, confirmation_url, created_at, succeeded_at";

/// A `payments` row as stored; [`PaymentRow::into_record`] checks its status.
#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: Uuid,
    yookassa_id: Option<String>,
    user_id: i64,
    plan: String,
    days: i32,
    devices: i32,
    amount_minor: i64,
    currency: String,
    status: String,
    idempotence_key: Uuid,
    confirmation_url: Option<String>,
    created_at: jiff_sqlx::Timestamp,
    succeeded_at: Option<jiff_sqlx::Timestamp>,
}

impl PaymentRow {
    fn into_record(self) -> Result<PaymentRecord, LedgerError> {
        Ok(PaymentRecord {
            id: self.id,
            yookassa_id: self.yookassa_id,
            user_id: self.user_id,
            plan: self.plan,
            days: self.days,
            devices: self.devices,
            amount_minor: self.amount_minor,
            currency: self.currency,
            status: parse_status(&self.status)?,
            idempotence_key: self.idempotence_key,
            confirmation_url: self.confirmation_url,
            created_at: self.created_at.to_jiff(),
            succeeded_at: self.succeeded_at.map(jiff_sqlx::Timestamp::to_jiff),
        })
    }
}

fn payment_from_row(row: &PgRow) -> Result<PaymentRecord, LedgerError> {
    PaymentRow::from_row(row)?.into_record()
}

fn parse_status(status: &str) -> Result<PaymentStatus, LedgerError> {
    PaymentStatus::parse(status)
        .ok_or_else(|| LedgerError::Corrupt(format!("payment status {status:?}")))
}

/// How many payments one user may start: at most `max_open` open at once (pending, and
/// created less than `open_for` ago — YooKassa lets a pending redirect payment lapse), and at
/// most `max_per_window` created (in any state) within `window`. Each creation is a row and a
/// YooKassa call, and YooKassa throttles the whole shop, so one account must not loop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentLimits {
    pub max_open: u32,
    pub open_for: SignedDuration,
    pub max_per_window: u32,
    pub window: SignedDuration,
}

impl Default for PaymentLimits {
    /// Three open payments (one per plan and a retry), ten an hour.
    fn default() -> Self {
        Self {
            max_open: 3,
            open_for: SignedDuration::from_hours(1),
            max_per_window: 10,
            window: SignedDuration::from_hours(1),
        }
    }
}

/// One of the user's recent payments, as the limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentPayment {
    pub created_at: Timestamp,
    pub status: PaymentStatus,
}

/// A payment refused by the limits, and when the next one will be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many payments started: try again in {} s", .retry_after.as_secs())]
pub struct PaymentLimited {
    /// Whole seconds, at least one.
    pub retry_after: std::time::Duration,
}

/// Whether the user may start another payment now, given their payments created since
/// `now - max(open_for, window)` (older ones are not looked at).
pub fn payment_allowance(
    limits: &PaymentLimits,
    recent: &[RecentPayment],
    now: Timestamp,
) -> Result<(), PaymentLimited> {
    // When the count of `at` (creation instants) within `span` falls below `max`: the
    // (len - max + 1)-th newest must leave the span first.
    let free_at = |mut at: Vec<Timestamp>, max: u32, span: SignedDuration| -> Option<Timestamp> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if at.len() < max {
            return None;
        }
        at.sort();
        Some(at[at.len() - max] + span)
    };
    let in_span = |span: SignedDuration, open_only: bool| -> Vec<Timestamp> {
        recent
            .iter()
            .filter(|p| p.created_at > now - span && p.created_at <= now)
            .filter(|p| !open_only || p.status == PaymentStatus::Pending)
            .map(|p| p.created_at)
            .collect()
    };
    let open = free_at(
        in_span(limits.open_for, true),
        limits.max_open,
        limits.open_for,
    );
    let rate = free_at(
        in_span(limits.window, false),
        limits.max_per_window,
        limits.window,
    );
    match open.max(rate) {
        None => Ok(()),
        Some(free_at) => {
            let wait = free_at.duration_since(now).as_secs_f64().ceil().max(1.0);
            Err(PaymentLimited {
                retry_after: std::time::Duration::from_secs_f64(wait),
            })
        }
    }
}

/// A purchase to start.
#[derive(Debug, Clone, Copy)]
pub struct PaymentOrder<'a> {
    pub user_id: i64,
    pub plan: &'a Plan,
    /// Where YooKassa sends the user back after paying.
    pub return_url: &'a str,
    /// `Some` when 54-FZ receipts are on: the user must have an e-mail or phone.
    pub receipt: Option<ReceiptSettings>,
}

/// A payment created at YooKassa.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedPayment {
    pub id: Uuid,
    pub yookassa_id: String,
    /// Where the user pays.
    pub confirmation_url: String,
    /// What the user is charged (minor units): the plan's price, less the discount if any.
    pub amount_minor: i64,
    /// The waiting discount this payment was priced with.
    pub percent_off: Option<u8>,
}

/// Why a payment could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("receipts are on and the user has no e-mail or phone")]
    ContactRequired,
    #[error(transparent)]
    YooKassa(#[from] YooKassaError),
    #[error("YooKassa returned no confirmation URL")]
    NoConfirmationUrl,
    #[error(transparent)]
    Limited(#[from] PaymentLimited),
}

/// What a conditional status change ([`Ledger::transition_payment`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The payment was in an expected status and now has the new one.
    Done,
    /// It was not — another writer changed it first, or there is no such payment (`None`) —
    /// and it was left as it was.
    Lost { found: Option<PaymentStatus> },
}

/// What applying a succeeded payment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied now; the user's new entitlement.
    Applied {
        user_id: i64,
        entitlement: Entitlement,
    },
    /// It had been applied before; nothing changed.
    AlreadyApplied { user_id: i64 },
}

/// Why a payment was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("payment {0} is not in the ledger")]
    UnknownPayment(Uuid),
    #[error(transparent)]
    Mismatch(#[from] PaymentMismatch),
}

/// What recording a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Recorded {
        user_id: i64,
        entitlement: Entitlement,
    },
    AlreadyRecorded,
    /// The refund is of a payment wgsub does not know or never applied.
    UnknownPayment,
    /// YooKassa does not (yet) say the refund succeeded.
    NotSucceeded,
}

impl Ledger {
    /// Creates a payment for the plan: checks the user's [`PaymentLimits`], records it as pending
    /// with a fresh idempotence key, asks YooKassa (retrying with the same key) and returns
    /// where the user pays. A refused payment makes no row and no YooKassa call.
    pub async fn create_payment(
        &self,
        yookassa: &YooKassa,
        order: PaymentOrder<'_>,
        now: Timestamp,
    ) -> Result<CreatedPayment, PaymentError> {
        self.create_payment_saving_card(yookassa, order, false, now)
            .await
    }

    /// [`Ledger::create_payment`], asking YooKassa to save the card when `save_card` (the user
    /// agreed to automatic renewal, see [`crate::renewal`]): the payment remembers the consent
    /// and the card is stored when the applied payment shows it saved.
    pub async fn create_payment_saving_card(
        &self,
        yookassa: &YooKassa,
        order: PaymentOrder<'_>,
        save_card: bool,
        now: Timestamp,
    ) -> Result<CreatedPayment, PaymentError> {
        let user = self
            .user(order.user_id)
            .await?
            .ok_or(LedgerError::UnknownUser(order.user_id))?;
        let receipt = match order.receipt {
            Some(settings) => Some((
                user.receipt_customer()
                    .ok_or(PaymentError::ContactRequired)?,
                settings,
            )),
            None => None,
        };
        let id = Uuid::new_v4();
        let idempotence_key = Uuid::new_v4();
        let plan = order.plan;
        let limits = self.payment_limits;
        let mut tx = self.pool.begin().await.map_err(LedgerError::from)?;
        lock_user(&mut tx, user.telegram_id, self.persistent).await?;
        let since = now - limits.open_for.max(limits.window);
        let recent = sqlx::query_as::<_, (jiff_sqlx::Timestamp, String)>(
            "SELECT created_at, status FROM payments WHERE user_id = $1 AND created_at > $2",
        )
        .persistent(self.persistent)
        .bind(user.telegram_id)
        .bind(since.to_sqlx())
        .fetch_all(&mut *tx)
        .await
        .map_err(LedgerError::from)?
        .into_iter()
        .map(|(created_at, status)| {
            Ok(RecentPayment {
                created_at: created_at.to_jiff(),
                status: parse_status(&status)?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
        payment_allowance(&limits, &recent, now)?;
        let discount = sqlx::query(
            "SELECT id, code, percent_off FROM promo_redemptions \
             WHERE user_id = $1 AND percent_off IS NOT NULL AND consumed_by IS NULL",
        )
        .persistent(self.persistent)
        .bind(user.telegram_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(LedgerError::from)?
        .as_ref()
        .map(waiting_from_row)
        .transpose()?;
        let amount_minor = discount.as_ref().map_or(plan.price_minor, |discount| {
            discounted_price(plan.price_minor, discount.percent_off)
        });
        sqlx::query(
            "INSERT INTO payments (id, user_id, plan, days, devices, amount_minor, currency, \
                                   status, idempotence_key, created_at, updated_at, \
                                   list_amount_minor, discount_redemption_id, save_card, \
                                   traffic_bytes, traffic_period_days) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $9, $10, $11, $12, $13, $14)",
        )
        .bind(id)
        .bind(user.telegram_id)
        .bind(&plan.id)
        .bind(i32::try_from(plan.days).unwrap_or(i32::MAX))
        .bind(i32::from(plan.devices))
        .bind(amount_minor)
        .bind(&plan.currency)
        .bind(idempotence_key)
        .bind(now.to_sqlx())
        .bind(discount.as_ref().map(|_| plan.price_minor))
        .bind(discount.as_ref().map(|discount| discount.redemption_id))
        .bind(save_card)
        .bind(plan.traffic_quota().map(|quota| quota.bytes))
        .bind(plan.traffic_quota().map(|quota| quota.period_days))
        .persistent(self.persistent)
        .execute(&mut *tx)
        .await
        .map_err(LedgerError::from)?;
        tx.commit().await.map_err(LedgerError::from)?;
        let description = format!(
            "VPN: {}",
            plan.title.for_language(user.language_code.as_deref())
        );
        // YooKassa is asked for what the user is charged (the receipt's item too).
        let priced = Plan {
            price_minor: amount_minor,
            ..plan.clone()
        };
        let mut body = create_payment_body(
            id,
            user.telegram_id,
            &priced,
            &description,
            order.return_url,
            receipt
                .as_ref()
                .map(|(customer, settings)| (customer, *settings)),
        );
        if save_card {
            body["save_payment_method"] = serde_json::Value::Bool(true);
        }
        let created = match yookassa
            .create_payment::<yookassa::Payment>(&body, &idempotence_key.to_string())
            .await
        {
            Ok(created) => created,
            Err(error) => {
                // Failed only if still pending: a webhook may have proven it succeeded meanwhile.
                let marked = self
                    .transition_payment(id, &[PaymentStatus::Pending], PaymentStatus::Failed, now)
                    .await?;
                if let Transition::Lost { found } = marked {
                    tracing::warn!(payment = %id, ?found, "creating the payment failed after it had changed; left as it was");
                }
                return Err(error.into());
            }
        };
        let url = created
            .confirmation
            .as_ref()
            .and_then(|c| c.confirmation_url.clone());
        // The id and the URL are facts whatever the status is now; the status is not written
        // (a webhook may have applied the payment meanwhile) unless YooKassa already canceled it.
        sqlx::query(
            "UPDATE payments SET yookassa_id = COALESCE(yookassa_id, $2), confirmation_url = $3, \
                updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(&created.id)
        .bind(url.as_deref())
        .bind(now.to_sqlx())
        .execute_on(self)
        .await
        .map_err(LedgerError::from)?;
        if created.status == "canceled" {
            let canceled = self
                .transition_payment(id, &[PaymentStatus::Pending], PaymentStatus::Canceled, now)
                .await?;
            if let Transition::Lost { found } = canceled {
                tracing::warn!(payment = %id, ?found, "YooKassa created the payment canceled after it had changed; left as it was");
            }
        }
        let confirmation_url = url.ok_or(PaymentError::NoConfirmationUrl)?;
        Ok(CreatedPayment {
            id,
            yookassa_id: created.id,
            confirmation_url,
            amount_minor,
            percent_off: discount.map(|discount| discount.percent_off),
        })
    }

    /// Sets payment `id` to `to` only if its status is one of `expected`, in one statement
    /// (`UPDATE … WHERE status = ANY(expected)`: a concurrent writer that changed it first makes
    /// this one [`Transition::Lost`], never overwritten).
    pub async fn transition_payment(
        &self,
        id: Uuid,
        expected: &[PaymentStatus],
        to: PaymentStatus,
        now: Timestamp,
    ) -> Result<Transition, LedgerError> {
        let expected: Vec<&str> = expected.iter().map(|status| status.as_str()).collect();
        let done = sqlx::query(
            "UPDATE payments SET status = $3, updated_at = $4 WHERE id = $1 AND status = ANY($2)",
        )
        .bind(id)
        .bind(&expected)
        .bind(to.as_str())
        .bind(now.to_sqlx())
        .execute_on(self)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Transition::Done);
        }
        let found = self.payment(id).await?.map(|payment| payment.status);
        Ok(Transition::Lost { found })
    }

    /// Our payment with this id.
    pub async fn payment(&self, id: Uuid) -> Result<Option<PaymentRecord>, LedgerError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional_on(self)
            .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    /// Our payment with this YooKassa id.
    pub async fn payment_by_yookassa_id(
        &self,
        yookassa_id: &str,
    ) -> Result<Option<PaymentRecord>, LedgerError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE yookassa_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(yookassa_id)
            .fetch_optional_on(self)
            .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    /// The payment a fetched YooKassa payment stands for: by its YooKassa id, or (when our
    /// create call never learnt the id) by the payment id in its metadata.
    pub async fn payment_for(
        &self,
        fetched: &yookassa::Payment,
    ) -> Result<Option<PaymentRecord>, LedgerError> {
        if let Some(record) = self.payment_by_yookassa_id(&fetched.id).await? {
            return Ok(Some(record));
        }
        let Some(ours) = fetched
            .metadata
            .get(yookassa::METADATA_PAYMENT_ID)
            .and_then(|id| id.parse::<Uuid>().ok())
        else {
            return Ok(None);
        };
        Ok(self
            .payment(ours)
            .await?
            .filter(|record| record.yookassa_id.is_none()))
    }

    /// Applies a payment YooKassa says succeeded, once: checks it against our record, then in
    /// one transaction records the application (primary key), marks the payment succeeded,
    /// re-folds the user's entitlement and writes the outbox row.
    pub async fn apply_payment(
        &self,
        payment_id: Uuid,
        fetched: &yookassa::Payment,
        now: Timestamp,
    ) -> Result<ApplyOutcome, ApplyError> {
        let record = self
            .payment(payment_id)
            .await?
            .ok_or(ApplyError::UnknownPayment(payment_id))?;
        check_succeeded_payment(&record.expected(), fetched)?;
        let succeeded_at = fetched.captured_at.unwrap_or(now);
        let mut tx = self.pool.begin().await.map_err(LedgerError::from)?;
        lock_user(&mut tx, record.user_id, self.persistent).await?;
        let inserted = sqlx::query(
            "INSERT INTO payment_applications (payment_id, applied_at) VALUES ($1, $2) \
             ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id",
        )
        .persistent(self.persistent)
        .bind(record.id)
        .bind(now.to_sqlx())
        .fetch_optional(&mut *tx)
        .await
        .map_err(LedgerError::from)?;
        if inserted.is_none() {
            tx.rollback().await.map_err(LedgerError::from)?;
            return Ok(ApplyOutcome::AlreadyApplied {
                user_id: record.user_id,
            });
        }
        if let Err(mismatch) = consume_discount(&mut tx, self.persistent, &record, now).await? {
            tx.rollback().await.map_err(LedgerError::from)?;
            return Err(mismatch.into());
        }
        sqlx::query(
            "UPDATE payments SET status = 'succeeded', succeeded_at = $2, updated_at = $3, \
                yookassa_id = COALESCE(yookassa_id, $4) WHERE id = $1",
        )
        .persistent(self.persistent)
        .bind(record.id)
        .bind(succeeded_at.to_sqlx())
        .bind(now.to_sqlx())
        .bind(&fetched.id)
        .execute(&mut *tx)
        .await
        .map_err(LedgerError::from)?;
        let (entitlement, _) = refold(&mut tx, record.user_id, self.persistent).await?;
        let event = NotificationEvent::PaymentSucceeded {
            payment_id: record.id,
            plan: record.plan.clone(),
            amount_minor: record.amount_minor,
            currency: record.currency.clone(),
            paid_until: entitlement.paid_until,
            first_purchase: is_first_purchase(&mut tx, self.persistent, record.user_id).await?,
        };
        enqueue(&mut tx, self.persistent, record.user_id, &event, now).await?;
        reward_referrer(
            &mut tx,
            self.persistent,
            record.user_id,
            EarnedBy::YooKassa(record.id),
            self.referral_days,
            now,
        )
        .await?;
        tx.commit().await.map_err(LedgerError::from)?;
        Ok(ApplyOutcome::Applied {
            user_id: record.user_id,
            entitlement,
        })
    }

    /// Marks a payment canceled (YooKassa said so); false when it was not pending or failed.
    pub async fn cancel_payment(
        &self,
        payment_id: Uuid,
        now: Timestamp,
    ) -> Result<bool, LedgerError> {
        let canceled = self
            .transition_payment(
                payment_id,
                &[PaymentStatus::Pending, PaymentStatus::Failed],
                PaymentStatus::Canceled,
                now,
            )
            .await?;
        Ok(canceled == Transition::Done)
    }

    /// Records a refund YooKassa reports (fetched from YooKassa, not taken from a webhook body),
    /// once per refund id; a refund of the full amount takes the payment out of the fold.
    pub async fn record_refund(
        &self,
        refund: &yookassa::Refund,
        now: Timestamp,
    ) -> Result<RefundOutcome, LedgerError> {
        if refund.status != "succeeded" {
            return Ok(RefundOutcome::NotSucceeded);
        }
        let Some(payment) = self.payment_by_yookassa_id(&refund.payment_id).await? else {
            return Ok(RefundOutcome::UnknownPayment);
        };
        if payment.status != PaymentStatus::Succeeded {
            return Ok(RefundOutcome::UnknownPayment);
        }
        let amount_minor = parse_amount_minor(&refund.amount.value)
            .filter(|amount| *amount > 0)
            .ok_or_else(|| {
                LedgerError::Invalid(format!("refund amount {:?}", refund.amount.value))
            })?;
        if refund.amount.currency != payment.currency {
            return Err(LedgerError::Invalid(format!(
                "refund currency {} differs from the payment's {}",
                refund.amount.currency, payment.currency
            )));
        }
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, payment.user_id, self.persistent).await?;
        let inserted = sqlx::query(
            "INSERT INTO refunds (yookassa_id, payment_id, amount_minor, currency, refunded_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (yookassa_id) DO NOTHING RETURNING yookassa_id",
        )
        .persistent(self.persistent)
        .bind(&refund.id)
        .bind(payment.id)
        .bind(amount_minor)
        .bind(&refund.amount.currency)
        .bind(refund.created_at.unwrap_or(now).to_sqlx())
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            tx.rollback().await?;
            return Ok(RefundOutcome::AlreadyRecorded);
        }
        let (entitlement, _) = refold(&mut tx, payment.user_id, self.persistent).await?;
        let event = NotificationEvent::RefundRecorded {
            payment_id: payment.id,
            amount_minor,
            currency: payment.currency.clone(),
            paid_until: entitlement.paid_until,
        };
        enqueue(&mut tx, self.persistent, payment.user_id, &event, now).await?;
        let refunded: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount_minor), 0)::BIGINT AS refunded FROM refunds \
             WHERE payment_id = $1",
        )
        .persistent(self.persistent)
        .bind(payment.id)
        .fetch_one(&mut *tx)
        .await?;
        if refunded >= payment.amount_minor {
            revoke_reward(
                &mut tx,
                self.persistent,
                EarnedBy::YooKassa(payment.id),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(RefundOutcome::Recorded {
            user_id: payment.user_id,
            entitlement,
        })
    }
}

/// The discount a payment was priced with, if any.
#[derive(sqlx::FromRow)]
struct PricedWith {
    list_amount_minor: Option<i64>,
    discount_redemption_id: Option<i64>,
    percent_off: Option<i32>,
}

/// In the transaction applying `record` (the user's row locked, the application inserted):
/// when the payment was priced with a discount, checks its amount is that discount off the
/// list price and consumes the discount — unless another payment consumed it first, which
/// makes this payment's amount wrong (the full price was owed).
async fn consume_discount(
    conn: &mut sqlx::PgConnection,
    persistent: bool,
    record: &PaymentRecord,
    now: Timestamp,
) -> Result<Result<(), PaymentMismatch>, LedgerError> {
    let discount = sqlx::query_as::<_, PricedWith>(
        "SELECT p.list_amount_minor, p.discount_redemption_id, r.percent_off \
         FROM payments p LEFT JOIN promo_redemptions r ON r.id = p.discount_redemption_id \
         WHERE p.id = $1",
    )
    .persistent(persistent)
    .bind(record.id)
    .fetch_one(&mut *conn)
    .await?;
    let Some(redemption) = discount.discount_redemption_id else {
        return Ok(Ok(()));
    };
    let list: i64 = discount
        .list_amount_minor
        .ok_or_else(|| LedgerError::Corrupt(format!("payment {} has no list price", record.id)))?;
    let percent = discount
        .percent_off
        .and_then(|percent| u8::try_from(percent).ok())
        .ok_or_else(|| LedgerError::Corrupt(format!("redemption {redemption} has no discount")))?;
    let owed = discounted_price(list, percent);
    if record.amount_minor != owed {
        return Ok(Err(PaymentMismatch::Amount {
            expected: owed,
            got: record.amount_minor.to_string(),
        }));
    }
    let consumed = sqlx::query(
        "UPDATE promo_redemptions SET consumed_by = $2, consumed_at = $3 \
         WHERE id = $1 AND consumed_by IS NULL",
    )
    .persistent(persistent)
    .bind(redemption)
    .bind(record.id)
    .bind(now.to_sqlx())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if consumed == 1 {
        Ok(Ok(()))
    } else {
        Ok(Err(PaymentMismatch::Amount {
            expected: list,
            got: record.amount_minor.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: &str = "2026-12-01T12:00:00Z";

    fn at(minutes_ago: i64) -> Timestamp {
        NOW.parse::<Timestamp>().unwrap() - SignedDuration::from_mins(minutes_ago)
    }

    fn payment(minutes_ago: i64, status: PaymentStatus) -> RecentPayment {
        RecentPayment {
            created_at: at(minutes_ago),
            status,
        }
    }

    fn limits() -> PaymentLimits {
        PaymentLimits {
            max_open: 2,
            open_for: SignedDuration::from_mins(60),
            max_per_window: 4,
            window: SignedDuration::from_mins(30),
        }
    }

    #[test]
    fn open_payments_are_capped_until_the_oldest_lapses() {
        let now = at(0);
        assert_eq!(payment_allowance(&limits(), &[], now), Ok(()));
        let one = [payment(50, PaymentStatus::Pending)];
        assert_eq!(payment_allowance(&limits(), &one, now), Ok(()));
        let two = [
            payment(50, PaymentStatus::Pending),
            payment(40, PaymentStatus::Pending),
        ];
        // The one made 50 minutes ago stops counting as open in 10 minutes.
        assert_eq!(
            payment_allowance(&limits(), &two, now),
            Err(PaymentLimited {
                retry_after: Duration::from_secs(600)
            })
        );
        // Paid, canceled or failed payments are not open; an hour-old pending one has lapsed.
        for status in [
            PaymentStatus::Succeeded,
            PaymentStatus::Canceled,
            PaymentStatus::Failed,
        ] {
            let closed = [payment(50, PaymentStatus::Pending), payment(40, status)];
            assert_eq!(payment_allowance(&limits(), &closed, now), Ok(()));
        }
        let lapsed = [
            payment(61, PaymentStatus::Pending),
            payment(40, PaymentStatus::Pending),
        ];
        assert_eq!(payment_allowance(&limits(), &lapsed, now), Ok(()));
    }

    #[test]
    fn payments_started_per_window_are_capped_whatever_became_of_them() {
        let now = at(0);
        let four = [
            payment(29, PaymentStatus::Canceled),
            payment(20, PaymentStatus::Failed),
            payment(10, PaymentStatus::Succeeded),
            payment(5, PaymentStatus::Canceled),
        ];
        // The one made 29 minutes ago leaves the 30-minute window in a minute.
        assert_eq!(
            payment_allowance(&limits(), &four, now),
            Err(PaymentLimited {
                retry_after: Duration::from_secs(60)
            })
        );
        assert_eq!(payment_allowance(&limits(), &four[1..], now), Ok(()));
        // Both limits hit: the later of the two.
        let both = [
            payment(29, PaymentStatus::Pending),
            payment(28, PaymentStatus::Canceled),
            payment(27, PaymentStatus::Canceled),
            payment(2, PaymentStatus::Pending),
        ];
        assert_eq!(
            payment_allowance(&limits(), &both, now),
            Err(PaymentLimited {
                retry_after: Duration::from_secs(31 * 60)
            })
        );
    }

    #[test]
    fn the_wait_is_whole_seconds_and_never_zero() {
        let now = at(0) + SignedDuration::from_millis(1500);
        let recent = [
            payment(60, PaymentStatus::Pending),
            payment(1, PaymentStatus::Pending),
        ];
        // The oldest, made an hour before `at(0)`, lapsed 1.5 s ago.
        assert_eq!(payment_allowance(&limits(), &recent, now), Ok(()));
        let recent = [
            payment(59, PaymentStatus::Pending),
            payment(1, PaymentStatus::Pending),
        ];
        assert_eq!(
            payment_allowance(&limits(), &recent, now),
            Err(PaymentLimited {
                retry_after: Duration::from_secs(59)
            })
        );
        let just = [
            RecentPayment {
                created_at: at(60) + SignedDuration::from_millis(1600),
                status: PaymentStatus::Pending,
            },
            payment(1, PaymentStatus::Pending),
        ];
        assert_eq!(
            payment_allowance(&limits(), &just, now),
            Err(PaymentLimited {
                retry_after: Duration::from_secs(1)
            })
        );
    }
}
