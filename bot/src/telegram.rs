//! The Telegram side of sending: what a Bot API error means for a delivery (a user who blocked
//! the bot is final, `retry_after` is a wait, the rest is a failure), registering the command
//! list in Russian and English, and the keyboards the bot shows.

use teloxide::prelude::*;
use teloxide::types::{BotCommand, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, WebAppInfo};
use teloxide::{ApiError, RequestError};

use crate::broadcast::Delivery;
use crate::text::{self, Lang};

/// What a send's result means for the delivery.
pub fn delivery<T>(result: &Result<T, RequestError>) -> Delivery {
    match result {
        Ok(_) => Delivery::Delivered,
        Err(RequestError::RetryAfter(seconds)) => Delivery::RetryAfter(seconds.duration()),
        Err(error) if is_unreachable(error) => Delivery::Unreachable,
        Err(_) => Delivery::Failed,
    }
}

/// Whether the error says Telegram will never deliver to that chat: the user blocked the bot
/// or is gone, or the chat is.
pub fn is_unreachable(error: &RequestError) -> bool {
    matches!(
        error,
        RequestError::Api(
            ApiError::BotBlocked
                | ApiError::UserDeactivated
                | ApiError::ChatNotFound
                | ApiError::UserNotFound
                | ApiError::BotKicked
                | ApiError::BotKickedFromSupergroup
                | ApiError::BotKickedFromChannel
                | ApiError::CantInitiateConversation
                | ApiError::CantTalkWithBots,
        )
    )
}

/// Sends a plain text and says how it went.
pub async fn send_text(bot: &Bot, chat: i64, text: String) -> Delivery {
    let result = bot.send_message(ChatId(chat), text).await;
    if let Err(error) = &result {
        tracing::debug!(chat, %error, "send failed");
    }
    delivery(&result)
}

/// Registers the command list: Russian as the default and for `ru`, English for `en`.
pub async fn register_commands(bot: &Bot) -> Result<(), RequestError> {
    let commands = |lang: Lang| -> Vec<BotCommand> {
        text::command_descriptions(lang)
            .into_iter()
            .map(|(command, description)| BotCommand::new(command, description))
            .collect()
    };
    bot.set_my_commands(commands(Lang::Ru)).await?;
    for lang in [Lang::Ru, Lang::En] {
        bot.set_my_commands(commands(lang))
            .language_code(lang.code())
            .await?;
    }
    Ok(())
}

/// The button that opens the Mini App.
pub fn app_keyboard(lang: Lang, miniapp_url: &url::Url) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([[InlineKeyboardButton::web_app(
        text::open_app_button(lang),
        WebAppInfo {
            url: miniapp_url.clone(),
        },
    )]])
}

/// A keyboard of one button per line.
pub fn column(buttons: impl IntoIterator<Item = InlineKeyboardButton>) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(buttons.into_iter().map(|button| [button]))
}

/// Callback data of a plan button.
pub const BUY_PREFIX: &str = "buy:";
/// Callback data of a device button.
pub const CONFIG_PREFIX: &str = "cfg:";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use teloxide::types::Seconds;

    #[test]
    fn blocked_and_gone_chats_are_unreachable_rate_limits_wait_and_the_rest_fail() {
        let err = |e: RequestError| -> Result<(), RequestError> { Err(e) };
        assert_eq!(delivery(&Ok::<(), RequestError>(())), Delivery::Delivered);
        for api in [
            ApiError::BotBlocked,
            ApiError::UserDeactivated,
            ApiError::ChatNotFound,
            ApiError::CantInitiateConversation,
        ] {
            assert_eq!(
                delivery(&err(RequestError::Api(api))),
                Delivery::Unreachable
            );
        }
        assert_eq!(
            delivery(&err(RequestError::RetryAfter(Seconds::from_seconds(7)))),
            Delivery::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            delivery(&err(RequestError::Api(ApiError::MessageTextIsEmpty))),
            Delivery::Failed
        );
    }
}
