"""Helpers for the black-box ringrelay suite: server process, raw HTTP, raw WebSocket frames.

Everything here talks to 127.0.0.1 only, and every blocking operation has a timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect_raw

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "debug" / "ringrelay"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Default timeout (seconds) for any single receive in the suite.
RECV_TIMEOUT = 5.0

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def binary_path() -> Path:
    return Path(os.environ.get("RINGRELAY_BIN", str(DEFAULT_BIN)))


def unique(prefix: str = "s") -> str:
    """A fresh, valid session id."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# --------------------------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------------------------

# Servers currently running (conftest attaches their logs to failing tests' reports).
ACTIVE_SERVERS: list = []

_LISTEN_RE = re.compile(r"ringrelay listening .*?listen=(\S+) admin=(\S+)")
# The TLS listener's address, on the same line when `tls.listen` is set.
_TLS_RE = re.compile(r"ringrelay listening .*? tls=(\S+)")


class Server:
    """One ringrelay process on ephemeral loopback ports."""

    def __init__(self, driver: str = "io_uring", workers: int = 2, env: dict | None = None,
                 extra_args: list[str] | None = None, listen: str = "127.0.0.1:0"):
        self.driver = driver
        self.listen_arg = listen
        self.workers = workers
        self.env_overrides = dict(env or {})
        self.extra_args = list(extra_args or [])
        self.lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._ready = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.listen: tuple[str, int] | None = None
        self.admin: tuple[str, int] | None = None
        self.tls: tuple[str, int] | None = None
        self.exit_code: int | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "Server":
        binp = binary_path()
        if not binp.exists():
            raise RuntimeError(f"ringrelay binary not found at {binp}: run `cargo build` or set RINGRELAY_BIN")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRELAY_")}
        env.pop("RUST_LOG", None)
        env["NO_COLOR"] = "1"
        # Every test client comes from 127.0.0.1: the per-IP connection rate is off unless a
        # test turns it on.
        env["RINGRELAY_LIMITS_IP_CONNECT_RATE"] = "0"
        env.update(self.env_overrides)
        cmd = [str(binp), "serve", "--listen", self.listen_arg, "--admin-listen", "127.0.0.1:0",
               "--workers", str(self.workers), "--driver", self.driver, *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(timeout) or self.listen is None:
            self.kill()
            raise RuntimeError("ringrelay did not report its listeners in time:\n" + self.log())
        ACTIVE_SERVERS.append(self)
        return self

    def _pump(self):
        assert self.proc and self.proc.stderr
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            with self._lines_lock:
                self.lines.append(line)
            m = _LISTEN_RE.search(line)
            if m and not self._ready.is_set():
                self.listen = _parse_addr(m.group(1))
                self.admin = _parse_addr(m.group(2))
                t = _TLS_RE.search(line)
                self.tls = _parse_addr(t.group(1)) if t else None
                self._ready.set()
        self._ready.set()

    def log(self) -> str:
        with self._lines_lock:
            return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self in ACTIVE_SERVERS:
            ACTIVE_SERVERS.remove(self)
        self.exit_code = terminate_process(self.proc, timeout)
        return self.exit_code

    def kill(self):
        if self in ACTIVE_SERVERS:
            ACTIVE_SERVERS.remove(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    # -- URLs -------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        return self.listen[1]

    def ws_url(self, path: str) -> str:
        return f"ws://{self.host}:{self.port}{path}"


def terminate_process(proc: subprocess.Popen | None, timeout: float) -> int | None:
    """SIGTERM and wait; the exit code, or None if it had to be killed (or never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            return None
    return proc.returncode


def wait_for(pred, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def closing_fixture(factory, name: str):
    """A pytest fixture called `name` that yields `factory()` to the test and closes it after."""
    def fixture():
        obj = factory()
        yield obj
        obj.close()
    return pytest.fixture(name=name)(fixture)


def stop_server(srv: Server):
    """SIGTERM; the server must exit 0 within 15 s."""
    rc = srv.terminate(15)
    assert rc == 0, (f"ringrelay ({srv.driver}) exit code {rc!r} after SIGTERM (None = still running after 15 s)\n"
                     + srv.log()[-4000:])


def _parse_addr(s: str) -> tuple[str, int]:
    s = s.strip().strip('"')
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------------------------
# Raw HTTP
# --------------------------------------------------------------------------------------------

@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]          # lower-cased names; repeated headers joined with ", "
    header_list: list[tuple[str, str]]
    body: bytes
    rest: bytes = b""                # bytes after the head that were not part of the body (WS frames)

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def _parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = head.decode("iso-8859-1").split("\r\n")
    status_line = lines[0]
    m = re.match(r"HTTP/1\.[01] (\d{3}) ?(.*)", status_line)
    if not m:
        raise AssertionError(f"bad status line {status_line!r}")
    hdrs = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        hdrs.append((name.strip().lower(), value.strip()))
    return int(m.group(1)), m.group(2), hdrs


def recv_exact_until(sock: socket.socket, buf: bytearray, marker: bytes, deadline: float, limit: int = 1 << 20) -> int:
    while True:
        idx = buf.find(marker)
        if idx >= 0:
            return idx
        if len(buf) > limit:
            raise AssertionError("response head too large")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out waiting for {marker!r}; got {bytes(buf[:500])!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"EOF before {marker!r}; got {bytes(buf[:500])!r}")
        buf += chunk


def read_http_response(sock: socket.socket, timeout: float = RECV_TIMEOUT, buf: bytearray | None = None,
                       read_body: bool = True) -> HttpResponse:
    deadline = time.monotonic() + timeout
    buf = buf if buf is not None else bytearray()
    idx = recv_exact_until(sock, buf, b"\r\n\r\n", deadline)
    head = bytes(buf[:idx])
    del buf[: idx + 4]
    status, reason, hdr_list = _parse_head(head)
    headers: dict[str, str] = {}
    for k, v in hdr_list:
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    body = b""
    if read_body and status != 101:
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(buf) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out reading body")
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
            body = bytes(buf[:n])
            del buf[:n]
        elif headers.get("transfer-encoding", "").lower() != "chunked":
            # read to EOF (bounded)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                buf += chunk
            body = bytes(buf)
            buf.clear()
    return HttpResponse(status, reason, headers, hdr_list, body, bytes(buf))


def http_raw(addr: tuple[str, int], request: bytes, timeout: float = RECV_TIMEOUT) -> HttpResponse:
    """Send raw bytes, read one HTTP response."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(request)
        return read_http_response(s, timeout)


def http_get(addr: tuple[str, int], path: str, headers: dict | None = None, method: str = "GET",
             timeout: float = RECV_TIMEOUT) -> HttpResponse:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {addr[0]}:{addr[1]}", "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    req = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return http_raw(addr, req, timeout)


def ws_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def upgrade_request(addr: tuple[str, int], path: str, key: str | None = None, extra: dict | None = None,
                    omit: tuple[str, ...] = (), method: str = "GET", version: str = "13") -> bytes:
    key = key if key is not None else ws_key()
    hdrs = {
        "Host": f"{addr[0]}:{addr[1]}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": version,
    }
    for name in omit:
        hdrs.pop(name, None)
    hdrs.update(extra or {})
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_security_headers(resp: HttpResponse):
    for k, v in SECURITY_HEADERS.items():
        assert resp.headers.get(k) == v, f"header {k}: expected {v!r}, got {resp.headers.get(k)!r} in {resp.header_list}"


def assert_json_error(resp: HttpResponse, status: int):
    assert resp.status == status, f"expected {status}, got {resp.status} {resp.body!r}"
    assert "application/json" in resp.headers.get("content-type", ""), resp.header_list
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert_security_headers(resp)
    return body


# --------------------------------------------------------------------------------------------
# WebSocket frames
# --------------------------------------------------------------------------------------------

def mask_bytes(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bool = True,
                 length: int | None = None, length_form: str | None = None, mask_key: bytes | None = None) -> bytes:
    """Encode one frame. `length` overrides the announced length; `length_form` forces
    '7', '16' or '64' bit length encoding. Client frames are masked by default."""
    b0 = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    n = len(payload) if length is None else length
    form = length_form or ("7" if n < 126 else "16" if n < 65536 else "64")
    mbit = 0x80 if mask else 0
    if form == "7":
        hdr = struct.pack("!BB", b0, mbit | n)
    elif form == "16":
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        return hdr + key + mask_bytes(payload, key)
    return hdr + payload


def close_payload(code: int | None = None, reason: bytes = b"") -> bytes:
    if code is None:
        return b""
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]


class EOF(Exception):
    pass


class RawWS:
    """A WebSocket client on a plain socket, for sending arbitrary (also invalid) frames."""

    def __init__(self, addr: tuple[str, int], path: str, extra: dict | None = None, timeout: float = RECV_TIMEOUT,
                 expect_status: int | None = 101):
        self.addr = addr
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.key = ws_key()
        self.sock.sendall(upgrade_request(addr, path, key=self.key, extra=extra))
        self.response = read_http_response(self.sock, timeout, buf=self.buf, read_body=True)
        if expect_status is not None:
            assert self.response.status == expect_status, (
                f"upgrade {path}: expected {expect_status}, got {self.response.status} {self.response.body!r}")
        if self.response.status == 101:
            assert self.response.headers.get("sec-websocket-accept") == ws_accept(self.key)

    # -- sending ----------------------------------------------------------------------------
    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw):
        self.send_raw(encode_frame(opcode, payload, **kw))

    def send_text(self, text: str | bytes, **kw):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text, **kw)

    def send_binary(self, data: bytes, **kw):
        self.send_frame(OP_BINARY, data, **kw)

    def send_close(self, code: int | None = 1000, reason: bytes = b"", **kw):
        self.send_frame(OP_CLOSE, close_payload(code, reason), **kw)

    # -- receiving --------------------------------------------------------------------------
    def _fill(self, n: int, deadline: float):
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {n} bytes (have {len(self.buf)})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOF(f"EOF while waiting for {n} bytes (have {len(self.buf)})")
            self.buf += chunk

    def recv_frame(self, timeout: float = RECV_TIMEOUT) -> Frame:
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        masked = bool(b1 & 0x80)
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        key = b""
        if masked:
            self._fill(pos + 4, deadline)
            key = bytes(self.buf[pos:pos + 4])
            pos += 4
        self._fill(pos + n, deadline)
        payload = bytes(self.buf[pos:pos + n])
        del self.buf[:pos + n]
        if masked:
            payload = mask_bytes(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, masked, payload)

    def recv_data_frame(self, timeout: float = RECV_TIMEOUT, answer_pings: bool = True) -> Frame:
        """Next non-ping/pong frame (pings from the relay are answered)."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if f.opcode == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            return f

    def recv_message(self, timeout: float = RECV_TIMEOUT) -> tuple[int, bytes]:
        """A whole data message (opcode, payload), reassembled from fragments."""
        deadline = time.monotonic() + timeout
        f = self.recv_data_frame(max(0.0, deadline - time.monotonic()))
        assert f.opcode in (OP_TEXT, OP_BINARY), f"expected a data frame, got opcode {f.opcode} {f.payload[:100]!r}"
        op, parts = f.opcode, [f.payload]
        while not f.fin:
            f = self.recv_data_frame(max(0.0, deadline - time.monotonic()))
            assert f.opcode == OP_CONT, f"expected continuation, got {f.opcode}"
            parts.append(f.payload)
        return op, b"".join(parts)

    def expect_close(self, timeout: float = RECV_TIMEOUT) -> Frame:
        """Read frames (skipping data/ping/pong) until a close frame arrives; return it."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            try:
                f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            except EOF as e:
                raise AssertionError(f"connection closed without a close frame (frames seen: {seen})") from e
            if f.opcode == OP_CLOSE:
                return f
            seen.append((f.opcode, f.payload[:60]))

    def expect_eof(self, timeout: float = RECV_TIMEOUT) -> bytes:
        """Wait until the server closes the TCP connection; returns whatever arrived before."""
        deadline = time.monotonic() + timeout
        got = bytearray(self.buf)
        self.buf.clear()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"server did not close the connection within {timeout}s (got {bytes(got[:200])!r})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return bytes(got)
            except socket.timeout:
                continue
            if not chunk:
                return bytes(got)
            got += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def expect_violation_close(ws: RawWS, code: int, timeout: float = RECV_TIMEOUT):
    """The relay must send a close frame with `code` and then close the TCP connection."""
    f = ws.expect_close(timeout)
    assert f.close_code == code, f"expected close {code}, got {f.close_code} reason={f.close_reason!r}"
    assert not f.masked, "server frames must not be masked"
    ws.expect_eof(timeout)


# --------------------------------------------------------------------------------------------
# websockets-library client helpers
# --------------------------------------------------------------------------------------------

def ws_connect(server: Server, path: str, **kw):
    """A websockets sync client with no compression, no keepalive pings and no proxy."""
    opts = dict(open_timeout=RECV_TIMEOUT, close_timeout=RECV_TIMEOUT, ping_interval=None,
                compression=None, proxy=None, max_size=64 * 1024 * 1024, legacy=True)
    opts.update(kw)
    return ws_connect_raw(server.ws_url(path), **opts)


def listening(port: int) -> bool:
    """Whether something accepts connections on loopback `port` (a server a test started)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class TicketsFirst(ClientConnection):
    """websockets' sync client for wss://: takes in the server's TLS 1.3 session tickets on
    the calling thread before the client's reader thread starts.

    The sync client reads in a thread of its own while the caller writes, and OpenSSL forbids
    two threads in one TLS session at once. A TLS 1.3 server sends its tickets just after the
    handshake, exactly when the client writes its upgrade request: the reader thread's
    SSL_read handling them raced the request's SSL_write, and about one connection in three
    here failed with `[SSL] internal error` or never saw its 101 (the relay had answered).
    Pass as `create_connection=TicketsFirst`."""

    def __init__(self, sock, *args, **kw):
        import select
        import ssl

        if isinstance(sock, ssl.SSLSocket) and sock.version() == "TLSv1.3":
            timeout = sock.gettimeout()
            sock.setblocking(False)
            try:
                wait = 2.0
                # Tickets come in one flight; a second look catches a flight split in two.
                while select.select([sock], [], [], wait)[0]:
                    try:
                        data = sock.recv(1)
                    except ssl.SSLWantReadError:
                        wait = 0.05
                        continue
                    except OSError:
                        break  # an alert or a reset: the client meets it on its first read
                    assert not data, "the server spoke before the client's request"
                    break  # the end of the stream: likewise left to the client
            finally:
                sock.settimeout(timeout)
        super().__init__(sock, *args, **kw)


def recv_event(ws, timeout: float = RECV_TIMEOUT) -> dict:
    msg = ws.recv(timeout=timeout)
    assert isinstance(msg, str), f"expected an event (text), got {msg!r:.100}"
    ev = json.loads(msg)
    assert isinstance(ev, dict) and "type" in ev, ev
    return ev


def recv_event_of(ws, typ: str, timeout: float = RECV_TIMEOUT) -> dict:
    """Skip events until one of `typ` arrives (non-event messages are an error)."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {typ!r} event within {timeout}s; saw {seen}")
        try:
            ev = recv_event(ws, remaining)
        except TimeoutError:
            raise AssertionError(f"no {typ!r} event within {timeout}s; saw {seen}")
        if ev["type"] == typ:
            return ev
        seen.append(ev)


def assert_no_message(ws, wait: float = 0.5):
    try:
        msg = ws.recv(timeout=wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message: {msg!r:.200}")


def closed_code(ws, timeout: float = RECV_TIMEOUT) -> int | None:
    """Wait for the connection to close (discarding messages); return the code the relay sent."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"connection not closed within {timeout}s")
        try:
            ws.recv(timeout=remaining)
        except TimeoutError:
            continue
        except ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else None


def round_trip(a, b, tag: str = "", timeout: float = RECV_TIMEOUT):
    """One text message each way between two paired (events-off) clients."""
    m1 = f"ping-{tag}-{uuid.uuid4().hex[:8]}"
    a.send(m1)
    assert b.recv(timeout=timeout) == m1
    m2 = f"pong-{tag}-{uuid.uuid4().hex[:8]}".encode()
    b.send(m2)
    assert a.recv(timeout=timeout) == m2


def pair(server: Server, session: str | None = None, roles=("a", "b"), events: bool = False):
    """Connect two peers of a fresh session and make sure they are paired (a round trip works)."""
    session = session or unique("pair")
    q = "?events=1" if events else "?"
    a = ws_connect(server, f"/v1/relay/{session}{q}&role={roles[0]}")
    b = ws_connect(server, f"/v1/relay/{session}{q}&role={roles[1]}")
    return session, a, b


def check_healthy(pair_):
    """Round trips both ways on a pair made by `pair`."""
    a, b = pair_
    round_trip(a, b, "after")
    round_trip(b, a, "after2")


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class Scenarios:
    """Runs slow, timer-bound scenarios concurrently in threads, so that several tests can wait
    on the same few seconds. Each scenario must bound its own time; `result` re-raises its error."""

    def __init__(self, max_workers: int = 16):
        from concurrent.futures import ThreadPoolExecutor
        self.pool = ThreadPoolExecutor(max_workers=max_workers)
        self.futures = {}

    def start(self, name: str, fn, *args, **kw):
        self.futures[name] = self.pool.submit(fn, *args, **kw)

    def result(self, name: str, timeout: float = 30.0):
        return self.futures[name].result(timeout)

    def shutdown(self):
        self.pool.shutdown(wait=True)


def send_in_background(ws, data, timeout: float = 60.0):
    """Send `data` on a websockets connection from a helper thread, so the caller can receive at
    the same time (the relay may re-fragment a big message into many frames, and a client that
    only receives after its own send completes can deadlock on flow control). Returns a
    function that waits for the send to finish and re-raises its error."""
    result = {}

    def run():
        try:
            ws.send(data)
        except BaseException as e:  # noqa: BLE001 - re-raised in join()
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join():
        t.join(timeout)
        assert not t.is_alive(), f"send did not finish within {timeout}s"
        if "error" in result:
            raise result["error"]

    return join


def _close_pending(ws: RawWS) -> bool:
    """True if a close frame from the server is already waiting (peeked, not consumed), or the
    connection is closed. Data frames (an echo of what was sent so far) do not count."""
    import select
    r, _, _ = select.select([ws.sock], [], [], 0)
    if not r:
        return False
    try:
        peek = ws.sock.recv(4 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if not peek:
        return True
    data = bytes(ws.buf) + peek
    pos = 0
    while pos + 2 <= len(data):
        op, n = data[pos] & 0xF, data[pos + 1] & 0x7F
        if op == OP_CLOSE:
            return True
        hl = 2
        if n == 126:
            if pos + 4 > len(data):
                break
            n, hl = struct.unpack("!H", data[pos + 2:pos + 4])[0], 4
        elif n == 127:
            if pos + 10 > len(data):
                break
            n, hl = struct.unpack("!Q", data[pos + 2:pos + 10])[0], 10
        pos += hl + n
    return False


def send_lenient(ws: RawWS, data: bytes, chunk: int = 65536):
    """Send `data` on a raw connection, but stop as soon as the server has sent a close frame or
    closed (it may refuse a message early, from its header or first fragment)."""
    for i in range(0, len(data), chunk):
        if _close_pending(ws):
            return
        try:
            ws.sock.sendall(data[i:i + chunk])
        except (BrokenPipeError, ConnectionResetError):
            return
