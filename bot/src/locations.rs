//! Locations in the bot: `/location` lists the offered servers as buttons (flag and name in
//! the user's language, the user's own and the full ones marked), `/buy` offers the same
//! choice, and a button puts the user there — checked and written exactly as the api's
//! `PUT /api/v1/me/location` does ([`wgsub_crds::locations::check_choice`] on the caches, then
//! [`wgsub_ledger::SubscriptionSync::set_server`]). A full, hidden or unknown server is
//! refused with a message and nothing written.
//!
//! The bot reads no `VpnSubscription`s: the user's location is the server of their devices
//! (none marked when they have none yet). The message that the devices moved and their configs
//! changed comes from [`crate::location_moves`] once the operator has moved them.

use std::sync::Arc;

use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, User};
use wgsub_crds::locations::{
    ChoiceError, Location, check_choice, locations_for, server_of_devices,
};
use wgsub_crds::resources::subscription_name;

use crate::app::App;
use crate::handlers::{HandlerResult, finish, lang_of};
use crate::telegram;
use crate::text::{self, Lang};

/// Callback data of a location button: the prefix and the `WgServer`'s name.
pub const LOCATION_PREFIX: &str = "loc:";

/// The locations offered to `user_id`, their own marked by the server of their devices.
pub fn offered(
    app: &App,
    user_id: i64,
    lang: Lang,
) -> Result<Vec<Location>, wgsub_devices::CacheError> {
    app.caches.check()?;
    let subscription = subscription_name(user_id);
    let own = app.caches.peers_of(&subscription);
    let current = server_of_devices(&own);
    Ok(locations_for(
        &app.caches.servers(),
        &app.caches.peers(),
        &subscription,
        current,
        Some(lang.code()),
    ))
}

/// The buttons of `locations`, one per row.
pub fn keyboard(lang: Lang, locations: &[Location]) -> InlineKeyboardMarkup {
    telegram::column(locations.iter().map(|location| {
        InlineKeyboardButton::callback(
            text::location_button(
                lang,
                &location.flag,
                &location.display_name,
                location.full,
                location.current,
            ),
            format!("{LOCATION_PREFIX}{}", location.server),
        )
    }))
}

/// `/location`.
pub async fn location_command(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    app.metrics.update("location");
    let lang = lang_of(message.from.as_ref());
    let result = async {
        let Some(user_id) = message
            .from
            .as_ref()
            .and_then(|u| i64::try_from(u.id.0).ok())
        else {
            return Ok(());
        };
        let locations = offered(&app, user_id, lang)?;
        if locations.is_empty() {
            bot.send_message(message.chat.id, text::no_locations(lang))
                .await?;
            return Ok(());
        }
        let current = locations
            .iter()
            .find(|l| l.current)
            .map(|l| format!("{} {}", l.flag, l.display_name));
        bot.send_message(
            message.chat.id,
            text::choose_location(lang, current.as_deref()),
        )
        .reply_markup(keyboard(lang, &locations))
        .await?;
        Ok(())
    }
    .await;
    finish(&bot, &app, message.chat.id, lang, "location", result).await
}

/// The location choice shown with `/buy`, when there is a choice (two or more offered). The
/// plans are sent already: caches that cannot answer now leave the choice out (`/location`
/// offers it later) rather than fail the purchase.
pub async fn offer_with_buy(
    bot: &Bot,
    app: &App,
    chat: ChatId,
    lang: Lang,
    user_id: i64,
) -> HandlerResult {
    let Ok(locations) = offered(app, user_id, lang) else {
        return Ok(());
    };
    if locations.len() >= 2 {
        bot.send_message(chat, text::buy_location(lang))
            .reply_markup(keyboard(lang, &locations))
            .await?;
    }
    Ok(())
}

/// A location button: puts the user on `server` when it is offered and not full.
pub async fn on_pick(
    bot: &Bot,
    app: &App,
    from: &User,
    chat: ChatId,
    lang: Lang,
    server: &str,
) -> HandlerResult {
    let user_id = i64::try_from(from.id.0)?;
    app.caches.check()?;
    let subscription = subscription_name(user_id);
    let refusal = match check_choice(
        &app.caches.servers(),
        &app.caches.peers(),
        &subscription,
        server,
    ) {
        Ok(()) => None,
        Err(ChoiceError::Full) => Some(text::location_full(lang)),
        Err(ChoiceError::NotFound) => Some(text::location_not_found(lang)),
    };
    if let Some(refusal) = refusal {
        app.metrics.update("location_refused");
        bot.send_message(chat, refusal).await?;
        return Ok(());
    }
    app.sync.set_server(user_id, server).await?;
    tracing::info!(user = user_id, server, "location picked in the bot");
    let name = offered(app, user_id, lang)?
        .into_iter()
        .find(|l| l.server == server)
        .map_or_else(
            || server.to_owned(),
            |l| format!("{} {}", l.flag, l.display_name),
        );
    bot.send_message(chat, text::location_set(lang, &name))
        .await?;
    Ok(())
}
