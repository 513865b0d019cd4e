//! The handler tree: commands, the admin gate, plan and device buttons, and the fallback that
//! answers anything else with a short help. [`handler_tree`] is what the binary dispatches and
//! what the tests drive; its dependencies (`Arc<App>`) are injected with `dptree::deps!`.
//!
//! Every handler answers: on an internal failure the user gets a short "try again" and the
//! failure is counted in `wgsub_bot_handler_errors_total`.

use std::sync::Arc;

use jiff::Timestamp;
use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::types::{ChatId, InlineKeyboardButton, InputFile, MessageId, UpdateKind, User};
use teloxide::utils::command::BotCommands;
use wgsub_crds::VpnSubscriptionSpec;
use wgsub_crds::liveness::subscription_phase;
use wgsub_crds::plans::Plan;
use wgsub_crds::resources::MAX_TELEGRAM_USER_ID;
use wgsub_crds::{SubscriptionPhase, WgPeer};
use wgsub_ledger::{
    AdminGrant, PaymentError, PaymentOrder, ReceiptCustomer, SyncError, TelegramUser,
    User as LedgerUser,
};

use crate::admin::{self, AdminCommand, UserRef};
use crate::app::App;
use crate::broadcast;
use crate::device_menu;
use crate::devices::{self, DeviceConfig};
use crate::growth;
use crate::locations;
use crate::renewal;
use crate::stars::{self, STARS_PREFIX};
use crate::store::{self, AdminLogEntry};
use crate::telegram::{self, BUY_PREFIX, CONFIG_PREFIX};
use crate::text::{self, Lang};

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
                .endpoint(admin),
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

fn user_id(user: &User) -> Result<i64, HandlerError> {
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

/// Turns a failed handler into a "try again" answer and a counted, logged error.
pub(crate) async fn finish(
    bot: &Bot,
    app: &App,
    chat: ChatId,
    lang: Lang,
    handler: &str,
    result: HandlerResult,
) -> HandlerResult {
    let Err(error) = result else {
        return Ok(());
    };
    if is_unreachable(&error) {
        app.metrics.unreachable_user(handler);
        tracing::info!(handler, chat = chat.0, %error, "the user cannot be reached (blocked the bot or gone)");
        return Ok(());
    }
    app.metrics.handler_error(handler);
    tracing::error!(handler, %error, "handler failed");
    if let Err(error) = bot.send_message(chat, text::internal_error(lang)).await {
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
    app.metrics.update("start");
    let Some(from) = message.from.as_ref() else {
        return Ok(());
    };
    let lang = lang_of(Some(from));
    let result = async {
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
        bot.send_message(
            message.chat.id,
            text::welcome(lang, &from.first_name, trial),
        )
        .reply_markup(telegram::app_keyboard(lang, &app.settings.miniapp_url))
        .await?;
        Ok(())
    }
    .await;
    finish(&bot, &app, message.chat.id, lang, "start", result).await
}

async fn app_command(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    app.metrics.update("app");
    let lang = lang_of(message.from.as_ref());
    let result = bot
        .send_message(message.chat.id, text::app(lang))
        .reply_markup(telegram::app_keyboard(lang, &app.settings.miniapp_url))
        .await
        .map(|_| ())
        .map_err(Into::into);
    finish(&bot, &app, message.chat.id, lang, "app", result).await
}

async fn help(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    app.metrics.update("help");
    let lang = lang_of(message.from.as_ref());
    let result = bot
        .send_message(message.chat.id, text::help(lang))
        .await
        .map(|_| ())
        .map_err(Into::into);
    finish(&bot, &app, message.chat.id, lang, "help", result).await
}

/// True in a private chat; elsewhere (a group, a channel) tells the sender to ask in private
/// and returns false: what `/config` and `/admin` answer is for the sender's eyes only.
async fn in_private_chat(bot: &Bot, message: &Message, lang: Lang) -> Result<bool, HandlerError> {
    if message.chat.is_private() {
        return Ok(true);
    }
    bot.send_message(message.chat.id, text::private_chat_only(lang))
        .reply_parameters(teloxide::types::ReplyParameters::new(message.id))
        .await?;
    Ok(false)
}

/// Anything that is not a known command: the receipt e-mail when one is awaited, otherwise a
/// short help (also for `/admin` from non-administrators).
async fn other_message(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    let lang = lang_of(message.from.as_ref());
    let result = async {
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
                match ReceiptCustomer::parse(text) {
                    Ok(contact) => {
                        app.ledger.set_receipt_contact(id, &contact).await?;
                        bot.send_message(message.chat.id, text::receipt_contact_saved(lang))
                            .await?;
                        send_plans(&bot, &app, message.chat.id, lang).await?;
                    }
                    Err(problem) => {
                        bot.send_message(
                            message.chat.id,
                            text::receipt_contact_invalid(lang, &problem),
                        )
                        .await?;
                    }
                }
                return Ok(());
            }
        }
        app.metrics.update("unknown");
        bot.send_message(message.chat.id, text::unknown(lang))
            .await?;
        Ok(())
    }
    .await;
    finish(&bot, &app, message.chat.id, lang, "unknown", result).await
}

async fn status(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    app.metrics.update("status");
    let lang = lang_of(message.from.as_ref());
    let result = async {
        let Some(user) = registered_user(&bot, &app, &message, lang).await? else {
            return Ok(());
        };
        let id = user.telegram_id;
        let phase = ledger_phase(&user, Timestamp::now());
        let peers = devices::user_peers(&app.caches, id)?;
        let lines: Vec<text::DeviceLine> = peers
            .iter()
            .map(|peer| text::DeviceLine {
                name: devices::device_label(peer),
                enabled: peer.spec.enabled,
                last_handshake: peer.status.as_ref().and_then(|s| s.last_handshake),
            })
            .collect();
        bot.send_message(
            message.chat.id,
            text::status(
                lang,
                phase,
                user.entitlement.paid_until,
                user.entitlement.max_devices,
                &lines,
            ),
        )
        .await?;
        Ok(())
    }
    .await;
    finish(&bot, &app, message.chat.id, lang, "status", result).await
}

async fn send_plans(bot: &Bot, app: &App, chat: ChatId, lang: Lang) -> HandlerResult {
    let buttons = app.plans.plans().iter().flat_map(|plan| {
        let card = InlineKeyboardButton::callback(
            text::plan_button(lang, plan),
            format!("{BUY_PREFIX}{}", plan.id),
        );
        let stars = stars::plan_button(lang, plan)
            .map(|(label, data)| vec![InlineKeyboardButton::callback(label, data)]);
        std::iter::once(renewal::beside_renewing(card, lang, &plan.id)).chain(stars)
    });
    bot.send_message(chat, text::choose_plan(lang))
        .reply_markup(teloxide::types::InlineKeyboardMarkup::new(buttons))
        .await?;
    Ok(())
}

async fn buy(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    app.metrics.update("buy");
    let lang = lang_of(message.from.as_ref());
    let result = async {
        let Some(from) = message.from.as_ref() else {
            return Ok(());
        };
        let user = app
            .ledger
            .upsert_user(&telegram_user(from)?, Timestamp::now())
            .await?;
        if app.settings.receipts.is_some() && user.receipt_customer().is_none() {
            bot.send_message(message.chat.id, text::ask_receipt_contact(lang))
                .await?;
            return Ok(());
        }
        send_plans(&bot, &app, message.chat.id, lang).await?;
        locations::offer_with_buy(&bot, &app, message.chat.id, lang, user.telegram_id).await
    }
    .await;
    finish(&bot, &app, message.chat.id, lang, "buy", result).await
}

async fn buy_plan(
    bot: &Bot,
    app: &App,
    from: &User,
    chat: ChatId,
    lang: Lang,
    plan_id: &str,
    save_card: bool,
) -> HandlerResult {
    let Some(plan) = app.plans.get(plan_id) else {
        bot.send_message(chat, text::unknown_plan(lang)).await?;
        return Ok(());
    };
    let now = Timestamp::now();
    let user = app.ledger.upsert_user(&telegram_user(from)?, now).await?;
    let order = PaymentOrder {
        user_id: user.telegram_id,
        plan,
        return_url: &app.settings.return_url,
        receipt: app.settings.receipts,
    };
    match app
        .ledger
        .create_payment_saving_card(&app.yookassa, order, save_card, now)
        .await
    {
        Ok(created) => {
            let url = url::Url::parse(&created.confirmation_url)
                .map_err(|e| format!("YooKassa confirmation URL: {e}"))?;
            // The price shown is what YooKassa was asked for (less a waiting discount).
            let charged = Plan {
                price_minor: created.amount_minor,
                ..plan.clone()
            };
            send_payment_link(bot, chat, lang, &charged, url).await
        }
        Err(PaymentError::ContactRequired) => {
            bot.send_message(chat, text::ask_receipt_contact(lang))
                .await?;
            Ok(())
        }
        Err(PaymentError::Limited(limited)) => {
            app.metrics.update("payment_limited");
            bot.send_message(chat, text::too_many_payments(lang, limited.retry_after))
                .await?;
            Ok(())
        }
        Err(PaymentError::YooKassa(error)) => {
            app.metrics.handler_error("buy_plan");
            tracing::warn!(%error, "YooKassa refused or failed to create a payment");
            bot.send_message(chat, text::payment_unavailable(lang))
                .await?;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

async fn send_payment_link(
    bot: &Bot,
    chat: ChatId,
    lang: Lang,
    plan: &Plan,
    url: url::Url,
) -> HandlerResult {
    bot.send_message(chat, text::payment_link(lang, plan))
        .reply_markup(telegram::column([InlineKeyboardButton::url(
            text::pay_button(lang),
            url,
        )]))
        .await?;
    Ok(())
}

async fn config(bot: Bot, message: Message, app: Arc<App>) -> HandlerResult {
    app.metrics.update("config");
    let lang = lang_of(message.from.as_ref());
    let result = async {
        if !in_private_chat(&bot, &message, lang).await? {
            return Ok(());
        }
        let Some(user) = registered_user(&bot, &app, &message, lang).await? else {
            return Ok(());
        };
        let id = user.telegram_id;
        if ledger_phase(&user, Timestamp::now()) != SubscriptionPhase::Active {
            bot.send_message(message.chat.id, text::subscription_inactive(lang))
                .await?;
            return Ok(());
        }
        let peers = devices::user_peers(&app.caches, id)?;
        match peers.as_slice() {
            [] => {
                bot.send_message(message.chat.id, text::no_devices_yet(lang))
                    .await?;
            }
            [peer] => send_device(&bot, &app, message.chat.id, lang, peer).await?,
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
                bot.send_message(message.chat.id, text::choose_device(lang))
                    .reply_markup(telegram::column(buttons))
                    .await?;
            }
        }
        Ok(())
    }
    .await;
    finish(&bot, &app, message.chat.id, lang, "config", result).await
}

async fn send_device(
    bot: &Bot,
    app: &App,
    chat: ChatId,
    lang: Lang,
    peer: &WgPeer,
) -> HandlerResult {
    match devices::device_config(&app.caches, peer)? {
        DeviceConfig::NotReady => {
            bot.send_message(chat, text::config_not_ready(lang)).await?;
        }
        DeviceConfig::Ready(rendered) => {
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
        }
    }
    Ok(())
}

/// The sender's ledger record; `None` (after telling a sender who never used /start so) when
/// there is none or the message has no sender.
pub(crate) async fn registered_user(
    bot: &Bot,
    app: &App,
    message: &Message,
    lang: Lang,
) -> Result<Option<LedgerUser>, HandlerError> {
    let Some(from) = message.from.as_ref() else {
        return Ok(None);
    };
    let user = app.ledger.user(user_id(from)?).await?;
    if user.is_none() {
        bot.send_message(message.chat.id, text::not_registered(lang))
            .await?;
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

async fn config_device(
    bot: &Bot,
    app: &App,
    from: &User,
    chat: ChatId,
    lang: Lang,
    peer_name: &str,
) -> HandlerResult {
    let id = user_id(from)?;
    if !wgsub_crds::devices::is_users_peer_name(id, peer_name) {
        bot.send_message(chat, text::unknown_device(lang)).await?;
        return Ok(());
    }
    let user = app.ledger.user(id).await?;
    let active =
        user.is_some_and(|user| ledger_phase(&user, Timestamp::now()) == SubscriptionPhase::Active);
    if !active {
        bot.send_message(chat, text::subscription_inactive(lang))
            .await?;
        return Ok(());
    }
    match devices::user_peer(&app.caches, id, peer_name)? {
        Some(peer) => send_device(bot, app, chat, lang, &peer).await,
        None => {
            bot.send_message(chat, text::unknown_device(lang)).await?;
            Ok(())
        }
    }
}

async fn callback(bot: Bot, query: CallbackQuery, app: Arc<App>) -> HandlerResult {
    let lang = lang_of(Some(&query.from));
    let chat = ChatId::from(query.from.id);
    // Only stops the button's spinner: a query too old to answer (after a restart, say) must
    // not stop the button from working.
    if let Err(error) = bot.answer_callback_query(query.id.clone()).await {
        tracing::debug!(%error, "the callback query was not answered");
    }
    let data = query.data.as_deref().unwrap_or_default();
    let result = if let Some(plan) = data.strip_prefix(renewal::BUY_RENEWING_PREFIX) {
        app.metrics.update("buy_plan_renewing");
        buy_plan(&bot, &app, &query.from, chat, lang, plan, true).await
    } else if data == renewal::RENEWAL_OFF {
        app.metrics.update("renewal_off_button");
        renewal::switch_off(&bot, &app, &query.from, chat, lang).await
    } else if let Some(plan) = data.strip_prefix(BUY_PREFIX) {
        app.metrics.update("buy_plan");
        buy_plan(&bot, &app, &query.from, chat, lang, plan, false).await
    } else if let Some(plan) = data.strip_prefix(STARS_PREFIX) {
        app.metrics.update("stars_invoice");
        stars::send_invoice(&bot, &app, &query.from, chat, lang, plan).await
    } else if let Some(action) = data.strip_prefix(device_menu::DEVICE_PREFIX) {
        app.metrics.update("device_button");
        device_menu::on_button(&bot, &app, &query.from, chat, lang, action).await
    } else if let Some(server) = data.strip_prefix(locations::LOCATION_PREFIX) {
        app.metrics.update("location_pick");
        locations::on_pick(&bot, &app, &query.from, chat, lang, server).await
    } else if let Some(platform) = data.strip_prefix(crate::guide::GUIDE_PREFIX) {
        app.metrics.update("guide");
        crate::guide::on_button(&bot, &app, &query.from, chat, lang, platform).await
    } else if let Some(peer) = data.strip_prefix(CONFIG_PREFIX) {
        app.metrics.update("config_device");
        config_device(&bot, &app, &query.from, chat, lang, peer).await
    } else {
        app.metrics.update("unknown_callback");
        bot.send_message(chat, text::unknown(lang))
            .await
            .map(|_| ())
            .map_err(Into::into)
    };
    finish(&bot, &app, chat, lang, "callback", result).await
}

// ---- administrators ----

/// The ledger user an admin command names, if they exist.
async fn resolve(app: &App, user: &UserRef) -> Result<Option<wgsub_ledger::User>, HandlerError> {
    Ok(match user {
        UserRef::Id(id) => app.ledger.user(*id).await?,
        UserRef::Username(name) => app.ledger.user_by_username(name).await?,
    })
}

async fn admin(bot: Bot, message: Message, app: Arc<App>, arguments: String) -> HandlerResult {
    app.metrics.update("admin");
    let lang = lang_of(message.from.as_ref());
    let result = async {
        let Some(from) = message.from.as_ref() else {
            return Ok(());
        };
        if !in_private_chat(&bot, &message, lang).await? {
            return Ok(());
        }
        let admin_id = user_id(from)?;
        let chat = message.chat.id;
        let command = match admin::parse(&arguments) {
            Ok(command) => command,
            Err(error) => {
                bot.send_message(chat, text::admin_usage_error(lang, &error))
                    .await?;
                return Ok(());
            }
        };
        let (name, outcome) = run_admin(&bot, &app, admin_id, chat, lang, command).await?;
        let entry = AdminLogEntry {
            admin_id,
            command: name.into(),
            arguments: arguments.trim().into(),
            outcome,
        };
        store::log_admin(&app.ledger, &entry, Timestamp::now()).await?;
        Ok(())
    }
    .await;
    finish(&bot, &app, message.chat.id, lang, "admin", result).await
}

/// Carries out an admin command; returns its name and outcome for the admin log.
async fn run_admin(
    bot: &Bot,
    app: &App,
    admin_id: i64,
    chat: ChatId,
    lang: Lang,
    command: AdminCommand,
) -> Result<(&'static str, String), HandlerError> {
    let now = Timestamp::now();
    match command {
        AdminCommand::Help => {
            bot.send_message(chat, text::admin_help(lang)).await?;
            Ok(("help", "shown".into()))
        }
        AdminCommand::Stats => {
            let stats = app.ledger.stats(now).await?;
            let money = |revenue: &[wgsub_ledger::Revenue]| {
                revenue
                    .iter()
                    .map(|r| (r.currency.clone(), r.amount_minor))
                    .collect()
            };
            let view = text::StatsView {
                users: stats.users,
                active: stats.active,
                expired: stats.expired,
                never_paid: stats.never_paid,
                suspended: stats.suspended,
                revenue_today: money(&stats.revenue_today),
                revenue_30_days: money(&stats.revenue_30_days),
            };
            bot.send_message(chat, text::admin_stats(lang, &view))
                .await?;
            Ok(("stats", "shown".into()))
        }
        AdminCommand::Grant { user, days, reason } => {
            let Some(target) = resolve(app, &user).await? else {
                bot.send_message(chat, text::admin_user_not_found(lang, &user))
                    .await?;
                return Ok(("grant", "unknown user".into()));
            };
            let grant = AdminGrant {
                user_id: target.telegram_id,
                days,
                admin_id,
                reason: reason.unwrap_or_else(|| "granted with /admin grant".into()),
            };
            let entitlement = match app.sync.admin_grant(&app.ledger, &grant, now).await {
                Ok(entitlement) => entitlement,
                Err(error @ (SyncError::Kube(_) | SyncError::Unrepaired(_))) => {
                    tracing::warn!(%error, "grant recorded; VpnSubscription write failed, the drift loop retries");
                    app.ledger
                        .user(target.telegram_id)
                        .await?
                        .map(|user| user.entitlement)
                        .ok_or("granted user vanished")?
                }
                Err(SyncError::Ledger(error)) => return Err(error.into()),
            };
            bot.send_message(
                chat,
                text::admin_granted(lang, target.telegram_id, days, entitlement.paid_until),
            )
            .await?;
            Ok((
                "grant",
                format!("granted {days} days to {}", target.telegram_id),
            ))
        }
        AdminCommand::Promo(command) => {
            growth::run_admin_promo(bot, app, admin_id, chat, lang, command, now).await
        }
        AdminCommand::Suspend { user, reason } => {
            set_suspended(bot, app, admin_id, chat, lang, &user, reason, true, now).await
        }
        AdminCommand::Unsuspend { user, reason } => {
            set_suspended(bot, app, admin_id, chat, lang, &user, reason, false, now).await
        }
        AdminCommand::Find { user } => {
            let Some(target) = resolve(app, &user).await? else {
                bot.send_message(chat, text::admin_user_not_found(lang, &user))
                    .await?;
                return Ok(("find", "unknown user".into()));
            };
            let view = text::UserView {
                telegram_id: target.telegram_id,
                username: target.username.clone(),
                name: [Some(target.first_name.clone()), target.last_name.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
                language_code: target.language_code.clone(),
                created_at: target.created_at,
                last_seen_at: target.last_seen_at,
                paid_until: target.entitlement.paid_until,
                plan: target.entitlement.plan.clone(),
                max_devices: target.entitlement.max_devices,
                suspended: target.suspended,
            };
            bot.send_message(chat, text::admin_found(lang, &view))
                .await?;
            Ok(("find", format!("found {}", target.telegram_id)))
        }
        AdminCommand::Refund { charge_id, reason } => {
            let outcome =
                stars::admin_refund(bot, app, admin_id, chat, lang, &charge_id, reason).await?;
            Ok(("refund", outcome))
        }
        AdminCommand::Broadcast {
            audience,
            text: body,
        } => {
            let recipients = store::recipients(&app.ledger, audience, now).await?;
            if recipients.is_empty() {
                bot.send_message(chat, text::broadcast_no_recipients(lang))
                    .await?;
                return Ok(("broadcast", "no recipients".into()));
            }
            let total = u32::try_from(recipients.len()).unwrap_or(u32::MAX);
            let id =
                store::start_broadcast(&app.ledger, admin_id, audience, &body, total, now).await?;
            let progress_message = bot
                .send_message(chat, text::broadcast_started(lang, audience, total))
                .await?;
            let tally = run_broadcast(
                bot,
                app,
                chat,
                progress_message.id,
                lang,
                &recipients,
                &body,
            )
            .await;
            store::finish_broadcast(&app.ledger, id, tally, Timestamp::now()).await?;
            bot.send_message(chat, text::broadcast_done(lang, tally))
                .await?;
            Ok((
                "broadcast",
                format!(
                    "{}: {} delivered, {} failed",
                    audience.as_str(),
                    tally.delivered,
                    tally.failed
                ),
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn set_suspended(
    bot: &Bot,
    app: &App,
    admin_id: i64,
    chat: ChatId,
    lang: Lang,
    user: &UserRef,
    reason: Option<String>,
    suspended: bool,
    now: Timestamp,
) -> Result<(&'static str, String), HandlerError> {
    let name = if suspended { "suspend" } else { "unsuspend" };
    let Some(target) = resolve(app, user).await? else {
        bot.send_message(chat, text::admin_user_not_found(lang, user))
            .await?;
        return Ok((name, "unknown user".into()));
    };
    let reason = reason.unwrap_or_else(|| format!("/admin {name}"));
    let changed = app
        .ledger
        .set_suspended(target.telegram_id, suspended, admin_id, &reason, now)
        .await?;
    if changed {
        sync_quietly(app, target.telegram_id).await;
    }
    bot.send_message(
        chat,
        text::admin_suspended(lang, target.telegram_id, suspended, changed),
    )
    .await?;
    let outcome = if changed { "changed" } else { "unchanged" };
    Ok((name, format!("{outcome}: {}", target.telegram_id)))
}

/// Sends the broadcast paced, editing the progress message as it goes.
async fn run_broadcast(
    bot: &Bot,
    app: &App,
    chat: ChatId,
    progress_message: MessageId,
    lang: Lang,
    recipients: &[i64],
    body: &str,
) -> broadcast::Tally {
    let tally = broadcast::run(
        app.settings.pacing,
        recipients,
        app.settings.progress_every,
        |recipient| telegram::send_text(bot, recipient, body.to_owned()),
        tokio::time::sleep,
        |tally| async move {
            if let Err(error) = bot
                .edit_message_text(
                    chat,
                    progress_message,
                    text::broadcast_progress(lang, tally),
                )
                .await
            {
                tracing::debug!(%error, "broadcast progress not shown");
            }
        },
    )
    .await;
    app.metrics
        .notifications("broadcast", true, tally.delivered.into());
    app.metrics
        .notifications("broadcast", false, tally.failed.into());
    tally
}
