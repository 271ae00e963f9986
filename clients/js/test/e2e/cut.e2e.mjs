// Exactly once and in order through dropped connections: two RelayClients on one session,
// each behind a TCP forwarder of this test's own that cuts its connections at random byte
// offsets (mid-frame, mid-handshake), while 10,000 numbered messages go each way, some
// larger than the relay's read buffer, text and binary.
//
// Two-way cuts need the relay's acks (`acked` in `connected`, `ack` events). Against a relay
// without them the test runs one way, as far as that relay can promise: the receiver is cut
// and resumes, the sender is not (a relay without acks cannot tell it what it got).
// Before this client: no client shipped with ringrelay resumed at all; a bare WebSocket
// loses whatever was in flight at each cut.
import { test } from "node:test";
import assert from "node:assert/strict";
import { RelayClient } from "../../dist/index.js";
import { BIN, DRIVERS, startRelay, relayAcks, CutForwarder, rng } from "./harness.mjs";

const COUNT = Number(process.env.CUT_MESSAGES ?? 10000);
const CUTS = 8;

/** Message `seq` from `tag`: text "tag:seq:pad" or binary [tag, seq(4), pad...]. */
function message(tag, seq, rand) {
  const big = rand() < 0.04;
  const len = big ? 16384 + Math.floor(rand() * 48000) : Math.floor(rand() * 200);
  if (rand() < 0.3) {
    const b = new Uint8Array(5 + len);
    b[0] = tag.charCodeAt(0);
    new DataView(b.buffer).setUint32(1, seq);
    for (let i = 5; i < b.length; i++) b[i] = (seq + i) & 0xff;
    return b;
  }
  return `${tag}:${seq}:` + "x".repeat(len);
}

function seqOf(data, tag) {
  if (typeof data === "string") {
    const [t, n] = data.split(":", 2);
    assert.equal(t, tag, "a message from the other peer");
    return Number(n);
  }
  assert.equal(data[0], tag.charCodeAt(0));
  const seq = new DataView(data.buffer, data.byteOffset).getUint32(1);
  for (let i = 5; i < data.length; i++) if (data[i] !== ((seq + i) & 0xff)) assert.fail(`binary message ${seq} torn at byte ${i}`);
  return seq;
}

async function pump(client, tag, rand) {
  for (let seq = 1; seq <= COUNT; seq++) {
    const m = message(tag, seq, rand);
    const size = typeof m === "string" ? m.length : m.length;
    if (client.outboxBytes + size > (4 << 20)) await client.flush();
    client.send(m);
    if (seq % 200 === 0) await new Promise((r) => setImmediate(r));
  }
  await client.flush();
}

function receiver(client, tag) {
  let next = 1;
  let problem = null;
  const all = new Promise((resolve, reject) => {
    client.on("message", (data) => {
      const seq = seqOf(data, tag);
      if (seq !== next) {
        problem = new Error(`${tag}: got message ${seq}, expected ${next} (${seq < next ? "doubled" : "lost"})`);
        reject(problem);
      }
      next++;
      if (next > COUNT) resolve();
    });
    client.on("error", (e) => {
      if (e.fatal || e.code === "resume_gap") reject(e);
    });
  });
  return { all, got: () => next - 1 };
}

for (const driver of DRIVERS) {
  test(`10,000 messages each way, exactly once and in order, through random cuts (${driver})`, { skip: !BIN && "RINGRELAY_BIN not set", timeout: 180000 }, async (t) => {
    const relay = await startRelay({
      driver,
      env: { RINGRELAY_SESSION_REPLAY_BYTES: String(64 << 20), RINGRELAY_SESSION_BUFFER_BYTES: String(4 << 20) },
    });
    const twoWay = await relayAcks(relay.url);
    const seed = Number(process.env.CUT_SEED ?? Date.now() % 1000000);
    t.diagnostic(`seed ${seed}, two-way ${twoWay}`);
    const rand = rng(seed);
    // Each connection of the first CUTS gets a cut somewhere in its first 3 MB; later ones pass.
    const plan = (sendCut) => (i) =>
      i < CUTS ? { dir: sendCut && rand() < 0.5 ? "up" : "down", at: 1 + Math.floor(rand() * 3e6) } : null;
    const fa = new CutForwarder(relay.port, plan(twoWay));
    const fb = new CutForwarder(relay.port, twoWay ? plan(true) : plan(false));
    const [pa, pb] = [await fa.listen(), await fb.listen()];
    const session = `cut-${driver}-${seed}`;
    // CUT_CONTROL=1 turns resume off, to see this test fail without it.
    const opts = { session, backoff: { initialMs: 5, maxMs: 100 }, stallMs: 5000, resume: !process.env.CUT_CONTROL };
    // One way (a relay without acks): A is never cut.
    const faPass = twoWay ? pa : relay.port;
    const a = new RelayClient({ ...opts, url: `ws://127.0.0.1:${faPass}`, role: "desktop" });
    const b = new RelayClient({ ...opts, url: `ws://127.0.0.1:${pb}`, role: "mobile" });
    try {
      const atB = receiver(b, "A");
      const atA = twoWay ? receiver(a, "B") : null;
      const sends = [pump(a, "A", rng(seed + 1))];
      if (twoWay) sends.push(pump(b, "B", rng(seed + 2)));
      await Promise.all([atB.all, ...(atA ? [atA.all] : []), ...sends]);
      t.diagnostic(`cuts: ${fa.cuts + fb.cuts} (${fa.connections + fb.connections} connections through the forwarders)`);
      assert.ok(fb.cuts >= 3, `the receiver was cut (${fb.cuts})`);
      if (twoWay) assert.ok(fa.cuts >= 3, `the sender was cut (${fa.cuts})`);
    } finally {
      await Promise.all([a.close(), b.close()]);
      await fa.close();
      await fb.close();
      await relay.stop();
    }
  });
}
