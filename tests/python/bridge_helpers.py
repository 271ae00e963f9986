"""Helpers for the HTTP bridge tests (`/v1/http/{session}/...`): a fake agent speaking the
bridge's message schema (docs/bridge.md), a raw HTTP/1.1 client that reads a response to EOF
(the bridge answers one request per connection), stats deltas, tokens.

Everything talks to 127.0.0.1 only, and every blocking operation has a timeout.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from websockets.exceptions import ConnectionClosed

import helpers
from helpers import (OP_TEXT, RECV_TIMEOUT, HttpResponse, RawWS, Server, _parse_head, binary_path, http_get,
                     wait_for, ws_connect)

ANSWER_PREFIX = '{"type":"http_response"'

# Every bridge counter in /stats `totals` (bridge_pending is a gauge, checked on its own).
BRIDGE_COUNTERS = [
    "bridge_requests", "bridge_responses_2xx", "bridge_responses_3xx", "bridge_responses_4xx",
    "bridge_responses_5xx", "bridge_timeouts", "bridge_agent_absent", "bridge_agent_gone",
    "bridge_bad_answers", "bridge_answers_too_large", "bridge_answers_unmatched", "bridge_client_gone",
    "bridge_busy_refused", "bridge_forged_requests", "bridge_write_timeouts",
    "bridge_request_bytes", "bridge_response_bytes",
]

HOP_BY_HOP = {"connection", "upgrade", "transfer-encoding", "keep-alive", "te", "trailer"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s.encode(), validate=True)


def answer_json(id_, status: int = 200, headers=(), body: bytes = b"", **extra) -> str:
    """An `http_response` message as the reference agent writes it: compact JSON, "type" first
    (the relay reads any writer's form; test_bridge_writers.py tries others)."""
    msg = {"type": "http_response", "id": id_, "status": status, "headers": [list(h) for h in headers],
           "body_b64": b64(body)}
    msg.update(extra)
    return json.dumps(msg, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# Fake agent (websockets client)
# --------------------------------------------------------------------------------------------

class FakeAgent:
    """A peer of `session` with the agent role. A background thread reads its messages:
    `http_request` messages go to `requests` (and to `handler`, whose return value, a dict of
    `answer()` keywords, is sent back at once; None holds the request); anything else goes to
    `others`."""

    def __init__(self, srv: Server, session: str, role: str = "agent", handler=None, query: str = "",
                 headers: dict | None = None, sock=None):
        self.srv = srv
        self.session = session
        self.handler = handler
        path = f"/v1/relay/{session}?role={role}" + (f"&{query}" if query else "")
        kw = {"additional_headers": headers} if headers else {}
        if sock is not None:
            kw["sock"] = sock       # connected from another loopback address
        self.ws = ws_connect(srv, path, **kw)
        self.requests: queue.Queue = queue.Queue()
        self.seen: list[dict] = []          # every http_request, in arrival order
        self.others: queue.Queue = queue.Queue()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                try:
                    msg = self.ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    break
                if isinstance(msg, str) and msg.startswith('{"type":"http_request"'):
                    req = json.loads(msg)
                    # ids are the session's core's sequence numbers: never reused within a session
                    if any(q["id"] == req["id"] for q in self.seen):
                        self.errors.append(AssertionError(f"request id {req['id']!r} reused in {self.session}"))
                    self.seen.append(req)
                    if self.handler is not None:
                        out = self.handler(req)
                        if out is not None:
                            self.answer(req["id"], **out)
                            continue
                    self.requests.put(req)
                else:
                    self.others.put(msg)
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self.errors.append(e)
        finally:
            self.closed.set()

    # -- answering ----------------------------------------------------------------------------
    def answer(self, id_, status: int = 200, headers=(), body: bytes = b"", **extra):
        self.ws.send(answer_json(id_, status, headers, body, **extra))

    def send(self, msg):
        self.ws.send(msg)

    # -- waiting ------------------------------------------------------------------------------
    def next_request(self, timeout: float = RECV_TIMEOUT) -> dict:
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the agent got no http_request within {timeout}s") from None

    def take_requests(self, n: int, timeout: float = RECV_TIMEOUT) -> list[dict]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the agent got {len(out)} of {n} http_requests within {timeout}s")
            try:
                out.append(self.requests.get(timeout=remaining))
            except queue.Empty:
                continue
        return out

    def next_other(self, timeout: float = RECV_TIMEOUT):
        try:
            return self.others.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the agent got no other message within {timeout}s") from None

    def assert_no_request(self, wait: float = 0.3):
        try:
            req = self.requests.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected http_request {req!r:.300}")

    def check(self):
        assert not self.errors, self.errors

    def close(self):
        self._stop.set()
        try:
            self.ws.close()
        except Exception:
            pass
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def echo_handler(status: int = 200, extra_headers=()):
    """Answers every request with a JSON description of it (body as base64)."""
    def handler(req):
        desc = {"method": req["method"], "path": req["path"], "headers": req["headers"], "body_b64": req["body_b64"]}
        return {"status": status, "headers": [("content-type", "application/json"), *extra_headers],
                "body": json.dumps(desc).encode()}
    return handler


class RawAgent:
    """An agent on a raw socket (for dropping the TCP connection, fragmenting answers)."""

    def __init__(self, srv: Server, session: str, role: str = "agent"):
        self.ws = RawWS(srv.listen, f"/v1/relay/{session}?role={role}")

    def next_request(self, timeout: float = RECV_TIMEOUT) -> dict:
        op, payload = self.ws.recv_message(timeout)
        assert op == OP_TEXT, (op, payload[:100])
        req = json.loads(payload)
        assert req["type"] == "http_request", req
        return req

    def drop(self, reset: bool = False):
        """Close the TCP connection without a close frame (RST with `reset`)."""
        if reset:
            self.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.ws.close()


# --------------------------------------------------------------------------------------------
# Raw HTTP client: one request per connection, the response read to EOF
# --------------------------------------------------------------------------------------------

class BridgeResponse(HttpResponse):
    interim: list          # 1xx responses seen before the final one (status codes)
    elapsed: float         # from connecting to EOF
    finished: float        # time.monotonic() at EOF

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.header_list if k == name.lower()]


def build_request(addr, method: str, target: str, headers=(), body: bytes | None = None,
                  content_length: bool = True) -> bytes:
    """A request head (+ body). `headers` is a list of (name, value); Host is added unless given;
    Content-Length is added for a body unless one is given or `content_length` is False."""
    hl = list(headers)
    names = {k.lower() for k, _ in hl}
    if "host" not in names:
        hl.insert(0, ("Host", f"{addr[0]}:{addr[1]}"))
    if body is not None and content_length and "content-length" not in names and "transfer-encoding" not in names:
        hl.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hl) + "\r\n"
    return head.encode("latin-1") + (body or b"")


def read_to_eof(sock: socket.socket, deadline: float, buf: bytearray | None = None) -> bytes:
    buf = buf if buf is not None else bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the relay did not close the connection in time; got {bytes(buf[:300])!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def parse_response(data: bytes, head_request: bool = False) -> BridgeResponse:
    """Parse a whole response read to EOF. 1xx interim responses are skipped (and listed). The body
    must be exactly Content-Length bytes, and nothing may follow it."""
    interim = []
    while True:
        idx = data.find(b"\r\n\r\n")
        assert idx >= 0, f"no complete response head in {data[:300]!r}"
        status, reason, hl = _parse_head(data[:idx])
        data = data[idx + 4:]
        if 100 <= status < 200:
            interim.append(status)
            continue
        break
    headers: dict[str, str] = {}
    for k, v in hl:
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    cls = [v for k, v in hl if k == "content-length"]
    assert len(cls) <= 1, f"Content-Length sent {len(cls)} times: {hl}"
    if head_request or status in (204, 304):
        assert data == b"", f"{status} response to {'HEAD' if head_request else 'a request'} carried bytes after the head: {data[:200]!r}"
    elif cls:
        assert len(data) == int(cls[0]), f"Content-Length {cls[0]} but {len(data)} body bytes followed: {data[:200]!r}"
    r = BridgeResponse(status, reason, headers, hl, data)
    r.interim = interim
    return r


def bridge_raw(srv: Server, raw: bytes, timeout: float = RECV_TIMEOUT, head_request: bool = False,
               shut_wr: bool = False) -> BridgeResponse:
    """Send raw bytes, read everything until the relay closes the connection, parse it."""
    t0 = time.monotonic()
    with socket.create_connection(srv.listen, timeout=timeout) as s:
        s.sendall(raw)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        data = read_to_eof(s, t0 + timeout)
    r = parse_response(data, head_request)
    r.finished = time.monotonic()
    r.elapsed = r.finished - t0
    return r


def bridge(srv: Server, method: str, session: str, path: str = "/", headers=(), body: bytes | None = None,
           timeout: float = RECV_TIMEOUT) -> BridgeResponse:
    """One bridged request: `path` is what follows /v1/http/{session} (with its query)."""
    raw = build_request(srv.listen, method, f"/v1/http/{session}{path}", headers, body)
    return bridge_raw(srv, raw, timeout, head_request=(method == "HEAD"))


def in_thread(fn, *args, **kw):
    """Run fn in a thread; returns join(timeout) -> result (re-raises its error)."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout: float = 15.0):
        t.join(timeout)
        assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} did not finish within {timeout}s"
        if "error" in box:
            raise box["error"]
        return box["result"]

    return join


# --------------------------------------------------------------------------------------------
# Response checks
# --------------------------------------------------------------------------------------------

SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def check_relay_headers(r: HttpResponse):
    """What the relay sets on every bridge response: each security header exactly once with its
    value, and Connection: close (one request per connection)."""
    for k, v in SECURITY.items():
        vals = [x for n, x in r.header_list if n == k]
        assert vals == [v], f"{k}: expected exactly [{v!r}], got {vals} in {r.header_list}"
    conn = [x for n, x in r.header_list if n == "connection"]
    assert conn == ["close"], f"Connection: expected ['close'], got {conn} in {r.header_list}"


def check_error(r: HttpResponse, status: int, code: str) -> dict:
    assert r.status == status, f"expected {status} {code}, got {r.status} {r.body[:300]!r}"
    assert "application/json" in r.headers.get("content-type", ""), r.header_list
    body = json.loads(r.body)
    assert body.get("code") == code, body
    assert isinstance(body.get("error"), str) and body["error"], body
    check_relay_headers(r)
    return body


# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------

def stats(srv: Server) -> dict:
    r = http_get(srv.admin, "/stats")
    assert r.status == 200, r
    return r.json()


def totals(srv: Server) -> dict:
    return stats(srv)["totals"]


def bridge_latency_count(srv: Server) -> int:
    return stats(srv)["latency_us"]["bridge"]["count"]


def expect_deltas(srv: Server, before: dict, expected: dict, timeout: float = 3.0, settle: float = 0.1) -> dict:
    """Wait until every bridge counter moved by exactly `expected` (those not named: 0; those named
    with None: not checked), then check that nothing moves further for `settle` seconds. Returns
    the last totals."""
    want = {k: 0 for k in BRIDGE_COUNTERS}
    want.update(expected)
    want = {k: v for k, v in want.items() if v is not None}

    def deltas():
        now = totals(srv)
        return now, {k: now[k] - before[k] for k in want}

    deadline = time.monotonic() + timeout
    while True:
        now, got = deltas()
        if got == want:
            break
        if time.monotonic() > deadline:
            diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
            raise AssertionError(f"bridge counters moved by (got, expected): {diff}")
        time.sleep(0.05)
    time.sleep(settle)
    now, got = deltas()
    diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not diff, f"bridge counters kept moving (got, expected): {diff}"
    return now


def wait_pending(srv: Server, n: int, timeout: float = 3.0):
    wait_for(lambda: totals(srv)["bridge_pending"] == n, timeout, f"bridge_pending == {n}")


# --------------------------------------------------------------------------------------------
# Tokens (HS256, as docs/auth.md)
# --------------------------------------------------------------------------------------------

def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(claims: dict, secret: bytes) -> str:
    header = b64u(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64u(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64u(sig)}"


def marker() -> str:
    return uuid.uuid4().hex[:12]


# --------------------------------------------------------------------------------------------
# Part 2: the real agent (`ringrelay agent`), a local HTTP API, a relay on a fixed port
# --------------------------------------------------------------------------------------------

def agent_supported() -> bool:
    """True if the binary under test has the `agent` subcommand."""
    try:
        out = subprocess.run([str(binary_path()), "agent", "--help"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and b"--target" in out.stdout + out.stderr


class _APIHandler(BaseHTTPRequestHandler):
    """The "localhost API" behind the agent.
    /status/<n>       status n, body "status n" (none for 1xx/204/304)
    /binary           POST: the body back as octet-stream; GET: all 256 byte values, 4 times
    /slow?ms=N        sleeps N ms, then answers like /echo
    /headers?n=N&len=L  N response headers X-Api-<i> of L bytes each
    anything else     /echo: JSON with method, path, query, headers (list), body_b64
    """
    protocol_version = "HTTP/1.1"
    server_version = "local-api/1.0"

    def log_message(self, *a):
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status >= 200 and status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status >= 200 and status not in (204, 304):
            self.wfile.write(body)

    def _handle(self):
        body = self._body()
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        self.server.seen.append({"method": self.command, "path": self.path, "headers": list(self.headers.items()),
                                 "body": body})
        if url.path.startswith("/status/"):
            n = int(url.path.split("/")[2])
            return self._send(n, f"status {n}".encode(), [("Content-Type", "text/plain"), ("X-Status", str(n))])
        if url.path == "/binary":
            data = body if self.command == "POST" else bytes(range(256)) * 4
            return self._send(200, data, [("Content-Type", "application/octet-stream")])
        if url.path == "/headers":
            n, ln = int(q.get("n", 40)), int(q.get("len", 150))
            hs = [(f"X-Api-{i:02d}", (f"{i:02d}" + "v" * ln)[:ln]) for i in range(n)]
            return self._send(200, b"headers", hs)
        if url.path == "/slow":
            time.sleep(int(q.get("ms", 0)) / 1000)
        desc = {"method": self.command, "path": url.path, "query": url.query, "headers": list(self.headers.items()),
                "body_b64": b64(body)}
        return self._send(200, json.dumps(desc).encode(), [("Content-Type", "application/json")])

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle


class LocalAPI:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _APIHandler)
        self.httpd.daemon_threads = True
        self.httpd.seen = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def seen(self) -> list:
        return self.httpd.seen

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class AgentProcess:
    """`ringrelay agent` against a relay. Its output is kept, and attached to failing tests'
    reports like a server's (it is listed in helpers.ACTIVE_SERVERS while it runs)."""

    def __init__(self, relay_url: str, session: str, target: str, token: str | None = None,
                 extra: list[str] | None = None):
        self.driver = "agent"
        self.listen = session
        self.cmd = [str(binary_path()), "agent", "--relay", relay_url, "--session", session, "--target", target]
        if token:
            self.cmd += ["--token", token]
        self.cmd += list(extra or [])
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.exited_on_its_own = False      # set by a test that expects (and checked) an exit

    def start(self) -> "AgentProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRELAY_")}
        env["NO_COLOR"] = "1"
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
        threading.Thread(target=self._pump, daemon=True).start()
        helpers.ACTIVE_SERVERS.append(self)
        return self

    def _pump(self):
        for raw in self.proc.stdout:
            line = re.sub(r"\x1b\[[0-9;]*m", "", raw.decode("utf-8", "replace").rstrip("\n"))
            with self._lock:
                self.lines.append(line)

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _forget(self):
        if self in helpers.ACTIVE_SERVERS:
            helpers.ACTIVE_SERVERS.remove(self)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; the exit code (None if it had to be killed)."""
        self._forget()
        return helpers.terminate_process(self.proc, timeout)

    def kill(self):
        self._forget()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)


class FixedPortServer(Server):
    """A relay whose public listener is on a given port (to restart a relay on the same port)."""

    def __init__(self, port: int, **kw):
        super().__init__(listen=f"127.0.0.1:{port}", **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl(url: str, *args: str, timeout: float = 15) -> BridgeResponse:
    """curl -s -i --max-time 10; the output parsed as one response (1xx skipped)."""
    out = subprocess.run(["curl", "-s", "-i", "--max-time", "10", *args, url], capture_output=True, timeout=timeout)
    assert out.returncode == 0, f"curl exit {out.returncode}: {out.stderr!r}"
    head_req = "-I" in args or "--head" in args
    return parse_response(out.stdout, head_request=head_req)
