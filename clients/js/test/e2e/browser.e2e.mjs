// The cut test with the same client in a page: headless Chromium (Debian's chromium, driven
// by playwright-core from tests/browser) runs two RelayClients on the browser's own
// WebSocket, each behind the test's cutting forwarder; 10,000 messages each way arrive
// exactly once and in order (one way against a relay without acks, as in cut.e2e.mjs).
// Skips without Chromium or playwright-core, unless RINGRELAY_REQUIRE_BROWSER=1.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { BIN, DRIVERS, cutRun, CutForwarder } from "./harness.mjs";

const COUNT = Number(process.env.CUT_MESSAGES ?? 10000);
const CUTS = 6;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const BROWSER_TESTS = new URL("../../../../tests/browser/", import.meta.url);

async function playwright() {
  try {
    const req = createRequire(new URL("package.json", BROWSER_TESTS));
    const m = await import(pathToFileURL(req.resolve("playwright-core")).href);
    return m.chromium ? m : m.default;
  } catch {
    return null;
  }
}

const pw = await playwright();
let why = !BIN ? "RINGRELAY_BIN not set" : !existsSync(CHROMIUM) ? `no browser at ${CHROMIUM}` : !pw ? "no playwright-core (npm ci in tests/browser)" : null;
if (why && BIN && process.env.RINGRELAY_REQUIRE_BROWSER === "1") throw new Error(`browser test required but cannot run: ${why}`);

/** Serves the test page, the built client and the traffic module, from another origin than the relay. */
function pageServer() {
  const files = {
    "/": ["text/html", "<!doctype html><title>ringrelay-client cut test</title><p>cut test</p>"],
    "/client.js": ["text/javascript", readFileSync(new URL("../../dist/index.js", import.meta.url))],
    "/traffic.js": ["text/javascript", readFileSync(new URL("./traffic.mjs", import.meta.url))],
  };
  const server = http.createServer((req, res) => {
    const f = files[req.url];
    if (!f) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": f[0] }).end(f[1]);
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r(server)));
}

for (const driver of DRIVERS) {
  test(`in Chromium: 10,000 messages each way through random cuts (${driver})`, { skip: why ?? false, timeout: 240000 }, async (t) => {
    const { relay, twoWay, seed, plan } = await cutRun(t, driver, CUTS);
    const fa = new CutForwarder(relay.port, plan(true));
    const fb = new CutForwarder(relay.port, plan(twoWay));
    const [pa, pb] = [await fa.listen(), await fb.listen()];
    const site = await pageServer();
    const browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
    try {
      const page = await browser.newPage();
      const logs = [];
      page.on("pageerror", (e) => logs.push(e.message));
      await page.goto(`http://127.0.0.1:${site.address().port}/`);
      const result = await page.evaluate(
        async ({ urlA, urlB, session, count, seed, twoWay }) => {
          const { RelayClient } = await import("/client.js");
          const T = await import("/traffic.js");
          const opts = { session, backoff: { initialMs: 5, maxMs: 100 }, stallMs: 5000 };
          const a = new RelayClient({ ...opts, url: urlA, role: "desktop" });
          const b = new RelayClient({ ...opts, url: urlB, role: "mobile" });
          try {
            const atB = T.receiver(b, "A", count);
            const atA = twoWay ? T.receiver(a, "B", count) : null;
            const work = [atB.all, T.pump(a, "A", T.rng(seed + 1), count)];
            if (twoWay) work.push(atA.all, T.pump(b, "B", T.rng(seed + 2), count));
            await Promise.all(work);
            return { ok: true, atB: atB.got(), atA: atA ? atA.got() : null };
          } catch (e) {
            return { ok: false, error: String(e && e.message ? e.message : e) };
          } finally {
            await Promise.all([a.close(), b.close()]);
          }
        },
        // One way (a relay without acks): A goes straight to the relay, never cut.
        { urlA: `ws://127.0.0.1:${twoWay ? pa : relay.port}`, urlB: `ws://127.0.0.1:${pb}`, session: `browser-cut-${driver}-${seed}`, count: COUNT, seed, twoWay },
      );
      t.diagnostic(`cuts: ${fa.cuts + fb.cuts}; ${JSON.stringify(result)}`);
      assert.ok(result.ok, result.error);
      assert.equal(result.atB, COUNT);
      if (twoWay) assert.equal(result.atA, COUNT);
      assert.ok(fb.cuts >= 2, `the receiver was cut (${fb.cuts})`);
      if (twoWay) assert.ok(fa.cuts >= 2, `the sender was cut (${fa.cuts})`);
      assert.deepEqual(logs, []);
    } finally {
      await browser.close();
      site.close();
      await fa.close();
      await fb.close();
      await relay.stop();
    }
  });
}
