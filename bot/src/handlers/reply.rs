//! The envelope every handler answers in: [`Reply`] says where and in which language (and
//! carries the bot and its dependencies), [`on_message`] counts a command, picks the sender's
//! language and runs the handler's body, and [`answer`] turns a failed body into a short
//! "try again" and a counted, logged error — once, for every handler.

use teloxide::prelude::*;
use teloxide::types::ChatId;

use crate::app::App;
use crate::handlers::{HandlerError, HandlerResult, lang_of};
use crate::telegram;
use crate::text::{self, Lang};

/// Where and how a handler answers: the bot, its dependencies, the chat and the user's
/// language.
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    pub bot: &'a Bot,
    pub app: &'a App,
    pub chat: ChatId,
    pub lang: Lang,
}

impl<'a> Reply<'a> {
    /// The answer to `message`: in its chat, in its sender's language.
    pub fn of(bot: &'a Bot, app: &'a App, message: &Message) -> Self {
        Reply {
            bot,
            app,
            chat: message.chat.id,
            lang: lang_of(message.from.as_ref()),
        }
    }

    /// Sends `text` to the chat.
    pub async fn send(self, text: impl Into<String>) -> HandlerResult {
        self.bot.send_message(self.chat, text).await?;
        Ok(())
    }
}

/// The envelope of a message handler: counts the update as `handler`, answers in the sender's
/// language in the message's chat, and ends as [`answer`] does.
pub async fn on_message(
    bot: &Bot,
    app: &App,
    message: &Message,
    handler: &'static str,
    body: impl AsyncFnOnce(Reply<'_>) -> HandlerResult,
) -> HandlerResult {
    app.metrics.update(handler);
    answer(Reply::of(bot, app, message), handler, body).await
}

/// Runs a handler's body; a failure becomes a "try again" answer and a counted, logged error
/// (a user who cannot be reached is only counted).
pub async fn answer(
    to: Reply<'_>,
    handler: &str,
    body: impl AsyncFnOnce(Reply<'_>) -> HandlerResult,
) -> HandlerResult {
    let Err(error) = body(to).await else {
        return Ok(());
    };
    if is_unreachable(&error) {
        to.app.metrics.unreachable_user(handler);
        tracing::info!(handler, chat = to.chat.0, %error, "the user cannot be reached (blocked the bot or gone)");
        return Ok(());
    }
    to.app.metrics.handler_error(handler);
    tracing::error!(handler, %error, "handler failed");
    if let Err(error) = to.send(text::internal_error(to.lang)).await {
        tracing::debug!(handler, %error, "the \"try again\" answer was not delivered");
    }
    Ok(())
}

/// Whether a handler failed only because Telegram will not deliver to the user (they blocked
/// the bot, or the chat is gone): not a fault of the bot.
fn is_unreachable(error: &HandlerError) -> bool {
    error
        .downcast_ref::<teloxide::RequestError>()
        .is_some_and(telegram::is_unreachable)
}
