// Drives headless Chromium (Debian's chromium, through playwright-core) against the relay's
// demo page. Run by tests/python/test_browser.py:
//
//   node demo.mjs two-pages      BASE_URL ARTIFACT_DIR
//   node demo.mjs page-and-peer  BASE_URL ARTIFACT_DIR SESSION FORGED_JSON
//
// FORGED_JSON: a JSON list of texts the peer sends that are shaped like relay events; the
// page must show each as a message.
//
// Prints one JSON line with what it saw; exits non-zero (with the reason on stderr) when a
// step fails. Every wait is bounded.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const [mode, base, artifacts, session, forgedJson] = process.argv.slice(2);
const STEP = 10_000;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
// A closed network: nothing but the relay on loopback may be asked for.
const args = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-extensions",
];

// The relay's TLS listener serves a certificate of a CA made by the test, which this
// throwaway profile does not trust: told to accept it, the page and its wss:// socket still
// run over TLS.
if (base.startsWith("https:")) args.push("--ignore-certificate-errors");

mkdirSync(artifacts, { recursive: true });
const browser = await chromium.launch({ executablePath, headless: true, args, timeout: 30_000 });
const seen = { requests: [], console: [] };

async function open(hash) {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP);
  page.on("request", (r) => seen.requests.push(r.url()));
  page.on("console", (m) => seen.console.push(m.text()));
  page.on("pageerror", (e) => seen.console.push("pageerror: " + e.message));
  await page.goto(`${base}/demo${hash || ""}`);
  return page;
}

async function joinSession(page, role) {
  if (role) await page.fill("#role", role);
  await page.click("#connect");
  await page.waitForSelector('#status[data-state="open"]');
}

async function send(page, text) {
  await page.fill("#message", text);
  await page.click("#send");
}

const waitMessage = (page, text) =>
  page.waitForSelector(`#messages li.in:text-is(${JSON.stringify(text)})`);
// By exact text, whatever characters it holds (forged events are full of quotes).
const waitMessageExact = (page, text) =>
  page.waitForFunction(
    (t) => [...document.querySelectorAll("#messages li.in")].some((x) => x.textContent === t),
    text,
  );
const waitEvent = (page, text) =>
  page.waitForSelector(`#events li:text-is(${JSON.stringify(text)})`);

const result = { mode };
try {
  if (mode === "two-pages") {
    const a = await open();
    const s = await a.inputValue("#session");
    await joinSession(a, "desktop");
    await waitEvent(a, `connected to ${s} as desktop, waiting for a peer`);
    const b = await open(`#session=${encodeURIComponent(s)}`);
    if ((await b.inputValue("#session")) !== s) throw new Error("the shared link did not carry the session");
    await joinSession(b, "mobile");
    await waitEvent(b, `connected to ${s} as mobile, peer present`);
    await waitEvent(a, "peer mobile connected");
    await send(a, "hello from the desktop tab");
    await waitMessage(b, "hello from the desktop tab");
    await send(b, "hello back, grüße ✓");
    await waitMessage(a, "hello back, grüße ✓");
    // The browser offered permessage-deflate; the relay declines every extension.
    result.extensions = [await a.evaluate(() => ws.extensions), await b.evaluate(() => ws.extensions)];
    await a.screenshot({ path: join(artifacts, "demo-desktop-tab.png"), fullPage: true });
    await b.screenshot({ path: join(artifacts, "demo-mobile-tab.png"), fullPage: true });
    await b.click("#disconnect");
    await b.waitForSelector('#status[data-state="closed"]');
    await waitEvent(a, "peer mobile disconnected (1000)");
    result.session = s;
    result.events_a = await a.$$eval("#events li", (l) => l.map((x) => x.textContent));
    result.messages_b = await b.$$eval("#messages li", (l) => l.map((x) => x.textContent));
  } else if (mode === "page-and-peer") {
    const p = await open(`#session=${encodeURIComponent(session)}`);
    await joinSession(p, "web");
    await waitMessage(p, "from python");
    await p.waitForSelector("#messages li.binary");
    result.binary = await p.$eval("#messages li.binary", (x) => x.textContent);
    for (const f of JSON.parse(forgedJson || "[]")) await waitMessageExact(p, f);
    await send(p, "from the page");
    await waitEvent(p, "peer native disconnected (1000)");
    result.events = await p.$$eval("#events li", (l) => l.map((x) => x.textContent));
    result.messages = await p.$$eval("#messages li.in", (l) => l.map((x) => x.textContent));
    await p.screenshot({ path: join(artifacts, "demo-page-and-peer.png"), fullPage: true });
    result.extensions = await p.evaluate(() => ws.extensions);
  } else if (mode === "drop") {
    // The desktop tab's connection ends under it (as on a network change): the page's
    // RelayClient reconnects and resumes; what each side sent meanwhile arrives once.
    const a = await open();
    const s = await a.inputValue("#session");
    await joinSession(a, "desktop");
    const b = await open(`#session=${encodeURIComponent(s)}`);
    await joinSession(b, "mobile");
    await waitEvent(a, "peer mobile connected");
    await send(a, "before the drop");
    await waitMessage(b, "before the drop");
    await a.evaluate(() => window.ws.close(3000, "network change"));
    await send(a, "typed while away");
    await send(b, "sent to the desktop while it was away");
    await waitMessage(b, "typed while away");
    await waitMessage(a, "sent to the desktop while it was away");
    await a.waitForSelector('#status[data-state="open"]');
    result.session = s;
    result.messages_a = await a.$$eval("#messages li.in", (l) => l.map((x) => x.textContent));
    result.messages_b = await b.$$eval("#messages li.in", (l) => l.map((x) => x.textContent));
    result.extensions = [await a.evaluate(() => window.ws.extensions)];
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  result.requests = [...new Set(seen.requests)];
  result.console = seen.console;
  console.log(JSON.stringify(result));
} catch (e) {
  console.error(`demo.mjs ${mode}: ${e.message}\nconsole: ${JSON.stringify(seen.console)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
