//! Payments in Telegram Stars through the bot: the invoice a Stars plan button sends
//! (`sendInvoice`, currency `XTR`, no provider token, a signed payload), the answer to the
//! `pre_checkout_query` (within Telegram's 10 seconds: plan, price and buyer checked by
//! [`wgsub_ledger::stars::check_checkout`]), the `successful_payment` applied once per
//! `telegram_payment_charge_id` by the ledger (a payment that cannot be credited is refunded
//! at once), and `/admin refund`, which refunds through `refundStarPayment` before the ledger
//! takes the payment's time out.
//!
//! The user hears of an applied payment or a refund through the ledger's outbox (written in
//! the same transaction), like YooKassa payments.

use std::time::Duration;

use jiff::Timestamp;
use teloxide::prelude::*;
use teloxide::types::{LabeledPrice, PreCheckoutQuery, TelegramTransactionId, User};
use teloxide::{ApiError, RequestError};
use wgsub_crds::plans::Plan;
use wgsub_ledger::stars::{
    Buyer, InvoiceKey, PaymentFacts, STARS_CURRENCY, StarsRefusal, check_checkout, check_payment,
    invoice_description, invoice_for, invoice_title,
};
use wgsub_ledger::{StarApplyOutcome, StarPurchase, StarRefundOutcome};

use crate::app::App;
use crate::handlers::reply::{Reply, on_message};
use crate::handlers::{
    HandlerError, HandlerResult, lang_of, stored_user_id, sync_quietly, telegram_user,
};
use crate::text::{self, Lang};

/// Callback data of a "pay in Stars" plan button.
pub const STARS_PREFIX: &str = "stars:";

/// How long the pre-checkout answer waits for the ledger before refusing with "try again":
/// well inside the 10 seconds Telegram gives.
pub const CHECKOUT_LOOKUP_LIMIT: Duration = Duration::from_secs(5);

fn key(bot: &Bot) -> InvoiceKey {
    InvoiceKey::from_bot_token(bot.token())
}

/// Sends the invoice of a plan sold for Stars.
pub async fn send_invoice(to: Reply<'_>, from: &User, plan_id: &str) -> HandlerResult {
    let (bot, app, lang) = (to.bot, to.app, to.lang);
    let Some(plan) = app.plans.get(plan_id) else {
        return to.send(text::unknown_plan(lang)).await;
    };
    let user = app
        .ledger
        .upsert_user(&telegram_user(from)?, Timestamp::now())
        .await?;
    if user.suspended {
        return to
            .send(text::stars_refused(lang, &StarsRefusal::Suspended))
            .await;
    }
    let Some(invoice) = invoice_for(user.telegram_id, plan) else {
        return to.send(text::stars_not_offered(lang)).await;
    };
    bot.send_invoice(
        to.chat,
        invoice_title(Some(lang.code()), plan),
        invoice_description(Some(lang.code()), plan),
        invoice.encode(&key(bot)),
        STARS_CURRENCY,
        [LabeledPrice::new(
            invoice_title(Some(lang.code()), plan),
            invoice.stars,
        )],
    )
    .await?;
    Ok(())
}

/// The plan's "pay in Stars" button label, when the plan is sold for Stars.
pub fn plan_button(lang: Lang, plan: &Plan) -> Option<(String, String)> {
    plan.price_stars.map(|_| {
        (
            text::stars_plan_button(lang, plan),
            format!("{STARS_PREFIX}{}", plan.id),
        )
    })
}

/// Where the payer stands in the ledger, bounded by [`CHECKOUT_LOOKUP_LIMIT`].
async fn buyer(app: &App, payer_id: i64) -> Result<Buyer, HandlerError> {
    let user = tokio::time::timeout(CHECKOUT_LOOKUP_LIMIT, app.ledger.user(payer_id))
        .await
        .map_err(|_| "the ledger did not answer in time for the pre-checkout query")??;
    Ok(match user {
        None => Buyer::Unknown,
        Some(user) if user.suspended => Buyer::Suspended,
        Some(_) => Buyer::Allowed,
    })
}

/// Answers a pre-checkout query: ok when the invoice is ours, for this user, for a plan still
/// sold at the invoiced price in Stars, and the user may buy; otherwise refused with the
/// reason in the user's language (and logged).
pub async fn pre_checkout(
    bot: Bot,
    query: PreCheckoutQuery,
    app: std::sync::Arc<App>,
) -> HandlerResult {
    app.metrics.update("pre_checkout");
    let lang = lang_of(Some(&query.from));
    let Some(payer_id) = stored_user_id(&query.from) else {
        return Ok(());
    };
    let facts = PaymentFacts {
        payer_id,
        currency: &query.currency,
        total_amount: query.total_amount,
        invoice_payload: &query.invoice_payload,
    };
    let decision = match buyer(&app, payer_id).await {
        Ok(buyer) => check_checkout(&app.plans, &key(&bot), facts, buyer)
            .map(|_| ())
            .map_err(|refusal| text::stars_refused(lang, &refusal)),
        Err(error) => {
            app.metrics.handler_error("pre_checkout");
            tracing::error!(%error, "pre-checkout query could not be checked");
            Err(text::internal_error(lang).to_owned())
        }
    };
    let answer = match decision {
        Ok(()) => bot.answer_pre_checkout_query(query.id.clone(), true).await,
        Err(message) => {
            app.metrics.update("pre_checkout_refused");
            tracing::info!(
                user = payer_id,
                payload = %query.invoice_payload,
                amount = query.total_amount,
                currency = %query.currency,
                reason = %message,
                "pre-checkout query refused"
            );
            bot.answer_pre_checkout_query(query.id.clone(), false)
                .error_message(message)
                .await
        }
    };
    if let Err(error) = answer {
        tracing::warn!(%error, "the pre-checkout query was not answered");
    }
    Ok(())
}

/// Applies a successful Stars payment once; one that cannot be credited (a payload that does
/// not parse or is not this user's, another amount, a plan no longer sold) is refunded, told
/// and logged, and nothing is credited.
pub async fn successful_payment(
    bot: Bot,
    message: Message,
    app: std::sync::Arc<App>,
) -> HandlerResult {
    on_message(&bot, &app, &message, "successful_payment", async |to| {
        let (Some(from), Some(paid)) = (message.from.as_ref(), message.successful_payment())
        else {
            return Ok(());
        };
        let payer_id = stored_user_id(from).ok_or("Telegram user id out of range")?;
        let charge_id = &paid.telegram_payment_charge_id.0;
        let facts = PaymentFacts {
            payer_id,
            currency: &paid.currency,
            total_amount: paid.total_amount,
            invoice_payload: &paid.invoice_payload,
        };
        let (payload, plan) = match check_payment(&app.plans, &key(&bot), facts) {
            Ok(checked) => checked,
            Err(refusal) => return refuse_paid(to, from, charge_id, &refusal).await,
        };
        let paid_at = Timestamp::from_second(message.date.timestamp()).unwrap_or_else(|_| Timestamp::now());
        let purchase = StarPurchase::new(charge_id, &payload, plan, &paid.invoice_payload, paid_at);
        let now = Timestamp::now();
        app.ledger.upsert_user(&telegram_user(from)?, now).await?;
        match app.ledger.apply_star_payment(&purchase, now).await? {
            StarApplyOutcome::Applied { user_id, .. } => {
                tracing::info!(user = user_id, charge = %charge_id, stars = purchase.stars, plan = %purchase.plan, "Stars payment applied");
                sync_quietly(&app, user_id).await;
            }
            StarApplyOutcome::AlreadyApplied { user_id } => {
                app.metrics.update("successful_payment_duplicate");
                tracing::info!(user = user_id, charge = %charge_id, "Stars payment delivered again; already applied");
            }
        }
        Ok(())
    })
    .await
}

/// A paid invoice that cannot be credited: refunded through Telegram, the user told, logged.
async fn refuse_paid(
    to: Reply<'_>,
    from: &User,
    charge_id: &str,
    refusal: &StarsRefusal,
) -> HandlerResult {
    let bot = to.bot;
    to.app.metrics.update("successful_payment_refused");
    tracing::warn!(user = from.id.0, charge = %charge_id, %refusal, "a Stars payment could not be credited; refunding it");
    let refunded = bot
        .refund_star_payment(from.id, TelegramTransactionId(charge_id.to_owned()))
        .await;
    if let Err(error) = &refunded {
        tracing::error!(user = from.id.0, charge = %charge_id, %error, "the uncredited Stars payment was not refunded: refund it by hand");
    }
    to.send(text::stars_payment_not_credited(to.lang, refunded.is_ok()))
        .await
}

/// Whether Telegram says the charge was refunded before (a retried `/admin refund`).
fn already_refunded(error: &RequestError) -> bool {
    matches!(error, RequestError::Api(ApiError::Unknown(text)) if text.contains("CHARGE_ALREADY_REFUNDED"))
}

/// `/admin refund <charge id> [reason]`: refunds through Telegram first (so the ledger never
/// removes time for money that was not returned), then records the refund once. Returns the
/// outcome for the admin log.
pub async fn admin_refund(
    to: Reply<'_>,
    admin_id: i64,
    charge_id: &str,
    reason: Option<String>,
) -> Result<String, HandlerError> {
    let (bot, app, lang) = (to.bot, to.app, to.lang);
    let unknown = async || -> Result<String, HandlerError> {
        to.send(text::admin_refund_unknown(lang, charge_id)).await?;
        Ok("unknown payment".into())
    };
    let already = async || -> Result<String, HandlerError> {
        to.send(text::admin_refund_already(lang, charge_id)).await?;
        Ok(format!("already refunded: {charge_id}"))
    };
    let Some(payment) = app.ledger.star_payment(charge_id).await? else {
        return unknown().await;
    };
    if payment.refunded_at.is_some() {
        return already().await;
    }
    let user = u64::try_from(payment.user_id).map_err(|_| "stored user id is negative")?;
    match bot
        .refund_star_payment(UserId(user), TelegramTransactionId(charge_id.to_owned()))
        .await
    {
        Ok(_) => {}
        Err(error) if already_refunded(&error) => {
            tracing::info!(charge = %charge_id, "Telegram had refunded the charge already; recording it");
        }
        Err(error) => {
            tracing::warn!(charge = %charge_id, %error, "refundStarPayment failed");
            to.send(text::admin_refund_failed(lang, charge_id)).await?;
            return Ok(format!("refund failed at Telegram: {charge_id}"));
        }
    }
    let reason = reason.unwrap_or_else(|| "/admin refund".into());
    match app
        .ledger
        .record_star_refund(charge_id, admin_id, &reason, Timestamp::now())
        .await?
    {
        StarRefundOutcome::Recorded {
            user_id,
            entitlement,
        } => {
            sync_quietly(app, user_id).await;
            let stars = payment.stars;
            to.send(text::admin_refunded(
                lang,
                user_id,
                stars,
                entitlement.paid_until,
            ))
            .await?;
            Ok(format!("refunded {stars} stars to {user_id}: {charge_id}"))
        }
        StarRefundOutcome::AlreadyRefunded => already().await,
        StarRefundOutcome::UnknownPayment => unknown().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_already_refunded_charge_counts_as_done() {
        let api = |text: &str| RequestError::Api(ApiError::Unknown(text.into()));
        assert!(already_refunded(&api(
            "Bad Request: CHARGE_ALREADY_REFUNDED"
        )));
        assert!(!already_refunded(&api("Bad Request: CHARGE_NOT_FOUND")));
        assert!(!already_refunded(&RequestError::Api(ApiError::BotBlocked)));
    }
}
