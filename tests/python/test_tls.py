"""Native TLS on the public listener (`tls.listen`, docs/tls.md), against real TLS clients:
Python's `websockets` over wss and `ssl` sockets, curl over https, with a CA made here by
openssl.

Before: there was no TLS listener; `tls.*` were unknown keys and a client had to go through a
TLS terminator in front of the relay. Now every public route answers over TLS, answers there
carry Strict-Transport-Security, a plain request to the TLS port is told so in clear (400), a
client that never finishes its handshake is dropped at `limits.handshake_timeout`, and old or
mismatched versions are refused, each counted by its reason in /stats.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time

import pytest

from bridge_helpers import FakeAgent, echo_handler, totals
from helpers import RECV_TIMEOUT, TicketsFirst, http_get, http_raw, pair, round_trip, unique, wait_for
from websockets.sync.client import connect as ws_connect_raw

WORKERS = 2


def _openssl(*args: str, cwd: str):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _leaf(d: str, name: str, sans: str, ext: str = "", ca: str = "ca"):
    """A P-256 certificate for `sans` (plus the extension lines `ext`), signed by the CA `ca`
    in `d`."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={sans}\n{ext}")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "3", "-extfile", f"{name}.ext", cwd=d)
    return os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a certificate for localhost/127.0.0.1 and one for b.test, made for this run."""
    d = str(tmp_path_factory.mktemp("pki"))
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "3", "-subj", "/CN=ringrelay test CA", cwd=d)
    return {
        "ca": os.path.join(d, "ca.pem"),
        "a": _leaf(d, "relay-a", "DNS:localhost,IP:127.0.0.1"),
        "b": _leaf(d, "relay-b", "DNS:b.test"),
    }


def tls_env(pki, **extra) -> dict:
    cert, key = pki["a"]
    env = {"RINGRELAY_TLS_LISTEN": "127.0.0.1:0", "RINGRELAY_TLS_CERT_FILE": cert, "RINGRELAY_TLS_KEY_FILE": key}
    env.update(extra)
    return env


def client_ctx(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki["ca"])


def wss(srv, pki, path: str, name: str | None = None):
    """A websockets client over wss to the TLS listener (as `ws_connect` is over ws), asking
    for server name `name` (none: the address, which sends no SNI)."""
    host, port = srv.tls
    opts = dict(open_timeout=RECV_TIMEOUT, close_timeout=RECV_TIMEOUT, ping_interval=None, compression=None,
                proxy=None, max_size=64 * 1024 * 1024, legacy=True, ssl=client_ctx(pki),
                create_connection=TicketsFirst)
    if name is None:
        return ws_connect_raw(f"wss://{host}:{port}{path}", **opts)
    sock = socket.create_connection((host, port), timeout=5)
    return ws_connect_raw(f"wss://{name}:{port}{path}", sock=sock, server_hostname=name, **opts)


def owner_core(session: str, workers: int) -> int:
    """session/handoff.rs `owner_core`: FNV-1a of the id, modulo the workers."""
    h = 0xCBF29CE484222325
    for b in session.encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % workers


def sessions_on_each_core(n_per_core: int, workers: int = WORKERS) -> list[str]:
    out, seen = [], {c: 0 for c in range(workers)}
    while min(seen.values()) < n_per_core:
        s = unique("tls")
        c = owner_core(s, workers)
        if seen[c] < n_per_core:
            seen[c] += 1
            out.append(s)
    return out


def curl(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "5", *args], capture_output=True, timeout=15)


@pytest.fixture
def tls_server(make_server, pki):
    return make_server(env=tls_env(pki), workers=WORKERS)


def test_relay_pairs_over_wss_on_both_cores_beside_a_plain_pair(tls_server, pki):
    """Pairs over wss whose sessions live on each core: whichever core accepts, some are handed
    to the other with their TLS session (`Parcel.tls`), and every message crosses both ways,
    small and large, while a plain pair keeps flowing."""
    srv = tls_server
    _, c1, c2 = pair(srv)
    before = totals(srv)
    sessions = sessions_on_each_core(2)
    conns = []
    try:
        for s in sessions:
            a = wss(srv, pki, f"/v1/relay/{s}?role=a")
            b = wss(srv, pki, f"/v1/relay/{s}?role=b")
            conns += [a, b]
            assert a.response.headers.get("Strict-Transport-Security") == "max-age=31536000"
            for n in (5, 70_000, 300_000):
                m = os.urandom(n)
                a.send(m)
                assert b.recv(timeout=RECV_TIMEOUT) == m
                b.send(m)
                assert a.recv(timeout=RECV_TIMEOUT) == m
            a.send(f"text {s}")
            assert b.recv(timeout=RECV_TIMEOUT) == f"text {s}"
            round_trip(c1, c2, s)
    finally:
        for ws in conns + [c1, c2]:
            ws.close()
    t = totals(srv)
    assert t["tls_handshakes"] - before["tls_handshakes"] == 2 * len(sessions)
    assert t["tls_version_1_3"] - before["tls_version_1_3"] == 2 * len(sessions)
    assert t["handoffs_in"] > before["handoffs_in"], "no session was handed to another core"


def test_echo_and_health_over_tls_carry_hsts_and_plain_ones_do_not(tls_server, pki):
    srv = tls_server
    host, port = srv.tls
    r = curl(["--cacert", pki["ca"], "-i", f"https://localhost:{port}/health"])
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), head
    assert "strict-transport-security: max-age=31536000" in head.lower(), head
    assert json.loads(body)["status"] == "ok"
    plain = http_get(srv.listen, "/health")
    assert plain.status == 200 and plain.headers.get("strict-transport-security") is None
    # A refusal over TLS carries it too.
    r = curl(["--cacert", pki["ca"], "-i", f"https://localhost:{port}/nope"])
    assert b"404" in r.stdout.split(b"\r\n")[0] and b"strict-transport-security" in r.stdout.lower()


def test_bridge_request_over_https(tls_server, pki):
    """A bridged request over https reaches the session's agent (on the plain listener) and its
    answer comes back over TLS, with HSTS."""
    srv = tls_server
    s = unique("br")
    with FakeAgent(srv, s, handler=echo_handler()):
        host, port = srv.tls
        r = curl(["--cacert", pki["ca"], "-i", "-d", "ping", f"https://localhost:{port}/v1/http/{s}/hello?x=1"])
        assert r.returncode == 0, r.stderr
        head, _, body = r.stdout.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200"), head
        assert "strict-transport-security: max-age=31536000" in head.lower(), head
        desc = json.loads(body)
        assert (desc["method"], desc["path"]) == ("POST", "/hello?x=1"), desc


def test_plain_http_to_the_tls_port_is_told_in_clear(tls_server):
    srv = tls_server
    before = totals(srv)["tls_handshake_failed_not_tls"]
    r = http_raw(srv.tls, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert r.status == 400, r
    assert r.json()["code"] == "tls_required", r.body
    assert r.headers.get("strict-transport-security") is None, "HSTS only over TLS"
    wait_for(lambda: totals(srv)["tls_handshake_failed_not_tls"] == before + 1, 3, "not_tls counted")


def test_a_silent_connection_is_dropped_at_the_handshake_timeout(make_server, pki):
    srv = make_server(env=tls_env(pki, RINGRELAY_LIMITS_HANDSHAKE_TIMEOUT="400ms"), workers=WORKERS)
    _, c1, c2 = pair(srv)
    s = socket.create_connection(srv.tls, timeout=5)
    started = time.monotonic()
    try:
        round_trip(c1, c2, "while a silent TLS client waits")
        assert s.recv(1) == b"", "closed without a byte"
        took = time.monotonic() - started
        assert took < 3, f"dropped after {took:.2f}s"
    finally:
        s.close()
    wait_for(lambda: totals(srv)["tls_handshake_failed_timeout"] == 1, 3, "timeout counted")
    round_trip(c1, c2, "after")
    c1.close()
    c2.close()


def _handshake(addr, ctx: ssl.SSLContext, name: str | None = "localhost"):
    with socket.create_connection(addr, timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            return t.version(), t.getpeercert(binary_form=True)


def _old_client(max_version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # OpenSSL's own floor would stop the client before it asks; lowered so the server decides.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning) if max_version < ssl.TLSVersion.TLSv1_2 else _nothing():
        ctx.minimum_version = min(max_version, ssl.TLSVersion.TLSv1_2)
        ctx.maximum_version = max_version
    return ctx


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_tls_1_1_is_refused_and_counted(tls_server):
    srv = tls_server
    before = totals(srv)["tls_handshake_failed_version"]
    with pytest.raises(ssl.SSLError):
        _handshake(srv.tls, _old_client(ssl.TLSVersion.TLSv1_1))
    wait_for(lambda: totals(srv)["tls_handshake_failed_version"] == before + 1, 3, "version refusal counted")
    # TLS 1.2 is still welcome at the default tls.min_version.
    assert _handshake(srv.tls, _old_client(ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"


def test_min_version_1_3_refuses_a_1_2_only_client(make_server, pki):
    srv = make_server(env=tls_env(pki, RINGRELAY_TLS_MIN_VERSION="1.3"), workers=WORKERS)
    with pytest.raises(ssl.SSLError):
        _handshake(srv.tls, _old_client(ssl.TLSVersion.TLSv1_2))
    wait_for(lambda: totals(srv)["tls_handshake_failed_version"] == 1, 3, "version refusal counted")
    assert _handshake(srv.tls, client_ctx(pki))[0] == "TLSv1.3"


def test_sni_picks_the_certificate_by_name_and_defaults_to_the_first(make_server, pki):
    (b_cert, b_key) = pki["b"]
    srv = make_server(env=tls_env(pki, RINGRELAY_TLS_CERTIFICATES=f"{b_cert}:{b_key}"), workers=WORKERS)
    ctx = client_ctx(pki)
    # Each name verifies against its own certificate (the client checks the name).
    assert _handshake(srv.tls, ctx, "localhost")[0] == "TLSv1.3"
    assert _handshake(srv.tls, ctx, "b.test")[0] == "TLSv1.3"
    # An unknown name gets the first certificate, which then fails the client's name check.
    loose = client_ctx(pki)
    loose.check_hostname = False
    with open(pki["a"][0]) as f:
        a_der = ssl.PEM_cert_to_DER_cert(f.read())
    with open(b_cert) as f:
        b_der = ssl.PEM_cert_to_DER_cert(f.read())
    assert _handshake(srv.tls, loose, "unknown.test")[1] == a_der
    assert _handshake(srv.tls, loose, "b.test")[1] == b_der
    # And wss to b.test works end to end.
    s = unique("sni")
    a = wss(srv, pki, f"/v1/relay/{s}?role=a", name="b.test")
    b = wss(srv, pki, f"/v1/relay/{s}?role=b")
    try:
        a.send("over b.test")
        assert b.recv(timeout=RECV_TIMEOUT) == "over b.test"
    finally:
        a.close()
        b.close()


def test_echo_and_demo_over_tls(tls_server, pki):
    srv = tls_server
    ws = wss(srv, pki, "/v1/echo")
    try:
        ws.send("echo over wss")
        assert ws.recv(timeout=RECV_TIMEOUT) == "echo over wss"
        big = os.urandom(200_000)
        ws.send(big)
        assert ws.recv(timeout=RECV_TIMEOUT) == big
    finally:
        ws.close()
    host, port = srv.tls
    r = curl(["--cacert", pki["ca"], "-i", f"https://localhost:{port}/demo"])
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"strict-transport-security" in head.lower(), head
    assert b"<html" in body.lower()


def test_certificate_expiry_and_handshake_figures_in_stats_and_metrics(tls_server, pki):
    srv = tls_server
    assert _handshake(srv.tls, client_ctx(pki))[0] == "TLSv1.3"
    with open(pki["a"][0]) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    # The test certificates are made for 3 days.
    body = http_get(srv.admin, "/stats").json()
    certs = body["tls"]["certificates"]
    assert [c["file"] for c in certs] == [pki["a"][0]]
    left = certs[0]["expires_in_s"]
    assert 2 * 86400 < left <= 3 * 86400 + 60, left
    assert body["latency_us"]["tls_handshake"]["count"] >= 1
    assert der  # the file read is the one served (checked by SNI test's DER comparison)
    text = http_get(srv.admin, "/metrics").body.decode()
    line = next(l for l in text.splitlines() if l.startswith("ringrelay_tls_certificate_expiry_seconds{"))
    assert f'file="{pki["a"][0]}"' in line and 2 * 86400 < int(line.rsplit(" ", 1)[1]) <= 3 * 86400 + 60, line
    assert any(l.startswith("ringrelay_tls_handshakes_total{") for l in text.splitlines())


def test_unfinished_tls_handshakes_count_against_the_per_ip_limit(make_server, pki):
    """Before TLS, a silent connection held a handshake slot for its request head; now the TLS
    handshake is inside that slot: past limits.max_handshakes_per_ip a new connection is closed
    at once, and a plain pair keeps flowing."""
    srv = make_server(env=tls_env(pki, RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP="2"), workers=WORKERS)
    _, c1, c2 = pair(srv)
    before = totals(srv)["handshakes_refused_per_ip"]
    held = [socket.create_connection(srv.tls, timeout=5) for _ in range(2)]
    try:
        wait_for(lambda: sum(c["gauges"]["handshakes_in_progress"] if "gauges" in c else c.get("handshakes_in_progress", 0)
                             for c in http_get(srv.admin, "/stats").json()["per_core"]) >= 2, 3, "two handshakes held")
        third = socket.create_connection(srv.tls, timeout=5)
        assert third.recv(1) == b"", "the third is closed at once"
        third.close()
        wait_for(lambda: totals(srv)["handshakes_refused_per_ip"] == before + 1, 3, "per-IP refusal counted")
        round_trip(c1, c2, "beside held TLS handshakes")
    finally:
        for s in held:
            s.close()
        c1.close()
        c2.close()


from test_cluster import SECRET, redis_url  # noqa: E402,F401  (a fixture, used by name below)


def test_a_wss_client_carried_to_the_owner_node(driver, redis_url, pki):  # noqa: F811
    """Cluster mode: the session's owner is node 1 (its first peer came there in plain); the
    second peer comes to node 2 over wss, which carries it to node 1 over the node-to-node link
    (the carried stream decrypted on node 2, where the client's TLS ends)."""
    prefix = unique("tlsc")
    nodes = []
    from helpers import Server, stop_server
    try:
        for node_id in ("t1", "t2"):
            env = tls_env(pki, RINGRELAY_CLUSTER_REDIS_URL=redis_url, RINGRELAY_CLUSTER_NODE_ID=node_id,
                          RINGRELAY_CLUSTER_KEY_PREFIX=prefix, RINGRELAY_CLUSTER_HEARTBEAT="200ms",
                          RINGRELAY_CLUSTER_NODE_TTL="1s", RINGRELAY_CLUSTER_INTERNAL_LISTEN="127.0.0.1:0",
                          RINGRELAY_CLUSTER_SECRET=SECRET)
            nodes.append(Server(driver=driver, workers=WORKERS, env=env).start())
        n1, n2 = nodes
        for n in nodes:
            wait_for(lambda: http_get(n.listen, "/health").json()["cluster"]["nodes"] == 2, 5, "the fleet")
        s = unique("carried")
        from helpers import ws_connect
        owner_side = ws_connect(n1, f"/v1/relay/{s}?role=a")
        carried = wss(n2, pki, f"/v1/relay/{s}?role=b")
        try:
            for n in (10, 100_000):
                m = os.urandom(n)
                carried.send(m)
                assert owner_side.recv(timeout=RECV_TIMEOUT) == m
                owner_side.send(m)
                assert carried.recv(timeout=RECV_TIMEOUT) == m
        finally:
            owner_side.close()
            carried.close()
        assert totals(n2)["cluster_carried_out"] >= 1
        assert totals(n2)["tls_handshakes"] >= 1
    finally:
        for n in nodes:
            if n.alive():
                stop_server(n)



@pytest.fixture(scope="module")
def client_pki(pki, tmp_path_factory):
    """A client certificate from the test CA (CN device-1), and one from a CA the relay does
    not trust."""
    d = os.path.dirname(pki["ca"])
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             "other.key", "-out", "other.pem", "-days", "3", "-subj", "/CN=another CA", cwd=d)
    eku = "extendedKeyUsage=clientAuth\n"
    return {
        "good": _leaf(d, "device-1", "DNS:device-1.test", eku),
        "stranger": _leaf(d, "stranger", "DNS:stranger.test", eku, ca="other"),
    }


def _with_cert(pki, pair_=None) -> ssl.SSLContext:
    ctx = client_ctx(pki)
    if pair_:
        ctx.load_cert_chain(*pair_)
    return ctx


def _relay_101(srv, ctx) -> bytes:
    """Opens a TLS connection, sends an upgrade request and returns what comes back (the 101
    head, or b"" / an SSL error when the handshake was refused)."""
    with socket.create_connection(srv.tls, timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(f"GET /v1/relay/{unique('cc')}?role=a HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n".encode())
            return t.recv(4096)


def test_client_certificates_required(make_server, pki, client_pki):
    """tls.client_auth = "required": a client with a certificate from tls.client_ca_file is
    served; one with none, or with one from another CA, is refused in the handshake and
    counted as tls_handshake_failed_bad_client_cert, beside a plain pair that keeps flowing.
    Before: there was no client certificate check at all (and no TLS)."""
    srv = make_server(env=tls_env(pki, RINGRELAY_TLS_CLIENT_AUTH="required", RINGRELAY_TLS_CLIENT_CA_FILE=pki["ca"]),
                      workers=WORKERS)
    _, c1, c2 = pair(srv)
    assert _relay_101(srv, _with_cert(pki, client_pki["good"])).startswith(b"HTTP/1.1 101")
    for who in (None, client_pki["stranger"]):
        try:
            got = _relay_101(srv, _with_cert(pki, who))
        except (ssl.SSLError, ConnectionError):
            got = b""
        assert got == b"", got
    wait_for(lambda: totals(srv)["tls_handshake_failed_bad_client_cert"] == 2, 3, "both refusals counted")
    round_trip(c1, c2, "beside refused client certificates")
    c1.close()
    c2.close()


def test_client_certificates_optional(make_server, pki, client_pki):
    srv = make_server(env=tls_env(pki, RINGRELAY_TLS_CLIENT_AUTH="optional", RINGRELAY_TLS_CLIENT_CA_FILE=pki["ca"]),
                      workers=WORKERS)
    assert _relay_101(srv, _with_cert(pki)).startswith(b"HTTP/1.1 101")
    assert _relay_101(srv, _with_cert(pki, client_pki["good"])).startswith(b"HTTP/1.1 101")
    try:
        got = _relay_101(srv, _with_cert(pki, client_pki["stranger"]))
    except (ssl.SSLError, ConnectionError):
        got = b""
    assert got == b"", "a certificate that is sent must verify"
    wait_for(lambda: totals(srv)["tls_handshake_failed_bad_client_cert"] == 1, 3, "the refusal counted")


def test_hsts_max_age_zero_sends_no_header(make_server, pki):
    srv = make_server(env=tls_env(pki, RINGRELAY_SECURITY_HSTS_MAX_AGE="0s"), workers=WORKERS)
    host, port = srv.tls
    r = curl(["--cacert", pki["ca"], "-i", f"https://localhost:{port}/health"])
    assert r.returncode == 0 and r.stdout.startswith(b"HTTP/1.1 200"), r
    assert b"strict-transport-security" not in r.stdout.lower()
    ws = wss(srv, pki, f"/v1/relay/{unique('h0')}?role=a")
    try:
        assert ws.response.headers.get("Strict-Transport-Security") is None
    finally:
        ws.close()
