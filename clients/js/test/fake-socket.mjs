// A fake WebSocket for the client's state machine: the test plays the relay.
export class FakeSocket {
  static all = [];
  static get last() {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }
  constructor(url) {
    this.url = new URL(url);
    this.binaryType = "blob";
    this.readyState = 0;
    this.bufferedAmount = 0;
    this.sent = [];
    this.closedWith = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
  }
  send(data) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(data);
  }
  close(code, reason) {
    this.closedWith = { code, reason };
    if (this.readyState >= 2) return;
    this.readyState = 2;
    setTimeout(() => this.drop(code ?? 1005, reason ?? ""), 0);
  }
  // --- the relay's side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  connected(fields = {}) {
    if (this.readyState === 0) this.open();
    this.key = fields.key ?? "k".repeat(32);
    this.push(JSON.stringify({ type: "connected", ts: 1, session: "s1", role: "desktop", peer_present: false, key: this.key, ...fields }));
  }
  event(type, fields = {}) {
    this.push(JSON.stringify({ type, ts: 1, ...fields, key: this.key }));
  }
  push(data) {
    this.onmessage?.({ data });
  }
  /** An error event with no close after it (Node 20's WebSocket after a refused upgrade). */
  fail() {
    this.onerror?.({});
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  param(name) {
    return this.url.searchParams.get(name);
  }
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** Waits until `pred()` holds (bounded). */
export async function until(pred, what = "condition", ms = 2000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}
