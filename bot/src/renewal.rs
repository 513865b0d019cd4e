//! Automatic renewal in the bot: each plan of `/buy` also has a "with automatic renewal"
//! button (the payment asks YooKassa to save the card), `/renewal` shows the saved card
//! (masked) and when it is charged next with a button that switches renewal off (the saved
//! method is deleted on our side). The charging itself is [`crate::jobs::run_renewals`]; a
//! failure reaches the user through the outbox. The rules live in [`wgsub_ledger::renewal`],
//! the texts in [`crate::text`].

use std::sync::Arc;

use jiff::Timestamp;
use teloxide::prelude::*;
use teloxide::types::{ChatId, InlineKeyboardButton, User};

use crate::app::App;
use crate::handlers::{HandlerResult, finish, lang_of, registered_user, telegram_user};
use crate::telegram;
use crate::text::{self, Lang};

/// Callback data of a plan bought with automatic renewal: `buyr:<plan>`.
pub const BUY_RENEWING_PREFIX: &str = "buyr:";
/// Callback data of the button switching renewal off.
pub const RENEWAL_OFF: &str = "renewal:off";

/// `/renewal`.
pub async fn renewal_command(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    app.metrics.update("renewal");
    let lang = lang_of(message.from.as_ref());
    let chat = message.chat.id;
    let result = async {
        let Some(user) = registered_user(&bot, &app, &message, lang).await? else {
            return Ok(());
        };
        let status = app.ledger.renewal_status(user.telegram_id).await?;
        let card = status.card.as_ref();
        let expires = card.and_then(|card| card.expires());
        let answer = text::renewal_status(
            lang,
            card.map(|card| (card.title.as_str(), expires.as_deref())),
            status.next_charge_at,
            status.plan.as_deref(),
        );
        let request = bot.send_message(chat, answer);
        if status.enabled {
            let off = InlineKeyboardButton::callback(text::renewal_off_button(lang), RENEWAL_OFF);
            request.reply_markup(telegram::column([off])).await?;
        } else {
            request.await?;
        }
        Ok(())
    }
    .await;
    finish(&bot, &app, chat, lang, "renewal", result).await
}

/// The "switch off" button: deletes the saved method (nothing is charged afterwards).
pub async fn switch_off(
    bot: &Bot,
    app: &App,
    from: &User,
    chat: ChatId,
    lang: Lang,
) -> HandlerResult {
    let now = Timestamp::now();
    let user = app.ledger.upsert_user(&telegram_user(from)?, now).await?;
    if app.ledger.disable_renewal(user.telegram_id, now).await? {
        app.metrics.update("renewal_off");
    }
    bot.send_message(chat, text::renewal_switched_off(lang))
        .await?;
    Ok(())
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
