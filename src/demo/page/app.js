// The demo page's client: a RelayClient (clients/js, the same file as the package's
// dist/index.js, served as /demo/ringrelay-client.js) on /v1/relay/{session}. It reconnects
// by itself and resumes both ways, so a tab survives a network change or a sleeping laptop:
// what was sent while away is delivered once, in order. The client tells the relay's events
// from the peer's messages by the key of its own `connected` (docs/protocol.md), so text
// the peer shapes like an event is shown as the message it is.
// No external requests and no inline script: the page's Content-Security-Policy allows only
// this origin.
import { RelayClient } from "./ringrelay-client.js";

const $ = (id) => document.getElementById(id);
let client = null;
// The tab's current WebSocket, for the browser tests (its `extensions`).
window.ws = null;
class TrackedWebSocket extends WebSocket {
  constructor(url) {
    super(url);
    window.ws = this;
  }
}

function randomSession() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return "demo-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function shareLink() {
  const url = new URL(location.href);
  url.hash = "session=" + encodeURIComponent($("session").value);
  $("share").href = url.toString();
  $("share").textContent = url.toString();
}

function add(list, text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  $(list).appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
  const live = state === "open" || state === "reconnecting";
  $("message").disabled = !live;
  $("send").disabled = !live;
  $("disconnect").disabled = state === "closed" || state === "idle";
  $("connect").disabled = state !== "closed" && state !== "idle";
}

function hex(bytes) {
  return Array.from(bytes.slice(0, 32), (b) => b.toString(16).padStart(2, "0")).join(" ");
}

function connect(ev) {
  ev.preventDefault();
  const session = $("session").value.trim();
  const role = $("role").value.trim() || undefined;
  const token = $("token").value.trim() || undefined;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  shareLink();
  const c = new RelayClient({ url: `${scheme}//${location.host}`, session, role, token, WebSocket: TrackedWebSocket });
  client = c;
  let greeted = false;
  c.on("state", (state) => {
    if (client !== c) return;
    if (state === "open") greeted = false;
    const text = {
      connecting: "Connecting…",
      open: `Connected to ${session}`,
      reconnecting: "Connection lost: reconnecting (messages you send now are kept)",
      closed: "Closed",
    }[state];
    setStatus(state, text);
  });
  c.on("peer", (p) => {
    if (p.initial) {
      // The first of each connection: how `connected` found the session.
      if (!greeted) add("events", `connected to ${session} as ${c.clientRole}` + (p.present ? ", peer present" : ", waiting for a peer"), "connected");
      greeted = true;
    } else if (p.present) add("events", `peer ${p.role} connected`, "peer_connected");
    else add("events", `peer ${p.role} disconnected (${p.code})`, "peer_disconnected");
  });
  c.on("message", (data) => {
    if (typeof data === "string") add("messages", data, "in");
    else add("messages", `binary, ${data.byteLength} bytes: ${hex(data)}`, "in binary");
  });
  c.on("error", (e) => add("events", `error: ${e.message}`, "error"));
}

function send(ev) {
  ev.preventDefault();
  const text = $("message").value;
  if (!client || text === "") return;
  try {
    client.send(text);
  } catch (e) {
    add("events", `not sent: ${e.message}`, "error");
    return;
  }
  add("messages", text, "out");
  $("message").value = "";
}

const fromHash = new URLSearchParams(location.hash.slice(1)).get("session");
$("session").value = fromHash || randomSession();
shareLink();
$("session").addEventListener("input", shareLink);
$("join").addEventListener("submit", connect);
$("compose").addEventListener("submit", send);
$("disconnect").addEventListener("click", () => client && client.close());
