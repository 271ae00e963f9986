"""Protection features: JWT auth, Origin checks, per-IP limits, capacity, per-connection rates,
fragment floods, write timeout, and the /stats counters that record them.

Tokens are minted here with hmac/hashlib (no JWT library), and once by the `ringrelay token`
subcommand. Refusals are read through three independent clients: the `websockets` library
(`InvalidStatus`), raw sockets / `http.client`, and `curl`.

Per-IP figures are exact at any worker count (each address's counts live on its home core:
tests/protection_ip.rs checks 2 and 4 workers); these servers run one worker anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from helpers import (OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RECV_TIMEOUT, HttpResponse, RawWS,
                     Server, assert_json_error, binary_path, closed_code, encode_frame, http_get, http_raw,
                     read_http_response, recv_event_of, round_trip, stop_server, unique, upgrade_request, wait_for,
                     ws_connect)

SECRET = b"protection-suite-secret-0123456789-abcdefgh"   # 44 bytes (>= 32)
OTHER_SECRET = b"some-other-secret-that-is-long-enough-000000"
AUDIENCE = "ringrelay-tests"
ISSUER = "https://issuer.test"


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64u_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def mint(claims: dict, secret: bytes = SECRET, alg: str = "HS256") -> str:
    """A compact JWS. alg "none" gets an empty signature."""
    header = b64u(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64u(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}"
    if alg == "none":
        return signing_input + "."
    sig = hmac.new(secret, signing_input.encode(), _DIGESTS[alg]).digest()
    return f"{signing_input}.{b64u(sig)}"


def claims(sid: str, **over) -> dict:
    """Claims the auth server accepts; a keyword set to None removes that claim."""
    c = {"sid": sid, "exp": int(time.time()) + 600, "aud": AUDIENCE, "iss": ISSUER}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def token_of_length(sid: str, length: int) -> str:
    """A valid token padded (with an extra claim) to `length` bytes, or the shortest one longer."""
    base = len(mint(claims(sid, pad="")))
    for n in range(max(0, (length - base) * 3 // 4 - 8), length):
        tok = mint(claims(sid, pad="x" * n))
        if len(tok) >= length:
            return tok
    raise AssertionError("could not pad a token")


def with_query(path: str, tok: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}token={tok}"


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


# --------------------------------------------------------------------------------------------
# Reading refusals
# --------------------------------------------------------------------------------------------

def as_http(resp) -> HttpResponse:
    """A websockets `Response` (from InvalidStatus) as the suite's HttpResponse."""
    hl = [(k.lower(), v) for k, v in resp.headers.raw_items()]
    hd: dict[str, str] = {}
    for k, v in hl:
        hd[k] = f"{hd[k]}, {v}" if k in hd else v
    return HttpResponse(resp.status_code, resp.reason_phrase, hd, hl, bytes(resp.body or b""))


def ws_refused(srv: Server, path: str, status: int, code: str, **kw) -> HttpResponse:
    """Upgrade with the websockets client; it must be refused with `status` and JSON `code`."""
    try:
        ws = ws_connect(srv, path, **kw)
    except InvalidStatus as e:
        r = as_http(e.response)
    else:
        ws.close()
        raise AssertionError(f"{path}: expected {status} {code}, got 101")
    body = assert_json_error(r, status)   # status, JSON content type, error + code, security headers
    assert body["code"] == code, body
    assert set(body) == {"error", "code"}, body
    return r


def raw_refused(srv: Server, request: bytes, status: int, code: str) -> HttpResponse:
    r = http_raw(srv.listen, request)
    body = assert_json_error(r, status)
    assert body["code"] == code, body
    return r


def retry_after(r: HttpResponse) -> int:
    v = r.headers.get("retry-after")
    assert v is not None and v.isdigit(), f"Retry-After must be an integer number of seconds: {r.header_list}"
    n = int(v)
    assert n >= 1, n
    return n


def ws_open(srv: Server, path: str, **kw):
    """Upgrade with the websockets client and prove the connection is live (ping answered)."""
    ws = ws_connect(srv, path, **kw)
    assert ws.ping(b"alive").wait(RECV_TIMEOUT), f"{path}: no pong"
    return ws


def totals(srv: Server) -> dict:
    r = http_get(srv.admin, "/stats")
    assert r.status == 200, r
    return r.json()["totals"]


def health(srv: Server) -> dict:
    r = http_get(srv.admin, "/health")
    assert r.status == 200, r
    return r.json()


def delta(before: dict, after: dict, key: str) -> int:
    return after[key] - before[key]


def close_all(*conns):
    for c in conns:
        try:
            c.close()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
# Servers shared by the tests of one driver
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_server(driver):
    """Inline secret, HS256 + HS384, audience and issuer required; debug logging (to check that
    tokens never reach the log)."""
    srv = Server(driver=driver, workers=2, env={
        "RINGRELAY_AUTH_JWT_SECRET": SECRET.decode(),
        "RINGRELAY_AUTH_ALGORITHMS": "HS256,HS384",
        "RINGRELAY_AUTH_AUDIENCE": AUDIENCE,
        "RINGRELAY_AUTH_ISSUER": ISSUER,
        "RINGRELAY_LOG_LEVEL": "debug",
    }).start()
    yield srv
    stop_server(srv)


FILE_SECRET = b"file-secret-for-the-cli-test-0123456789abcdef"


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("auth") / "jwt.secret"
    p.write_bytes(FILE_SECRET + b"\n")   # the trailing newline is dropped by server and CLI alike
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def file_auth_server(driver, secret_file):
    """Secret from a file, every other auth setting at its default (HS256 only, no aud/iss)."""
    srv = Server(driver=driver, workers=2, env={"RINGRELAY_AUTH_JWT_SECRET_FILE": str(secret_file)}).start()
    yield srv
    stop_server(srv)


# --------------------------------------------------------------------------------------------
# Auth: every refusal code
# --------------------------------------------------------------------------------------------

def _tampered(s):
    h, p, sig = mint(claims(s)).split(".")
    forged = b64u(json.dumps(claims("*")).encode())   # widen the grant, keep the signature
    return f"{h}.{forged}.{sig}"


def _signed_payload(payload: bytes) -> str:
    """A correctly signed HS256 token whose payload is `payload` verbatim."""
    header = b64u(b'{"alg":"HS256","typ":"JWT"}')
    signing_input = f"{header}.{b64u(payload)}"
    return f"{signing_input}.{b64u(hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest())}"


def _now():
    return int(time.time())


# (id, status, code, token(session) or None, where: "query" | "header", role asked for in the path)
REFUSALS = [
    ("missing", 401, "token_missing", None, None, None),
    ("empty-query", 401, "token_missing", lambda s: "", "query", None),
    ("empty-bearer", 401, "token_missing", lambda s: "", "header", None),
    ("one-part", 401, "token_malformed", lambda s: "notajwt", "header", None),
    ("two-parts", 401, "token_malformed", lambda s: "abc.def", "query", None),
    ("four-parts", 401, "token_malformed", lambda s: mint(claims(s)) + ".x", "header", None),
    ("not-base64", 401, "token_malformed", lambda s: "@@@.###.$$$", "header", None),
    ("no-exp", 401, "token_malformed", lambda s: mint(claims(s, exp=None)), "header", None),
    ("exp-string", 401, "token_malformed", lambda s: mint(claims(s, exp="tomorrow")), "query", None),
    ("no-sid", 401, "token_malformed", lambda s: mint({k: v for k, v in claims(s).items() if k != "sid"}), "query", None),
    ("sid-invalid", 401, "token_malformed", lambda s: mint(claims("no spaces allowed")), "header", None),
    ("payload-array", 401, "token_malformed", lambda s: _signed_payload(b'[1,2]'), "header", None),
    ("other-secret", 401, "token_signature", lambda s: mint(claims(s), secret=OTHER_SECRET), "query", None),
    ("tampered-payload", 401, "token_signature", _tampered, "header", None),
    ("no-signature", 401, "token_signature", lambda s: mint(claims(s)).rsplit(".", 1)[0] + ".", "header", None),
    ("expired", 401, "token_expired", lambda s: mint(claims(s, exp=_now() - 3600)), "query", None),
    ("expired-past-leeway", 401, "token_expired", lambda s: mint(claims(s, exp=_now() - 90)), "header", None),
    ("alg-none", 401, "token_algorithm", lambda s: mint(claims(s), alg="none"), "header", None),
    ("alg-hs512", 401, "token_algorithm", lambda s: mint(claims(s), alg="HS512"), "query", None),
    ("too-long", 401, "token_too_long", lambda s: token_of_length(s, 4097), "header", None),
    ("not-yet-valid", 401, "token_not_yet_valid", lambda s: mint(claims(s, nbf=_now() + 3600)), "query", None),
    ("wrong-audience", 401, "token_audience", lambda s: mint(claims(s, aud="someone-else")), "header", None),
    ("no-audience", 401, "token_audience", lambda s: mint(claims(s, aud=None)), "query", None),
    ("audience-list-without-ours", 401, "token_audience", lambda s: mint(claims(s, aud=["a", "b"])), "header", None),
    ("wrong-issuer", 401, "token_issuer", lambda s: mint(claims(s, iss="https://evil.test")), "query", None),
    ("no-issuer", 401, "token_issuer", lambda s: mint(claims(s, iss=None)), "header", None),
    ("wrong-session", 403, "token_wrong_session", lambda s: mint(claims("another-session")), "query", None),
    ("wrong-role", 403, "token_wrong_role", lambda s: mint(claims(s, role="a")), "header", "b"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_auth_refusal(auth_server, case):
    _, status, code, make, where, role = case
    s = unique("auth")
    path = f"/v1/relay/{s}" + (f"?role={role}" if role else "")
    kw = {}
    tok = make(s) if make else None
    if tok is not None and where == "query":
        path = with_query(path, tok)
    elif tok is not None:
        kw["additional_headers"] = bearer(tok)
    r = ws_refused(auth_server, path, status, code, **kw)
    if tok:
        assert tok.encode() not in r.body, "the refusal must not echo the token"
    # The refused connection took no seat: the session is still free for both roles.
    ok = mint(claims(s))
    a = ws_open(auth_server, with_query(f"/v1/relay/{s}?role=a", ok))
    b = ws_open(auth_server, f"/v1/relay/{s}?role=b", additional_headers=bearer(ok))
    with a, b:
        round_trip(a, b, "after-refusal")


# Tokens the auth server must accept (the positive side of each check above).
ACCEPTED = [
    ("bearer-header", lambda s: mint(claims(s)), "header", None),
    ("query", lambda s: mint(claims(s)), "query", None),
    ("bearer-lowercase-scheme", lambda s: mint(claims(s)), "lower", None),
    ("header-and-same-query", lambda s: mint(claims(s)), "both", None),
    ("hs384", lambda s: mint(claims(s), alg="HS384"), "header", None),
    ("any-session", lambda s: mint(claims("*")), "query", None),
    ("audience-in-list", lambda s: mint(claims(s, aud=["x", AUDIENCE])), "header", None),
    ("expired-within-leeway", lambda s: mint(claims(s, exp=_now() - 5)), "query", None),
    ("nbf-within-leeway", lambda s: mint(claims(s, nbf=_now() + 5)), "header", None),
    ("nbf-past", lambda s: mint(claims(s, nbf=_now() - 60)), "header", None),
    ("pinned-role-asked", lambda s: mint(claims(s, role="desk")), "query", "desk"),
    ("exactly-max-token-bytes", lambda s: token_of_length(s, 4096), "header", None),
]


@pytest.mark.parametrize("case", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_auth_accepted(auth_server, case):
    _, make, where, role = case
    s = unique("ok")
    tok = make(s)
    path = f"/v1/relay/{s}" + (f"?role={role}" if role else "")
    kw = {}
    if where in ("query", "both"):
        path = with_query(path, tok)
    if where in ("header", "both"):
        kw["additional_headers"] = bearer(tok)
    if where == "lower":
        kw["additional_headers"] = {"Authorization": f"bearer {tok}"}
    if case[0] == "exactly-max-token-bytes":
        assert len(tok) == 4096, len(tok)
    ws = ws_open(auth_server, path, **kw)
    ws.close()


def test_auth_refusals_on_raw_sockets(auth_server):
    """What a proxy and the relay could read differently is refused (token_malformed); and the
    same refusal through a client that does not go through the websockets library."""
    s = unique("raw")
    tok = mint(claims(s))
    other = mint(claims(s, exp=_now() + 601))
    path = f"/v1/relay/{s}"
    req = upgrade_request(auth_server.listen, path)
    two_headers = req.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {tok}\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
    raw_refused(auth_server, two_headers, 401, "token_malformed")
    raw_refused(auth_server, upgrade_request(auth_server.listen, f"{path}?token={tok}&token={tok}"), 401, "token_malformed")
    raw_refused(auth_server, upgrade_request(auth_server.listen, f"{path}?token={other}", extra=bearer(tok)),
                401, "token_malformed")
    raw_refused(auth_server, upgrade_request(auth_server.listen, path, extra={"Authorization": f"Basic {tok}"}),
                401, "token_malformed")
    raw_refused(auth_server, upgrade_request(auth_server.listen, path), 401, "token_missing")
    raw_refused(auth_server, upgrade_request(auth_server.listen, with_query(f"/v1/relay/{unique()}", tok)),
                403, "token_wrong_session")
    # and the token is accepted when sent once
    with RawWS(auth_server.listen, with_query(path, tok)) as ws:
        ws.send_frame(OP_PING, b"raw")
        f = ws.recv_frame()
        assert (f.opcode, f.payload) == (OP_PONG, b"raw")


def test_auth_on_echo_and_bridge_routes(auth_server):
    """/v1/echo needs a token (for any session) by default; the HTTP bridge checks the token for
    its session (read with http.client)."""
    ws_refused(auth_server, "/v1/echo", 401, "token_missing")
    ws_refused(auth_server, with_query("/v1/echo", mint(claims("x"), secret=OTHER_SECRET)), 401, "token_signature")
    with ws_open(auth_server, with_query("/v1/echo", mint(claims(unique())))) as ws:
        ws.send("echo me")
        assert ws.recv(timeout=RECV_TIMEOUT) == "echo me"

    s = unique("bridge")

    def bridge(headers: dict) -> tuple[int, dict, dict]:
        c = http.client.HTTPConnection(*auth_server.listen, timeout=RECV_TIMEOUT)
        try:
            c.request("GET", f"/v1/http/{s}/anything", headers=headers)
            resp = c.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
        finally:
            c.close()

    status, hdrs, body = bridge({})
    assert (status, body["code"]) == (401, "token_missing"), (status, body)
    assert hdrs.get("x-content-type-options") == "nosniff", hdrs
    status, _, body = bridge(bearer(mint(claims("someone-else"))))
    assert (status, body["code"]) == (403, "token_wrong_session"), (status, body)
    status, _, body = bridge(bearer(mint(claims(s))))
    assert status not in (401, 403) and not body.get("code", "").startswith("token_"), (status, body)


def test_token_session_scoping_and_pairing(auth_server):
    """A token for X is refused on Y (403) and accepted on X; the peer with the token in the
    query pairs with a peer whose token (pinned to role b) comes in a Bearer header, and text and
    binary cross both ways."""
    x, y = unique("x"), unique("y")
    tok_x = mint(claims(x))
    tok_xb = mint(claims(x, role="b"))
    ws_refused(auth_server, with_query(f"/v1/relay/{y}?role=a", tok_x), 403, "token_wrong_session")
    ws_refused(auth_server, f"/v1/relay/{y}", 403, "token_wrong_session", additional_headers=bearer(tok_xb))
    before = totals(auth_server)
    a = ws_connect(auth_server, with_query(f"/v1/relay/{x}?role=a", tok_x))
    b = ws_connect(auth_server, f"/v1/relay/{x}?events=1", additional_headers=bearer(tok_xb))
    with a, b:
        ev = recv_event_of(b, "connected")
        assert (ev["session"], ev["role"], ev["peer_present"]) == (x, "b", True), ev
        a.send("text from a ✓")
        assert b.recv(timeout=RECV_TIMEOUT) == "text from a ✓"
        blob = os.urandom(2048)
        a.send(blob)
        assert b.recv(timeout=RECV_TIMEOUT) == blob
        b.send("text from b")
        assert a.recv(timeout=RECV_TIMEOUT) == "text from b"
        b.send(b"\x00\x01binary from b\xff")
        assert a.recv(timeout=RECV_TIMEOUT) == b"\x00\x01binary from b\xff"
        # b's token pins role b: it cannot be used to take a's seat.
        ws_refused(auth_server, f"/v1/relay/{x}?role=a", 403, "token_wrong_role", additional_headers=bearer(tok_xb))
    after = totals(auth_server)
    assert delta(before, after, "auth_refused") == 1, (before["auth_refused"], after["auth_refused"])


def test_auth_refused_counter_and_no_token_in_log(auth_server):
    before = totals(auth_server)
    s = unique("count")
    secret_looking = mint(claims(s, exp=_now() - 3600))
    ws_refused(auth_server, f"/v1/relay/{s}", 401, "token_missing")
    ws_refused(auth_server, with_query(f"/v1/relay/{s}", secret_looking), 401, "token_expired")
    ws_refused(auth_server, f"/v1/relay/{s}", 401, "token_signature",
               additional_headers=bearer(mint(claims(s), secret=OTHER_SECRET)))
    good = mint(claims(s))
    ws_open(auth_server, with_query(f"/v1/relay/{s}", good)).close()
    after = totals(auth_server)
    assert delta(before, after, "auth_refused") == 3
    assert after["handshakes_refused_by_status"]["401"] - before["handshakes_refused_by_status"]["401"] == 3
    time.sleep(0.2)
    log = auth_server.log()
    for t in (secret_looking, good):
        assert t.split(".")[2] not in log, "a token's signature appeared in the server log"
    assert SECRET.decode() not in log


# --------------------------------------------------------------------------------------------
# Auth: the `ringrelay token` subcommand
# --------------------------------------------------------------------------------------------

def cli_token(secret_file, session: str, *extra: str) -> str:
    out = subprocess.run([str(binary_path()), "token", "--secret-file", str(secret_file), "--session", session,
                          "--ttl", "1h", *extra], capture_output=True, timeout=20, text=True)
    assert out.returncode == 0, out.stderr
    tok = out.stdout.strip()
    assert tok.count(".") == 2 and "\n" not in tok, out.stdout
    return tok


def test_cli_token_accepted(file_auth_server, secret_file):
    s = unique("cli")
    tok = cli_token(secret_file, s)
    h, p, sig = tok.split(".")
    header, payload = json.loads(b64u_decode(h)), json.loads(b64u_decode(p))
    assert header["alg"] == "HS256", header
    assert payload["sid"] == s, payload
    assert abs(payload["exp"] - (_now() + 3600)) <= 60, payload
    # Signed with the file's bytes less the trailing newline, as this suite computes it.
    assert hmac.compare_digest(b64u_decode(sig), hmac.new(FILE_SECRET, f"{h}.{p}".encode(), hashlib.sha256).digest())

    ws_refused(file_auth_server, with_query(f"/v1/relay/{unique()}", tok), 403, "token_wrong_session")
    tok_b = cli_token(secret_file, s, "--role", "b")
    ws_refused(file_auth_server, with_query(f"/v1/relay/{s}?role=a", tok_b), 403, "token_wrong_role")
    # HS384 is not among this server's (default) algorithms.
    ws_refused(file_auth_server, with_query(f"/v1/relay/{s}", mint({"sid": s, "exp": _now() + 60}, FILE_SECRET, "HS384")),
               401, "token_algorithm")
    ws_refused(file_auth_server, with_query(f"/v1/relay/{s}", cli_token(secret_file, s, "--alg", "HS512")),
               401, "token_algorithm")

    a = ws_connect(file_auth_server, with_query(f"/v1/relay/{s}?role=a", tok))
    # the other peer's token minted here (no aud/iss: this server requires none)
    b = ws_connect(file_auth_server, f"/v1/relay/{s}?events=1", additional_headers=bearer(tok_b))
    with a, b:
        ev = recv_event_of(b, "connected")
        assert (ev["role"], ev["peer_present"]) == ("b", True), ev
        round_trip(a, b, "cli")
        b.send(b"\x00\xffcli")
        assert a.recv(timeout=RECV_TIMEOUT) == b"\x00\xffcli"
    py = mint({"sid": s, "exp": _now() + 60}, FILE_SECRET)
    ws_open(file_auth_server, with_query(f"/v1/relay/{unique()}", mint({"sid": "*", "exp": _now() + 60}, FILE_SECRET))).close()
    ws_open(file_auth_server, with_query(f"/v1/relay/{s}", py)).close()


# --------------------------------------------------------------------------------------------
# Origin
# --------------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com, https://admin.example.com:8443"


@pytest.mark.parametrize("require", [True, False], ids=["required", "optional"])
def test_origin(make_server, require):
    srv = make_server(env={"RINGRELAY_SECURITY_ALLOWED_ORIGINS": ALLOWED,
                           "RINGRELAY_SECURITY_REQUIRE_ORIGIN": "true" if require else "false"})
    before = totals(srv)
    refused = 0
    for origin in ("https://app.example.com", "https://admin.example.com:8443"):
        ws_open(srv, f"/v1/relay/{unique()}", origin=origin).close()
    for origin in ("https://evil.example.com", "http://app.example.com", "https://app.example.com:8443",
                   "https://admin.example.com", "https://app.example.com.evil.com", "null"):
        ws_refused(srv, f"/v1/relay/{unique()}", 403, "origin_not_allowed", origin=origin)
        refused += 1
    ws_refused(srv, "/v1/echo", 403, "origin_not_allowed", origin="https://evil.example.com")
    refused += 1
    # no Origin at all (a native client)
    if require:
        ws_refused(srv, f"/v1/relay/{unique()}", 403, "origin_not_allowed")
        refused += 1
    else:
        ws_open(srv, f"/v1/relay/{unique()}").close()
    # two Origin headers: refused even if both are allowed
    req = upgrade_request(srv.listen, f"/v1/relay/{unique()}")
    req = req.replace(b"\r\n\r\n", b"\r\nOrigin: https://app.example.com\r\nOrigin: https://app.example.com\r\n\r\n")
    raw_refused(srv, req, 403, "origin_not_allowed")
    refused += 1
    # an allowed origin pairs and relays
    s = unique()
    a = ws_connect(srv, f"/v1/relay/{s}?role=a", origin="https://app.example.com")
    b = ws_connect(srv, f"/v1/relay/{s}?role=b", origin="https://admin.example.com:8443")
    with a, b:
        round_trip(a, b, "origin")
    after = totals(srv)
    assert delta(before, after, "origin_refused") == refused


def test_any_origin_by_default_still_needs_token(auth_server):
    """The default allows any Origin; with auth on, a browser origin still needs a token."""
    s = unique()
    ws_refused(auth_server, f"/v1/relay/{s}", 401, "token_missing", origin="https://anything.example")
    ws_open(auth_server, with_query(f"/v1/relay/{s}", mint(claims(s))), origin="https://anything.example").close()


# --------------------------------------------------------------------------------------------
# Per-IP connection rate (curl for one refusal) and open connections
# --------------------------------------------------------------------------------------------

def curl_upgrade(srv: Server, path: str, tmp_path, extra_headers: dict | None = None) -> tuple[int, dict, bytes]:
    hfile, bfile = tmp_path / "curl.h", tmp_path / "curl.b"
    cmd = ["curl", "-s", "--max-time", "5", "-D", str(hfile), "-o", str(bfile), "-w", "%{http_code}",
           "-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
           "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
    for k, v in (extra_headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"http://{srv.host}:{srv.port}{path}")
    out = subprocess.run(cmd, capture_output=True, timeout=15, text=True)
    status = int(out.stdout.strip() or 0)
    headers = {}
    for line in hfile.read_bytes().decode("iso-8859-1").split("\r\n")[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return status, headers, bfile.read_bytes()


def test_ip_connect_rate_429_then_retry_after(make_server, tmp_path):
    # 60 a minute = one a second after a burst of 2; one worker so the figures are exact.
    srv = make_server(env={"RINGRELAY_LIMITS_IP_CONNECT_RATE": "60", "RINGRELAY_LIMITS_IP_CONNECT_BURST": "2"},
                      workers=1)
    before = totals(srv)
    for _ in range(2):
        ws_open(srv, f"/v1/relay/{unique()}").close()
    t_refused = time.monotonic()
    status, headers, body = curl_upgrade(srv, f"/v1/relay/{unique()}", tmp_path)
    assert status == 429, (status, headers, body)
    ra = headers.get("retry-after", "")
    assert ra.isdigit() and 1 <= int(ra) <= 2, f"Retry-After {ra!r} (one token a second)"
    doc = json.loads(body)
    assert doc["code"] == "rate_limited" and isinstance(doc["error"], str) and doc["error"], doc
    assert "application/json" in headers.get("content-type", ""), headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    # websockets sees the same; an X-Forwarded-For from an untrusted peer changes nothing.
    r = ws_refused(srv, f"/v1/relay/{unique()}", 429, "rate_limited",
                   additional_headers={"X-Forwarded-For": "198.51.100.77"})
    retry_after(r)
    ws_refused(srv, "/v1/echo", 429, "rate_limited")
    # Waiting as long as Retry-After said (from the refusal) is enough.
    time.sleep(max(0.0, int(ra) - (time.monotonic() - t_refused)) + 0.05)
    ws_open(srv, f"/v1/relay/{unique()}").close()
    after = totals(srv)
    assert delta(before, after, "ip_rate_refused") == 3
    assert after["handshakes_refused_by_status"]["429"] - before["handshakes_refused_by_status"]["429"] == 3


def test_trusted_proxy_headers_name_the_client(make_server):
    srv = make_server(env={"RINGRELAY_LIMITS_IP_CONNECT_RATE": "1", "RINGRELAY_LIMITS_IP_CONNECT_BURST": "1",
                           "RINGRELAY_LIMITS_IP_TABLE_SIZE": "16",
                           "RINGRELAY_SECURITY_TRUSTED_PROXIES": "127.0.0.0/8"}, workers=1)

    def attempt(headers: dict | None):
        r = http_raw(srv.listen, upgrade_request(srv.listen, f"/v1/relay/{unique()}", extra=headers))
        return r.status, (r.json().get("code") if r.status != 101 else None)

    xff = lambda ip: {"X-Forwarded-For": ip}  # noqa: E731
    assert attempt(xff("198.51.100.7")) == (101, None)
    assert attempt(xff("198.51.100.7")) == (429, "rate_limited")
    assert attempt(xff("198.51.100.8")) == (101, None)
    # The client's own claim (leftmost) is ignored: the nearest untrusted hop is what counts.
    assert attempt(xff("203.0.113.1, 198.51.100.7")) == (429, "rate_limited")
    # Forwarded is not the configured source (security.client_ip_header): ignored, so these
    # count as the proxy itself, in its own bucket.
    assert attempt({"Forwarded": 'for="198.51.100.9:4711";proto=http'}) == (101, None)
    assert attempt({"Forwarded": "for=198.51.100.10"}) == (429, "rate_limited")
    assert attempt(None) == (429, "rate_limited")
    before = totals(srv)
    assert before["ip_table_entries"] == 3, before["ip_table_entries"]
    # 20 new addresses through a 16-entry table: the least recently used are evicted.
    for i in range(20):
        assert attempt(xff(f"192.0.2.{i + 1}"))[0] == 101
    after = totals(srv)
    assert after["ip_table_entries"] == 16, after["ip_table_entries"]
    assert delta(before, after, "ip_table_evictions") == 7, (before["ip_table_evictions"], after["ip_table_evictions"])


def test_forwarded_names_the_client_when_it_is_the_chosen_header(make_server):
    srv = make_server(env={"RINGRELAY_LIMITS_IP_CONNECT_RATE": "1", "RINGRELAY_LIMITS_IP_CONNECT_BURST": "1",
                           "RINGRELAY_SECURITY_CLIENT_IP_HEADER": "forwarded",
                           "RINGRELAY_SECURITY_TRUSTED_PROXIES": "127.0.0.0/8"}, workers=1)

    def attempt(headers: dict | None):
        r = http_raw(srv.listen, upgrade_request(srv.listen, f"/v1/relay/{unique()}", extra=headers))
        return r.status, (r.json().get("code") if r.status != 101 else None)

    assert attempt({"Forwarded": 'for="198.51.100.9:4711";proto=http'}) == (101, None)
    assert attempt({"Forwarded": "for=198.51.100.9"}) == (429, "rate_limited")
    assert attempt({"Forwarded": 'For="[2001:db8::9]"'}) == (101, None)
    # Now X-Forwarded-For is the header nobody wrote for us: a client's own is ignored.
    assert attempt({"Forwarded": "for=198.51.100.9", "X-Forwarded-For": "192.0.2.99"}) == (429, "rate_limited")
    assert attempt(None) == (101, None)                  # the proxy itself, its own bucket
    assert attempt({"X-Forwarded-For": "192.0.2.98"}) == (429, "rate_limited")


def test_too_many_connections_per_ip(make_server):
    srv = make_server(env={"RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP": "3"}, workers=1)
    before = totals(srv)
    conns = [ws_open(srv, f"/v1/relay/{unique()}"), ws_open(srv, f"/v1/relay/{unique()}"), ws_open(srv, "/v1/echo")]
    try:
        assert totals(srv)["ip_table_entries"] == 1
        r = ws_refused(srv, f"/v1/relay/{unique()}", 429, "too_many_connections")
        retry_after(r)
        raw_refused(srv, upgrade_request(srv.listen, "/v1/echo"), 429, "too_many_connections")
        # the open ones still work
        conns[2].send("still here")
        assert conns[2].recv(timeout=RECV_TIMEOUT) == "still here"
        conns.pop(0).close()

        def reopened():
            try:
                conns.append(ws_connect(srv, f"/v1/relay/{unique()}"))
                return True
            except InvalidStatus as e:
                assert e.response.status_code == 429, e.response.status_code
                return False
        wait_for(reopened, 3.0, "a slot freed by closing a connection")
        ws_refused(srv, f"/v1/relay/{unique()}", 429, "too_many_connections")
    finally:
        close_all(*conns)
    after = totals(srv)
    assert delta(before, after, "ip_open_refused") >= 3
    wait_for(lambda: totals(srv)["ip_table_entries"] == 0, 3.0, "the IP entry dropped once all closed")


# --------------------------------------------------------------------------------------------
# Whole-server capacity
# --------------------------------------------------------------------------------------------

def test_capacity_503_reserve_and_health(make_server):
    # 5 connections, 20 % (1) kept for peers rejoining a paired session; 2 sessions.
    srv = make_server(env={"RINGRELAY_LIMITS_MAX_CONNECTIONS": "5", "RINGRELAY_LIMITS_RECONNECT_RESERVE_PERCENT": "20",
                           "RINGRELAY_LIMITS_MAX_SESSIONS": "2", "RINGRELAY_SESSION_LINGER": "0s"}, workers=2)
    before = totals(srv)
    sa, sb = unique("A"), unique("B")
    a1 = ws_connect(srv, f"/v1/relay/{sa}?role=a")
    a2 = ws_connect(srv, f"/v1/relay/{sa}?role=b")
    b1 = ws_connect(srv, f"/v1/relay/{sb}?role=a")
    conns = [a1, a2, b1]
    try:
        round_trip(a1, a2, "A")
        cap = health(srv)["capacity"]
        assert (cap["connections"]["active"], cap["sessions"]["active"]) == (3, 2), cap
        # a third session: over max_sessions
        r = ws_refused(srv, f"/v1/relay/{unique('C')}", 503, "at_capacity")
        retry_after(r)
        # the second peer of B opens no session and fits under 5 - 1 reserved
        b2 = ws_connect(srv, f"/v1/relay/{sb}?role=b")
        conns.append(b2)
        round_trip(b1, b2, "B")
        h = health(srv)
        assert h["capacity"] == {
            "connections": {"active": 4, "limit": 5, "available": 1, "utilization_percent": 80.0},
            "sessions": {"active": 2, "limit": 2, "available": 0, "utilization_percent": 100.0},
            "reconnect_reserve": 1,
        }, h["capacity"]
        assert (h["active_connections"], h["active_sessions"]) == (4, 2), h
        # 4 of the 4 open to newcomers are used: echo (no session) is refused too
        r = raw_refused(srv, upgrade_request(srv.listen, "/v1/echo"), 503, "at_capacity")
        retry_after(r)
        # a peer rejoining paired session A may use the reserve (it replaces a2, 4001)
        a2b = ws_connect(srv, f"/v1/relay/{sa}?role=b")
        conns.append(a2b)
        assert closed_code(a2) == 4001
        round_trip(a1, a2b, "A-rejoined")
        wait_for(lambda: health(srv)["capacity"]["connections"]["active"] == 4, 3.0, "the replaced peer to leave")
        # B leaves: its session goes (linger 0s) and a new session fits again
        close_all(b1, b2)
        wait_for(lambda: health(srv)["capacity"]["sessions"]["active"] == 1, 3.0, "session B to go")
        cap = health(srv)["capacity"]
        assert cap["connections"] == {"active": 2, "limit": 5, "available": 3, "utilization_percent": 40.0}, cap
        c1 = ws_connect(srv, f"/v1/relay/{unique('C')}")
        conns.append(c1)
        assert health(srv)["capacity"]["connections"]["active"] == 3
    finally:
        close_all(*conns)
    after = totals(srv)
    assert delta(before, after, "capacity_refused") == 2
    assert after["handshakes_refused_by_status"]["503"] - before["handshakes_refused_by_status"]["503"] == 2


# --------------------------------------------------------------------------------------------
# Per-connection message and byte rates: reading pauses, nothing is lost
# --------------------------------------------------------------------------------------------

RATE_ENV = {
    "RINGRELAY_LIMITS_MESSAGE_RATE": "200", "RINGRELAY_LIMITS_MESSAGE_BURST": "20",
    "RINGRELAY_LIMITS_BYTE_RATE": "200000", "RINGRELAY_LIMITS_BYTE_BURST": "50000",
    # small reads, so one read cannot carry much more than a burst
    "RINGRELAY_LIMITS_READ_BUFFER_BYTES": "4096",
}


@pytest.fixture
def rate_server(make_server):
    return make_server(env=RATE_ENV)


def _send_all(ws, messages, errors):
    try:
        for m in messages:
            ws.send(m)
    except BaseException as e:  # noqa: BLE001
        errors.append(e)


def _relay_under_rate(srv, messages, min_seconds):
    s = unique("rate")
    a = ws_connect(srv, f"/v1/relay/{s}?role=a")
    b = ws_connect(srv, f"/v1/relay/{s}?role=b")
    with a, b:
        round_trip(a, b, "warm")   # costs a's bucket 1 message
        before = totals(srv)
        errors: list = []
        t0 = time.monotonic()
        th = threading.Thread(target=_send_all, args=(a, messages, errors), daemon=True)
        th.start()
        for i, m in enumerate(messages):
            got = b.recv(timeout=RECV_TIMEOUT)
            assert got == m, f"message {i}: expected {m!r:.60}, got {got!r:.60}"
        elapsed = time.monotonic() - t0
        th.join(RECV_TIMEOUT)
        assert not th.is_alive() and not errors, errors
        assert elapsed >= min_seconds, f"{len(messages)} messages took {elapsed:.2f}s: the rate was not applied"
        assert elapsed < min_seconds * 4 + 2, f"{elapsed:.2f}s: far slower than the configured rate"
        # a is still connected and readable after its pauses
        b.send("back")
        assert a.recv(timeout=RECV_TIMEOUT) == "back"
        after = totals(srv)
    assert delta(before, after, "rate_limit_pauses") >= 1
    assert after["messages_dropped_peer_absent"] == before["messages_dropped_peer_absent"]
    return elapsed


def test_message_rate_pauses_reading_nothing_lost(rate_server):
    # 200 messages at 200/s after a burst of 20: at least ~0.85 s; without the limit, a few ms.
    msgs = [(f"m{i:03d}-" + "t" * 180) if i % 2 else (i.to_bytes(2, "big") + b"b" * 180) for i in range(200)]
    _relay_under_rate(rate_server, msgs, 0.6)


def test_byte_rate_pauses_reading_nothing_lost(rate_server):
    # 16 x 12.5 KB = 200 KB at 200 KB/s after a 50 KB burst: at least ~0.7 s.
    msgs = [i.to_bytes(2, "big") + os.urandom(12_498) for i in range(16)]
    _relay_under_rate(rate_server, msgs, 0.5)


# --------------------------------------------------------------------------------------------
# Fragment floods
# --------------------------------------------------------------------------------------------

@pytest.fixture
def frag_server(make_server):
    return make_server(env={"RINGRELAY_LIMITS_MAX_FRAMES_PER_MESSAGE": "8"})


def test_fragment_flood_closed_1008(frag_server):
    """websockets client: a message of max_frames_per_message frames passes, one frame more is
    closed with 1008; the receiving peer is never handed part of a message."""
    srv = frag_server
    before = totals(srv)
    s = unique("frag")
    a = ws_connect(srv, f"/v1/relay/{s}?role=a")
    b = ws_connect(srv, f"/v1/relay/{s}?role=b")
    conns = [a, b]
    try:
        # websockets sends N chunks as N frames plus an empty final one: 7 chunks = 8 frames.
        a.send([f"c{i}," for i in range(7)])
        assert b.recv(timeout=RECV_TIMEOUT) == "".join(f"c{i}," for i in range(7))
        b.send([bytes([i]) * 3 for i in range(7)])
        assert a.recv(timeout=RECV_TIMEOUT) == b"".join(bytes([i]) * 3 for i in range(7))
        # 8 chunks = 9 frames: one too many
        try:
            a.send([f"f{i}" for i in range(8)])
        except ConnectionClosed:
            pass
        assert closed_code(a) == 1008
        # b may have been sent the first fragments (then it is closed with 4004, as the message
        # can never end) or nothing at all (then it stays): never a message.
        try:
            got = b.recv(timeout=1.0)
            raise AssertionError(f"b was handed {got!r:.80}")
        except TimeoutError:
            a2 = ws_connect(srv, f"/v1/relay/{s}?role=a")
            conns.append(a2)
            round_trip(a2, b, "after-flood")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 4004, e
    finally:
        close_all(*conns)
    after = totals(srv)
    assert delta(before, after, "fragment_floods") == 1


def test_fragment_flood_raw_frames(frag_server):
    """Raw frames on the echo route: exactly max_frames_per_message frames pass (control frames
    in between do not count); a flood of 2000 one-byte fragments is closed with 1008."""
    before = totals(frag_server)
    with RawWS(frag_server.listen, "/v1/echo") as ws:
        for i in range(7):
            ws.send_frame(OP_TEXT if i == 0 else OP_CONT, b"ab", fin=False)
        ws.send_frame(OP_CONT, b"!", fin=True)
        assert ws.recv_message() == (OP_TEXT, b"ab" * 7 + b"!")
        ws.send_frame(OP_BINARY, b"1", fin=False)
        for _ in range(10):
            ws.send_frame(OP_PING, b"p")
        for _ in range(6):
            ws.send_frame(OP_CONT, b"2", fin=False)
        ws.send_frame(OP_CONT, b"3", fin=True)
        assert ws.recv_message() == (OP_BINARY, b"1" + b"2" * 6 + b"3")
        # one write, so that the relay has read all of it when it closes
        ws.send_raw(encode_frame(OP_BINARY, b"x", fin=False)
                    + b"".join(encode_frame(OP_CONT, b"x", fin=False) for _ in range(2000)))
        f = ws.expect_close()
        assert f.close_code == 1008, (f.close_code, f.close_reason)
        assert not f.masked
        ws.expect_eof()
    after = totals(frag_server)
    assert delta(before, after, "fragment_floods") == 1


def test_pings_coalesced_counted(frag_server):
    """Five pings in one write: every one is answered by a pong or counted as coalesced, and the
    last one's payload is answered (RFC 6455 5.5.3)."""
    before = totals(frag_server)
    with RawWS(frag_server.listen, "/v1/echo") as ws:
        ws.send_raw(b"".join(encode_frame(OP_PING, f"p{i}".encode()) for i in range(5)) + encode_frame(OP_TEXT, b"end"))
        pongs, echoed = [], False
        while not (echoed and pongs and pongs[-1] == b"p4"):
            f = ws.recv_frame()
            if f.opcode == OP_PONG:
                pongs.append(f.payload)
            else:
                assert (f.opcode, f.payload, echoed) == (OP_TEXT, b"end", False), f
                echoed = True
        assert pongs and pongs[-1] == b"p4", pongs
        assert pongs == sorted(pongs) and set(pongs) <= {f"p{i}".encode() for i in range(5)}, pongs
    after = totals(frag_server)
    assert delta(before, after, "pongs_sent") == len(pongs)
    assert delta(before, after, "pings_coalesced") == 5 - len(pongs)


# --------------------------------------------------------------------------------------------
# Write timeout: a peer that stops reading is dropped, its sender stays
# --------------------------------------------------------------------------------------------

def test_write_timeout_drops_peer_that_stopped_reading(make_server):
    # Buffering off: what a sends once b is gone is dropped (counted, with error events)
    # rather than kept for b, so the flood never waits (tests/durability.rs keeps it).
    srv = make_server(env={"RINGRELAY_LIMITS_WRITE_TIMEOUT": "1s", "RINGRELAY_SESSION_BUFFER_BYTES": "0"}, workers=1)
    s = unique("wt")
    # b: a raw client with a tiny receive window that never reads after the handshake
    b = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    b.settimeout(RECV_TIMEOUT)
    b.connect(srv.listen)
    a = None
    try:
        b.sendall(upgrade_request(srv.listen, f"/v1/relay/{s}?role=b"))
        assert read_http_response(b, read_body=False).status == 101
        a = ws_connect(srv, f"/v1/relay/{s}?role=a&events=1")
        assert recv_event_of(a, "connected")["peer_present"] is True
        stop = threading.Event()
        errors: list = []

        def flood():
            chunk = os.urandom(65536)
            try:
                for _ in range(1024):   # at most 64 MiB
                    if stop.is_set():
                        return
                    a.send(chunk)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        t0 = time.monotonic()
        th = threading.Thread(target=flood, daemon=True)
        th.start()
        wait_for(lambda: totals(srv)["peers_dropped_write_timeout"] >= 1, 8.0, "b dropped by the write timeout")
        waited = time.monotonic() - t0
        assert waited >= 0.9, f"dropped after {waited:.2f}s, before the 1s write timeout"
        stop.set()
        th.join(10)
        assert not th.is_alive() and not errors, errors
        # a stays, is told b left (and, maybe, that messages were dropped), and still answers.
        # The events are drained first: websockets stops reading once 16 messages are queued.
        ev = recv_event_of(a, "peer_disconnected", timeout=RECV_TIMEOUT)
        assert ev["role"] == "b", ev
        while True:
            try:
                ev = json.loads(a.recv(timeout=0.3))
            except TimeoutError:
                break
            assert ev["type"] == "error", ev
        assert a.ping(b"still").wait(RECV_TIMEOUT)
        # b's connection is gone (after whatever it had buffered)
        b.settimeout(RECV_TIMEOUT)
        deadline = time.monotonic() + RECV_TIMEOUT
        while True:
            assert time.monotonic() < deadline, "b's connection still open"
            try:
                if not b.recv(1 << 20):
                    break
            except (ConnectionResetError, BrokenPipeError):
                break
        assert totals(srv)["peers_dropped_write_timeout"] == 1
    finally:
        b.close()
        if a is not None:
            a.close()
