//! The connection guide: after the first purchase (its notice), under a config (`/config`) and
//! from its own button, the user picks their platform (iOS, Android, Windows, macOS, Linux) and
//! gets the app to install for their server's protocol — WireGuard, or AmneziaVPN / AmneziaWG —
//! with its official store links ([`wgsub_devices::apps`], the same the Mini App shows) and the
//! quickest import there.
//!
//! The pure parts — the callback data ([`GuideAction`]), the keyboards, which protocol a user
//! is on ([`protocol_for`]) — are unit-tested here; the handlers through the handler tree in
//! `tests/guide.rs`.

use teloxide::prelude::*;
use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, User};
use wgsub_crds::resources::{Protocol, subscription_name};
use wgsub_devices::apps::{Platform, store_links};
use wgsub_ledger::NotificationEvent;

use crate::app::App;
use crate::broadcast::Delivery;
use crate::devices::user_peers;
use crate::handlers::reply::Reply;
use crate::handlers::{HandlerResult, stored_user_id};
use crate::jobs::notification_text;
use crate::telegram::delivery;
use crate::text::{self, Lang};

/// Callback data of the guide's buttons: `guide:` opens it, `guide:<platform>` answers.
pub const GUIDE_PREFIX: &str = "guide:";

/// What a guide button asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuideAction {
    /// The platform buttons.
    Choose,
    /// The guide for one platform.
    Show(Platform),
}

impl GuideAction {
    /// The action of the callback data after [`GUIDE_PREFIX`]; an unknown platform asks again.
    pub fn parse(data: &str) -> GuideAction {
        Platform::from_code(data).map_or(GuideAction::Choose, GuideAction::Show)
    }
}

/// The single button that opens the guide (under a config).
pub fn open_keyboard(lang: Lang) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([[InlineKeyboardButton::callback(
        text::guide_button(lang),
        GUIDE_PREFIX,
    )]])
}

/// One button per platform: phones on the first row, computers on the second.
pub fn platform_keyboard() -> InlineKeyboardMarkup {
    let button = |platform: Platform| {
        InlineKeyboardButton::callback(
            platform.name(),
            format!("{GUIDE_PREFIX}{}", platform.code()),
        )
    };
    let (phones, computers): (Vec<_>, Vec<_>) =
        Platform::ALL.into_iter().partition(|p| p.is_phone());
    InlineKeyboardMarkup::new([
        phones.into_iter().map(button).collect::<Vec<_>>(),
        computers.into_iter().map(button).collect(),
    ])
}

/// The protocol a user's guide is for: that of their devices' server, else of the server
/// their subscription is on, else the one every offered server speaks; WireGuard when the
/// servers differ or none is known.
pub fn protocol_for(
    device_servers: &[Protocol],
    subscription_server: Option<Protocol>,
    servers: &[Protocol],
) -> Protocol {
    if let Some(protocol) = device_servers.first().copied().or(subscription_server) {
        return protocol;
    }
    match servers.split_first() {
        Some((first, rest)) if rest.iter().all(|p| p == first) => *first,
        _ => Protocol::Wireguard,
    }
}

/// The keyboard sent with an outbox notice: the platforms after the user's first purchase
/// (not after each renewal or later purchase: their tunnel is set up), nothing otherwise.
pub fn notice_keyboard(event: &NotificationEvent) -> Option<InlineKeyboardMarkup> {
    matches!(
        event,
        NotificationEvent::PaymentSucceeded {
            first_purchase: true,
            ..
        }
    )
    .then(platform_keyboard)
}

/// Sends an outbox notice (with the guide's platform buttons after the first purchase).
pub async fn send_notice(bot: &Bot, chat: i64, lang: Lang, event: &NotificationEvent) -> Delivery {
    let mut request = bot.send_message(ChatId(chat), notification_text(lang, event));
    if let Some(keyboard) = notice_keyboard(event) {
        request = request.reply_markup(keyboard);
    }
    let result = request.await;
    if let Err(error) = &result {
        tracing::debug!(chat, %error, "send failed");
    }
    delivery(&result)
}

/// A guide button: the platform buttons, or the guide for the platform picked.
pub async fn on_button(to: Reply<'_>, from: &User, data: &str) -> HandlerResult {
    let answer = match GuideAction::parse(data) {
        GuideAction::Choose => text::guide_choose_platform(to.lang).to_owned(),
        GuideAction::Show(platform) => {
            let protocol = user_protocol(to.app, from)?;
            text::guide(to.lang, protocol, platform, store_links(protocol, platform))
        }
    };
    to.bot
        .send_message(to.chat, answer)
        .reply_markup(platform_keyboard())
        .await?;
    Ok(())
}

/// The protocol of the user's server, from the bot's caches.
fn user_protocol(app: &App, from: &User) -> Result<Protocol, crate::devices::DeviceError> {
    let caches = &app.caches;
    let protocol_of = |server: &str| caches.server(server).map(|s| s.spec.protocol);
    let (devices, subscription) = match stored_user_id(from) {
        Some(id) => {
            let devices: Vec<Protocol> = user_peers(caches, id)?
                .iter()
                .filter_map(|peer| protocol_of(&peer.spec.server))
                .collect();
            let subscription = caches
                .subscription(&subscription_name(id))
                .and_then(|s| s.spec.server.clone())
                .and_then(|server| protocol_of(&server));
            (devices, subscription)
        }
        None => (Vec::new(), None),
    };
    let servers: Vec<Protocol> = caches.servers().iter().map(|s| s.spec.protocol).collect();
    Ok(protocol_for(&devices, subscription, &servers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use teloxide::types::InlineKeyboardButtonKind;

    fn data(keyboard: &InlineKeyboardMarkup) -> Vec<Vec<String>> {
        keyboard
            .inline_keyboard
            .iter()
            .map(|row| {
                row.iter()
                    .map(|button| match &button.kind {
                        InlineKeyboardButtonKind::CallbackData(data) => data.clone(),
                        other => panic!("a callback button, got {other:?}"),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_platform_button_parses_back_to_its_platform() {
        let rows = data(&platform_keyboard());
        assert_eq!(
            rows,
            [
                vec!["guide:ios", "guide:android"],
                vec!["guide:windows", "guide:macos", "guide:linux"]
            ]
        );
        let parsed: Vec<_> = rows
            .concat()
            .iter()
            .map(|d| GuideAction::parse(d.strip_prefix(GUIDE_PREFIX).unwrap()))
            .collect();
        let expected: Vec<_> = Platform::ALL.into_iter().map(GuideAction::Show).collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn the_open_button_and_unknown_platforms_ask_for_the_platform() {
        let open = data(&open_keyboard(Lang::En)).concat();
        assert_eq!(open, ["guide:"]);
        assert_eq!(GuideAction::parse(""), GuideAction::Choose);
        assert_eq!(GuideAction::parse("symbian"), GuideAction::Choose);
    }

    #[test]
    fn the_protocol_is_the_devices_then_the_subscriptions_then_the_servers_common_one() {
        use Protocol::{Amneziawg as A, Wireguard as W};
        assert_eq!(protocol_for(&[A], Some(W), &[W]), A);
        assert_eq!(protocol_for(&[W, A], None, &[A]), W);
        assert_eq!(protocol_for(&[], Some(A), &[W]), A);
        assert_eq!(protocol_for(&[], None, &[A, A]), A);
        assert_eq!(protocol_for(&[], None, &[A, W]), W);
        assert_eq!(protocol_for(&[], None, &[]), W);
    }

    #[test]
    fn only_the_first_purchases_notice_carries_the_platform_buttons() {
        let paid = |first_purchase| NotificationEvent::PaymentSucceeded {
            payment_id: uuid::Uuid::from_u128(7),
            plan: "month".into(),
            amount_minor: 19_900,
            currency: "RUB".into(),
            paid_until: None,
            first_purchase,
        };
        assert_eq!(notice_keyboard(&paid(true)), Some(platform_keyboard()));
        assert_eq!(
            notice_keyboard(&paid(false)),
            None,
            "a renewal or a later purchase"
        );
        let referral = NotificationEvent::ReferralRewarded {
            days: 7,
            paid_until: None,
        };
        assert_eq!(notice_keyboard(&referral), None);
    }

    #[test]
    fn the_amneziawg_caption_of_a_config_lists_the_same_store_links() {
        for lang in [Lang::Ru, Lang::En] {
            let caption = text::amneziawg_apps(lang);
            for platform in Platform::ALL {
                for link in store_links(Protocol::Amneziawg, platform) {
                    assert!(caption.contains(link.url), "{lang:?} lacks {}", link.url);
                }
            }
        }
    }

    #[test]
    fn each_guide_names_the_app_of_the_protocol_with_its_links_in_both_languages() {
        for lang in [Lang::Ru, Lang::En] {
            for platform in Platform::ALL {
                for protocol in [Protocol::Wireguard, Protocol::Amneziawg] {
                    let links = store_links(protocol, platform);
                    let guide = text::guide(lang, protocol, platform, links);
                    assert!(guide.starts_with(platform.name()), "{guide}");
                    assert!(guide.contains(".conf") && guide.contains("/config"));
                    for link in links {
                        assert!(guide.contains(link.url), "{guide}");
                    }
                    match protocol {
                        Protocol::Wireguard => assert!(!guide.contains("Amnezia"), "{guide}"),
                        Protocol::Amneziawg => assert!(guide.contains("AmneziaVPN"), "{guide}"),
                    }
                    assert_eq!(guide.contains("QR"), platform.is_phone(), "{guide}");
                    assert!(guide.chars().count() < 4096);
                }
            }
            assert_ne!(
                text::guide(
                    Lang::Ru,
                    Protocol::Wireguard,
                    Platform::Ios,
                    store_links(Protocol::Wireguard, Platform::Ios)
                ),
                text::guide(
                    Lang::En,
                    Protocol::Wireguard,
                    Platform::Ios,
                    store_links(Protocol::Wireguard, Platform::Ios)
                )
            );
        }
    }
}
