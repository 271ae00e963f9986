"""Admission by client certificate (`tls.client_grants`, docs/auth.md "Client certificates"):
a client certificate the TLS handshake verified stands in for a missing token, through grants
that give its subject (CN or a DNS/URI SAN) the claims a token would carry (`sid`, `role`),
decided by the same `Claims::grant` as a token. A token, when sent, decides alone.

Before: the verified subject was only logged (`client_cn` at debug level); admission never
looked at it. With a token secret set, each certificate holder below was refused 401
`token_missing`; with no secret, auth was off and everyone got in, certificate or not.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time

import pytest

from bridge_helpers import mint, stats, totals
from helpers import (RECV_TIMEOUT, TicketsFirst, pair, read_http_response, round_trip, unique, wait_for, ws_connect)
from test_tls import _leaf, client_ctx, client_pki, curl, pki  # noqa: F401 (fixtures)
from websockets.sync.client import connect as ws_connect_raw

SECRET = b"client-grants-test-secret-0123456789abcdef"
# device-1's certificate has CN device-1 and the DNS SAN device-1.test: its CN opens
# granted-s in any role, its SAN (written in another case: DNS names ignore case) opens
# agent-s as the agent only.
GRANTS = "device-1=granted-s, DEVICE-1.TEST=agent-s/agent"


@pytest.fixture(scope="module")
def other_device(pki):  # noqa: F811
    """A client certificate from the relay's client CA that no grant names (CN device-2)."""
    d = os.path.dirname(pki["ca"])
    return _leaf(d, "device-2", "DNS:device-2.test", "extendedKeyUsage=clientAuth\n")


def env(pki, grants: str = GRANTS, secret: bool = True, **extra) -> dict:  # noqa: F811
    cert, key = pki["a"]
    e = {"RINGRELAY_TLS_LISTEN": "127.0.0.1:0", "RINGRELAY_TLS_CERT_FILE": cert, "RINGRELAY_TLS_KEY_FILE": key,
         "RINGRELAY_TLS_CLIENT_AUTH": "optional", "RINGRELAY_TLS_CLIENT_CA_FILE": pki["ca"],
         "RINGRELAY_TLS_CLIENT_GRANTS": grants}
    if secret:
        e["RINGRELAY_AUTH_JWT_SECRET"] = SECRET.decode()
    e.update(extra)
    return e


def ctx_with(pki, cert=None) -> ssl.SSLContext:  # noqa: F811
    ctx = client_ctx(pki)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def token(sid: str, role: str | None = None) -> str:
    claims = {"sid": sid, "exp": int(time.time()) + 600}
    if role:
        claims["role"] = role
    return mint(claims, SECRET)


def upgrade(srv, ctx, path: str, bearer: str | None = None):
    """An upgrade request over TLS with `ctx` (its client certificate, if any); the answer."""
    auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
    with socket.create_connection(srv.tls, timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
                      .encode())
            return read_http_response(t)


def code(resp) -> str | None:
    return resp.json()["code"] if resp.status != 101 else None


def wss_with(srv, ctx, path: str):
    host, port = srv.tls
    return ws_connect_raw(f"wss://localhost:{port}{path}", open_timeout=RECV_TIMEOUT, close_timeout=RECV_TIMEOUT,
                          ping_interval=None, compression=None, proxy=None, legacy=True, ssl=ctx,
                          create_connection=TicketsFirst)


def token_pair(srv):
    s = unique("ctl")
    t = token(s)
    hdr = {"additional_headers": {"Authorization": f"Bearer {t}"}}
    return ws_connect(srv, f"/v1/relay/{s}?role=a", **hdr), ws_connect(srv, f"/v1/relay/{s}?role=b", **hdr)


def test_a_granted_certificate_admits_without_a_token(make_server, pki, client_pki, other_device):  # noqa: F811
    srv = make_server(env=env(pki))
    c1, c2 = token_pair(srv)
    before = totals(srv)
    good = ctx_with(pki, client_pki["good"])
    # Both peers of granted-s by certificate alone: paired, messages both ways, beside a
    # token pair on the plain listener.
    a = wss_with(srv, good, "/v1/relay/granted-s?role=a")
    b = wss_with(srv, good, "/v1/relay/granted-s?role=b")
    try:
        round_trip(a, b, "by certificate")
        round_trip(c1, c2, "beside")
    finally:
        a.close()
        b.close()
    # The SAN's grant pins the agent's role: the seat is open to it, and only that seat.
    assert upgrade(srv, good, "/v1/relay/agent-s?role=agent").status == 101
    r = upgrade(srv, good, "/v1/relay/agent-s?role=b")
    assert (r.status, code(r)) == (403, "client_cert_wrong_role"), r
    r = upgrade(srv, good, "/v1/relay/other-s?role=a")
    assert (r.status, code(r)) == (403, "client_cert_wrong_session"), r
    # A certificate from the same CA that no grant names: refused as a credential that does
    # not cover the request, 401 (a token would still do).
    r = upgrade(srv, ctx_with(pki, other_device), "/v1/relay/granted-s?role=a")
    assert (r.status, code(r)) == (401, "client_cert_not_granted"), r
    assert r.headers.get("www-authenticate") == "Bearer", r.headers
    # No certificate and no token: the token is missing, as before.
    r = upgrade(srv, ctx_with(pki), "/v1/relay/granted-s?role=a")
    assert (r.status, code(r)) == (401, "token_missing"), r
    # The bridge decides the same way (its agent is away: admitted, then 503/502).
    cert, key = client_pki["good"]
    port = srv.tls[1]
    tls_args = ["--cacert", pki["ca"], "--cert", cert, "--key", key, "-o", "/dev/null", "-w", "%{http_code}"]
    assert curl([*tls_args, f"https://localhost:{port}/v1/http/other-s/x"]).stdout == b"403"
    assert curl([*tls_args, f"https://localhost:{port}/v1/http/granted-s/x"]).stdout not in (b"401", b"403")
    t = totals(srv)
    assert t["client_cert_admitted"] - before["client_cert_admitted"] == 4, t
    assert t["client_cert_refused"] - before["client_cert_refused"] == 4, t
    round_trip(c1, c2, "after")
    c1.close()
    c2.close()


def test_a_token_when_sent_decides_alone(make_server, pki, client_pki):  # noqa: F811
    """A client that sends a token means it: a bad one is refused even with a granted
    certificate, and a good one admits where no grant would."""
    srv = make_server(env=env(pki))
    good = ctx_with(pki, client_pki["good"])
    before = totals(srv)
    forged = mint({"sid": "granted-s", "exp": int(time.time()) + 600}, b"x" * 40)
    r = upgrade(srv, good, "/v1/relay/granted-s?role=a", bearer=forged)
    assert (r.status, code(r)) == (401, "token_signature"), r
    assert upgrade(srv, good, "/v1/relay/tok-s?role=a", bearer=token("tok-s")).status == 101
    t = totals(srv)
    assert t["client_cert_admitted"] == before["client_cert_admitted"], "the certificate was not consulted"


def test_grants_without_a_secret_turn_auth_on(make_server, pki, client_pki):  # noqa: F811
    """Grants and no token secret: only granted certificates get in, on either listener.
    Before: no secret meant auth off, so all three below were let in."""
    srv = make_server(env=env(pki, secret=False))
    assert upgrade(srv, ctx_with(pki, client_pki["good"]), "/v1/relay/granted-s?role=a").status == 101
    r = upgrade(srv, ctx_with(pki), "/v1/relay/granted-s?role=a")
    assert (r.status, code(r)) == (401, "token_missing"), r
    # A token cannot verify without a secret.
    r = upgrade(srv, ctx_with(pki), "/v1/relay/granted-s?role=a", bearer=token("granted-s"))
    assert (r.status, code(r)) == (401, "token_signature"), r
    with pytest.raises(Exception) as e:
        ws_connect(srv, "/v1/relay/granted-s?role=a")
    assert "401" in str(e.value), e.value


def _config(pki, grants: str) -> str:  # noqa: F811
    cert, key = pki["a"]
    items = ", ".join(f'{{ subject = "{s}", sid = "{sid}" }}' for s, sid in
                      (g.split("=") for g in grants.split(",") if g))
    return (f'[tls]\nlisten = "127.0.0.1:0"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
            f'client_auth = "optional"\nclient_ca_file = "{pki["ca"]}"\nclient_grants = [{items}]\n')


def _write(path: str, text: str):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _reload(srv, ok: int, refused: int) -> dict:
    os.kill(srv.proc.pid, signal.SIGHUP)
    return wait_for(lambda: (lambda r: r if (r["reloads_ok"], r["reloads_refused"]) == (ok, refused) else None)(
        stats(srv)["reload"]), 10, f"{ok} reloads applied and {refused} refused")


def test_grants_change_on_reload(make_server, pki, client_pki, tmp_path):  # noqa: F811
    """SIGHUP with other grants: new admissions follow them at once, a pair admitted before
    keeps going; a file with no grant (and no secret) left is refused whole, since it would
    turn auth off."""
    conf = str(tmp_path / "relay.toml")
    _write(conf, _config(pki, "device-1=first-s"))
    srv = make_server(env={"RINGRELAY_CONFIG": conf})
    good = ctx_with(pki, client_pki["good"])
    a = wss_with(srv, good, "/v1/relay/first-s?role=a")
    b = wss_with(srv, good, "/v1/relay/first-s?role=b")
    try:
        _write(conf, _config(pki, "device-1=second-s"))
        _reload(srv, 1, 0)
        r = upgrade(srv, good, "/v1/relay/first-s?role=a")
        assert (r.status, code(r)) == (403, "client_cert_wrong_session"), r
        assert upgrade(srv, good, "/v1/relay/second-s?role=a").status == 101
        _write(conf, _config(pki, ""))
        r = _reload(srv, 1, 1)
        assert "tls.client_grants" in r["last_reload_error"], r
        assert upgrade(srv, good, "/v1/relay/second-s?role=b").status == 101
        round_trip(a, b, "admitted before both reloads")
    finally:
        a.close()
        b.close()
