"""Live reload of the TLS certificate (SIGHUP, docs/configuration.md "Reloading"), against
real TLS clients: the certificate file named in the config changes, the relay is sent
SIGHUP, and new handshakes get the new certificate while a wss pair opened before keeps
exchanging messages (it keeps the session it shook hands with). A certificate that does not
load is refused whole: the old one stays, the reason is logged and counted.

Before: SIGHUP met its default action and killed the relay, every connection with it; a new
certificate needed a restart.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl

from bridge_helpers import stats
from helpers import RECV_TIMEOUT, wait_for
from test_tls import _leaf, _openssl, client_ctx, pki, wss  # noqa: F401 (pki is a fixture)


def config_text(cert: str, key: str) -> str:
    return f'[tls]\nlisten = "127.0.0.1:0"\ncert_file = "{cert}"\nkey_file = "{key}"\n'


def write(path: str, text: str):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def served_cn(srv, pki) -> str:
    """The CN of the certificate a new TLS handshake gets."""
    host, port = srv.tls
    with socket.create_connection((host, port), timeout=5) as raw:
        with client_ctx(pki).wrap_socket(raw, server_hostname="localhost") as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            return subject["commonName"]


def reload(srv, ok: int, refused: int) -> dict:
    os.kill(srv.proc.pid, signal.SIGHUP)
    r = wait_for(lambda: (lambda r: r if (r["reloads_ok"], r["reloads_refused"]) == (ok, refused) else None)(
        stats(srv)["reload"]), 10, f"{ok} reloads applied and {refused} refused")
    return r


def test_a_new_certificate_on_reload_reaches_new_handshakes_only(make_server, pki, tmp_path):
    d = os.path.dirname(pki["ca"])
    new_cert, new_key = _leaf(d, "relay-c", "DNS:localhost,IP:127.0.0.1")
    conf = str(tmp_path / "relay.toml")
    write(conf, config_text(*pki["a"]))
    srv = make_server(env={"RINGRELAY_CONFIG": conf})
    assert served_cn(srv, pki) == "relay-a"
    a = wss(srv, pki, "/v1/relay/cert-reload?role=a")
    b = wss(srv, pki, "/v1/relay/cert-reload?role=b")
    try:
        a.send("before")
        assert b.recv(timeout=RECV_TIMEOUT) == "before"

        write(conf, config_text(new_cert, new_key))
        r = reload(srv, 1, 0)
        assert r["last_reload_kept"] == [], r
        assert served_cn(srv, pki) == "relay-c"
        # Certificate expiry in /stats follows the certificate served.
        files = [c["file"] for c in stats(srv)["tls"]["certificates"]]
        assert files == [new_cert], files

        # A key that does not go with its certificate: refused whole, the new one stays.
        write(conf, config_text(new_cert, pki["a"][1]))
        r = reload(srv, 1, 1)
        assert r["last_reload_outcome"] == "refused", r
        assert "does not go with" in r["last_reload_error"], r
        assert "config reload refused" in srv.log()
        assert served_cn(srv, pki) == "relay-c"

        # The pair opened on the old certificate kept going through both reloads.
        for i in range(3):
            a.send(f"after {i}")
            assert b.recv(timeout=RECV_TIMEOUT) == f"after {i}"
            b.send(f"back {i}")
            assert a.recv(timeout=RECV_TIMEOUT) == f"back {i}"
    finally:
        a.close()
        b.close()
