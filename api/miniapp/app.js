// The wgsub Mini App. Screens: status (days left and the location; an expired or unpaid
// subscription leads straight to the plans), locations (move the devices elsewhere, after a
// confirmation that their configs change; a full location cannot be picked), plans (pick one
// and a location, pay through YooKassa or in Telegram Stars with `Telegram.WebApp.openInvoice`;
// a promo code field; agree to automatic renewal with the card, shown and switched off on the
// status screen), keys (the user's devices: connected now,
// last handshake, traffic, QR code, .conf download, copy, the on/off switch, rename, a new key
// and delete, both after a confirmation) and, per device, the connection guide: for the user's platform (`Telegram.WebApp.platform`) the app
// that imports the config of the device's server protocol (WireGuard, or AmneziaVPN /
// AmneziaWG) with its official store links and the quickest way to import it there.
//
// It behaves like Telegram's own screens: it follows `themeChanged` while open, the
// `BackButton` leaves a sub-screen, the `MainButton` carries each screen's main action (buy,
// pay, add a device; a page button stands in for it outside Telegram), and success and
// failure are felt (`HapticFeedback`). After a payment it polls `/api/v1/me` until the new
// paid-until date is there (for a bounded time, then says the payment has not arrived yet).
//
// Talks to the API with `Authorization: tma <initData>`; renders even when Telegram's WebApp
// API is absent. Errors are the API's JSON `{code, message}`: the message is shown. When the
// API says the initData expired (`init_data_expired`), it asks the user to reopen the app:
// Telegram signs fresh initData only when a Mini App is opened, so the button closes it
// (`Telegram.WebApp.close`) for the user to open it again from the bot (outside Telegram it
// reloads the page). Untrusted data only ever goes into `textContent`.
"use strict";

const TEXT = {
  en: {
    status: "Status", plans: "Plans", keys: "Keys", phase: "Status", paidUntil: "Paid until",
    plan: "Plan", devices: "Devices", refresh: "Refresh", addDevice: "Add device",
    download: "Download .conf", copy: "Copy config", copied: "Copied", enabled: "On",
    days: "days", deviceCount: "devices", noDevices: "No devices yet.",
    payFor: "Pay {p} · {t}", payStars: "Pay {s} ⭐",
    starsPaid: "Paid in Stars: waiting for your subscription to be extended…",
    starsFailed: "The payment in Stars did not go through.",
    notReady: "Your key is being prepared…", openInTelegram: "Open this page from the wgsub bot in Telegram.",
    error: "Something went wrong", Pending: "Not paid", Active: "Active", Expired: "Expired",
    Suspended: "Suspended", device: "Device",
    sessionExpired: "Your session has expired. Close the app and open it again from the bot.",
    reopen: "Close and reopen",
    daysLeft: ["{n} day left", "{n} days left"], lessThanDay: "Less than a day left",
    expiredTitle: "Your subscription has expired",
    expiredText: "It ended on {d}. Renew it to connect again: your devices keep their configs.",
    pendingTitle: "No subscription yet", pendingText: "Choose a plan to get your VPN key.",
    suspendedTitle: "Your subscription is suspended",
    suspendedText: "Write to the bot's support to find out why.",
    renew: "Renew", choosePlan: "Choose a plan",
    paymentWaiting: "Waiting for your payment… This page updates by itself once it arrives.",
    paymentReceived: "Payment received: paid until {d}.",
    paymentLate: "The payment has not arrived yet. If you paid, it shows up within a few minutes: tap Refresh.",
    connectedNow: "Connected", notConnected: "Not connected", lastSeen: "Last handshake {r}",
    neverSeen: "No handshake yet", traffic: "↓ {down} · ↑ {up}",
    back: "‹ Back", rename: "Rename", save: "Save", cancel: "Cancel", renamed: "Renamed",
    howToConnect: "How to connect", guideTitle: "Connect “{d}”",
    stepInstall: "1. Install the app", stepImport: "2. Import the config", stepOn: "3. Turn it on",
    stepOnText: "Switch the tunnel on in the app. This page shows “Connected” after the first handshake.",
    showQr: "Show QR code",
    guideNotReady: "The config is not ready yet: come back in a moment.",
    guideInactive: "The config works again once the subscription is renewed.",
    ios: "iPhone, iPad", android: "Android", windows: "Windows", macos: "macOS", linux: "Linux",
    import_wireguard_ios: "Quickest: tap “Download .conf” and open the file with WireGuard (Share → WireGuard). Or open this page on a computer and scan its QR code in WireGuard: + → Create from QR code.",
    import_wireguard_android: "Quickest: tap “Download .conf”, then in WireGuard tap + → Import from file or archive and pick it. Or open this page on another screen and scan the QR code: + → Scan from QR code.",
    import_wireguard_windows: "Tap “Download .conf”, then in WireGuard click “Import tunnel(s) from file” and pick it. To connect a phone, scan the QR code below with its WireGuard app.",
    import_wireguard_macos: "Tap “Download .conf”, then in WireGuard choose “Import tunnel(s) from file” and pick it. To connect a phone, scan the QR code below with its WireGuard app.",
    import_wireguard_linux: "Download the .conf and run: sudo wg-quick up ./{f} (or import it into NetworkManager: nmcli connection import type wireguard file {f}). To connect a phone, scan the QR code below with its WireGuard app.",
    import_amneziawg_ios: "Quickest: tap “Copy config”, open AmneziaVPN, tap + and paste it. Or tap “Download .conf” and open the file with AmneziaWG.",
    import_amneziawg_android: "Quickest: tap “Copy config”, open AmneziaVPN, tap + and paste it. Or tap “Download .conf”, then in AmneziaWG tap + → Import from file or archive.",
    import_amneziawg_windows: "Tap “Download .conf”, then in AmneziaVPN add a connection from the file (or paste the copied config). To connect a phone, scan the QR code below with AmneziaWG.",
    import_amneziawg_macos: "Tap “Download .conf”, then in AmneziaVPN add a connection from the file (or paste the copied config). To connect a phone, scan the QR code below with AmneziaWG.",
    import_amneziawg_linux: "Tap “Download .conf”, then in AmneziaVPN add a connection from the file (or paste the copied config). To connect a phone, scan the QR code below with AmneziaWG.",
    appsAmneziawg: "This is an AmneziaWG config: the WireGuard app cannot connect with it.",
    promoLabel: "Promo code", promoApply: "Apply", promoDays: "Code accepted: +{d} days.",
    promoWaiting: "{p}% off your next payment.", inviteTitle: "Invite friends",
    inviteCopy: "Copy link",
    inviteStats: "Joined: {j} · paid: {r} · bonus days: {d}. You get bonus days when a friend pays for the first time.",
    promo_malformed: "That is not a promo code: 3–32 Latin letters, digits, '-' or '_'.",
    promo_unknown: "There is no such promo code.", promo_disabled: "This promo code is no longer valid.",
    promo_expired: "This promo code has expired.", promo_used_up: "This promo code has been used up.",
    promo_already_redeemed: "You have already used this promo code.",
    promo_discount_waiting: "You already have a discount waiting for your next payment.",
    location: "Location", locationDefault: "Default", change: "Change",
    locationsTitle: "Choose a location", locationFull: "Full", locationCurrent: "Current",
    locationsHint: "Moving changes your devices' configs: import them into the app again afterwards.",
    moveTo: "Move to {l}",
    moveConfirm: "Move your devices to {l}? Their configs change: you will need to import them into the app again.",
    moved: "Moved to {l}. Your configs changed: import them again (Keys → How to connect).",
    delete: "Delete", rotate: "New key",
    deleteConfirm: "Delete “{d}”? Its config stops working at once.", deleted: "“{d}” is deleted.",
    rotateConfirm: "Make a new key for “{d}”? The current config stops working: you will import the new one.",
    rotated: "New key made: import the new config of “{d}” once it is ready.",
    saveCard: "Renew automatically with this card",
    saveCardHint: "Before the paid time ends, the plan is charged to this card again. You can switch it off at any time.",
    renewalTitle: "Automatic renewal", renewalOn: "On: {c}", renewalUntil: "{c}, valid until {e}",
    renewalNext: "Next charge: {d} · {p}", renewalOff: "Turn off",
    renewalOffConfirm: "Switch off automatic renewal? The saved card is deleted.",
    renewalIsOff: "Automatic renewal is off.", renewalFailed: "The last renewal failed: {r}.",
    fail_insufficient_funds: "not enough money on the card", fail_card_expired: "the card has expired",
    fail_plan_unavailable: "the plan is no longer sold", fail_permission_revoked: "the permission was revoked",
    units: ["B", "KB", "MB", "GB", "TB"],
    usageTitle: "Traffic", usageOf: "{u} of {q}", usageLeft: "{l} left · renews {d}",
    usageTotal: "In total: ↓ {down} · ↑ {up}", exhaustedTitle: "Your traffic is used up",
    exhaustedText: "Your devices are paused until {d}, when a new period starts, or until you buy more.",
    buyMore: "Buy more", perPeriod: "{q} of traffic",
    devicePeriod: "This period: ↓ {down} · ↑ {up}", deviceTotal: "in total: ↓ {down} · ↑ {up}",
  },
  ru: {
    status: "Статус", plans: "Тарифы", keys: "Ключи", phase: "Статус", paidUntil: "Оплачено до",
    plan: "Тариф", devices: "Устройства", refresh: "Обновить", addDevice: "Добавить устройство",
    download: "Скачать .conf", copy: "Скопировать конфиг", copied: "Скопировано", enabled: "Включено",
    days: "дн.", deviceCount: "устр.", noDevices: "Устройств пока нет.",
    payFor: "Оплатить {p} · {t}", payStars: "Оплатить {s} ⭐",
    starsPaid: "Оплачено звёздами: ждём продления подписки…",
    starsFailed: "Оплата звёздами не прошла.",
    notReady: "Ключ готовится…", openInTelegram: "Откройте эту страницу из бота wgsub в Telegram.",
    error: "Что-то пошло не так", Pending: "Не оплачено", Active: "Активна", Expired: "Истекла",
    Suspended: "Приостановлена", device: "Устройство",
    sessionExpired: "Сессия истекла. Закройте приложение и откройте его снова из бота.",
    reopen: "Закрыть и открыть снова",
    daysLeft: ["Остался {n} день", "Осталось {n} дня", "Осталось {n} дней"],
    lessThanDay: "Осталось меньше дня",
    expiredTitle: "Подписка закончилась",
    expiredText: "Она закончилась {d}. Продлите её, чтобы снова подключиться: конфиги устройств останутся прежними.",
    pendingTitle: "Подписки пока нет", pendingText: "Выберите тариф, чтобы получить ключ VPN.",
    suspendedTitle: "Подписка приостановлена",
    suspendedText: "Напишите в поддержку бота, чтобы узнать причину.",
    renew: "Продлить", choosePlan: "Выбрать тариф",
    paymentWaiting: "Ждём оплату… Страница обновится сама, как только она придёт.",
    paymentReceived: "Оплата получена: оплачено до {d}.",
    paymentLate: "Оплата пока не пришла. Если вы оплатили, она появится в течение нескольких минут: нажмите «Обновить».",
    connectedNow: "Подключено", notConnected: "Не подключено", lastSeen: "Последнее рукопожатие {r}",
    neverSeen: "Рукопожатий ещё не было", traffic: "↓ {down} · ↑ {up}",
    back: "‹ Назад", rename: "Переименовать", save: "Сохранить", cancel: "Отмена", renamed: "Переименовано",
    howToConnect: "Как подключить", guideTitle: "Подключить «{d}»",
    stepInstall: "1. Установите приложение", stepImport: "2. Импортируйте конфиг", stepOn: "3. Включите",
    stepOnText: "Включите туннель в приложении. Здесь появится «Подключено» после первого рукопожатия.",
    showQr: "Показать QR-код",
    guideNotReady: "Конфиг ещё не готов: загляните через минуту.",
    guideInactive: "Конфиг снова заработает, когда подписка будет продлена.",
    ios: "iPhone, iPad", android: "Android", windows: "Windows", macos: "macOS", linux: "Linux",
    import_wireguard_ios: "Быстрее всего: нажмите «Скачать .conf» и откройте файл в WireGuard (Поделиться → WireGuard). Или откройте эту страницу на компьютере и отсканируйте QR-код в WireGuard: + → Создать из QR-кода.",
    import_wireguard_android: "Быстрее всего: нажмите «Скачать .conf», затем в WireGuard нажмите + → Импорт из файла или архива и выберите его. Или откройте эту страницу на другом экране и отсканируйте QR-код: + → Сканировать QR-код.",
    import_wireguard_windows: "Нажмите «Скачать .conf», затем в WireGuard нажмите «Импорт туннелей из файла» и выберите его. Чтобы подключить телефон, отсканируйте QR-код ниже его приложением WireGuard.",
    import_wireguard_macos: "Нажмите «Скачать .conf», затем в WireGuard выберите «Импорт туннелей из файла» и выберите его. Чтобы подключить телефон, отсканируйте QR-код ниже его приложением WireGuard.",
    import_wireguard_linux: "Скачайте .conf и выполните: sudo wg-quick up ./{f} (или импортируйте в NetworkManager: nmcli connection import type wireguard file {f}). Чтобы подключить телефон, отсканируйте QR-код ниже его приложением WireGuard.",
    import_amneziawg_ios: "Быстрее всего: нажмите «Скопировать конфиг», откройте AmneziaVPN, нажмите + и вставьте его. Или нажмите «Скачать .conf» и откройте файл в AmneziaWG.",
    import_amneziawg_android: "Быстрее всего: нажмите «Скопировать конфиг», откройте AmneziaVPN, нажмите + и вставьте его. Или нажмите «Скачать .conf», затем в AmneziaWG нажмите + → Импорт из файла или архива.",
    import_amneziawg_windows: "Нажмите «Скачать .conf», затем в AmneziaVPN добавьте подключение из файла (или вставьте скопированный конфиг). Чтобы подключить телефон, отсканируйте QR-код ниже приложением AmneziaWG.",
    import_amneziawg_macos: "Нажмите «Скачать .conf», затем в AmneziaVPN добавьте подключение из файла (или вставьте скопированный конфиг). Чтобы подключить телефон, отсканируйте QR-код ниже приложением AmneziaWG.",
    import_amneziawg_linux: "Нажмите «Скачать .conf», затем в AmneziaVPN добавьте подключение из файла (или вставьте скопированный конфиг). Чтобы подключить телефон, отсканируйте QR-код ниже приложением AmneziaWG.",
    appsAmneziawg: "Это конфиг AmneziaWG: приложение WireGuard с ним не подключится.",
    promoLabel: "Промокод", promoApply: "Применить", promoDays: "Промокод принят: +{d} дн.",
    promoWaiting: "Скидка {p}% на следующую оплату.", inviteTitle: "Пригласите друзей",
    inviteCopy: "Скопировать ссылку",
    inviteStats: "Пришли: {j} · оплатили: {r} · бонусных дней: {d}. Бонусные дни начисляются, когда друг впервые оплатит подписку.",
    promo_malformed: "Это не промокод: 3–32 латинские буквы, цифры, «-» или «_».",
    promo_unknown: "Такого промокода нет.", promo_disabled: "Этот промокод больше не действует.",
    promo_expired: "Срок действия промокода истёк.", promo_used_up: "Промокод исчерпан.",
    promo_already_redeemed: "Вы уже использовали этот промокод.",
    promo_discount_waiting: "У вас уже есть скидка на следующую оплату.",
    location: "Локация", locationDefault: "По умолчанию", change: "Сменить",
    locationsTitle: "Выберите локацию", locationFull: "Мест нет", locationCurrent: "Текущая",
    locationsHint: "При переезде конфиги устройств меняются: после него импортируйте их в приложение заново.",
    moveTo: "Переехать: {l}",
    moveConfirm: "Перенести ваши устройства в локацию {l}? Их конфиги изменятся: их нужно будет заново импортировать в приложение.",
    moved: "Готово: {l}. Конфиги изменились — импортируйте их заново (Ключи → Как подключить).",
    delete: "Удалить", rotate: "Новый ключ",
    deleteConfirm: "Удалить «{d}»? Его конфиг сразу перестанет работать.", deleted: "«{d}» удалено.",
    rotateConfirm: "Сделать новый ключ для «{d}»? Текущий конфиг перестанет работать: нужно будет импортировать новый.",
    rotated: "Новый ключ создан: импортируйте новый конфиг «{d}», когда он будет готов.",
    saveCard: "Продлевать автоматически с этой карты",
    saveCardHint: "Перед окончанием оплаченного срока тариф снова спишется с этой карты. Отключить можно в любой момент.",
    renewalTitle: "Автопродление", renewalOn: "Включено: {c}", renewalUntil: "{c}, действует до {e}",
    renewalNext: "Следующее списание: {d} · {p}", renewalOff: "Отключить",
    renewalOffConfirm: "Отключить автопродление? Сохранённая карта будет удалена.",
    renewalIsOff: "Автопродление отключено.", renewalFailed: "Последнее автопродление не прошло: {r}.",
    fail_insufficient_funds: "на карте недостаточно средств", fail_card_expired: "срок действия карты истёк",
    fail_plan_unavailable: "тариф больше не продаётся", fail_permission_revoked: "разрешение на списание отозвано",
    units: ["Б", "КБ", "МБ", "ГБ", "ТБ"],
    usageTitle: "Трафик", usageOf: "{u} из {q}", usageLeft: "осталось {l} · обновится {d}",
    usageTotal: "Всего: ↓ {down} · ↑ {up}", exhaustedTitle: "Трафик закончился",
    exhaustedText: "Устройства на паузе до {d}, когда начнётся новый период, или до новой покупки.",
    buyMore: "Купить ещё", perPeriod: "{q} трафика",
    devicePeriod: "За период: ↓ {down} · ↑ {up}", deviceTotal: "всего: ↓ {down} · ↑ {up}",
  },
};

const PLATFORMS = ["ios", "android", "windows", "macos", "linux"];

// The official store pages of the apps that import a config, by the protocol of the device's
// server and the platform (the bot sends the same links).
const APPS = {
  wireguard: {
    ios: [["WireGuard · App Store", "https://apps.apple.com/app/wireguard/id1441195209"]],
    android: [["WireGuard · Google Play", "https://play.google.com/store/apps/details?id=com.wireguard.android"]],
    windows: [["WireGuard for Windows", "https://www.wireguard.com/install/"]],
    macos: [["WireGuard · Mac App Store", "https://apps.apple.com/app/wireguard/id1451685025"]],
    linux: [["wireguard-tools", "https://www.wireguard.com/install/"]],
  },
  amneziawg: {
    ios: [
      ["AmneziaVPN · App Store", "https://apps.apple.com/app/amneziavpn/id1600529900"],
      ["AmneziaWG · App Store", "https://apps.apple.com/app/amneziawg/id6478942365"],
    ],
    android: [
      ["AmneziaVPN · Google Play", "https://play.google.com/store/apps/details?id=org.amnezia.vpn"],
      ["AmneziaWG · Google Play", "https://play.google.com/store/apps/details?id=org.amnezia.awg"],
    ],
    windows: [["AmneziaVPN", "https://github.com/amnezia-vpn/amnezia-client/releases"]],
    macos: [["AmneziaVPN", "https://github.com/amnezia-vpn/amnezia-client/releases"]],
    linux: [["AmneziaVPN", "https://github.com/amnezia-vpn/amnezia-client/releases"]],
  },
};

// The quickest import first: phones open the file (WireGuard) or paste the config
// (AmneziaVPN); computers open the file and show the QR code for a phone.
const IMPORT_ACTIONS = {
  wireguard: { ios: ["download", "copy"], android: ["download", "copy"] },
  amneziawg: { ios: ["copy", "download"], android: ["copy", "download"] },
};
const DESKTOP_ACTIONS = ["download", "copy", "qr"];

// A payment is looked for every few seconds for five minutes after the user is sent to pay.
const PAYMENT_POLL_MS = 3000;
const PAYMENT_WAIT_MS = 5 * 60 * 1000;
const MAX_DEVICE_NAME = 64;

const webApp = (window.Telegram && window.Telegram.WebApp) || null;
const initData = (webApp && webApp.initData) || "";
const unsafeUser = (webApp && webApp.initDataUnsafe && webApp.initDataUnsafe.user) || null;
let lang = pickLanguage(unsafeUser && unsafeUser.language_code);
const objectUrls = [];

function pickLanguage(code) {
  return code && code.toLowerCase().startsWith("en") ? "en" : "ru";
}
function t(key) { return TEXT[lang][key] || key; }
function fill(key, values) {
  let text = t(key);
  for (const [name, value] of Object.entries(values)) text = text.split("{" + name + "}").join(String(value));
  return text;
}
function $(id) { return document.getElementById(id); }
function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}
function button(text, className, onClick) {
  const el = element("button", className, text);
  el.type = "button";
  el.addEventListener("click", onClick);
  return el;
}

// `n` with the plural form of `key` ([one, other] in English, [one, few, many] in Russian).
function plural(key, n) {
  const forms = t(key);
  let form;
  if (lang === "en") form = n === 1 ? 0 : 1;
  else if (n % 10 === 1 && n % 100 !== 11) form = 0;
  else if (n % 10 >= 2 && n % 10 <= 4 && (n % 100 < 12 || n % 100 > 14)) form = 1;
  else form = 2;
  return forms[form].replace("{n}", n);
}

function formatDate(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(lang === "en" ? "en-GB" : "ru-RU", {
    year: "numeric", month: "long", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

function formatAgo(iso) {
  const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  const format = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
  const abs = Math.abs(seconds);
  if (abs < 60) return format.format(seconds, "second");
  if (abs < 3600) return format.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return format.format(Math.round(seconds / 3600), "hour");
  return format.format(Math.round(seconds / 86400), "day");
}

function formatBytes(bytes) {
  const units = t("units");
  let value = Math.max(0, Number(bytes) || 0);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  const digits = unit === 0 || value >= 10 ? 0 : 1;
  return value.toLocaleString(lang === "en" ? "en-GB" : "ru-RU", { maximumFractionDigits: digits }) + " " + units[unit];
}

// --- Telegram's chrome: theme, haptics, BackButton, MainButton, confirmations. ---

function applyTheme() {
  const root = document.documentElement;
  const params = (webApp && webApp.themeParams) || {};
  for (const [key, value] of Object.entries(params)) {
    root.style.setProperty("--tg-theme-" + key.replace(/_/g, "-"), value);
  }
  root.classList.toggle("dark", Boolean(webApp && webApp.colorScheme === "dark"));
}

// Whether the Telegram client has the Bot API `version` of the WebApp (older clients lack
// BackButton and haptics before 6.1 and showConfirm before 6.2).
function supports(version) {
  return Boolean(webApp) && (typeof webApp.isVersionAtLeast !== "function" || webApp.isVersionAtLeast(version));
}

// `kind`: "success", "error" or "warning".
function haptic(kind) {
  if (supports("6.1") && webApp.HapticFeedback) webApp.HapticFeedback.notificationOccurred(kind);
}

function hapticSelection() {
  if (supports("6.1") && webApp.HapticFeedback) webApp.HapticFeedback.selectionChanged();
}

// Asks `message` with Telegram's own dialog (the browser's outside Telegram or on a client
// without it).
function confirmAction(message) {
  return new Promise((resolve) => {
    if (supports("6.2") && typeof webApp.showConfirm === "function") webApp.showConfirm(message, (ok) => resolve(Boolean(ok)));
    else resolve(window.confirm(message));
  });
}

const mainButton = (webApp && webApp.MainButton) || null;
let mainAction = null;

// Puts the screen's main action on Telegram's MainButton (the page's own button outside
// Telegram); `null` hides it.
function setMainAction(text, action) {
  mainAction = text ? action : null;
  const fallback = $("main-action");
  if (mainButton) {
    fallback.hidden = true;
    if (text) {
      mainButton.setText(text);
      mainButton.enable();
      mainButton.show();
    } else {
      mainButton.hide();
    }
  } else {
    fallback.textContent = text || "";
    fallback.hidden = !text;
  }
}

async function runMainAction() {
  if (!mainAction) return;
  const action = mainAction;
  const fallback = $("main-action");
  fallback.disabled = true;
  if (mainButton) mainButton.showProgress(false);
  try {
    await action();
  } finally {
    fallback.disabled = false;
    if (mainButton) mainButton.hideProgress();
  }
}

// --- Screens: three tabs, and sub-screens the BackButton leaves. ---

const TABS = ["status", "plans", "keys"];
let screens = ["status"];

function current() { return screens[screens.length - 1]; }

function showScreen() {
  const screen = current();
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === screen));
  }
  for (const panel of document.querySelectorAll("[data-panel]")) {
    panel.hidden = panel.dataset.panel !== screen;
  }
  $("tabs").hidden = !TABS.includes(screen);
  document.body.dataset.screen = screen;
  const telegramBack = supports("6.1") && Boolean(webApp.BackButton);
  if (telegramBack) {
    if (screens.length > 1) webApp.BackButton.show();
    else webApp.BackButton.hide();
  }
  $("page-back").hidden = telegramBack || screens.length <= 1;
  updateMainAction();
}

function selectTab(name) {
  screens = [name];
  showScreen();
}

function pushScreen(name) {
  screens.push(name);
  showScreen();
  window.scrollTo(0, 0);
}

function back() {
  if (screens.length > 1) screens.pop();
  showScreen();
}

// The main action of the screen on show.
function updateMainAction() {
  const screen = current();
  const phase = me ? me.subscription.phase : null;
  if (screen === "plans") {
    const plan = plans.find((p) => p.id === selectedPlan);
    if (plan) setMainAction(fill("payFor", { p: priceText(plan), t: planTitle(plan) }), () => pay(plan.id));
    else setMainAction(null);
  } else if (screen === "locations") {
    const pick = locations.find((l) => l.server === movePick);
    if (pick && !pick.current) setMainAction(fill("moveTo", { l: pick.label }), () => move(pick));
    else setMainAction(null);
  } else if (screen === "status" && quotaExhausted()) {
    setMainAction(t("buyMore"), () => selectTab("plans"));
  } else if (screen === "status" && (phase === "Expired" || phase === "Pending" || endingSoon())) {
    setMainAction(t(phase === "Pending" ? "choosePlan" : "renew"), () => selectTab("plans"));
  } else if (screen === "keys" && me && phase === "Active" && me.devices.length < me.subscription.maxDevices) {
    setMainAction(t("addDevice"), addDevice);
  } else if (screen === "keys" && (phase === "Expired" || phase === "Pending")) {
    setMainAction(t("renew"), () => selectTab("plans"));
  } else {
    setMainAction(null);
  }
}

function translate() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  $("tab-status").textContent = t("status");
  $("tab-plans").textContent = t("plans");
  $("tab-keys").textContent = t("keys");
}

// `kind`: "info" (default), "success", "warning" or "error".
function notice(message, kind) {
  const el = $("notice");
  el.textContent = message || "";
  el.dataset.kind = kind || "info";
  el.hidden = !message;
}

// Shows that the initData expired, with the button that gets fresh initData from Telegram.
function sessionExpired() {
  notice("");
  $("expired").hidden = false;
}

function reopen() {
  if (webApp && typeof webApp.close === "function") webApp.close();
  else window.location.reload();
}

// Shows a failed call's message and lets the user feel it (an expired session has its own
// notice).
function fail(error) {
  haptic("error");
  if (error.code !== "init_data_expired") notice(error.message, "error");
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { Authorization: "tma " + initData });
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (_) {
    throw new Error(t("error"));
  }
  if (!response.ok) {
    let body = {};
    try { body = (await response.json()) || {}; } catch (_) { /* not JSON */ }
    const error = new Error(body.message || t("error"));
    error.status = response.status;
    error.code = body.code;
    if (error.code === "init_data_expired") sessionExpired();
    throw error;
  }
  return response;
}

// --- Status. ---

let me = null;

async function loadMe() {
  if (!initData) {
    notice(t("openInTelegram"));
    return;
  }
  try {
    me = await (await api("/api/v1/me")).json();
  } catch (error) {
    fail(error);
    return;
  }
  await showMe();
}

async function showMe() {
  if (me.user.languageCode && pickLanguage(me.user.languageCode) !== lang) {
    lang = pickLanguage(me.user.languageCode);
    translate();
    renderPlans();
  }
  const name = [me.user.firstName, me.user.lastName].filter(Boolean).join(" ");
  $("user-name").textContent = name || "wgsub VPN";
  $("user-id").textContent = "ID " + me.user.id + (me.user.username ? " · @" + me.user.username : "");
  const sub = me.subscription;
  const phase = $("phase");
  phase.textContent = t(sub.phase);
  phase.className = "phase-" + sub.phase;
  $("paid-until").textContent = formatDate(sub.paidUntil);
  const plan = plans.find((p) => p.id === sub.plan);
  $("plan").textContent = plan ? planTitle(plan) : sub.plan || "—";
  $("device-count").textContent = me.devices.length + " / " + sub.maxDevices;
  if (!planChosen && plans.some((p) => p.id === sub.plan)) selectPlan(sub.plan, false);
  showDaysLeft(sub);
  showUsage(sub);
  showRenewal(sub);
  showLocation();
  await renderDevices();
  updateMainAction();
}

// An active subscription with less than a week left: the status screen's main action renews.
function endingSoon() {
  const sub = me && me.subscription;
  return Boolean(sub && sub.phase === "Active" && sub.paidUntil
    && new Date(sub.paidUntil).getTime() - Date.now() < 7 * 86400000);
}

// The days-left bar: full at the length of the user's plan (30 days when it is not known).
function showDaysLeft(sub) {
  const box = $("days-left");
  box.hidden = sub.phase !== "Active" || !sub.paidUntil;
  if (box.hidden) return;
  const left = new Date(sub.paidUntil).getTime() - Date.now();
  const days = Math.floor(left / 86400000);
  const plan = plans.find((p) => p.id === sub.plan);
  const scale = plan ? plan.days : 30;
  $("days-left-text").textContent = days < 1 ? t("lessThanDay") : plural("daysLeft", days);
  $("days-bar").style.width = Math.max(2, Math.min(100, (100 * left) / (scale * 86400000))) + "%";
  box.dataset.level = days < 3 ? "low" : days < 7 ? "soon" : "ok";
}

// The traffic bar: used of the plan's quota this period and when it renews (the totals without
// a quota); a used-up quota gets a card that leads to buying.
function showUsage(sub) {
  const usage = sub.usage || {};
  const box = $("usage");
  const quota = usage.quotaBytes;
  const total = (usage.totalRxBytes || 0) + (usage.totalTxBytes || 0);
  box.hidden = !quota && !total;
  const totals = fill("usageTotal", { down: formatBytes(usage.totalTxBytes), up: formatBytes(usage.totalRxBytes) });
  if (quota) {
    $("usage-used").textContent = fill("usageOf", { u: formatBytes(usage.usedBytes), q: formatBytes(quota) });
    $("usage-text").textContent = fill("usageLeft", { l: formatBytes(usage.remainingBytes), d: formatDate(usage.periodEnd) })
      + " · " + totals;
    const share = Math.min(1, (usage.usedBytes || 0) / quota);
    $("usage-bar").style.width = Math.max(2, 100 * share) + "%";
    box.dataset.level = usage.exhausted || share >= 0.95 ? "low" : share >= 0.8 ? "soon" : "ok";
  } else {
    $("usage-used").textContent = formatBytes(total);
    $("usage-text").textContent = totals;
    box.dataset.level = "ok";
  }
  $("usage-bar-box").hidden = !quota;
  const card = $("quota-card");
  card.hidden = !usage.exhausted || sub.phase !== "Active";
  if (!card.hidden) $("quota-text").textContent = fill("exhaustedText", { d: formatDate(usage.periodEnd) });
}

// The quota is used up while the subscription is active: the status screen leads to buying.
function quotaExhausted() {
  const sub = me && me.subscription;
  return Boolean(sub && sub.phase === "Active" && sub.usage && sub.usage.exhausted);
}

// An expired, never paid or suspended subscription gets a card that leads to the plans.
function showRenewal(sub) {
  const card = $("renew-card");
  const titles = { Expired: "expiredTitle", Pending: "pendingTitle", Suspended: "suspendedTitle" };
  card.hidden = !titles[sub.phase];
  card.dataset.phase = sub.phase;
  if (card.hidden) return;
  $("renew-title").textContent = t(titles[sub.phase]);
  const texts = { Expired: "expiredText", Pending: "pendingText", Suspended: "suspendedText" };
  $("renew-text").textContent = fill(texts[sub.phase], { d: formatDate(sub.paidUntil) });
  $("renew").hidden = sub.phase === "Suspended";
  $("renew").textContent = t(sub.phase === "Expired" ? "renew" : "choosePlan");
}

// --- Plans and payments. ---

let plans = [];
let selectedPlan = null;
// The user picked a plan themselves (until then the current plan, or the first, is picked).
let planChosen = false;

function planTitle(plan) { return lang === "en" ? plan.titleEn : plan.titleRu; }
function priceText(plan) { return plan.price + " " + (plan.currency === "RUB" ? "₽" : plan.currency); }

async function loadPlans() {
  try {
    plans = await (await fetch("/api/v1/plans")).json();
  } catch (_) {
    return;
  }
  if (!selectedPlan && plans.length) selectedPlan = plans[0].id;
  renderPlans();
  updateMainAction();
}

function selectPlan(id, felt) {
  if (felt) {
    planChosen = true;
    if (id !== selectedPlan) hapticSelection();
  }
  selectedPlan = id;
  for (const card of document.querySelectorAll("#plan-list [data-plan]")) {
    card.setAttribute("aria-checked", String(card.dataset.plan === id));
  }
  updateMainAction();
}

function renderPlans() {
  const list = $("plan-list");
  list.replaceChildren();
  for (const plan of plans) {
    const card = element("div", "card plan");
    card.dataset.plan = plan.id;
    card.setAttribute("role", "radio");
    card.setAttribute("aria-checked", String(plan.id === selectedPlan));
    card.tabIndex = 0;
    card.addEventListener("click", () => selectPlan(plan.id, true));
    const info = element("div");
    info.append(
      element("div", "name", planTitle(plan)),
      element("div", "hint", plan.days + " " + t("days") + " · " + plan.devices + " " + t("deviceCount")
        + (plan.trafficBytes ? " · " + fill("perPeriod", { q: formatBytes(plan.trafficBytes) }) : "")),
    );
    const side = element("div", "pay-actions");
    side.append(element("strong", "price", priceText(plan)));
    if (plan.priceStars) {
      const stars = button(fill("payStars", { s: plan.priceStars }), "stars", (event) => {
        event.stopPropagation();
        payStars(plan.id, stars);
      });
      stars.dataset.stars = plan.id;
      side.append(stars);
    }
    card.append(info, side);
    list.append(card);
  }
}

async function pay(planId) {
  if (!initData) { notice(t("openInTelegram")); return; }
  const before = me ? me.subscription.paidUntil : null;
  try {
    const body = { plan: planId };
    if (buyLocation && me && buyLocation !== me.subscription.server) body.server = buyLocation;
    if ($("save-card").checked) body.saveCard = true;
    const payment = await (await api("/api/v1/payments", {
      method: "POST", body: JSON.stringify(body),
    })).json();
    // openLink opens the browser on every platform (iOS included) without leaving Telegram.
    openExternal(payment.confirmationUrl);
    watchPayment(before);
  } catch (error) {
    fail(error);
  }
}

async function payStars(planId, starsButton) {
  if (!initData) { notice(t("openInTelegram")); return; }
  starsButton.disabled = true;
  const before = me ? me.subscription.paidUntil : null;
  try {
    const invoice = await (await api("/api/v1/stars/invoice", {
      method: "POST", body: JSON.stringify({ plan: planId }),
    })).json();
    // The payment itself goes to the bot, which credits it; the page then waits for the date.
    if (webApp && typeof webApp.openInvoice === "function") {
      webApp.openInvoice(invoice.invoiceLink, (status) => {
        if (status === "paid") watchPayment(before, "starsPaid");
        else if (status === "failed") { notice(t("starsFailed"), "error"); haptic("error"); }
      });
    } else {
      window.open(invoice.invoiceLink, "_blank", "noopener");
    }
  } catch (error) {
    fail(error);
  } finally {
    starsButton.disabled = false;
  }
}

function paidLater(until, before) {
  return Boolean(until) && (!before || new Date(until).getTime() > new Date(before).getTime());
}

let paymentWatch = 0;

// Polls `/api/v1/me` until the paid-until date moves past `before`, at most PAYMENT_WAIT_MS.
function watchPayment(before, waitingKey = "paymentWaiting") {
  const watch = ++paymentWatch;
  const deadline = Date.now() + PAYMENT_WAIT_MS;
  notice(t(waitingKey), "info");
  const tick = async () => {
    if (watch !== paymentWatch) return;
    let fresh = null;
    try {
      fresh = await (await api("/api/v1/me")).json();
    } catch (error) {
      if (error.code === "init_data_expired") return;
    }
    if (watch !== paymentWatch) return;
    if (fresh && paidLater(fresh.subscription.paidUntil, before)) {
      me = fresh;
      await showMe();
      await loadRenewal();
      notice(fill("paymentReceived", { d: formatDate(fresh.subscription.paidUntil) }), "success");
      haptic("success");
    } else if (Date.now() >= deadline) {
      notice(t("paymentLate"), "warning");
      haptic("warning");
    } else {
      setTimeout(tick, PAYMENT_POLL_MS);
    }
  };
  setTimeout(tick, PAYMENT_POLL_MS);
}

// --- Automatic renewal: agreed to with the payment (`saveCard`), shown and switched off on
// the status screen. ---

let renewal = null;

async function loadRenewal() {
  if (!initData) return;
  try {
    renewal = await (await api("/api/v1/me/renewal")).json();
  } catch (error) {
    if (error.code !== "init_data_expired") notice(error.message, "error");
    return;
  }
  showRenewalCard();
}

function showRenewalCard() {
  const card = $("renewal-card");
  card.hidden = !renewal || (!renewal.enabled && !renewal.lastFailure);
  if (card.hidden) return;
  card.dataset.enabled = String(renewal.enabled);
  const state = $("renewal-state");
  if (renewal.enabled) {
    const cardTitle = renewal.card ? renewal.card.title : "";
    const shown = renewal.card && renewal.card.expires ? fill("renewalUntil", { c: cardTitle, e: renewal.card.expires }) : cardTitle;
    state.textContent = fill("renewalOn", { c: shown });
    const plan = plans.find((p) => p.id === renewal.plan);
    $("renewal-next").textContent = renewal.nextChargeAt
      ? fill("renewalNext", { d: formatDate(renewal.nextChargeAt), p: plan ? planTitle(plan) + " · " + priceText(plan) : renewal.plan || "" })
      : "";
  } else {
    state.textContent = t("renewalIsOff");
    $("renewal-next").textContent = "";
  }
  if (renewal.lastFailure) {
    const reason = TEXT[lang]["fail_" + renewal.lastFailure] || renewal.lastFailure;
    $("renewal-next").textContent = fill("renewalFailed", { r: reason });
  }
  $("renewal-off").hidden = !renewal.enabled;
}

// Switches automatic renewal off once the user confirms.
async function renewalOff() {
  if (!(await confirmAction(t("renewalOffConfirm")))) return;
  try {
    await api("/api/v1/me/renewal", { method: "DELETE" });
  } catch (error) {
    fail(error);
    return;
  }
  haptic("success");
  await loadRenewal();
  notice(t("renewalIsOff"), "success");
}

// --- Locations: where the devices are, picked when buying and changed later (a move). ---

let locations = [];
// The location picked on the plans screen (the payment moves there), and on the move screen.
let buyLocation = null;
let movePick = null;


async function loadLocations() {
  if (!initData) return;
  try {
    locations = await (await api("/api/v1/locations")).json();
  } catch (error) {
    if (error.code !== "init_data_expired") notice(error.message, "error");
    return;
  }
  showLocation();
}

// The status row, the plans' picker and the move screen.
function showLocation() {
  const current = locations.find((l) => l.current);
  $("location-row").hidden = locations.length === 0;
  $("location").textContent = current ? current.label : t("locationDefault");
  if (!buyLocation || !locations.some((l) => l.server === buyLocation && (!l.full || l.current))) {
    buyLocation = current ? current.server : null;
  }
  $("buy-location").hidden = locations.length === 0;
  $("buy-location-list").replaceChildren(...locations.map((location) => {
    const chip = locationChoice(location, "chip", location.server === buyLocation, () => {
      if (buyLocation !== location.server) hapticSelection();
      buyLocation = location.server;
      showLocation();
    });
    return chip;
  }));
  $("location-list").replaceChildren(...locations.map((location) =>
    locationChoice(location, "card location", location.server === movePick, () => {
      if (movePick !== location.server) hapticSelection();
      movePick = location.server;
      showLocation();
      updateMainAction();
    })));
}

// One location to pick: a full one (not the user's own) cannot be picked.
function locationChoice(location, className, checked, onPick) {
  const choice = element("button", className);
  choice.type = "button";
  choice.dataset.server = location.server;
  choice.setAttribute("role", "radio");
  choice.setAttribute("aria-checked", String(checked));
  const blocked = location.full && !location.current;
  choice.disabled = blocked;
  choice.append(element("span", "label", location.label));
  const notes = [];
  if (location.protocol === "amneziawg") notes.push("AmneziaWG");
  if (location.current) notes.push(t("locationCurrent"));
  if (blocked) notes.push(t("locationFull"));
  if (notes.length) choice.append(element("span", "hint note", notes.join(" · ")));
  choice.addEventListener("click", () => { if (!blocked) onPick(); });
  return choice;
}

function openLocations() {
  const current = locations.find((l) => l.current);
  movePick = current ? current.server : null;
  showLocation();
  pushScreen("locations");
}

// Moves the user's devices to `location` once they confirm that their configs change.
async function move(location) {
  const label = location.label;
  if (!(await confirmAction(fill("moveConfirm", { l: label })))) return;
  try {
    me = await (await api("/api/v1/me/location", {
      method: "PUT", body: JSON.stringify({ server: location.server }),
    })).json();
  } catch (error) {
    fail(error);
    await loadLocations();
    return;
  }
  haptic("success");
  await loadLocations();
  selectTab("status");
  await showMe();
  notice(fill("moved", { l: label }), "success");
}

// Opens `url` outside the Mini App (Telegram's openLink, or a new tab).
function openExternal(url) {
  if (webApp && typeof webApp.openLink === "function") webApp.openLink(url);
  else window.open(url, "_blank", "noopener");
}

function externalLink(label, url) {
  const link = element("a", "", label);
  link.href = url;
  link.rel = "noopener";
  link.target = "_blank";
  link.addEventListener("click", (event) => { event.preventDefault(); openExternal(url); });
  return link;
}

// --- Devices. ---

// What each ready device's card fetched: the config text, its file name and blob URLs.
const files = new Map();

function fileNameOf(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(header);
  return match ? match[1] : fallback;
}

function deviceTitle(device) {
  return device.deviceName || t("device") + " " + device.name.split("-").pop();
}

function devicePath(device) { return "/api/v1/me/peers/" + encodeURIComponent(device.name); }

async function fetchFiles(device) {
  const qr = await (await api(devicePath(device) + "/qr")).blob();
  const qrUrl = URL.createObjectURL(qr);
  objectUrls.push(qrUrl);
  const config = await api(devicePath(device) + "/config");
  const text = await config.text();
  const fileUrl = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  objectUrls.push(fileUrl);
  const entry = { text, fileName: fileNameOf(config, "wgsub.conf"), fileUrl, qrUrl };
  files.set(device.name, entry);
  return entry;
}

function downloadLink(entry) {
  const link = element("a", "download", t("download"));
  link.download = entry.fileName;
  link.href = entry.fileUrl;
  return link;
}

function copyButton(entry) {
  const copy = button(t("copy"), "copy", async () => {
    await copyText(entry.text);
    copy.textContent = t("copied");
    haptic("success");
  });
  return copy;
}

function qrImage(entry) {
  const img = element("img", "qr");
  img.alt = "QR";
  img.src = entry.qrUrl;
  return img;
}

async function renderDevice(device) {
  const card = element("div", "card device");
  card.dataset.device = device.name;
  const connected = Boolean(device.connected);
  card.dataset.connected = String(connected);
  const title = element("div", "row");
  const name = element("strong", "device-name", deviceTitle(device));
  const state = element("span", "state " + (connected ? "on" : "off"), t(connected ? "connectedNow" : "notConnected"));
  title.append(name, state);
  const stats = element("div", "hint stats");
  stats.textContent = (device.lastHandshake ? fill("lastSeen", { r: formatAgo(device.lastHandshake) }) : t("neverSeen"))
    + " · " + fill("traffic", { down: formatBytes(device.txBytes), up: formatBytes(device.rxBytes) });
  const usage = element("div", "hint device-usage");
  usage.textContent = fill("devicePeriod", { down: formatBytes(device.periodTxBytes), up: formatBytes(device.periodRxBytes) })
    + " · " + fill("deviceTotal", { down: formatBytes(device.totalTxBytes), up: formatBytes(device.totalRxBytes) });
  card.append(title, stats, usage);

  const controls = element("div", "actions");
  const label = element("label", "switch");
  const toggle = element("input", "connect");
  toggle.type = "checkbox";
  toggle.checked = device.enabled;
  toggle.addEventListener("change", async () => {
    toggle.disabled = true;
    try {
      await api(devicePath(device), { method: "PATCH", body: JSON.stringify({ enabled: toggle.checked }) });
      hapticSelection();
    } catch (error) {
      toggle.checked = !toggle.checked;
      fail(error);
    } finally {
      toggle.disabled = false;
    }
  });
  label.append(toggle, document.createTextNode(t("enabled")));
  controls.append(label, button(t("rename"), "rename secondary", () => startRename(card, device)),
    button(t("rotate"), "rotate secondary", () => rotateDevice(device)),
    button(t("delete"), "delete secondary danger", () => deleteDevice(device)));
  card.append(controls);

  if (!device.ready || me.subscription.phase !== "Active") {
    card.append(element("div", "hint wait", device.ready ? t(me.subscription.phase) : t("notReady")));
    return card;
  }
  let entry;
  try {
    entry = await fetchFiles(device);
  } catch (error) {
    fail(error);
    return card;
  }
  const actions = element("div", "actions");
  actions.append(downloadLink(entry), copyButton(entry),
    button(t("howToConnect"), "guide-open secondary", () => openGuide(device)));
  card.append(qrImage(entry), actions);
  if (device.protocol === "amneziawg") card.append(element("div", "hint apps-note", t("appsAmneziawg")));
  return card;
}

// Turns the device's name into a field with Save and Cancel.
function startRename(card, device) {
  const title = card.querySelector(".row");
  const form = element("form", "rename-form row");
  const input = element("input", "rename-input");
  input.type = "text";
  input.maxLength = MAX_DEVICE_NAME;
  input.value = device.deviceName || "";
  input.placeholder = deviceTitle(device);
  const save = element("button", "save", t("save"));
  save.type = "submit";
  const cancel = button(t("cancel"), "cancel secondary", () => form.replaceWith(title));
  form.append(input, save, cancel);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    save.disabled = true;
    try {
      await api(devicePath(device), { method: "PATCH", body: JSON.stringify({ deviceName: input.value }) });
      haptic("success");
      notice(t("renamed"), "success");
      await loadMe();
    } catch (error) {
      fail(error);
      save.disabled = false;
    }
  });
  title.replaceWith(form);
  input.focus();
}

// Deletes the device once the user confirms: its key goes and its config stops working.
async function deleteDevice(device) {
  const title = deviceTitle(device);
  if (!(await confirmAction(fill("deleteConfirm", { d: title })))) return;
  try {
    await api(devicePath(device), { method: "DELETE" });
  } catch (error) {
    fail(error);
    return;
  }
  haptic("success");
  await loadMe();
  notice(fill("deleted", { d: title }), "success");
}

// Replaces the device's key once the user confirms: the old config stops working, the new
// device (its name may differ) is ready once the operator has keyed it.
async function rotateDevice(device) {
  const title = deviceTitle(device);
  if (!(await confirmAction(fill("rotateConfirm", { d: title })))) return;
  let replacement;
  try {
    replacement = await (await api(devicePath(device) + "/rotate", { method: "POST" })).json();
  } catch (error) {
    fail(error);
    return;
  }
  haptic("success");
  await loadMe();
  notice(fill("rotated", { d: deviceTitle(replacement) }), "success");
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

async function renderDevices() {
  while (objectUrls.length) URL.revokeObjectURL(objectUrls.pop());
  files.clear();
  const list = $("device-list");
  if (!me) return;
  const cards = [];
  if (me.devices.length === 0) cards.push(element("div", "hint", t("noDevices")));
  for (const device of me.devices) cards.push(await renderDevice(device));
  list.replaceChildren(...cards);
  if (current() === "guide" && guideDevice) {
    const device = me.devices.find((d) => d.name === guideDevice);
    if (device) renderGuide(device);
    else back();
  }
}

async function addDevice() {
  try {
    await api("/api/v1/me/peers", { method: "POST", body: JSON.stringify({}) });
    haptic("success");
    await loadMe();
  } catch (error) {
    fail(error);
  }
}

// --- The connection guide. ---

let guideDevice = null;
let guidePlatform = detectPlatform();

// The user's platform as Telegram reports it; Telegram Desktop and the web versions are told
// apart by the browser's user agent.
function detectPlatform() {
  const platform = (webApp && webApp.platform) || "unknown";
  if (platform === "ios") return "ios";
  if (platform.startsWith("android")) return "android";
  if (platform === "macos") return "macos";
  if (platform === "unigram") return "windows";
  const agent = navigator.userAgent;
  if (/iPhone|iPad|iPod/.test(agent)) return "ios";
  if (/Android/.test(agent)) return "android";
  if (/Windows/.test(agent)) return "windows";
  if (/Macintosh|Mac OS X/.test(agent)) return "macos";
  return "linux";
}

function openGuide(device) {
  guideDevice = device.name;
  renderGuide(device);
  pushScreen("guide");
}

function renderGuide(device) {
  const protocol = APPS[device.protocol] ? device.protocol : "wireguard";
  $("guide-title").textContent = fill("guideTitle", { d: deviceTitle(device) });
  const chips = $("guide-platforms");
  chips.replaceChildren(...PLATFORMS.map((platform) => {
    const chip = button(t(platform), "chip", () => {
      if (platform !== guidePlatform) hapticSelection();
      guidePlatform = platform;
      renderGuide(device);
    });
    chip.dataset.platform = platform;
    chip.setAttribute("role", "radio");
    chip.setAttribute("aria-checked", String(platform === guidePlatform));
    return chip;
  }));
  const guide = $("guide");
  guide.dataset.platform = guidePlatform;
  guide.dataset.protocol = protocol;
  const install = element("div", "card step install");
  install.append(element("div", "name", t("stepInstall")));
  const links = element("div", "store-links");
  for (const [label, url] of APPS[protocol][guidePlatform]) links.append(externalLink(label, url));
  install.append(links);
  if (protocol === "amneziawg") install.append(element("div", "hint", t("appsAmneziawg")));

  const step = element("div", "card step import");
  step.append(element("div", "name", t("stepImport")));
  const entry = files.get(device.name);
  if (!entry) {
    step.append(element("div", "hint", t(device.ready ? "guideInactive" : "guideNotReady")));
  } else {
    step.append(element("p", "how", fill("import_" + protocol + "_" + guidePlatform, { f: entry.fileName })));
    const actions = element("div", "actions");
    const order = (IMPORT_ACTIONS[protocol] || {})[guidePlatform] || DESKTOP_ACTIONS;
    const qrShown = order === DESKTOP_ACTIONS;
    for (const action of order) {
      if (action === "download") actions.append(downloadLink(entry));
      else if (action === "copy") actions.append(copyButton(entry));
    }
    if (!qrShown) {
      actions.append(button(t("showQr"), "show-qr secondary", (event) => {
        event.target.remove();
        step.append(qrImage(entry));
      }));
    }
    step.append(actions);
    if (qrShown) step.append(qrImage(entry));
  }
  const on = element("div", "card step on");
  on.append(element("div", "name", t("stepOn")), element("div", "hint", t("stepOnText")));
  guide.replaceChildren(install, step, on);
}

// --- Promo codes and referrals: a code redeemed here gives free days now or a discount the
// next payment is priced with; the invite card shows the personal ref_ link and what it brought.

let inviteLink = null;

function promoMessage(error) {
  return TEXT[lang][error.code] || error.message;
}

async function loadDiscount() {
  if (!initData) return;
  try {
    const discount = await (await api("/api/v1/me/promo")).json();
    $("promo-result").textContent = discount ? fill("promoWaiting", { p: discount.percentOff }) : "";
  } catch (error) {
    if (error.code !== "init_data_expired") notice(error.message, "error");
  }
}

async function redeemPromo() {
  if (!initData) { notice(t("openInTelegram")); return; }
  const input = $("promo-code");
  const code = input.value.trim();
  if (!code) return;
  const apply = $("promo-apply");
  apply.disabled = true;
  try {
    const result = await (await api("/api/v1/me/promo", {
      method: "POST", body: JSON.stringify({ code }),
    })).json();
    input.value = "";
    $("promo-result").textContent = result.kind === "days"
      ? fill("promoDays", { d: result.days })
      : fill("promoWaiting", { p: result.percentOff });
    haptic("success");
    if (result.kind === "days") await loadMe();
  } catch (error) {
    haptic("error");
    if (error.code !== "init_data_expired") $("promo-result").textContent = promoMessage(error);
  } finally {
    apply.disabled = false;
  }
}

async function loadReferrals() {
  if (!initData) return;
  try {
    const view = await (await api("/api/v1/me/referrals")).json();
    inviteLink = view.link;
    $("invite-link").textContent = view.link || "";
    $("invite-copy").hidden = !view.link;
    $("invite-stats").textContent = fill("inviteStats", { j: view.joined, r: view.rewarded, d: view.daysEarned });
  } catch (error) {
    if (error.code !== "init_data_expired") notice(error.message, "error");
  }
}

async function copyInvite() {
  if (!inviteLink) return;
  await copyText(inviteLink);
  haptic("success");
  $("invite-copy").textContent = t("copied");
  setTimeout(() => { $("invite-copy").textContent = t("inviteCopy"); }, 1500);
}

async function start() {
  if (webApp) {
    if (typeof webApp.ready === "function") webApp.ready();
    if (typeof webApp.expand === "function") webApp.expand();
    if (typeof webApp.onEvent === "function") webApp.onEvent("themeChanged", applyTheme);
    if (supports("6.1") && webApp.BackButton) webApp.BackButton.onClick(back);
  }
  if (mainButton) mainButton.onClick(runMainAction);
  applyTheme();
  translate();
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  }
  $("main-action").addEventListener("click", runMainAction);
  $("page-back").addEventListener("click", back);
  $("refresh").addEventListener("click", loadMe);
  $("renew").addEventListener("click", () => selectTab("plans"));
  $("quota-buy").addEventListener("click", () => selectTab("plans"));
  $("location-change").addEventListener("click", openLocations);
  $("renewal-off").addEventListener("click", renewalOff);
  $("reopen").addEventListener("click", reopen);
  $("promo-apply").addEventListener("click", redeemPromo);
  $("invite-copy").addEventListener("click", copyInvite);
  if (unsafeUser) {
    $("user-name").textContent = [unsafeUser.first_name, unsafeUser.last_name].filter(Boolean).join(" ");
    $("user-id").textContent = "ID " + unsafeUser.id;
  }
  showScreen();
  loadDiscount();
  loadReferrals();
  await loadPlans();
  await loadLocations();
  await loadRenewal();
  await loadMe();
  document.body.dataset.loaded = "true";
}

start();
