"""The HTTP bridge, `ANY /v1/http/{session}/{path...}`, against a fake agent written here.

The fake agent is an ordinary WebSocket peer of the session with role `agent` (websockets
sync client, or raw frames where the TCP connection has to be dropped). It reads the relay's
`http_request` messages and answers with `http_response` messages (docs/bridge.md). Requests
are sent on raw sockets (and curl where noted) and each response is read until the relay closes
the connection: the bridge answers one request per connection.

Every check compares what arrived with what was sent, and every test checks that each bridge
counter in /stats moved by exactly what it caused (see `expect_deltas`).

Servers: `bsrv` (module, per driver) has a 5 s bridge.timeout (so "at once" is well apart from
"after the timeout"), a 1 s handshake_timeout (the body deadline) and a 4096-byte response
limit; tests that need other settings start their own.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import socket
import subprocess
import time
import urllib.parse

import pytest

from bridge_helpers import (ANSWER_PREFIX, AgentProcess, FakeAgent, FixedPortServer, LocalAPI, RawAgent,
                            agent_supported, answer_json, bridge, bridge_latency_count, bridge_raw, build_request,
                            check_error, check_relay_headers, curl, echo_handler, expect_deltas, free_port, in_thread,
                            marker, mint, parse_response, read_to_eof, stats, totals, unb64, wait_for, wait_pending)
from helpers import (OP_CONT, OP_TEXT, RECV_TIMEOUT, RawWS, Server, assert_no_message, binary_path, closing_fixture,
                     http_get, stop_server, unique, ws_connect)

BRIDGE_TIMEOUT = 5.0          # bsrv's bridge.timeout
BODY_DEADLINE = 1.0           # bsrv's limits.handshake_timeout
MAX_RESPONSE = 4096           # bsrv's bridge.max_response_bytes
MAX_BODY = 65536              # the default bridge.max_body_bytes
QUICK = 1.0                   # "at once": well under BRIDGE_TIMEOUT

DEFAULT_ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


@pytest.fixture(scope="module")
def bsrv(driver):
    srv = Server(driver=driver, workers=2, env={
        "RINGRELAY_BRIDGE_TIMEOUT": "5s",
        "RINGRELAY_LIMITS_HANDSHAKE_TIMEOUT": "1s",
        "RINGRELAY_BRIDGE_MAX_RESPONSE_BYTES": str(MAX_RESPONSE),
    }).start()
    yield srv
    stop_server(srv)


@pytest.fixture
def agent(bsrv):
    """A session with a held (non-answering) fake agent; yields the agent."""
    a = FakeAgent(bsrv, unique("br"))
    yield a
    a.close()
    a.check()


def hdr(req: dict, name: str) -> list[str]:
    return [v for k, v in req["headers"] if k == name]


def req_body(req: dict) -> bytes:
    return unb64(req["body_b64"])


def check_request_shape(req: dict):
    assert set(req) == {"type", "id", "relay_key", "method", "path", "headers", "body_b64"}, req
    assert req["type"] == "http_request"
    assert re.fullmatch(r"[0-9a-f]{32}", req["id"]), f"id {req['id']!r}: docs/bridge.md says 128 random bits in hex"
    assert re.fullmatch(r"[0-9a-f]{32}", req["relay_key"]), req["relay_key"]
    assert isinstance(req["headers"], list) and all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in req["headers"]), req
    for k, _ in req["headers"]:
        assert k == k.lower(), f"header name not lower-cased: {k!r}"
        assert k not in ("content-length", "transfer-encoding", "connection", "expect"), req["headers"]


# --------------------------------------------------------------------------------------------
# Requests reach the agent as sent
# --------------------------------------------------------------------------------------------

PATHS = [
    ("/users?x=1", "/users?x=1"),
    ("/users?x=1&y=two&z", "/users?x=1&y=two&z"),
    ("", "/"),
    ("/", "/"),
    ("?q=1", "/?q=1"),
    ("/a/b%2Fc/../d%20e?x=%41&y=%2F", "/a/b%2Fc/../d%20e?x=%41&y=%2F"),
]


@pytest.mark.parametrize("sent,expected", PATHS, ids=[p[0] or "empty" for p in PATHS])
def test_get_path_and_query_reach_agent(bsrv, agent, sent, expected):
    before = totals(bsrv)
    lat0 = bridge_latency_count(bsrv)
    m = marker()
    headers = [("Accept", "application/json"), ("X-Request-Id", m), ("X-Multi", "one"), ("x-multi", "two"),
               ("User-Agent", "bridge-test/1.0"), ("X-Spaced", "  inner  value \t"), ("Authorization", "Basic dXNlcjpwdw==")]
    join = in_thread(bridge, bsrv, "GET", agent.session, sent, headers)
    req = agent.next_request()
    check_request_shape(req)
    assert req["method"] == "GET"
    assert req["path"] == expected, req["path"]
    assert req["body_b64"] == ""
    want = [["host", f"{bsrv.host}:{bsrv.port}"], ["accept", "application/json"], ["x-request-id", m],
            ["x-multi", "one"], ["x-multi", "two"], ["user-agent", "bridge-test/1.0"], ["x-spaced", "inner  value"],
            # auth is off on this server: the API's own credentials pass through
            ["authorization", "Basic dXNlcjpwdw=="]]
    assert req["headers"] == want, req["headers"]
    body = json.dumps({"you_asked": expected, "marker": m}).encode()
    agent.answer(req["id"], 200, [("Content-Type", "application/json"), ("X-Answer", m)], body)
    r = join()
    assert r.status == 200, r
    assert r.body == body
    assert r.headers["content-type"] == "application/json"
    assert r.header_all("x-answer") == [m]
    assert r.header_all("content-length") == [str(len(body))]
    check_relay_headers(r)
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_response_bytes": len(body)})
    assert bridge_latency_count(bsrv) - lat0 == 1
    assert totals(bsrv)["bridge_pending"] == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_body_methods_json(bsrv, method):
    payload = {"method": method, "n": random.randint(0, 10**9), "text": "héllo ✓", "list": list(range(50))}
    sent = json.dumps(payload).encode()
    before = totals(bsrv)
    with FakeAgent(bsrv, unique("json"), handler=echo_handler(201, [("location", "/things/7")])) as ag:
        r = bridge(bsrv, method, ag.session, "/things?dry=0", [("Content-Type", "application/json; charset=utf-8")], sent)
        assert r.status == 201, r
        check_relay_headers(r)
        assert r.header_all("location") == ["/things/7"]
        desc = json.loads(r.body)
        assert desc["method"] == method
        assert desc["path"] == "/things?dry=0"
        assert unb64(desc["body_b64"]) == sent
        assert json.loads(unb64(desc["body_b64"])) == payload
        names = [k for k, _ in desc["headers"]]
        assert names == ["host", "content-type"], desc["headers"]
        assert ag.seen[0]["id"]
        check_request_shape(ag.seen[0])
        ag.check()
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_request_bytes": len(sent),
                                 "bridge_response_bytes": len(r.body)})


def test_binary_body_all_byte_values_both_ways(bsrv, agent):
    sent = bytes(range(256)) * 8 + os.urandom(1000) + bytes(range(255, -1, -1))
    back = bytes(range(256))[::-1] * 4 + b"\x00\r\n\r\n\x00" + bytes(range(256))   # under the 4096 limit
    assert len(back) <= MAX_RESPONSE
    before = totals(bsrv)
    join = in_thread(bridge, bsrv, "POST", agent.session, "/bin", [("Content-Type", "application/octet-stream")], sent)
    req = agent.next_request()
    assert req_body(req) == sent
    agent.answer(req["id"], 200, [("Content-Type", "application/octet-stream")], back)
    r = join()
    assert r.status == 200 and r.body == back
    check_relay_headers(r)
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_request_bytes": len(sent),
                                 "bridge_response_bytes": len(back)})


def test_empty_post_body(bsrv, agent):
    join = in_thread(bridge, bsrv, "POST", agent.session, "/empty", [], b"")
    req = agent.next_request()
    assert req["body_b64"] == "" and req["method"] == "POST"
    agent.answer(req["id"], 200, [], b"")
    r = join()
    assert r.status == 200 and r.body == b"" and r.header_all("content-length") == ["0"], r.header_list


# --------------------------------------------------------------------------------------------
# Chunked bodies and Expect: 100-continue
# --------------------------------------------------------------------------------------------

def send_slowly(sock: socket.socket, pieces: list[bytes], pause: float = 0.01):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for p in pieces:
        sock.sendall(p)
        time.sleep(pause)


def test_chunked_request_body(bsrv, agent):
    """Chunks with extensions, upper- and lower-case hex sizes and a trailer, written in pieces
    that split sizes, CRLFs and data; the agent gets the joined body and none of the framing."""
    chunks = [b"abc", os.urandom(0x1F0), bytes(range(256)), b"x" * 0xA, b"\r\n0\r\n"]   # data that looks like framing
    body = b"".join(chunks)
    wire = b""
    for i, c in enumerate(chunks):
        size = f"{len(c):X}" if i % 2 else f"{len(c):x}"
        ext = ";name=value" if i == 1 else (";flag" if i == 3 else "")
        wire += size.encode() + ext.encode() + b"\r\n" + c + b"\r\n"
    wire += b"0\r\nX-Trailer-Field: t\r\n\r\n"
    head = build_request(bsrv.listen, "POST", f"/v1/http/{agent.session}/upload",
                         [("Transfer-Encoding", "chunked"), ("Trailer", "X-Trailer-Field"), ("X-Kind", "chunked")])
    before = totals(bsrv)

    def run():
        with socket.create_connection(bsrv.listen, timeout=RECV_TIMEOUT) as s:
            pieces = [head[:20], head[20:]] + [wire[i:i + 7] for i in range(0, len(wire), 7)]
            send_slowly(s, pieces, 0.0005)
            return parse_response(read_to_eof(s, time.monotonic() + RECV_TIMEOUT))

    join = in_thread(run)
    req = agent.next_request()
    assert req_body(req) == body
    names = [k for k, _ in req["headers"]]
    assert names == ["host", "x-kind"], req["headers"]
    agent.answer(req["id"], 200, [], b"ok")
    r = join()
    assert (r.status, r.body) == (200, b"ok")
    check_relay_headers(r)
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_request_bytes": len(body),
                                 "bridge_response_bytes": 2})


def test_chunked_empty_and_exactly_max_body(bsrv, agent):
    for body in (b"", os.urandom(MAX_BODY)):
        wire = b""
        for i in range(0, len(body), 10000):
            c = body[i:i + 10000]
            wire += f"{len(c):x}\r\n".encode() + c + b"\r\n"
        wire += b"0\r\n\r\n"
        raw = build_request(bsrv.listen, "POST", f"/v1/http/{agent.session}/c", [("Transfer-Encoding", "chunked")]) + wire
        join = in_thread(bridge_raw, bsrv, raw)
        req = agent.next_request()
        assert req_body(req) == body
        agent.answer(req["id"], 200, [], b"")
        assert join().status == 200


def test_expect_100_continue(bsrv, agent):
    """The 100 comes before the body is sent; the agent gets the body and no Expect header."""
    body = os.urandom(2000)
    head = build_request(bsrv.listen, "POST", f"/v1/http/{agent.session}/up",
                         [("Expect", "100-continue"), ("Content-Length", str(len(body)))])
    before = totals(bsrv)
    with socket.create_connection(bsrv.listen, timeout=RECV_TIMEOUT) as s:
        s.sendall(head)
        buf = bytearray()
        deadline = time.monotonic() + 3
        while b"\r\n\r\n" not in buf:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(4096)
            assert chunk, f"EOF before the 100: {bytes(buf)!r}"
            buf += chunk
        assert bytes(buf).startswith(b"HTTP/1.1 100 Continue\r\n"), bytes(buf)
        assert bytes(buf).endswith(b"\r\n\r\n") and bytes(buf).count(b"\r\n\r\n") == 1, bytes(buf)
        agent.assert_no_request(0.2)    # nothing reaches the agent before the body
        s.sendall(body)
        req = agent.next_request()
        assert req_body(req) == body
        assert hdr(req, "expect") == [] and [k for k, _ in req["headers"]] == ["host"], req["headers"]
        agent.answer(req["id"], 200, [], b"got it")
        r = parse_response(read_to_eof(s, time.monotonic() + RECV_TIMEOUT))
    assert (r.status, r.body) == (200, b"got it")
    check_relay_headers(r)
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_request_bytes": len(body),
                                 "bridge_response_bytes": 6})


def test_expect_100_with_curl(bsrv, agent, tmp_path):
    """curl with Expect: 100-continue (its default for big bodies) waits for the 100 before the body."""
    body = os.urandom(5000)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    cmd = ["curl", "-s", "-i", "--max-time", "10", "--expect100-timeout", "4", "--data-binary", f"@{f}",
           "-H", "Content-Type: application/octet-stream", "-H", "Expect: 100-continue",
           f"http://{bsrv.host}:{bsrv.port}/v1/http/{agent.session}/curl?via=curl"]
    t0 = time.monotonic()
    join = in_thread(subprocess.run, cmd, capture_output=True, timeout=15)
    req = agent.next_request()
    assert time.monotonic() - t0 < 3.0, "curl waited for its expect100 timeout: no 100 Continue"
    assert req_body(req) == body and req["path"] == "/curl?via=curl"
    assert hdr(req, "expect") == []
    agent.answer(req["id"], 202, [("x-from", "agent")], body[:100])
    out = join()
    assert out.returncode == 0, out.stderr
    raw = out.stdout
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), raw[:200]
    r = parse_response(raw)
    assert r.status == 202 and r.body == body[:100] and r.header_all("x-from") == ["agent"]


def test_no_100_continue_when_refused(bsrv, agent):
    """Over the body limit with Expect: 413 at once, without a 100 and without waiting for a body."""
    raw = build_request(bsrv.listen, "POST", f"/v1/http/{agent.session}/big",
                        [("Expect", "100-continue"), ("Content-Length", str(MAX_BODY + 1))])
    r = bridge_raw(bsrv, raw)
    assert r.interim == [], r.interim
    check_error(r, 413, "body_too_large")
    assert r.elapsed < QUICK
    agent.assert_no_request()


# --------------------------------------------------------------------------------------------
# Status codes, HEAD, headers
# --------------------------------------------------------------------------------------------

STATUSES = [
    (200, b"fine", "2xx"), (201, b"created", "2xx"), (204, b"", "2xx"), (301, b"moved", "3xx"), (304, b"", "3xx"),
    (404, b'{"error":"no such user"}', "4xx"), (418, b"teapot", "4xx"), (500, b"boom", "5xx"),
    (503, b"later", "5xx"), (599, b"", "5xx"),
]


@pytest.mark.parametrize("status,body,cls", STATUSES, ids=[str(s[0]) for s in STATUSES])
def test_status_passthrough(bsrv, agent, status, body, cls):
    before = totals(bsrv)
    join = in_thread(bridge, bsrv, "GET", agent.session, f"/status/{status}")
    req = agent.next_request()
    headers = [("X-Status", str(status))]
    if status == 301:
        headers.append(("Location", "https://example.test/new"))
    if status == 503:
        headers.append(("Retry-After", "7"))
    agent.answer(req["id"], status, headers, body)
    r = join()
    assert r.status == status, (r.status, r.body)
    assert r.body == body
    check_relay_headers(r)
    assert r.header_all("x-status") == [str(status)]
    if status in (204, 304):
        assert r.header_all("content-length") == [], r.header_list
    else:
        assert r.header_all("content-length") == [str(len(body))], r.header_list
    if status == 301:
        assert r.header_all("location") == ["https://example.test/new"]
    if status == 503:
        assert r.header_all("retry-after") == ["7"]
    expect_deltas(bsrv, before, {"bridge_requests": 1, f"bridge_responses_{cls}": 1,
                                 "bridge_response_bytes": len(body)})


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_status_drops_agent_body(bsrv, agent, status):
    """An agent that sends a body with a 204/304: the client must not get it (nothing may follow
    the head), and no body bytes are counted as written."""
    before = totals(bsrv)
    join = in_thread(bridge, bsrv, "GET", agent.session, "/nobody")
    req = agent.next_request()
    agent.answer(req["id"], status, [], b"this body must not be sent")
    r = join()      # parse_response fails if any byte follows the head
    assert r.status == status and r.header_all("content-length") == []
    # (bridge_response_bytes: see test_response_bytes_counts_only_bytes_written)
    expect_deltas(bsrv, before, {"bridge_requests": 1, f"bridge_responses_{status // 100}xx": 1,
                                 "bridge_response_bytes": None})


@pytest.mark.parametrize("agent_cl", [True, False], ids=["agent-content-length", "no-content-length"])
def test_head(bsrv, agent, agent_cl):
    before = totals(bsrv)
    join = in_thread(bridge, bsrv, "HEAD", agent.session, "/doc?v=2")
    req = agent.next_request()
    assert (req["method"], req["path"], req["body_b64"]) == ("HEAD", "/doc?v=2", "")
    headers = [("Content-Type", "text/html"), ("ETag", '"abc"')]
    if agent_cl:
        headers.append(("Content-Length", "12345"))
    # a careless agent sends a body with its HEAD answer: it must not reach the client
    agent.answer(req["id"], 200, headers, b"<html>body</html>")
    r = join()      # fails if any byte follows the head
    assert r.status == 200
    check_relay_headers(r)
    assert r.header_all("etag") == ['"abc"']
    assert r.header_all("content-length") == (["12345"] if agent_cl else []), r.header_list
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_response_bytes": None})


@pytest.mark.parametrize("method,status", [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_response_bytes_counts_only_bytes_written(bsrv, agent, method, status):
    """bridge_response_bytes is "body bytes of agent answers written to HTTP clients": an agent
    body the relay drops (HEAD, 204, 304) is not written, so it is not counted."""
    before = totals(bsrv)
    join = in_thread(bridge, bsrv, method, agent.session, "/count")
    agent.answer(agent.next_request()["id"], status, [], b"dropped by the relay")
    r = join()
    assert r.status == status and r.body == b""
    expect_deltas(bsrv, before, {"bridge_requests": 1, f"bridge_responses_{status // 100}xx": 1})


def test_host_header_rules(bsrv, agent):
    """RFC 9112 3.2: an HTTP/1.1 request without Host, or with two, is answered 400, and never
    reaches the agent (two Hosts are something the agent's HTTP stack and the API could read
    differently)."""
    for raw in (f"GET /v1/http/{agent.session}/h HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
                f"GET /v1/http/{agent.session}/h HTTP/1.1\r\nX-Other: 1\r\n\r\n"):
        join = in_thread(bridge_raw, bsrv, raw.encode())
        try:
            req = agent.next_request(0.5)
        except AssertionError:
            req = None
        if req is not None:
            agent.answer(req["id"], 200, [], b"")
        r = join()
        assert r.status == 400 and req is None, (raw, r.status, req and req["headers"])


def test_head_refusals_have_no_body(bsrv, agent):
    """RFC 9110 9.3.2: a response to HEAD has no content, the relay's own refusals included."""
    checks = []
    r = bridge_raw(bsrv, build_request(bsrv.listen, "HEAD", f"/v1/http/{unique('nobody')}/x"), head_request=True)
    checks.append((r.status, r.body))
    r = bridge_raw(bsrv, build_request(bsrv.listen, "HEAD", f"/v1/http/{agent.session}/x",
                                       [("Content-Length", str(MAX_BODY + 1))]), head_request=True)
    checks.append((r.status, r.body))
    join = in_thread(bridge_raw, bsrv, build_request(bsrv.listen, "HEAD", f"/v1/http/{agent.session}/x"),
                     head_request=True)
    agent.send(_bad(agent.next_request()["id"], status=99))
    r = join()
    checks.append((r.status, r.body))
    assert [c[0] for c in checks] == [502, 413, 502]
    # (bridge_raw already fails on any byte after the head; this is for the report)
    assert all(b == b"" for _, b in checks), checks


def test_large_headers_both_ways(bsrv, agent):
    """40 request headers of 150-byte values (a head under 8 KiB) and 40 in the answer, in order."""
    rnd = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!#$%&'*+^`|/=;, "

    def value(i):
        v = f"{i:03d}:" + "".join(rnd.choice(alphabet) for _ in range(146))
        return v.strip()

    sent = [(f"X-Big-{i:02d}", value(i)) for i in range(40)]
    raw = build_request(bsrv.listen, "GET", f"/v1/http/{agent.session}/big", sent)
    assert 6000 < len(raw) < 8192, len(raw)
    join = in_thread(bridge_raw, bsrv, raw)
    req = agent.next_request()
    assert req["headers"][1:] == [[k.lower(), v] for k, v in sent], req["headers"]
    back = [(f"x-back-{i:02d}", value(100 + i)) for i in range(40)]
    agent.answer(req["id"], 200, back, b"")
    r = join()
    assert r.status == 200
    got = [(k, v) for k, v in r.header_list if k.startswith("x-back-")]
    assert got == back, got
    check_relay_headers(r)


def test_hop_by_hop_stripped_both_ways(bsrv, agent):
    before = totals(bsrv)
    sent = [
        ("Connection", "keep-alive, X-Conn-Named"), ("X-Conn-Named", "drop me"), ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"), ("Trailer", "X-T"), ("Proxy-Authorization", "Basic eA=="), ("Proxy-Connection", "keep-alive"),
        ("Proxy-Foo", "bar"), ("X-Keep-1", "kept"), ("Cookie", "a=1; b=2"), ("X-Keep-2", "kept too"),
        ("Upgrade", "h2c"),
    ]
    body = b"payload"
    join = in_thread(bridge, bsrv, "POST", agent.session, "/hop", sent, body)
    req = agent.next_request()
    assert req["headers"] == [["host", f"{bsrv.host}:{bsrv.port}"], ["x-keep-1", "kept"], ["cookie", "a=1; b=2"],
                              ["x-keep-2", "kept too"]], req["headers"]
    assert req_body(req) == body
    back_body = b"answer body"
    agent.answer(req["id"], 200, [
        ("Connection", "X-Agent-Named, close"), ("X-Agent-Named", "drop"), ("Keep-Alive", "timeout=1"),
        ("Transfer-Encoding", "chunked"), ("Upgrade", "websocket"), ("Proxy-Authenticate", "Basic"),
        ("Proxy-Whatever", "x"), ("Trailer", "X-T"), ("TE", "gzip"), ("Content-Length", "999"),
        ("X-Frame-Options", "SAMEORIGIN"), ("Cache-Control", "public, max-age=600"), ("Referrer-Policy", "unsafe-url"),
        ("X-Content-Type-Options", "none"), ("Set-Cookie", "s=1"), ("Set-Cookie", "t=2"), ("X-End", "end-to-end"),
    ], back_body)
    r = join()
    assert r.status == 200 and r.body == back_body
    check_relay_headers(r)      # each security header once, with the relay's value; Connection: close only
    names = [k for k, _ in r.header_list]
    for gone in ("x-agent-named", "keep-alive", "transfer-encoding", "upgrade", "proxy-authenticate",
                 "proxy-whatever", "trailer", "te"):
        assert gone not in names, (gone, r.header_list)
    assert r.header_all("content-length") == [str(len(back_body))]
    # dropped: bridge.pass_cookies is off (test_bridge_origin.py turns it on)
    assert r.header_all("set-cookie") == []
    assert r.header_all("content-security-policy") == ["sandbox"]
    assert r.header_all("x-end") == ["end-to-end"]
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_request_bytes": len(body),
                                 "bridge_response_bytes": len(back_body)})


# --------------------------------------------------------------------------------------------
# Many requests in flight, answered out of order
# --------------------------------------------------------------------------------------------

def test_50_concurrent_requests_answered_shuffled(bsrv, agent):
    n = 50
    before = totals(bsrv)
    lat0 = bridge_latency_count(bsrv)
    marks = [f"{i:02d}-{marker()}" for i in range(n)]
    joins = [in_thread(bridge, bsrv, "POST", agent.session, f"/c/{m}?i={i}", [("X-Mark", m)], m.encode() * (i + 1))
             for i, m in enumerate(marks)]
    reqs = agent.take_requests(n, timeout=10)
    ids = [r["id"] for r in reqs]
    assert len(set(ids)) == n, "ids must be unique among the requests in flight"
    wait_pending(bsrv, n)
    random.Random(1).shuffle(reqs)
    for req in reqs:
        m = hdr(req, "x-mark")[0]
        assert req["path"].startswith(f"/c/{m}?i="), req["path"]
        i = int(req["path"].rsplit("=", 1)[1])
        assert req_body(req) == m.encode() * (i + 1)
        agent.answer(req["id"], 200, [("x-echo-mark", m)], f"answer for {m}".encode())
    sent_bytes = 0
    got_bytes = 0
    for i, (m, j) in enumerate(zip(marks, joins)):
        r = j(15)
        assert r.status == 200, (m, r.status, r.body)
        assert r.body == f"answer for {m}".encode(), (m, r.body)
        assert r.header_all("x-echo-mark") == [m]
        sent_bytes += len(m.encode()) * (i + 1)
        got_bytes += len(r.body)
    expect_deltas(bsrv, before, {"bridge_requests": n, "bridge_responses_2xx": n, "bridge_request_bytes": sent_bytes,
                                 "bridge_response_bytes": got_bytes})
    assert bridge_latency_count(bsrv) - lat0 == n
    assert totals(bsrv)["bridge_pending"] == 0


# --------------------------------------------------------------------------------------------
# Relay refusals
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "BREW"])
def test_method_not_allowed(bsrv, agent, method):
    before = totals(bsrv)
    r = bridge(bsrv, method, agent.session, "/x")
    check_error(r, 405, "method_not_allowed")
    assert r.header_all("allow") == [DEFAULT_ALLOW], r.header_list
    agent.assert_no_request()
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_4xx": 1})


def _head(srv, session, lines: list[str]) -> bytes:
    return (f"POST /v1/http/{session}/f HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\n" + "".join(
        f"{ln}\r\n" for ln in lines) + "\r\n").encode()


FRAMING = [
    ("cl-and-te", ["Content-Length: 3", "Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n", "ambiguous_framing"),
    ("te-and-cl", ["Transfer-Encoding: chunked", "Content-Length: 0"], b"0\r\n\r\n", "ambiguous_framing"),
    ("cl-repeated-same", ["Content-Length: 3", "Content-Length: 3"], b"abc", "bad_content_length"),
    ("cl-repeated-differ", ["Content-Length: 3", "Content-Length: 4"], b"abcd", "bad_content_length"),
    ("cl-list", ["Content-Length: 3, 3"], b"abc", "bad_content_length"),
    ("cl-plus", ["Content-Length: +3"], b"abc", "bad_content_length"),
    ("cl-negative", ["Content-Length: -1"], b"", "bad_content_length"),
    ("cl-hex", ["Content-Length: 0x3"], b"abc", "bad_content_length"),
    ("cl-empty", ["Content-Length:"], b"", "bad_content_length"),
    ("cl-word", ["Content-Length: three"], b"abc", "bad_content_length"),
    ("cl-over-64-bits", ["Content-Length: 184467440737095516160"], b"", "bad_content_length"),
    ("te-gzip-chunked", ["Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n", "unsupported_transfer_encoding"),
    ("te-chunked-twice", ["Transfer-Encoding: chunked, chunked"], b"0\r\n\r\n", "unsupported_transfer_encoding"),
    ("te-two-headers", ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], b"0\r\n\r\n",
     "unsupported_transfer_encoding"),
    ("te-identity", ["Transfer-Encoding: identity"], b"", "unsupported_transfer_encoding"),
    ("te-gzip", ["Transfer-Encoding: gzip"], b"", "unsupported_transfer_encoding"),
    ("chunk-size-not-hex", ["Transfer-Encoding: chunked"], b"zz\r\nabc\r\n0\r\n\r\n", "bad_chunked_body"),
    ("chunk-size-negative", ["Transfer-Encoding: chunked"], b"-3\r\nabc\r\n0\r\n\r\n", "bad_chunked_body"),
    ("chunk-data-longer", ["Transfer-Encoding: chunked"], b"3\r\nabcdef\r\n0\r\n\r\n", "bad_chunked_body"),
    ("chunk-no-crlf-after-size", ["Transfer-Encoding: chunked"], b"3 abc\r\n0\r\n\r\n", "bad_chunked_body"),
    ("chunk-size-missing", ["Transfer-Encoding: chunked"], b"\r\nabc\r\n0\r\n\r\n", "bad_chunked_body"),
    ("trailers-oversized", ["Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\nX-T: " + b"t" * 100_000 + b"\r\n\r\n",
     "bad_chunked_body"),
]


@pytest.mark.parametrize("name,lines,body,code", FRAMING, ids=[f[0] for f in FRAMING])
def test_framing_refused_400(bsrv, agent, name, lines, body, code):
    before = totals(bsrv)
    r = bridge_raw(bsrv, _head(bsrv, agent.session, lines) + body)
    check_error(r, 400, code)
    agent.assert_no_request(0.2)
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_4xx": 1})


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_incomplete_body_400(bsrv, agent, framing):
    """The client half-closes before its body is complete: 400 at once, not at the body deadline."""
    if framing == "content-length":
        raw = _head(bsrv, agent.session, ["Content-Length: 100"]) + b"x" * 60
    else:
        raw = _head(bsrv, agent.session, ["Transfer-Encoding: chunked"]) + b"40\r\n" + b"y" * 20
    before = totals(bsrv)
    r = bridge_raw(bsrv, raw, shut_wr=True)
    check_error(r, 400, "incomplete_body")
    assert r.elapsed < BODY_DEADLINE * 0.8, f"{r.elapsed:.2f}s: answered at the body deadline, not at the half-close"
    agent.assert_no_request(0.2)
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_4xx": 1})


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_timeout_408(bsrv, agent, framing):
    """Part of the body, then silence: 408 once limits.handshake_timeout (1 s) from accept passes."""
    if framing == "content-length":
        raw = _head(bsrv, agent.session, ["Content-Length: 10"]) + b"abc"
    else:
        raw = _head(bsrv, agent.session, ["Transfer-Encoding: chunked"]) + b"5\r\nab"
    before = totals(bsrv)
    r = bridge_raw(bsrv, raw, timeout=BODY_DEADLINE + 4)
    check_error(r, 408, "body_timeout")
    assert BODY_DEADLINE * 0.9 <= r.elapsed < BODY_DEADLINE + 2, f"408 after {r.elapsed:.2f}s"
    agent.assert_no_request(0.2)
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_4xx": 1})


def test_body_too_large_413(bsrv, agent):
    before = totals(bsrv)
    # Content-Length over the limit: refused from the head, the body is never sent
    r = bridge_raw(bsrv, _head(bsrv, agent.session, [f"Content-Length: {MAX_BODY + 1}"]))
    check_error(r, 413, "body_too_large")
    assert r.elapsed < QUICK
    # chunked: refused once the body passes the limit (the client is still sending)
    big = os.urandom(MAX_BODY + 1)
    wire = b"".join(f"{len(big[i:i + 8192]):x}\r\n".encode() + big[i:i + 8192] + b"\r\n"
                    for i in range(0, len(big), 8192))
    r = bridge_raw(bsrv, _head(bsrv, agent.session, ["Transfer-Encoding: chunked"]) + wire)   # no last chunk
    check_error(r, 413, "body_too_large")
    assert r.elapsed < QUICK, f"{r.elapsed:.2f}s: not refused as the body passed the limit"
    # a chunk whose size alone passes the limit (or overflows 64 bits): refused from the size line
    for size in (f"{MAX_BODY + 1:x}", "10000000000000000", "f" * 40):
        r = bridge_raw(bsrv, _head(bsrv, agent.session, ["Transfer-Encoding: chunked"]) + size.encode() + b"\r\nabc")
        assert r.status in (400, 413), (size, r.status, r.body)
        check_error(r, r.status, "body_too_large" if r.status == 413 else "bad_chunked_body")
        assert r.elapsed < QUICK, f"{r.elapsed:.2f}s: chunk size {size} not refused from its size line"
    agent.assert_no_request(0.2)
    expect_deltas(bsrv, before, {"bridge_requests": 5, "bridge_responses_4xx": 5})
    # exactly the limit passes
    body = os.urandom(MAX_BODY)
    join = in_thread(bridge, bsrv, "PUT", agent.session, "/max", [], body)
    req = agent.next_request()
    assert req_body(req) == body
    agent.answer(req["id"], 200, [], b"")
    assert join().status == 200


def test_refusal_readable_by_curl_sending_a_body(bsrv, agent, tmp_path):
    """curl sends a 300 KB body without waiting (Expect disabled) to a route that refuses it before
    reading it (413 from Content-Length, 405): it must still read the refusal."""
    f = tmp_path / "big.bin"
    f.write_bytes(os.urandom(300_000))
    url = f"http://{bsrv.host}:{bsrv.port}/v1/http/{agent.session}/x"
    for extra, status in (([], 413), (["-X", "TRACE"], 405)):
        out = subprocess.run(["curl", "-s", "-o", str(tmp_path / "out"), "-w", "%{http_code}", "--max-time", "10",
                              "-H", "Expect:", "--data-binary", f"@{f}", *extra, url], capture_output=True, timeout=15,
                             text=True)
        assert out.returncode == 0 and out.stdout == str(status), (extra, out.returncode, out.stdout, out.stderr)
        assert json.loads((tmp_path / "out").read_bytes())["code"] in ("body_too_large", "method_not_allowed")
    agent.assert_no_request(0.2)


def test_agent_not_connected_502(bsrv):
    before = totals(bsrv)
    # no session at all
    r = bridge(bsrv, "GET", unique("nobody"), "/x")
    check_error(r, 502, "agent_not_connected")
    assert r.elapsed < QUICK
    # a session with a peer of another role only (and one named like the agent role, but not it)
    s = unique("noagent")
    web = ws_connect(bsrv, f"/v1/relay/{s}?role=web")
    other = ws_connect(bsrv, f"/v1/relay/{s}?role=agents")
    with web, other:
        r = bridge(bsrv, "POST", s, "/x", [], b"body")
        check_error(r, 502, "agent_not_connected")
        assert r.elapsed < QUICK
        assert_no_message(web, 0.2)
        assert_no_message(other, 0.1)
    # the agent was there and left
    s2 = unique("left")
    FakeAgent(bsrv, s2).close()
    wait_for(lambda: bridge(bsrv, "GET", s2, "/").status == 502, 3.0, "the agent's departure to be seen")
    after = expect_deltas(bsrv, before, {"bridge_requests": 3, "bridge_responses_5xx": 3, "bridge_agent_absent": 3},
                          timeout=3.0)
    assert after["bridge_pending"] == 0


# --------------------------------------------------------------------------------------------
# The agent goes away, or answers badly
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["close-frame", "tcp-fin", "tcp-rst"])
def test_agent_gone_while_requests_wait(bsrv, how):
    s = unique("gone")
    n = 3
    before = totals(bsrv)
    if how == "close-frame":
        ag = FakeAgent(bsrv, s)
        joins = [in_thread(bridge, bsrv, "GET", s, f"/wait/{i}") for i in range(n)]
        ag.take_requests(n)
    else:
        ag = RawAgent(bsrv, s)
        joins = [in_thread(bridge, bsrv, "GET", s, f"/wait/{i}") for i in range(n)]
        for _ in range(n):
            ag.next_request()
    wait_pending(bsrv, n)
    t_drop = time.monotonic()
    if how == "close-frame":
        ag.close()
    else:
        ag.drop(reset=(how == "tcp-rst"))
    for j in joins:
        r = j(BRIDGE_TIMEOUT + 5)
        check_error(r, 502, "agent_disconnected")
        assert r.finished - t_drop < QUICK, f"answered {r.finished - t_drop:.2f}s after the agent left (timeout {BRIDGE_TIMEOUT}s)"
    after = expect_deltas(bsrv, before, {"bridge_requests": n, "bridge_responses_5xx": n, "bridge_agent_gone": n})
    assert after["bridge_pending"] == 0
    # the session takes a new agent
    with FakeAgent(bsrv, s, handler=echo_handler()):
        assert bridge(bsrv, "GET", s, "/again").status == 200


def test_agent_replaced_while_requests_wait(bsrv):
    """A new agent replaces the old one (4001): the old one's requests fail at once; the new one
    is not asked to answer them, and answers the next request."""
    s = unique("repl")
    old = FakeAgent(bsrv, s)
    before = totals(bsrv)
    joins = [in_thread(bridge, bsrv, "GET", s, f"/old/{i}") for i in range(2)]
    old.take_requests(2)
    t0 = time.monotonic()
    new = FakeAgent(bsrv, s, handler=echo_handler())
    try:
        for j in joins:
            r = j(BRIDGE_TIMEOUT + 5)
            check_error(r, 502, "agent_disconnected")
            assert r.finished - t0 < QUICK
        wait_for(lambda: old.closed.is_set(), 3.0, "the replaced agent to be closed")
        assert old.ws.close_code == 4001, old.ws.close_code
        r = bridge(bsrv, "GET", s, "/new")
        assert r.status == 200 and json.loads(r.body)["path"] == "/new"
        assert [q["path"] for q in new.seen] == ["/new"], new.seen
    finally:
        old.close()
        new.close()
    expect_deltas(bsrv, before, {"bridge_requests": 3, "bridge_responses_5xx": 2, "bridge_agent_gone": 2,
                                 "bridge_responses_2xx": 1, "bridge_response_bytes": len(r.body)})


def _bad(id_, **over):
    msg = {"type": "http_response", "id": id_, "status": 200, "headers": [], "body_b64": ""}
    msg.update(over)
    for k in [k for k, v in over.items() if v is _DROP]:
        del msg[k]
    return json.dumps(msg, separators=(",", ":"))


_DROP = object()

BAD_ANSWERS = [
    ("status-199", lambda i: _bad(i, status=199)),
    ("status-600", lambda i: _bad(i, status=600)),
    ("status-100", lambda i: _bad(i, status=100)),
    ("status-string", lambda i: _bad(i, status="200")),
    ("status-float", lambda i: _bad(i, status=200.5)),
    ("status-missing", lambda i: _bad(i, status=_DROP)),
    ("status-null", lambda i: _bad(i, status=None)),
    ("header-value-cr", lambda i: _bad(i, headers=[["x-a", "1\rInjected: yes"]])),
    ("header-value-lf", lambda i: _bad(i, headers=[["x-a", "1\nInjected: yes"]])),
    ("header-value-crlf", lambda i: _bad(i, headers=[["x-a", "1\r\nSet-Cookie: evil=1"]])),
    ("header-value-nul", lambda i: _bad(i, headers=[["x-a", "1\u0000"]])),
    ("header-name-space", lambda i: _bad(i, headers=[["x a", "1"]])),
    ("header-name-colon", lambda i: _bad(i, headers=[["x-a:", "1"]])),
    ("header-name-empty", lambda i: _bad(i, headers=[["", "1"]])),
    ("header-name-crlf", lambda i: _bad(i, headers=[["x-a\r\nx-b", "1"]])),
    ("header-not-pair", lambda i: _bad(i, headers=[["x-a"]])),
    ("header-triple", lambda i: _bad(i, headers=[["x-a", "1", "2"]])),
    ("header-number-value", lambda i: _bad(i, headers=[["x-a", 1]])),
    ("headers-object", lambda i: _bad(i, headers={"x-a": "1"})),
    ("body-bad-base64", lambda i: _bad(i, body_b64="@@@@")),
    ("body-base64url", lambda i: _bad(i, body_b64=base64.urlsafe_b64encode(b"\xfb\xff\xfe").decode())),
    ("body-number", lambda i: _bad(i, body_b64=12)),
]


@pytest.mark.parametrize("name,make", BAD_ANSWERS, ids=[b[0] for b in BAD_ANSWERS])
def test_bad_agent_answer_502(bsrv, agent, name, make):
    before = totals(bsrv)
    join = in_thread(bridge, bsrv, "GET", agent.session, "/bad")
    req = agent.next_request()
    t0 = time.monotonic()
    agent.send(make(req["id"]))
    r = join(BRIDGE_TIMEOUT + 5)
    check_error(r, 502, "bad_agent_answer")
    assert r.finished - t0 < QUICK, f"{r.finished - t0:.2f}s after the bad answer"
    assert b"Injected" not in r.body and b"evil" not in r.body
    assert all(k not in ("injected", "set-cookie", "x-a", "x-b") for k, _ in r.header_list), r.header_list
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_5xx": 1, "bridge_bad_answers": 1})
    # the agent is still connected and answers the next request
    join = in_thread(bridge, bsrv, "GET", agent.session, "/next")
    req = agent.next_request()
    agent.answer(req["id"], 200, [], b"fine")
    assert join().body == b"fine"


def test_response_too_large_502(bsrv, agent):
    before = totals(bsrv)
    for size, ok in ((MAX_RESPONSE, True), (MAX_RESPONSE + 1, False)):
        body = os.urandom(size)
        join = in_thread(bridge, bsrv, "GET", agent.session, f"/size/{size}")
        req = agent.next_request()
        agent.answer(req["id"], 200, [], body)
        r = join()
        if ok:
            assert r.status == 200 and r.body == body
        else:
            check_error(r, 502, "agent_response_too_large")
    expect_deltas(bsrv, before, {"bridge_requests": 2, "bridge_responses_2xx": 1, "bridge_responses_5xx": 1,
                                 "bridge_answers_too_large": 1, "bridge_response_bytes": MAX_RESPONSE})


@pytest.mark.parametrize("size", [100_000, 2 * 1024 * 1024], ids=["100KB", "2MiB-over-max-message"])
def test_huge_answer_refused_agent_stays(bsrv, agent, size):
    """An answer far over bridge.max_response_bytes, even past limits.max_message_bytes (1 MiB): read
    to its end without being kept, 502 at once, the agent stays connected (no 1009)."""
    before = totals(bsrv)
    join = in_thread(bridge, bsrv, "GET", agent.session, "/huge", timeout=BRIDGE_TIMEOUT + 5)
    req = agent.next_request()
    t0 = time.monotonic()
    agent.answer(req["id"], 200, [], os.urandom(size))
    r = join(BRIDGE_TIMEOUT + 10)
    check_error(r, 502, "agent_response_too_large")
    assert r.finished - t0 < 2 * QUICK, f"{r.finished - t0:.2f}s after the answer"
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_responses_5xx": 1, "bridge_answers_too_large": 1})
    join = in_thread(bridge, bsrv, "GET", agent.session, "/next")
    req = agent.next_request()
    agent.answer(req["id"], 200, [], b"still here")
    assert join().body == b"still here"
    assert not agent.closed.is_set()


def test_answer_fields_optional_and_extra(bsrv, agent):
    """headers and body_b64 default to empty; unknown extra fields are ignored."""
    join = in_thread(bridge, bsrv, "GET", agent.session, "/min")
    req = agent.next_request()
    agent.send(json.dumps({"type": "http_response", "id": req["id"], "status": 202}, separators=(",", ":")))
    r = join()
    assert (r.status, r.body) == (202, b"") and r.header_all("content-length") == ["0"]
    check_relay_headers(r)
    join = in_thread(bridge, bsrv, "GET", agent.session, "/extra")
    req = agent.next_request()
    agent.send(answer_json(req["id"], 200, [], b"x", note="ignored", trace={"a": 1}))
    r = join()
    assert (r.status, r.body) == (200, b"x")


def test_slow_answer_past_the_body_deadline(bsrv, agent):
    """The request waits for its agent under bridge.timeout (5 s), not the 1 s handshake timeout."""
    join = in_thread(bridge, bsrv, "GET", agent.session, "/slow", timeout=BRIDGE_TIMEOUT + 3)
    req = agent.next_request()
    time.sleep(BODY_DEADLINE + 0.5)
    agent.answer(req["id"], 200, [], b"late but in time")
    r = join(BRIDGE_TIMEOUT + 5)
    assert (r.status, r.body) == (200, b"late but in time")


def test_one_request_per_connection(bsrv, agent):
    """Pipelined requests and bytes past the body: only the first request reaches the agent."""
    first = build_request(bsrv.listen, "POST", f"/v1/http/{agent.session}/one", [], b"abc")
    second = build_request(bsrv.listen, "GET", f"/v1/http/{agent.session}/two")
    join = in_thread(bridge_raw, bsrv, first + b"garbage" + second)
    req = agent.next_request()
    assert (req["path"], req_body(req)) == ("/one", b"abc")
    agent.answer(req["id"], 200, [], b"1")
    r = join()
    assert (r.status, r.body) == (200, b"1")      # parse_response: nothing after the body
    agent.assert_no_request(0.3)


def test_client_gone_while_waiting(bsrv, agent):
    """The client hangs up while its request waits: its place is freed at once (not at the
    answer or the timeout), it is counted bridge_client_gone, and the agent's answer, when it
    comes, is dropped as unmatched. The session keeps working."""
    before = totals(bsrv)
    with socket.create_connection(bsrv.listen, timeout=RECV_TIMEOUT) as s:
        s.sendall(build_request(bsrv.listen, "GET", f"/v1/http/{agent.session}/gone"))
        req = agent.next_request()
        wait_pending(bsrv, 1)
        t0 = time.monotonic()
    wait_pending(bsrv, 0, timeout=QUICK)
    assert time.monotonic() - t0 < QUICK
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_client_gone": 1})
    agent.answer(req["id"], 200, [], b"nobody listens")
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_client_gone": 1, "bridge_answers_unmatched": 1})
    join = in_thread(bridge, bsrv, "GET", agent.session, "/after")
    req = agent.next_request()
    agent.answer(req["id"], 200, [], b"ok")
    assert join().body == b"ok"


def test_half_close_after_request_counts_as_gone(bsrv, agent):
    """docs/bridge.md: a client that half-closes (FIN, still reading) counts as gone: it gets no
    response, and nothing stays pending."""
    before = totals(bsrv)
    with socket.create_connection(bsrv.listen, timeout=RECV_TIMEOUT) as s:
        s.sendall(build_request(bsrv.listen, "GET", f"/v1/http/{agent.session}/half"))
        s.shutdown(socket.SHUT_WR)
        got = read_to_eof(s, time.monotonic() + BRIDGE_TIMEOUT + 2)
    assert got == b"", got[:200]
    wait_pending(bsrv, 0)
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_client_gone": 1})
    # whether the request had reached the agent is a race; an answer to it is only unmatched
    try:
        req = agent.next_request(0.3)
    except AssertionError:
        return
    agent.answer(req["id"], 200, [], b"late")
    expect_deltas(bsrv, before, {"bridge_requests": 1, "bridge_client_gone": 1, "bridge_answers_unmatched": 1})


# --------------------------------------------------------------------------------------------
# Interception: answers are consumed, everything else is relayed
# --------------------------------------------------------------------------------------------

def test_answers_never_reach_the_other_peer(bsrv):
    s = unique("icpt")
    ag = FakeAgent(bsrv, s)
    web = ws_connect(bsrv, f"/v1/relay/{s}?role=web")
    before = totals(bsrv)
    try:
        join = in_thread(bridge, bsrv, "GET", s, "/a")
        req = ag.next_request()
        ag.send("text before")
        ag.send(b"\x00\x01binary before")
        ag.answer(req["id"], 200, [], b"answered")
        # an answer in another writer's form (json.dumps defaults) is an answer too: consumed,
        # and unmatched (its request was answered). Before: forwarded to the web peer.
        spaced = json.dumps({"type": "http_response", "id": req["id"], "status": 500})
        ag.send(spaced)
        # other types, and binary messages, are ordinary messages: forwarded
        ag.send('{"type":"http_request","id":"x"}')
        ag.send(ANSWER_PREFIX.encode() + b',"id":"b"}')         # binary with the prefix: forwarded
        ag.send("text after")
        ag.send(b"\xffbinary after")
        r = join()
        assert (r.status, r.body) == (200, b"answered")
        got = [web.recv(timeout=RECV_TIMEOUT) for _ in range(6)]
        assert got == ["text before", b"\x00\x01binary before", '{"type":"http_request","id":"x"}',
                       ANSWER_PREFIX.encode() + b',"id":"b"}', "text after", b"\xffbinary after"], got
        assert_no_message(web, 0.3)
        # the web peer forging an answer: it is relayed to the agent and answers nothing
        join = in_thread(bridge, bsrv, "GET", s, "/b")
        req = ag.next_request()
        forged = answer_json(req["id"], 200, [], b"forged by web")
        web.send(forged)
        assert ag.next_other() == forged
        time.sleep(0.2)
        ag.answer(req["id"], 203, [], b"from the agent")
        r = join()
        assert (r.status, r.body) == (203, b"from the agent")
        # unknown ids are consumed too (and counted), never forwarded
        ag.send(answer_json("no-such-id", 200, [], b"lost"))
        ag.send("marker")
        assert web.recv(timeout=RECV_TIMEOUT) == "marker"
        ag.check()
    finally:
        ag.close()
        web.close()
    expect_deltas(bsrv, before, {"bridge_requests": 2, "bridge_responses_2xx": 2, "bridge_answers_unmatched": 2,
                                 "bridge_response_bytes": len(b"answered") + len(b"from the agent")})


def test_request_waits_for_the_other_peers_message_to_end(bsrv):
    """The web peer's fragmented message is half forwarded to the agent when a request comes:
    the http_request is sent after the message's last frame, never between its frames."""
    s = unique("inter")
    ag = FakeAgent(bsrv, s)
    web = RawWS(bsrv.listen, f"/v1/relay/{s}?role=web")
    try:
        web.send_frame(OP_TEXT, b"part-1 ", fin=False)
        time.sleep(0.2)
        join = in_thread(bridge, bsrv, "GET", s, "/between")
        time.sleep(0.3)
        web.send_frame(OP_CONT, b"part-2 ", fin=False)
        time.sleep(0.2)
        web.send_frame(OP_CONT, b"end", fin=True)
        assert ag.next_other() == "part-1 part-2 end"      # websockets fails on interleaved frames
        req = ag.next_request()
        assert req["path"] == "/between"
        ag.answer(req["id"], 200, [], b"after the message")
        assert join().body == b"after the message"
        ag.check()
    finally:
        ag.close()
        web.close()


def test_fragmented_answers(bsrv):
    """An answer in fragments is consumed and reassembled, wherever the fragments cut it (the
    first one may be shorter than `{"type":"http_response"`); a fragmented JSON object that is
    not an answer is relayed whole."""
    s = unique("frag")
    ag = FakeAgent(bsrv, s)
    web = ws_connect(bsrv, f"/v1/relay/{s}?role=web")
    try:
        join = in_thread(bridge, bsrv, "GET", s, "/f")
        req = ag.next_request()
        body = os.urandom(3000)
        msg = answer_json(req["id"], 200, [("x-frag", "yes")], body)
        ag.send([msg[:30], msg[30:1000], msg[1000:2500], msg[2500:]])
        r = join()
        assert (r.status, r.body) == (200, body) and r.header_all("x-frag") == ["yes"]
        short = answer_json("zz", 200, [], b"")
        ag.send([short[:10], short[10:]])        # an answer nobody waits for: consumed
        chat = json.dumps({"type": "chat", "text": short})
        ag.send([chat[:10], chat[10:]])
        assert web.recv(timeout=RECV_TIMEOUT) == chat
        assert_no_message(web, 0.2)
        ag.check()
    finally:
        ag.close()
        web.close()


# --------------------------------------------------------------------------------------------
# Timers: 504, unreadable ids, late and unknown answers (own server, bridge.timeout 1 s)
# --------------------------------------------------------------------------------------------

def test_timeout_late_unknown_and_unreadable_answers(make_server):
    srv = make_server(env={"RINGRELAY_BRIDGE_TIMEOUT": "1s"})
    s = unique("tmo")
    ag = FakeAgent(srv, s)
    try:
        before = totals(srv)
        lat0 = bridge_latency_count(srv)
        # 1) no answer: 504 after the timeout
        join = in_thread(bridge, srv, "GET", s, "/never", timeout=6)
        req1 = ag.next_request()
        r = join(8)
        check_error(r, 504, "agent_timeout")
        assert 0.9 <= r.elapsed < 2.5, f"504 after {r.elapsed:.2f}s with bridge.timeout 1s"
        expect_deltas(srv, before, {"bridge_requests": 1, "bridge_responses_5xx": 1, "bridge_timeouts": 1})
        # 2) the late answer and an unknown id: counted unmatched, not relayed anywhere
        ag.answer(req1["id"], 200, [], b"too late")
        ag.answer("feedface", 200, [], b"who?")
        expect_deltas(srv, before, {"bridge_requests": 1, "bridge_responses_5xx": 1, "bridge_timeouts": 1,
                                    "bridge_answers_unmatched": 2})
        # 3) an answer whose id cannot be read: counted bad, and its request times out
        for bad in ('{"type":"http_response","id":42,"status":200}',
                    '{"type":"http_response","status":200}',
                    '{"type":"http_response", not json at all'):
            b0 = totals(srv)
            join = in_thread(bridge, srv, "GET", s, "/unreadable", timeout=6)
            req = ag.next_request()
            ag.send(bad)
            r = join(8)
            check_error(r, 504, "agent_timeout")
            assert r.elapsed >= 0.9
            expect_deltas(srv, b0, {"bridge_requests": 1, "bridge_responses_5xx": 1, "bridge_timeouts": 1,
                                    "bridge_bad_answers": 1})
        # 4) a duplicate answer: the first counts, the second is unmatched
        b0 = totals(srv)
        join = in_thread(bridge, srv, "GET", s, "/dup")
        req = ag.next_request()
        ag.answer(req["id"], 200, [], b"first")
        ag.answer(req["id"], 500, [], b"second")
        assert join().body == b"first"
        expect_deltas(srv, b0, {"bridge_requests": 1, "bridge_responses_2xx": 1, "bridge_answers_unmatched": 1,
                                "bridge_response_bytes": 5})
        # timeouts are not answers: the latency histogram counts only the answered request
        assert bridge_latency_count(srv) - lat0 == 1
        assert totals(srv)["bridge_pending"] == 0
        ag.check()
    finally:
        ag.close()


def test_bridge_latency_recorded(make_server):
    """The `bridge` histogram records the time from sending a request to its answer."""
    srv = make_server()
    with FakeAgent(srv, unique("lat")) as ag:
        join = in_thread(bridge, srv, "GET", ag.session, "/lat")
        req = ag.next_request()
        time.sleep(0.3)
        ag.answer(req["id"], 200, [], b"")
        assert join().status == 200
    lat = stats(srv)["latency_us"]["bridge"]
    assert lat["count"] == 1, lat
    assert 300_000 <= lat["max"] < 2_000_000, lat
    assert 300_000 <= lat["p50"] <= lat["max"], lat
    # and in /metrics
    text = http_get(srv.admin, "/metrics").body.decode()
    lines = {ln.split(" ")[0]: ln.split(" ")[1] for ln in text.splitlines() if ln and not ln.startswith("#")}
    assert lines["ringrelay_bridge_latency_seconds_count"] == "1", [k for k in lines if "bridge" in k]
    assert 0.3 <= float(lines["ringrelay_bridge_latency_seconds_sum"]) < 2.0
    t = totals(srv)
    for name in ("bridge_requests", "bridge_responses_2xx", "bridge_pending"):
        suffix = "" if name == "bridge_pending" else "_total"
        per_core = [float(v) for k, v in lines.items() if k.startswith(f"ringrelay_{name}{suffix}{{")]
        assert len(per_core) == 2 and sum(per_core) == t[name], (name, per_core, t[name])


# --------------------------------------------------------------------------------------------
# bridge.max_in_flight
# --------------------------------------------------------------------------------------------

def test_busy_503_over_max_in_flight(make_server):
    srv = make_server(env={"RINGRELAY_BRIDGE_MAX_IN_FLIGHT": "3"})
    with FakeAgent(srv, unique("busy")) as ag:
        before = totals(srv)
        joins = [in_thread(bridge, srv, "GET", ag.session, f"/hold/{i}") for i in range(3)]
        reqs = ag.take_requests(3)
        wait_pending(srv, 3)
        r = bridge(srv, "POST", ag.session, "/one-too-many", [], b"x")
        check_error(r, 503, "bridge_busy")
        assert r.header_all("retry-after") == ["1"], r.header_list     # docs/bridge.md: Retry-After: 1
        assert r.elapsed < QUICK
        ag.assert_no_request(0.2)
        for q in reqs:
            ag.answer(q["id"], 200, [], q["path"].encode())
        for i, j in enumerate(joins):
            assert j().body == f"/hold/{i}".encode()
        # room again
        join = in_thread(bridge, srv, "GET", ag.session, "/room")
        ag.answer(ag.next_request()["id"], 200, [], b"")
        assert join().status == 200
        nbytes = sum(len(f"/hold/{i}") for i in range(3))
        expect_deltas(srv, before, {"bridge_requests": 5, "bridge_responses_2xx": 4, "bridge_responses_5xx": 1,
                                    "bridge_busy_refused": 1, "bridge_response_bytes": nbytes})
        # another session's agent has its own budget
        with FakeAgent(srv, unique("busy2"), handler=echo_handler()) as other:
            joins = [in_thread(bridge, srv, "GET", ag.session, f"/hold2/{i}") for i in range(3)]
            ag.take_requests(3)
            assert bridge(srv, "GET", other.session, "/free").status == 200
            for q in ag.seen[-3:]:
                ag.answer(q["id"], 200, [], b"")
            for j in joins:
                assert j().status == 200


# --------------------------------------------------------------------------------------------
# Configuration: allowed methods, agent role
# --------------------------------------------------------------------------------------------

def test_allowed_methods_and_agent_role_config(make_server):
    srv = make_server(env={"RINGRELAY_BRIDGE_ALLOWED_METHODS": "GET,POST", "RINGRELAY_BRIDGE_AGENT_ROLE": "backend"})
    s = unique("cfg")
    wrong = FakeAgent(srv, s, role="agent", handler=echo_handler())
    right = FakeAgent(srv, s, role="backend", handler=echo_handler())
    try:
        before = totals(srv)
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            r = bridge(srv, method, s, "/m", [], b"x" if method == "PUT" else None)
            check_error(r, 405, "method_not_allowed")
            assert r.header_all("allow") == ["GET, POST"], r.header_list
        got = 0
        for method in ("GET", "POST"):
            r = bridge(srv, method, s, "/m", [], b"x" if method == "POST" else None)
            assert r.status == 200 and json.loads(r.body)["method"] == method
            got += len(r.body)
        assert [q["method"] for q in right.seen] == ["GET", "POST"]
        assert wrong.seen == [], "the peer with role agent is not this server's agent role"
        expect_deltas(srv, before, {"bridge_requests": 6, "bridge_responses_4xx": 4, "bridge_responses_2xx": 2,
                                    "bridge_request_bytes": 1, "bridge_response_bytes": got})
        # the "agent" peer of this session is an ordinary peer: it and "backend" are the pair
        right.send("to the agent-named peer")
        assert wrong.next_other() == "to the agent-named peer"
    finally:
        wrong.close()
        right.close()
    # only the backend role answers: without it, 502
    r = bridge(srv, "GET", s, "/m")
    check_error(r, 502, "agent_not_connected")


# --------------------------------------------------------------------------------------------
# Auth, origin and rate refusals on the bridge route
# --------------------------------------------------------------------------------------------

SECRET = b"bridge-suite-secret-0123456789-abcdefghijkl"


def _claims(sid, **over):
    c = {"sid": sid, "exp": int(time.time()) + 600}
    c.update(over)
    return c


def test_auth_required_and_token_not_passed(make_server):
    srv = make_server(env={"RINGRELAY_AUTH_JWT_SECRET": SECRET.decode(),
                           "RINGRELAY_SECURITY_ALLOWED_ORIGINS": "https://app.example.com"})
    s = unique("auth")
    agent_tok = mint(_claims(s, role="agent"), SECRET)
    client_tok = mint(_claims(s), SECRET)
    ag = FakeAgent(srv, s, handler=echo_handler(), query=f"token={agent_tok}")
    try:
        before = totals(srv)
        # no token, another session's token, a bad signature: refused before the bridge
        r = bridge(srv, "GET", s, "/x")
        check_error(r, 401, "token_missing")
        assert r.header_all("www-authenticate") and r.header_all("www-authenticate")[0].startswith("Bearer")
        r = bridge(srv, "GET", s, "/x", [("Authorization", f"Bearer {mint(_claims('other-session'), SECRET)}")])
        check_error(r, 403, "token_wrong_session")
        r = bridge(srv, "GET", s, f"/x?token={mint(_claims(s), b'another-secret-another-secret-another-secret')}")
        check_error(r, 401, "token_signature")
        # an origin not allowed
        r = bridge(srv, "GET", s, "/x", [("Authorization", f"Bearer {client_tok}"), ("Origin", "https://evil.example")])
        check_error(r, 403, "origin_not_allowed")
        assert ag.seen == []
        t = totals(srv)
        assert t["bridge_requests"] == before["bridge_requests"], "refusals before admission are not bridge requests"
        assert t["auth_refused"] - before["auth_refused"] == 3
        assert t["origin_refused"] - before["origin_refused"] == 1
        by = lambda st: t["handshakes_refused_by_status"][st] - before["handshakes_refused_by_status"][st]  # noqa: E731
        assert (by("401"), by("403")) == (2, 2), t["handshakes_refused_by_status"]
        # a token in the header: accepted, and the header is not passed to the agent
        r = bridge(srv, "POST", s, "/x?a=1", [("Authorization", f"Bearer {client_tok}"), ("X-Keep", "1"),
                                               ("Origin", "https://app.example.com")], b"body")
        assert r.status == 200, r.body
        got = len(r.body)
        desc = json.loads(r.body)
        assert [k for k, _ in desc["headers"]] == ["host", "x-keep", "origin"], desc["headers"]
        assert desc["path"] == "/x?a=1"
        # a token in the query: accepted; the parameter is removed, the others stay in order
        r = bridge(srv, "GET", s, f"/q?a=1&token={client_tok}&b=2&c")
        assert r.status == 200, r.body
        got += len(r.body)
        desc = json.loads(r.body)
        path, _, query = desc["path"].partition("?")
        assert path == "/q"
        assert urllib.parse.parse_qsl(query, keep_blank_values=True) == [("a", "1"), ("b", "2"), ("c", "")], desc["path"]
        # both, the same token
        r = bridge(srv, "GET", s, f"/both?token={client_tok}", [("Authorization", f"Bearer {client_tok}")])
        assert r.status == 200 and json.loads(r.body)["path"] == "/both"
        got += len(r.body)
        for q in ag.seen:
            blob = json.dumps(q)
            assert client_tok not in blob and client_tok.split(".")[2] not in blob, q
            assert hdr(q, "authorization") == []
        expect_deltas(srv, before, {"bridge_requests": 3, "bridge_responses_2xx": 3, "bridge_request_bytes": 4,
                                    "bridge_response_bytes": got})
        ag.check()
    finally:
        ag.close()


def test_waiting_requests_count_as_connections_per_ip(make_server):
    """limits.max_connections_per_ip = 3 (one worker): the agent and two waiting requests fill it;
    a third request gets 429 too_many_connections."""
    srv = make_server(env={"RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP": "3"}, workers=1)
    with FakeAgent(srv, unique("perip")) as ag:
        joins = [in_thread(bridge, srv, "GET", ag.session, f"/w{i}") for i in range(2)]
        reqs = ag.take_requests(2)
        before = totals(srv)
        r = bridge(srv, "GET", ag.session, "/third")
        check_error(r, 429, "too_many_connections")
        ag.assert_no_request(0.2)
        # counted as ip_open_refused; the count is part of admission (on the client address's home
        # core), so the refusal is a handshake refused with 429, not a bridged request (docs/bridge.md)
        t = expect_deltas(srv, before, {"bridge_requests": 0, "bridge_responses_4xx": 0})
        assert t["ip_open_refused"] - before["ip_open_refused"] == 1
        assert t["handshakes_refused_by_status"]["429"] - before["handshakes_refused_by_status"]["429"] == 1
        for q in reqs:
            ag.answer(q["id"], 200, [], b"")
        for j in joins:
            assert j().status == 200
        # the connections are closed: room again
        join = in_thread(bridge, srv, "GET", ag.session, "/fourth")
        ag.answer(ag.next_request()["id"], 200, [], b"")
        assert join().status == 200


def test_rate_limited_429(make_server):
    srv = make_server(env={"RINGRELAY_LIMITS_IP_CONNECT_RATE": "60", "RINGRELAY_LIMITS_IP_CONNECT_BURST": "3"},
                      workers=1)
    with FakeAgent(srv, unique("rate"), handler=echo_handler()) as ag:    # 1 of the burst
        before = totals(srv)
        assert bridge(srv, "GET", ag.session, "/1").status == 200          # 2
        assert bridge(srv, "GET", ag.session, "/2").status == 200          # 3
        r = bridge(srv, "GET", ag.session, "/3")
        check_error(r, 429, "rate_limited")
        ra = r.headers.get("retry-after", "")
        assert ra.isdigit() and int(ra) >= 1, r.header_list
        assert [q["path"] for q in ag.seen] == ["/1", "/2"]
        t = totals(srv)
        assert t["ip_rate_refused"] - before["ip_rate_refused"] == 1
        assert t["bridge_requests"] - before["bridge_requests"] == 2


# --------------------------------------------------------------------------------------------
# Sessions on both cores
# --------------------------------------------------------------------------------------------

def test_sessions_on_both_cores(make_server):
    """Agents of many sessions land on both workers; requests for each reach its own agent,
    wherever the HTTP connection was accepted (handed over to the session's core)."""
    srv = make_server(workers=2)
    agents = []

    def handler_for(sid):
        def h(req):
            return {"status": 200, "headers": [("x-session", sid)], "body": f"{sid}:{req['path']}".encode()}
        return h

    try:
        for _ in range(32):
            s = unique("core")
            agents.append(FakeAgent(srv, s, handler=handler_for(s)))
            if len(agents) >= 8 and all(c["active_sessions"] > 0 for c in stats(srv)["per_core"]):
                break
        per_core = stats(srv)["per_core"]
        assert all(c["active_sessions"] > 0 for c in per_core), [c["active_sessions"] for c in per_core]
        before = stats(srv)
        joins = []
        for ag in agents:
            for i in range(4):
                joins.append((ag.session, i, in_thread(bridge, srv, "GET", ag.session, f"/r{i}")))
        for sid, i, j in joins:
            r = j(10)
            assert r.status == 200 and r.body == f"{sid}:/r{i}".encode() and r.header_all("x-session") == [sid]
        for ag in agents:
            assert sorted(q["path"] for q in ag.seen) == [f"/r{i}" for i in range(4)]
            ag.check()
        after = stats(srv)
        n = len(joins)
        assert after["totals"]["bridge_requests"] - before["totals"]["bridge_requests"] == n
        assert after["totals"]["bridge_responses_2xx"] - before["totals"]["bridge_responses_2xx"] == n
        moved = after["totals"]["handoffs_in"] - before["totals"]["handoffs_in"]
        assert moved >= 1, "no bridged request was accepted on the other core than its session's"
    finally:
        for ag in agents:
            ag.close()


# ============================================================================================
# Part 2: the real agent, `ringrelay agent`, in front of a local HTTP API
# ============================================================================================
#
# relay (this binary, `serve`)  <-- ws -->  `ringrelay agent --target http://127.0.0.1:P`  -->  LocalAPI
# The bridge is called with curl and http.client. Skipped when the binary has no `agent`.

needs_agent = pytest.mark.skipif(not agent_supported(), reason="this ringrelay binary has no `agent` subcommand")

AGENT_RELAY_TIMEOUT = 10.0      # bridge.timeout of the relays below


api = closing_fixture(LocalAPI, "api")


@pytest.fixture
def make_agent():
    started: list[AgentProcess] = []

    def factory(relay_url: str, session: str, target: str, **kw) -> AgentProcess:
        a = AgentProcess(relay_url, session, target, **kw).start()
        started.append(a)
        return a

    yield factory
    errors = []
    for a in started:
        if a.proc is not None and a.proc.returncode is not None and a.proc.returncode < 0:
            continue    # killed by the test
        if a.exited_on_its_own:
            continue    # the test checked its exit
        rc = a.terminate(15)
        if rc != 0:
            errors.append(f"agent exit code {rc!r} after SIGTERM (None = still running after 15 s)\n{a.log()[-3000:]}")
    assert not errors, "\n".join(errors)


def relay_url(srv: Server) -> str:
    return f"ws://{srv.host}:{srv.port}"


def bridge_url(srv: Server, session: str, path: str) -> str:
    return f"http://{srv.host}:{srv.port}/v1/http/{session}{path}"


def wait_agent_ready(srv: Server, session: str, timeout: float = 10.0, headers=()):
    """Until a bridged GET /echo/ready is answered by the API (not 502 agent_not_connected)."""
    last = {}

    def ready():
        r = bridge(srv, "GET", session, "/echo/ready", headers)
        last["r"] = (r.status, r.body[:200])
        return r.status == 200
    wait_for(ready, timeout, f"the agent of {session} to answer (last: {last})", step=0.1)


def wait_agent_connected(srv: Server, session: str, timeout: float = 10.0):
    """Until a bridged request gets anything but 502 agent_not_connected; returns that response."""
    box = {}

    def connected():
        r = bridge(srv, "GET", session, "/x")
        box["r"] = r
        return not (r.status == 502 and json.loads(r.body).get("code") == "agent_not_connected")
    wait_for(connected, timeout, f"the agent of {session} to connect", step=0.1)
    return box["r"]


def hc(srv: Server, method: str, session: str, path: str, body: bytes | None = None, headers: dict | None = None,
       timeout: float = 10.0):
    """http.client request; returns (status, header list, body)."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=timeout)
    try:
        c.request(method, f"/v1/http/{session}{path}", body=body, headers=headers or {})
        resp = c.getresponse()
        return resp.status, [(k.lower(), v) for k, v in resp.getheaders()], resp.read()
    finally:
        c.close()


@pytest.fixture
def real(make_server, api, make_agent):
    """A relay, the local API and a connected agent; yields (relay, api, session, agent)."""
    srv = make_server(env={"RINGRELAY_BRIDGE_TIMEOUT": f"{int(AGENT_RELAY_TIMEOUT)}s"})
    s = unique("real")
    ag = make_agent(relay_url(srv), s, api.url, extra=["--max-concurrency", "64"])
    wait_agent_ready(srv, s)
    return srv, api, s, ag


@needs_agent
def test_real_agent_get_with_query_curl(real):
    srv, api, s, _ = real
    m = marker()
    r = curl(bridge_url(srv, s, "/echo/users?x=1&y=two%20words&z"), "-H", f"X-Marker: {m}", "-H", "Accept: application/json")
    assert r.status == 200, (r.status, r.body)
    check_relay_headers(r)
    desc = json.loads(r.body)
    assert (desc["method"], desc["path"], desc["query"]) == ("GET", "/echo/users", "x=1&y=two%20words&z"), desc
    got = {k.lower(): v for k, v in desc["headers"]}
    assert got.get("x-marker") == m and got.get("accept") == "application/json", desc["headers"]
    assert unb64(desc["body_b64"]) == b""
    assert api.seen[-1]["path"] == "/echo/users?x=1&y=two%20words&z"


@needs_agent
def test_real_agent_post_json_http_client(real):
    srv, api, s, _ = real
    payload = {"name": "ringrelay", "n": random.randint(0, 10**9), "nested": {"list": list(range(20))}, "u": "✓"}
    sent = json.dumps(payload).encode()
    status, hl, body = hc(srv, "POST", s, "/echo/things?dry=1", sent, {"Content-Type": "application/json"})
    assert status == 200, body
    desc = json.loads(body)
    assert (desc["method"], desc["path"], desc["query"]) == ("POST", "/echo/things", "dry=1")
    assert unb64(desc["body_b64"]) == sent and json.loads(unb64(desc["body_b64"])) == payload
    assert {k.lower(): v for k, v in desc["headers"]}.get("content-type") == "application/json"
    assert ("x-content-type-options", "nosniff") in hl
    for method in ("PUT", "PATCH", "DELETE"):
        status, _, body = hc(srv, method, s, "/echo/m", b"x" * 10)
        assert status == 200 and json.loads(body)["method"] == method


@needs_agent
def test_real_agent_binary_both_ways(real):
    srv, api, s, _ = real
    sent = bytes(range(256)) * 16 + os.urandom(3000) + bytes(range(255, -1, -1))
    status, hl, body = hc(srv, "POST", s, "/binary", sent, {"Content-Type": "application/octet-stream"})
    assert status == 200 and body == sent, (status, len(body))
    assert api.seen[-1]["body"] == sent
    status, _, body = hc(srv, "GET", s, "/binary")
    assert status == 200 and body == bytes(range(256)) * 4


@needs_agent
@pytest.mark.parametrize("status", [204, 404, 500])
def test_real_agent_status_passthrough(real, status):
    srv, api, s, _ = real
    r = curl(bridge_url(srv, s, f"/status/{status}"))
    assert r.status == status, (r.status, r.body)
    check_relay_headers(r)
    assert r.header_all("x-status") == [str(status)]
    if status == 204:
        assert r.body == b"" and r.header_all("content-length") == []
    else:
        assert r.body == f"status {status}".encode()


@needs_agent
def test_real_agent_head(real):
    srv, api, s, _ = real
    r = curl(bridge_url(srv, s, "/binary"), "-I")
    assert r.status == 200 and r.body == b""        # curl -I: parse_response fails on any byte after the head
    # the API's Content-Length (of the GET body) may be passed on; if it is, it is the API's figure
    assert r.header_all("content-length") in ([], [str(256 * 4)]), r.header_list
    assert api.seen[-1]["method"] == "HEAD"


@needs_agent
def test_real_agent_large_headers_both_ways(real):
    srv, api, s, _ = real
    sent = {f"X-Big-{i:02d}": f"{i:02d}-" + "h" * 147 for i in range(40)}
    status, hl, body = hc(srv, "GET", s, "/echo/big", headers=sent)
    assert status == 200
    got = [(k, v) for k, v in json.loads(body)["headers"] if k.lower().startswith("x-big-")]
    assert [(k.lower(), v) for k, v in got] == [(k.lower(), v) for k, v in sent.items()], got
    status, hl, body = hc(srv, "GET", s, "/headers?n=40&len=150")
    assert status == 200 and body == b"headers"
    back = [(k, v) for k, v in hl if k.startswith("x-api-")]
    assert back == [(f"x-api-{i:02d}", (f"{i:02d}" + "v" * 150)[:150]) for i in range(40)], back


@needs_agent
def test_real_agent_50_concurrent(real):
    srv, api, s, _ = real
    before = totals(srv)
    rnd = random.Random(5)

    def one(i):
        m = f"{i:02d}-{marker()}"
        ms = rnd.randint(0, 300)     # answers come back in another order than sent
        status, hl, body = hc(srv, "POST", s, f"/slow?ms={ms}&i={i}", m.encode(), {"X-Mark": m})
        return m, ms, status, body

    joins = [in_thread(one, i) for i in range(50)]
    for i, j in enumerate(joins):
        m, ms, status, body = j(20)
        assert status == 200, (i, status, body)
        desc = json.loads(body)
        assert desc["query"] == f"ms={ms}&i={i}", desc
        assert unb64(desc["body_b64"]) == m.encode()
        assert {k.lower(): v for k, v in desc["headers"]}["x-mark"] == m
    t = totals(srv)
    assert t["bridge_requests"] - before["bridge_requests"] == 50
    assert t["bridge_responses_2xx"] - before["bridge_responses_2xx"] == 50
    assert t["bridge_pending"] == 0


@needs_agent
def test_real_agent_killed_mid_request(real):
    srv, api, s, ag = real
    joins = [in_thread(bridge, srv, "GET", s, f"/slow?ms=8000&i={i}", timeout=AGENT_RELAY_TIMEOUT + 5) for i in range(3)]
    wait_for(lambda: sum(1 for x in api.seen if x["path"].startswith("/slow?ms=8000")) == 3, 5.0,
             "the three requests to reach the API")
    t_kill = time.monotonic()
    ag.kill()
    for j in joins:
        r = j(AGENT_RELAY_TIMEOUT + 10)
        check_error(r, 502, "agent_disconnected")
        assert r.finished - t_kill < QUICK, f"502 came {r.finished - t_kill:.2f}s after the kill"
    r = bridge(srv, "GET", s, "/echo/after")
    check_error(r, 502, "agent_not_connected")


@needs_agent
def test_real_agent_reconnects_after_relay_restart(driver, api, make_agent):
    port = free_port()
    env = {"RINGRELAY_BRIDGE_TIMEOUT": "10s"}
    srv = FixedPortServer(port, driver=driver, workers=2, env=env).start()
    srv2 = None
    try:
        s = unique("restart")
        ag = make_agent(relay_url(srv), s, api.url)
        wait_agent_ready(srv, s)
        assert bridge(srv, "GET", s, "/echo/before").status == 200
        rc = srv.terminate(15)
        assert rc == 0, srv.log()[-2000:]
        time.sleep(0.5)
        assert ag.alive(), "the agent exited when the relay went away:\n" + ag.log()[-2000:]
        t0 = time.monotonic()
        srv2 = FixedPortServer(port, driver=driver, workers=2, env=env).start()
        wait_agent_ready(srv2, s, timeout=15)
        took = time.monotonic() - t0
        r = bridge(srv2, "POST", s, "/echo/after", [], b"again")
        assert r.status == 200 and unb64(json.loads(r.body)["body_b64"]) == b"again"
        assert took < 10, f"the agent took {took:.1f}s to come back"
        # and again, a second restart
        assert srv2.terminate(15) == 0
        srv2 = FixedPortServer(port, driver=driver, workers=2, env=env).start()
        wait_agent_ready(srv2, s, timeout=15)
    finally:
        for x in (srv, srv2):
            if x is not None and x.alive():
                stop_server(x)


@needs_agent
def test_real_agent_target_errors(make_server, make_agent, api):
    """The agent answers its own failures: 502 target_unreachable, 504 target_timeout, 503 agent_busy."""
    srv = make_server(env={"RINGRELAY_BRIDGE_TIMEOUT": "10s"})
    # nothing listens on the target port
    s1 = unique("unreach")
    make_agent(relay_url(srv), s1, f"http://127.0.0.1:{free_port()}")
    r = wait_agent_connected(srv, s1)
    check_error(r, 502, "target_unreachable")
    # a slow target with --target-timeout 1s
    s2 = unique("slow")
    make_agent(relay_url(srv), s2, api.url, extra=["--target-timeout", "1s"])
    wait_agent_ready(srv, s2)
    r = bridge(srv, "GET", s2, "/slow?ms=3000", timeout=8)
    check_error(r, 504, "target_timeout")
    assert 0.9 <= r.elapsed < 3.0, r.elapsed
    # --max-concurrency 1: a second request while one runs
    s3 = unique("conc")
    make_agent(relay_url(srv), s3, api.url, extra=["--max-concurrency", "1"])
    wait_agent_ready(srv, s3)
    join = in_thread(bridge, srv, "GET", s3, "/slow?ms=1500", timeout=8)
    wait_for(lambda: any(x["path"] == "/slow?ms=1500" for x in api.seen), 5.0, "the first request at the API")
    r = bridge(srv, "GET", s3, "/echo/second")
    check_error(r, 503, "agent_busy")
    assert join().status == 200


@needs_agent
def test_real_agent_with_auth(make_server, make_agent, api):
    secret = b"real-agent-secret-0123456789-abcdefghijklmn"
    srv = make_server(env={"RINGRELAY_AUTH_JWT_SECRET": secret.decode(), "RINGRELAY_BRIDGE_TIMEOUT": "10s"})
    s = unique("authreal")
    make_agent(relay_url(srv), s, api.url, token=mint(_claims(s, role="agent"), secret))
    tok = mint(_claims(s), secret)
    wait_agent_ready(srv, s, headers=[("Authorization", f"Bearer {tok}")])
    r = curl(bridge_url(srv, s, "/echo/x?a=1"))
    check_error(r, 401, "token_missing")
    r = curl(bridge_url(srv, s, "/echo/x?a=1"), "-H", f"Authorization: Bearer {tok}")
    assert r.status == 200
    desc = json.loads(r.body)
    assert desc["query"] == "a=1"
    assert all(k.lower() != "authorization" for k, _ in desc["headers"]), desc["headers"]
    assert tok not in r.body.decode()


@needs_agent
def test_real_agent_sigterm_exits_0(make_server, make_agent, api):
    srv = make_server()
    s = unique("term")
    ag = make_agent(relay_url(srv), s, api.url)
    wait_agent_ready(srv, s)
    assert ag.terminate(15) == 0, ag.log()[-2000:]
    wait_for(lambda: bridge(srv, "GET", s, "/x").status == 502, 5.0, "the relay to see the agent leave")


@needs_agent
def test_real_agent_refuses_a_remote_target_unless_allowed(make_server, make_agent, api):
    srv = make_server()
    s = unique("remote")
    # Nothing is sent anywhere: the agent refuses before it connects.
    out = subprocess.run([str(binary_path()), "agent", "--relay", relay_url(srv), "--session", s,
                          "--target", "http://192.0.2.1:3000"], capture_output=True, timeout=10)
    assert out.returncode == 2, out
    assert b"not a loopback address" in out.stderr and b"--allow-remote" in out.stderr, out.stderr
    # With --allow-remote a non-loopback address is accepted. 0.0.0.0 is not a loopback address,
    # yet Linux delivers a connection to it on this machine: the API behind 127.0.0.1 answers,
    # and no packet leaves the host.
    port = api.url.rsplit(":", 1)[1]
    make_agent(relay_url(srv), s, f"http://0.0.0.0:{port}", extra=["--allow-remote"])
    wait_agent_ready(srv, s)


@needs_agent
def test_real_agent_steps_aside_when_replaced(make_server, make_agent, api):
    """Close 4001 means another agent now serves the session: the old one exits 1 rather than
    take the role back (two agents would replace each other forever)."""
    srv = make_server()
    s = unique("replaced")
    first = make_agent(relay_url(srv), s, api.url)
    wait_agent_ready(srv, s)
    second = make_agent(relay_url(srv), s, api.url)
    wait_for(lambda: not first.alive(), 10.0, "the replaced agent to exit")
    assert first.proc.returncode == 1, first.log()[-2000:]
    assert "4001" in first.log(), first.log()[-2000:]
    wait_agent_ready(srv, s)
    assert second.alive()
    first.exited_on_its_own = True


@needs_agent
def test_real_agent_limits_request_and_response_sizes(make_server, make_agent, api):
    srv = make_server(env={"RINGRELAY_BRIDGE_TIMEOUT": "10s"})
    s = unique("limits")
    make_agent(relay_url(srv), s, api.url, extra=["--max-message-bytes", "2000", "--max-response-bytes", "1000"])
    wait_agent_ready(srv, s)
    status, _, body = hc(srv, "POST", s, "/binary", b"x" * 5000)
    assert status == 413 and json.loads(body)["code"] == "agent_request_too_large", (status, body)
    status, _, body = hc(srv, "GET", s, "/binary")        # 1024 bytes from the API
    assert status == 502 and json.loads(body)["code"] == "target_response_too_large", (status, body)
    status, _, body = hc(srv, "POST", s, "/binary", b"y" * 900)
    assert status == 200 and body == b"y" * 900


@needs_agent
def test_real_agent_waits_longer_each_time_the_relay_is_absent(driver, api, make_agent):
    """Started before its relay: each failed connect is followed by a longer wait (equal jitter:
    attempt n waits within [b/2, b] for b = 250 ms doubled n times, so waits never shrink), and
    the agent connects once the relay is up."""
    port = free_port()
    s = unique("early")
    ag = make_agent(f"ws://127.0.0.1:{port}", s, api.url)
    waits = lambda: [int(m) for m in re.findall(r"reconnecting delay_ms=(\d+)", ag.log())]  # noqa: E731
    wait_for(lambda: len(waits()) >= 4, 15.0, "four reconnect waits")
    w = waits()
    assert all(a <= b for a, b in zip(w, w[1:])), w
    assert w[3] >= 2 * w[0] and w[0] <= 250, w
    srv = FixedPortServer(port, driver=driver).start()
    try:
        wait_agent_ready(srv, s, timeout=20)
    finally:
        stop_server(srv)
