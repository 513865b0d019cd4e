// The wgsub Mini App: status, plans (pay through YooKassa or in Telegram Stars with
// `Telegram.WebApp.openInvoice`), and the user's devices (QR code,
// .conf download, copy, connect switch, add device, and which app imports the config: the
// WireGuard app, or AmneziaVPN / AmneziaWG for a device on an AmneziaWG server, with the official
// store links); a promo code field and the personal referral link. Talks to the API with
// `Authorization: tma <initData>`; renders even when Telegram's WebApp API is absent. When the
// API says the initData expired (`init_data_expired`), it asks the user to reopen the app:
// Telegram signs fresh initData only when a Mini App is opened, so the button closes it
// (`Telegram.WebApp.close`) for the user to open it again from the bot (outside Telegram it
// reloads the page).
"use strict";

const TEXT = {
  en: {
    status: "Status", plans: "Plans", keys: "Keys", phase: "Status", paidUntil: "Paid until",
    plan: "Plan", devices: "Devices", refresh: "Refresh", addDevice: "Add device",
    download: "Download .conf", copy: "Copy config", copied: "Copied", connected: "Connected",
    pay: "Pay", days: "days", deviceCount: "devices", noDevices: "No devices yet.",
    payStars: "Pay {s} ⭐", starsPaid: "Paid in Stars: your subscription is being extended.",
    starsFailed: "The payment in Stars did not go through.",
    notReady: "Your key is being prepared…", openInTelegram: "Open this page from the wgsub bot in Telegram.",
    error: "Something went wrong", Pending: "Not paid", Active: "Active", Expired: "Expired",
    Suspended: "Suspended", device: "Device",
    sessionExpired: "Your session has expired. Close the app and open it again from the bot.",
    reopen: "Close and reopen",
    promoLabel: "Promo code", promoApply: "Apply", promoDays: "Code accepted: +{d} days.",
    promoWaiting: "{p}% off your next payment.", inviteTitle: "Invite friends",
    inviteCopy: "Copy link",
    inviteStats: "Joined: {j} · paid: {r} · bonus days: {d}. You get bonus days when a friend pays for the first time.",
    promo_malformed: "That is not a promo code: 3–32 Latin letters, digits, '-' or '_'.",
    promo_unknown: "There is no such promo code.", promo_disabled: "This promo code is no longer valid.",
    promo_expired: "This promo code has expired.", promo_used_up: "This promo code has been used up.",
    promo_already_redeemed: "You have already used this promo code.",
    promo_discount_waiting: "You already have a discount waiting for your next payment.",
    appsWireguard: "Import the config into the WireGuard app:",
    appsAmneziawg: "This is an AmneziaWG config: import it into the AmneziaVPN or AmneziaWG app (the WireGuard app cannot connect with it).",
    platformApple: "iPhone, iPad, Mac", platformAndroid: "Android",
    platformDesktop: "Windows, macOS, Linux", or: "or",
  },
  ru: {
    status: "Статус", plans: "Тарифы", keys: "Ключи", phase: "Статус", paidUntil: "Оплачено до",
    plan: "Тариф", devices: "Устройства", refresh: "Обновить", addDevice: "Добавить устройство",
    download: "Скачать .conf", copy: "Скопировать конфиг", copied: "Скопировано", connected: "Подключено",
    pay: "Оплатить", days: "дн.", deviceCount: "устр.", noDevices: "Устройств пока нет.",
    payStars: "Оплатить {s} ⭐", starsPaid: "Оплачено звёздами: подписка продлевается.",
    starsFailed: "Оплата звёздами не прошла.",
    notReady: "Ключ готовится…", openInTelegram: "Откройте эту страницу из бота wgsub в Telegram.",
    error: "Что-то пошло не так", Pending: "Не оплачено", Active: "Активна", Expired: "Истекла",
    Suspended: "Приостановлена", device: "Устройство",
    sessionExpired: "Сессия истекла. Закройте приложение и откройте его снова из бота.",
    reopen: "Закрыть и открыть снова",
    promoLabel: "Промокод", promoApply: "Применить", promoDays: "Промокод принят: +{d} дн.",
    promoWaiting: "Скидка {p}% на следующую оплату.", inviteTitle: "Пригласите друзей",
    inviteCopy: "Скопировать ссылку",
    inviteStats: "Пришли: {j} · оплатили: {r} · бонусных дней: {d}. Бонусные дни начисляются, когда друг впервые оплатит подписку.",
    promo_malformed: "Это не промокод: 3–32 латинские буквы, цифры, «-» или «_».",
    promo_unknown: "Такого промокода нет.", promo_disabled: "Этот промокод больше не действует.",
    promo_expired: "Срок действия промокода истёк.", promo_used_up: "Промокод исчерпан.",
    promo_already_redeemed: "Вы уже использовали этот промокод.",
    promo_discount_waiting: "У вас уже есть скидка на следующую оплату.",
    appsWireguard: "Импортируйте конфиг в приложение WireGuard:",
    appsAmneziawg: "Это конфиг AmneziaWG: импортируйте его в приложение AmneziaVPN или AmneziaWG (приложение WireGuard с ним не подключится).",
    platformApple: "iPhone, iPad, Mac", platformAndroid: "Android",
    platformDesktop: "Windows, macOS, Linux", or: "или",
  },
};

// The apps that import a device's config, by the protocol of its server: per platform, the
// official store pages (the same links the bot sends).
const APPS = {
  wireguard: [
    ["platformApple", [["App Store", "https://apps.apple.com/app/wireguard/id1441195209"]]],
    ["platformAndroid", [["Google Play", "https://play.google.com/store/apps/details?id=com.wireguard.android"]]],
    ["platformDesktop", [["wireguard.com", "https://www.wireguard.com/install/"]]],
  ],
  amneziawg: [
    ["platformApple", [
      ["AmneziaVPN", "https://apps.apple.com/app/amneziavpn/id1600529900"],
      ["AmneziaWG", "https://apps.apple.com/app/amneziawg/id6478942365"],
    ]],
    ["platformAndroid", [
      ["AmneziaVPN", "https://play.google.com/store/apps/details?id=org.amnezia.vpn"],
      ["AmneziaWG", "https://play.google.com/store/apps/details?id=org.amnezia.awg"],
    ]],
    ["platformDesktop", [["AmneziaVPN", "https://github.com/amnezia-vpn/amnezia-client/releases"]]],
  ],
};

const webApp = (window.Telegram && window.Telegram.WebApp) || null;
const initData = (webApp && webApp.initData) || "";
const unsafeUser = (webApp && webApp.initDataUnsafe && webApp.initDataUnsafe.user) || null;
let lang = pickLanguage(unsafeUser && unsafeUser.language_code);
const objectUrls = [];

function pickLanguage(code) {
  return code && code.toLowerCase().startsWith("en") ? "en" : "ru";
}
function t(key) { return TEXT[lang][key] || key; }
function $(id) { return document.getElementById(id); }

function applyTheme() {
  const root = document.documentElement;
  const params = (webApp && webApp.themeParams) || {};
  for (const [key, value] of Object.entries(params)) {
    root.style.setProperty("--tg-theme-" + key.replace(/_/g, "-"), value);
  }
  root.classList.toggle("dark", Boolean(webApp && webApp.colorScheme === "dark"));
}

function translate() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  $("tab-status").textContent = t("status");
  $("tab-plans").textContent = t("plans");
  $("tab-keys").textContent = t("keys");
}

function notice(message) {
  const el = $("notice");
  el.textContent = message || "";
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

// Shows a failed call's message (an expired session has its own notice).
function fail(error) {
  if (error.code !== "init_data_expired") notice(error.message);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { Authorization: "tma " + initData });
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({}, options, { headers }));
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

function formatDate(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(lang === "en" ? "en-GB" : "ru-RU", {
    year: "numeric", month: "long", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

function selectTab(name) {
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll("[data-panel]")) {
    panel.hidden = panel.dataset.panel !== name;
  }
}

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
  notice("");
  if (me.user.languageCode) { lang = pickLanguage(me.user.languageCode); translate(); }
  const name = [me.user.firstName, me.user.lastName].filter(Boolean).join(" ");
  $("user-name").textContent = name || "wgsub VPN";
  $("user-id").textContent = "ID " + me.user.id + (me.user.username ? " · @" + me.user.username : "");
  const phase = $("phase");
  phase.textContent = t(me.subscription.phase);
  phase.className = "phase-" + me.subscription.phase;
  $("paid-until").textContent = formatDate(me.subscription.paidUntil);
  $("plan").textContent = me.subscription.plan || "—";
  $("device-count").textContent = me.devices.length + " / " + me.subscription.maxDevices;
  renderDevices();
}

async function loadPlans() {
  const list = $("plan-list");
  let plans;
  try {
    plans = await (await fetch("/api/v1/plans")).json();
  } catch (_) {
    return;
  }
  list.replaceChildren();
  for (const plan of plans) {
    const card = document.createElement("div");
    card.className = "card plan";
    const info = document.createElement("div");
    const title = document.createElement("div");
    title.className = "name";
    title.textContent = lang === "en" ? plan.titleEn : plan.titleRu;
    const detail = document.createElement("div");
    detail.className = "hint";
    detail.textContent = plan.days + " " + t("days") + " · " + plan.devices + " " + t("deviceCount");
    info.append(title, detail);
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.plan = plan.id;
    button.textContent = t("pay") + " " + plan.price + " " + (plan.currency === "RUB" ? "₽" : plan.currency);
    button.addEventListener("click", () => pay(plan.id, button));
    const actions = document.createElement("div");
    actions.className = "pay-actions";
    actions.append(button);
    if (plan.priceStars) {
      const stars = document.createElement("button");
      stars.type = "button";
      stars.dataset.stars = plan.id;
      stars.textContent = t("payStars").replace("{s}", plan.priceStars);
      stars.addEventListener("click", () => payStars(plan.id, stars));
      actions.append(stars);
    }
    card.append(info, actions);
    list.append(card);
  }
}

async function pay(planId, button) {
  if (!initData) { notice(t("openInTelegram")); return; }
  button.disabled = true;
  try {
    const payment = await (await api("/api/v1/payments", {
      method: "POST", body: JSON.stringify({ plan: planId }),
    })).json();
    // openLink opens the browser on every platform (iOS included) without leaving Telegram.
    openExternal(payment.confirmationUrl);
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
  }
}

async function payStars(planId, button) {
  if (!initData) { notice(t("openInTelegram")); return; }
  button.disabled = true;
  try {
    const invoice = await (await api("/api/v1/stars/invoice", {
      method: "POST", body: JSON.stringify({ plan: planId }),
    })).json();
    // The payment itself goes to the bot, which credits it; refresh the status after it.
    if (webApp && typeof webApp.openInvoice === "function") {
      webApp.openInvoice(invoice.invoiceLink, (status) => {
        if (status === "paid") { notice(t("starsPaid")); setTimeout(loadMe, 2000); }
        else if (status === "failed") notice(t("starsFailed"));
      });
    } else {
      window.open(invoice.invoiceLink, "_blank", "noopener");
    }
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
  }
}

// Opens `url` outside the Mini App (Telegram's openLink, or a new tab).
function openExternal(url) {
  if (webApp && typeof webApp.openLink === "function") webApp.openLink(url);
  else window.open(url, "_blank", "noopener");
}

// Which app imports the config of a device on a `protocol` server, with the store links.
function renderAppHint(protocol) {
  const known = APPS[protocol] ? protocol : "wireguard";
  const hint = document.createElement("div");
  hint.className = "apps hint";
  hint.dataset.protocol = known;
  const intro = document.createElement("div");
  intro.className = "apps-intro";
  intro.textContent = t(known === "amneziawg" ? "appsAmneziawg" : "appsWireguard");
  hint.append(intro);
  for (const [platform, links] of APPS[known]) {
    const row = document.createElement("div");
    row.append(document.createTextNode(t(platform) + " — "));
    links.forEach(([label, url], i) => {
      if (i > 0) row.append(document.createTextNode(" " + t("or") + " "));
      const link = document.createElement("a");
      link.href = url;
      link.textContent = label;
      link.rel = "noopener";
      link.target = "_blank";
      link.addEventListener("click", (event) => { event.preventDefault(); openExternal(url); });
      row.append(link);
    });
    hint.append(row);
  }
  return hint;
}

function fileNameOf(response, fallback) {
  const header = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(header);
  return match ? match[1] : fallback;
}

async function renderDevice(device) {
  const card = document.createElement("div");
  card.className = "card device";
  card.dataset.device = device.name;
  const title = document.createElement("div");
  title.className = "row";
  const name = document.createElement("strong");
  name.textContent = device.deviceName || t("device") + " " + device.name.split("-").pop();
  const seen = document.createElement("span");
  seen.className = "hint";
  seen.textContent = device.lastHandshake ? formatDate(device.lastHandshake) : "";
  title.append(name, seen);
  card.append(title);
  const actions = document.createElement("div");
  actions.className = "actions";
  const label = document.createElement("label");
  label.className = "switch";
  const toggle = document.createElement("input");
  toggle.type = "checkbox";
  toggle.checked = device.enabled;
  toggle.className = "connect";
  toggle.addEventListener("change", async () => {
    toggle.disabled = true;
    try {
      await api("/api/v1/me/peers/" + encodeURIComponent(device.name), {
        method: "PATCH", body: JSON.stringify({ enabled: toggle.checked }),
      });
    } catch (error) {
      toggle.checked = !toggle.checked;
      fail(error);
    } finally {
      toggle.disabled = false;
    }
  });
  label.append(toggle, document.createTextNode(t("connected")));
  actions.append(label);
  if (!device.ready || me.subscription.phase !== "Active") {
    const wait = document.createElement("div");
    wait.className = "hint";
    wait.textContent = device.ready ? t(me.subscription.phase) : t("notReady");
    card.append(wait, actions);
    return card;
  }
  const base = "/api/v1/me/peers/" + encodeURIComponent(device.name);
  const img = document.createElement("img");
  img.className = "qr";
  img.alt = "QR";
  card.append(img);
  try {
    const qr = await (await api(base + "/qr")).blob();
    const url = URL.createObjectURL(qr);
    objectUrls.push(url);
    img.src = url;
    const config = await api(base + "/config");
    const text = await config.text();
    const link = document.createElement("a");
    link.className = "download";
    link.textContent = t("download");
    link.download = fileNameOf(config, "wgsub.conf");
    const fileUrl = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    objectUrls.push(fileUrl);
    link.href = fileUrl;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = t("copy");
    copy.addEventListener("click", async () => {
      await copyText(text);
      copy.textContent = t("copied");
    });
    actions.append(link, copy);
  } catch (error) {
    fail(error);
  }
  card.append(actions, renderAppHint(device.protocol));
  return card;
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
  const list = $("device-list");
  list.replaceChildren();
  if (!me) return;
  if (me.devices.length === 0) {
    const empty = document.createElement("div");
    empty.className = "hint";
    empty.textContent = t("noDevices");
    list.append(empty);
  }
  for (const device of me.devices) list.append(await renderDevice(device));
  $("add-device").hidden = me.subscription.phase !== "Active" || me.devices.length >= me.subscription.maxDevices;
}

async function addDevice() {
  const button = $("add-device");
  button.disabled = true;
  try {
    await api("/api/v1/me/peers", { method: "POST", body: JSON.stringify({}) });
    await loadMe();
  } catch (error) {
    fail(error);
  } finally {
    button.disabled = false;
  }
}

// Promo codes and referrals: a code redeemed here gives free days now or a discount the next
// payment is priced with; the invite card shows the personal ref_ link and what it brought.
let inviteLink = null;

function promoMessage(error) {
  return TEXT[lang][error.code] || error.message;
}

async function loadDiscount() {
  if (!initData) return;
  try {
    const discount = await (await api("/api/v1/me/promo")).json();
    $("promo-result").textContent = discount ? t("promoWaiting").replace("{p}", discount.percentOff) : "";
  } catch (error) {
    if (error.code !== "init_data_expired") notice(error.message);
  }
}

async function redeemPromo() {
  if (!initData) { notice(t("openInTelegram")); return; }
  const input = $("promo-code");
  const code = input.value.trim();
  if (!code) return;
  const button = $("promo-apply");
  button.disabled = true;
  try {
    const result = await (await api("/api/v1/me/promo", {
      method: "POST", body: JSON.stringify({ code }),
    })).json();
    input.value = "";
    $("promo-result").textContent = result.kind === "days"
      ? t("promoDays").replace("{d}", result.days)
      : t("promoWaiting").replace("{p}", result.percentOff);
    if (result.kind === "days") await loadMe();
  } catch (error) {
    if (error.code !== "init_data_expired") $("promo-result").textContent = promoMessage(error);
  } finally {
    button.disabled = false;
  }
}

async function loadReferrals() {
  if (!initData) return;
  try {
    const view = await (await api("/api/v1/me/referrals")).json();
    inviteLink = view.link;
    $("invite-link").textContent = view.link || "";
    $("invite-copy").hidden = !view.link;
    $("invite-stats").textContent = t("inviteStats")
      .replace("{j}", view.joined).replace("{r}", view.rewarded).replace("{d}", view.daysEarned);
  } catch (error) {
    if (error.code !== "init_data_expired") notice(error.message);
  }
}

async function copyInvite() {
  if (!inviteLink) return;
  await copyText(inviteLink);
  $("invite-copy").textContent = t("copied");
  setTimeout(() => { $("invite-copy").textContent = t("inviteCopy"); }, 1500);
}

function start() {
  if (webApp) {
    if (typeof webApp.ready === "function") webApp.ready();
    if (typeof webApp.expand === "function") webApp.expand();
  }
  applyTheme();
  translate();
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => selectTab(tab.dataset.tab));
  }
  $("refresh").addEventListener("click", loadMe);
  $("add-device").addEventListener("click", addDevice);
  $("reopen").addEventListener("click", reopen);
  $("promo-apply").addEventListener("click", redeemPromo);
  $("invite-copy").addEventListener("click", copyInvite);
  if (unsafeUser) {
    $("user-name").textContent = [unsafeUser.first_name, unsafeUser.last_name].filter(Boolean).join(" ");
    $("user-id").textContent = "ID " + unsafeUser.id;
  }
  loadPlans();
  loadDiscount();
  loadReferrals();
  loadMe().then(() => { document.body.dataset.loaded = "true"; });
}

start();
