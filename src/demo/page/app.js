// The demo page's client: one WebSocket to /v1/relay/{session} with events on. Relay events
// go to the events list, everything else to the messages. The peer can send text shaped
// exactly like an event, so the shape proves nothing: the first message after the upgrade
// is the relay's `connected` (nothing the peer sends can come before it) and hands this
// connection its `key`; a later text is an event only when it carries that key.
// No external requests and no inline script: the page's Content-Security-Policy allows only
// this origin.
"use strict";

const $ = (id) => document.getElementById(id);
let ws = null;
// This connection's event key, from its `connected`; null until then, false when the first
// message was something else (no text is an event then).
let eventKey = null;

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
  const open = state === "open";
  $("message").disabled = !open;
  $("send").disabled = !open;
  $("disconnect").disabled = !open && state !== "connecting";
  $("connect").disabled = open || state === "connecting";
}

function parseObject(text) {
  if (!text.startsWith("{")) return null;
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

// The relay's event in `text`, or null for a message from the peer. The first text of a
// connection must be `connected`, and its key is kept; after it, only a text with that key.
function asEvent(text) {
  const v = parseObject(text);
  if (eventKey === null) {
    if (v && v.type === "connected" && typeof v.key === "string" && v.key.length === 32) {
      eventKey = v.key;
      return v;
    }
    return null;
  }
  return v && v.key === eventKey && typeof v.type === "string" ? v : null;
}

function describeEvent(e) {
  switch (e.type) {
    case "connected":
      return `connected to ${e.session} as ${e.role}` + (e.peer_present ? ", peer present" : ", waiting for a peer");
    case "peer_connected":
      return `peer ${e.role} connected`;
    case "peer_disconnected":
      return `peer ${e.role} disconnected (${e.code})`;
    case "error":
      return `error: ${e.error}` + (e.detail ? ` (${e.detail})` : "");
    default:
      return e.type;
  }
}

function hex(buf) {
  return Array.from(new Uint8Array(buf).slice(0, 32), (b) => b.toString(16).padStart(2, "0")).join(" ");
}

function connect(ev) {
  ev.preventDefault();
  const session = $("session").value.trim();
  const role = $("role").value.trim();
  const token = $("token").value.trim();
  const params = new URLSearchParams({ events: "1" });
  if (role) params.set("role", role);
  if (token) params.set("token", token);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/v1/relay/${encodeURIComponent(session)}?${params}`;
  shareLink();
  setStatus("connecting", "Connecting…");
  eventKey = null;
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => setStatus("open", `Connected to ${session}`);
  ws.onmessage = (m) => {
    if (typeof m.data !== "string") {
      if (eventKey === null) eventKey = false;
      add("messages", `binary, ${m.data.byteLength} bytes: ${hex(m.data)}`, "in binary");
      return;
    }
    const e = asEvent(m.data);
    if (e) add("events", describeEvent(e), e.type);
    else add("messages", m.data, "in");
    // The first text was not the relay's `connected`: nothing can be trusted as an event.
    if (eventKey === null) eventKey = false;
  };
  ws.onclose = (c) => {
    setStatus("closed", `Closed (${c.code}${c.reason ? ": " + c.reason : ""})`);
    ws = null;
  };
  ws.onerror = () => add("events", "connection error", "error");
}

function send(ev) {
  ev.preventDefault();
  const text = $("message").value;
  if (!ws || ws.readyState !== WebSocket.OPEN || text === "") return;
  ws.send(text);
  add("messages", text, "out");
  $("message").value = "";
}

const fromHash = new URLSearchParams(location.hash.slice(1)).get("session");
$("session").value = fromHash || randomSession();
shareLink();
$("session").addEventListener("input", shareLink);
$("join").addEventListener("submit", connect);
$("compose").addEventListener("submit", send);
$("disconnect").addEventListener("click", () => ws && ws.close(1000, "bye"));
