// What the end-to-end tests share: the real relay binary on loopback ports, and a TCP
// forwarder of the test's own between a client and the relay that cuts connections at
// chosen byte offsets, mid-frame.
import { spawn } from "node:child_process";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export const BIN = process.env.RINGRELAY_BIN;
export const DRIVERS = (process.env.RINGRELAY_DRIVERS ?? "io_uring,epoll").split(",");

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** Starts the relay; resolves once /health answers. */
export async function startRelay({ driver = "epoll", env = {}, args = [] } = {}) {
  if (!BIN) throw new Error("set RINGRELAY_BIN to the relay binary");
  const port = await freePort();
  const admin = await freePort();
  const proc = spawn(BIN, ["--listen", `127.0.0.1:${port}`, "--admin-listen", `127.0.0.1:${admin}`, "--workers", "2", ...args], {
    env: { ...process.env, RINGRELAY_DRIVER: driver, RUST_LOG: "warn", RINGRELAY_LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  proc.stderr.on("data", (d) => (log = (log + d).slice(-20000)));
  const deadline = Date.now() + 15000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`relay exited ${proc.exitCode}: ${log}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`relay did not start: ${log}`);
    }
    await sleep(50);
  }
  return {
    port,
    admin,
    url: `ws://127.0.0.1:${port}`,
    log: () => log,
    async stats() {
      return (await fetch(`http://127.0.0.1:${admin}/stats`)).json();
    },
    async stop() {
      if (proc.exitCode !== null) return;
      const done = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await Promise.race([done, sleep(5000).then(() => proc.kill("SIGKILL"))]);
    },
  };
}

/** Whether the relay does two-way resume: its `connected` carries `acked`. */
export async function relayAcks(url) {
  const ws = new WebSocket(`${url}/v1/relay/probe-acks-${process.pid}?events=1&resume=0`);
  const first = await new Promise((resolve, reject) => {
    ws.onmessage = (m) => resolve(JSON.parse(m.data));
    ws.onerror = () => reject(new Error("probe failed"));
  });
  ws.close();
  return typeof first.acked === "number";
}

/**
 * A TCP forwarder to the relay. Each accepted connection takes the next cut from `plan`:
 * `{ dir: "up" | "down", at }` passes `at` bytes in that direction ("up" = client to
 * relay), the last of them possibly part of a frame, then cuts both sockets; `null` passes
 * everything.
 */
export class CutForwarder {
  constructor(relayPort, plan) {
    this.relayPort = relayPort;
    this.plan = plan;
    this.connections = 0;
    this.cuts = 0;
    this.sockets = new Set();
    this.server = net.createServer((client) => this.accept(client));
  }

  listen() {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => resolve(this.server.address().port)));
  }

  accept(client) {
    const cut = this.plan(this.connections++);
    const relay = net.connect(this.relayPort, "127.0.0.1");
    this.sockets.add(client).add(relay);
    let gone = false;
    const end = () => {
      if (gone) return;
      gone = true;
      client.destroy();
      relay.destroy();
      this.sockets.delete(client);
      this.sockets.delete(relay);
    };
    const passed = { up: 0, down: 0 };
    const pipe = (from, to, dir) => {
      from.on("data", (chunk) => {
        if (gone) return;
        if (cut && cut.dir === dir && passed[dir] + chunk.length >= cut.at) {
          const part = chunk.subarray(0, cut.at - passed[dir]);
          gone = true; // nothing more crosses
          this.cuts++;
          const kill = () => {
            gone = false;
            end();
          };
          if (part.length > 0) to.write(part, kill);
          else kill();
          return;
        }
        passed[dir] += chunk.length;
        if (!to.write(chunk)) {
          from.pause();
          to.once("drain", () => from.resume());
        }
      });
      from.on("close", end);
      from.on("error", end);
    };
    pipe(client, relay, "up");
    pipe(relay, client, "down");
  }

  async close() {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

export { rng } from "./traffic.mjs";
import { rng } from "./traffic.mjs";

/**
 * What both cut tests (Node and Chromium) start from: a relay whose replay window holds the
 * whole run, whether it has acks (two-way cuts need them), a logged seed (CUT_SEED replays a
 * failure), and `plan(sendCut)`: the cut plan for one forwarder, where each of its first `cuts`
 * connections is cut somewhere in its first 3 MB, toward the relay only when `sendCut`.
 */
export async function cutRun(t, driver, cuts) {
  const relay = await startRelay({
    driver,
    env: { RINGRELAY_SESSION_REPLAY_BYTES: String(64 << 20), RINGRELAY_SESSION_BUFFER_BYTES: String(4 << 20) },
  });
  const twoWay = await relayAcks(relay.url);
  const seed = Number(process.env.CUT_SEED ?? Date.now() % 1000000);
  t.diagnostic(`seed ${seed}, two-way ${twoWay}`);
  const rand = rng(seed);
  const plan = (sendCut) => (i) =>
    i < cuts ? { dir: sendCut && rand() < 0.5 ? "up" : "down", at: 1 + Math.floor(rand() * 3e6) } : null;
  return { relay, twoWay, seed, plan };
}
