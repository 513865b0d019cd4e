//! The handler tree: commands, the admin gate, plan and device buttons, and the fallback that
//! answers anything else with a short help. [`handler_tree`] is what the binary dispatches and
//! what the tests drive; its dependencies (`Arc<App>`) are injected with `dptree::deps!`.
//!
//! Every handler answers in one envelope ([`reply`]): on an internal failure the user
//! gets a short "try again" and the failure is counted in `wgsub_bot_handler_errors_total`.
//! `/admin` is carried out beside its parser, in [`crate::admin::run`].

use std::sync::Arc;

use jiff::Timestamp;
use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::types::{
    ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, UpdateKind, User,
};
use teloxide::utils::command::BotCommands;
use wgsub_crds::VpnSubscriptionSpec;
use wgsub_crds::liveness::subscription_phase;
use wgsub_crds::plans::{Plan, PlanCatalogue};
use wgsub_crds::resources::MAX_TELEGRAM_USER_ID;
use wgsub_crds::{SubscriptionPhase, WgPeer};
use wgsub_ledger::{PaymentError, PaymentOrder, ReceiptCustomer, TelegramUser, User as LedgerUser};

use crate::admin;
use crate::app::App;
use crate::device_menu;
use crate::devices::{self, DeviceConfig};
use crate::growth;
use crate::locations;
use crate::renewal;
use crate::stars::{self, STARS_PREFIX};
use crate::store;
use crate::telegram::{self, BUY_PREFIX, CONFIG_PREFIX};
use crate::text::{self, Lang};
use reply::{Reply, answer, on_message};

pub mod reply;

pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
pub type HandlerResult = Result<(), HandlerError>;

/// The commands the bot understands (`/admin` only from configured administrators).
#[derive(BotCommands, Clone, Debug, PartialEq, Eq)]
#[command(rename_rule = "lowercase")]
pub enum Command {
    /// `/start [payload]` — the payload is a deep link such as `ref_<id>`.
    Start(String),
    App,
    Status,
    Buy,
    Config,
    Help,
    /// `/promo <code>` — redeem a promo code.
    Promo(String),
    /// `/invite` — the personal referral link.
    Invite,
    /// `/devices` — the user's devices: rename, new key, delete, add.
    Devices,
    /// `/renewal` — automatic renewal: the saved card, switching it off.
    Renewal,
    /// `/location` — pick the server's country.
    Location,
    Admin(String),
}

/// The bot's whole update handling.
pub fn handler_tree() -> UpdateHandler<HandlerError> {
    let commands = teloxide::filter_command::<Command, _>()
        .branch(dptree::case![Command::Start(payload)].endpoint(start))
        .branch(dptree::case![Command::App].endpoint(app_command))
        .branch(dptree::case![Command::Status].endpoint(status))
        .branch(dptree::case![Command::Buy].endpoint(buy))
        .branch(dptree::case![Command::Config].endpoint(config))
        .branch(dptree::case![Command::Help].endpoint(help))
        .branch(dptree::case![Command::Promo(code)].endpoint(growth::promo))
        .branch(dptree::case![Command::Invite].endpoint(growth::invite))
        .branch(dptree::case![Command::Devices].endpoint(device_menu::devices_command))
        .branch(dptree::case![Command::Renewal].endpoint(renewal::renewal_command))
        .branch(dptree::case![Command::Location].endpoint(locations::location_command))
        .branch(
            dptree::case![Command::Admin(arguments)]
                .filter(sent_by_admin)
                .endpoint(admin::run::command),
        );
    let messages = Update::filter_message()
        .branch(Message::filter_successful_payment().endpoint(stars::successful_payment))
        .branch(commands)
        .branch(dptree::filter(device_menu::is_rename_reply).endpoint(device_menu::rename_reply))
        .endpoint(other_message);
    let callbacks = Update::filter_callback_query().endpoint(callback);
    dptree::entry()
        .branch(dptree::filter(sender_out_of_range).endpoint(refuse_sender))
        .branch(Update::filter_pre_checkout_query().endpoint(stars::pre_checkout))
        .branch(messages)
        .branch(callbacks)
}

/// The sender's id as the bot stores it, `None` when it is out of range: a subscription is
/// named `tg-<id>` with at most 18 digits (the CRD's name rule), and the ledger keeps ids as
/// `BIGINT`.
pub fn stored_user_id(user: &User) -> Option<i64> {
    i64::try_from(user.id.0)
        .ok()
        .filter(|id| (1..=MAX_TELEGRAM_USER_ID).contains(id))
}

pub(crate) fn user_id(user: &User) -> Result<i64, HandlerError> {
    stored_user_id(user).ok_or_else(|| "Telegram user id out of range".into())
}

fn sender_out_of_range(update: Update) -> bool {
    update
        .from()
        .is_some_and(|user| stored_user_id(user).is_none())
}

/// A sender the bot cannot store gets a polite answer, and nothing is recorded.
async fn refuse_sender(bot: Bot, update: Update, app: Arc<App>) -> HandlerResult {
    app.metrics.update("unsupported_sender");
    let Some(user) = update.from() else {
        return Ok(());
    };
    let lang = lang_of(Some(user));
    tracing::info!(
        user = user.id.0,
        "a sender id beyond the stored range was refused"
    );
    let sent = match &update.kind {
        UpdateKind::CallbackQuery(query) => bot
            .answer_callback_query(query.id.clone())
            .text(text::unsupported_account(lang))
            .await
            .map(|_| ()),
        UpdateKind::Message(message) => bot
            .send_message(message.chat.id, text::unsupported_account(lang))
            .await
            .map(|_| ()),
        _ => Ok(()),
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "the refusal was not delivered");
    }
    Ok(())
}

pub(crate) fn lang_of(user: Option<&User>) -> Lang {
    Lang::from_code(user.and_then(|u| u.language_code.as_deref()))
}

pub(crate) fn telegram_user(user: &User) -> Result<TelegramUser, HandlerError> {
    Ok(TelegramUser {
        id: user_id(user)?,
        username: user.username.clone(),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        language_code: user.language_code.clone(),
    })
}

fn sent_by_admin(message: Message, app: Arc<App>) -> bool {
    message
        .from
        .as_ref()
        .and_then(|user| user_id(user).ok())
        .is_some_and(|id| app.is_admin(id))
}

/// Writes the user's `VpnSubscription` from the ledger; a failure is logged, not shown (the
/// ledger has it, and the API's drift loop writes it again).
pub(crate) async fn sync_quietly(app: &App, user_id: i64) {
    if let Err(error) = app.sync.sync_user(&app.ledger, user_id).await {
        tracing::warn!(user = user_id, %error, "VpnSubscription write failed; the drift loop retries");
    }
}

/// The referrer named by a `/start ref_<id>` payload (not the user themselves).
pub fn referrer_of(payload: &str, user_id: i64) -> Option<i64> {
    let id = payload.trim().strip_prefix("ref_")?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse::<i64>()
        .ok()
        .filter(|id| *id > 0 && *id != user_id)
}

async fn start(bot: Bot, message: Message, app: Arc<App>, payload: String) -> HandlerResult {
    on_message(&bot, &app, &message, "start", async |to| {
        let Some(from) = message.from.as_ref() else {
            return Ok(());
        };
        let user = telegram_user(from)?;
        let now = Timestamp::now();
        let first_start = app.ledger.user(user.id).await?.is_none();
        app.ledger.upsert_user(&user, now).await?;
        let trial = app
            .ledger
            .grant_trial(user.id, app.settings.trial_days, now)
            .await?;
        // A referral counts only when it brought the user: at their first /start.
        if let Some(referrer) = referrer_of(&payload, user.id).filter(|_| first_start) {
            store::record_referral(&app.ledger, user.id, payload.trim(), Some(referrer), now)
                .await?;
        }
        sync_quietly(&app, user.id).await;
        let trial = trial.and_then(|entitlement| {
            entitlement
                .paid_until
                .map(|until| (app.settings.trial_days, until))
        });
        bot.send_message(to.chat, text::welcome(to.lang, &from.first_name, trial))
            .reply_markup(telegram::app_keyboard(to.lang, &app.settings.miniapp_url))
            .await?;
        Ok(())
    })
    .await
}

async fn app_command(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "app", async |to| {
        bot.send_message(to.chat, text::app(to.lang))
            .reply_markup(telegram::app_keyboard(to.lang, &app.settings.miniapp_url))
            .await?;
        Ok(())
    })
    .await
}

async fn help(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "help", async |to| {
        to.send(text::help(to.lang)).await
    })
    .await
}

/// True in a private chat; elsewhere (a group, a channel) tells the sender to ask in private
/// and returns false: what `/config` and `/admin` answer is for the sender's eyes only.
pub(crate) async fn in_private_chat(
    to: Reply<'_>,
    message: &Message,
) -> Result<bool, HandlerError> {
    if message.chat.is_private() {
        return Ok(true);
    }
    to.bot
        .send_message(to.chat, text::private_chat_only(to.lang))
        .reply_parameters(teloxide::types::ReplyParameters::new(message.id))
        .await?;
    Ok(false)
}

/// Anything that is not a known command: the receipt e-mail when one is awaited, otherwise a
/// short help (also for `/admin` from non-administrators).
async fn other_message(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    answer(Reply::of(&bot, &app, &message), "unknown", async |to| {
        if let (Some(from), Some(text)) = (message.from.as_ref(), message.text())
            && app.settings.receipts.is_some()
            && !text.starts_with('/')
        {
            let id = user_id(from)?;
            let needs_contact = app
                .ledger
                .user(id)
                .await?
                .is_some_and(|user| user.receipt_customer().is_none());
            if needs_contact {
                app.metrics.update("receipt_contact");
                return save_receipt_contact(to, id, text).await;
            }
        }
        app.metrics.update("unknown");
        to.send(text::unknown(to.lang)).await
    })
    .await
}

/// The e-mail a receipt goes to, typed by a user asked for it: saved, then the plans; or why
/// it does not look like one.
async fn save_receipt_contact(to: Reply<'_>, user_id: i64, typed: &str) -> HandlerResult {
    match ReceiptCustomer::parse(typed) {
        Ok(contact) => {
            to.app.ledger.set_receipt_contact(user_id, &contact).await?;
            to.send(text::receipt_contact_saved(to.lang)).await?;
            send_plans(to).await
        }
        Err(problem) => {
            to.send(text::receipt_contact_invalid(to.lang, &problem))
                .await
        }
    }
}

async fn status(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "status", async |to| {
        let Some(user) = registered_user(to, &message).await? else {
            return Ok(());
        };
        let phase = ledger_phase(&user, Timestamp::now());
        let peers = devices::user_peers(&app.caches, user.telegram_id)?;
        let lines: Vec<text::DeviceLine> = peers
            .iter()
            .map(|peer| text::DeviceLine {
                name: devices::device_label(peer),
                enabled: peer.spec.enabled,
                last_handshake: peer.status.as_ref().and_then(|s| s.last_handshake),
            })
            .collect();
        let entitlement = &user.entitlement;
        let status = text::status(
            to.lang,
            phase,
            entitlement.paid_until,
            entitlement.max_devices,
            &lines,
        );
        let usage = crate::quota::usage_of(&app.caches, user.telegram_id, entitlement);
        to.send(crate::quota::status_with_usage(to.lang, status, &usage))
            .await
    })
    .await
}

/// Every plan's buttons: by card (with or without renewal) and, when sold for Stars, in Stars.
pub fn plans_keyboard(lang: Lang, plans: &PlanCatalogue) -> InlineKeyboardMarkup {
    let buttons = plans.plans().iter().flat_map(|plan| {
        let card = InlineKeyboardButton::callback(
            text::plan_button(lang, plan),
            format!("{BUY_PREFIX}{}", plan.id),
        );
        let stars = stars::plan_button(lang, plan)
            .map(|(label, data)| vec![InlineKeyboardButton::callback(label, data)]);
        std::iter::once(renewal::beside_renewing(card, lang, &plan.id)).chain(stars)
    });
    InlineKeyboardMarkup::new(buttons)
}

async fn send_plans(to: Reply<'_>) -> HandlerResult {
    to.bot
        .send_message(to.chat, text::choose_plan(to.lang))
        .reply_markup(plans_keyboard(to.lang, &to.app.plans))
        .await?;
    Ok(())
}

async fn buy(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "buy", async |to| {
        let Some(from) = message.from.as_ref() else {
            return Ok(());
        };
        let user = app
            .ledger
            .upsert_user(&telegram_user(from)?, Timestamp::now())
            .await?;
        if app.settings.receipts.is_some() && user.receipt_customer().is_none() {
            return to.send(text::ask_receipt_contact(to.lang)).await;
        }
        send_plans(to).await?;
        locations::offer_with_buy(to, user.telegram_id).await
    })
    .await
}

async fn buy_plan(to: Reply<'_>, from: &User, plan_id: &str, save_card: bool) -> HandlerResult {
    let (app, lang) = (to.app, to.lang);
    let Some(plan) = app.plans.get(plan_id) else {
        return to.send(text::unknown_plan(lang)).await;
    };
    let now = Timestamp::now();
    let user = app.ledger.upsert_user(&telegram_user(from)?, now).await?;
    let order = PaymentOrder {
        user_id: user.telegram_id,
        plan,
        return_url: &app.settings.return_url,
        receipt: app.settings.receipts,
    };
    let created = app
        .ledger
        .create_payment_saving_card(&app.yookassa, order, save_card, now)
        .await;
    match created {
        Ok(created) => {
            let url = url::Url::parse(&created.confirmation_url)
                .map_err(|e| format!("YooKassa confirmation URL: {e}"))?;
            // The price shown is what YooKassa was asked for (less a waiting discount).
            let charged = Plan {
                price_minor: created.amount_minor,
                ..plan.clone()
            };
            send_payment_link(to, &charged, url).await
        }
        Err(PaymentError::ContactRequired) => to.send(text::ask_receipt_contact(lang)).await,
        Err(PaymentError::Limited(limited)) => {
            app.metrics.update("payment_limited");
            to.send(text::too_many_payments(lang, limited.retry_after))
                .await
        }
        Err(PaymentError::YooKassa(error)) => {
            app.metrics.handler_error("buy_plan");
            tracing::warn!(%error, "YooKassa refused or failed to create a payment");
            to.send(text::payment_unavailable(lang)).await
        }
        Err(error) => Err(error.into()),
    }
}

async fn send_payment_link(to: Reply<'_>, plan: &Plan, url: url::Url) -> HandlerResult {
    let pay = InlineKeyboardButton::url(text::pay_button(to.lang), url);
    to.bot
        .send_message(to.chat, text::payment_link(to.lang, plan))
        .reply_markup(telegram::column([pay]))
        .await?;
    Ok(())
}

async fn config(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    on_message(&bot, &app, &message, "config", async |to| {
        if !in_private_chat(to, &message).await? {
            return Ok(());
        }
        let Some(user) = registered_user(to, &message).await? else {
            return Ok(());
        };
        if ledger_phase(&user, Timestamp::now()) != SubscriptionPhase::Active {
            return to.send(text::subscription_inactive(to.lang)).await;
        }
        match devices::user_peers(&app.caches, user.telegram_id)?.as_slice() {
            [] => to.send(text::no_devices_yet(to.lang)).await,
            [peer] => send_device(to, peer).await,
            many => {
                let buttons = many.iter().map(|peer| {
                    InlineKeyboardButton::callback(
                        devices::device_label(peer),
                        format!(
                            "{CONFIG_PREFIX}{}",
                            peer.metadata.name.as_deref().unwrap_or_default()
                        ),
                    )
                });
                bot.send_message(to.chat, text::choose_device(to.lang))
                    .reply_markup(telegram::column(buttons))
                    .await?;
                Ok(())
            }
        }
    })
    .await
}

async fn send_device(to: Reply<'_>, peer: &WgPeer) -> HandlerResult {
    let (bot, chat, lang) = (to.bot, to.chat, to.lang);
    let DeviceConfig::Ready(rendered) = devices::device_config(&to.app.caches, peer)? else {
        return to.send(text::config_not_ready(lang)).await;
    };
    let qr = devices::qr_png(&rendered.text)?;
    let label = devices::device_label(peer);
    // teloxide takes the bytes by value: this copy is dropped when the upload is done.
    let conf = rendered.text.as_bytes().to_vec();
    let protocol = rendered.protocol;
    bot.send_document(chat, InputFile::memory(conf).file_name(rendered.file_name))
        .caption(text::config_caption(lang, &label, protocol))
        .await?;
    bot.send_photo(chat, InputFile::memory(qr).file_name("wgsub-qr.png"))
        .caption(text::qr_caption(lang, protocol))
        .reply_markup(crate::guide::open_keyboard(lang))
        .await?;
    Ok(())
}

/// The sender's ledger record; `None` (after telling a sender who never used /start so) when
/// there is none or the message has no sender.
pub(crate) async fn registered_user(
    to: Reply<'_>,
    message: &Message,
) -> Result<Option<LedgerUser>, HandlerError> {
    let Some(from) = message.from.as_ref() else {
        return Ok(None);
    };
    let user = to.app.ledger.user(user_id(from)?).await?;
    if user.is_none() {
        to.send(text::not_registered(to.lang)).await?;
    }
    Ok(user)
}

/// The phase the user's subscription has by the ledger (the truth the resource follows).
fn ledger_phase(user: &LedgerUser, now: Timestamp) -> SubscriptionPhase {
    let spec = VpnSubscriptionSpec {
        paid_until: user.entitlement.paid_until,
        suspended: user.suspended,
        ..VpnSubscriptionSpec::for_user(user.telegram_id)
    };
    subscription_phase(&spec, now)
}

async fn config_device(to: Reply<'_>, from: &User, peer_name: &str) -> HandlerResult {
    let id = user_id(from)?;
    if !wgsub_crds::devices::is_users_peer_name(id, peer_name) {
        return to.send(text::unknown_device(to.lang)).await;
    }
    let user = to.app.ledger.user(id).await?;
    let active =
        user.is_some_and(|user| ledger_phase(&user, Timestamp::now()) == SubscriptionPhase::Active);
    if !active {
        return to.send(text::subscription_inactive(to.lang)).await;
    }
    match devices::user_peer(&to.app.caches, id, peer_name)? {
        Some(peer) => send_device(to, &peer).await,
        None => to.send(text::unknown_device(to.lang)).await,
    }
}

/// What an inline button asks for, read from its callback data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press<'a> {
    /// A plan's YooKassa button; `save_card` for the one with automatic renewal.
    BuyPlan {
        plan: &'a str,
        save_card: bool,
    },
    RenewalOff,
    StarsInvoice {
        plan: &'a str,
    },
    Device {
        action: &'a str,
    },
    Location {
        server: &'a str,
    },
    Guide {
        platform: &'a str,
    },
    Config {
        peer: &'a str,
    },
    Unknown,
}

impl<'a> Press<'a> {
    pub fn parse(data: &'a str) -> Self {
        let after = |prefix: &str| data.strip_prefix(prefix);
        if let Some(plan) = after(renewal::BUY_RENEWING_PREFIX) {
            Press::BuyPlan {
                plan,
                save_card: true,
            }
        } else if data == renewal::RENEWAL_OFF {
            Press::RenewalOff
        } else if let Some(plan) = after(BUY_PREFIX) {
            Press::BuyPlan {
                plan,
                save_card: false,
            }
        } else if let Some(plan) = after(STARS_PREFIX) {
            Press::StarsInvoice { plan }
        } else if let Some(action) = after(device_menu::DEVICE_PREFIX) {
            Press::Device { action }
        } else if let Some(server) = after(locations::LOCATION_PREFIX) {
            Press::Location { server }
        } else if let Some(platform) = after(crate::guide::GUIDE_PREFIX) {
            Press::Guide { platform }
        } else if let Some(peer) = after(CONFIG_PREFIX) {
            Press::Config { peer }
        } else {
            Press::Unknown
        }
    }

    /// The update's name in `wgsub_bot_updates_total`.
    pub fn metric(self) -> &'static str {
        match self {
            Press::BuyPlan {
                save_card: true, ..
            } => "buy_plan_renewing",
            Press::BuyPlan { .. } => "buy_plan",
            Press::RenewalOff => "renewal_off_button",
            Press::StarsInvoice { .. } => "stars_invoice",
            Press::Device { .. } => "device_button",
            Press::Location { .. } => "location_pick",
            Press::Guide { .. } => "guide",
            Press::Config { .. } => "config_device",
            Press::Unknown => "unknown_callback",
        }
    }
}

async fn callback(bot: Bot, query: CallbackQuery, app: Arc<App>) -> HandlerResult {
    let to = Reply {
        bot: &bot,
        app: &app,
        chat: ChatId::from(query.from.id),
        lang: lang_of(Some(&query.from)),
    };
    // Only stops the button's spinner: a query too old to answer (after a restart, say) must
    // not stop the button from working.
    if let Err(error) = bot.answer_callback_query(query.id.clone()).await {
        tracing::debug!(%error, "the callback query was not answered");
    }
    let press = Press::parse(query.data.as_deref().unwrap_or_default());
    let from = &query.from;
    answer(to, "callback", async |to| {
        app.metrics.update(press.metric());
        match press {
            Press::BuyPlan { plan, save_card } => buy_plan(to, from, plan, save_card).await,
            Press::RenewalOff => renewal::switch_off(to, from).await,
            Press::StarsInvoice { plan } => stars::send_invoice(to, from, plan).await,
            Press::Device { action } => device_menu::on_button(to, from, action).await,
            Press::Location { server } => locations::on_pick(to, from, server).await,
            Press::Guide { platform } => crate::guide::on_button(to, from, platform).await,
            Press::Config { peer } => config_device(to, from, peer).await,
            Press::Unknown => to.send(text::unknown(to.lang)).await,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_button_prefix_is_routed_with_its_metric() {
        let cases = [
            (
                "buyr:month",
                Press::BuyPlan {
                    plan: "month",
                    save_card: true,
                },
                "buy_plan_renewing",
            ),
            ("renewal:off", Press::RenewalOff, "renewal_off_button"),
            (
                "buy:month",
                Press::BuyPlan {
                    plan: "month",
                    save_card: false,
                },
                "buy_plan",
            ),
            (
                "stars:month",
                Press::StarsInvoice { plan: "month" },
                "stars_invoice",
            ),
            (
                "dev:list",
                Press::Device { action: "list" },
                "device_button",
            ),
            (
                "loc:de-1",
                Press::Location { server: "de-1" },
                "location_pick",
            ),
            ("guide:ios", Press::Guide { platform: "ios" }, "guide"),
            ("guide:", Press::Guide { platform: "" }, "guide"),
            (
                "cfg:tg-7-1",
                Press::Config { peer: "tg-7-1" },
                "config_device",
            ),
            ("", Press::Unknown, "unknown_callback"),
            ("renewal:on", Press::Unknown, "unknown_callback"),
        ];
        for (data, press, metric) in cases {
            assert_eq!(Press::parse(data), press, "{data}");
            assert_eq!(press.metric(), metric, "{data}");
        }
    }
}
