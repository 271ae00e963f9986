// The client against a bare WebSocket pair, on one relay: messages per second from one peer
// to the other (64 B by default), in alternated rounds, medians. The relay is RINGRELAY_BIN
// (a release build for figures that mean something). Run:
//   RINGRELAY_BIN=target/release/ringrelay npm run bench -- [messages] [rounds] [bytes]
// The client resumes (resume=, events=1): with a relay that acks, every message is also
// kept in its outbox until the relay's ack frees it.
import { RelayClient } from "../dist/index.js";
import { startRelay, relayAcks } from "../test/e2e/harness.mjs";

const [COUNT = 200000, ROUNDS = 5, BYTES = 64] = process.argv.slice(2).map(Number);
const payload = "x".repeat(BYTES);

function bare(url, session) {
  return new Promise((resolve, reject) => {
    const a = new WebSocket(`${url}/v1/relay/${session}?role=a`);
    const b = new WebSocket(`${url}/v1/relay/${session}?role=b`);
    let got = 0;
    let t0 = 0;
    b.onmessage = () => {
      if (++got === COUNT) {
        const s = (performance.now() - t0) / 1000;
        a.close();
        b.close();
        resolve(COUNT / s);
      }
    };
    let open = 0;
    const go = () => {
      if (++open < 2) return;
      t0 = performance.now();
      let sent = 0;
      const pump = () => {
        while (sent < COUNT) {
          if (a.bufferedAmount > 1 << 20) return setTimeout(pump, 0);
          a.send(payload);
          sent++;
        }
      };
      pump();
    };
    a.onopen = go;
    b.onopen = go;
    a.onerror = b.onerror = reject;
  });
}

function client(url, session) {
  return new Promise((resolve, reject) => {
    const a = new RelayClient({ url, session, role: "a" });
    const b = new RelayClient({ url, session, role: "b" });
    let got = 0;
    let t0 = 0;
    b.on("message", () => {
      if (++got === COUNT) {
        const s = (performance.now() - t0) / 1000;
        Promise.all([a.close(), b.close()]).then(() => resolve(COUNT / s));
      }
    });
    let open = 0;
    const go = (s) => {
      if (s !== "open" || ++open !== 2) return;
      t0 = performance.now();
      let sent = 0;
      // The same flow control as the bare pair, plus the outbox's bound.
      const raw = () => a.outboxBytes > 4 << 20;
      const pump = () => {
        while (sent < COUNT) {
          if (raw()) return setTimeout(pump, 0);
          a.send(payload);
          sent++;
          if (sent % 4096 === 0) return setTimeout(pump, 0);
        }
      };
      pump();
    };
    a.on("state", go);
    b.on("state", go);
    a.on("error", reject);
    b.on("error", reject);
  });
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const relay = await startRelay({ driver: process.env.RINGRELAY_DRIVER ?? "io_uring" });
try {
  const acks = await relayAcks(relay.url);
  const res = { bare: [], client: [] };
  for (let r = 0; r < ROUNDS; r++) {
    res.bare.push(await bare(relay.url, `bench-bare-${r}`));
    res.client.push(await client(relay.url, `bench-client-${r}`));
  }
  const ratios = res.bare.map((b, i) => res.client[i] / b);
  const fmt = (xs) => xs.map((x) => Math.round(x)).join(" ");
  console.log(`relay acks: ${acks}; ${COUNT} messages of ${BYTES} B, ${ROUNDS} rounds alternated`);
  console.log(`bare WebSocket pair: median ${Math.round(median(res.bare))} msg/s (${fmt(res.bare)})`);
  console.log(`RelayClient pair:    median ${Math.round(median(res.client))} msg/s (${fmt(res.client)})`);
  console.log(`client / bare, per round: ${ratios.map((r) => r.toFixed(3)).join(" ")}; median ${median(ratios).toFixed(3)}`);
} finally {
  await relay.stop();
}
