// ringrelay-client: a client for ringrelay's relay route that survives dropped connections,
// and a bridge agent for a browser tab or Node. No runtime dependencies: it runs on the
// platform's WebSocket (browsers, React Native, Node 22, Node 20 with
// --experimental-websocket) or one passed in. The protocol it speaks is docs/protocol.md
// ("Events") and docs/durability.md ("Resume"); what it promises is docs/clients.md.

// ---------------------------------------------------------------------------------------
// The WebSocket it needs: the standard browser shape, nothing more.

/** The part of the standard `WebSocket` the client uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
}

/** A `WebSocket` constructor: the global one, or one passed in. */
export type WebSocketCtor = new (url: string) => WebSocketLike;

/** What a message is: text arrives as a string, binary as bytes. */
export type RelayData = string | Uint8Array;

export type RelayState = "connecting" | "open" | "reconnecting" | "closed";

/** A token, or a function giving one, called again before every (re)connect. */
export type TokenSource = string | (() => string | Promise<string>);

export interface BackoffOptions {
  /** The first reconnect waits up to this long (default 250 ms). */
  initialMs?: number;
  /** No reconnect waits longer than this (default 30 s). */
  maxMs?: number;
}

export interface RelayClientOptions {
  /** The relay: `wss://relay.example` (`ws:`, `http:` and `https:` work too), optionally with
   * a base path its routes sit under. */
  url: string;
  session: string;
  /** Without one, the relay gives the first free of `a` and `b`, and reconnects keep it. */
  role?: string;
  token?: TokenSource;
  WebSocket?: WebSocketCtor;
  backoff?: BackoffOptions;
  /** Bytes of messages kept until the relay acks them; past it, `send` throws (8 MiB). */
  maxOutboxBytes?: number;
  /** Messages from the peer this session already handed over, for an application that keeps
   * the count across restarts (a page reload): the first connect resumes from there
   * (default 0: everything the relay still keeps for this role). */
  received?: number;
  /** Resume across dropped connections (default true). Off, a message in flight when a
   * connection drops may be lost, as with a bare WebSocket. */
  resume?: boolean;
  /** A connection on which nothing arrives for this long while the client waits for
   * something (the relay's `connected`, or an ack of what it sent) counts as dropped
   * (default 20 s). */
  stallMs?: number;
  /** `fetch`, used after an upgrade failed to learn whether retrying can help (a refused
   * token cannot be fixed by retrying). Default: the global one. */
  fetch?: FetchLike;
  /** For tests: the random source of the back-off's jitter (default Math.random). */
  random?: () => number;
}

export interface PeerEvent {
  /** The other peer's role, when the relay said it. */
  role?: string;
  present: boolean;
  /** When it left: the close code it sent, 1006 if its connection dropped, or the relay's. */
  code?: number;
  /** True for the first of a connection: whether the peer was there when it connected. */
  initial?: boolean;
}

/** An error the client reports. `fatal` ones end the client (state `closed`). */
export class RelayError extends Error {
  /** A close code, an HTTP status, or the relay's error name (`resume_gap`, ...). */
  readonly code: number | string;
  readonly fatal: boolean;
  /** For `resume_gap`: how many messages were lost. */
  readonly lost?: number;
  constructor(message: string, code: number | string, fatal: boolean, lost?: number) {
    super(message);
    this.name = "RelayError";
    this.code = code;
    this.fatal = fatal;
    if (lost !== undefined) this.lost = lost;
  }
}

/** Thrown by `send` when the outbox is full (`maxOutboxBytes`). */
export class OutboxFullError extends Error {
  constructor(readonly outboxBytes: number, readonly messageBytes: number) {
    super(`outbox full: ${outboxBytes} bytes waiting for the relay's ack, message of ${messageBytes}`);
    this.name = "OutboxFullError";
  }
}

export interface RelayClientEvents {
  message: (data: RelayData) => void;
  peer: (ev: PeerEvent) => void;
  state: (state: RelayState) => void;
  error: (err: RelayError) => void;
}

type FetchLike = (input: string, init?: Record<string, unknown>) => Promise<{
  status: number;
  headers: { forEach(cb: (value: string, name: string) => void): void };
  text(): Promise<string>;
  arrayBuffer(): Promise<ArrayBuffer>;
}>;

// ---------------------------------------------------------------------------------------
// Small pieces, exported for the unit tests.

/** Exponential back-off with full jitter: attempt n waits uniformly in [0, min(max, initial·2ⁿ)]. */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random: () => number): number {
  const cap = Math.min(maxMs, initialMs * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor(random() * cap);
}

/** Close codes after which reconnecting cannot help: the client stops and reports them. */
export function isFatalClose(code: number): boolean {
  return code === 4001 /* replaced by a newer connection of this role */ || code === 4003; /* resume gap, events off */
}

/** Close codes that refuse the message being sent for good (docs/durability.md): the relay
 * did not accept it, and sending it again would be refused again. With acks the client
 * reconnects and drops that one message (`acked + 1`); the rest goes on. */
export function isRefusedMessage(code: number): boolean {
  return code === 1002 || code === 1007 || code === 1008 || code === 1009;
}

/** Whether an HTTP status from probing the relay route means a retry cannot succeed. */
export function isFatalStatus(status: number): boolean {
  return status === 400 || status === 401 || status === 403 || status === 404 || status === 405 || status === 426;
}

/** The relay route's URL for one connection. */
export function relayUrl(base: string, session: string, params: Record<string, string | undefined>): string {
  const u = new URL(base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`not a relay URL: ${base}`);
  const path = u.pathname.replace(/\/+$/, "");
  u.pathname = `${path}/v1/relay/${encodeURIComponent(session)}`;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, v);
  u.search = q.toString();
  u.hash = "";
  return u.toString();
}

/** UTF-8 length of a string without encoding it. */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      n += 2; // a surrogate pair: 4 bytes for 2 UTF-16 units
      i++;
    } else n += 2;
  }
  return n;
}

function byteLength(data: RelayData): number {
  return typeof data === "string" ? utf8Length(data) : data.byteLength;
}

const SESSION_RE = /^[A-Za-z0-9._~-]{1,128}$/;
const ROLE_RE = /^[a-z0-9_-]{1,32}$/;

/** Messages sent and not yet acked, oldest first; numbered from `base + 1`. */
class Outbox {
  private items: RelayData[] = [];
  private sizes: number[] = [];
  private head = 0;
  bytes = 0;
  /** The relay's number of the message before the first kept one; null until known. */
  base: number | null = null;

  get length(): number {
    return this.items.length - this.head;
  }
  at(i: number): RelayData {
    return this.items[this.head + i];
  }
  push(data: RelayData, size: number): void {
    this.items.push(data);
    this.sizes.push(size);
    this.bytes += size;
  }
  /** Drops the first `n` (acked) messages. */
  drop(n: number): void {
    n = Math.min(n, this.length);
    for (let i = 0; i < n; i++) {
      this.bytes -= this.sizes[this.head];
      this.items[this.head] = "";
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.sizes = this.sizes.slice(this.head);
      this.head = 0;
    }
  }
}

type Listener = (...args: any[]) => void;

class Emitter<E> {
  private listeners = new Map<keyof E, Set<Listener>>();
  on<K extends keyof E>(name: K, fn: E[K]): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(fn as unknown as Listener);
    return () => this.off(name, fn);
  }
  off<K extends keyof E>(name: K, fn: E[K]): void {
    this.listeners.get(name)?.delete(fn as unknown as Listener);
  }
  protected emit(name: keyof E, ...args: unknown[]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const fn of set) {
      try {
        fn(...args);
      } catch (e) {
        // A listener's exception must not break the connection's state machine.
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }
}

interface Waiter {
  /** Resolved once this many messages (counted by this client) are acked. */
  target: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

// ---------------------------------------------------------------------------------------
// The client.

/**
 * One peer of a relay session that reconnects by itself. Messages sent while away wait in
 * the outbox and are delivered exactly once, in order; messages for it that arrive while it
 * is away are resumed from the relay's replay window.
 */
export class RelayClient extends Emitter<RelayClientEvents> {
  private readonly opts: Required<Pick<RelayClientOptions, "url" | "session" | "maxOutboxBytes" | "resume" | "stallMs">> &
    RelayClientOptions;
  private readonly WS: WebSocketCtor;
  private readonly random: () => number;
  private ws: WebSocketLike | null = null;
  private _state: RelayState = "connecting";
  private role: string | undefined;
  /** This connection's event key, from its `connected`; null until then. */
  private key: string | null = null;
  private _bridgeKey: string | null = null;
  /** Messages received and handed to the application: the `resume=` of the next connect. */
  private received = 0;
  /** Messages still to skip because the relay resent what was already handed over. */
  private skip = 0;
  private readonly outbox = new Outbox();
  /** How many outbox messages were written on the current connection. */
  private written = 0;
  /** Whether the relay acks (its `connected` had `acked`); false for an older relay. */
  private acks = false;
  /** A close that refused the message at `acked + 1`: dropped at the next `connected`. */
  private refused: RelayError | null = null;
  /** Messages given to `send`, and how many of them the relay acked, counted by this client. */
  private sentTotal = 0;
  private ackedTotal = 0;
  private attempt = 0;
  private everOpen = false;
  private openedAt = 0;
  private lastRx = 0;
  private waitingSince = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stallTimer: ReturnType<typeof setInterval> | null = null;
  private flushWaiters: Waiter[] = [];
  private closeWaiters: (() => void)[] = [];
  private generation = 0;

  constructor(options: RelayClientOptions) {
    super();
    if (!SESSION_RE.test(options.session)) throw new TypeError(`invalid session id: ${options.session}`);
    if (options.role !== undefined && !ROLE_RE.test(options.role)) throw new TypeError(`invalid role: ${options.role}`);
    relayUrl(options.url, options.session, {}); // throws on a bad URL now rather than later
    this.opts = {
      maxOutboxBytes: 8 << 20,
      resume: true,
      stallMs: 20000,
      ...options,
    };
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!WS) throw new TypeError("no WebSocket: pass one as the WebSocket option (Node 20: --experimental-websocket)");
    this.WS = WS;
    this.random = options.random ?? Math.random;
    this.role = options.role;
    this.received = options.received ?? 0;
    // Connect on the next tick, so listeners added right after construction hear everything.
    queueMicrotask(() => void this.connect());
  }

  get state(): RelayState {
    return this._state;
  }

  /** This client's role: the one asked for, or the one the relay gave. */
  get clientRole(): string | undefined {
    return this.role;
  }

  get session(): string {
    return this.opts.session;
  }

  private isClosed(): boolean {
    return this._state === "closed";
  }

  /** For an agent: the key the relay marks its bridged requests with on this connection
   * (`bridge_key` in `connected`); null when the relay gives none. */
  get bridgeKey(): string | null {
    return this._bridgeKey;
  }

  /** Messages from the peer handed over so far in this session (what `resume=` says). */
  get receivedCount(): number {
    return this.received;
  }

  /** Bytes waiting for the relay's ack. */
  get outboxBytes(): number {
    return this.outbox.bytes;
  }

  /**
   * Sends a message: at once when connected, otherwise when the connection is back. It stays
   * in the outbox until the relay acks it. Throws `OutboxFullError` past `maxOutboxBytes`, and
   * after `close()`.
   */
  send(data: RelayData | ArrayBuffer): void {
    if (this.isClosed()) throw new RelayError("the client is closed", "closed", true);
    const msg: RelayData = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    const size = byteLength(msg);
    if (this.outbox.bytes + size > this.opts.maxOutboxBytes) throw new OutboxFullError(this.outbox.bytes, size);
    this.outbox.push(msg, size);
    this.sentTotal++;
    if (this._state === "open" && this.ws) this.writeOutbox();
  }

  /** Resolves when the relay has acked every message sent so far. */
  flush(): Promise<void> {
    if (this.isClosed() && this.outbox.length > 0)
      return Promise.reject(new RelayError("the client is closed", "closed", true));
    return new Promise((resolve, reject) => {
      this.flushWaiters.push({ target: this.sentTotal, resolve, reject });
      this.settleFlushes();
    });
  }

  /** Closes the connection (1000) and stops reconnecting. Messages not yet acked are dropped. */
  close(): Promise<void> {
    if (this.isClosed()) return Promise.resolve();
    const ws = this.ws;
    const done = new Promise<void>((resolve) => {
      if (ws && ws.readyState < 2) {
        this.closeWaiters.push(resolve);
        setTimeout(resolve, 1000); // a relay that never answers the close
      } else resolve();
    });
    this.finish(null);
    if (ws) {
      try {
        ws.close(1000, "bye");
      } catch {
        /* already closing */
      }
    }
    return done;
  }

  // --- the connection's life -----------------------------------------------------------

  private setState(s: RelayState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit("state", s);
  }

  private async connect(): Promise<void> {
    if (this.isClosed()) return;
    const gen = ++this.generation;
    if (this.everOpen) this.setState("reconnecting");
    else if (gen === 1) this.emit("state", "connecting");
    else this.setState("connecting");
    let token: string | undefined;
    try {
      const t = this.opts.token;
      token = typeof t === "function" ? await t() : t;
    } catch (e) {
      if (gen !== this.generation || this.isClosed()) return;
      this.emit("error", new RelayError(`token: ${String(e)}`, "token", false));
      this.retry();
      return;
    }
    if (gen !== this.generation || this.isClosed()) return;
    const url = relayUrl(this.opts.url, this.opts.session, {
      role: this.role,
      events: "1",
      resume: this.opts.resume ? String(this.received) : undefined,
      token,
    });
    let ws: WebSocketLike;
    try {
      ws = new this.WS(url);
    } catch (e) {
      this.emit("error", new RelayError(`cannot connect: ${String(e)}`, "connect", false));
      this.retry();
      return;
    }
    this.ws = ws;
    this.key = null;
    this.written = 0;
    this.lastRx = Date.now();
    this.waitingSince = this.lastRx;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      // After close() nothing more is handed over, though the socket is still closing.
      if (this.ws === ws && !this.isClosed()) this.onMessage(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.onClose(ev.code, ev.reason, url);
      else this.closed();
    };
    // An error always ends a WebSocket, and its close event should follow; Node 20's does
    // not send one after a refused upgrade, so an error not followed by a close soon is one.
    ws.onerror = () => {
      setTimeout(() => {
        if (this.ws === ws) this.onClose(1006, "", url);
      }, 50);
    };
    this.startStallCheck();
  }

  private onMessage(data: unknown): void {
    this.lastRx = Date.now();
    if (typeof data === "string") {
      if (this.key === null) return this.onConnected(data);
      // An event carries this connection's key; the peer cannot know it (docs/protocol.md).
      if (data.charCodeAt(0) === 123 /* { */ && data.includes(this.key)) {
        const ev = parseObject(data);
        if (ev && ev.key === this.key && typeof ev.type === "string") return this.onEvent(ev);
      }
      return this.deliver(data);
    }
    if (this.key === null) return this.drop("the relay's first message was not `connected`");
    if (data instanceof ArrayBuffer) return this.deliver(new Uint8Array(data));
    if (ArrayBuffer.isView(data)) return this.deliver(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  private deliver(data: RelayData): void {
    if (this.skip > 0) {
      this.skip--;
      return;
    }
    this.received++;
    this.emit("message", data);
  }

  private onConnected(text: string): void {
    const ev = parseObject(text);
    if (!ev || ev.type !== "connected" || typeof ev.key !== "string")
      return this.drop("the relay's first message was not `connected`");
    this.key = ev.key;
    this._bridgeKey = typeof ev.bridge_key === "string" ? ev.bridge_key : null;
    if (typeof ev.role === "string") this.role = ev.role;
    // Receiving: the relay goes on from next_seq; anything before received+1 was handed over.
    if (typeof ev.next_seq === "number") this.skip = Math.max(0, this.received + 1 - ev.next_seq);
    // Sending: whatever the relay accepted leaves the outbox; the rest is written again.
    if (typeof ev.acked === "number") {
      this.acks = true;
      const box = this.outbox;
      if (box.base === null) box.base = ev.acked;
      else if (ev.acked >= box.base) {
        const n = ev.acked - box.base;
        if (n > box.length)
          this.emit("error", new RelayError(`the relay acked ${n - box.length} message(s) more than were sent`, "ack_ahead", false));
        this.ackedTotal += Math.min(n, box.length);
        box.drop(n);
        box.base = ev.acked;
        this.dropRefused();
      } else {
        // The session is not the one we sent to (it expired or the relay restarted): what the
        // old one had accepted and not delivered is gone. Send what is kept again from here.
        this.emit("error", new RelayError(`the relay's session restarted its count at ${ev.acked}`, "session_reset", false));
        box.base = ev.acked;
      }
    } else {
      this.acks = false;
      if (this.outbox.base === null) this.outbox.base = 0;
      if (this.refused) this.emit("error", this.refused);
      this.refused = null;
    }
    this.openedAt = Date.now();
    this.everOpen = true;
    this.waitingSince = 0;
    this.setState("open");
    if (typeof ev.peer_present === "boolean") this.emit("peer", { present: ev.peer_present, initial: true });
    this.writeOutbox();
    this.settleFlushes();
  }

  private onEvent(ev: Record<string, unknown>): void {
    switch (ev.type) {
      case "ack":
        if (typeof ev.acked === "number") this.onAck(ev.acked);
        return;
      case "peer_connected":
        this.emit("peer", { role: typeof ev.role === "string" ? ev.role : undefined, present: true });
        return;
      case "peer_disconnected":
        this.emit("peer", {
          role: typeof ev.role === "string" ? ev.role : undefined,
          present: false,
          code: typeof ev.code === "number" ? ev.code : undefined,
        });
        return;
      case "error":
        return this.onRelayError(ev);
      default:
        return; // events of later versions
    }
  }

  private onRelayError(ev: Record<string, unknown>): void {
    const name = typeof ev.error === "string" ? ev.error : "error";
    const detail = typeof ev.detail === "string" ? ev.detail : name;
    if ((name === "resume_gap" || name === "resume_ahead") && typeof ev.first === "number") {
      const lost = name === "resume_gap" ? Math.max(0, ev.first - 1 - this.received) : 0;
      this.received = ev.first - 1;
      this.skip = 0;
      const msg = name === "resume_gap" ? `${lost} message(s) lost: ${detail}` : detail;
      this.emit("error", new RelayError(msg, name, false, name === "resume_gap" ? lost : undefined));
      return;
    }
    this.emit("error", new RelayError(detail, name, false));
  }

  /** The message the relay refused (1002/1007/1008/1009) is the first it did not accept. */
  private dropRefused(): void {
    const err = this.refused;
    if (!err) return;
    this.refused = null;
    const box = this.outbox;
    if (box.length > 0) {
      box.drop(1);
      box.base! += 1;
      this.ackedTotal++; // a flush waits for it no longer
    }
    this.emit("error", err);
  }

  private onAck(acked: number): void {
    const box = this.outbox;
    if (box.base === null || acked <= box.base) return;
    const n = Math.min(acked - box.base, this.written);
    this.ackedTotal += n;
    box.drop(n);
    box.base += n;
    this.written -= n;
    this.waitingSince = this.written > 0 ? Date.now() : 0;
    this.settleFlushes();
  }

  private writeOutbox(): void {
    const ws = this.ws;
    if (!ws) return;
    const box = this.outbox;
    try {
      while (this.written < box.length) {
        const m = box.at(this.written);
        ws.send(m);
        this.written++;
        if (this.acks && this.waitingSince === 0) this.waitingSince = Date.now();
      }
    } catch {
      return; // the socket is closing; onclose follows and the rest is written again
    }
    if (!this.acks) {
      // An older relay acks nothing: a written message is as safe as this client can make it.
      const n = this.written;
      this.ackedTotal += n;
      box.drop(n);
      box.base = (box.base ?? 0) + n;
      this.written = 0;
      this.settleFlushes();
    }
  }

  private settleFlushes(): void {
    if (this.flushWaiters.length === 0) return;
    const drained = !this.ws || this.ws.bufferedAmount === 0;
    this.flushWaiters = this.flushWaiters.filter((w) => {
      const done = this.ackedTotal >= w.target && (this.acks || drained);
      if (done) w.resolve();
      return !done;
    });
    if (!this.acks && this.flushWaiters.length > 0 && !drained) setTimeout(() => this.settleFlushes(), 10);
  }

  /** The connection is no good (a stall, a broken first message): drop it and reconnect. */
  private drop(why: string): void {
    const ws = this.ws;
    if (!ws) return;
    this.emit("error", new RelayError(why, "dropped", false));
    this.ws = null;
    detach(ws);
    try {
      ws.close(4000, why.slice(0, 100));
    } catch {
      /* closing already */
    }
    this.afterDrop();
  }

  private onClose(code: number, reason: string, url: string): void {
    const ws = this.ws!;
    this.ws = null;
    detach(ws);
    this.closed();
    if (this.isClosed()) return;
    if (isFatalClose(code)) {
      this.finish(new RelayError(`closed by the relay: ${code}${reason ? " " + reason : ""}`, code, true));
      return;
    }
    if (isRefusedMessage(code)) {
      this.refused = new RelayError(
        `the relay refused a message for good (${code}${reason ? " " + reason : ""}); it is dropped, the rest goes on`,
        code,
        false,
      );
    }
    if (this.key === null && code === 1006) {
      // The upgrade failed, and a WebSocket does not say why. Ask the route over plain
      // HTTP: a 401/403/400 will not change by retrying.
      void this.probe(url);
      return;
    }
    this.afterDrop();
  }

  private async probe(url: string): Promise<void> {
    const gen = this.generation;
    const fetchFn = this.opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    let status = 0;
    let body = "";
    if (fetchFn) {
      try {
        const r = await fetchFn(url.replace(/^ws/, "http"), { method: "GET" });
        status = r.status;
        body = await r.text();
      } catch {
        /* unreachable, or a browser's CORS: retry */
      }
    }
    if (gen !== this.generation || this.isClosed()) return;
    // 400 `bad_upgrade` is the probe's own missing upgrade: the route itself would admit us.
    if (isFatalStatus(status) && !body.includes('"bad_upgrade"')) {
      const err = parseObject(body);
      const why = err && typeof err.error === "string" ? err.error : `HTTP ${status}`;
      this.finish(new RelayError(`refused by the relay: ${status} ${why}`, status, true));
      return;
    }
    this.afterDrop();
  }

  private afterDrop(): void {
    this.stopStallCheck();
    if (this.isClosed()) return;
    // A connection that stayed up a while resets the back-off.
    if (this.openedAt !== 0 && Date.now() - this.openedAt > 5000) this.attempt = 0;
    this.openedAt = 0;
    this.written = 0;
    this.retry();
  }

  private retry(): void {
    this.setState("reconnecting");
    const b = this.opts.backoff ?? {};
    const delay = backoffDelay(this.attempt++, b.initialMs ?? 250, b.maxMs ?? 30000, this.random);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, delay);
  }

  private startStallCheck(): void {
    this.stopStallCheck();
    const every = Math.max(10, Math.floor(this.opts.stallMs / 4));
    this.stallTimer = setInterval(() => {
      if (this.waitingSince === 0) return;
      const quiet = Date.now() - Math.max(this.lastRx, this.waitingSince);
      if (quiet >= this.opts.stallMs) this.drop(`nothing from the relay for ${quiet} ms`);
    }, every);
  }

  private stopStallCheck(): void {
    if (this.stallTimer !== null) clearInterval(this.stallTimer);
    this.stallTimer = null;
  }

  /** Ends the client: no more reconnects, waiting flushes fail. */
  private finish(err: RelayError | null): void {
    this.generation++;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.stopStallCheck();
    if (err) this.emit("error", err);
    this.setState("closed");
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    const why = err ?? new RelayError("the client was closed", "closed", true);
    for (const w of waiters) w.reject(why);
  }

  private closed(): void {
    const ws = this.closeWaiters;
    this.closeWaiters = [];
    for (const f of ws) f();
  }
}

function detach(ws: WebSocketLike): void {
  ws.onmessage = null;
  ws.onopen = null;
  ws.onerror = null;
}

function parseObject(text: string): Record<string, any> | null {
  if (text.charCodeAt(0) !== 123) return null;
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// The bridge agent.

export interface RelayAgentOptions {
  url: string;
  session: string;
  token?: TokenSource;
  /** The local API: `http://127.0.0.1:3000[/base]`. Only loopback targets are allowed. */
  target: string;
  /** The relay's `bridge.agent_role` (default `agent`). */
  role?: string;
  WebSocket?: WebSocketCtor;
  /** The `fetch` the target is called with (default: the global one). */
  fetch?: FetchLike;
  backoff?: BackoffOptions;
  /** Requests performed at once; one more gets 503 `agent_busy` (default 32). */
  maxConcurrency?: number;
  /** The longest one request may take; past it, 504 `target_timeout` (default 25 s). */
  targetTimeoutMs?: number;
  /** The largest body taken from the target; past it, 502 `target_response_too_large` (1 MiB). */
  maxResponseBytes?: number;
}

export interface RelayAgentEvents {
  state: (state: RelayState) => void;
  error: (err: RelayError) => void;
  /** One line per request answered, for logs. */
  request: (info: { method: string; path: string; status: number; ms: number }) => void;
}

/** Whether `url` is an `http:` URL on a loopback host (localhost, 127.0.0.0/8, [::1]). */
export function loopbackTarget(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TypeError(`target is not a URL: ${url}`);
  }
  if (u.protocol !== "http:") throw new TypeError(`target must be http://, not ${u.protocol}`);
  if (u.search || url.includes("?")) throw new TypeError("the target URL takes no query string (bridged requests bring their own)");
  if (u.username || u.password) throw new TypeError("the target URL takes no credentials");
  const host = u.hostname.toLowerCase().replace(/^\[|\]$/g, "");
  const v4 = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  const v6 = host === "::1" || /^::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}$/.test(host);
  if (!(host === "localhost" || v4 || v6)) throw new TypeError(`target ${u.host} is not a loopback address (localhost, 127.0.0.0/8, [::1])`);
  return u;
}

const HOP_BY_HOP = ["connection", "upgrade", "transfer-encoding", "keep-alive", "te", "trailer"];

/** Headers that may cross the bridge, in order, names lower-cased (docs/bridge.md). */
export function forwardable(headers: [string, string][]): [string, string][] {
  const named = new Set<string>();
  for (const [n, v] of headers)
    if (n.toLowerCase() === "connection") for (const t of v.split(",")) if (t.trim()) named.add(t.trim().toLowerCase());
  const out: [string, string][] = [];
  for (const [n, v] of headers) {
    const l = n.toLowerCase();
    if (HOP_BY_HOP.includes(l) || l.startsWith("proxy-") || named.has(l)) continue;
    out.push([l, v]);
  }
  return out;
}

/** The agent's own failures, as `ringrelay agent` answers them (docs/agent.md). */
const FAILURES = {
  target_unreachable: [502, "the agent cannot connect to its target"],
  target_timeout: [504, "the target did not answer within the agent's --target-timeout"],
  target_bad_response: [502, "the target's answer was not a complete HTTP response"],
  target_response_too_large: [502, "the target's answer body is over the agent's --max-response-bytes"],
  agent_busy: [503, "the agent is running --max-concurrency requests; retry shortly"],
  agent_stopping: [503, "the agent is shutting down"],
  bad_bridge_request: [400, "the agent could not read the bridged request"],
} as const;
type Failure = keyof typeof FAILURES;

interface Answer {
  status: number;
  headers: [string, string][];
  body: Uint8Array;
}

function failure(code: Failure): Answer {
  const [status, error] = FAILURES[code];
  const headers: [string, string][] = [["content-type", "application/json"]];
  if (status === 503) headers.push(["retry-after", "1"]);
  return { status, headers, body: new TextEncoder().encode(JSON.stringify({ code, error }) /* serde_json's key order, as ringrelay agent writes it */) };
}

/** The `http_response` text for an answer: `type` first and `id` second, compact. */
export function answerMessage(id: string, a: Answer): string {
  return (
    `{"type":"http_response","id":${JSON.stringify(id)},"status":${a.status},` +
    `"headers":${JSON.stringify(a.headers)},"body_b64":"${toBase64(a.body)}"}`
  );
}

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, Array.from(bytes.subarray(i, i + 0x8000)));
  return btoa(s);
}

export function fromBase64(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Content codings a `fetch` decodes by itself: the body it hands over is no longer encoded. */
const DECODED = ["gzip", "x-gzip", "deflate", "br"];

interface BridgedRequest {
  id: string;
  relay_key?: string;
  method: string;
  path: string;
  headers: [string, string][];
  body_b64: string;
}

function readRequest(v: Record<string, any>): BridgedRequest | null {
  const ok =
    typeof v.id === "string" &&
    typeof v.method === "string" &&
    /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v.method) &&
    typeof v.path === "string" &&
    v.path.startsWith("/") &&
    Array.isArray(v.headers) &&
    v.headers.every((h: unknown) => Array.isArray(h) && h.length === 2 && typeof h[0] === "string" && typeof h[1] === "string") &&
    (v.body_b64 === undefined || typeof v.body_b64 === "string");
  return ok ? (v as BridgedRequest) : null;
}

/**
 * The bridge's agent in a browser tab or Node: answers `/v1/http/{session}/...` by fetching
 * from a loopback `target`, as `ringrelay agent` does (docs/agent.md).
 */
export class RelayAgent extends Emitter<RelayAgentEvents> {
  private readonly target: URL;
  private readonly opts: RelayAgentOptions;
  private client: RelayClient | null = null;
  private running = 0;
  private stopping = false;
  private readonly inFlight = new Set<Promise<void>>();
  /** Requests not carrying this connection's key: neither performed nor answered. */
  foreign = 0;

  constructor(options: RelayAgentOptions) {
    super();
    this.target = loopbackTarget(options.target);
    if (!SESSION_RE.test(options.session)) throw new TypeError(`invalid session id: ${options.session}`);
    this.opts = options;
  }

  /** Connects; resolves once the relay has seated the agent, rejects on a fatal refusal. */
  start(): Promise<void> {
    if (this.client) throw new Error("already started");
    this.stopping = false;
    const c = new RelayClient({
      url: this.opts.url,
      session: this.opts.session,
      role: this.opts.role ?? "agent",
      token: this.opts.token,
      WebSocket: this.opts.WebSocket,
      backoff: this.opts.backoff,
      fetch: this.opts.fetch,
      // Requests come from the relay itself and die with the connection (502 to the
      // client); there is nothing to resume.
      resume: false,
    });
    this.client = c;
    c.on("message", (d) => this.onMessage(c, d));
    c.on("state", (s) => this.emit("state", s));
    c.on("error", (e) => this.emit("error", e));
    return new Promise((resolve, reject) => {
      const off = c.on("state", (s) => {
        if (s === "open") {
          off();
          offErr();
          resolve();
        }
      });
      const offErr = c.on("error", (e) => {
        if (e.fatal) {
          off();
          offErr();
          reject(e);
        }
      });
    });
  }

  /** New requests get 503 `agent_stopping`; those running finish (up to `graceMs`); then it closes. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    const c = this.client;
    if (!c) return;
    if (this.inFlight.size > 0)
      await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((r) => setTimeout(r, graceMs))]);
    this.client = null;
    await c.close();
  }

  private onMessage(c: RelayClient, data: RelayData): void {
    if (typeof data !== "string") return;
    const v = parseObject(data);
    if (!v || v.type !== "http_request") return;
    const key = c.bridgeKey;
    if (key !== null && v.relay_key !== key) {
      this.foreign++;
      this.emit("error", new RelayError("a request without this connection's relay key: ignored", "foreign_request", false));
      return;
    }
    const req = readRequest(v);
    if (!req) {
      if (typeof v.id === "string") this.reply(c, v.id, failure("bad_bridge_request"));
      return;
    }
    if (this.stopping) return this.reply(c, req.id, failure("agent_stopping"));
    if (this.running >= (this.opts.maxConcurrency ?? 32)) return this.reply(c, req.id, failure("agent_busy"));
    this.running++;
    const started = Date.now();
    const p = this.perform(req).then((a) => {
      this.running--;
      this.reply(c, req.id, a);
      this.emit("request", { method: req.method, path: req.path, status: a.status, ms: Date.now() - started });
    });
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private reply(c: RelayClient, id: string, a: Answer): void {
    if (c.state === "closed") return;
    try {
      c.send(answerMessage(id, a));
    } catch {
      /* outbox full or closed: the relay answers 504/502 itself */
    }
  }

  private async perform(req: BridgedRequest): Promise<Answer> {
    const fetchFn = this.opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (!fetchFn) return failure("target_unreachable");
    const base = this.target.pathname.replace(/\/+$/, "");
    const url = `${this.target.protocol}//${this.target.host}${base}${req.path}`;
    const headers: [string, string][] = forwardable(req.headers).filter(
      ([n]) => !["host", "content-length", "expect", "transfer-encoding"].includes(n),
    );
    // A fetch asks for gzip unless told otherwise, and then decodes it: ask for what the
    // client asked for, and for no coding when it asked for none.
    if (!headers.some(([n]) => n === "accept-encoding")) headers.push(["accept-encoding", "identity"]);
    const body = req.body_b64 ? fromBase64(req.body_b64) : new Uint8Array(0);
    const hasBody = body.length > 0 || ["POST", "PUT", "PATCH"].includes(req.method);
    const abort = new AbortController();
    const timeoutMs = this.opts.targetTimeoutMs ?? 25000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, timeoutMs);
    try {
      let r;
      try {
        r = await fetchFn(url, {
          method: req.method,
          headers,
          body: hasBody && req.method !== "GET" && req.method !== "HEAD" ? body : undefined,
          redirect: "manual",
          signal: abort.signal,
        });
      } catch {
        return failure(timedOut ? "target_timeout" : "target_unreachable");
      }
      const isHead = req.method === "HEAD";
      const raw: [string, string][] = [];
      r.headers.forEach((value, name) => raw.push([name, value]));
      const cookies = (r.headers as { getSetCookie?: () => string[] }).getSetCookie?.();
      const decoded = raw.some(([n, v]) => n === "content-encoding" && DECODED.includes(v.trim().toLowerCase()));
      let out = forwardable(raw).filter(([n]) => (isHead || n !== "content-length") && !(decoded && n === "content-encoding"));
      if (cookies && cookies.length > 0) out = out.filter(([n]) => n !== "set-cookie").concat(cookies.map((c) => ["set-cookie", c] as [string, string]));
      const limit = this.opts.maxResponseBytes ?? 1 << 20;
      const declared = Number(raw.find(([n]) => n === "content-length")?.[1] ?? NaN);
      if (!isHead && !decoded && declared > limit) return failure("target_response_too_large");
      let bytes: Uint8Array;
      try {
        bytes = isHead ? new Uint8Array(0) : await readLimited(r, limit);
      } catch (e) {
        if (e === TOO_LARGE) return failure("target_response_too_large");
        return failure(timedOut ? "target_timeout" : "target_bad_response");
      }
      return { status: r.status, headers: out, body: bytes };
    } finally {
      clearTimeout(timer);
    }
  }
}

const TOO_LARGE = new Error("too large");

async function readLimited(r: { arrayBuffer(): Promise<ArrayBuffer>; body?: unknown }, limit: number): Promise<Uint8Array> {
  const stream = r.body as ReadableStream<Uint8Array> | null | undefined;
  if (!stream || typeof stream.getReader !== "function") {
    const b = new Uint8Array(await r.arrayBuffer());
    if (b.length > limit) throw TOO_LARGE;
    return b;
  }
  const reader = stream.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > limit) {
      void reader.cancel();
      throw TOO_LARGE;
    }
    parts.push(value);
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
