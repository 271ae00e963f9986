// RelayAgent against a fake socket and a fake fetch: it runs only requests carrying its
// connection's bridge key, answers in ringrelay agent's shape, and refuses remote targets.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { RelayAgent, forwardable, answerMessage, loopbackTarget } from "../dist/index.js";
import { FakeSocket, until } from "./fake-socket.mjs";

beforeEach(() => {
  FakeSocket.all = [];
});

function fakeFetch(calls) {
  return async (url, init) => {
    calls.push({ url, init });
    return {
      status: 200,
      headers: new Headers([["content-type", "text/plain"], ["connection", "keep-alive"], ["content-length", "2"], ["x-a", "1"]]),
      body: null,
      text: async () => "ok",
      arrayBuffer: async () => new TextEncoder().encode("ok").buffer,
    };
  };
}

const request = (id, key, extra = {}) =>
  JSON.stringify({ type: "http_request", id, relay_key: key, method: "GET", path: "/users?x=1", headers: [["accept", "*/*"], ["host", "relay"], ["connection", "close"]], body_b64: "", ...extra });

test("only requests carrying the connection's bridge key are run and answered", async () => {
  const calls = [];
  const agent = new RelayAgent({ url: "ws://relay.test", session: "s1", target: "http://127.0.0.1:3000/api", WebSocket: FakeSocket, fetch: fakeFetch(calls) });
  const started = agent.start();
  await until(() => FakeSocket.all.length === 1);
  const ws = FakeSocket.last;
  assert.equal(ws.param("role"), "agent");
  assert.equal(ws.param("resume"), null, "an agent does not resume: its requests die with the connection");
  ws.connected({ bridge_key: "b".repeat(32), role: "agent" });
  await started;
  // The other peer's forgery (the relay would close it with 1008 first; this is the second guard).
  ws.push(request("f".repeat(32), "x".repeat(32)));
  ws.push(request("0".repeat(32), undefined));
  ws.push(request("1".repeat(32), "b".repeat(32)));
  await until(() => ws.sent.length === 1, "the answer");
  assert.equal(agent.foreign, 2);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, "http://127.0.0.1:3000/api/users?x=1");
  assert.deepEqual(calls[0].init.headers, [["accept", "*/*"], ["accept-encoding", "identity"]]);
  assert.equal(calls[0].init.redirect, "manual");
  const answer = JSON.parse(ws.sent[0]);
  assert.ok(ws.sent[0].startsWith(`{"type":"http_response","id":"${"1".repeat(32)}",`), "type first, id second");
  assert.equal(answer.status, 200);
  assert.deepEqual(answer.headers, [["content-type", "text/plain"], ["x-a", "1"]]);
  assert.equal(answer.body_b64, "b2s=");
  await agent.stop();
});

test("a malformed request with a readable id gets 400 bad_bridge_request; a busy agent 503", async () => {
  const calls = [];
  let release;
  const slow = async (url, init) => {
    await new Promise((r) => (release = r));
    return fakeFetch(calls)(url, init);
  };
  const agent = new RelayAgent({ url: "ws://relay.test", session: "s1", target: "http://localhost:3000", WebSocket: FakeSocket, fetch: slow, maxConcurrency: 1 });
  const started = agent.start();
  await until(() => FakeSocket.all.length === 1);
  const ws = FakeSocket.last;
  ws.connected({});
  await started;
  ws.push(request("a1", undefined, { path: "no-slash" }));
  ws.push(request("a2", undefined));
  ws.push(request("a3", undefined));
  await until(() => ws.sent.length === 2);
  const [bad, busy] = ws.sent.map((s) => JSON.parse(s));
  assert.equal(bad.status, 400);
  assert.equal(atob(bad.body_b64), '{"code":"bad_bridge_request","error":"the agent could not read the bridged request"}');
  assert.equal(busy.id, "a3");
  assert.equal(busy.status, 503);
  assert.deepEqual(busy.headers, [["content-type", "application/json"], ["retry-after", "1"]]);
  release();
  await until(() => ws.sent.length === 3);
  await agent.stop();
});

test("a fatal refusal rejects start()", async () => {
  const agent = new RelayAgent({ url: "ws://relay.test", session: "s1", target: "http://127.0.0.1:1", WebSocket: FakeSocket });
  const started = agent.start();
  await until(() => FakeSocket.all.length === 1);
  FakeSocket.last.connected({});
  FakeSocket.last.drop(4001, "replaced");
  await started; // it was open once
  const again = new RelayAgent({ url: "ws://relay.test", session: "s2", target: "http://127.0.0.1:1", WebSocket: FakeSocket,
    fetch: async () => ({ status: 401, headers: { forEach() {} }, text: async () => '{"code":"token_missing","error":"a token is required"}' }) });
  const p = again.start();
  await until(() => FakeSocket.all.length === 2);
  FakeSocket.last.drop(1006);
  await assert.rejects(p, (e) => e.code === 401);
});

test("hop-by-hop headers never cross; targets must be loopback http", () => {
  assert.deepEqual(
    forwardable([["Connection", "keep-alive, X-Hop"], ["X-Hop", "1"], ["Proxy-Foo", "1"], ["TE", "x"], ["Accept", "a"]]),
    [["accept", "a"]],
  );
  assert.equal(answerMessage("i", { status: 204, headers: [], body: new Uint8Array() }), '{"type":"http_response","id":"i","status":204,"headers":[],"body_b64":""}');
  assert.equal(loopbackTarget("http://[::ffff:127.0.0.1]:80").hostname, "[::ffff:7f00:1]");
  for (const bad of ["http://192.168.1.1", "http://localhost.evil.com", "http://127.0.0.1.nip.io", "file:///etc/passwd"]) assert.throws(() => loopbackTarget(bad), TypeError, bad);
});
