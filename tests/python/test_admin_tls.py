"""TLS on the admin listener (`admin_tls.*`, docs/tls.md "The admin listener"), against real
TLS clients: curl with --cacert (and --cert for a scraper's client certificate) and Python's
ssl, with a CA made here by openssl.

Before: the admin listener spoke plain HTTP only, and `admin_tls.*` were unknown keys (the
relay refused to start with them): /stats and /metrics crossed the network in clear, and any
host that reached the port could read them.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl

import pytest

from helpers import http_get, http_raw, pair, round_trip, wait_for
from test_tls import _leaf, client_ctx, client_pki, curl, pki  # noqa: F401 (fixtures)


def admin_env(pki, **extra) -> dict:  # noqa: F811
    cert, key = pki["a"]
    env = {"RINGRELAY_ADMIN_TLS_CERT_FILE": cert, "RINGRELAY_ADMIN_TLS_KEY_FILE": key}
    env.update(extra)
    return env


def admin_get(srv, pki, path: str, cert=None):  # noqa: F811
    """GET `path` from the admin listener over TLS; (status, body)."""
    ctx = client_ctx(pki)
    if cert:
        ctx.load_cert_chain(*cert)
    host, port = srv.admin
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def admin_totals(srv, pki, cert=None) -> dict:  # noqa: F811
    status, body = admin_get(srv, pki, "/stats", cert)
    assert status == 200, body
    return json.loads(body)["totals"]


def served_cn(addr, pki) -> str:  # noqa: F811
    with socket.create_connection(addr, timeout=5) as raw:
        with client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as s:
            return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]


def test_the_admin_listener_speaks_only_tls(make_server, pki):  # noqa: F811
    srv = make_server(env=admin_env(pki))
    _, c1, c2 = pair(srv)
    port = srv.admin[1]
    # curl over https, the server verified against the test CA.
    r = curl(["--cacert", pki["ca"], "-i", f"https://localhost:{port}/stats"])
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), head
    assert "strict-transport-security" not in head.lower(), "no HSTS on the admin listener"
    stats = json.loads(body)
    assert stats["totals"]["admin_tls_handshakes"] >= 1, stats["totals"]
    assert [c["file"] for c in stats["tls"]["certificates"]] == [pki["a"][0]], "its expiry is watched"
    r = curl(["--cacert", pki["ca"], f"https://localhost:{port}/metrics"])
    assert r.returncode == 0 and b"ringrelay_admin_tls_handshakes" in r.stdout, r
    assert b'ringrelay_tls_certificate_expiry_seconds{file="' in r.stdout
    status, body = admin_get(srv, pki, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    # A plain request to it is told so in clear, and counted.
    plain = http_raw(srv.admin, b"GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert plain.status == 400 and plain.json()["code"] == "tls_required", plain
    wait_for(lambda: admin_totals(srv, pki)["admin_tls_handshake_failed"] == 1, 3, "the plain request counted")
    # The public listener is untouched: plain, and the pair beside kept flowing.
    assert http_get(srv.listen, "/health").status == 200
    round_trip(c1, c2, "beside the admin listener's TLS")
    c1.close()
    c2.close()


def test_a_scraper_needs_a_client_certificate_when_required(make_server, pki, client_pki):  # noqa: F811
    srv = make_server(env=admin_env(pki, RINGRELAY_ADMIN_TLS_CLIENT_AUTH="required",
                                    RINGRELAY_ADMIN_TLS_CLIENT_CA_FILE=pki["ca"]))
    port = srv.admin[1]
    cert, key = client_pki["good"]
    r = curl(["--cacert", pki["ca"], "--cert", cert, "--key", key, f"https://localhost:{port}/metrics"])
    assert r.returncode == 0 and b"ringrelay_connections_accepted" in r.stdout, r
    # Without a certificate, or with one from another CA: refused in the handshake.
    r = curl(["--cacert", pki["ca"], f"https://localhost:{port}/metrics"])
    assert r.returncode != 0 and b"ringrelay_" not in r.stdout, r
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        admin_get(srv, pki, "/stats", cert=client_pki["stranger"])
    wait_for(lambda: admin_totals(srv, pki, cert=client_pki["good"])["admin_tls_handshake_failed"] == 2, 3,
             "both refusals counted")


def _config(admin: tuple[str, str] | None) -> str:
    # A short handshake timeout: a TLS client polling the admin listener before the reload
    # lands meets a plain listener, which waits that long for a request head.
    limits = '[limits]\nhandshake_timeout = "300ms"\n'
    if admin is None:
        return limits
    return limits + f'[admin_tls]\ncert_file = "{admin[0]}"\nkey_file = "{admin[1]}"\n'


def _write(path: str, text: str):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _reloads(srv, pki) -> dict:  # noqa: F811
    status, body = admin_get(srv, pki, "/stats")
    return json.loads(body)["reload"] if status == 200 else {}


def test_admin_tls_on_and_its_certificate_change_on_reload(make_server, pki, tmp_path):  # noqa: F811
    """SIGHUP turns TLS on for the admin listener, then swaps its certificate; a file that
    would put it back in clear is refused whole and TLS stays."""
    d = os.path.dirname(pki["ca"])
    new_cert, new_key = _leaf(d, "admin-c", "DNS:localhost,IP:127.0.0.1")
    conf = str(tmp_path / "relay.toml")
    _write(conf, _config(None))
    srv = make_server(env={"RINGRELAY_CONFIG": conf})
    assert http_get(srv.admin, "/health").status == 200, "plain to begin with"

    _write(conf, _config(pki["a"]))
    os.kill(srv.proc.pid, signal.SIGHUP)
    wait_for(lambda: _try(lambda: _reloads(srv, pki).get("reloads_ok") == 1), 10, "admin TLS on")
    assert served_cn(srv.admin, pki) == "relay-a"
    assert http_raw(srv.admin, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status == 400

    _write(conf, _config((new_cert, new_key)))
    os.kill(srv.proc.pid, signal.SIGHUP)
    wait_for(lambda: _reloads(srv, pki).get("reloads_ok") == 2, 10, "the new certificate")
    assert served_cn(srv.admin, pki) == "admin-c"

    _write(conf, _config(None))
    os.kill(srv.proc.pid, signal.SIGHUP)
    r = wait_for(lambda: (lambda r: r if r.get("reloads_refused") == 1 else None)(_reloads(srv, pki)), 10,
                 "turning admin TLS off refused")
    assert "admin_tls.cert_file" in r["last_reload_error"], r
    assert served_cn(srv.admin, pki) == "admin-c"


def _try(f):
    """`f()`, or False while the admin listener still answers in clear (before the reload)."""
    try:
        return f()
    except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError):
        return False
