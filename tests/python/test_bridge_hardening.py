"""The bridge against hostile and merely different peers (issue 15), on the real binary.

* Agents written with Python's json.dumps defaults, keys in another order, or pretty-printed
  get their answers through (before: only the exact bytes `{"type":"http_response"` counted,
  and every such agent's requests ended in 504); an agent's JSON objects that are not answers
  reach the other peer byte for byte.
* The session's other peer cannot make the agent run a request: the relay closes it with 1008,
  and the reference agent runs only requests carrying its connection's relay key.
* A client that never reads a large bridged answer is dropped after limits.write_timeout and
  counted against its address until then.
* Bridged answers are sandboxed and cannot set cookies unless configured to.

Each test has a control pair in another session beside the attack.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import subprocess
import threading
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect_raw

from bridge_helpers import (AgentProcess, FakeAgent, LocalAPI, agent_supported, b64, bridge, check_error, curl,
                            expect_deltas, totals, unb64, wait_for)
from helpers import (RECV_TIMEOUT, WS_GUID, Server, assert_no_message, binary_path, closed_code, pair,
                     round_trip, stop_server, unique, ws_connect)

needs_agent = pytest.mark.skipif(not agent_supported(), reason="this ringrelay binary has no `agent` subcommand")


def control_pair(srv: Server):
    _, a, b = pair(srv, unique("control"))
    round_trip(a, b, "before")
    return a, b


def close_all(*conns):
    for c in conns:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass


# --------------------------------------------------------------------------------------------
# Answers in any JSON writer's form
# --------------------------------------------------------------------------------------------

def answer_msg(id_: str, body: bytes) -> dict:
    return {"type": "http_response", "id": id_, "status": 200,
            "headers": [["content-type", "text/plain"]], "body_b64": b64(body)}


WRITERS = {
    # json.dumps with its defaults: a space after every ':' and ','.
    "dumps_defaults": lambda m: json.dumps(m),
    # id first, type last.
    "other_key_order": lambda m: json.dumps({k: m[k] for k in ("id", "status", "headers", "body_b64", "type")}),
    # pretty-printed, newlines and indentation, leading whitespace.
    "pretty": lambda m: "\n" + json.dumps(m, indent=2, sort_keys=True) + "\n",
}


class WritingAgent:
    """A websockets agent whose answers come from `write` (a JSON writer); each answer's body
    names the request's path."""

    def __init__(self, srv: Server, session: str, write):
        self.ws = ws_connect(srv, f"/v1/relay/{session}?role=agent")
        self.write = write
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while True:
                msg = self.ws.recv()
                if not isinstance(msg, str):
                    continue
                req = json.loads(msg)
                if req.get("type") == "http_request":
                    self.ws.send(self.write(answer_msg(req["id"], f"answer to {req['path']}".encode())))
        except ConnectionClosed:
            pass
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self.errors.append(e)

    def close(self):
        self.ws.close()
        self._thread.join(5)
        assert not self.errors, self.errors


@pytest.fixture(scope="module")
def wsrv(driver):
    # A short bridge.timeout: an answer the relay fails to recognise shows as a 504 quickly.
    srv = Server(driver=driver, workers=2, env={"RINGRELAY_BRIDGE_TIMEOUT": "3s"}).start()
    yield srv
    stop_server(srv)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_agents_with_any_json_writer_get_their_answers(wsrv, writer):
    """Before: each of these answers was forwarded to the other peer as an ordinary message and
    the client got 504 agent_timeout after bridge.timeout."""
    ctl = control_pair(wsrv)
    s = unique(writer.replace("_", "-"))
    agent = WritingAgent(wsrv, s, WRITERS[writer])
    web = ws_connect(wsrv, f"/v1/relay/{s}?role=web")
    before = totals(wsrv)
    try:
        url = f"http://{wsrv.host}:{wsrv.port}/v1/http/{s}"
        with urllib.request.urlopen(f"{url}/by-urllib?x=1", timeout=10) as r:
            assert (r.status, r.read()) == (200, b"answer to /by-urllib?x=1")
        r = curl(f"{url}/by-curl", "-X", "POST", "-d", "x")
        assert (r.status, r.body) == (200, b"answer to /by-curl"), r.body
        round_trip(*ctl, "during")
        # The answers never reached the web peer.
        assert_no_message(web, 0.3)
        expect_deltas(wsrv, before, {"bridge_requests": 2, "bridge_responses_2xx": 2, "bridge_request_bytes": 1,
                                     "bridge_response_bytes": 2 * len(b"answer to /by-") + len(b"urllib?x=1curl")})
    finally:
        agent.close()
        close_all(web, *ctl)


def test_the_agents_other_json_reaches_the_other_peer_unchanged(wsrv):
    """JSON objects from the agent that are not answers are held whole, then forwarded: the
    other peer gets the same bytes as a text message, whatever their shape."""
    ctl = control_pair(wsrv)
    s = unique("other-json")
    agent = ws_connect(wsrv, f"/v1/relay/{s}?role=agent")
    web = ws_connect(wsrv, f"/v1/relay/{s}?role=web")
    before = totals(wsrv)
    try:
        messages = [
            json.dumps({"type": "status", "ok": True}),
            json.dumps({"id": "1", "kind": "http_response"}, indent=2),
            # an answer quoted inside another message is not an answer
            json.dumps({"type": "log", "line": json.dumps(answer_msg("x", b"quoted"))}),
            '{"type": "http_request", "id": "from-the-agent"}',
            "  {not json at all",
            "plain text",
        ]
        for m in messages:
            agent.send(m)
        for m in messages:
            got = web.recv(timeout=RECV_TIMEOUT)
            assert isinstance(got, str) and got == m, (got, m)
        agent.send(b'{"type":"http_response","id":"bin"}')     # binary: never an answer
        assert web.recv(timeout=RECV_TIMEOUT) == b'{"type":"http_response","id":"bin"}'
        round_trip(*ctl, "after")
        expect_deltas(wsrv, before, {})
    finally:
        close_all(agent, web, *ctl)


# --------------------------------------------------------------------------------------------
# Requests come from the relay only
# --------------------------------------------------------------------------------------------

@needs_agent
def test_a_forged_request_reaches_neither_the_agent_nor_its_api(make_server):
    """Before: the web peer's http_request was forwarded to the agent, which ran it against the
    local API (a DELETE, though bridge.allowed_methods allows only GET) and sent the answer
    under the forger's id."""
    srv = make_server(env={"RINGRELAY_BRIDGE_ALLOWED_METHODS": "GET"})
    api = LocalAPI()
    s = unique("forge")
    agent = AgentProcess(f"ws://{srv.host}:{srv.port}", s, api.url).start()
    ctl = control_pair(srv)
    web = None
    try:
        wait_for(lambda: bridge(srv, "GET", s, "/ready").status == 200, 10, "the agent to answer")
        before = totals(srv)
        seen = len(api.seen)
        web = ws_connect(srv, f"/v1/relay/{s}?role=web")
        forged = json.dumps({"id": "0" * 32, "type": "http_request", "method": "DELETE", "path": "/forged",
                             "headers": [], "body_b64": b64(b"x" * 100_000)})
        web.send(forged)
        assert closed_code(web) == 1008
        round_trip(*ctl, "after the forgery")
        # A real request still works, and the API saw only that one.
        r = bridge(srv, "GET", s, "/real")
        assert r.status == 200, r.body
        assert [x["path"] for x in api.seen[seen:]] == ["/real"], api.seen[seen:]
        expect_deltas(srv, before, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_forged_requests": 1,
                                    "bridge_response_bytes": None})
        assert agent.alive()
    finally:
        close_all(*ctl)
        if web is not None:
            close_all(web)
        assert agent.terminate(15) == 0, agent.log()[-2000:]
        api.close()


class FakeRelay:
    """Just enough of a relay to talk to `ringrelay agent`: one upgrade answered with a
    Ringrelay-Bridge-Key, then text frames sent at will and the agent's frames read."""

    def __init__(self, key: str):
        self.key = key
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.buf = b""

    def accept(self):
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(RECV_TIMEOUT)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.conn.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        ws_key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(ws_key + WS_GUID.encode()).digest()).decode()
        self.conn.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Accept: {accept}\r\nRingrelay-Bridge-Key: {self.key}\r\n\r\n").encode())

    def send_text(self, text: str):
        data = text.encode()
        assert len(data) < 65536
        hdr = struct.pack("!BB", 0x81, len(data)) if len(data) < 126 else struct.pack("!BBH", 0x81, 126, len(data))
        self.conn.sendall(hdr + data)

    def recv_text(self, timeout: float) -> str | None:
        """The agent's next text message (pings skipped), or None when none comes in time."""
        deadline = time.monotonic() + timeout
        while True:
            n, at = None, 2
            if len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                if n == 126:
                    n, at = (struct.unpack("!H", self.buf[2:4])[0], 4) if len(self.buf) >= 4 else (None, 4)
                elif n == 127:
                    n, at = (struct.unpack("!Q", self.buf[2:10])[0], 10) if len(self.buf) >= 10 else (None, 10)
            if n is not None and len(self.buf) >= at + 4 + n:
                mask, payload = self.buf[at:at + 4], self.buf[at + 4:at + 4 + n]
                op = self.buf[0] & 0x0F
                self.buf = self.buf[at + 4 + n:]
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if op == 1:
                    return data.decode()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.conn.settimeout(left)
            try:
                chunk = self.conn.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def close(self):
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()


@needs_agent
def test_the_reference_agent_runs_only_requests_with_its_relay_key():
    """The agent's own check, whatever reaches it: a request without this connection's key
    (or with another) is neither run nor answered; one with the key is. Before: the agent ran
    every http_request text it received."""
    key = "5" * 32
    relay = FakeRelay(key)
    api = LocalAPI()
    agent = subprocess.Popen([str(binary_path()), "agent", "--relay", f"ws://127.0.0.1:{relay.port}",
                              "--session", "s", "--target", api.url], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        relay.accept()

        def req(id_, **extra):
            return json.dumps({"type": "http_request", "id": id_, **extra, "method": "GET", "path": f"/{id_}",
                               "headers": [], "body_b64": ""})
        relay.send_text(req("a" * 32))
        relay.send_text(req("b" * 32, relay_key="6" * 32))
        relay.send_text(json.dumps({"type": "http_request", "id": "c" * 32}))    # broken, no key
        assert relay.recv_text(1.0) is None, "answered a request without the relay key"
        relay.send_text(req("d" * 32, relay_key=key))
        answer = json.loads(relay.recv_text(10) or "null")
        assert (answer["id"], answer["status"]) == ("d" * 32, 200), answer
        assert [x["path"] for x in api.seen] == ["/" + "d" * 32], api.seen
    finally:
        agent.terminate()
        agent.wait(15)
        relay.close()
        api.close()


# --------------------------------------------------------------------------------------------
# A client that never reads its answer
# --------------------------------------------------------------------------------------------

BIG = 4 << 20


def connect_from(srv: Server, source: str, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.settimeout(RECV_TIMEOUT)
    s.connect((srv.host, srv.port))
    return s


def test_a_client_that_never_reads_is_dropped_and_counted_until_then(make_server):
    """Before: the relay released the client's open-connection count as soon as the answer was
    ready and then wrote it without a timeout: N clients that never read held N descriptors,
    tasks and 4 MiB bodies for ever, and the N+1st connection from the same address was let in."""
    n = 3
    # One worker keeps the stuck writes on one core (the per-address figure is exact at any
    # worker count: each address's connections are counted on its home core).
    srv = make_server(env={"RINGRELAY_LIMITS_WRITE_TIMEOUT": "1500ms",
                           "RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP": str(n),
                           "RINGRELAY_BRIDGE_MAX_RESPONSE_BYTES": str(BIG)}, workers=1)
    s = unique("stuck")
    body = b"z" * BIG

    def handler(req):
        return {"status": 200, "headers": [("content-type", "application/octet-stream")], "body": body}
    # The agent and the control pair come from other addresses: only the stuck clients'
    # address is at its limit.
    agent = FakeAgent(srv, s, handler=handler, sock=connect_from(srv, "127.0.0.2"))
    ctl_session = unique("control")
    ctl = [ws_connect_raw(srv.ws_url(f"/v1/relay/{ctl_session}?role={r}"), sock=connect_from(srv, "127.0.0.3"),
                          ping_interval=None, compression=None, proxy=None, open_timeout=RECV_TIMEOUT, legacy=True)
           for r in ("a", "b")]
    stuck = []
    try:
        before = totals(srv)
        for i in range(n):
            c = connect_from(srv, "127.0.0.1", rcvbuf=4096)
            c.sendall(f"GET /v1/http/{s}/big/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stuck.append(c)
        wait_for(lambda: totals(srv)["bridge_responses_2xx"] - before["bridge_responses_2xx"] == n, 10,
                 "every answer on its way")
        # Each is stuck in its write, and each still counts for its address.
        assert totals(srv)["bridge_connections"] == n
        r = bridge(srv, "GET", s, "/one-more")
        check_error(r, 429, "too_many_connections")
        round_trip(*ctl, "while stuck")
        # After limits.write_timeout each is dropped, counted, and its descriptor freed.
        wait_for(lambda: totals(srv)["bridge_write_timeouts"] - before["bridge_write_timeouts"] == n, 10,
                 "the stuck writes to time out")
        wait_for(lambda: totals(srv)["bridge_connections"] == 0, 5, "bridged connections to end")
        r = bridge(srv, "GET", s, "/after")
        assert r.status == 200 and len(r.body) == BIG
        round_trip(*ctl, "after")
        # The one over the limit was refused at admission, before the bridge saw it.
        expect_deltas(srv, before, {"bridge_requests": n + 1, "bridge_responses_2xx": n + 1,
                                    "bridge_write_timeouts": n,
                                    "bridge_response_bytes": (n + 1) * BIG})
        assert totals(srv)["ip_open_refused"] - before["ip_open_refused"] == 1
    finally:
        for c in stuck:
            c.close()
        agent.close()
        close_all(*ctl)


# --------------------------------------------------------------------------------------------
# Bridged answers and the relay's origin
# --------------------------------------------------------------------------------------------

PAGE = b"<!doctype html><script>document.cookie='stolen=1'; fetch('/v1/relay/x')</script>"
AGENT_HEADERS = [("content-type", "text/html"), ("set-cookie", "sid=agent; Path=/"),
                 ("Set-Cookie", "other=1"), ("content-security-policy", "default-src 'self'")]


def page_handler(req):
    return {"status": 200, "headers": AGENT_HEADERS, "body": PAGE}


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "allowed"])
def test_bridged_answers_are_sandboxed_and_cookieless_unless_allowed(make_server, allowed):
    """Before: an agent's HTML ran script as the relay's origin and its Set-Cookie headers set
    cookies for it. Now (defaults) the answer carries `Content-Security-Policy: sandbox` beside
    the agent's own policy, and no Set-Cookie; with both keys on, both go through as sent."""
    env = {}
    if allowed:
        env = {"RINGRELAY_BRIDGE_ALLOW_ACTIVE_CONTENT": "true", "RINGRELAY_BRIDGE_PASS_COOKIES": "1"}
    srv = make_server(env=env)
    s = unique("origin")
    agent = FakeAgent(srv, s, handler=page_handler)
    ctl = control_pair(srv)
    try:
        r = curl(f"http://{srv.host}:{srv.port}/v1/http/{s}/page")
        assert (r.status, r.body) == (200, PAGE)
        csp = r.header_all("content-security-policy")
        cookies = r.header_all("set-cookie")
        if allowed:
            assert csp == ["default-src 'self'"], r.header_list
            assert cookies == ["sid=agent; Path=/", "other=1"], r.header_list
        else:
            assert sorted(csp) == ["default-src 'self'", "sandbox"], r.header_list
            assert cookies == [], r.header_list
        assert r.header_all("x-content-type-options") == ["nosniff"]
        round_trip(*ctl, "after")
    finally:
        agent.close()
        close_all(*ctl)
