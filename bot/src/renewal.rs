//! Automatic renewal in the bot: each plan of `/buy` also has a "with automatic renewal"
//! button (the payment asks YooKassa to save the card), `/renewal` shows the saved card
//! (masked) and when it is charged next with a button that switches renewal off (the saved
//! method is deleted on our side). The charging itself is [`crate::jobs::run_renewals`]; a
//! failure reaches the user through the outbox. The rules live in [`wgsub_ledger::renewal`],
//! the texts in [`crate::text`].

use std::sync::Arc;

use jiff::Timestamp;
use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardButton, User};

use crate::app::App;
use crate::handlers::reply::{Reply, on_message};
use crate::handlers::{HandlerResult, registered_user, telegram_user};
use crate::telegram;
use crate::text::{self, Lang};

/// Callback data of a plan bought with automatic renewal: `buyr:<plan>`.
pub const BUY_RENEWING_PREFIX: &str = "buyr:";
/// Callback data of the button switching renewal off.
pub const RENEWAL_OFF: &str = "renewal:off";

/// `/renewal`.
pub async fn renewal_command(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "renewal", async |to| {
        let Some(user) = registered_user(to, &message).await? else {
            return Ok(());
        };
        let status = app.ledger.renewal_status(user.telegram_id).await?;
        let card = status.card.as_ref();
        let expires = card.and_then(|card| card.expires());
        let answer = text::renewal_status(
            to.lang,
            card.map(|card| (card.title.as_str(), expires.as_deref())),
            status.next_charge_at,
            status.plan.as_deref(),
        );
        let request = bot.send_message(to.chat, answer);
        if status.enabled {
            let off =
                InlineKeyboardButton::callback(text::renewal_off_button(to.lang), RENEWAL_OFF);
            request.reply_markup(telegram::column([off])).await?;
        } else {
            request.await?;
        }
        Ok(())
    })
    .await
}

/// The "switch off" button: deletes the saved method (nothing is charged afterwards).
pub async fn switch_off(to: Reply<'_>, from: &User) -> HandlerResult {
    let (app, now) = (to.app, Timestamp::now());
    let user = app.ledger.upsert_user(&telegram_user(from)?, now).await?;
    if app.ledger.disable_renewal(user.telegram_id, now).await? {
        app.metrics.update("renewal_off");
    }
    to.send(text::renewal_switched_off(to.lang)).await
}

/// A plan's row of `/buy`: its card button and beside it the same plan bought saving the card.
pub fn beside_renewing(
    card: InlineKeyboardButton,
    lang: Lang,
    plan_id: &str,
) -> Vec<InlineKeyboardButton> {
    let renewing = InlineKeyboardButton::callback(
        text::with_renewal_button(lang),
        format!("{BUY_RENEWING_PREFIX}{plan_id}"),
    );
    vec![card, renewing]
}
