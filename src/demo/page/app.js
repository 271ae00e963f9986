// The demo page's client: one WebSocket to /v1/relay/{session} with events on. Relay events
// (JSON text with "type" and "ts") go to the events list, everything else to the messages.
// No external requests and no inline script: the page's Content-Security-Policy allows only
// this origin.
"use strict";

const $ = (id) => document.getElementById(id);
const EVENT_TYPES = new Set(["connected", "peer_connected", "peer_disconnected", "error"]);
let ws = null;

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

function asEvent(text) {
  if (!text.startsWith("{")) return null;
  try {
    const v = JSON.parse(text);
    return v && EVENT_TYPES.has(v.type) && typeof v.ts === "number" ? v : null;
  } catch {
    return null;
  }
}

function describeEvent(e) {
  switch (e.type) {
    case "connected":
      return `connected to ${e.session} as ${e.role}` + (e.peer_present ? ", peer present" : ", waiting for a peer");
    case "peer_connected":
      return `peer ${e.role} connected`;
    case "peer_disconnected":
      return `peer ${e.role} disconnected (${e.code})`;
    default:
      return `error: ${e.error}` + (e.detail ? ` (${e.detail})` : "");
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
  ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => setStatus("open", `Connected to ${session}`);
  ws.onmessage = (m) => {
    if (typeof m.data !== "string") {
      add("messages", `binary, ${m.data.byteLength} bytes: ${hex(m.data)}`, "in binary");
      return;
    }
    const e = asEvent(m.data);
    if (e) add("events", describeEvent(e), e.type);
    else add("messages", m.data, "in");
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
