// The cut test's traffic, shared by Node (cut.e2e.mjs) and the page in Chromium
// (browser.e2e.mjs): no Node imports. Numbered messages, text and binary, some larger than
// the relay's read buffer, each checkable on arrival (order, no gap, no double, not torn).

/** A small, seedable random source (the tests print the seed so a failure can be replayed). */
export function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/** Message `seq` from `tag`: text "tag:seq:pad" or binary [tag, seq(4), pattern...]. */
export function message(tag, seq, rand) {
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

/** The number of a message from `tag`; throws on one that is not whole. */
export function seqOf(data, tag) {
  if (typeof data === "string") {
    const [t, n, pad] = data.split(":", 3);
    if (t !== tag || pad === undefined || /[^x]/.test(pad)) throw new Error(`not a whole message from ${tag}: ${data.slice(0, 40)}`);
    return Number(n);
  }
  if (data[0] !== tag.charCodeAt(0)) throw new Error(`binary message not from ${tag}`);
  const seq = new DataView(data.buffer, data.byteOffset).getUint32(1);
  for (let i = 5; i < data.length; i++) if (data[i] !== ((seq + i) & 0xff)) throw new Error(`binary message ${seq} torn at byte ${i}`);
  return seq;
}

/** Sends `count` messages, keeping at most 4 MiB waiting for acks, then waits for the last ack. */
export async function pump(client, tag, rand, count) {
  for (let seq = 1; seq <= count; seq++) {
    const m = message(tag, seq, rand);
    if (client.outboxBytes + m.length > 4 << 20) await client.flush();
    client.send(m);
    if (seq % 200 === 0) await new Promise((r) => setTimeout(r, 0));
  }
  await client.flush();
}

/** Resolves once `count` messages from `tag` arrived, each once and in order; rejects at the first that is not. */
export function receiver(client, tag, count) {
  let next = 1;
  const all = new Promise((resolve, reject) => {
    client.on("message", (data) => {
      let seq;
      try {
        seq = seqOf(data, tag);
      } catch (e) {
        return reject(e);
      }
      if (seq !== next) return reject(new Error(`${tag}: got message ${seq}, expected ${next} (${seq < next ? "doubled" : "lost"})`));
      next++;
      if (next > count) resolve();
    });
    client.on("error", (e) => {
      if (e.fatal || e.code === "resume_gap") reject(e);
    });
  });
  return { all, got: () => next - 1 };
}
