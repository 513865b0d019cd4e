//! Promo codes and referrals in the bot: `/promo <code>` redeems a code (free days now, or a
//! discount the next payment is priced with), `/invite` shows the user's personal
//! `t.me/<bot>?start=ref_<id>` link with how many joined and the days earned, and
//! `/admin promo …` creates, lists and disables codes. Everything goes through the ledger
//! ([`wgsub_ledger::promo`], [`wgsub_ledger::referral`]); the texts are in [`crate::text`].

use std::sync::Arc;

use jiff::Timestamp;
use teloxide::prelude::*;
use wgsub_ledger::referral::referral_link;
use wgsub_ledger::{CreateCodeError, NewPromoCode, RedeemError, Redeemed};

use crate::admin::PromoCommand;
use crate::admin::run::Logged;
use crate::app::App;
use crate::handlers::reply::{Reply, on_message};
use crate::handlers::{HandlerError, HandlerResult, registered_user, sync_quietly};
use crate::text;

/// Most codes `/admin promo list` shows (newest first).
pub const LISTED_CODES: i64 = 50;

/// `/promo <code>`.
pub async fn promo(bot: Bot, message: Message, app: Arc<App>, code: String) -> HandlerResult {
    on_message(&bot, &app, &message, "promo", async |to| {
        let Some(user) = registered_user(to, &message).await? else {
            return Ok(());
        };
        if code.trim().is_empty() {
            return to.send(text::promo_usage(to.lang)).await;
        }
        let answer = redeem(to, user.telegram_id, &code).await?;
        to.send(answer).await
    })
    .await
}

/// Redeems `code` for the user; the answer that says what it gave or why it was refused.
async fn redeem(to: Reply<'_>, id: i64, code: &str) -> Result<String, HandlerError> {
    let (app, lang) = (to.app, to.lang);
    let redeemed = app.ledger.redeem_promo_code(id, code, Timestamp::now());
    Ok(match redeemed.await {
        Ok(Redeemed::Days {
            code,
            days,
            entitlement,
        }) => {
            tracing::info!(user = id, %code, days, "promo code redeemed for free days");
            sync_quietly(app, id).await;
            text::promo_days(lang, days, entitlement.paid_until)
        }
        Ok(Redeemed::Discount { code, percent_off }) => {
            tracing::info!(user = id, %code, percent_off, "promo code redeemed for a discount");
            text::promo_discount(lang, percent_off)
        }
        Err(RedeemError::Syntax(error)) => {
            app.metrics.update("promo_malformed");
            tracing::info!(user = id, %error, chars = code.chars().count(), "a promo code that does not parse was refused");
            text::promo_malformed(lang).to_owned()
        }
        Err(RedeemError::Refused(refusal)) => {
            app.metrics.update("promo_refused");
            tracing::info!(user = id, reason = refusal.label(), "promo code refused");
            text::promo_refused(lang, refusal).to_owned()
        }
        Err(RedeemError::Ledger(error)) => return Err(error.into()),
    })
}

/// `/invite`: the personal link and what it brought.
pub async fn invite(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "invite", async |to| {
        let Some(user) = registered_user(to, &message).await? else {
            return Ok(());
        };
        let me = bot.get_me().await?;
        let link = referral_link(me.username(), user.telegram_id);
        let summary = app.ledger.referral_summary(user.telegram_id).await?;
        to.send(text::invite(to.lang, &link, summary)).await
    })
    .await
}

/// Carries out `/admin promo …`; returns the name and outcome for the admin log.
pub async fn run_admin_promo(
    to: Reply<'_>,
    admin_id: i64,
    command: PromoCommand,
    now: Timestamp,
) -> Result<Logged, HandlerError> {
    let (app, lang) = (to.app, to.lang);
    let (answer, outcome) = match command {
        PromoCommand::Create {
            code,
            benefit,
            expires_at,
            max_uses,
        } => {
            let new = NewPromoCode {
                code,
                benefit,
                expires_at,
                max_uses,
                admin_id,
            };
            match app.ledger.create_promo_code(&new, now).await {
                Ok(created) => (
                    text::admin_promo_created(lang, &created),
                    format!("created {}", created.code),
                ),
                Err(CreateCodeError::Exists(code)) => (
                    text::admin_promo_exists(lang, &code),
                    format!("exists {code}"),
                ),
                Err(CreateCodeError::Invalid(problem)) => (
                    text::admin_promo_invalid(lang, &problem),
                    format!("refused: {problem}"),
                ),
                Err(CreateCodeError::Syntax(error)) => (
                    text::admin_promo_invalid(lang, &error.to_string()),
                    format!("refused: {error}"),
                ),
                Err(CreateCodeError::Ledger(error)) => return Err(error.into()),
            }
        }
        PromoCommand::List => {
            let codes = app.ledger.promo_codes(LISTED_CODES).await?;
            (
                text::admin_promo_list(lang, &codes, now),
                format!("listed {}", codes.len()),
            )
        }
        PromoCommand::Disable { code } => {
            let changed = app.ledger.disable_promo_code(&code, admin_id, now).await?;
            let outcome = if changed { "disabled" } else { "unchanged" };
            (
                text::admin_promo_disabled(lang, &code, changed),
                format!("{outcome} {code}"),
            )
        }
    };
    to.send(answer).await?;
    Ok(("promo", outcome))
}
