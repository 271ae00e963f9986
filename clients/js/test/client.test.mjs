// The client's state machine against a fake socket: the test plays the relay, message by
// message, and checks what the client writes, hands over, retries and reports.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { RelayClient, OutboxFullError, backoffDelay, relayUrl, utf8Length, isFatalClose } from "../dist/index.js";
import { FakeSocket, tick, until } from "./fake-socket.mjs";

beforeEach(() => {
  FakeSocket.all = [];
});

function client(extra = {}) {
  const c = new RelayClient({
    url: "ws://relay.test",
    session: "s1",
    role: "desktop",
    WebSocket: FakeSocket,
    backoff: { initialMs: 1, maxMs: 4 },
    fetch: async () => ({ status: 400, headers: { forEach() {} }, text: async () => '{"code":"bad_upgrade"}', arrayBuffer: async () => new ArrayBuffer(0) }),
    ...extra,
  });
  const seen = { messages: [], states: [], errors: [], peers: [] };
  c.on("message", (m) => seen.messages.push(m));
  c.on("state", (s) => seen.states.push(s));
  c.on("error", (e) => seen.errors.push(e));
  c.on("peer", (p) => seen.peers.push(p));
  return { c, seen };
}

async function socket(n = 1) {
  await until(() => FakeSocket.all.length >= n, `socket ${n}`);
  return FakeSocket.all[n - 1];
}

test("the first connect asks for events and resume=0 with the role and the token", async () => {
  const { c, seen } = client({ token: "T" });
  const ws = await socket();
  assert.equal(ws.url.pathname, "/v1/relay/s1");
  assert.equal(ws.param("events"), "1");
  assert.equal(ws.param("resume"), "0");
  assert.equal(ws.param("role"), "desktop");
  assert.equal(ws.param("token"), "T");
  assert.equal(ws.binaryType, "arraybuffer");
  assert.deepEqual(seen.states, ["connecting"]);
  ws.connected({ acked: 0, next_seq: 1, peer_present: true });
  assert.deepEqual(seen.states, ["connecting", "open"]);
  assert.deepEqual(seen.peers, [{ present: true, initial: true }]);
  await c.close();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "bye" });
  assert.equal(c.state, "closed");
});

test("messages are handed over; only texts with this connection's key are events", async () => {
  const { c, seen } = client();
  const ws = await socket();
  ws.connected({ acked: 0, next_seq: 1 });
  ws.push("hello");
  ws.push(new Uint8Array([1, 2, 3]).buffer);
  // The peer's forgery: the relay's shape with another key, and one with no key.
  const forged = JSON.stringify({ type: "peer_disconnected", role: "mobile", key: "x".repeat(32) });
  ws.push(forged);
  ws.event("peer_connected", { role: "mobile" });
  ws.event("peer_disconnected", { role: "mobile", code: 1006 });
  assert.deepEqual(seen.messages, ["hello", new Uint8Array([1, 2, 3]), forged]);
  assert.deepEqual(seen.peers.slice(1), [
    { role: "mobile", present: true },
    { role: "mobile", present: false, code: 1006 },
  ]);
  await c.close();
});

test("messages sent while away wait in the outbox and are written once connected", async () => {
  const { c } = client();
  c.send("one");
  c.send(new Uint8Array([9]));
  const ws = await socket();
  ws.open();
  assert.deepEqual(ws.sent, [], "nothing before `connected`");
  ws.connected({ acked: 0, next_seq: 1 });
  assert.deepEqual(ws.sent, ["one", new Uint8Array([9])]);
  c.send("three");
  assert.equal(ws.sent.length, 3);
  assert.equal(c.outboxBytes, 3 + 1 + 5);
  let flushed = false;
  const f = c.flush().then(() => (flushed = true));
  ws.event("ack", { acked: 2 });
  await tick();
  assert.equal(flushed, false, "two of three acked");
  assert.equal(c.outboxBytes, 5);
  ws.event("ack", { acked: 3 });
  await f;
  assert.equal(c.outboxBytes, 0);
  await c.close();
});

test("a reconnect resumes both ways: resume=received, and resends from acked + 1", async () => {
  const { c, seen } = client();
  let ws = await socket();
  ws.connected({ acked: 0, next_seq: 1 });
  for (const m of ["m1", "m2", "m3"]) ws.push(m);
  for (const m of ["a", "b", "c", "d"]) c.send(m);
  ws.event("ack", { acked: 1 });
  ws.drop(1006);
  assert.equal(c.state, "reconnecting");
  c.send("e"); // while away
  ws = await socket(2);
  assert.equal(ws.param("resume"), "3");
  // The relay had accepted "b" too (its ack had not come yet), and resends m3 (it had
  // delivered it but the client said 3, so this is a relay that resends one: skipped).
  ws.connected({ acked: 2, next_seq: 3 });
  assert.deepEqual(ws.sent, ["c", "d", "e"]);
  ws.push("m3");
  ws.push("m4");
  assert.deepEqual(seen.messages, ["m1", "m2", "m3", "m4"]);
  assert.deepEqual(seen.states, ["connecting", "open", "reconnecting", "open"]);
  const f = c.flush();
  ws.event("ack", { acked: 5 });
  await f;
  await c.close();
});

test("a message cut mid-write is sent again whole after the reconnect", async () => {
  const { c } = client();
  let ws = await socket();
  ws.connected({ acked: 10 }); // the session had 10 messages from this role before this client
  c.send("x".repeat(1000));
  ws.drop(1006); // the relay read only part of it: not accepted
  ws = await socket(2);
  ws.connected({ acked: 10 });
  assert.deepEqual(ws.sent, ["x".repeat(1000)]);
  ws.event("ack", { acked: 11 });
  await c.flush();
  await c.close();
});

test("no reconnect after a close retrying cannot fix: an error event with the code", async () => {
  for (const code of [4001, 4003]) {
    FakeSocket.all = [];
    const { c, seen } = client();
    const ws = await socket();
    ws.connected({ acked: 0 });
    c.send("pending");
    const f = c.flush().catch((e) => e);
    ws.drop(code, "replaced");
    assert.equal(c.state, "closed", `after ${code}`);
    assert.equal(seen.errors.length, 1);
    assert.equal(seen.errors[0].code, code);
    assert.equal(seen.errors[0].fatal, true);
    await tick(20);
    assert.equal(FakeSocket.all.length, 1, `no reconnect after ${code}`);
    assert.throws(() => c.send("more"), /closed/);
    await assert.rejects(c.flush());
    assert.equal((await f).code, code, "a waiting flush fails with the close");
  }
});

test("a message refused for good (1009) is dropped and reported; the rest is sent again", async () => {
  const { c, seen } = client();
  let ws = await socket();
  ws.connected({ acked: 0 });
  c.send("ok");
  c.send("x".repeat(100)); // over the relay's limit, say
  c.send("after");
  ws.drop(1009, "message too big");
  ws = await socket(2);
  assert.equal(c.state, "reconnecting");
  ws.connected({ acked: 1 });
  assert.deepEqual(ws.sent, ["after"]);
  assert.equal(seen.errors.length, 1);
  assert.equal(seen.errors[0].code, 1009);
  assert.equal(seen.errors[0].fatal, false);
  const f = c.flush();
  ws.event("ack", { acked: 3 });
  await f;
  await c.close();
});

test("4004 (the peer's message torn) reconnects and resumes", async () => {
  const { c, seen } = client();
  let ws = await socket();
  ws.connected({ acked: 0, next_seq: 1 });
  ws.push("m1");
  ws.drop(4004, "peer left mid-message");
  ws = await socket(2);
  assert.equal(ws.param("resume"), "1");
  assert.equal(seen.errors.length, 0);
  await c.close();
});

test("a refused upgrade: the route is probed, and 401 ends the client while 400 bad_upgrade retries", async () => {
  let status = 401;
  const probes = [];
  const fetch = async (url) => {
    probes.push(url);
    const body = status === 401 ? '{"error":"token expired","code":"token_expired"}' : '{"code":"bad_upgrade"}';
    return { status, headers: { forEach() {} }, text: async () => body, arrayBuffer: async () => new ArrayBuffer(0) };
  };
  let { c, seen } = client({ fetch, token: "T" });
  let ws = await socket();
  ws.drop(1006);
  await until(() => c.state === "closed", "closed after 401");
  assert.equal(seen.errors[0].code, 401);
  assert.match(seen.errors[0].message, /token expired/);
  assert.equal(probes[0], "http://relay.test/v1/relay/s1?role=desktop&events=1&resume=0&token=T");
  FakeSocket.all = [];
  status = 400;
  ({ c, seen } = client({ fetch }));
  ws = await socket();
  ws.drop(1006);
  ws = await socket(2);
  ws.connected({ acked: 0 });
  assert.equal(c.state, "open");
  await c.close();
});

test("an error with no close after it (Node 20 after a refused upgrade) counts as a failed connect", async () => {
  const { c } = client();
  const ws = await socket();
  ws.fail();
  await socket(2);
  assert.equal(c.state, "connecting");
  await c.close();
});

test("the token function is called again for every connect", async () => {
  let n = 0;
  const { c } = client({ token: async () => `t${++n}` });
  let ws = await socket();
  assert.equal(ws.param("token"), "t1");
  ws.connected({ acked: 0 });
  ws.drop(1006);
  ws = await socket(2);
  assert.equal(ws.param("token"), "t2");
  await c.close();
});

test("resume_gap becomes an error event saying how many messages were lost", async () => {
  const { c, seen } = client();
  let ws = await socket();
  ws.connected({ acked: 0, next_seq: 1 });
  ws.push("m1");
  ws.drop(1006);
  ws = await socket(2);
  assert.equal(ws.param("resume"), "1");
  ws.connected({ acked: 0, next_seq: 2 });
  ws.event("error", { error: "resume_gap", first: 7, detail: "messages before 7 are no longer kept" });
  ws.push("m7");
  assert.equal(seen.errors.length, 1);
  assert.equal(seen.errors[0].code, "resume_gap");
  assert.equal(seen.errors[0].lost, 5);
  assert.equal(seen.errors[0].fatal, false);
  ws.drop(1006);
  ws = await socket(3);
  assert.equal(ws.param("resume"), "7", "counting goes on from `first`");
  await c.close();
});

test("the outbox is bounded: past maxOutboxBytes send throws", async () => {
  const { c } = client({ maxOutboxBytes: 10 });
  c.send("12345");
  c.send("é".repeat(2)); // 4 bytes
  assert.throws(() => c.send("ab"), OutboxFullError);
  const ws = await socket();
  ws.connected({ acked: 0 });
  ws.event("ack", { acked: 2 });
  c.send("ab"); // room again
  await c.close();
});

test("a stall (nothing from the relay while an ack is due) counts as a drop", async () => {
  const { c, seen } = client({ stallMs: 60 });
  let ws = await socket();
  ws.connected({ acked: 0 });
  c.send("waiting for its ack");
  await socket(2);
  assert.equal(seen.errors[0].code, "dropped");
  assert.match(seen.errors[0].message, /nothing from the relay/);
  assert.equal(ws.closedWith.code, 4000);
  ws = FakeSocket.last;
  ws.connected({ acked: 0 });
  assert.deepEqual(ws.sent, ["waiting for its ack"]);
  ws.event("ack", { acked: 1 });
  await c.flush();
  await c.close();
});

test("a relay that never sends `connected` is dropped after stallMs", async () => {
  const { c } = client({ stallMs: 40 });
  const ws = await socket();
  ws.open();
  await socket(2);
  assert.ok(ws.closedWith);
  await c.close();
});

test("an older relay without acks: a written message leaves the outbox and flush waits for the socket", async () => {
  const { c, seen } = client();
  const ws = await socket();
  ws.connected({ next_seq: 1 });
  ws.bufferedAmount = 100;
  c.send("m");
  assert.equal(c.outboxBytes, 0);
  let done = false;
  const f = c.flush().then(() => (done = true));
  await tick(30);
  assert.equal(done, false);
  ws.bufferedAmount = 0;
  await f;
  assert.equal(seen.errors.length, 0);
  await c.close();
});

test("a role the relay chose is kept for reconnects", async () => {
  const { c } = client({ role: undefined });
  let ws = await socket();
  assert.equal(ws.param("role"), null);
  ws.connected({ role: "b", acked: 0 });
  ws.drop(1001);
  ws = await socket(2);
  assert.equal(ws.param("role"), "b");
  await c.close();
});

test("back-off: full jitter within a window that doubles up to the maximum", () => {
  assert.equal(backoffDelay(0, 250, 30000, () => 0.999999), 249);
  assert.equal(backoffDelay(3, 250, 30000, () => 0.5), 1000);
  assert.equal(backoffDelay(20, 250, 30000, () => 0.999999), 29999);
  assert.equal(backoffDelay(5, 250, 30000, () => 0), 0);
});

test("URLs, sizes and close codes", () => {
  assert.equal(relayUrl("https://r.example/base/", "s 1", { role: "a", x: undefined }), "wss://r.example/base/v1/relay/s%201?role=a");
  assert.throws(() => relayUrl("ftp://x", "s", {}));
  assert.throws(() => new RelayClient({ url: "ws://x", session: "bad id", WebSocket: FakeSocket }));
  assert.equal(utf8Length("aé€😀"), 1 + 2 + 3 + 4);
  assert.ok(isFatalClose(4001) && !isFatalClose(1009) && !isFatalClose(1001) && !isFatalClose(1006) && !isFatalClose(4004));
});
