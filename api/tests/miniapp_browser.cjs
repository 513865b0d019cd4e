// Drives the Mini App in headless Chromium (playwright-core) against a running wgsub-api, with a
// stubbed window.Telegram.WebApp (validly signed initData, theme, platform) that records what
// the app asks of Telegram: BackButton and MainButton calls, haptic feedback, confirmations,
// links and invoices opened; it fires `themeChanged` on demand.
//
// Users (set up by api/tests/api_http.rs): `active` (two devices: a connected WireGuard phone
// with traffic, an AmneziaWG laptop never seen), `expired` (a device, paid time over), `pending`
// (never paid), `ending` (one day left), `adder` (one device of two), `mover` (on the default
// server), `quota` (40 of the plan's 50 GB used this period), `exhausted` (all 50 used: paused).
// Locations offered:
// `de-1` (Frankfurt, Germany), `nl-1` (full), `awg` (Finland, AmneziaWG). Scenarios:
// - payment: the MainButton pays for the picked plan in the picked location (the request
//   carries it), the page polls until the webhook (sent by the Rust side on request) moves the
//   paid-until date and says so; a second payment that never arrives ends, after the bounded
//   wait (the page's clock fast-forwarded), in a message that says so;
// - every screen (status with days left, plans, keys, the connection guide, locations, the
//   expired and the never-paid status) in the light and the dark theme and in English and
//   Russian, with screenshots; `themeChanged` while open; BackButton in and out of sub-screens;
// - a move: a full location cannot be picked, a declined confirmation changes nothing, a
//   confirmed one moves and says that the configs changed;
// - automatic renewal: agreed to with the first payment (the request carries saveCard; the
//   Rust side's YooKassa then reports the card saved), shown on the status screen, switched off
//   after a confirmation (a declined one keeps it);
// - the data quota in both themes and languages, with screenshots: the plan's traffic, the
//   usage bar (used of the quota, what is left, the totals), each device's period and total
//   traffic, and the used-up state whose card and MainButton lead to the plans;
// - a new key and delete, each after a confirmation (a declined delete keeps the device);
// - the guide on every platform for both protocols (store links, the quickest import first);
// - add a device with the MainButton; rename (a 200-character name refused with the API's
//   message and an error haptic, then a good one); Stars (an invoice that fails, one that is
//   paid); a promo code that does not exist; initData signed longer ago than the API accepts
//   (the app asks Telegram to close it for fresh initData).
// Screenshots go to the artifacts directory. Exits non-zero on any failure.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const readline = require("readline");

function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
}

const { chromium } = require(path.join(need("WGSUB_NODE_MODULES"), "playwright-core"));
const base = need("WGSUB_MINIAPP_BASE");
// {"active": {"en": {"initData", "user"}, "ru": {...}}, "expired": ..., "pending": ..., "adder": ...}
const USERS = JSON.parse(need("WGSUB_USERS_JSON"));
const staleInitData = need("WGSUB_STALE_INIT_DATA");
const artifacts = need("WGSUB_TEST_ARTIFACTS");

// Requests to the Rust side (stdout "@@<request>", the answer is a line on stdin).
const answers = [];
let waiting = null;
const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (waiting) { const resolve = waiting; waiting = null; resolve(line); } else answers.push(line);
});
function ask(request) {
  process.stdout.write(`@@${request}\n`);
  return new Promise((resolve) => {
    if (answers.length) resolve(answers.shift());
    else waiting = resolve;
  });
}

const THEMES = {
  light: { bg_color: "#ffffff", text_color: "#000000", hint_color: "#707579", link_color: "#2481cc",
    button_color: "#2481cc", button_text_color: "#ffffff", secondary_bg_color: "#f4f4f5" },
  dark: { bg_color: "#212121", text_color: "#ffffff", hint_color: "#aaaaaa", link_color: "#8774e1",
    button_color: "#8774e1", button_text_color: "#ffffff", secondary_bg_color: "#181818" },
};
const BACKGROUND = { light: "rgb(255, 255, 255)", dark: "rgb(33, 33, 33)" };

// What the page must say, per language.
const SAY = {
  en: {
    Active: "Active", Expired: "Expired", Pending: "Not paid", pay: "Pay 199.00 ₽ · Month",
    stars: "Pay 150 ⭐", renew: "Renew", choose: "Choose a plan", addDevice: "Add device",
    daysLeft: (n) => `${n} ${n === 1 ? "day" : "days"} left`, expiredTitle: "Your subscription has expired",
    pendingTitle: "No subscription yet", connected: "Connected", notConnected: "Not connected",
    never: "No handshake yet", install: "1. Install the app", copied: "Copied",
    waiting: "Waiting for your payment", received: "Payment received: paid until ",
    late: "The payment has not arrived yet", starsFailed: "The payment in Stars did not go through.",
    starsPaid: "Paid in Stars: waiting", promoUnknown: "There is no such promo code.",
    guideTitle: "Connect “Phone”", notReady: "Your key is being prepared…", traffic: "↓ 1.5 MB · ↑ 342 KB",
    frankfurt: "🇩🇪 Germany · Frankfurt", full: "Full", current: "Current", locationDefault: "Default", moveTo: "Move to ",
    moveConfirm: "Their configs change", moved: "Your configs changed",
    renewalOn: "On: Visa •••• 4242, valid until 12/27", renewalOff: "Automatic renewal is off.",
    deleteConfirm: "Its config stops working at once", rotateConfirm: "The current config stops working",
    deleted: "“Device 2” is deleted.", rotated: "New key made",
  },
  ru: {
    Active: "Активна", Expired: "Истекла", Pending: "Не оплачено", pay: "Оплатить 199.00 ₽ · Месяц",
    stars: "Оплатить 150 ⭐", renew: "Продлить", choose: "Выбрать тариф", addDevice: "Добавить устройство",
    daysLeft: (n) => {
      const form = n % 10 === 1 && n % 100 !== 11 ? "день" : n % 10 >= 2 && n % 10 <= 4 && (n % 100 < 12 || n % 100 > 14) ? "дня" : "дней";
      return `${form === "день" ? "Остался" : "Осталось"} ${n} ${form}`;
    },
    expiredTitle: "Подписка закончилась", pendingTitle: "Подписки пока нет", connected: "Подключено",
    notConnected: "Не подключено", never: "Рукопожатий ещё не было", install: "1. Установите приложение",
    copied: "Скопировано", guideTitle: "Подключить «Phone»", notReady: "Ключ готовится…",
    traffic: "↓ 1,5 МБ · ↑ 342 КБ", frankfurt: "🇩🇪 Германия · Франкфурт", full: "Мест нет", current: "Текущая",
    renewalOn: "Включено: Visa •••• 4242, действует до 12/27",
  },
};

// The official store links per protocol and platform, and a phrase of the quickest import.
const STORE = {
  wireguard: {
    ios: ["https://apps.apple.com/app/wireguard/id1441195209"],
    android: ["https://play.google.com/store/apps/details?id=com.wireguard.android"],
    windows: ["https://www.wireguard.com/install/"],
    macos: ["https://apps.apple.com/app/wireguard/id1451685025"],
    linux: ["https://www.wireguard.com/install/"],
  },
  amneziawg: {
    ios: ["https://apps.apple.com/app/amneziavpn/id1600529900", "https://apps.apple.com/app/amneziawg/id6478942365"],
    android: ["https://play.google.com/store/apps/details?id=org.amnezia.vpn", "https://play.google.com/store/apps/details?id=org.amnezia.awg"],
    windows: ["https://github.com/amnezia-vpn/amnezia-client/releases"],
    macos: ["https://github.com/amnezia-vpn/amnezia-client/releases"],
    linux: ["https://github.com/amnezia-vpn/amnezia-client/releases"],
  },
};
const IMPORT = {
  wireguard: {
    ios: ["Share → WireGuard", "download"], android: ["Import from file or archive", "download"],
    windows: ["Import tunnel(s) from file", "download"], macos: ["Import tunnel(s) from file", "download"],
    linux: ["sudo wg-quick up ./wgsub-Phone.conf", "download"],
  },
  amneziawg: {
    ios: ["open AmneziaVPN, tap + and paste it", "copy"], android: ["open AmneziaVPN, tap + and paste it", "copy"],
    windows: ["in AmneziaVPN add a connection from the file", "download"],
    macos: ["in AmneziaVPN add a connection from the file", "download"],
    linux: ["in AmneziaVPN add a connection from the file", "download"],
  },
};

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `miniapp-${name}.png`), fullPage: true });
}

// Opens the Mini App in a fresh browser with Telegram.WebApp stubbed and runs `steps(page)`;
// fails on any page error.
async function withMiniApp(options, steps) {
  const { theme = "light", who, initData = who.initData, platform = "ios", userAgent, clock = false, version = "8.0" } = options;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "wgsub-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: need("WGSUB_CHROMIUM"),
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 400, height: 900 },
    userAgent,
  });
  try {
    // No network: Telegram's script is unavailable, the stub below stands in for it.
    await context.route("https://telegram.org/**", (route) => route.abort());
    await context.addInitScript(({ initData, user, params, scheme, platform, version }) => {
      const calls = [];
      const handlers = {};
      window.__calls = calls;
      window.__opened = [];
      window.__closed = 0;
      window.__confirmAnswer = true;
      window.__invoiceStatus = "paid";
      const chromeButton = (kind) => {
        const b = {
          isVisible: false, isActive: true, isProgressVisible: false, text: "", handlers: [],
          show() { b.isVisible = true; calls.push(`${kind}.show`); return b; },
          hide() { b.isVisible = false; calls.push(`${kind}.hide`); return b; },
          setText(text) { b.text = text; return b; },
          enable() { b.isActive = true; return b; },
          disable() { b.isActive = false; return b; },
          showProgress() { b.isProgressVisible = true; return b; },
          hideProgress() { b.isProgressVisible = false; return b; },
          onClick(handler) { b.handlers.push(handler); return b; },
          offClick(handler) { b.handlers = b.handlers.filter((h) => h !== handler); return b; },
          // What Telegram does when the user taps it.
          tap() {
            if (!b.isVisible || !b.isActive) throw new Error(`${kind} tapped while hidden or inactive`);
            calls.push(`${kind}.tap`);
            for (const handler of b.handlers) handler();
          },
        };
        return b;
      };
      window.Telegram = { WebApp: {
        initData, initDataUnsafe: { user }, themeParams: params, colorScheme: scheme, platform,
        version,
        isVersionAtLeast(wanted) {
          const [major, minor = 0] = String(wanted).split(".").map(Number);
          const [haveMajor, haveMinor = 0] = version.split(".").map(Number);
          return major < haveMajor || (major === haveMajor && minor <= haveMinor);
        },
        ready() {}, expand() {},
        openLink(url) { window.__opened.push(url); },
        close() { window.__closed += 1; },
        onEvent(name, handler) { (handlers[name] = handlers[name] || []).push(handler); },
        offEvent(name, handler) { handlers[name] = (handlers[name] || []).filter((h) => h !== handler); },
        BackButton: chromeButton("BackButton"),
        MainButton: chromeButton("MainButton"),
        HapticFeedback: {
          notificationOccurred(type) { calls.push(`haptic:${type}`); },
          impactOccurred(style) { calls.push(`impact:${style}`); },
          selectionChanged() { calls.push("haptic:selection"); },
        },
        showConfirm(message, callback) {
          calls.push(`confirm:${message}`);
          setTimeout(() => callback(window.__confirmAnswer), 0);
        },
        openInvoice(url, callback) {
          calls.push(`invoice:${url}`);
          setTimeout(() => callback(window.__invoiceStatus), 0);
        },
      } };
      // Telegram changing the theme while the app is open.
      window.__fire = (name, newParams, newScheme) => {
        const app = window.Telegram.WebApp;
        if (newParams) app.themeParams = newParams;
        if (newScheme) app.colorScheme = newScheme;
        for (const handler of handlers[name] || []) handler();
      };
    }, { initData, user: who.user, params: THEMES[theme], scheme: theme, platform, version });
    const page = context.pages()[0] || (await context.newPage());
    if (clock) await page.clock.install();
    const errors = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    await page.goto(base + "/miniapp/");
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 15000 });
    await steps(page);
    check(errors.length === 0, `no page errors: ${errors.join("; ")}`);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

const calls = (page) => page.evaluate(() => window.__calls.slice());
const mainButton = (page) => page.evaluate(() => {
  const b = window.Telegram.WebApp.MainButton;
  return { visible: b.isVisible, text: b.text };
});
const backVisible = (page) => page.evaluate(() => window.Telegram.WebApp.BackButton.isVisible);
const tapMain = (page) => page.evaluate(() => window.Telegram.WebApp.MainButton.tap());
const tapBack = (page) => page.evaluate(() => window.Telegram.WebApp.BackButton.tap());
const clearCalls = (page) => page.evaluate(() => { window.__calls.length = 0; });

async function expectMain(page, text, where) {
  await page.waitForFunction((text) => {
    const b = window.Telegram.WebApp.MainButton;
    return text === null ? !b.isVisible : b.isVisible && b.text === text;
  }, text, { timeout: 5000 }).catch(async () => {
    throw new Error(`${where}: MainButton should be ${text === null ? "hidden" : `"${text}"`}, is ${JSON.stringify(await mainButton(page))}`);
  });
  check(await page.isHidden("#main-action"), `${where}: the page's own main button is hidden inside Telegram`);
}

async function expectNotice(page, text, kind) {
  await page.waitForFunction(({ text, kind }) => {
    const el = document.getElementById("notice");
    return !el.hidden && el.textContent.includes(text) && el.dataset.kind === kind;
  }, { text, kind }, { timeout: 15000 }).catch(async () => {
    throw new Error(`the notice should say "${text}" (${kind}), says "${await page.textContent("#notice")}"`);
  });
}

async function expectHaptic(page, kind) {
  const seen = await calls(page);
  check(seen.includes(`haptic:${kind}`), `haptic ${kind} expected, calls: ${seen.join(", ")}`);
}

async function background(page) {
  return page.evaluate(() => getComputedStyle(document.body).backgroundColor);
}

// The user's paid-until date as the API reports it.
async function paidUntil(page) {
  return page.evaluate(async () => {
    const me = await (await fetch("/api/v1/me", { headers: { Authorization: "tma " + window.Telegram.WebApp.initData } })).json();
    return new Date(me.subscription.paidUntil).getTime();
  });
}

// The user's /api/v1/me and /api/v1/locations as the API answers them.
async function fromApi(page, path) {
  return page.evaluate(async (path) => (await fetch(path, {
    headers: { Authorization: "tma " + window.Telegram.WebApp.initData },
  })).json(), path);
}

// The user's days left as the API reports them (what the indicator must show).
async function daysLeft(page) {
  return Math.floor(((await paidUntil(page)) - (await page.evaluate(() => Date.now()))) / 86400000);
}

// The MainButton pays for the picked plan; the page waits for the webhook's new date, then a
// payment that never arrives ends in a message after the bounded wait.
async function payment() {
  await withMiniApp({ who: USERS.active.en, clock: true }, async (page) => {
    const before = await paidUntil(page);
    await expectMain(page, null, "status of an active user");
    await page.click("#tab-plans");
    check(await page.getAttribute('[data-plan="month"]', "aria-checked") === "true", "the user's plan is picked");
    await expectMain(page, SAY.en.pay, "plans");
    check(await page.isVisible("#buy-location"), "a location can be picked when buying");
    check(await page.isDisabled('#buy-location-list [data-server="nl-1"]'), "a full location cannot be picked");
    check((await page.getAttribute('#buy-location-list [data-server="de-1"]', "aria-checked")) === "false", "nothing is picked on the default server");
    await page.click('#buy-location-list [data-server="de-1"]');
    check((await page.getAttribute('#buy-location-list [data-server="de-1"]', "aria-checked")) === "true", "Germany is picked");
    check(await page.isHidden("#renewal-card"), "no renewal before a card is saved");
    await page.check("#save-card");
    const sent = [];
    page.on("request", (request) => {
      if (request.url().endsWith("/api/v1/payments")) sent.push(JSON.parse(request.postData()));
    });
    await tapMain(page);
    await page.waitForFunction(() => window.__opened.length === 1, null, { timeout: 10000 });
    const opened = await page.evaluate(() => window.__opened[0]);
    check(opened.startsWith("https://yoomoney.example/"), `openLink got the confirmation URL: ${opened}`);
    check(JSON.stringify(sent) === JSON.stringify([{ plan: "month", server: "de-1", saveCard: true }]),
      `the payment carries the location and the consent to save the card: ${JSON.stringify(sent)}`);
    check((await fromApi(page, "/api/v1/me")).subscription.server === "de-1", "the payment moved the user to Germany");
    await expectNotice(page, SAY.en.waiting, "info");
    await shot(page, "payment-waiting");
    check((await ask("webhook")) === "200", "the webhook was applied");
    await expectNotice(page, SAY.en.received, "success");
    await expectHaptic(page, "success");
    const after = await paidUntil(page);
    check(after > before, `paid-until moved: ${before} → ${after}`);
    const shown = await page.textContent("#paid-until");
    check((await page.textContent("#notice")).includes(shown), "the message names the new date");
    check((await page.textContent("#renewal-state")) === SAY.en.renewalOn, `automatic renewal shows the saved card: ${await page.textContent("#renewal-state")}`);
    await shot(page, "payment-received");

    await clearCalls(page);
    await tapMain(page);
    await page.waitForFunction(() => window.__opened.length === 2, null, { timeout: 10000 });
    await expectNotice(page, SAY.en.waiting, "info");
    await page.clock.fastForward("05:05");
    await expectNotice(page, SAY.en.late, "warning");
    await expectHaptic(page, "warning");
    check((await paidUntil(page)) === after, "nothing moved without a payment");
    await shot(page, "payment-late");
    console.log("miniapp payment polling: ok");
  });
}

// Status, plans, keys and the guide of the active user in `theme` and `lang`, on `platform`.
async function screens(theme, lang, platform, expectPlatform, userAgent) {
  const say = SAY[lang];
  await withMiniApp({ theme, who: USERS.active[lang], platform, userAgent }, async (page) => {
    const tag = `${theme}-${lang}`;
    check((await page.getAttribute("html", "lang")) === lang, `the app speaks ${lang}`);
    check((await background(page)) === BACKGROUND[theme], `background follows the ${theme} theme`);
    check((await page.textContent("#phase")) === say.Active, "status shows Active");
    const days = await daysLeft(page);
    const shown = await page.textContent("#days-left-text");
    check(shown === say.daysLeft(days), `days left: "${shown}", expected "${say.daysLeft(days)}"`);
    check(await page.isHidden("#renew-card"), "no renewal card while active");
    check(!(await backVisible(page)), "no BackButton on a tab");
    await expectMain(page, null, `${tag} status`);
    const places = await fromApi(page, "/api/v1/locations");
    const germany = places.find((l) => l.server === "de-1");
    check(germany.label === say.frankfurt, `the API labels the location with its country: ${germany.label}`);
    check((await page.textContent("#location")) === say.frankfurt, "the status names the location with its country's flag and name");
    check((await page.textContent("#renewal-state")) === say.renewalOn, "automatic renewal is on with the saved card");
    check((await page.textContent("#renewal-next")).length > 0, "the next charge is named");
    await shot(page, `${tag}-status`);

    await page.click("#location-change");
    await page.waitForSelector('body[data-screen="locations"]');
    check(await backVisible(page), "the BackButton shows on the locations");
    check(await page.isDisabled('#location-list [data-server="nl-1"]'), "the full location cannot be picked");
    check((await page.textContent('#location-list [data-server="nl-1"] .note')) === say.full, "the full location says so");
    check((await page.textContent('#location-list [data-server="de-1"] .note')) === say.current, "the current location says so");
    check((await page.textContent('#location-list [data-server="awg"] .note')) === "AmneziaWG", "an AmneziaWG location says so");
    await expectMain(page, null, `${tag} locations with the current one picked`);
    await shot(page, `${tag}-locations`);
    await tapBack(page);
    await page.waitForSelector('body[data-screen="status"]');

    await page.click("#tab-plans");
    await expectMain(page, say.pay, `${tag} plans`);
    check((await page.textContent('[data-stars="month"]')) === say.stars, "the Stars button shows the price in Stars");
    await shot(page, `${tag}-plans`);

    await page.click("#tab-keys");
    await page.waitForFunction(() => [...document.querySelectorAll("img.qr")].every((img) => img.complete && img.naturalWidth > 0)
      && document.querySelectorAll("img.qr").length === 2, null, { timeout: 10000 });
    await expectMain(page, null, `${tag} keys with every device slot used`);
    const phone = '[data-device="tg-601-1"]';
    const laptop = '[data-device="tg-601-2"]';
    check((await page.textContent(`${phone} .state`)) === say.connected, "the phone is connected");
    check((await page.textContent(`${laptop} .state`)) === say.notConnected, "the laptop is not");
    const stats = await page.textContent(`${phone} .stats`);
    check(stats.endsWith(say.traffic), `the phone's traffic is shown: ${stats}`);
    check((await page.textContent(`${laptop} .stats`)).startsWith(say.never), "the laptop never shook hands");
    check((await page.getAttribute(`${phone} a.download`, "download")) === "wgsub-Phone.conf", "download file name");
    check((await page.getAttribute(`${laptop} a.download`, "download")) === "amnezia-Laptop.conf", "AmneziaWG file name");
    check((await page.getAttribute(`${phone} a.download`, "href")).startsWith("blob:"), "download link holds the config");
    await page.click(`${phone} button.copy`);
    await page.waitForFunction((copied) => document.querySelector('[data-device="tg-601-1"] button.copy').textContent === copied, say.copied);
    await expectHaptic(page, "success");
    check((await page.$(`${phone} input.connect`)) !== null, "the on/off switch is shown");
    await shot(page, `${tag}-keys`);

    await page.click(`${phone} .guide-open`);
    await page.waitForSelector('body[data-screen="guide"]');
    check(await page.isHidden("#tabs"), "the guide is a sub-screen without tabs");
    check(await backVisible(page), "the BackButton shows on the guide");
    await expectMain(page, null, `${tag} guide`);
    check((await page.textContent("#guide-title")) === say.guideTitle, "the guide names the device");
    check((await page.getAttribute("#guide", "data-platform")) === expectPlatform,
      `Telegram's platform ${platform} picks the ${expectPlatform} guide`);
    check((await page.textContent("#guide .install .name")) === say.install, "the guide speaks the language");
    const links = await page.$$eval("#guide .store-links a", (as) => as.map((a) => a.href));
    check(JSON.stringify(links) === JSON.stringify(STORE.wireguard[expectPlatform]), `store links: ${links}`);
    await shot(page, `${tag}-guide`);
    await tapBack(page);
    await page.waitForSelector('body[data-screen="keys"]');
    check(!(await backVisible(page)), "the BackButton hides back on the keys tab");

    // Telegram switches the theme while the app is open.
    const other = theme === "light" ? "dark" : "light";
    await page.evaluate(({ params, scheme }) => window.__fire("themeChanged", params, scheme), { params: THEMES[other], scheme: other });
    check((await background(page)) === BACKGROUND[other], `themeChanged switches to the ${other} theme`);
    check(await page.evaluate(() => document.documentElement.classList.contains("dark")) === (other === "dark"), "the color scheme follows");
    await shot(page, `${tag}-theme-changed`);
    console.log(`miniapp screens ${tag} (${platform}): ok`);
  });
}

// The expired, the ending and the never-paid status lead straight to the plans.
async function renewal(theme, lang) {
  const say = SAY[lang];
  const tag = `${theme}-${lang}`;
  await withMiniApp({ theme, who: USERS.expired[lang] }, async (page) => {
    check((await page.textContent("#phase")) === say.Expired, "status shows Expired");
    check(await page.isVisible("#renew-card"), "the renewal card shows");
    check((await page.textContent("#renew-title")) === say.expiredTitle, "it says the subscription expired");
    check(await page.isHidden("#days-left"), "no days-left bar when expired");
    check((await page.textContent("#renew")) === say.renew, "its button renews");
    await expectMain(page, say.renew, `${tag} expired status`);
    await shot(page, `${tag}-expired`);
    await page.click("#tab-keys");
    await page.waitForSelector('[data-device="tg-603-1"] .wait');
    check((await page.textContent('[data-device="tg-603-1"] .wait')) === say.Expired, "the device waits for renewal");
    check((await page.$('[data-device="tg-603-1"] img.qr')) === null, "no QR code while expired");
    await expectMain(page, say.renew, `${tag} expired keys`);
    await tapMain(page);
    await page.waitForSelector('body[data-screen="plans"]');
    await expectMain(page, say.pay, `${tag} plans after renew`);
    await page.click("#tab-status");
    await page.click("#renew");
    await page.waitForSelector('body[data-screen="plans"]');
  });
  await withMiniApp({ theme, who: USERS.ending[lang] }, async (page) => {
    check((await page.textContent("#phase")) === say.Active, "status shows Active");
    check((await page.textContent("#days-left-text")) === say.daysLeft(1), "one day left");
    check((await page.getAttribute("#days-left", "data-level")) === "low", "the bar says it is low");
    check(await page.isHidden("#renew-card"), "no expired card yet");
    await expectMain(page, say.renew, `${tag} status with a day left`);
    await shot(page, `${tag}-ending`);
    await tapMain(page);
    await page.waitForSelector('body[data-screen="plans"]');
  });
  await withMiniApp({ theme, who: USERS.pending[lang] }, async (page) => {
    check((await page.textContent("#phase")) === say.Pending, "status shows Not paid");
    check((await page.textContent("#renew-title")) === say.pendingTitle, "it says there is no subscription yet");
    await expectMain(page, say.choose, `${tag} pending status`);
    await shot(page, `${tag}-pending`);
    await tapMain(page);
    await page.waitForSelector('body[data-screen="plans"]');
  });
  console.log(`miniapp renewal ${tag}: ok`);
}

// Every platform of the guide for both protocols: store links and the quickest import first.
async function guideMatrix() {
  await withMiniApp({ who: USERS.active.en, platform: "android" }, async (page) => {
    await page.click("#tab-keys");
    for (const [device, protocol] of [["tg-601-1", "wireguard"], ["tg-601-2", "amneziawg"]]) {
      await page.waitForSelector(`[data-device="${device}"] .guide-open`);
      await page.click(`[data-device="${device}"] .guide-open`);
      await page.waitForSelector('body[data-screen="guide"]');
      check((await page.getAttribute("#guide", "data-protocol")) === protocol, `${device} is ${protocol}`);
      for (const platform of ["ios", "android", "windows", "macos", "linux"]) {
        await clearCalls(page);
        await page.click(`#guide-platforms [data-platform="${platform}"]`);
        await page.waitForSelector(`#guide[data-platform="${platform}"]`);
        const links = await page.$$eval("#guide .store-links a", (as) => as.map((a) => a.href));
        check(JSON.stringify(links) === JSON.stringify(STORE[protocol][platform]),
          `${protocol} on ${platform} links ${STORE[protocol][platform]}, got ${links}`);
        const how = await page.textContent("#guide .how");
        const [phrase, first] = IMPORT[protocol][platform];
        check(how.includes(phrase), `${protocol} on ${platform} says how to import (${phrase}): ${how}`);
        const firstAction = await page.$eval("#guide .import .actions > *", (el) => (el.classList.contains("download") ? "download" : "copy"));
        check(firstAction === first, `${protocol} on ${platform}: the quickest action (${first}) comes first, got ${firstAction}`);
        const desktop = !["ios", "android"].includes(platform);
        check((await page.$("#guide .import img.qr")) !== null === desktop,
          `${platform}: the QR code for a phone shows right away on computers only`);
        if (!desktop) {
          await page.click("#guide .show-qr");
          await page.waitForSelector("#guide .import img.qr");
        }
        await expectHaptic(page, "selection");
        if (protocol === "amneziawg" && platform === "ios") await shot(page, "guide-amneziawg-ios");
      }
      await page.click("#guide .store-links a");
      const opened = await page.evaluate(() => window.__opened[window.__opened.length - 1]);
      check(opened === STORE[protocol].linux[0], `a store link opens through openLink: ${opened}`);
      await tapBack(page);
      await page.waitForSelector('body[data-screen="keys"]');
    }
    console.log("miniapp guide on every platform: ok");
  });
}

// The MainButton adds a device; the new one waits for its key.
async function addDevice() {
  await withMiniApp({ who: USERS.adder.en }, async (page) => {
    await page.click("#tab-keys");
    await expectMain(page, SAY.en.addDevice, "keys with a free slot");
    await tapMain(page);
    await page.waitForSelector('[data-device="tg-604-2"]', { timeout: 10000 });
    check((await page.textContent('[data-device="tg-604-2"] .wait')) === SAY.en.notReady, "the new device waits for its key");
    await expectHaptic(page, "success");
    await expectMain(page, null, "keys with every slot used");
    await shot(page, "light-en-device-added");
    console.log("miniapp add device: ok");
  });
}

// A move: a full location cannot be picked; a declined confirmation changes nothing; a
// confirmed one moves the devices and says their configs changed.
async function move() {
  await withMiniApp({ who: USERS.mover.en }, async (page) => {
    check((await page.textContent("#location")) === SAY.en.locationDefault, "the default server has no location name");
    await page.click("#location-change");
    await page.waitForSelector('body[data-screen="locations"]');
    await expectMain(page, null, "locations with nothing picked");
    await page.click('#location-list [data-server="nl-1"]', { force: true });
    await expectMain(page, null, "a full location is not picked");
    await page.click('#location-list [data-server="de-1"]');
    const places = await fromApi(page, "/api/v1/locations");
    const germany = places.find((l) => l.server === "de-1");
    const label = germany.label;
    check(label === SAY.en.frankfurt, `the location is labelled with its country: ${label}`);
    await expectMain(page, `${SAY.en.moveTo}${label}`, "locations with Germany picked");
    await page.evaluate(() => { window.__confirmAnswer = false; });
    await tapMain(page);
    await page.waitForFunction(() => window.__calls.some((c) => c.startsWith("confirm:")));
    const asked = (await calls(page)).find((c) => c.startsWith("confirm:"));
    check(asked.includes(label) && asked.includes(SAY.en.moveConfirm), `the confirmation says the configs change: ${asked}`);
    await page.waitForTimeout(500);
    check((await fromApi(page, "/api/v1/me")).subscription.server === "main", "a declined move changes nothing");
    check((await page.getAttribute("body", "data-screen")) === "locations", "a declined move stays on the locations");
    await page.evaluate(() => { window.__confirmAnswer = true; });
    await tapMain(page);
    await page.waitForSelector('body[data-screen="status"]', { timeout: 10000 });
    await expectNotice(page, SAY.en.moved, "success");
    await expectHaptic(page, "success");
    check((await page.textContent("#location")) === label, "the status shows the new location");
    check((await fromApi(page, "/api/v1/me")).subscription.server === "de-1", "the move was written");
    await shot(page, "light-en-moved");
    console.log("miniapp move: ok");
  });
}

// Automatic renewal is switched off after a confirmation; a declined one keeps it.
async function renewalOff() {
  await withMiniApp({ who: USERS.active.en }, async (page) => {
    check((await fromApi(page, "/api/v1/me/renewal")).enabled, "renewal is on");
    await page.evaluate(() => { window.__confirmAnswer = false; });
    await page.click("#renewal-off");
    await page.waitForFunction(() => window.__calls.some((c) => c.startsWith("confirm:")));
    await page.waitForTimeout(500);
    check((await fromApi(page, "/api/v1/me/renewal")).enabled, "a declined confirmation keeps it on");
    await page.evaluate(() => { window.__confirmAnswer = true; });
    await page.click("#renewal-off");
    await expectNotice(page, SAY.en.renewalOff, "success");
    await expectHaptic(page, "success");
    const after = await fromApi(page, "/api/v1/me/renewal");
    check(!after.enabled && after.card === null, `renewal is off and the card is gone: ${JSON.stringify(after)}`);
    await page.waitForSelector("#renewal-card", { state: "hidden", timeout: 5000 });
    await shot(page, "light-en-renewal-off");
    console.log("miniapp renewal off: ok");
  });
}

// A new key replaces the device (the old card goes, the new one waits for its key); delete
// asks first, and a declined confirmation keeps the device.
async function deviceActions() {
  await withMiniApp({ who: USERS.adder.en }, async (page) => {
    await page.click("#tab-keys");
    await page.waitForSelector('[data-device="tg-604-1"] button.rotate');
    await page.click('[data-device="tg-604-1"] button.rotate');
    await page.waitForSelector('[data-device="tg-604-1"]', { state: "detached", timeout: 10000 });
    const asked = (await calls(page)).filter((c) => c.startsWith("confirm:"));
    check(asked.length === 1 && asked[0].includes("Phone") && asked[0].includes(SAY.en.rotateConfirm), `rotate asks first: ${asked}`);
    await expectNotice(page, SAY.en.rotated, "success");
    await expectHaptic(page, "success");
    const devices = (await fromApi(page, "/api/v1/me")).devices.map((d) => d.name);
    check(!devices.includes("tg-604-1") && devices.length === 2, `the old device is replaced: ${devices}`);
    const replacement = devices.find((d) => d !== "tg-604-2");
    check((await page.textContent(`[data-device="${replacement}"] .wait`)) === SAY.en.notReady, "the replacement waits for its key");
    await shot(page, "light-en-device-rotated");

    await clearCalls(page);
    await page.evaluate(() => { window.__confirmAnswer = false; });
    await page.click('[data-device="tg-604-2"] button.delete');
    await page.waitForFunction(() => window.__calls.some((c) => c.startsWith("confirm:")));
    await page.waitForTimeout(500);
    check((await fromApi(page, "/api/v1/me")).devices.some((d) => d.name === "tg-604-2"), "a declined delete keeps the device");
    const question = (await calls(page)).find((c) => c.startsWith("confirm:"));
    check(question.includes(SAY.en.deleteConfirm), `delete asks first: ${question}`);
    await page.evaluate(() => { window.__confirmAnswer = true; });
    await page.click('[data-device="tg-604-2"] button.delete');
    await page.waitForSelector('[data-device="tg-604-2"]', { state: "detached", timeout: 10000 });
    await expectNotice(page, SAY.en.deleted, "success");
    check(!(await fromApi(page, "/api/v1/me")).devices.some((d) => d.name === "tg-604-2"), "the device is deleted");
    await expectMain(page, SAY.en.addDevice, "keys with a slot freed");
    await shot(page, "light-en-device-deleted");
    console.log("miniapp rotate and delete: ok");
  });
}

// A Telegram client older than BackButton (6.1) and showConfirm (6.2): the page shows its own
// back button and asks with the browser's dialog.
async function oldClient() {
  await withMiniApp({ who: USERS.mover.en, version: "6.0" }, async (page) => {
    check(await page.isHidden("#page-back"), "no page back button on a tab");
    await page.click("#location-change");
    await page.waitForSelector('body[data-screen="locations"]');
    check(await page.isVisible("#page-back"), "the page's own back button stands in for the BackButton");
    await page.click('#location-list [data-server="awg"]');
    const dialogs = [];
    page.once("dialog", (dialog) => { dialogs.push(dialog.message()); dialog.dismiss(); });
    await tapMain(page);
    await page.waitForTimeout(500);
    check(dialogs.length === 1 && dialogs[0].includes(SAY.en.moveConfirm), `the browser's dialog asked: ${dialogs}`);
    check((await fromApi(page, "/api/v1/me")).subscription.server === "de-1", "a dismissed move changes nothing");
    const seen = await calls(page);
    check(!seen.some((c) => c.startsWith("BackButton.") || c.startsWith("confirm:") || c.startsWith("haptic:")),
      `nothing the client lacks was called: ${seen}`);
    await page.click("#page-back");
    await page.waitForSelector('body[data-screen="status"]');
    check(await page.isHidden("#page-back"), "the page back button hides on the status tab");
    await shot(page, "light-en-old-client");
    console.log("miniapp old Telegram client: ok");
  });
}

// Stars: a failed invoice says so with an error haptic; a paid one waits for the new date.
// A promo code that does not exist gets the API's refusal and an error haptic.
async function starsAndPromo() {
  await withMiniApp({ who: USERS.active.en }, async (page) => {
    await page.click("#tab-plans");
    await page.evaluate(() => { window.__invoiceStatus = "failed"; });
    await page.click('[data-stars="month"]');
    await expectNotice(page, SAY.en.starsFailed, "error");
    await expectHaptic(page, "error");
    const invoices = (await calls(page)).filter((c) => c.startsWith("invoice:"));
    check(invoices.length === 1 && invoices[0] === "invoice:https://t.me/$StarsInvoice", `the invoice link opened: ${invoices}`);
    check(await page.getAttribute('[data-plan="month"]', "aria-checked") === "true", "the Stars button does not change the pick");
    await page.evaluate(() => { window.__invoiceStatus = "paid"; });
    await page.click('[data-stars="month"]');
    await expectNotice(page, SAY.en.starsPaid, "info");
    await clearCalls(page);
    await page.fill("#promo-code", "NO-SUCH-CODE");
    await page.click("#promo-apply");
    await page.waitForFunction((text) => document.getElementById("promo-result").textContent === text, SAY.en.promoUnknown);
    await expectHaptic(page, "error");
    await shot(page, "light-en-promo-refused");
    console.log("miniapp stars and promo: ok");
  });
}

// Renaming: a 200-character name is refused with the API's message; a good one is saved.
async function rename() {
  await withMiniApp({ theme: "dark", who: USERS.active.ru }, async (page) => {
    await page.click("#tab-keys");
    const laptop = '[data-device="tg-601-2"]';
    await page.waitForSelector(`${laptop} button.rename`);
    await page.click(`${laptop} button.rename`);
    check((await page.inputValue(`${laptop} .rename-input`)) === "Laptop", "the field holds the name");
    // Past the field's own limit, as a crafted request would be.
    await page.$eval(`${laptop} .rename-input`, (el) => { el.removeAttribute("maxlength"); el.value = "x".repeat(200); });
    await page.click(`${laptop} .rename-form .save`);
    await page.waitForFunction(() => document.getElementById("notice").dataset.kind === "error" && !document.getElementById("notice").hidden);
    const message = await page.textContent("#notice");
    check(message.includes("64"), `the API's message is shown: ${message}`);
    await expectHaptic(page, "error");
    await shot(page, "dark-ru-rename-refused");
    await page.fill(`${laptop} .rename-input`, "Ноутбук");
    await page.click(`${laptop} .rename-form .save`);
    await page.waitForFunction(() => document.querySelector('[data-device="tg-601-2"] .device-name')?.textContent === "Ноутбук", null, { timeout: 10000 });
    await expectHaptic(page, "success");
    await shot(page, "dark-ru-renamed");
    console.log("miniapp rename: ok");
  });
}

// The data quota: the plan's traffic, the usage bar and each device's traffic; a used-up quota
// leads to buying.
async function usage(theme, lang) {
  const say = {
    en: { plan: "50 GB of traffic", used: "40 GB of 50 GB", left: "10 GB left · renews ", total: "In total: ↓ 90 GB · ↑ 25 GB",
      device: "This period: ↓ 30 GB · ↑ 10 GB · in total: ↓ 90 GB · ↑ 25 GB", buy: "Buy more",
      exhausted: "Your traffic is used up", paused: "Your devices are paused until " },
    ru: { plan: "50 ГБ трафика", used: "40 ГБ из 50 ГБ", left: "осталось 10 ГБ · обновится ", total: "Всего: ↓ 90 ГБ · ↑ 25 ГБ",
      device: "За период: ↓ 30 ГБ · ↑ 10 ГБ · всего: ↓ 90 ГБ · ↑ 25 ГБ", buy: "Купить ещё",
      exhausted: "Трафик закончился", paused: "Устройства на паузе до " },
  }[lang];
  const tag = `${theme}-${lang}`;
  await withMiniApp({ theme, who: USERS.quota[lang] }, async (page) => {
    check(await page.isVisible("#usage"), "the usage bar shows");
    check((await page.textContent("#usage-used")) === say.used, `used of the quota: ${await page.textContent("#usage-used")}`);
    const text = await page.textContent("#usage-text");
    check(text.startsWith(say.left) && text.endsWith(say.total), `what is left, when it renews, the totals: ${text}`);
    check((await page.getAttribute("#usage", "data-level")) === "soon", "80% used: the bar warns");
    check(await page.isHidden("#quota-card"), "no used-up card within the quota");
    await expectMain(page, null, `${tag} status within the quota`);
    await shot(page, `${tag}-usage`);
    await page.click("#tab-plans");
    const hint = await page.textContent('[data-plan="month"] .hint');
    check(hint.endsWith(say.plan), `the plan tells its traffic: ${hint}`);
    await page.click("#tab-keys");
    await page.waitForSelector('[data-device="tg-609-1"] .device-usage');
    const device = await page.textContent('[data-device="tg-609-1"] .device-usage');
    check(device === say.device, `the device's traffic this period and in total: ${device}`);
    await shot(page, `${tag}-keys-usage`);
  });
  await withMiniApp({ theme, who: USERS.exhausted[lang] }, async (page) => {
    check(await page.isVisible("#quota-card"), "the used-up card shows");
    check((await page.textContent("#quota-card .name")) === say.exhausted, "it says the traffic is used up");
    check((await page.textContent("#quota-text")).startsWith(say.paused), "and until when the devices are paused");
    check((await page.getAttribute("#usage", "data-level")) === "low", "the bar is full");
    check((await page.textContent("#quota-buy")) === say.buy, "its button buys more");
    await expectMain(page, say.buy, `${tag} used-up status`);
    await shot(page, `${tag}-exhausted`);
    await tapMain(page);
    await page.waitForSelector('body[data-screen="plans"]');
    await page.click("#tab-status");
    await page.click("#quota-buy");
    await page.waitForSelector('body[data-screen="plans"]');
  });
  console.log(`miniapp usage ${tag}: ok`);
}

async function expired() {
  await withMiniApp({ who: USERS.active.en, initData: staleInitData }, async (page) => {
    await page.waitForSelector("#expired", { state: "visible", timeout: 5000 });
    const message = await page.textContent("#expired p");
    check(message.includes("session has expired"), `the expired notice is shown: ${message}`);
    check(await page.isHidden("#notice"), "no other error notice");
    check((await page.textContent("#phase")) === "—", "nothing is shown as the user's status");
    await shot(page, "expired");
    await page.click("#reopen");
    await page.waitForFunction(() => window.__closed === 1, null, { timeout: 5000 });
    console.log("miniapp expired initData: ok");
  });
}

(async () => {
  await payment();
  await screens("light", "en", "ios", "ios");
  await screens("light", "ru", "android", "android");
  await screens("dark", "en", "tdesktop", "windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36");
  await screens("dark", "ru", "macos", "macos");
  for (const theme of ["light", "dark"]) for (const lang of ["en", "ru"]) await renewal(theme, lang);
  for (const theme of ["light", "dark"]) for (const lang of ["en", "ru"]) await usage(theme, lang);
  await guideMatrix();
  await addDevice();
  await deviceActions();
  await renewalOff();
  await move();
  await oldClient();
  await starsAndPromo();
  await rename();
  await expired();
  input.close();
  process.exit(0);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
