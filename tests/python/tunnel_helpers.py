"""Helpers for the tunnel client's tests: the `ringrelay tunnel expose` process, a threaded
TCP echo service (the local service behind the tunnel), and a fake relay that speaks the
tunnel protocol of docs/tunnels.md (control WebSocket + raw data connections), so the client
can be tested apart from the relay's own tunnel code."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import threading
import time
import uuid

from helpers import binary_path

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------------------------
# The client process
# --------------------------------------------------------------------------------------------

class TunnelClient:
    """`ringrelay tunnel expose --json ...`, its stdout lines and stderr collected."""

    def __init__(self, relay: str, local: str, driver: str = "io_uring", extra: list[str] | None = None,
                 env: dict | None = None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("RINGRELAY_")}
        e["RUST_LOG"] = "info"
        e.update(env or {})
        cmd = [str(binary_path()), "tunnel", "expose", "--relay", relay, "--local", local, "--json",
               "--driver", driver, "--backoff-initial", "50ms", "--backoff-max", "400ms",
               *(extra or [])]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=e)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._pumps:
            t.start()

    def _pump(self, pipe, into):
        for raw in pipe:
            with self._lock:
                into.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def public(self, timeout: float = 10.0) -> tuple[str, int]:
        """The address of the first `{"public": ...}` line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.stdout:
                    host, port = json.loads(self.stdout[0])["public"].rsplit(":", 1)
                    return host, int(port)
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("no public address printed:\n" + self.log())

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.stderr)

    def wait(self, timeout: float) -> int:
        """The exit status, once all the process wrote is collected (its pipes at EOF)."""
        code = self.proc.wait(timeout)
        for t in self._pumps:
            t.join(timeout)
        return code

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def loopback_listener() -> socket.socket:
    """A listening socket on an ephemeral loopback port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock


def serve_each(sock: socket.socket, serve, on_accept=None):
    """Accepts until `sock` is closed; each connection is served by `serve` in its own thread
    (`on_accept` is called first, in this one)."""
    while True:
        try:
            c, _ = sock.accept()
        except OSError:
            return
        if on_accept is not None:
            on_accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


# --------------------------------------------------------------------------------------------
# The local service
# --------------------------------------------------------------------------------------------

class EchoServer:
    """Echoes every byte back; passes the client's FIN on once all is echoed. `mode`:
    'echo', or 'reset' (reads a little, then resets the connection)."""

    def __init__(self, mode: str = "echo"):
        self.mode = mode
        self.sock = loopback_listener()
        self.addr = self.sock.getsockname()
        self.accepted = 0
        threading.Thread(target=serve_each, args=(self.sock, self._serve, self._count), daemon=True).start()

    def _count(self):
        self.accepted += 1

    def _serve(self, c: socket.socket):
        try:
            if self.mode == "reset":
                c.recv(16)
                reset(c)
                return
            while True:
                b = c.recv(1 << 16)
                if not b:
                    c.shutdown(socket.SHUT_WR)
                    break
                c.sendall(b)
            c.close()
        except OSError:
            c.close()

    @property
    def local(self) -> str:
        return f"{self.addr[0]}:{self.addr[1]}"

    def close(self):
        self.sock.close()


def reset(s: socket.socket):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def recv_all(s: socket.socket, timeout: float = 10.0) -> bytes:
    s.settimeout(timeout)
    out = bytearray()
    while True:
        b = s.recv(1 << 16)
        if not b:
            return bytes(out)
        out += b


def echo_round(public: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    """Sends `data`, half-closes, reads to EOF."""
    with socket.create_connection(public, timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recv_all(s, timeout)


def check_half_close_both_ways(relay_url: str, driver: str):
    """Through a tunnel client on `relay_url`: the public client's FIN reaches the service while
    the service still sends; the service's FIN reaches the public client while it still sends."""
    svc = socket.socket()
    svc.bind(("127.0.0.1", 0))
    svc.listen(4)
    cli = TunnelClient(relay_url, f"127.0.0.1:{svc.getsockname()[1]}", driver)
    try:
        public = cli.public()
        # Public -> service, then public's FIN: the service reads EOF, and can still answer.
        _half_close_once(public, svc, b"request", b"answer after your FIN", public_first=True)
        # The other way round: the service closes its side first, the public client goes on.
        _half_close_once(public, svc, b"banner", b"late words", public_first=False)
    finally:
        cli.kill()
        svc.close()


def _half_close_once(public: tuple[str, int], svc: socket.socket, first: bytes, then: bytes,
                     public_first: bool):
    """One connection: one side sends `first` and its FIN, the other reads it to EOF, then
    answers `then` and its FIN, which the first reads to EOF."""
    p = socket.create_connection(public, timeout=10)
    s, _ = svc.accept()
    s.settimeout(10)
    a, b = (p, s) if public_first else (s, p)
    a.sendall(first)
    a.shutdown(socket.SHUT_WR)
    assert recv_all(b) == first
    b.sendall(then)
    b.shutdown(socket.SHUT_WR)
    assert recv_all(a) == then
    p.close(), s.close()


# --------------------------------------------------------------------------------------------
# A fake relay
# --------------------------------------------------------------------------------------------

def _read_head(c: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = c.recv(4096)
        if not b:
            raise EOFError
        buf += b
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def _text_frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes([0x81, n]) + payload
    return bytes([0x81, 126]) + struct.pack("!H", n) + payload


def _close_frame(code: int) -> bytes:
    return bytes([0x88, 2]) + struct.pack("!H", code)


class FakeRelay:
    """Speaks the relay's side of the tunnel protocol with Python sockets.

    `refuse_status`: answer every control upgrade with this HTTP status instead.
    `refuse_event`: (code, close) sends an error event and that close instead of tunnel_open.
    Public ports stay bound after a control connection ends (the reconnect grace) and are
    given back to `?resume=KEY`."""

    def __init__(self, refuse_status: int | None = None, refuse_event: tuple[str, int] | None = None):
        self.refuse_status = refuse_status
        self.refuse_event = refuse_event
        self.sock = loopback_listener()
        self.addr = self.sock.getsockname()
        self.control_paths: list[str] = []
        self.control_closes: list[int | None] = []
        self.controls: list[socket.socket] = []
        self.tunnels: dict[str, socket.socket] = {}  # resume key -> public listener
        self.pending: dict[str, socket.socket] = {}
        self.data_paths: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=serve_each, args=(self.sock, self._serve), daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://{self.addr[0]}:{self.addr[1]}"

    def _serve(self, c: socket.socket):
        try:
            head, rest = _read_head(c)
        except (EOFError, OSError):
            c.close()
            return
        lines = head.decode().split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        if path.startswith("/v1/tunnel/accept/"):
            self._data(c, path, rest)
        elif path.startswith("/v1/tunnel"):
            self._control(c, path, headers)
        else:
            c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            c.close()

    def _control(self, c: socket.socket, path: str, headers: dict):
        with self.lock:
            self.control_paths.append(path)
        if self.refuse_status:
            c.sendall(f"HTTP/1.1 {self.refuse_status} Refused\r\nContent-Length: 0\r\n\r\n".encode())
            c.close()
            return
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + WS_GUID).encode()).digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        if self.refuse_event:
            code, close = self.refuse_event
            ev = {"message": "refused by the fake relay", "code": code, "type": "error"}
            c.sendall(_text_frame(json.dumps(ev).encode()) + _close_frame(close))
            time.sleep(0.2)
            c.close()
            return
        query = dict(p.split("=", 1) for p in path.partition("?")[2].split("&") if "=" in p)
        key = query.get("resume")
        with self.lock:
            listener = self.tunnels.get(key) if key else None
            if listener is None:
                key = uuid.uuid4().hex
                listener = loopback_listener()
                self.tunnels[key] = listener
                fresh = True
            else:
                fresh = False
            self.controls.append(c)
        send_lock = threading.Lock()
        port = listener.getsockname()[1]
        # Extra fields and another key order than the docs': the client must not care.
        ev = {"grace_ms": 30000, "resume": key, "type": "tunnel_open", "port": port,
              "public": f"127.0.0.1:{port}", "extra": {"x": 1}}
        with send_lock:
            c.sendall(_text_frame(json.dumps(ev).encode()))
        state = {"control": c, "lock": send_lock}
        if fresh:
            self.__dict__.setdefault("_state", {})[key] = state
            threading.Thread(target=self._public, args=(listener, key), daemon=True).start()
        else:
            self._state[key].update(state)
        self._read_control(c)

    def _read_control(self, c: socket.socket):
        """Reads the client's frames: answers pings, notes its close code."""
        buf = b""
        while True:
            try:
                b = c.recv(4096)
            except OSError:
                b = b""
            if not b:
                with self.lock:
                    self.control_closes.append(None)
                return
            buf += b
            while len(buf) >= 2:
                op, n = buf[0] & 0x0F, buf[1] & 0x7F
                at = 2
                if n == 126:
                    n, at = struct.unpack("!H", buf[2:4])[0], 4
                if len(buf) < at + 4 + n:
                    break
                mask, payload = buf[at:at + 4], bytearray(buf[at + 4:at + 4 + n])
                for i in range(n):
                    payload[i] ^= mask[i % 4]
                buf = buf[at + 4 + n:]
                if op == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if n >= 2 else None
                    with self.lock:
                        self.control_closes.append(code)
                    try:
                        c.sendall(_close_frame(code or 1000))
                        c.close()
                    except OSError:
                        pass
                    return
                if op == 0x9:
                    c.sendall(bytes([0x8A, n]) + bytes(payload))

    def _public(self, listener: socket.socket, key: str):
        while True:
            try:
                p, peer = listener.accept()
            except OSError:
                return
            cid = uuid.uuid4().hex
            with self.lock:
                self.pending[cid] = p
            st = self._state[key]
            ev = {"type": "tunnel_connection", "id": cid, "peer": f"{peer[0]}:{peer[1]}"}
            try:
                with st["lock"]:
                    st["control"].sendall(_text_frame(json.dumps(ev).encode()))
            except OSError:
                pass

    def _data(self, c: socket.socket, path: str, rest: bytes):
        cid = path.rsplit("/", 1)[1].split("?")[0]
        with self.lock:
            self.data_paths.append(path)
            p = self.pending.pop(cid, None)
        if p is None:
            c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
                      b'{"error":"tunnel_connection_unknown"}   ')
            c.close()
            return
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ringrelay-tunnel\r\nConnection: Upgrade\r\n\r\n")
        if rest:
            p.sendall(rest)
        threading.Thread(target=_join, args=(c, p), daemon=True).start()

    def drop_controls(self):
        """Ends every control connection abruptly (no close frame): the client must reconnect."""
        with self.lock:
            for c in self.controls:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.controls.clear()

    def close(self):
        self.sock.close()
        for l in self.tunnels.values():
            l.close()


def _join(a: socket.socket, b: socket.socket):
    """A joined pair in one thread (so a reset can close both without another thread blocked
    in a call on them): a FIN is passed on as SHUT_WR once what came before it is written, a
    reset or error on either side resets both."""
    import selectors
    for s in (a, b):
        s.setblocking(False)
    other = {a: b, b: a}
    pending = {a: bytearray(), b: bytearray()}  # bytes waiting to be written to the key
    eof = {a: False, b: False}  # the key sent FIN
    shut = {a: False, b: False}  # SHUT_WR done on the key
    sel = selectors.DefaultSelector()
    try:
        while not (shut[a] and shut[b]):
            for s in (a, b):
                ev = 0
                if not eof[s] and len(pending[other[s]]) < (1 << 20):
                    ev |= selectors.EVENT_READ
                if pending[s]:
                    ev |= selectors.EVENT_WRITE
                try:
                    sel.unregister(s)
                except KeyError:
                    pass
                if ev:
                    sel.register(s, ev)
            if not sel.get_map():
                break
            for key, ev in sel.select(10):
                s = key.fileobj
                if ev & selectors.EVENT_READ:
                    d = s.recv(1 << 16)
                    if d:
                        pending[other[s]] += d
                    else:
                        eof[s] = True
                if ev & selectors.EVENT_WRITE:
                    n = s.send(pending[s])
                    del pending[s][:n]
            for s in (a, b):
                if eof[other[s]] and not pending[s] and not shut[s]:
                    s.shutdown(socket.SHUT_WR)
                    shut[s] = True
        a.close(), b.close()
    except OSError:
        reset(a), reset(b)
    finally:
        sel.close()
