// RelayAgent against `ringrelay agent`: the same local API behind each, on sessions of one
// relay, and the same bridged requests to both. Their answers (status, headers, body) must
// match, the agents' own failures included (target down, too slow, answer too large).
// Before: the only agent was the `ringrelay agent` binary; a browser tab or a Node program
// could not answer bridged requests.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import zlib from "node:zlib";
import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { RelayAgent } from "../../dist/index.js";
import { BIN, DRIVERS, startRelay, freePort } from "./harness.mjs";

/** The "localhost API". */
function api() {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const url = new URL(req.url, "http://x");
      switch (url.pathname) {
        case "/users":
          res.setHeader("content-type", "application/json");
          res.setHeader("x-multi", ["1", "2"]);
          res.setHeader("Cache-Control", "max-age=60"); // the relay sets its own
          res.end(JSON.stringify({ method: req.method, query: url.search, custom: req.headers["x-custom"] ?? null }));
          return;
        case "/echo":
          res.writeHead(201, { "content-type": req.headers["content-type"] ?? "none", "x-len": String(body.length) });
          res.end(body);
          return;
        case "/bin":
          res.writeHead(200, { "content-type": "application/octet-stream" });
          res.end(Buffer.from(body).reverse());
          return;
        case "/empty":
          res.writeHead(204, { "x-empty": "yes" });
          res.end();
          return;
        case "/boom":
          res.writeHead(500, { "content-type": "text/plain" });
          res.end("it broke");
          return;
        case "/redirect":
          res.writeHead(302, { location: "/users" });
          res.end();
          return;
        case "/big":
          res.writeHead(200, { "content-type": "text/plain" });
          res.end("b".repeat(5000));
          return;
        case "/slow":
          setTimeout(() => res.end("late"), 1500);
          return;
        case "/maybe-gzip":
          // An API that compresses when asked: a fetch asks for gzip by itself unless told
          // otherwise, and would then hand over a decoded body under `content-encoding: gzip`.
          if (/gzip/.test(req.headers["accept-encoding"] ?? "")) {
            res.writeHead(200, { "content-encoding": "gzip" });
            res.end(zlib.gzipSync("plain"));
          } else res.end("plain");
          return;
        default:
          res.writeHead(404, { "content-type": "text/plain" });
          res.end("no such thing");
      }
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** One bridged request, read with node:http (no decoding, no redirects). */
function call(port, session, { method = "GET", path, headers = {}, body }) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path: `/v1/http/${session}${path}`, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const h = { ...res.headers };
        delete h.date;
        resolve({ status: res.statusCode, headers: h, body: Buffer.concat(chunks).toString("base64") });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function untilServing(port, session) {
  for (let i = 0; i < 200; i++) {
    const r = await call(port, session, { path: "/users" });
    if (!Buffer.from(r.body, "base64").toString().includes("agent_not_connected")) return;
    await sleep(50);
  }
  throw new Error(`no agent on ${session}`);
}

const CASES = [
  { path: "/users?x=1&y=%20z", headers: { "x-custom": "hello" } },
  { method: "POST", path: "/echo", headers: { "content-type": "application/json" }, body: JSON.stringify({ a: [1, 2, "é"] }) },
  { method: "POST", path: "/echo", headers: { "content-type": "text/plain" }, body: "" },
  { method: "PUT", path: "/bin", headers: { "content-type": "application/octet-stream" }, body: Buffer.from([0, 1, 2, 255, 254, 0x80]) },
  { path: "/empty" },
  { path: "/boom" },
  { path: "/missing" },
  { path: "/redirect" },
  { method: "HEAD", path: "/users" },
  { method: "DELETE", path: "/users" },
  { path: "/big" },
  { path: "/slow" },
  { path: "/maybe-gzip" },
];

for (const driver of DRIVERS) {
  test(`RelayAgent answers bridged requests as ringrelay agent does (${driver})`, { skip: !BIN && "RINGRELAY_BIN not set", timeout: 60000 }, async () => {
    const relay = await startRelay({ driver });
    const target = await api();
    const tport = target.address().port;
    const deadPort = await freePort();
    const agents = [];
    const procs = [];
    const rust = (session, port) => {
      const p = spawn(BIN, ["agent", "--relay", relay.url, "--session", session, "--target", `http://127.0.0.1:${port}`,
        "--target-timeout", "700ms", "--max-response-bytes", "1000", "--backoff-initial", "20ms", "--backoff-max", "200ms"], { stdio: "ignore" });
      procs.push(p);
    };
    const js = async (session, port) => {
      const a = new RelayAgent({ url: relay.url, session, target: `http://127.0.0.1:${port}`, targetTimeoutMs: 700, maxResponseBytes: 1000 });
      agents.push(a);
      await a.start();
    };
    try {
      rust("rs", tport);
      rust("rs-dead", deadPort);
      await js("js", tport);
      await js("js-dead", deadPort);
      await untilServing(relay.port, "rs");
      await untilServing(relay.port, "js");
      for (const c of CASES) {
        const [want, got] = await Promise.all([call(relay.port, "rs", c), call(relay.port, "js", c)]);
        assert.deepEqual(got, want, `${c.method ?? "GET"} ${c.path}`);
        if (!["/big", "/slow"].includes(c.path)) assert.ok(got.status < 500 || c.path === "/boom", `${c.path} reached the API: ${got.status}`);
      }
      const slow = await call(relay.port, "js", { path: "/slow" });
      assert.equal(slow.status, 504);
      assert.match(Buffer.from(slow.body, "base64").toString(), /target_timeout/);
      // The target down: both 502 target_unreachable, the same body.
      await untilServing(relay.port, "rs-dead");
      const want = await call(relay.port, "rs-dead", { path: "/x" });
      const got = await call(relay.port, "js-dead", { path: "/x" });
      assert.equal(got.status, 502);
      assert.deepEqual(got, want);
      assert.match(Buffer.from(got.body, "base64").toString(), /target_unreachable/);
    } finally {
      for (const a of agents) await a.stop(100);
      for (const p of procs) p.kill("SIGTERM");
      target.close();
      await relay.stop();
    }
  });
}

test("RelayAgent refuses any target that is not loopback", () => {
  for (const bad of ["http://10.0.0.1:3000", "http://example.com", "http://0.0.0.0:80", "http://[::2]:80", "https://127.0.0.1:3000", "http://127.0.0.1:3000/?q=1", "not a url"]) {
    assert.throws(() => new RelayAgent({ url: "ws://127.0.0.1:1", session: "s", target: bad }), TypeError, bad);
  }
  for (const ok of ["http://127.0.0.1:3000", "http://localhost:8080/api", "http://[::1]:3000", "http://127.9.9.9"]) {
    new RelayAgent({ url: "ws://127.0.0.1:1", session: "s", target: ok });
  }
});
