//! `/devices`: the user's devices with what they can do to them — get the config, rename,
//! rotate the key, delete (after a confirmation), add one up to `maxDevices` — through inline
//! buttons. The writes are [`wgsub_devices::manage`]'s, the same the api makes for the Mini App:
//! a deleted device's config stops working at once; a rotated device is replaced by a new peer
//! with a fresh key (the old config stops working); deleting the last device marks the
//! subscription so the operator does not give it back.
//!
//! Renaming asks for the name with a ForceReply prompt whose last line names the device; the
//! user's reply to that prompt is matched back by it ([`rename_target`]), so no conversation
//! state is kept. Every device is checked to be the sender's (name and label) on every button
//! and reply; one that is not answers "that device is gone", and nothing changes.
//!
//! The pure parts — the callback data ([`DeviceAction`]), the prompt's device, the list
//! entries ([`entry`]) — are unit-tested here; the handlers are tested through the handler tree
//! in `tests/devices.rs`.

use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use teloxide::prelude::*;
use teloxide::types::{ForceReply, InlineKeyboardButton, InlineKeyboardMarkup, User};
use wgsub_crds::devices::{is_connected, is_users_peer_name, required_device_name};
use wgsub_crds::liveness::subscription_phase;
use wgsub_crds::resources::subscription_name;
use wgsub_crds::{SubscriptionPhase, VpnSubscription, WgPeer};
use wgsub_devices::manage::{
    AddRefused, DeviceWriter, WriteError, device_to_add, replacement_peer,
};
use wgsub_devices::usage::DeviceTraffic;

use crate::app::App;
use crate::devices::{device_label, user_peer, user_peers};
use crate::handlers::reply::{Reply, on_message};
use crate::handlers::{HandlerError, HandlerResult, registered_user};
use crate::telegram::CONFIG_PREFIX;
use crate::text::{self, DeviceEntry, Lang};

/// The field manager of the bot's device writes.
pub const FIELD_MANAGER: &str = "wgsub-bot";
/// Callback data of the `/devices` buttons.
pub const DEVICE_PREFIX: &str = "dev:";

/// What a `/devices` button asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAction {
    /// Show the list again.
    List,
    /// Add a device.
    Add,
    /// Ask for the device's new name.
    Rename(String),
    /// Give the device a new key.
    Rotate(String),
    /// Ask to confirm deleting the device.
    Delete(String),
    /// Delete the device (confirmed).
    ConfirmDelete(String),
    /// Keep the device (the confirmation's "Cancel").
    Keep,
}

impl DeviceAction {
    /// The button's callback data (at most 64 bytes for any device name of the schema).
    pub fn data(&self) -> String {
        match self {
            DeviceAction::List => format!("{DEVICE_PREFIX}list"),
            DeviceAction::Add => format!("{DEVICE_PREFIX}add"),
            DeviceAction::Rename(peer) => format!("{DEVICE_PREFIX}ren:{peer}"),
            DeviceAction::Rotate(peer) => format!("{DEVICE_PREFIX}rot:{peer}"),
            DeviceAction::Delete(peer) => format!("{DEVICE_PREFIX}del:{peer}"),
            DeviceAction::ConfirmDelete(peer) => format!("{DEVICE_PREFIX}delok:{peer}"),
            DeviceAction::Keep => format!("{DEVICE_PREFIX}keep"),
        }
    }

    /// The action of callback data after [`DEVICE_PREFIX`]; `None` when it is none.
    pub fn parse(data: &str) -> Option<Self> {
        let (verb, peer) = match data.split_once(':') {
            Some((verb, peer)) if !peer.is_empty() => (verb, Some(peer.to_owned())),
            Some(_) => return None,
            None => (data, None),
        };
        match (verb, peer) {
            ("list", None) => Some(DeviceAction::List),
            ("add", None) => Some(DeviceAction::Add),
            ("keep", None) => Some(DeviceAction::Keep),
            ("ren", Some(peer)) => Some(DeviceAction::Rename(peer)),
            ("rot", Some(peer)) => Some(DeviceAction::Rotate(peer)),
            ("del", Some(peer)) => Some(DeviceAction::Delete(peer)),
            ("delok", Some(peer)) => Some(DeviceAction::ConfirmDelete(peer)),
            _ => None,
        }
    }
}

/// The device a rename prompt ([`text::rename_prompt`]) names on its last line, `[<peer>]`.
pub fn rename_target(prompt: &str) -> Option<&str> {
    let last = prompt.lines().last()?.trim();
    let peer = last.strip_prefix('[')?.strip_suffix(']')?;
    (!peer.is_empty() && !peer.contains(char::is_whitespace)).then_some(peer)
}

/// The list entry of `peer` at `now`.
pub fn entry(peer: &WgPeer, now: Timestamp) -> DeviceEntry {
    let status = peer.status.clone().unwrap_or_default();
    DeviceEntry {
        name: device_label(peer),
        enabled: peer.spec.enabled,
        ready: peer.spec.address.is_some() && peer.spec.private_key_secret_ref.is_some(),
        connected: is_connected(status.last_handshake, now),
        last_handshake: status.last_handshake,
        rx_bytes: status.rx_bytes,
        tx_bytes: status.tx_bytes,
    }
}

/// Each device's traffic this period and in total, from `subscription`'s usage; `None` for a
/// device the operator has not counted yet.
pub fn device_traffic(
    subscription: Option<&VpnSubscription>,
    peers: &[WgPeer],
) -> Vec<Option<DeviceTraffic>> {
    let usage = subscription
        .and_then(|sub| sub.status.as_ref())
        .and_then(|status| status.usage.as_ref());
    peers
        .iter()
        .map(|peer| {
            usage?.device(&peer.name_any())?;
            Some(DeviceTraffic::of(subscription, &peer.name_any()))
        })
        .collect()
}

/// The list's keyboard: per device its config button, then rename, new key and delete; an add
/// button while there is room.
pub fn list_keyboard(lang: Lang, peers: &[WgPeer], max_devices: i32) -> InlineKeyboardMarkup {
    let mut rows: Vec<Vec<InlineKeyboardButton>> = Vec::new();
    let [rename, rotate, delete] = text::device_buttons(lang);
    for peer in peers {
        let name = peer.name_any();
        rows.push(vec![InlineKeyboardButton::callback(
            format!("📄 {}", device_label(peer)),
            format!("{CONFIG_PREFIX}{name}"),
        )]);
        rows.push(vec![
            InlineKeyboardButton::callback(rename, DeviceAction::Rename(name.clone()).data()),
            InlineKeyboardButton::callback(rotate, DeviceAction::Rotate(name.clone()).data()),
            InlineKeyboardButton::callback(delete, DeviceAction::Delete(name).data()),
        ]);
    }
    if peers.len() < usize::try_from(max_devices).unwrap_or(0) {
        rows.push(vec![InlineKeyboardButton::callback(
            text::add_device_button(lang, peers.len(), max_devices),
            DeviceAction::Add.data(),
        )]);
    }
    InlineKeyboardMarkup::new(rows)
}

fn writer(app: &App) -> DeviceWriter {
    DeviceWriter::new(app.kube.clone(), &app.namespace, FIELD_MANAGER)
}

fn config_button(lang: Lang, peer: &str) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([[InlineKeyboardButton::callback(
        text::get_config_button(lang),
        format!("{CONFIG_PREFIX}{peer}"),
    )]])
}

/// The user's subscription as the API server has it, when it is active.
async fn active_subscription(
    app: &App,
    user_id: i64,
) -> Result<Option<VpnSubscription>, HandlerError> {
    let subscription = writer(app)
        .subscription(&subscription_name(user_id))
        .await?;
    Ok(subscription
        .filter(|sub| subscription_phase(&sub.spec, Timestamp::now()) == SubscriptionPhase::Active))
}

/// Sends the list of the user's devices with its buttons.
async fn send_list(to: Reply<'_>, user_id: i64) -> HandlerResult {
    let app = to.app;
    let peers = user_peers(&app.caches, user_id)?;
    // The limit the operator and the api enforce: the subscription's; and the devices'
    // traffic as the operator counted it there.
    let subscription = writer(app)
        .subscription(&subscription_name(user_id))
        .await?;
    let max_devices = subscription.as_ref().map_or(1, |sub| sub.spec.max_devices);
    let now = Timestamp::now();
    let entries: Vec<DeviceEntry> = peers.iter().map(|peer| entry(peer, now)).collect();
    let traffic = device_traffic(subscription.as_ref(), &peers);
    let list = text::devices_list_with_traffic(to.lang, &entries, &traffic, max_devices);
    to.bot
        .send_message(to.chat, list)
        .reply_markup(list_keyboard(to.lang, &peers, max_devices))
        .await?;
    Ok(())
}

/// `/devices`.
pub async fn devices_command(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "devices", async |to| {
        let Some(user) = registered_user(to, &message).await? else {
            return Ok(());
        };
        send_list(to, user.telegram_id).await
    })
    .await
}

/// A `/devices` button (`data` after [`DEVICE_PREFIX`]).
pub async fn on_button(to: Reply<'_>, from: &User, data: &str) -> HandlerResult {
    let (app, lang) = (to.app, to.lang);
    let Some(user_id) = crate::handlers::stored_user_id(from) else {
        return Ok(());
    };
    let Some(action) = DeviceAction::parse(data) else {
        return to.send(text::unknown(lang)).await;
    };
    let peer_of = |name: &str| -> Result<Option<WgPeer>, HandlerError> {
        if !is_users_peer_name(user_id, name) {
            return Ok(None);
        }
        Ok(user_peer(&app.caches, user_id, name)?)
    };
    match action {
        DeviceAction::List => send_list(to, user_id).await,
        DeviceAction::Add => add(to, user_id).await,
        DeviceAction::Keep => to.send(text::delete_cancelled(lang)).await,
        DeviceAction::Rename(name) => {
            let Some(peer) = peer_of(&name)? else {
                return gone(to).await;
            };
            to.bot
                .send_message(
                    to.chat,
                    text::rename_prompt(lang, &device_label(&peer), &name),
                )
                .reply_markup(ForceReply::new())
                .await?;
            Ok(())
        }
        DeviceAction::Delete(name) => {
            let Some(peer) = peer_of(&name)? else {
                return gone(to).await;
            };
            let [yes, no] = text::confirm_delete_buttons(lang);
            let keyboard = InlineKeyboardMarkup::new([[
                InlineKeyboardButton::callback(yes, DeviceAction::ConfirmDelete(name).data()),
                InlineKeyboardButton::callback(no, DeviceAction::Keep.data()),
            ]]);
            to.bot
                .send_message(to.chat, text::confirm_delete(lang, &device_label(&peer)))
                .reply_markup(keyboard)
                .await?;
            Ok(())
        }
        DeviceAction::ConfirmDelete(name) => {
            let Some(peer) = peer_of(&name)? else {
                return gone(to).await;
            };
            delete(to, user_id, &peer).await
        }
        DeviceAction::Rotate(name) => {
            let Some(old) = peer_of(&name)? else {
                return gone(to).await;
            };
            rotate(to, user_id, &old).await
        }
    }
}

/// Deletes the user's device (confirmed), then lists the rest.
async fn delete(to: Reply<'_>, user_id: i64, peer: &WgPeer) -> HandlerResult {
    let app = to.app;
    let name = peer.name_any();
    let others = user_peers(&app.caches, user_id)?;
    let last = others.iter().all(|other| other.name_any() == name);
    match writer(app)
        .delete(&subscription_name(user_id), peer, last)
        .await
    {
        Ok(()) => {}
        Err(WriteError::Gone) => return gone(to).await,
        Err(error) => return Err(error.into()),
    }
    app.caches
        .wait_gone(peer, wgsub_devices::cache::DEFAULT_WRITE_WAIT)
        .await;
    to.send(text::deleted(to.lang, &device_label(peer))).await?;
    send_list(to, user_id).await
}

/// Gives the user's device a new key: a new peer replaces it.
async fn rotate(to: Reply<'_>, user_id: i64, old: &WgPeer) -> HandlerResult {
    let (app, lang) = (to.app, to.lang);
    let Some(subscription) = active_subscription(app, user_id).await? else {
        return to.send(text::subscription_inactive(lang)).await;
    };
    let names: Vec<String> = user_peers(&app.caches, user_id)?
        .iter()
        .map(|peer| peer.name_any())
        .collect();
    let replacement = replacement_peer(&subscription, old, &names, &old.spec.server);
    let created = match writer(app).rotate(old, &replacement).await {
        Ok(created) => created,
        Err(WriteError::Gone) => return gone(to).await,
        Err(WriteError::Conflict) => return to.send(text::device_busy(lang)).await,
        Err(error) => return Err(error.into()),
    };
    to.bot
        .send_message(to.chat, text::rotated(lang, &device_label(old)))
        .reply_markup(config_button(lang, &created.name_any()))
        .await?;
    Ok(())
}

async fn gone(to: Reply<'_>) -> HandlerResult {
    to.send(text::device_gone(to.lang)).await
}

async fn add(to: Reply<'_>, user_id: i64) -> HandlerResult {
    let (app, lang) = (to.app, to.lang);
    let Some(subscription) = active_subscription(app, user_id).await? else {
        return to.send(text::subscription_inactive(lang)).await;
    };
    let peers = user_peers(&app.caches, user_id)?;
    let names: Vec<String> = peers.iter().map(|peer| peer.name_any()).collect();
    // The subscription's server, or the one its devices are on; with neither (no server named
    // and no device), the operator makes the first device on the default server once the mark
    // of removed devices is gone.
    let server = subscription
        .spec
        .server
        .clone()
        .or_else(|| peers.first().map(|peer| peer.spec.server.clone()));
    let Some(server) = server else {
        writer(app).clear_removed_mark(&subscription).await;
        return to.send(text::first_device_coming(lang)).await;
    };
    let peer = match device_to_add(&subscription, &names, &server, None) {
        Ok(peer) => peer,
        Err(AddRefused::Limit { max }) => return to.send(text::device_limit(lang, max)).await,
    };
    let created = match writer(app).add(&subscription, &peer).await {
        Ok(created) => created,
        Err(WriteError::Conflict) => return to.send(text::device_busy(lang)).await,
        Err(error) => return Err(error.into()),
    };
    app.caches
        .wait_for(&created, wgsub_devices::cache::DEFAULT_WRITE_WAIT)
        .await;
    to.bot
        .send_message(to.chat, text::device_added(lang, &device_label(&created)))
        .reply_markup(config_button(lang, &created.name_any()))
        .await?;
    Ok(())
}

/// Whether `message` replies to the bot's rename prompt.
pub fn is_rename_reply(message: Message) -> bool {
    message
        .reply_to_message()
        .filter(|prompt| prompt.from.as_ref().is_some_and(|from| from.is_bot))
        .and_then(|prompt| prompt.text())
        .and_then(rename_target)
        .is_some()
}

/// The reply to a rename prompt: the device's new name, or why it does not fit.
pub async fn rename_reply(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "rename_device", async |to| {
        let Some(from) = message.from.as_ref() else {
            return Ok(());
        };
        let Some(user_id) = crate::handlers::stored_user_id(from) else {
            return Ok(());
        };
        let Some(name) = message
            .reply_to_message()
            .and_then(|prompt| prompt.text())
            .and_then(rename_target)
            .map(str::to_owned)
        else {
            return Ok(());
        };
        let peer = if is_users_peer_name(user_id, &name) {
            user_peer(&app.caches, user_id, &name)?
        } else {
            None
        };
        let Some(peer) = peer else {
            return gone(to).await;
        };
        let Ok(device_name) = required_device_name(message.text().unwrap_or_default()) else {
            return to.send(text::invalid_device_name(to.lang)).await;
        };
        let renamed = match writer(&app).rename(&peer, &device_name).await {
            Ok(renamed) => renamed,
            Err(WriteError::Gone) => return gone(to).await,
            Err(error) => return Err(error.into()),
        };
        app.caches
            .wait_for(&renamed, wgsub_devices::cache::DEFAULT_WRITE_WAIT)
            .await;
        to.send(text::renamed(to.lang, &device_label(&renamed)))
            .await?;
        send_list(to, user_id).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use wgsub_crds::{SecretKeyRef, WgPeerSpec, WgPeerStatus};

    #[test]
    fn button_data_round_trips_and_fits_telegrams_64_bytes() {
        let longest = format!("tg-{}-10", "9".repeat(18));
        for action in [
            DeviceAction::List,
            DeviceAction::Add,
            DeviceAction::Rename(longest.clone()),
            DeviceAction::Rotate(longest.clone()),
            DeviceAction::Delete(longest.clone()),
            DeviceAction::ConfirmDelete(longest.clone()),
            DeviceAction::Keep,
        ] {
            let data = action.data();
            assert!(data.len() <= 64, "{data}");
            let rest = data.strip_prefix(DEVICE_PREFIX).unwrap();
            assert_eq!(DeviceAction::parse(rest), Some(action));
        }
    }

    #[test]
    fn malformed_button_data_is_no_action() {
        for bad in [
            "",
            "list:x",
            "add:tg-1-1",
            "keep:tg-1-1",
            "ren",
            "ren:",
            "del:",
            "zap:tg-1-1",
        ] {
            assert_eq!(DeviceAction::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_rename_prompt_names_its_device_on_its_last_line() {
        for lang in [Lang::Ru, Lang::En] {
            let prompt = text::rename_prompt(lang, "Phone [old]", "tg-42-3");
            assert_eq!(rename_target(&prompt), Some("tg-42-3"));
        }
        assert_eq!(rename_target("hello"), None);
        assert_eq!(rename_target("x\n[]"), None);
        assert_eq!(rename_target("x\n[a b]"), None);
        assert_eq!(rename_target(""), None);
    }

    fn peer(handshake_ago: Option<i64>, ready: bool) -> (WgPeer, Timestamp) {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let mut peer = WgPeer::new(
            "tg-42-1",
            WgPeerSpec {
                private_key_secret_ref: ready.then(|| SecretKeyRef::new("k", "privateKey")),
                address: ready.then(|| "10.8.0.2/32".to_owned()),
                device_name: Some("Phone".into()),
                ..WgPeerSpec::on_server("main")
            },
        );
        peer.status = Some(WgPeerStatus {
            last_handshake: handshake_ago.map(|s| now - SignedDuration::from_secs(s)),
            rx_bytes: 1536,
            tx_bytes: 3 * 1024 * 1024,
            ..WgPeerStatus::default()
        });
        (peer, now)
    }

    #[test]
    fn an_entry_is_connected_with_a_recent_handshake_and_shows_the_traffic() {
        let (recent, now) = peer(Some(60), true);
        let shown = entry(&recent, now);
        assert!(shown.connected && shown.ready);
        assert_eq!((shown.rx_bytes, shown.tx_bytes), (1536, 3 * 1024 * 1024));
        let (old, now) = peer(Some(600), true);
        assert!(!entry(&old, now).connected);
        let (never, now) = peer(None, false);
        let shown = entry(&never, now);
        assert!(!shown.connected && !shown.ready);
        let list = text::devices_list(Lang::En, &[entry(&recent, now)], 2);
        assert!(list.contains("Phone — 🟢 connected"), "{list}");
        assert!(list.contains("↑ 1.5 KB ↓ 3 MB"), "{list}");
        let list = text::devices_list(Lang::Ru, &[entry(&old, now), shown], 2);
        assert!(
            list.contains("⚪ не подключено") && list.contains("⏳ готовится"),
            "{list}"
        );
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(text::bytes(Lang::En, 0), "0 B");
        assert_eq!(text::bytes(Lang::En, 1023), "1023 B");
        assert_eq!(text::bytes(Lang::En, 1024), "1 KB");
        assert_eq!(text::bytes(Lang::Ru, 5 * 1024 * 1024 * 1024), "5 ГБ");
        assert_eq!(text::bytes(Lang::En, -5), "0 B");
    }

    #[test]
    fn the_keyboard_has_the_device_buttons_and_add_only_below_the_limit() {
        let (one, _) = peer(None, true);
        let keyboard = list_keyboard(Lang::En, std::slice::from_ref(&one), 2);
        let data: Vec<String> = keyboard
            .inline_keyboard
            .iter()
            .flatten()
            .filter_map(|b| match &b.kind {
                teloxide::types::InlineKeyboardButtonKind::CallbackData(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            data,
            [
                "cfg:tg-42-1",
                "dev:ren:tg-42-1",
                "dev:rot:tg-42-1",
                "dev:del:tg-42-1",
                "dev:add"
            ]
        );
        let full = list_keyboard(Lang::En, &[one], 1);
        assert_eq!(full.inline_keyboard.len(), 2, "no add button at the limit");
    }
}
