//! Payments in Telegram Stars (`XTR`): the signed invoice payload the bot and the Mini App put
//! on an invoice, the checks of a `pre_checkout_query` and of a `successful_payment` against
//! the plan catalogue (pure), and the ledger side: a Stars payment applied once per
//! `telegram_payment_charge_id` (a unique constraint, not check-then-insert), a refund recorded
//! once (a primary key), both re-folding `paidUntil` like YooKassa payments and writing the
//! notification outbox row in the same transaction. A referee's first payment in Stars rewards
//! their referrer and its refund revokes the reward, in the same transaction, by the rules of
//! [`crate::referral`].
//!
//! The payload is `st1.<user id>.<plan id>.<stars>.<signature>`, the signature the first 16
//! bytes (hex) of HMAC-SHA256 over the rest, keyed with a key derived from the bot token: only
//! the bot (and the API, which holds the same token) can make one, and Telegram hands it back
//! unchanged in the pre-checkout query and the successful payment.

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use jiff_sqlx::ToSqlx;
use serde_json::json;
use sha2::Sha256;
use sqlx::FromRow;
use sqlx::postgres::{PgConnection, PgRow};
use uuid::Uuid;
use wgsub_crds::plans::{Plan, PlanCatalogue};
use wgsub_crds::resources::TrafficQuota;
use zeroize::Zeroizing;

use crate::audit::AdminAction;
use crate::entitlement::{Entitlement, PaymentFact};
use crate::grants::record_admin_action;
use crate::outbox::{NotificationEvent, enqueue, is_first_purchase};
use crate::referral::{EarnedBy, revoke_reward, reward_referrer};
use crate::session::RunOn;
use crate::txn::{lock_user, refold};
use crate::{Ledger, LedgerError};

/// The currency code of Telegram Stars.
pub const STARS_CURRENCY: &str = "XTR";

/// The version tag that starts every payload.
const PAYLOAD_TAG: &str = "st1";
/// Bytes of the HMAC kept in the payload (hex: twice as many characters).
const SIGNATURE_BYTES: usize = 16;
/// Telegram's limit on an invoice payload.
pub const MAX_PAYLOAD_BYTES: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// The key invoice payloads are signed with, derived from the bot token (so the bot and the
/// API, which both hold the token, need no other secret).
pub struct InvoiceKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for InvoiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvoiceKey(<redacted>)")
    }
}

impl InvoiceKey {
    /// HMAC-SHA256 keyed with the bot token over a fixed label: a key of its own, so a payload
    /// signature says nothing usable about the token or any other signature made with it.
    pub fn from_bot_token(bot_token: &str) -> Self {
        let mut mac =
            HmacSha256::new_from_slice(bot_token.as_bytes()).expect("HMAC takes any key length");
        mac.update(b"wgsub stars invoice payload v1");
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&mac.finalize().into_bytes());
        Self(key)
    }

    fn mac(&self, signed: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        mac
    }
}

/// What an invoice is for: who may pay it, which plan and at what price in Stars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePayload {
    pub user_id: i64,
    pub plan: String,
    pub stars: u32,
}

/// Why an invoice payload was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the invoice payload does not parse")]
    Malformed,
    #[error("the invoice payload's signature does not match")]
    BadSignature,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            let pair = text.get(i..i + 2)?;
            if !pair
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return None;
            }
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

fn plan_id_ok(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit())
}

impl InvoicePayload {
    /// The signed payload text (at most [`MAX_PAYLOAD_BYTES`] for any valid plan id and user).
    pub fn encode(&self, key: &InvoiceKey) -> String {
        let signed = format!(
            "{PAYLOAD_TAG}.{}.{}.{}",
            self.user_id, self.plan, self.stars
        );
        let tag = key.mac(&signed).finalize().into_bytes();
        format!("{signed}.{}", hex(&tag[..SIGNATURE_BYTES]))
    }

    /// Parses and verifies a payload (constant-time signature comparison).
    pub fn decode(text: &str, key: &InvoiceKey) -> Result<Self, PayloadError> {
        if text.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::Malformed);
        }
        let parts: Vec<&str> = text.split('.').collect();
        let [tag, user, plan, stars, signature] = parts.as_slice() else {
            return Err(PayloadError::Malformed);
        };
        if *tag != PAYLOAD_TAG || !digits(user) || !digits(stars) || !plan_id_ok(plan) {
            return Err(PayloadError::Malformed);
        }
        let user_id = user
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or(PayloadError::Malformed)?;
        let stars = stars
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(PayloadError::Malformed)?;
        let signature = unhex(signature)
            .filter(|bytes| bytes.len() == SIGNATURE_BYTES)
            .ok_or(PayloadError::Malformed)?;
        let signed = &text[..text.len() - 2 * SIGNATURE_BYTES - 1];
        key.mac(signed)
            .verify_truncated_left(&signature)
            .map_err(|_| PayloadError::BadSignature)?;
        Ok(Self {
            user_id,
            plan: (*plan).to_owned(),
            stars,
        })
    }
}

/// The invoice a user gets for a plan: `None` when the plan is not sold for Stars.
pub fn invoice_for(user_id: i64, plan: &Plan) -> Option<InvoicePayload> {
    plan.price_stars.map(|stars| InvoicePayload {
        user_id,
        plan: plan.id.clone(),
        stars,
    })
}

/// The invoice's title in the user's language (Telegram takes 1–32 characters); the bot and
/// the Mini App's invoice link show the same one.
pub fn invoice_title(language_code: Option<&str>, plan: &Plan) -> String {
    let title = format!("VPN: {}", plan.title.for_language(language_code));
    title.chars().take(32).collect()
}

/// The invoice's description in the user's language (Telegram takes 1–255 characters).
pub fn invoice_description(language_code: Option<&str>, plan: &Plan) -> String {
    let english = language_code.is_some_and(|code| code.to_ascii_lowercase().starts_with("en"));
    let text = if english {
        format!(
            "VPN subscription: {} days, {} device{}. It starts the moment you pay.",
            plan.days,
            plan.devices,
            if plan.devices == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "Подписка на VPN: {} дн., устройств: {}. Включится сразу после оплаты.",
            plan.days, plan.devices
        )
    };
    text.chars().take(255).collect()
}

/// What Telegram says is being paid (a pre-checkout query or a successful payment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentFacts<'a> {
    /// Who pays (the update's sender).
    pub payer_id: i64,
    pub currency: &'a str,
    pub total_amount: u32,
    pub invoice_payload: &'a str,
}

/// Where the payer stands in the ledger, as the pre-checkout check needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buyer {
    /// Not in the ledger (never used /start or the Mini App).
    Unknown,
    Suspended,
    Allowed,
}

/// Why a Stars payment is refused (before it, in the pre-checkout query, or after it, when it
/// cannot be credited and is refunded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StarsRefusal {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("the invoice was made for user {invoiced}, paid by {payer}")]
    OtherUser { invoiced: i64, payer: i64 },
    #[error("currency {0:?} is not XTR")]
    Currency(String),
    #[error("plan {0:?} does not exist")]
    UnknownPlan(String),
    #[error("plan {0:?} is not sold for Stars")]
    NotForStars(String),
    #[error("plan {plan:?} costs {now} stars, the invoice says {invoiced}")]
    PriceChanged {
        plan: String,
        invoiced: u32,
        now: u32,
    },
    #[error("the invoice says {invoiced} stars, Telegram says {paid}")]
    AmountMismatch { invoiced: u32, paid: u32 },
    #[error("the payer is not registered")]
    UnknownBuyer,
    #[error("the payer is suspended")]
    Suspended,
}

/// Checks what a successful payment carries: a valid payload of this payer, in Stars, of the
/// invoiced amount, for a plan that is still sold for Stars. The plan's price may have changed
/// since the pre-checkout answer: the payment is credited at the price the user agreed to.
pub fn check_payment<'c>(
    catalogue: &'c PlanCatalogue,
    key: &InvoiceKey,
    facts: PaymentFacts<'_>,
) -> Result<(InvoicePayload, &'c Plan), StarsRefusal> {
    let payload = InvoicePayload::decode(facts.invoice_payload, key)?;
    if payload.user_id != facts.payer_id {
        return Err(StarsRefusal::OtherUser {
            invoiced: payload.user_id,
            payer: facts.payer_id,
        });
    }
    if facts.currency != STARS_CURRENCY {
        return Err(StarsRefusal::Currency(facts.currency.to_owned()));
    }
    if facts.total_amount != payload.stars {
        return Err(StarsRefusal::AmountMismatch {
            invoiced: payload.stars,
            paid: facts.total_amount,
        });
    }
    let plan = catalogue
        .get(&payload.plan)
        .ok_or_else(|| StarsRefusal::UnknownPlan(payload.plan.clone()))?;
    if plan.price_stars.is_none() {
        return Err(StarsRefusal::NotForStars(plan.id.clone()));
    }
    Ok((payload, plan))
}

/// The pre-checkout decision: everything [`check_payment`] checks, the plan's current price in
/// Stars equal to the invoiced one, and a payer who may buy.
pub fn check_checkout<'c>(
    catalogue: &'c PlanCatalogue,
    key: &InvoiceKey,
    facts: PaymentFacts<'_>,
    buyer: Buyer,
) -> Result<(InvoicePayload, &'c Plan), StarsRefusal> {
    let (payload, plan) = check_payment(catalogue, key, facts)?;
    match plan.price_stars {
        Some(now) if now != payload.stars => {
            return Err(StarsRefusal::PriceChanged {
                plan: plan.id.clone(),
                invoiced: payload.stars,
                now,
            });
        }
        _ => {}
    }
    match buyer {
        Buyer::Unknown => Err(StarsRefusal::UnknownBuyer),
        Buyer::Suspended => Err(StarsRefusal::Suspended),
        Buyer::Allowed => Ok((payload, plan)),
    }
}

/// A verified Stars payment, ready to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StarPurchase {
    pub telegram_payment_charge_id: String,
    pub user_id: i64,
    pub plan: String,
    pub days: i32,
    pub devices: i32,
    /// The plan's data quota at purchase (`None`: none).
    pub traffic_quota: Option<TrafficQuota>,
    pub stars: i64,
    pub invoice_payload: String,
    pub paid_at: Timestamp,
}

impl StarPurchase {
    /// The purchase a checked payment stands for: the plan's days, devices and data quota at
    /// the invoiced price.
    pub fn new(
        charge_id: &str,
        payload: &InvoicePayload,
        plan: &Plan,
        invoice_payload: &str,
        paid_at: Timestamp,
    ) -> Self {
        Self {
            telegram_payment_charge_id: charge_id.to_owned(),
            user_id: payload.user_id,
            plan: plan.id.clone(),
            days: i32::try_from(plan.days).unwrap_or(i32::MAX),
            devices: i32::from(plan.devices),
            traffic_quota: plan.traffic_quota(),
            stars: i64::from(payload.stars),
            invoice_payload: invoice_payload.to_owned(),
            paid_at,
        }
    }
}

/// A Stars payment as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StarPaymentRecord {
    pub id: Uuid,
    pub telegram_payment_charge_id: String,
    pub user_id: i64,
    pub plan: String,
    pub days: i32,
    pub devices: i32,
    pub traffic_quota: Option<TrafficQuota>,
    pub stars: i64,
    pub paid_at: Timestamp,
    pub refunded_at: Option<Timestamp>,
}

impl StarPaymentRecord {
    /// The payment in the fold's vocabulary: a payment whose amount is its Stars, refunded in
    /// full when a refund was recorded.
    pub fn fact(&self) -> PaymentFact {
        PaymentFact {
            id: self.id,
            at: self.paid_at,
            days: self.days,
            plan: self.plan.clone(),
            devices: self.devices,
            traffic_quota: self.traffic_quota,
            amount_minor: self.stars,
            refunded_minor: if self.refunded_at.is_some() {
                self.stars
            } else {
                0
            },
        }
    }
}

/// What applying a Stars payment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StarApplyOutcome {
    Applied {
        user_id: i64,
        entitlement: Entitlement,
    },
    /// This `telegram_payment_charge_id` was applied before; nothing changed.
    AlreadyApplied { user_id: i64 },
}

/// What recording a Stars refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StarRefundOutcome {
    Recorded {
        user_id: i64,
        entitlement: Entitlement,
    },
    AlreadyRefunded,
    UnknownPayment,
}

const STAR_COLUMNS: &str = "p.id, p.telegram_payment_charge_id, p.user_id, p.plan, p.days, \
    p.devices, p.traffic_bytes, p.traffic_period_days, p.stars, p.paid_at, r.refunded_at";

/// A star payment row (with its refund) as stored.
#[derive(FromRow)]
struct StarPaymentRow {
    id: Uuid,
    telegram_payment_charge_id: String,
    user_id: i64,
    plan: String,
    days: i32,
    devices: i32,
    traffic_bytes: Option<i64>,
    traffic_period_days: Option<i32>,
    stars: i64,
    paid_at: jiff_sqlx::Timestamp,
    refunded_at: Option<jiff_sqlx::Timestamp>,
}

fn record_from_row(row: &PgRow) -> Result<StarPaymentRecord, LedgerError> {
    let row = StarPaymentRow::from_row(row)?;
    Ok(StarPaymentRecord {
        id: row.id,
        telegram_payment_charge_id: row.telegram_payment_charge_id,
        user_id: row.user_id,
        plan: row.plan,
        days: row.days,
        devices: row.devices,
        traffic_quota: crate::txn::traffic_quota(row.traffic_bytes, row.traffic_period_days),
        stars: row.stars,
        paid_at: row.paid_at.to_jiff(),
        refunded_at: row.refunded_at.map(jiff_sqlx::Timestamp::to_jiff),
    })
}

/// The user's Stars payments as fold facts (for the re-fold of every ledger change).
pub(crate) async fn payment_facts(
    conn: &mut PgConnection,
    user_id: i64,
    persistent: bool,
) -> Result<Vec<PaymentFact>, LedgerError> {
    let sql = format!(
        "SELECT {STAR_COLUMNS} FROM star_payments p \
         LEFT JOIN star_refunds r ON r.payment_id = p.id WHERE p.user_id = $1"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .persistent(persistent)
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| record_from_row(row).map(|record| record.fact()))
        .collect()
}

impl Ledger {
    /// Applies a verified Stars payment once per `telegram_payment_charge_id`: in one
    /// transaction (the user's row locked) inserts it (the unique constraint decides a race),
    /// re-folds the entitlement, writes the outbox row and, when it is a referee's first
    /// payment, rewards the referrer.
    pub async fn apply_star_payment(
        &self,
        purchase: &StarPurchase,
        now: Timestamp,
    ) -> Result<StarApplyOutcome, LedgerError> {
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, purchase.user_id, self.persistent).await?;
        let id = Uuid::new_v4();
        let inserted = sqlx::query(
            "INSERT INTO star_payments (id, telegram_payment_charge_id, user_id, plan, days, \
                                        devices, stars, invoice_payload, paid_at, \
                                        traffic_bytes, traffic_period_days) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (telegram_payment_charge_id) DO NOTHING RETURNING id",
        )
        .persistent(self.persistent)
        .bind(id)
        .bind(&purchase.telegram_payment_charge_id)
        .bind(purchase.user_id)
        .bind(&purchase.plan)
        .bind(purchase.days)
        .bind(purchase.devices)
        .bind(purchase.stars)
        .bind(&purchase.invoice_payload)
        .bind(purchase.paid_at.to_sqlx())
        .bind(purchase.traffic_quota.map(|quota| quota.bytes))
        .bind(purchase.traffic_quota.map(|quota| quota.period_days))
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            tx.rollback().await?;
            return Ok(StarApplyOutcome::AlreadyApplied {
                user_id: purchase.user_id,
            });
        }
        let (entitlement, _) = refold(&mut tx, purchase.user_id, self.persistent).await?;
        let event = NotificationEvent::PaymentSucceeded {
            payment_id: id,
            plan: purchase.plan.clone(),
            amount_minor: purchase.stars,
            currency: STARS_CURRENCY.to_owned(),
            paid_until: entitlement.paid_until,
            first_purchase: is_first_purchase(&mut tx, self.persistent, purchase.user_id).await?,
        };
        enqueue(&mut tx, self.persistent, purchase.user_id, &event, now).await?;
        reward_referrer(
            &mut tx,
            self.persistent,
            purchase.user_id,
            EarnedBy::Stars(id),
            self.referral_days,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(StarApplyOutcome::Applied {
            user_id: purchase.user_id,
            entitlement,
        })
    }

    /// The Stars payment with this Telegram charge id.
    pub async fn star_payment(
        &self,
        charge_id: &str,
    ) -> Result<Option<StarPaymentRecord>, LedgerError> {
        let sql = format!(
            "SELECT {STAR_COLUMNS} FROM star_payments p \
             LEFT JOIN star_refunds r ON r.payment_id = p.id \
             WHERE p.telegram_payment_charge_id = $1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(charge_id)
            .fetch_optional_on(self)
            .await?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// Records that Telegram refunded the Stars payment (`refundStarPayment` succeeded), once:
    /// the refund's primary key decides a race; the payment's time leaves the fold, the
    /// administrator's action is audited, the user is told through the outbox, and a referral
    /// reward the payment earned is revoked (a Stars refund is always of the whole payment).
    pub async fn record_star_refund(
        &self,
        charge_id: &str,
        admin_id: i64,
        reason: &str,
        now: Timestamp,
    ) -> Result<StarRefundOutcome, LedgerError> {
        let Some(payment) = self.star_payment(charge_id).await? else {
            return Ok(StarRefundOutcome::UnknownPayment);
        };
        let mut tx = self.pool.begin().await?;
        lock_user(&mut tx, payment.user_id, self.persistent).await?;
        let inserted = sqlx::query(
            "INSERT INTO star_refunds (payment_id, refunded_at, refunded_by, reason) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id",
        )
        .persistent(self.persistent)
        .bind(payment.id)
        .bind(now.to_sqlx())
        .bind(admin_id)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            tx.rollback().await?;
            return Ok(StarRefundOutcome::AlreadyRefunded);
        }
        let (entitlement, _) = refold(&mut tx, payment.user_id, self.persistent).await?;
        record_admin_action(
            &mut tx,
            self.persistent,
            &AdminAction {
                at: now,
                admin_id,
                user_id: payment.user_id,
                action: "star_refund".into(),
                reason: reason.to_owned(),
                details: json!({
                    "telegram_payment_charge_id": charge_id,
                    "stars": payment.stars,
                    "plan": payment.plan,
                }),
            },
        )
        .await?;
        let event = NotificationEvent::RefundRecorded {
            payment_id: payment.id,
            amount_minor: payment.stars,
            currency: STARS_CURRENCY.to_owned(),
            paid_until: entitlement.paid_until,
        };
        enqueue(&mut tx, self.persistent, payment.user_id, &event, now).await?;
        revoke_reward(&mut tx, self.persistent, EarnedBy::Stars(payment.id), now).await?;
        tx.commit().await?;
        Ok(StarRefundOutcome::Recorded {
            user_id: payment.user_id,
            entitlement,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entitlement::entitlement;

    const CATALOGUE: &str = "plans:
  - {id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 1, priceStars: 150}
  - {id: quarter, title: {ru: Квартал, en: Quarter}, days: 90, priceMinor: 54900, currency: RUB, devices: 3}
";

    fn catalogue() -> PlanCatalogue {
        PlanCatalogue::from_yaml_str(CATALOGUE).unwrap()
    }

    fn key() -> InvoiceKey {
        InvoiceKey::from_bot_token("123456:test-token-made-for-this-test")
    }

    fn payload(user_id: i64, plan: &str, stars: u32) -> String {
        InvoicePayload {
            user_id,
            plan: plan.into(),
            stars,
        }
        .encode(&key())
    }

    fn facts(payer_id: i64, total_amount: u32, invoice_payload: &str) -> PaymentFacts<'_> {
        PaymentFacts {
            payer_id,
            currency: STARS_CURRENCY,
            total_amount,
            invoice_payload,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_payload_round_trips_and_fits_telegrams_limit() {
        let longest = InvoicePayload {
            user_id: 999_999_999_999_999_999,
            plan: "x".repeat(32),
            stars: 10_000,
        };
        let text = longest.encode(&key());
        assert!(text.len() <= MAX_PAYLOAD_BYTES, "{} bytes", text.len());
        assert_eq!(InvoicePayload::decode(&text, &key()), Ok(longest));
        let text = payload(42, "month", 150);
        assert!(text.starts_with("st1.42.month.150."), "{text}");
    }

    #[test]
    fn a_changed_payload_or_another_key_fails_the_signature() {
        let text = payload(42, "month", 150);
        for forged in [
            text.replace(".150.", ".1."),
            text.replace("st1.42.", "st1.43."),
            text.replace(".month.", ".quarter."),
        ] {
            assert_eq!(
                InvoicePayload::decode(&forged, &key()),
                Err(PayloadError::BadSignature),
                "{forged}"
            );
        }
        let other = InvoiceKey::from_bot_token("654321:another-token");
        assert_eq!(
            InvoicePayload::decode(&text, &other),
            Err(PayloadError::BadSignature)
        );
        let flipped = {
            let mut bytes = text.clone().into_bytes();
            let last = bytes.len() - 1;
            bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
            String::from_utf8(bytes).unwrap()
        };
        assert_eq!(
            InvoicePayload::decode(&flipped, &key()),
            Err(PayloadError::BadSignature)
        );
    }

    #[test]
    fn payloads_that_do_not_parse_are_malformed() {
        let good = payload(42, "month", 150);
        let signature = good.rsplit('.').next().unwrap().to_owned();
        for bad in [
            String::new(),
            "hello".into(),
            "st1.42.month.150".into(),
            format!("st2.42.month.150.{signature}"),
            format!("st1.-42.month.150.{signature}"),
            format!("st1.0.month.150.{signature}"),
            format!("st1.42.Month.150.{signature}"),
            format!("st1.42.month.0.{signature}"),
            format!("st1.42.month.+150.{signature}"),
            format!("st1.42.month.99999999999.{signature}"),
            format!("st1.42.month.150.{}", &signature[1..]),
            format!("st1.42.month.150.{}", signature.to_uppercase()),
            format!("st1.42.month.150.{signature}.extra"),
            format!("st1.42.month.150.{}", "g".repeat(32)),
            "x".repeat(MAX_PAYLOAD_BYTES + 1),
            format!("st1.42.mon.th.150.{signature}"),
        ] {
            assert_eq!(
                InvoicePayload::decode(&bad, &key()),
                Err(PayloadError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_plans_with_a_stars_price_get_an_invoice() {
        let plans = catalogue();
        assert_eq!(
            invoice_for(7, plans.get("month").unwrap()),
            Some(InvoicePayload {
                user_id: 7,
                plan: "month".into(),
                stars: 150
            })
        );
        assert_eq!(invoice_for(7, plans.get("quarter").unwrap()), None);
    }

    #[test]
    fn invoice_texts_follow_the_language_and_fit_telegrams_limits() {
        let long = PlanCatalogue::from_yaml_str(&format!(
            "plans: [{{id: m, title: {{ru: {0}, en: {0}}}, days: 30, priceMinor: 1, currency: RUB, devices: 2, priceStars: 1}}]",
            "Я".repeat(60)
        ))
        .unwrap();
        let plan = &long.plans()[0];
        for code in [Some("en-US"), Some("ru"), None] {
            assert_eq!(invoice_title(code, plan).chars().count(), 32);
            assert!(invoice_description(code, plan).chars().count() <= 255);
        }
        let plans = catalogue();
        let month = plans.get("month").unwrap();
        assert_eq!(invoice_title(Some("en"), month), "VPN: Month");
        assert_eq!(invoice_title(Some("ru"), month), "VPN: Месяц");
        assert!(invoice_description(Some("en"), month).contains("30 days, 1 device."));
        assert!(invoice_description(None, month).contains("30 дн."));
    }

    #[test]
    fn the_checkout_accepts_the_invoiced_plan_at_its_price() {
        let plans = catalogue();
        let text = payload(42, "month", 150);
        let (got, plan) =
            check_checkout(&plans, &key(), facts(42, 150, &text), Buyer::Allowed).unwrap();
        assert_eq!(got.plan, "month");
        assert_eq!(plan.days, 30);
    }

    #[test]
    fn the_checkout_refuses_each_thing_that_is_wrong() {
        let plans = catalogue();
        let text = payload(42, "month", 150);
        let check = |facts: PaymentFacts<'_>, buyer| {
            check_checkout(&plans, &key(), facts, buyer).map(|(payload, _)| payload)
        };
        assert_eq!(
            check(facts(42, 150, "nonsense"), Buyer::Allowed),
            Err(StarsRefusal::Payload(PayloadError::Malformed))
        );
        assert_eq!(
            check(facts(43, 150, &text), Buyer::Allowed),
            Err(StarsRefusal::OtherUser {
                invoiced: 42,
                payer: 43
            })
        );
        assert_eq!(
            check(
                PaymentFacts {
                    currency: "RUB",
                    ..facts(42, 150, &text)
                },
                Buyer::Allowed
            ),
            Err(StarsRefusal::Currency("RUB".into()))
        );
        assert_eq!(
            check(facts(42, 149, &text), Buyer::Allowed),
            Err(StarsRefusal::AmountMismatch {
                invoiced: 150,
                paid: 149
            })
        );
        let gone = payload(42, "year", 150);
        assert_eq!(
            check(facts(42, 150, &gone), Buyer::Allowed),
            Err(StarsRefusal::UnknownPlan("year".into()))
        );
        let not_for_stars = payload(42, "quarter", 400);
        assert_eq!(
            check(facts(42, 400, &not_for_stars), Buyer::Allowed),
            Err(StarsRefusal::NotForStars("quarter".into()))
        );
        // An invoice made before the price went up to 150.
        let old_price = payload(42, "month", 100);
        assert_eq!(
            check(facts(42, 100, &old_price), Buyer::Allowed),
            Err(StarsRefusal::PriceChanged {
                plan: "month".into(),
                invoiced: 100,
                now: 150
            })
        );
        assert_eq!(
            check(facts(42, 150, &text), Buyer::Unknown),
            Err(StarsRefusal::UnknownBuyer)
        );
        assert_eq!(
            check(facts(42, 150, &text), Buyer::Suspended),
            Err(StarsRefusal::Suspended)
        );
    }

    #[test]
    fn a_paid_invoice_is_credited_at_the_price_agreed_even_if_it_changed_since() {
        let plans = catalogue();
        let old_price = payload(42, "month", 100);
        let (got, plan) = check_payment(&plans, &key(), facts(42, 100, &old_price)).unwrap();
        let purchase = StarPurchase::new(
            "charge-1",
            &got,
            plan,
            &old_price,
            t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(purchase.stars, 100);
        assert_eq!(purchase.days, 30);
        assert_eq!(purchase.devices, 1);
        assert_eq!(purchase.traffic_quota, plan.traffic_quota());
        assert_eq!(purchase.user_id, 42);
        // What does not match the invoice is still refused after the payment.
        assert!(check_payment(&plans, &key(), facts(42, 99, &old_price)).is_err());
        assert!(check_payment(&plans, &key(), facts(42, 100, "st1.42.month.100.00")).is_err());
    }

    fn star(n: u128, at: &str, days: i32, plan: &str, refunded: bool) -> StarPaymentRecord {
        StarPaymentRecord {
            id: Uuid::from_u128(n),
            telegram_payment_charge_id: format!("charge-{n}"),
            user_id: 42,
            plan: plan.into(),
            days,
            devices: if plan == "quarter" { 3 } else { 1 },
            traffic_quota: None,
            stars: 150,
            paid_at: t(at),
            refunded_at: refunded.then(|| t("2026-03-01T00:00:00Z")),
        }
    }

    #[test]
    fn stars_payments_fold_with_yookassa_payments_and_a_refund_takes_the_time_out() {
        let card = PaymentFact {
            id: Uuid::from_u128(1),
            at: t("2026-01-01T00:00:00Z"),
            days: 30,
            plan: "month".into(),
            devices: 1,
            traffic_quota: None,
            amount_minor: 19_900,
            refunded_minor: 0,
        };
        let stars = star(2, "2026-01-10T00:00:00Z", 90, "quarter", false);
        let got = entitlement(&[card.clone(), stars.fact()], &[]);
        // Jan 1 + 30 days = Jan 31, then 90 days of Stars on top.
        assert_eq!(got.paid_until, Some(t("2026-05-01T00:00:00Z")));
        assert_eq!(got.plan.as_deref(), Some("quarter"));
        assert_eq!(got.max_devices, 3);
        let refunded = star(2, "2026-01-10T00:00:00Z", 90, "quarter", true);
        let got = entitlement(&[card, refunded.fact()], &[]);
        assert_eq!(got.paid_until, Some(t("2026-01-31T00:00:00Z")));
        assert_eq!(got.plan.as_deref(), Some("month"));
        assert_eq!(got.max_devices, 1);
        let only = star(3, "2026-01-10T00:00:00Z", 30, "month", true);
        assert_eq!(entitlement(&[only.fact()], &[]).paid_until, None);
    }
}
