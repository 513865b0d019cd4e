//! Locations in the bot: `/location` lists the offered servers as buttons (the country's flag
//! and name, and the server's name, in
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
use crate::handlers::HandlerResult;
use crate::handlers::reply::{Reply, on_message};
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
            text::location_button(lang, &location.label, location.full, location.current),
            format!("{LOCATION_PREFIX}{}", location.server),
        )
    }))
}

/// `/location`.
pub async fn location_command(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "location", async |to| {
        let Some(user_id) = message
            .from
            .as_ref()
            .and_then(|u| i64::try_from(u.id.0).ok())
        else {
            return Ok(());
        };
        let locations = offered(&app, user_id, to.lang)?;
        if locations.is_empty() {
            return to.send(text::no_locations(to.lang)).await;
        }
        let current = locations
            .iter()
            .find(|l| l.current)
            .map(|l| l.label.clone());
        bot.send_message(to.chat, text::choose_location(to.lang, current.as_deref()))
            .reply_markup(keyboard(to.lang, &locations))
            .await?;
        Ok(())
    })
    .await
}

/// The location choice shown with `/buy`, when there is a choice (two or more offered). The
/// plans are sent already: caches that cannot answer now leave the choice out (`/location`
/// offers it later) rather than fail the purchase.
pub async fn offer_with_buy(to: Reply<'_>, user_id: i64) -> HandlerResult {
    let Ok(locations) = offered(to.app, user_id, to.lang) else {
        return Ok(());
    };
    if locations.len() >= 2 {
        to.bot
            .send_message(to.chat, text::buy_location(to.lang))
            .reply_markup(keyboard(to.lang, &locations))
            .await?;
    }
    Ok(())
}

/// A location button: puts the user on `server` when it is offered and not full.
pub async fn on_pick(to: Reply<'_>, from: &User, server: &str) -> HandlerResult {
    let (app, lang) = (to.app, to.lang);
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
        return to.send(refusal).await;
    }
    app.sync.set_server(user_id, server).await?;
    tracing::info!(user = user_id, server, "location picked in the bot");
    let name = offered(app, user_id, lang)?
        .into_iter()
        .find(|l| l.server == server)
        .map_or_else(|| server.to_owned(), |l| l.label);
    to.send(text::location_set(lang, &name)).await
}
