"""CORS on the HTTP bridge (issue 24, item 4; docs/bridge.md "CORS"), with curl as the
client and a fake agent, on both drivers.

Before: the relay had no CORS at all. A page on another origin could not read a bridged
answer (no Access-Control-Allow-Origin), and its preflight, which a browser sends without any
token, went through admission like any request: 401 with auth on, so the browser never sent
the real request. The agent had to answer CORS itself, and refusals never carried the headers,
so a page could not even read why it was refused.
"""

from __future__ import annotations

import json
import time

import pytest

from bridge_helpers import FakeAgent, curl, echo_handler, mint, totals
from helpers import RECV_TIMEOUT, Server, stop_server, unique, ws_connect

SECRET = b"cors-test-secret-cors-test-secret-0123"
APP = "https://app.example"
EVIL = "https://evil.example"
METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


@pytest.fixture(scope="module")
def csrv(driver):
    srv = Server(driver=driver, workers=2, env={
        "RINGRELAY_AUTH_JWT_SECRET": SECRET.decode(),
        "RINGRELAY_CORS_ALLOWED_ORIGINS": APP,
        "RINGRELAY_CORS_EXPOSE_HEADERS": "x-request-id, etag",
        "RINGRELAY_CORS_MAX_AGE": "15m",
    }).start()
    yield srv
    stop_server(srv)


def token(sid: str, **over) -> str:
    claims = {"sid": sid, "exp": int(time.time()) + 600}
    claims.update(over)
    return mint(claims, SECRET)


def url(srv: Server, session: str, path: str = "/api") -> str:
    return f"http://{srv.listen[0]}:{srv.listen[1]}/v1/http/{session}{path}"


def cors_headers(r) -> list:
    return [(k, v) for k, v in r.header_list if k.startswith("access-control-")]


def check_answer_headers(r):
    """What every answer to the allowed origin carries: its origin once, the exposed headers,
    Vary: Origin, and no credentials."""
    assert r.header_all("access-control-allow-origin") == [APP], r.header_list
    assert r.header_all("access-control-expose-headers") == ["x-request-id, etag"], r.header_list
    assert "Origin" in r.header_all("vary"), r.header_list
    assert not r.header_all("access-control-allow-credentials"), r.header_list


def preflight(srv, session, origin, asked="authorization, content-type"):
    return curl(url(srv, session), "-X", "OPTIONS", "-H", f"Origin: {origin}",
                "-H", "Access-Control-Request-Method: POST",
                "-H", f"Access-Control-Request-Headers: {asked}")


def test_preflight_from_an_allowed_origin_is_answered_by_the_relay_before_any_token(csrv):
    s = unique("cors")
    with FakeAgent(csrv, s, query=f"token={token(s, role='agent')}") as agent:
        before = totals(csrv)
        r = preflight(csrv, s, APP, "Authorization, Content-Type, X-Secret")
        assert r.status == 204, (r.status, r.body)
        assert r.body == b"" and not r.header_all("content-length"), r.header_list
        assert r.header_all("access-control-allow-origin") == [APP]
        assert r.header_all("access-control-allow-methods") == [METHODS]
        # Those asked for within cors.allowed_headers, and nothing else.
        assert r.header_all("access-control-allow-headers") == ["authorization, content-type"]
        assert r.header_all("access-control-max-age") == ["900"]
        assert r.header_all("vary") == ["Origin"]
        assert r.header_all("x-content-type-options") == ["nosniff"]
        agent.assert_no_request()
        after = totals(csrv)
        assert after["cors_preflights"] - before["cors_preflights"] == 1
        assert after["auth_refused"] == before["auth_refused"], "the preflight met no token check"
        agent.check()


def test_preflight_from_another_origin_is_403_without_cors_headers(csrv):
    s = unique("cors")
    # A control pair of another session keeps talking beside the refusals.
    c = unique("ctl")
    a = ws_connect(csrv, f"/v1/relay/{c}?role=a&token={token(c)}")
    b = ws_connect(csrv, f"/v1/relay/{c}?role=b&token={token(c)}")
    with a, b:
        before = totals(csrv)
        for i, origin in enumerate((EVIL, "null", APP + ".evil.example")):
            r = preflight(csrv, s, origin)
            assert r.status == 403, (origin, r.status, r.body)
            assert json.loads(r.body)["code"] == "cors_origin_not_allowed"
            assert cors_headers(r) == [], r.header_list
            a.send(f"still here {i}")
            assert b.recv(timeout=RECV_TIMEOUT) == f"still here {i}"
        after = totals(csrv)
        assert after["cors_preflights_refused"] - before["cors_preflights_refused"] == 3
        assert after["cors_preflights"] == before["cors_preflights"]


def test_every_answer_to_the_allowed_origin_carries_cors_refusals_included(csrv):
    s = unique("cors")
    origin = ("-H", f"Origin: {APP}")
    # Refused at admission (no token, another session's token), and by the bridge itself.
    r = curl(url(csrv, s), *origin)
    assert r.status == 401, r.body
    check_answer_headers(r)
    r = curl(url(csrv, s), *origin, "-H", f"Authorization: Bearer {token('another')}")
    assert r.status == 403, r.body
    check_answer_headers(r)
    r = curl(url(csrv, s), *origin, "-H", f"Authorization: Bearer {token(s)}")
    assert (r.status, json.loads(r.body)["code"]) == (502, "agent_not_connected")
    check_answer_headers(r)
    r = curl(f"http://{csrv.listen[0]}:{csrv.listen[1]}/v1/http/bad*id/x", *origin)
    assert r.status == 400, r.body
    check_answer_headers(r)
    # The agent's answer: its own Access-Control-* headers give way to the relay's.
    agent_cors = [("access-control-allow-origin", "*"), ("access-control-allow-credentials", "true"),
                  ("x-request-id", "r-1")]
    handler = echo_handler(extra_headers=agent_cors)
    with FakeAgent(csrv, s, handler=handler, query=f"token={token(s, role='agent')}") as agent:
        r = curl(url(csrv, s), *origin, "-H", f"Authorization: Bearer {token(s)}")
        assert r.status == 200, r.body
        check_answer_headers(r)
        assert r.header_all("x-request-id") == ["r-1"]
        assert json.loads(r.body)["path"] == "/api"
        # An OPTIONS that is no preflight (no Access-Control-Request-Method) is the agent's.
        r = curl(url(csrv, s), "-X", "OPTIONS", *origin, "-H", f"Authorization: Bearer {token(s)}")
        assert (r.status, json.loads(r.body)["method"]) == (200, "OPTIONS")
        check_answer_headers(r)
        # Another origin: the request goes on (security.allowed_origins is "*"), no CORS
        # headers, not even the agent's.
        r = curl(url(csrv, s), "-H", f"Origin: {EVIL}", "-H", f"Authorization: Bearer {token(s)}")
        assert r.status == 200, r.body
        assert cors_headers(r) == [], r.header_list
        agent.check()


def test_without_cors_origins_preflights_go_to_the_agent_as_before(server):
    """The control: with `cors.allowed_origins` empty (the default) nothing changes."""
    s = unique("nocors")
    handler = echo_handler(extra_headers=[("access-control-allow-origin", APP)])
    with FakeAgent(server, s, handler=handler) as agent:
        r = preflight(server, s, APP)
        assert r.status == 200, r.body
        assert json.loads(r.body)["method"] == "OPTIONS"
        assert r.header_all("access-control-allow-origin") == [APP], "the agent's own, untouched"
        assert not r.header_all("vary")
        agent.check()
