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
import { BIN, DRIVERS, cutRun, CutForwarder } from "./harness.mjs";
import { rng, pump, receiver } from "./traffic.mjs";

const COUNT = Number(process.env.CUT_MESSAGES ?? 10000);
const CUTS = 8;

for (const driver of DRIVERS) {
  test(`10,000 messages each way, exactly once and in order, through random cuts (${driver})`, { skip: !BIN && "RINGRELAY_BIN not set", timeout: 180000 }, async (t) => {
    const { relay, twoWay, seed, plan } = await cutRun(t, driver, CUTS);
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
      const atB = receiver(b, "A", COUNT);
      const atA = twoWay ? receiver(a, "B", COUNT) : null;
      const sends = [pump(a, "A", rng(seed + 1), COUNT)];
      if (twoWay) sends.push(pump(b, "B", rng(seed + 2), COUNT));
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
