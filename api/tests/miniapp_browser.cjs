// Drives the Mini App in headless Chromium (playwright-core) against a running wgsub-api:
// status → plans (pay opens the confirmation URL through Telegram.WebApp.openLink) → keys
// (QR visible, .conf download link, copy), in the light and the dark theme, with a stubbed
// window.Telegram.WebApp carrying validly signed initData; the app each device's config needs,
// in English and Russian (the WireGuard app for the device on the WireGuard server, AmneziaVPN
// or AmneziaWG with their store links for the one on the AmneziaWG server); then with initData signed longer ago
// than the API accepts: the app says the session expired and its button asks Telegram to close
// the app (Telegram signs fresh initData when it is opened again). Screenshots go to the
// artifacts directory. Run by api/tests/api_http.rs; exits non-zero on any failure.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");

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
const initData = need("WGSUB_INIT_DATA");
const staleInitData = need("WGSUB_STALE_INIT_DATA");
const user = JSON.parse(need("WGSUB_USER_JSON"));
const initDataRu = need("WGSUB_INIT_DATA_RU");
const userRu = JSON.parse(need("WGSUB_USER_RU_JSON"));
const artifacts = need("WGSUB_TEST_ARTIFACTS");

const THEMES = {
  light: { bg_color: "#ffffff", text_color: "#000000", hint_color: "#707579", link_color: "#2481cc",
    button_color: "#2481cc", button_text_color: "#ffffff", secondary_bg_color: "#f4f4f5" },
  dark: { bg_color: "#212121", text_color: "#ffffff", hint_color: "#aaaaaa", link_color: "#8774e1",
    button_color: "#8774e1", button_text_color: "#ffffff", secondary_bg_color: "#181818" },
};

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// Opens the Mini App in a fresh browser with Telegram.WebApp stubbed (`initData`, `theme`) and
// runs `steps(page)`; fails on any page error.
async function withMiniApp(theme, data, steps, who = user) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "wgsub-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: need("WGSUB_CHROMIUM"),
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 400, height: 900 },
  });
  try {
    // No network: Telegram's script is unavailable, the stub below stands in for it.
    await context.route("https://telegram.org/**", (route) => route.abort());
    await context.addInitScript(({ initData, user, params, scheme }) => {
      window.__opened = [];
      window.__closed = 0;
      window.Telegram = { WebApp: {
        initData, initDataUnsafe: { user }, themeParams: params, colorScheme: scheme,
        ready() {}, expand() {}, openLink(url) { window.__opened.push(url); },
        close() { window.__closed += 1; },
      } };
    }, { initData: data, user: who, params: THEMES[theme], scheme: theme });
    const page = context.pages()[0] || (await context.newPage());
    const errors = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    await page.goto(base + "/miniapp/");
    await steps(page);
    check(errors.length === 0, `no page errors: ${errors.join("; ")}`);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

async function run(theme) {
  await withMiniApp(theme, initData, async (page) => {
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 15000 });
    check((await page.textContent("#phase")) === "Active", "status shows Active");
    check((await page.textContent("#user-id")).includes(String(user.id)), "header shows the user id");
    check((await page.textContent("#paid-until")) !== "—", "paid-until is shown");
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const expected = theme === "dark" ? "rgb(33, 33, 33)" : "rgb(255, 255, 255)";
    check(background === expected, `background follows the ${theme} theme: ${background}`);
    await page.screenshot({ path: path.join(artifacts, `miniapp-${theme}-status.png`) });

    await page.click("#tab-plans");
    await page.waitForSelector('[data-plan="month"]');
    await page.click('[data-plan="month"]');
    await page.waitForFunction(() => window.__opened.length === 1, null, { timeout: 10000 });
    const opened = await page.evaluate(() => window.__opened[0]);
    check(opened.startsWith("https://yoomoney.example/"), `openLink got the confirmation URL: ${opened}`);
    await page.screenshot({ path: path.join(artifacts, `miniapp-${theme}-plans.png`) });

    await page.click("#tab-keys");
    await page.waitForFunction(() => {
      const img = document.querySelector("img.qr");
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 10000 });
    const link = await page.$("a.download");
    check(link, "a download link is shown");
    check((await link.getAttribute("download")) === "wgsub-Phone.conf", "download file name");
    check((await link.getAttribute("href")).startsWith("blob:"), "download link holds the config");
    await page.click("button.copy");
    await page.waitForFunction(() => document.querySelector("button.copy").textContent === "Copied");
    check((await page.$("input.connect")) !== null, "connect switch is shown");
    await page.screenshot({ path: path.join(artifacts, `miniapp-${theme}-keys.png`), fullPage: true });
    console.log(`miniapp ${theme}: ok`);
  });
}

const APP_LINKS = {
  wireguard: [
    "https://apps.apple.com/app/wireguard/id1441195209",
    "https://play.google.com/store/apps/details?id=com.wireguard.android",
    "https://www.wireguard.com/install/",
  ],
  amneziawg: [
    "https://apps.apple.com/app/amneziavpn/id1600529900",
    "https://apps.apple.com/app/amneziawg/id6478942365",
    "https://play.google.com/store/apps/details?id=org.amnezia.vpn",
    "https://play.google.com/store/apps/details?id=org.amnezia.awg",
    "https://github.com/amnezia-vpn/amnezia-client/releases",
  ],
};
const APP_INTROS = {
  en: { wireguard: "Import the config into the WireGuard app", amneziawg: "This is an AmneziaWG config: import it into the AmneziaVPN or AmneziaWG app" },
  ru: { wireguard: "Импортируйте конфиг в приложение WireGuard", amneziawg: "Это конфиг AmneziaWG: импортируйте его в приложение AmneziaVPN или AmneziaWG" },
};

// Each device's card names the app its config needs, in `lang`, with the store links; a link
// opens through Telegram.WebApp.openLink.
async function appHints(lang, data, who) {
  await withMiniApp("light", data, async (page) => {
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 15000 });
    check((await page.getAttribute("html", "lang")) === lang, `the app speaks ${lang}`);
    await page.click("#tab-keys");
    for (const [device, protocol] of [["tg-601-1", "wireguard"], ["tg-601-2", "amneziawg"]]) {
      const hint = `[data-device="${device}"] .apps[data-protocol="${protocol}"]`;
      await page.waitForSelector(hint, { timeout: 10000 });
      const intro = await page.textContent(hint + " .apps-intro");
      check(intro.startsWith(APP_INTROS[lang][protocol]), `${device} (${lang}) names the ${protocol} app: ${intro}`);
      const links = await page.$$eval(hint + " a", (as) => as.map((a) => a.href));
      check(JSON.stringify(links) === JSON.stringify(APP_LINKS[protocol]),
        `${device} (${lang}) links the ${protocol} apps: ${links.join(" ")}`);
      check((await page.$$(`[data-device="${device}"] .apps`)).length === 1, `${device} has one app hint`);
    }
    await page.waitForSelector('[data-device="tg-601-2"] a.download');
    const name = await page.getAttribute('[data-device="tg-601-2"] a.download', "download");
    check(name === "amnezia-Laptop.conf", `the AmneziaWG device downloads amnezia-Laptop.conf: ${name}`);
    await page.click('[data-device="tg-601-2"] .apps a');
    await page.waitForFunction(() => window.__opened.length === 1, null, { timeout: 5000 });
    const opened = await page.evaluate(() => window.__opened[0]);
    check(opened === APP_LINKS.amneziawg[0], `a store link opens through openLink: ${opened}`);
    await page.screenshot({ path: path.join(artifacts, `miniapp-apps-${lang}.png`), fullPage: true });
    console.log(`miniapp app hints ${lang}: ok`);
  }, who);
}

async function expired() {
  await withMiniApp("light", staleInitData, async (page) => {
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 15000 });
    await page.waitForSelector("#expired", { state: "visible", timeout: 5000 });
    const message = await page.textContent("#expired p");
    check(message.includes("session has expired"), `the expired notice is shown: ${message}`);
    check(await page.isHidden("#notice"), "no other error notice");
    check((await page.textContent("#phase")) === "—", "nothing is shown as the user's status");
    await page.screenshot({ path: path.join(artifacts, "miniapp-expired.png") });
    await page.click("#reopen");
    await page.waitForFunction(() => window.__closed === 1, null, { timeout: 5000 });
    console.log("miniapp expired initData: ok");
  });
}

(async () => {
  for (const theme of ["light", "dark"]) await run(theme);
  await appHints("en", initData, user);
  await appHints("ru", initDataRu, userRu);
  await expired();
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
