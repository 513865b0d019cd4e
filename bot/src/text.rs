//! Every user-facing string of the bot, in Russian and English, chosen by the user's Telegram
//! `language_code` (English for `en*`, Russian otherwise — the same rule as the plan titles).

use jiff::Timestamp;
use wgsub_crds::SubscriptionPhase;
use wgsub_crds::plans::Plan;
use wgsub_crds::resources::Protocol;
use wgsub_devices::apps::{Platform, StoreLink};
use wgsub_devices::usage::{DeviceTraffic, Usage};

use wgsub_ledger::{PromoBenefit, PromoCode, RedeemRefusal, ReferralSummary};

use crate::admin::{AdminParseError, Audience, PromoArgError, Subcommand, UserRef};
use crate::broadcast::Tally;
use crate::reminders::ReminderKind;

/// The language a reply is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Ru,
    En,
}

impl Lang {
    /// English for `en`, `en-US`, …; Russian for everything else and when unknown.
    pub fn from_code(code: Option<&str>) -> Self {
        match code {
            Some(code) if code.to_ascii_lowercase().starts_with("en") => Lang::En,
            _ => Lang::Ru,
        }
    }

    /// The Telegram `language_code` the bot's command list is registered under.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    fn pick<'a>(self, ru: &'a str, en: &'a str) -> &'a str {
        self.choose(ru, en)
    }

    /// The one of two translations in this language.
    fn choose<T>(self, ru: T, en: T) -> T {
        match self {
            Lang::Ru => ru,
            Lang::En => en,
        }
    }
}

/// An instant as users see it: `2026-03-10 12:00 UTC`.
pub fn date(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// An instant that may be unknown: its [`date`], or `—`.
fn date_or_dash(at: Option<Timestamp>) -> String {
    at.map(date).unwrap_or_else(|| "—".into())
}

/// A sentence ending a message with an instant, ` <lead> <date>.`; empty when there is none.
fn dated_sentence(lang: Lang, ru: &str, en: &str, at: Option<Timestamp>) -> String {
    at.map(|at| format!(" {} {}.", lang.pick(ru, en), date(at)))
        .unwrap_or_default()
}

/// A device's last handshake as `/status` and `/devices` show it.
fn last_handshake(lang: Lang, at: Option<Timestamp>) -> String {
    match at {
        Some(at) => format!(
            "{} {}",
            lang.pick("последнее соединение", "last handshake"),
            date(at)
        ),
        None => lang
            .pick("ещё не подключалось", "never connected")
            .to_owned(),
    }
}

/// `label: value` lines, as the admin answers list numbers.
fn labelled_lines(lines: &[(&str, String)]) -> String {
    lines
        .iter()
        .map(|(label, value)| format!("{label}: {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The commands registered with Telegram (`setMyCommands`), with their descriptions.
pub fn command_descriptions(lang: Lang) -> Vec<(&'static str, &'static str)> {
    vec![
        ("start", lang.pick("Начать", "Start")),
        ("app", lang.pick("Открыть приложение", "Open the app")),
        (
            "status",
            lang.pick(
                "Статус подписки и устройств",
                "Subscription and device status",
            ),
        ),
        ("buy", lang.pick("Купить или продлить", "Buy or renew")),
        (
            "renewal",
            lang.pick(
                "Автопродление: карта, выключить",
                "Automatic renewal: card, switch off",
            ),
        ),
        (
            "config",
            lang.pick(
                "Получить конфигурацию и QR-код",
                "Get the config and QR code",
            ),
        ),
        (
            "devices",
            lang.pick(
                "Устройства: переименовать, новый ключ, удалить, добавить",
                "Devices: rename, new key, delete, add",
            ),
        ),
        (
            "location",
            lang.pick("Выбрать страну сервера", "Choose the server's country"),
        ),
        ("promo", lang.pick("Ввести промокод", "Enter a promo code")),
        ("invite", lang.pick("Пригласить друзей", "Invite friends")),
        ("help", lang.pick("Помощь", "Help")),
    ]
}

pub fn open_app_button(lang: Lang) -> &'static str {
    lang.pick("Открыть приложение", "Open the app")
}

/// The three-line instructions shown with the greeting.
fn instructions(lang: Lang) -> &'static str {
    lang.pick(
        "1. Выберите тариф: /buy или кнопка ниже.\n\
         2. Установите приложение WireGuard на устройство.\n\
         3. Получите конфигурацию (/config) и импортируйте файл или отсканируйте QR-код.",
        "1. Choose a plan: /buy or the button below.\n\
         2. Install the WireGuard app on your device.\n\
         3. Get your config (/config) and import the file or scan the QR code.",
    )
}

/// The `/start` greeting; `trial` is the trial just granted (days, paid until).
pub fn welcome(lang: Lang, first_name: &str, trial: Option<(u32, Timestamp)>) -> String {
    let hello = match lang {
        Lang::Ru => format!("Здравствуйте, {first_name}! Это VPN на WireGuard."),
        Lang::En => format!("Hello, {first_name}! This is a WireGuard VPN."),
    };
    let trial = match (lang, trial) {
        (_, None) => String::new(),
        (Lang::Ru, Some((days, until))) => format!(
            "\n\nВам подключён пробный период: {days} дн., до {}.",
            date(until)
        ),
        (Lang::En, Some((days, until))) => {
            format!(
                "\n\nYour free trial is on: {days} days, until {}.",
                date(until)
            )
        }
    };
    format!("{hello}{trial}\n\n{}", instructions(lang))
}

pub fn app(lang: Lang) -> &'static str {
    lang.pick(
        "Статус, оплата и ключи — в приложении:",
        "Status, payments and keys are in the app:",
    )
}

pub fn help(lang: Lang) -> String {
    let commands: Vec<String> = command_descriptions(lang)
        .into_iter()
        .map(|(command, description)| format!("/{command} — {description}"))
        .collect();
    format!("{}\n\n{}", commands.join("\n"), instructions(lang))
}

/// The answer to anything the bot does not understand: a short help.
pub fn unknown(lang: Lang) -> String {
    let lead = lang.pick("Я не понял эту команду.", "I did not understand that.");
    format!(
        "{lead} /buy — {}, /config — {}, /status — {}, /help — {}.",
        lang.pick("купить", "buy"),
        lang.pick("конфигурация", "config"),
        lang.pick("статус", "status"),
        lang.pick("помощь", "help"),
    )
}

pub fn internal_error(lang: Lang) -> &'static str {
    lang.pick(
        "Что-то пошло не так. Попробуйте ещё раз через минуту.",
        "Something went wrong. Please try again in a minute.",
    )
}

/// The answer to `/config` or `/admin` outside a private chat: nothing secret, only where to ask.
pub fn private_chat_only(lang: Lang) -> &'static str {
    lang.pick(
        "Эта команда работает только в личном чате с ботом — напишите мне в личные сообщения.",
        "This command works only in a private chat with the bot — message me directly.",
    )
}

/// The answer to a sender whose Telegram id the bot cannot store.
pub fn unsupported_account(lang: Lang) -> &'static str {
    lang.pick(
        "К сожалению, бот пока не может обслуживать эту учётную запись Telegram.",
        "Sorry, the bot cannot serve this Telegram account yet.",
    )
}

/// The answer when the user has started too many payments lately.
pub fn too_many_payments(lang: Lang, retry_after: std::time::Duration) -> String {
    let minutes = retry_after.as_secs().div_ceil(60).max(1);
    match lang {
        Lang::Ru => format!(
            "Слишком много начатых платежей. Оплатите уже созданный или попробуйте снова через {minutes} мин."
        ),
        Lang::En => format!(
            "Too many payments started. Pay one you already have or try again in {minutes} min."
        ),
    }
}

pub fn phase(lang: Lang, phase: SubscriptionPhase) -> &'static str {
    match phase {
        SubscriptionPhase::Pending => lang.pick("не оплачена", "not paid"),
        SubscriptionPhase::Active => lang.pick("активна", "active"),
        SubscriptionPhase::Expired => lang.pick("истекла", "expired"),
        SubscriptionPhase::Suspended => lang.pick("приостановлена", "suspended"),
    }
}

/// One device line of `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLine {
    pub name: String,
    pub enabled: bool,
    pub last_handshake: Option<Timestamp>,
}

/// The `/status` answer.
pub fn status(
    lang: Lang,
    current: SubscriptionPhase,
    paid_until: Option<Timestamp>,
    max_devices: i32,
    devices: &[DeviceLine],
) -> String {
    let mut out = format!(
        "{}: {}\n",
        lang.pick("Подписка", "Subscription"),
        phase(lang, current)
    );
    if let Some(until) = paid_until {
        out.push_str(&format!(
            "{}: {}\n",
            lang.pick("Оплачено до", "Paid until"),
            date(until)
        ));
    }
    out.push_str(&format!(
        "{}: {} / {max_devices}\n",
        lang.pick("Устройства", "Devices"),
        devices.len()
    ));
    for device in devices {
        let handshake = last_handshake(lang, device.last_handshake);
        let off = if device.enabled {
            ""
        } else {
            lang.pick(" (выключено)", " (off)")
        };
        out.push_str(&format!("• {}{off}: {handshake}\n", device.name));
    }
    if current != SubscriptionPhase::Active {
        out.push_str(lang.pick("\nПродлить: /buy", "\nRenew: /buy"));
    }
    out.trim_end().to_owned()
}

pub fn not_registered(lang: Lang) -> &'static str {
    lang.pick(
        "Вы ещё не зарегистрированы. Нажмите /start.",
        "You are not registered yet. Press /start.",
    )
}

pub fn choose_plan(lang: Lang) -> &'static str {
    lang.pick("Выберите тариф:", "Choose a plan:")
}

/// The label of a plan's button: title, price, devices and the traffic per period.
pub fn plan_button(lang: Lang, plan: &Plan) -> String {
    let title = plan.title.for_language(Some(lang.code()));
    let traffic = plan_traffic(lang, plan)
        .map(|traffic| format!(", {traffic}"))
        .unwrap_or_default();
    match lang {
        Lang::Ru => format!(
            "{title} — {} {} ({} устр.{traffic})",
            plan.price_decimal(),
            plan.currency,
            plan.devices
        ),
        Lang::En => format!(
            "{title} — {} {} ({} device{}{traffic})",
            plan.price_decimal(),
            plan.currency,
            plan.devices,
            if plan.devices == 1 { "" } else { "s" }
        ),
    }
}

pub fn ask_receipt_contact(lang: Lang) -> &'static str {
    lang.pick(
        "Для чека (54-ФЗ) нужен e-mail. Отправьте его одним сообщением, например name@example.com.",
        "A receipt (54-FZ) needs an e-mail. Send it as one message, e.g. name@example.com.",
    )
}

pub fn receipt_contact_invalid(lang: Lang, problem: &str) -> String {
    match lang {
        Lang::Ru => format!("Не похоже на e-mail: {problem}. Отправьте e-mail ещё раз."),
        Lang::En => format!("That does not look like an e-mail: {problem}. Please send it again."),
    }
}

pub fn receipt_contact_saved(lang: Lang) -> &'static str {
    lang.pick(
        "Сохранил, чек придёт на этот адрес.",
        "Saved: the receipt will go there.",
    )
}

pub fn unknown_plan(lang: Lang) -> &'static str {
    lang.pick(
        "Такого тарифа больше нет. Выберите заново: /buy",
        "That plan no longer exists. Choose again: /buy",
    )
}

pub fn payment_link(lang: Lang, plan: &Plan) -> String {
    let title = plan.title.for_language(Some(lang.code()));
    match lang {
        Lang::Ru => format!(
            "Тариф «{title}», {} {}. Оплатите по кнопке ниже — подписка включится сразу после оплаты.",
            plan.price_decimal(),
            plan.currency
        ),
        Lang::En => format!(
            "Plan “{title}”, {} {}. Pay with the button below — the subscription starts the moment the payment succeeds.",
            plan.price_decimal(),
            plan.currency
        ),
    }
}

pub fn pay_button(lang: Lang) -> &'static str {
    lang.pick("Оплатить", "Pay")
}

pub fn payment_unavailable(lang: Lang) -> &'static str {
    lang.pick(
        "Не удалось создать платёж. Попробуйте ещё раз через минуту.",
        "The payment could not be created. Please try again in a minute.",
    )
}

pub fn subscription_inactive(lang: Lang) -> &'static str {
    lang.pick(
        "Подписка не активна, конфигурация недоступна. Оплатить: /buy",
        "Your subscription is not active, so there is no config. Pay: /buy",
    )
}

pub fn no_devices_yet(lang: Lang) -> &'static str {
    lang.pick(
        "Устройство ещё готовится — повторите /config через несколько секунд.",
        "Your device is still being set up — try /config again in a few seconds.",
    )
}

pub fn config_not_ready(lang: Lang) -> &'static str {
    lang.pick(
        "Конфигурация ещё не готова (сервер назначает адрес и ключ). Повторите /config чуть позже.",
        "The config is not ready yet (the server is assigning an address and key). Try /config a little later.",
    )
}

pub fn choose_device(lang: Lang) -> &'static str {
    lang.pick("Выберите устройство:", "Choose a device:")
}

pub fn unknown_device(lang: Lang) -> &'static str {
    lang.pick(
        "Такого устройства нет. Выберите заново: /config",
        "No such device. Choose again: /config",
    )
}

pub fn config_caption(lang: Lang, device: &str, protocol: Protocol) -> String {
    match (protocol, lang) {
        (Protocol::Wireguard, Lang::Ru) => {
            format!("Конфигурация «{device}»: импортируйте файл в WireGuard.")
        }
        (Protocol::Wireguard, Lang::En) => {
            format!("Config “{device}”: import the file into WireGuard.")
        }
        (Protocol::Amneziawg, Lang::Ru) => format!(
            "Конфигурация «{device}» для AmneziaWG: импортируйте файл в приложение {}. {}\n\n{}",
            amneziawg_app_names(lang),
            not_for_the_wireguard_app(lang),
            amneziawg_apps(lang)
        ),
        (Protocol::Amneziawg, Lang::En) => format!(
            "Config “{device}” for AmneziaWG: import the file into the {} app. {}\n\n{}",
            amneziawg_app_names(lang),
            not_for_the_wireguard_app(lang),
            amneziawg_apps(lang)
        ),
    }
}

/// The apps that import an AmneziaWG config, named alike in the config's caption and the
/// connection guide.
fn amneziawg_app_names(lang: Lang) -> &'static str {
    lang.pick("AmneziaVPN или AmneziaWG", "AmneziaVPN or AmneziaWG")
}

/// Said with every AmneziaWG config and in its guide: the app most users know will not do.
fn not_for_the_wireguard_app(lang: Lang) -> &'static str {
    lang.pick(
        "Приложение WireGuard с этой конфигурацией не подключится.",
        "The WireGuard app cannot connect with this config.",
    )
}

/// Where to get the apps that import an AmneziaWG config: the official store pages and
/// AmneziaVPN's GitHub releases for computers.
pub fn amneziawg_apps(lang: Lang) -> &'static str {
    lang.pick(
        "Приложения:\n\
         iPhone, iPad, Mac — App Store: AmneziaVPN https://apps.apple.com/app/amneziavpn/id1600529900 \
         или AmneziaWG https://apps.apple.com/app/amneziawg/id6478942365\n\
         Android — Google Play: AmneziaVPN https://play.google.com/store/apps/details?id=org.amnezia.vpn \
         или AmneziaWG https://play.google.com/store/apps/details?id=org.amnezia.awg\n\
         Windows, macOS, Linux — AmneziaVPN: https://github.com/amnezia-vpn/amnezia-client/releases",
        "Apps:\n\
         iPhone, iPad, Mac — App Store: AmneziaVPN https://apps.apple.com/app/amneziavpn/id1600529900 \
         or AmneziaWG https://apps.apple.com/app/amneziawg/id6478942365\n\
         Android — Google Play: AmneziaVPN https://play.google.com/store/apps/details?id=org.amnezia.vpn \
         or AmneziaWG https://play.google.com/store/apps/details?id=org.amnezia.awg\n\
         Windows, macOS, Linux — AmneziaVPN: https://github.com/amnezia-vpn/amnezia-client/releases",
    )
}

pub fn qr_caption(lang: Lang, protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Wireguard => lang.pick(
            "Или отсканируйте QR-код в приложении WireGuard.",
            "Or scan the QR code in the WireGuard app.",
        ),
        Protocol::Amneziawg => lang.pick(
            "Или отсканируйте QR-код в приложении AmneziaVPN или AmneziaWG.",
            "Or scan the QR code in the AmneziaVPN or AmneziaWG app.",
        ),
    }
}

pub fn payment_succeeded(lang: Lang, paid_until: Option<Timestamp>) -> String {
    match (lang, paid_until) {
        (Lang::Ru, Some(until)) => format!(
            "Оплата прошла. Подписка активна до {}. Конфигурация: /config",
            date(until)
        ),
        (Lang::En, Some(until)) => format!(
            "Payment received. Your subscription is active until {}. Config: /config",
            date(until)
        ),
        (_, None) => lang
            .pick("Оплата прошла. Спасибо!", "Payment received. Thank you!")
            .to_owned(),
    }
}

pub fn refund_recorded(lang: Lang, paid_until: Option<Timestamp>) -> String {
    let until = now_ends(lang, paid_until);
    format!(
        "{}{until}",
        lang.pick("Возврат оформлен.", "Your refund went through.")
    )
}

pub fn reminder(lang: Lang, kind: ReminderKind, paid_until: Timestamp) -> String {
    let at = date(paid_until);
    let (ru, en) = match kind {
        ReminderKind::ThreeDays => (
            format!("Подписка закончится через 3 дня ({at}). Продлить: /buy"),
            format!("Your subscription ends in 3 days ({at}). Renew: /buy"),
        ),
        ReminderKind::OneDay => (
            format!("Подписка закончится завтра ({at}). Продлить: /buy"),
            format!("Your subscription ends tomorrow ({at}). Renew: /buy"),
        ),
        ReminderKind::Expired => (
            format!("Подписка закончилась ({at}), VPN отключён. Продлить: /buy"),
            format!("Your subscription ended ({at}) and the VPN is off. Renew: /buy"),
        ),
    };
    lang.choose(ru, en)
}

/// Told once to every user with a device on a server whose AmneziaWG parameters changed:
/// the configs they imported stop working.
pub fn server_params_changed(lang: Lang) -> &'static str {
    lang.pick(
        "Настройки подключения сервера изменились — прежний конфиг больше не работает. \
         Получите новый: /config (или кнопкой ниже) и заново импортируйте его в AmneziaVPN \
         или AmneziaWG, удалив старый туннель.",
        "The server's connection settings changed — your old config no longer works. \
         Get the new one with /config (or the button below) and import it again into \
         AmneziaVPN or AmneziaWG, removing the old tunnel.",
    )
}

/// The button under [`server_params_changed`] that sends one device's new config.
pub fn new_config_button(lang: Lang, device: &str) -> String {
    format!("{} {device}", lang.pick("Новый конфиг:", "New config:"))
}

// ---- /devices: the user's own devices ----

/// One device in the `/devices` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    pub name: String,
    pub enabled: bool,
    /// Key and address assigned: the config can be downloaded.
    pub ready: bool,
    /// A handshake within the last 3 minutes.
    pub connected: bool,
    pub last_handshake: Option<Timestamp>,
    /// Bytes received from the device (its upload) and sent to it (its download).
    pub rx_bytes: i64,
    pub tx_bytes: i64,
}

/// A byte count as users read it: `0 B`, `1.5 KB`, `12.3 MB`, `2 GB` (powers of 1024, one
/// decimal unless it is zero — so a quota of `50 GB` reads as the plan's button says it).
pub fn bytes(lang: Lang, count: i64) -> String {
    let units = match lang {
        Lang::Ru => ["Б", "КБ", "МБ", "ГБ", "ТБ"],
        Lang::En => ["B", "KB", "MB", "GB", "TB"],
    };
    let count = count.max(0);
    if count < 1024 {
        return format!("{count} {}", units[0]);
    }
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let shown = format!("{value:.1}");
    let shown = shown.strip_suffix(".0").unwrap_or(&shown);
    format!("{shown} {}", units[unit])
}

/// The `/devices` answer: each device with whether it is connected, its last handshake and its
/// traffic, then what the buttons do.
pub fn devices_list(lang: Lang, devices: &[DeviceEntry], max_devices: i32) -> String {
    devices_list_with_traffic(lang, devices, &[], max_devices)
}

/// [`devices_list`] with each device's traffic this period and in total (`traffic[i]` for
/// `devices[i]`; `None` or missing: not counted yet).
pub fn devices_list_with_traffic(
    lang: Lang,
    devices: &[DeviceEntry],
    traffic: &[Option<DeviceTraffic>],
    max_devices: i32,
) -> String {
    let mut out = format!(
        "{}: {} / {max_devices}\n",
        lang.pick("Ваши устройства", "Your devices"),
        devices.len()
    );
    if devices.is_empty() {
        out.push_str(lang.pick(
            "\nУстройств нет. Добавьте устройство кнопкой ниже.",
            "\nNo devices. Add one with the button below.",
        ));
        return out;
    }
    for (index, device) in devices.iter().enumerate() {
        let state = match (device.ready, device.connected, device.enabled) {
            (false, _, _) => lang.pick("⏳ готовится", "⏳ being set up"),
            (true, _, false) => lang.pick("⏸ выключено", "⏸ off"),
            (true, true, true) => lang.pick("🟢 подключено", "🟢 connected"),
            (true, false, true) => lang.pick("⚪ не подключено", "⚪ not connected"),
        };
        let handshake = last_handshake(lang, device.last_handshake);
        out.push_str(&format!(
            "\n• {} — {state}\n  {handshake}; ↑ {} ↓ {}\n",
            device.name,
            bytes(lang, device.rx_bytes),
            bytes(lang, device.tx_bytes),
        ));
        if let Some(Some(traffic)) = traffic.get(index) {
            out.push_str(&device_traffic_line(lang, traffic));
        }
    }
    out.push_str(lang.pick(
        "\nКнопки: 📄 конфиг, ✏️ переименовать, 🔄 новый ключ (старый конфиг перестанет работать), 🗑 удалить.",
        "\nButtons: 📄 config, ✏️ rename, 🔄 new key (the old config stops working), 🗑 delete.",
    ));
    out
}

/// The buttons of one device in the `/devices` list.
pub fn device_buttons(lang: Lang) -> [&'static str; 3] {
    match lang {
        Lang::Ru => ["✏️ Имя", "🔄 Ключ", "🗑 Удалить"],
        Lang::En => ["✏️ Rename", "🔄 New key", "🗑 Delete"],
    }
}

/// The button that adds a device, with how many there are of how many allowed.
pub fn add_device_button(lang: Lang, count: usize, max_devices: i32) -> String {
    format!(
        "➕ {} ({count}/{max_devices})",
        lang.pick("Добавить устройство", "Add a device")
    )
}

/// The prompt for a device's new name. Its last line names the device (`[tg-<id>-<n>]`): the
/// user's reply to this message is matched to the device by it.
pub fn rename_prompt(lang: Lang, device: &str, peer: &str) -> String {
    format!(
        "{} «{device}» ({}).\n[{peer}]",
        lang.pick(
            "Ответьте на это сообщение новым именем для",
            "Reply to this message with the new name for"
        ),
        lang.pick("1–64 символа", "1–64 characters"),
    )
}

pub fn renamed(lang: Lang, device: &str) -> String {
    format!(
        "{} «{device}».",
        lang.pick(
            "Готово, устройство теперь называется",
            "Done, the device is now called"
        )
    )
}

/// The answer to a new name that is empty, too long or holds control characters.
pub fn invalid_device_name(lang: Lang) -> &'static str {
    lang.pick(
        "Такое имя не подходит: нужно от 1 до 64 символов, без переносов строк. Имя не изменено — нажмите ✏️ в /devices ещё раз.",
        "That name does not fit: it needs 1 to 64 characters and no line breaks. The name is unchanged — press ✏️ in /devices again.",
    )
}

/// The confirmation asked before deleting a device.
pub fn confirm_delete(lang: Lang, device: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Удалить «{device}»? Его конфиг сразу перестанет работать, а ключ будет удалён."
        ),
        Lang::En => {
            format!("Delete «{device}»? Its config stops working at once and its key is deleted.")
        }
    }
}

/// The buttons of [`confirm_delete`]: delete, cancel.
pub fn confirm_delete_buttons(lang: Lang) -> [&'static str; 2] {
    match lang {
        Lang::Ru => ["🗑 Да, удалить", "Отмена"],
        Lang::En => ["🗑 Yes, delete", "Cancel"],
    }
}

pub fn deleted(lang: Lang, device: &str) -> String {
    match lang {
        Lang::Ru => format!("«{device}» удалено, его конфиг больше не работает."),
        Lang::En => format!("«{device}» is deleted; its config no longer works."),
    }
}

pub fn delete_cancelled(lang: Lang) -> &'static str {
    lang.pick("Ничего не удалено.", "Nothing was deleted.")
}

/// After a key rotation: the old config no longer works, the new one is a button away.
pub fn rotated(lang: Lang, device: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Для «{device}» создан новый ключ: старый конфиг больше не работает. Новый конфиг будет готов через несколько секунд — нажмите кнопку ниже и импортируйте его заново, удалив старый туннель."
        ),
        Lang::En => format!(
            "«{device}» has a new key: the old config no longer works. The new config is ready in a few seconds — press the button below and import it again, removing the old tunnel."
        ),
    }
}

/// After adding a device.
pub fn device_added(lang: Lang, device: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Устройство «{device}» добавлено. Конфиг будет готов через несколько секунд — нажмите кнопку ниже."
        ),
        Lang::En => format!(
            "Device «{device}» is added. Its config is ready in a few seconds — press the button below."
        ),
    }
}

/// After adding a device when the user had none: the operator makes it, /config sends it.
pub fn first_device_coming(lang: Lang) -> &'static str {
    lang.pick(
        "Устройство готовится — через несколько секунд получите конфиг: /config",
        "Your device is being set up — get its config in a few seconds: /config",
    )
}

/// The button under [`rotated`] and [`device_added`] that sends the device's config.
pub fn get_config_button(lang: Lang) -> &'static str {
    lang.pick("📄 Получить конфиг", "📄 Get the config")
}

/// The answer to adding a device beyond the plan's limit.
pub fn device_limit(lang: Lang, max_devices: i32) -> String {
    match lang {
        Lang::Ru => format!(
            "Ваш тариф позволяет устройств: {max_devices}. Удалите одно в /devices или выберите тариф больше: /buy"
        ),
        Lang::En => format!(
            "Your plan allows {max_devices} device(s). Delete one in /devices or pick a bigger plan: /buy"
        ),
    }
}

/// A device button for a device that is not (or no longer) the user's.
pub fn device_gone(lang: Lang) -> &'static str {
    lang.pick(
        "Такого устройства больше нет. Список устройств: /devices",
        "That device is gone. Your devices: /devices",
    )
}

/// A device change that collided with another at the same moment.
pub fn device_busy(lang: Lang) -> &'static str {
    lang.pick(
        "Устройства только что изменились. Откройте /devices и попробуйте ещё раз.",
        "Your devices just changed. Open /devices and try again.",
    )
}

// ---- administrators ----

pub fn admin_help(lang: Lang) -> String {
    let lines: Vec<&str> = Subcommand::ALL.iter().map(|sub| sub.usage()).collect();
    format!(
        "{}\n{}",
        lang.pick("Команды администратора:", "Admin commands:"),
        lines.join("\n")
    )
}

/// A usage line naming what was wrong with the arguments.
pub fn admin_usage_error(lang: Lang, error: &AdminParseError) -> String {
    let (ru, en) = usage_problem(error);
    let problem = lang.choose(ru, en);
    let usage = match error.subcommand() {
        Some(sub) => sub.usage().to_owned(),
        None => admin_help(lang),
    };
    format!(
        "{}: {problem}.\n{}: {usage}",
        lang.pick("Ошибка", "Error"),
        lang.pick("Использование", "Usage")
    )
}

/// What was wrong with `/admin` arguments, in Russian and in English.
fn usage_problem(error: &AdminParseError) -> (String, String) {
    let (max_days, max_chars) = (
        crate::admin::MAX_GRANT_DAYS,
        crate::admin::MAX_MESSAGE_CHARS,
    );
    match error {
        AdminParseError::UnknownSubcommand(word) => (
            format!("неизвестная подкоманда «{word}»"),
            format!("unknown subcommand “{word}”"),
        ),
        AdminParseError::MissingUser(_) => (
            "не указан пользователь".into(),
            "the user is missing".into(),
        ),
        AdminParseError::BadUser(_, word) => (
            format!("«{word}» — не id пользователя и не @username"),
            format!("“{word}” is neither a user id nor an @username"),
        ),
        AdminParseError::MissingDays => (
            "не указано число дней".into(),
            "the number of days is missing".into(),
        ),
        AdminParseError::BadDays(word) => (
            format!("дни: «{word}» — не целое число от 1 до {max_days}"),
            format!("days: “{word}” is not a whole number from 1 to {max_days}"),
        ),
        AdminParseError::MissingAudience => (
            "не указано, кому: all или active".into(),
            "the audience is missing: all or active".into(),
        ),
        AdminParseError::BadAudience(word) => (
            format!("кому: «{word}» — должно быть all или active"),
            format!("audience: “{word}” must be all or active"),
        ),
        AdminParseError::EmptyBroadcast => (
            "пустой текст рассылки".into(),
            "the broadcast text is empty".into(),
        ),
        AdminParseError::BroadcastTooLong(chars) => (
            format!("текст длиной {chars} символов, Telegram принимает до {max_chars}"),
            format!("the text is {chars} characters long, Telegram takes at most {max_chars}"),
        ),
        AdminParseError::UnexpectedArguments(_, extra) => unexpected(extra),
        AdminParseError::Promo(problem) => promo_problem(problem),
        AdminParseError::MissingChargeId => (
            "не указан id платежа".into(),
            "the payment charge id is missing".into(),
        ),
        AdminParseError::BadChargeId(word) => (
            format!("«{word}» — не id платежа Telegram"),
            format!("“{word}” is not a Telegram payment charge id"),
        ),
    }
}

/// Arguments after the last one a command takes.
fn unexpected(extra: &str) -> (String, String) {
    (
        format!("лишние аргументы «{extra}»"),
        format!("unexpected arguments “{extra}”"),
    )
}

/// Money amounts per currency, e.g. `1990.00 RUB`, Telegram Stars whole (`450 XTR`: they
/// have no minor unit); `0` when there are none.
pub fn amounts(amounts: &[(String, i64)]) -> String {
    if amounts.is_empty() {
        return "0".into();
    }
    amounts
        .iter()
        .map(|(currency, minor)| {
            if currency == wgsub_ledger::stars::STARS_CURRENCY {
                format!("{minor} {currency}")
            } else {
                format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The numbers `/admin stats` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsView {
    pub users: i64,
    pub active: i64,
    pub expired: i64,
    pub never_paid: i64,
    pub suspended: i64,
    pub revenue_today: Vec<(String, i64)>,
    pub revenue_30_days: Vec<(String, i64)>,
}

pub fn admin_stats(lang: Lang, stats: &StatsView) -> String {
    labelled_lines(&[
        (lang.pick("Пользователи", "Users"), stats.users.to_string()),
        (
            lang.pick("Активные подписки", "Active subscriptions"),
            stats.active.to_string(),
        ),
        (lang.pick("Истёкшие", "Expired"), stats.expired.to_string()),
        (
            lang.pick("Не оплачивали", "Never paid"),
            stats.never_paid.to_string(),
        ),
        (
            lang.pick("Приостановлены", "Suspended"),
            stats.suspended.to_string(),
        ),
        (
            lang.pick("Выручка сегодня", "Revenue today"),
            amounts(&stats.revenue_today),
        ),
        (
            lang.pick("Выручка за 30 дней", "Revenue, last 30 days"),
            amounts(&stats.revenue_30_days),
        ),
    ])
}

pub fn admin_user_not_found(lang: Lang, user: &UserRef) -> String {
    match lang {
        Lang::Ru => format!("Пользователь {user} не найден. Ничего не изменено."),
        Lang::En => format!("User {user} not found. Nothing was changed."),
    }
}

pub fn admin_granted(lang: Lang, user_id: i64, days: u32, paid_until: Option<Timestamp>) -> String {
    let until = date_or_dash(paid_until);
    match lang {
        Lang::Ru => format!("Пользователю {user_id} добавлено {days} дн. Оплачено до {until}."),
        Lang::En => format!("Granted {days} days to user {user_id}. Paid until {until}."),
    }
}

pub fn admin_suspended(lang: Lang, user_id: i64, suspended: bool, changed: bool) -> String {
    match (lang, suspended, changed) {
        (Lang::Ru, true, true) => format!("Подписка пользователя {user_id} приостановлена."),
        (Lang::En, true, true) => format!("User {user_id} is suspended."),
        (Lang::Ru, false, true) => format!("Подписка пользователя {user_id} возобновлена."),
        (Lang::En, false, true) => format!("User {user_id} is no longer suspended."),
        (Lang::Ru, true, false) => format!("Пользователь {user_id} уже приостановлен."),
        (Lang::En, true, false) => format!("User {user_id} was already suspended."),
        (Lang::Ru, false, false) => format!("Пользователь {user_id} и так не приостановлен."),
        (Lang::En, false, false) => format!("User {user_id} was not suspended."),
    }
}

/// What `/admin find` shows of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub telegram_id: i64,
    pub username: Option<String>,
    pub name: String,
    pub language_code: Option<String>,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    pub paid_until: Option<Timestamp>,
    pub plan: Option<String>,
    pub max_devices: i32,
    pub suspended: bool,
}

pub fn admin_found(lang: Lang, user: &UserView) -> String {
    let username = user
        .username
        .as_deref()
        .map(|u| format!("@{u}"))
        .unwrap_or_else(|| "—".into());
    let until = date_or_dash(user.paid_until);
    let plan = user.plan.as_deref().unwrap_or("—");
    let language = user.language_code.as_deref().unwrap_or("—");
    let (id, name, devices) = (user.telegram_id, &user.name, user.max_devices);
    let (joined, seen) = (date(user.created_at), date(user.last_seen_at));
    let suspended = if user.suspended {
        lang.pick("да", "yes")
    } else {
        lang.pick("нет", "no")
    };
    match lang {
        Lang::Ru => format!(
            "id {id} {username} ({name})\nЯзык: {language}\nС нами с {joined}, последний раз {seen}\nОплачено до: {until}\nТариф: {plan}, устройств: {devices}\nПриостановлен: {suspended}"
        ),
        Lang::En => format!(
            "id {id} {username} ({name})\nLanguage: {language}\nJoined {joined}, last seen {seen}\nPaid until: {until}\nPlan: {plan}, devices: {devices}\nSuspended: {suspended}"
        ),
    }
}

pub fn broadcast_started(lang: Lang, audience: Audience, total: u32) -> String {
    let who = match (lang, audience) {
        (Lang::Ru, Audience::All) => "всем пользователям",
        (Lang::En, Audience::All) => "all users",
        (Lang::Ru, Audience::Active) => "активным подписчикам",
        (Lang::En, Audience::Active) => "active subscribers",
    };
    match lang {
        Lang::Ru => format!("Рассылка {who}: {total} получателей."),
        Lang::En => format!("Broadcast to {who}: {total} recipients."),
    }
}

pub fn broadcast_progress(lang: Lang, tally: Tally) -> String {
    let (done, total, delivered, failed) =
        (tally.done(), tally.total, tally.delivered, tally.failed);
    match lang {
        Lang::Ru => {
            format!("Рассылка: {done} из {total} (доставлено {delivered}, не доставлено {failed})")
        }
        Lang::En => {
            format!("Broadcast: {done} of {total} (delivered {delivered}, failed {failed})")
        }
    }
}

pub fn broadcast_done(lang: Lang, tally: Tally) -> String {
    match lang {
        Lang::Ru => format!(
            "Рассылка завершена: доставлено {}, не доставлено {}.",
            tally.delivered, tally.failed
        ),
        Lang::En => format!(
            "Broadcast finished: {} delivered, {} failed.",
            tally.delivered, tally.failed
        ),
    }
}

pub fn broadcast_no_recipients(lang: Lang) -> &'static str {
    lang.pick(
        "Некому отправлять: получателей нет.",
        "Nobody to send to: no recipients.",
    )
}

// ---- Telegram Stars ----

/// The "pay in Stars" button of a plan sold for Stars.
pub fn stars_plan_button(lang: Lang, plan: &Plan) -> String {
    let title = plan.title.for_language(Some(lang.code()));
    let stars = plan.price_stars.unwrap_or_default();
    match lang {
        Lang::Ru => format!("{title} — {stars} ⭐ (Telegram Stars)"),
        Lang::En => format!("{title} — {stars} ⭐ (Telegram Stars)"),
    }
}

pub fn stars_not_offered(lang: Lang) -> &'static str {
    lang.pick(
        "Этот тариф нельзя оплатить звёздами. Выберите заново: /buy",
        "This plan cannot be paid in Stars. Choose again: /buy",
    )
}

/// Why a Stars payment is refused before it is made (the pre-checkout answer Telegram shows).
pub fn stars_refused(lang: Lang, refusal: &wgsub_ledger::stars::StarsRefusal) -> String {
    use wgsub_ledger::stars::StarsRefusal as R;
    match refusal {
        R::PriceChanged { now, .. } => match lang {
            Lang::Ru => {
                format!("Цена тарифа изменилась, теперь {now} ⭐. Запросите новый счёт: /buy")
            }
            Lang::En => {
                format!("The plan's price has changed to {now} ⭐. Get a new invoice: /buy")
            }
        },
        R::UnknownPlan(_) | R::NotForStars(_) => lang
            .pick(
                "Этот тариф больше не продаётся за звёзды. Выберите заново: /buy",
                "This plan is no longer sold for Stars. Choose again: /buy",
            )
            .to_owned(),
        R::UnknownBuyer => lang
            .pick(
                "Сначала нажмите /start, затем оплатите снова.",
                "Press /start first, then pay again.",
            )
            .to_owned(),
        R::Suspended => lang
            .pick(
                "Ваша подписка приостановлена, оплата недоступна. Напишите в поддержку.",
                "Your subscription is suspended, so you cannot pay now. Please contact support.",
            )
            .to_owned(),
        R::Payload(_) | R::OtherUser { .. } | R::Currency(_) | R::AmountMismatch { .. } => lang
            .pick(
                "Этот счёт недействителен. Запросите новый: /buy",
                "This invoice is not valid. Get a new one: /buy",
            )
            .to_owned(),
    }
}

/// A paid invoice that could not be credited (and was refunded, unless that failed too).
pub fn stars_payment_not_credited(lang: Lang, refunded: bool) -> &'static str {
    match refunded {
        true => lang.pick(
            "Этот счёт недействителен, оплата не зачтена — звёзды возвращены. Запросите новый счёт: /buy",
            "This invoice is not valid, so the payment was not credited and your Stars were returned. Get a new invoice: /buy",
        ),
        false => lang.pick(
            "Этот счёт недействителен, оплата не зачтена. Мы вернём звёзды — напишите в поддержку, если они не придут.",
            "This invoice is not valid, so the payment was not credited. We will return your Stars — contact support if they do not arrive.",
        ),
    }
}

pub fn admin_refunded(
    lang: Lang,
    user_id: i64,
    stars: i64,
    paid_until: Option<Timestamp>,
) -> String {
    let until = date_or_dash(paid_until);
    match lang {
        Lang::Ru => format!(
            "Пользователю {user_id} возвращено {stars} ⭐, время платежа снято. Оплачено до {until}."
        ),
        Lang::En => format!(
            "Refunded {stars} ⭐ to user {user_id} and took the payment's time back. Paid until {until}."
        ),
    }
}

pub fn admin_refund_unknown(lang: Lang, charge_id: &str) -> String {
    match lang {
        Lang::Ru => format!("Платежа звёздами {charge_id} нет в учёте."),
        Lang::En => format!("No Stars payment {charge_id} in the ledger."),
    }
}

pub fn admin_refund_already(lang: Lang, charge_id: &str) -> String {
    match lang {
        Lang::Ru => format!("Платёж {charge_id} уже возвращён."),
        Lang::En => format!("Payment {charge_id} was refunded already."),
    }
}

pub fn admin_refund_failed(lang: Lang, charge_id: &str) -> String {
    match lang {
        Lang::Ru => {
            format!("Telegram не вернул платёж {charge_id}; время не снято. Повторите позже.")
        }
        Lang::En => {
            format!("Telegram did not refund {charge_id}; no time was taken back. Try again later.")
        }
    }
}

// ---- promo codes and referrals ----

/// ` Your subscription now ends <date>.` after time was taken back.
fn now_ends(lang: Lang, paid_until: Option<Timestamp>) -> String {
    dated_sentence(
        lang,
        "Подписка теперь до",
        "Your subscription now ends",
        paid_until,
    )
}

/// The referrer's message when a user they brought paid for the first time.
pub fn referral_rewarded(lang: Lang, days: i32, paid_until: Option<Timestamp>) -> String {
    let until = dated_sentence(
        lang,
        "Подписка теперь до",
        "Your subscription now runs until",
        paid_until,
    );
    match lang {
        Lang::Ru => format!(
            "Приглашённый вами пользователь оплатил подписку — вам начислено {days} дн.{until}"
        ),
        Lang::En => format!("Someone you invited has paid — you earned {days} days.{until}"),
    }
}

/// The referrer's message when that first payment was refunded and the reward taken back.
pub fn referral_revoked(lang: Lang, days: i32, paid_until: Option<Timestamp>) -> String {
    let until = now_ends(lang, paid_until);
    match lang {
        Lang::Ru => format!(
            "Оплата приглашённого вами пользователя возвращена, поэтому {days} дн. бонуса списаны.{until}"
        ),
        Lang::En => format!(
            "The payment of someone you invited was refunded, so the {days} bonus days were taken back.{until}"
        ),
    }
}

/// `/promo` without a code.
pub fn promo_usage(lang: Lang) -> &'static str {
    lang.pick(
        "Отправьте промокод так: /promo КОД",
        "Send a promo code like this: /promo CODE",
    )
}

/// A typed code that is not a code at all.
pub fn promo_malformed(lang: Lang) -> &'static str {
    lang.pick(
        "Это не похоже на промокод: в нём 3–32 латинские буквы, цифры, «-» или «_». Проверьте и отправьте снова: /promo КОД",
        "That does not look like a promo code: it has 3–32 Latin letters, digits, '-' or '_'. Check it and send it again: /promo CODE",
    )
}

/// Why a code was not accepted.
pub fn promo_refused(lang: Lang, refusal: RedeemRefusal) -> &'static str {
    match refusal {
        RedeemRefusal::Unknown => lang.pick(
            "Такого промокода нет. Проверьте написание.",
            "There is no such promo code. Check the spelling.",
        ),
        RedeemRefusal::Disabled => lang.pick(
            "Этот промокод больше не действует.",
            "This promo code is no longer valid.",
        ),
        RedeemRefusal::Expired => lang.pick(
            "Срок действия этого промокода истёк.",
            "This promo code has expired.",
        ),
        RedeemRefusal::UsedUp => lang.pick(
            "Этот промокод уже использован максимальное число раз.",
            "This promo code has been used up.",
        ),
        RedeemRefusal::AlreadyRedeemed => lang.pick(
            "Вы уже использовали этот промокод.",
            "You have already used this promo code.",
        ),
        RedeemRefusal::DiscountWaiting => lang.pick(
            "У вас уже есть скидка на следующую оплату — сначала воспользуйтесь ею: /buy",
            "You already have a discount waiting for your next payment — use it first: /buy",
        ),
    }
}

/// Free days from a code were added.
pub fn promo_days(lang: Lang, days: u32, paid_until: Option<Timestamp>) -> String {
    let until = dated_sentence(
        lang,
        "Подписка активна до",
        "Your subscription is active until",
        paid_until,
    );
    match lang {
        Lang::Ru => format!("Промокод принят: +{days} дн.{until}"),
        Lang::En => format!("Promo code accepted: +{days} days.{until}"),
    }
}

/// A discount now waits for the next payment.
pub fn promo_discount(lang: Lang, percent_off: u8) -> String {
    match lang {
        Lang::Ru => {
            format!("Промокод принят: скидка {percent_off}% на следующую оплату. Оплатить: /buy")
        }
        Lang::En => format!("Promo code accepted: {percent_off}% off your next payment. Pay: /buy"),
    }
}

/// `/invite`: the user's personal link and what it brought.
pub fn invite(lang: Lang, link: &str, summary: ReferralSummary) -> String {
    match lang {
        Lang::Ru => format!(
            "Ваша личная ссылка для друзей:\n{link}\n\nКогда приглашённый впервые оплатит подписку, вам начислятся бонусные дни.\n\nПо ссылке пришли: {}. Оплатили: {}. Бонусных дней: {}.",
            summary.joined, summary.rewarded, summary.days_earned
        ),
        Lang::En => format!(
            "Your personal link for friends:\n{link}\n\nWhen someone you invite pays for the first time, you get bonus days.\n\nJoined through your link: {}. Paid: {}. Bonus days earned: {}.",
            summary.joined, summary.rewarded, summary.days_earned
        ),
    }
}

/// What was wrong with `/admin promo` arguments.
pub fn promo_arg_problem(lang: Lang, problem: &PromoArgError) -> String {
    let (ru, en) = promo_problem(problem);
    lang.choose(ru, en)
}

/// What was wrong with `/admin promo` arguments, in Russian and in English.
fn promo_problem(problem: &PromoArgError) -> (String, String) {
    let (max_days, max_uses) = (crate::admin::MAX_GRANT_DAYS, crate::admin::MAX_PROMO_USES);
    match problem {
        PromoArgError::MissingAction => (
            "не указано действие: create, list или disable".into(),
            "the action is missing: create, list or disable".into(),
        ),
        PromoArgError::BadAction(word) => (
            format!("неизвестное действие «{word}»"),
            format!("unknown action “{word}”"),
        ),
        PromoArgError::MissingCode => ("не указан код".into(), "the code is missing".into()),
        PromoArgError::BadCode(word, _) => (
            format!("код «{word}»: 3–32 символа из A–Z, 0–9, «-», «_», в начале буква или цифра"),
            format!("code “{word}”: 3–32 of A–Z, 0–9, '-', '_', starting with a letter or digit"),
        ),
        PromoArgError::MissingBenefit => (
            "не указано, что даёт код: 7d или 20%".into(),
            "what the code gives is missing: 7d or 20%".into(),
        ),
        PromoArgError::BadBenefit(word) => (
            format!("«{word}» — нужно число дней (1–{max_days}) с d или процент скидки (1–99) с %"),
            format!(
                "“{word}” must be days (1–{max_days}) with d or a percentage off (1–99) with %"
            ),
        ),
        PromoArgError::MissingExpiry => (
            "не указан срок действия (ГГГГ-ММ-ДД)".into(),
            "the expiry is missing (YYYY-MM-DD)".into(),
        ),
        PromoArgError::BadExpiry(word) => (
            format!("срок «{word}» — не дата ГГГГ-ММ-ДД"),
            format!("expiry “{word}” is not a YYYY-MM-DD date"),
        ),
        PromoArgError::MissingUses => (
            "не указано максимальное число использований".into(),
            "the maximum number of uses is missing".into(),
        ),
        PromoArgError::BadUses(word) => (
            format!("«{word}» — не целое число от 1 до {max_uses}"),
            format!("“{word}” is not a whole number from 1 to {max_uses}"),
        ),
        PromoArgError::Unexpected(extra) => unexpected(extra),
    }
}

fn benefit(lang: Lang, benefit: PromoBenefit) -> String {
    match (lang, benefit) {
        (Lang::Ru, PromoBenefit::Days(days)) => format!("+{days} дн."),
        (Lang::En, PromoBenefit::Days(days)) => format!("+{days} days"),
        (Lang::Ru, PromoBenefit::PercentOff(percent)) => format!("скидка {percent}%"),
        (Lang::En, PromoBenefit::PercentOff(percent)) => format!("{percent}% off"),
    }
}

pub fn admin_promo_created(lang: Lang, code: &PromoCode) -> String {
    let (name, uses) = (&code.code, code.max_uses);
    let (gives, until) = (benefit(lang, code.benefit), date(code.expires_at));
    match lang {
        Lang::Ru => {
            format!("Промокод {name} создан: {gives}, до {until}, использований не больше {uses}.")
        }
        Lang::En => {
            format!("Promo code {name} created: {gives}, until {until}, at most {uses} uses.")
        }
    }
}

pub fn admin_promo_exists(lang: Lang, code: &str) -> String {
    match lang {
        Lang::Ru => format!("Промокод {code} уже существует."),
        Lang::En => format!("Promo code {code} already exists."),
    }
}

pub fn admin_promo_invalid(lang: Lang, problem: &str) -> String {
    format!(
        "{}: {problem}",
        lang.pick("Промокод не создан", "Promo code not created")
    )
}

pub fn admin_promo_list(lang: Lang, codes: &[PromoCode], now: Timestamp) -> String {
    if codes.is_empty() {
        return lang
            .pick("Промокодов нет.", "There are no promo codes.")
            .into();
    }
    let lines: Vec<String> = codes
        .iter()
        .map(|code| {
            let state = if code.disabled_at.is_some() {
                lang.pick("отключён", "disabled")
            } else if code.expires_at <= now {
                lang.pick("истёк", "expired")
            } else if code.uses >= code.max_uses {
                lang.pick("исчерпан", "used up")
            } else {
                lang.pick("действует", "active")
            };
            format!(
                "{} — {}, {}/{}, {} {}, {state}",
                code.code,
                benefit(lang, code.benefit),
                code.uses,
                code.max_uses,
                lang.pick("до", "until"),
                date(code.expires_at)
            )
        })
        .collect();
    format!(
        "{}\n{}",
        lang.pick("Промокоды:", "Promo codes:"),
        lines.join("\n")
    )
}

pub fn admin_promo_disabled(lang: Lang, code: &str, changed: bool) -> String {
    match (lang, changed) {
        (Lang::Ru, true) => format!("Промокод {code} отключён."),
        (Lang::En, true) => format!("Promo code {code} disabled."),
        (Lang::Ru, false) => format!("Промокода {code} нет или он уже отключён."),
        (Lang::En, false) => format!("Promo code {code} does not exist or is already disabled."),
    }
}

#[cfg(test)]
mod growth_tests {
    use super::*;

    #[test]
    fn every_promo_refusal_has_its_own_message_in_both_languages() {
        let all = [
            RedeemRefusal::Unknown,
            RedeemRefusal::Disabled,
            RedeemRefusal::Expired,
            RedeemRefusal::UsedUp,
            RedeemRefusal::AlreadyRedeemed,
            RedeemRefusal::DiscountWaiting,
        ];
        for lang in [Lang::Ru, Lang::En] {
            let texts: std::collections::BTreeSet<_> =
                all.iter().map(|r| promo_refused(lang, *r)).collect();
            assert_eq!(texts.len(), all.len());
        }
        assert_ne!(
            promo_refused(Lang::Ru, RedeemRefusal::Expired),
            promo_refused(Lang::En, RedeemRefusal::Expired)
        );
    }

    #[test]
    fn invite_shows_the_link_and_the_numbers() {
        let summary = ReferralSummary {
            joined: 3,
            rewarded: 1,
            days_earned: 7,
        };
        let en = invite(Lang::En, "https://t.me/b?start=ref_1", summary);
        assert!(en.contains("https://t.me/b?start=ref_1"), "{en}");
        assert!(
            en.contains("Joined through your link: 3. Paid: 1. Bonus days earned: 7."),
            "{en}"
        );
        let ru = invite(Lang::Ru, "https://t.me/b?start=ref_1", summary);
        assert!(
            ru.contains("По ссылке пришли: 3. Оплатили: 1. Бонусных дней: 7."),
            "{ru}"
        );
    }

    #[test]
    fn the_promo_usage_error_names_the_argument_and_the_usage_line() {
        let error = AdminParseError::Promo(PromoArgError::BadBenefit("7x".into()));
        let text = admin_usage_error(Lang::En, &error);
        assert!(text.contains("“7x” must be days"), "{text}");
        assert!(text.contains("/admin promo create"), "{text}");
    }
}

// --- automatic renewal ---

/// Why an automatic renewal was not charged, in words.
fn renewal_failure_reason(lang: Lang, reason: &str) -> &'static str {
    match reason {
        "insufficient_funds" => lang.pick(
            "на карте не хватило денег",
            "the card had insufficient funds",
        ),
        "card_expired" => lang.pick("срок действия карты истёк", "the card has expired"),
        "permission_revoked" => lang.pick(
            "разрешение на списания с карты отозвано",
            "permission to charge the card was revoked",
        ),
        "plan_unavailable" => lang.pick(
            "этот тариф больше не продаётся",
            "this plan is no longer sold",
        ),
        "contact_required" => lang.pick(
            "для чека нужен ваш e-mail или телефон",
            "the receipt needs your e-mail or phone",
        ),
        "provider_unavailable" => lang.pick(
            "платёжная система не ответила",
            "the payment provider did not answer",
        ),
        _ => lang.pick("банк отклонил платёж", "the bank declined the payment"),
    }
}

/// ` Your subscription runs until <date>.` after a renewal that added no time.
fn runs_until(lang: Lang, paid_until: Option<Timestamp>) -> String {
    dated_sentence(
        lang,
        "Подписка действует до",
        "Your subscription runs until",
        paid_until,
    )
}

/// The automatic renewal was not charged: no time added; how to pay by hand.
pub fn renewal_failed(lang: Lang, reason: &str, paid_until: Option<Timestamp>) -> String {
    let why = renewal_failure_reason(lang, reason);
    let until = runs_until(lang, paid_until);
    match lang {
        Lang::Ru => format!(
            "Не удалось автоматически продлить подписку: {why}. Деньги не списаны, время не добавлено.{until} Оплатить вручную: /buy"
        ),
        Lang::En => format!(
            "The automatic renewal could not be charged: {why}. Nothing was charged and no time was added.{until} Pay by hand: /buy"
        ),
    }
}

/// An automatic renewal asked of YooKassa whose answer never came and that is not asked again:
/// it may have been charged, so it is not called failed — it is being checked, a charge adds
/// the time by itself, and nothing more is charged for the period.
pub fn renewal_unconfirmed(lang: Lang, paid_until: Option<Timestamp>) -> String {
    let until = runs_until(lang, paid_until);
    match lang {
        Lang::Ru => format!(
            "Автопродление пока не подтверждено: платёжная система не ответила, мы проверяем списание. Если деньги списаны, время добавится само, а повторно за этот период ничего не спишем.{until} Если деньги не списаны, оплатить можно вручную: /buy"
        ),
        Lang::En => format!(
            "The automatic renewal is not confirmed yet: the payment provider did not answer, and we are checking the charge. If you were charged, the time is added by itself, and nothing more is charged for this period.{until} If nothing was charged, you can pay by hand: /buy"
        ),
    }
}

/// `/renewal`: the saved card (masked) and when it is charged, or that renewal is off.
pub fn renewal_status(
    lang: Lang,
    card: Option<(&str, Option<&str>)>,
    next_charge_at: Option<Timestamp>,
    plan: Option<&str>,
) -> String {
    let Some((title, expires)) = card else {
        return lang
            .pick(
                "Автопродление выключено. Чтобы включить его, при оплате выберите «с автопродлением»: /buy",
                "Automatic renewal is off. To switch it on, choose \"with automatic renewal\" when you pay: /buy",
            )
            .to_owned();
    };
    let expires = expires
        .map(|e| match lang {
            Lang::Ru => format!(" (до {e})"),
            Lang::En => format!(" (expires {e})"),
        })
        .unwrap_or_default();
    let plan = plan.unwrap_or("-");
    let next = dated_sentence(lang, "Следующее списание:", "Next charge:", next_charge_at);
    match lang {
        Lang::Ru => format!(
            "Автопродление включено: тариф {plan}, карта {title}{expires}.{next} Выключить можно в любой момент — карта будет удалена."
        ),
        Lang::En => format!(
            "Automatic renewal is on: plan {plan}, card {title}{expires}.{next} You can switch it off at any time; the card is then deleted."
        ),
    }
}

/// The button that switches renewal off.
pub fn renewal_off_button(lang: Lang) -> &'static str {
    lang.pick("Выключить автопродление", "Switch off automatic renewal")
}

/// Renewal was switched off (or already was).
pub fn renewal_switched_off(lang: Lang) -> &'static str {
    lang.pick(
        "Автопродление выключено, сохранённая карта удалена. Продлить вручную: /buy",
        "Automatic renewal is off and the saved card is deleted. Renew by hand: /buy",
    )
}

/// The button beside a plan's that buys it saving the card for automatic renewal.
pub fn with_renewal_button(lang: Lang) -> &'static str {
    lang.pick("🔁 С автопродлением", "🔁 With auto-renewal")
}

// --- end of automatic renewal ---

// ---- locations ----

/// The `/location` list's lead; `current` is the name of the user's location, when known.
pub fn choose_location(lang: Lang, current: Option<&str>) -> String {
    let lead = lang.pick(
        "Выберите, через какую страну подключаться:",
        "Choose the country to connect through:",
    );
    match current {
        Some(name) => format!("{lead}\n{} {name}", lang.pick("Сейчас:", "Now:")),
        None => lead.to_owned(),
    }
}

/// The lead of the location choice shown with `/buy`.
pub fn buy_location(lang: Lang) -> &'static str {
    lang.pick(
        "Сервер можно выбрать до оплаты (и сменить позже: /location):",
        "You can pick the server before paying (and change it later: /location):",
    )
}

/// A location's button: its label (flag, country, name), a mark for the user's own and for a
/// full one.
pub fn location_button(lang: Lang, label: &str, full: bool, current: bool) -> String {
    let mut label = label.to_owned();
    if current {
        label.push_str(" ✓");
    }
    if full {
        label.push_str(lang.pick(" — нет мест", " — full"));
    }
    label
}

/// No location is offered.
pub fn no_locations(lang: Lang) -> &'static str {
    lang.pick(
        "Выбор сервера пока недоступен.",
        "There is no choice of server yet.",
    )
}

/// The picked location is full.
pub fn location_full(lang: Lang) -> &'static str {
    lang.pick(
        "На этом сервере нет свободных мест. Выберите другой: /location",
        "This server is full. Pick another one: /location",
    )
}

/// The picked location is not offered (any more).
pub fn location_not_found(lang: Lang) -> &'static str {
    lang.pick(
        "Этот сервер больше не предлагается. Выберите другой: /location",
        "This server is no longer offered. Pick another one: /location",
    )
}

/// The location was set: the devices (if any) follow, and a message tells when.
pub fn location_set(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Сервер: {name}. Если у вас есть устройства, они переедут туда в течение минуты — \
             пришлю новые конфиги."
        ),
        Lang::En => format!(
            "Server: {name}. If you have devices, they move there within a minute — I will \
             send the new configs."
        ),
    }
}

/// The user's devices moved to `name`: every config changed.
pub fn location_moved(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Ваши устройства переехали на сервер {name}. Конфиги изменились (новый адрес \
             сервера и IP) — прежние больше не работают. Получите новые: /config (или кнопками \
             ниже) и заново импортируйте их, удалив старые туннели."
        ),
        Lang::En => format!(
            "Your devices moved to the server {name}. Their configs changed (a new server \
             address and IP) — the old ones no longer work. Get the new ones with /config (or \
             the buttons below) and import them again, removing the old tunnels."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn language_follows_the_code_with_russian_as_default() {
        assert_eq!(Lang::from_code(Some("en")), Lang::En);
        assert_eq!(Lang::from_code(Some("EN-gb")), Lang::En);
        assert_eq!(Lang::from_code(Some("ru")), Lang::Ru);
        assert_eq!(Lang::from_code(Some("uk")), Lang::Ru);
        assert_eq!(Lang::from_code(None), Lang::Ru);
    }

    #[test]
    fn both_languages_have_the_same_commands() {
        let ru: Vec<_> = command_descriptions(Lang::Ru)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let en: Vec<_> = command_descriptions(Lang::En)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(ru, en);
        for lang in [Lang::Ru, Lang::En] {
            for (command, description) in command_descriptions(lang) {
                assert!(help(lang).contains(&format!("/{command}")));
                assert!((3..=256).contains(&description.chars().count()));
            }
        }
    }

    #[test]
    fn welcome_has_three_instruction_lines_and_mentions_the_trial() {
        let until = t("2026-03-10T12:00:00Z");
        let ru = welcome(Lang::Ru, "Иван", Some((3, until)));
        assert!(ru.contains("Иван") && ru.contains("2026-03-10 12:00 UTC") && ru.contains("3 дн."));
        let en = welcome(Lang::En, "Ann", None);
        assert!(!en.contains("trial"));
        for text in [ru, en] {
            let numbered = text
                .lines()
                .filter(|l| l.starts_with(['1', '2', '3']))
                .count();
            assert_eq!(numbered, 3, "{text}");
        }
    }

    #[test]
    fn reminders_say_the_date_in_the_users_language() {
        let until = t("2026-03-10T12:00:00Z");
        for kind in ReminderKind::ALL {
            let ru = reminder(Lang::Ru, kind, until);
            let en = reminder(Lang::En, kind, until);
            assert!(ru.contains("2026-03-10 12:00 UTC") && en.contains("2026-03-10 12:00 UTC"));
            assert_ne!(ru, en);
            assert!(ru.contains("/buy") && en.contains("/buy"));
        }
    }

    #[test]
    fn usage_errors_name_the_problem_and_the_usage_line() {
        let err = admin::parse("grant 42 abc").unwrap_err();
        let en = admin_usage_error(Lang::En, &err);
        assert!(
            en.contains("“abc”") && en.contains(Subcommand::Grant.usage()),
            "{en}"
        );
        let ru = admin_usage_error(Lang::Ru, &err);
        assert!(
            ru.contains("«abc»") && ru.contains(Subcommand::Grant.usage()),
            "{ru}"
        );
        let unknown = admin_usage_error(Lang::En, &admin::parse("frobnicate").unwrap_err());
        assert!(unknown.contains("frobnicate") && unknown.contains(Subcommand::Broadcast.usage()));
    }

    #[test]
    fn amounts_are_shown_with_two_decimals_and_stars_whole() {
        assert_eq!(amounts(&[]), "0");
        assert_eq!(
            amounts(&[("RUB".into(), 19_905), ("USD".into(), 7)]),
            "199.05 RUB, 0.07 USD"
        );
        assert_eq!(
            amounts(&[("RUB".into(), 19_900), ("XTR".into(), 450)]),
            "199.00 RUB, 450 XTR"
        );
    }

    #[test]
    fn status_lists_devices_and_offers_renewal_when_not_active() {
        let devices = [
            DeviceLine {
                name: "phone".into(),
                enabled: true,
                last_handshake: Some(t("2026-03-01T10:00:00Z")),
            },
            DeviceLine {
                name: "laptop".into(),
                enabled: false,
                last_handshake: None,
            },
        ];
        let text = status(
            Lang::En,
            SubscriptionPhase::Expired,
            Some(t("2026-03-02T00:00:00Z")),
            3,
            &devices,
        );
        assert!(
            text.contains("expired")
                && text.contains("2 / 3")
                && text.contains("phone: last handshake 2026-03-01 10:00 UTC")
        );
        assert!(text.contains("laptop (off): never connected") && text.contains("/buy"));
        let active = status(Lang::Ru, SubscriptionPhase::Active, None, 1, &[]);
        assert!(active.contains("активна") && !active.contains("/buy"));
    }

    #[test]
    fn plan_buttons_show_price_and_devices() {
        let catalogue = wgsub_crds::plans::PlanCatalogue::from_yaml_str(
            "plans: [{id: month, title: {ru: Месяц, en: Month}, days: 30, priceMinor: 19900, currency: RUB, devices: 1}]",
        )
        .unwrap();
        let plan = &catalogue.plans()[0];
        assert_eq!(plan_button(Lang::En, plan), "Month — 199.00 RUB (1 device)");
        assert_eq!(plan_button(Lang::Ru, plan), "Месяц — 199.00 RUB (1 устр.)");
    }

    #[test]
    fn stars_buttons_show_the_price_and_refusals_say_what_to_do() {
        use wgsub_ledger::stars::StarsRefusal;
        let catalogue = wgsub_crds::plans::PlanCatalogue::from_yaml_str(&format!(
            "plans: [{{id: month, title: {{ru: {0}, en: {0}}}, days: 30, priceMinor: 19900, currency: RUB, devices: 2, priceStars: 150}}]",
            "Y".repeat(60)
        ))
        .unwrap();
        let plan = &catalogue.plans()[0];
        for lang in [Lang::Ru, Lang::En] {
            assert!(stars_plan_button(lang, plan).contains("150 ⭐"));
        }
        let changed = StarsRefusal::PriceChanged {
            plan: "month".into(),
            invoiced: 100,
            now: 150,
        };
        assert!(stars_refused(Lang::En, &changed).contains("changed to 150"));
        assert!(stars_refused(Lang::Ru, &changed).contains("изменилась"));
        assert_eq!(
            stars_refused(
                Lang::En,
                &StarsRefusal::AmountMismatch {
                    invoiced: 1,
                    paid: 2
                }
            ),
            stars_refused(
                Lang::En,
                &StarsRefusal::Payload(wgsub_ledger::stars::PayloadError::Malformed)
            )
        );
        assert_ne!(
            stars_refused(Lang::Ru, &StarsRefusal::Suspended),
            stars_refused(Lang::En, &StarsRefusal::Suspended)
        );
    }
}

// ---- the connection guide ----

/// The button that opens the connection guide.
pub fn guide_button(lang: Lang) -> &'static str {
    lang.pick("Как подключиться", "How to connect")
}

pub fn guide_choose_platform(lang: Lang) -> &'static str {
    lang.pick(
        "Как подключиться: выберите ваше устройство.",
        "How to connect: choose your device.",
    )
}

/// The guide for one platform: the app to install for the server's protocol (its official
/// pages, `links`) and the quickest way to import the config there.
pub fn guide(lang: Lang, protocol: Protocol, platform: Platform, links: &[StoreLink]) -> String {
    let apps: String = links
        .iter()
        .map(|link| format!("\n• {} — {}", link.label, link.url))
        .collect();
    let (apps_named, not_wireguard) = (amneziawg_app_names(lang), not_for_the_wireguard_app(lang));
    let install = match (protocol, lang) {
        (Protocol::Wireguard, Lang::Ru) => "1. Установите приложение WireGuard:".to_owned(),
        (Protocol::Wireguard, Lang::En) => "1. Install the WireGuard app:".to_owned(),
        (Protocol::Amneziawg, Lang::Ru) => format!(
            "1. Ваш сервер работает на AmneziaWG: установите приложение {apps_named}. {not_wireguard}"
        ),
        (Protocol::Amneziawg, Lang::En) => format!(
            "1. Your server speaks AmneziaWG: install the {apps_named} app. {not_wireguard}"
        ),
    };
    let import = match (protocol, platform.is_phone(), lang) {
        (Protocol::Wireguard, true, Lang::Ru) => {
            "2. Быстрее всего: откройте /config на другом экране (компьютер, планшет) и в WireGuard \
             нажмите + → «Сканировать QR-код». Или на телефоне откройте файл .conf из /config \
             и поделитесь им в WireGuard."
        }
        (Protocol::Wireguard, true, Lang::En) => {
            "2. Quickest: open /config on another screen (a computer, a tablet) and in WireGuard \
             tap + → “Scan from QR code”. Or on the phone open the .conf file from /config and \
             share it to WireGuard."
        }
        (Protocol::Wireguard, false, Lang::Ru) => {
            "2. Сохраните файл .conf из /config и в WireGuard выберите «Импорт туннеля из файла» \
             (Linux: sudo wg-quick up ./файл.conf)."
        }
        (Protocol::Wireguard, false, Lang::En) => {
            "2. Save the .conf file from /config and in WireGuard choose “Import tunnel(s) from \
             file” (Linux: sudo wg-quick up ./file.conf)."
        }
        (Protocol::Amneziawg, true, Lang::Ru) => {
            "2. Быстрее всего: откройте /config на другом экране и в AmneziaVPN нажмите + и \
             отсканируйте QR-код. Или на телефоне откройте файл .conf из /config и поделитесь им \
             в AmneziaVPN или AmneziaWG."
        }
        (Protocol::Amneziawg, true, Lang::En) => {
            "2. Quickest: open /config on another screen and in AmneziaVPN tap + and scan the QR \
             code. Or on the phone open the .conf file from /config and share it to AmneziaVPN \
             or AmneziaWG."
        }
        (Protocol::Amneziawg, false, Lang::Ru) => {
            "2. Сохраните файл .conf из /config и в AmneziaVPN добавьте подключение из файла."
        }
        (Protocol::Amneziawg, false, Lang::En) => {
            "2. Save the .conf file from /config and in AmneziaVPN add a connection from the file."
        }
    };
    format!("{}\n\n{install}{apps}\n\n{import}", platform.name())
}

#[cfg(test)]
mod amneziawg_tests {
    use super::*;

    #[test]
    fn an_amneziawg_config_names_its_apps_with_their_official_links_in_both_languages() {
        for lang in [Lang::Ru, Lang::En] {
            let caption = config_caption(lang, "iPhone", Protocol::Amneziawg);
            for needle in [
                "AmneziaVPN",
                "AmneziaWG",
                "iPhone",
                "https://apps.apple.com/app/amneziavpn/id1600529900",
                "https://apps.apple.com/app/amneziawg/id6478942365",
                "https://play.google.com/store/apps/details?id=org.amnezia.vpn",
                "https://play.google.com/store/apps/details?id=org.amnezia.awg",
                "https://github.com/amnezia-vpn/amnezia-client/releases",
            ] {
                assert!(caption.contains(needle), "{lang:?} caption lacks {needle}");
            }
            // Telegram refuses a caption over 1024 characters.
            assert!(
                caption.chars().count() <= 1024,
                "{lang:?}: {}",
                caption.len()
            );
            assert!(qr_caption(lang, Protocol::Amneziawg).contains("AmneziaWG"));
            let plain = config_caption(lang, "iPhone", Protocol::Wireguard);
            assert!(plain.contains("WireGuard") && !plain.contains("Amnezia"));
            assert!(!qr_caption(lang, Protocol::Wireguard).contains("Amnezia"));
        }
        assert_ne!(
            config_caption(Lang::Ru, "a", Protocol::Amneziawg),
            config_caption(Lang::En, "a", Protocol::Amneziawg)
        );
    }

    #[test]
    fn the_caption_and_the_guide_name_the_apps_and_the_warning_alike() {
        for lang in [Lang::Ru, Lang::En] {
            let caption = config_caption(lang, "iPhone", Protocol::Amneziawg);
            for platform in Platform::ALL {
                let guide = guide(lang, Protocol::Amneziawg, platform, &[]);
                for text in [&caption, &guide] {
                    assert!(text.contains(amneziawg_app_names(lang)), "{text}");
                    assert!(text.contains(not_for_the_wireguard_app(lang)), "{text}");
                }
            }
        }
    }
}

// ---- Data quota: traffic per period ----

/// A plan's traffic per period as its button shows it (`50 GB`); `None` without a quota.
fn plan_traffic(lang: Lang, plan: &Plan) -> Option<String> {
    plan.traffic_gib
        .map(|gib| format!("{gib} {}", lang.pick("ГБ", "GB")))
}

/// The traffic lines of `/status`: this period's use against the quota (with what is left and
/// when the period ends) and a paused notice when it is used up; the totals. Empty without a
/// quota and with nothing counted yet.
pub fn usage_lines(lang: Lang, usage: &Usage) -> String {
    let mut out = String::new();
    if let Some(quota) = usage.quota_bytes {
        let used = bytes(lang, usage.period_bytes());
        let left = bytes(lang, usage.remaining_bytes().unwrap_or(0));
        let quota = bytes(lang, quota);
        out.push_str(&match lang {
            Lang::Ru => format!("Трафик за период: {used} из {quota}, осталось {left}"),
            Lang::En => format!("Traffic this period: {used} of {quota}, {left} left"),
        });
        if let Some(end) = usage.period_end {
            out.push_str(&format!(" ({} {})", lang.pick("до", "until"), date(end)));
        }
        out.push('\n');
        if usage.exhausted {
            out.push_str(&quota_paused(lang, usage.period_end));
            out.push('\n');
        }
    } else if usage.total_bytes() == 0 {
        return out;
    }
    out.push_str(&format!(
        "{}: ↑ {} ↓ {}",
        lang.pick("Трафик всего", "Traffic in total"),
        bytes(lang, usage.total_rx_bytes),
        bytes(lang, usage.total_tx_bytes)
    ));
    out
}

/// That the quota is used up and until when the devices are paused.
fn quota_paused(lang: Lang, period_end: Option<Timestamp>) -> String {
    match (lang, period_end) {
        (Lang::Ru, Some(end)) => format!(
            "⛔ Трафик на этот период исчерпан: VPN на паузе до {} или до новой покупки (/buy).",
            date(end)
        ),
        (Lang::Ru, None) => {
            "⛔ Трафик на этот период исчерпан: VPN на паузе до новой покупки (/buy).".into()
        }
        (Lang::En, Some(end)) => format!(
            "⛔ This period's traffic is used up: the VPN is paused until {} or a new purchase (/buy).",
            date(end)
        ),
        (Lang::En, None) => {
            "⛔ This period's traffic is used up: the VPN is paused until a new purchase (/buy)."
                .into()
        }
    }
}

/// The message sent once when a user's quota for the period runs out; the plans follow as
/// buttons.
pub fn quota_exhausted(lang: Lang, period_end: Option<Timestamp>) -> String {
    let paused = match (lang, period_end) {
        (Lang::Ru, Some(end)) => format!(
            "Ваши устройства на паузе до {}, когда начнётся новый период, — или до новой покупки.",
            date(end)
        ),
        (Lang::Ru, None) => "Ваши устройства на паузе до новой покупки.".to_owned(),
        (Lang::En, Some(end)) => format!(
            "Your devices are paused until {}, when a new period starts — or until you buy more.",
            date(end)
        ),
        (Lang::En, None) => "Your devices are paused until you buy more.".to_owned(),
    };
    format!(
        "{}\n\n{paused}\n{}",
        lang.pick(
            "⛔ Трафик по вашему тарифу на этот период исчерпан.",
            "⛔ You have used up your plan's traffic for this period."
        ),
        lang.pick(
            "Продлить сейчас — выберите тариф:",
            "To go on now, pick a plan:"
        )
    )
}

/// A device's traffic line of `/devices`: this period and in total.
fn device_traffic_line(lang: Lang, traffic: &DeviceTraffic) -> String {
    format!(
        "  {} ↑ {} ↓ {} · {} ↑ {} ↓ {}\n",
        lang.pick("за период", "this period"),
        bytes(lang, traffic.period_rx_bytes),
        bytes(lang, traffic.period_tx_bytes),
        lang.pick("всего", "in total"),
        bytes(lang, traffic.total_rx_bytes),
        bytes(lang, traffic.total_tx_bytes),
    )
}

#[cfg(test)]
mod quota_tests {
    use super::*;
    use wgsub_crds::plans::LocalizedText;

    const GIB: i64 = 1 << 30;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn plan(traffic_gib: Option<u32>) -> Plan {
        Plan {
            id: "month".into(),
            title: LocalizedText {
                ru: "Месяц".into(),
                en: "Month".into(),
            },
            days: 30,
            price_minor: 19_900,
            currency: "RUB".into(),
            devices: 2,
            price_stars: None,
            traffic_gib,
        }
    }

    #[test]
    fn a_plan_button_tells_its_traffic_and_none_without_a_quota() {
        assert_eq!(
            plan_button(Lang::En, &plan(Some(50))),
            "Month — 199.00 RUB (2 devices, 50 GB)"
        );
        assert_eq!(
            plan_button(Lang::Ru, &plan(Some(50))),
            "Месяц — 199.00 RUB (2 устр., 50 ГБ)"
        );
        assert_eq!(
            plan_button(Lang::En, &plan(None)),
            "Month — 199.00 RUB (2 devices)"
        );
    }

    fn usage(quota: Option<i64>, exhausted: bool) -> Usage {
        Usage {
            quota_bytes: quota,
            period_rx_bytes: 10 * GIB,
            period_tx_bytes: 30 * GIB + GIB / 2,
            period_start: Some(t("2026-12-07T00:00:00Z")),
            period_end: quota.map(|_| t("2027-01-06T00:00:00Z")),
            total_rx_bytes: 25 * GIB,
            total_tx_bytes: 90 * GIB,
            exhausted,
        }
    }

    #[test]
    fn status_shows_use_against_the_quota_what_is_left_and_the_period_end() {
        assert_eq!(
            usage_lines(Lang::En, &usage(Some(50 * GIB), false)),
            "Traffic this period: 40.5 GB of 50 GB, 9.5 GB left (until 2027-01-06 00:00 UTC)\n\
             Traffic in total: ↑ 25 GB ↓ 90 GB"
        );
        assert_eq!(
            usage_lines(Lang::Ru, &usage(Some(50 * GIB), false)),
            "Трафик за период: 40.5 ГБ из 50 ГБ, осталось 9.5 ГБ (до 2027-01-06 00:00 UTC)\n\
             Трафик всего: ↑ 25 ГБ ↓ 90 ГБ"
        );
    }

    #[test]
    fn status_says_the_vpn_is_paused_when_the_quota_is_used_up() {
        for lang in [Lang::Ru, Lang::En] {
            let lines = usage_lines(lang, &usage(Some(40 * GIB), true));
            assert!(lines.contains("⛔"), "{lines}");
            assert!(lines.contains("2027-01-06 00:00 UTC"), "{lines}");
            assert!(lines.contains("/buy"), "{lines}");
            assert!(lines.contains(&bytes(lang, 0)), "nothing left: {lines}");
        }
        assert!(!usage_lines(Lang::En, &usage(Some(50 * GIB), false)).contains('⛔'));
    }

    #[test]
    fn without_a_quota_status_shows_totals_and_nothing_before_any_traffic() {
        assert_eq!(
            usage_lines(Lang::En, &usage(None, false)),
            "Traffic in total: ↑ 25 GB ↓ 90 GB"
        );
        assert_eq!(usage_lines(Lang::Ru, &Usage::default()), "");
    }

    #[test]
    fn the_exhaustion_notice_names_the_period_end_or_only_a_purchase() {
        let end = Some(t("2027-01-06T00:00:00Z"));
        for lang in [Lang::Ru, Lang::En] {
            let with_end = quota_exhausted(lang, end);
            assert!(with_end.contains("2027-01-06 00:00 UTC"), "{with_end}");
            assert!(!quota_exhausted(lang, None).contains("UTC"));
        }
        assert!(quota_exhausted(Lang::En, end).contains("pick a plan"));
        assert!(quota_exhausted(Lang::Ru, end).contains("выберите тариф"));
    }

    #[test]
    fn a_device_line_shows_its_period_and_total_traffic() {
        let traffic = DeviceTraffic {
            period_rx_bytes: 1536,
            period_tx_bytes: 3 * 1024 * 1024,
            total_rx_bytes: 2 * GIB,
            total_tx_bytes: 5 * GIB,
        };
        assert_eq!(
            device_traffic_line(Lang::En, &traffic),
            "  this period ↑ 1.5 KB ↓ 3 MB · in total ↑ 2 GB ↓ 5 GB\n"
        );
        assert_eq!(
            device_traffic_line(Lang::Ru, &traffic),
            "  за период ↑ 1.5 КБ ↓ 3 МБ · всего ↑ 2 ГБ ↓ 5 ГБ\n"
        );
    }
}

#[cfg(test)]
mod renewal_unconfirmed_tests {
    use super::*;

    #[test]
    fn an_unconfirmed_renewal_is_being_checked_never_called_failed() {
        let until: Timestamp = "2026-04-01T00:00:00Z".parse().unwrap();
        for lang in [Lang::Ru, Lang::En] {
            let said = renewal_unconfirmed(lang, Some(until));
            assert!(said.contains("2026-04-01 00:00 UTC"), "{said}");
            assert!(said.contains("/buy"), "{said}");
            for wrong in [
                "failed",
                "could not be charged",
                "Nothing was charged and",
                "Не удалось",
                "Деньги не списаны,",
            ] {
                assert!(!said.contains(wrong), "{lang:?} says {wrong:?}: {said}");
            }
            assert!(!renewal_unconfirmed(lang, None).contains("UTC"));
        }
        assert!(renewal_unconfirmed(Lang::Ru, None).contains("проверяем"));
        assert!(renewal_unconfirmed(Lang::En, None).contains("checking"));
    }
}
