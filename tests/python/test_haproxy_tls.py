"""The shipped haproxy/ringrelay-tls.cfg (HAProxy terminating TLS in front of one plain
relay, as deployments did before native TLS, and as scripts/tls_bench.sh measures it) run as
shipped, filled only through its RR_* environment variables, with a CA and certificate made
here by openssl: a pair over wss://, a refusal passing through, /health over https with HSTS.
The relay believes PROXY protocol only (`client_ip_header = "proxy-protocol"`) and drops a
trusted proxy's connection that has none, so every success here also shows that the
template sends the header.

Without haproxy these tests skip, unless RINGRELAY_REQUIRE_HAPROXY=1 (set by .ci/run).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import RECV_TIMEOUT, TicketsFirst, listening, round_trip, unique, wait_for

TEMPLATE = Path(__file__).resolve().parents[2] / "haproxy" / "ringrelay-tls.cfg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _haproxy_or_skip():
    if shutil.which("haproxy") is None or shutil.which("openssl") is None:
        if os.environ.get("RINGRELAY_REQUIRE_HAPROXY") == "1":
            pytest.fail("haproxy and openssl are required here (RINGRELAY_REQUIRE_HAPROXY=1)")
        pytest.skip("no haproxy or openssl (apt-get install haproxy openssl)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA and a server certificate for 127.0.0.1, and HAProxy's chain-plus-key file."""
    _haproxy_or_skip()
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-days", "1", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem")
    run("req", *ec, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-days", "1", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-extfile", "ext.cnf", "-out", "server.pem")
    (d / "haproxy.pem").write_bytes((d / "server.pem").read_bytes() + (d / "server.key").read_bytes())
    return d


@pytest.fixture
def front(make_server, pki):
    """The relay behind HAProxy; yields (HAProxy's https port, the relay, an SSL context)."""
    relay = make_server(env={
        "RINGRELAY_SECURITY_TRUSTED_PROXIES": "127.0.0.1",
        "RINGRELAY_SECURITY_CLIENT_IP_HEADER": "proxy-protocol",
    })
    port = _free_port()
    env = dict(os.environ, RR_TLS_BIND=f"127.0.0.1:{port}", RR_TLS_CRT=str(pki / "haproxy.pem"),
               RR_RELAY=f"{relay.listen[0]}:{relay.listen[1]}", RR_NBTHREAD="1")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(TEMPLATE)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or listening(port), 5, "haproxy to listen")
        assert proc.poll() is None, f"haproxy exited: {proc.stderr.read().decode()}"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        yield port, relay, ctx
    finally:
        proc.terminate()
        proc.wait(5)


def _wss(port: int, ctx: ssl.SSLContext, path: str):
    return connect(f"wss://127.0.0.1:{port}{path}", ssl=ctx, open_timeout=RECV_TIMEOUT,
                   close_timeout=RECV_TIMEOUT, ping_interval=None, compression=None, proxy=None,
                   max_size=1 << 20, create_connection=TicketsFirst)


def test_pair_over_wss_through_haproxy(front):
    port, _, ctx = front
    session = unique("tls")
    with _wss(port, ctx, f"/v1/relay/{session}?role=a") as a, \
            _wss(port, ctx, f"/v1/relay/{session}?role=b") as b:
        assert a.socket.version() in ("TLSv1.2", "TLSv1.3")
        round_trip(a, b, "through-haproxy")
        big = os.urandom(65536)
        a.send(big)
        assert b.recv(timeout=RECV_TIMEOUT) == big
        # A third peer: the relay's 409 and its JSON body come back through the proxy.
        with pytest.raises(InvalidStatus) as refused:
            _wss(port, ctx, f"/v1/relay/{session}?role=c")
        assert refused.value.response.status_code == 409
        assert json.loads(refused.value.response.body)["code"]
        round_trip(b, a, "after-refusal")


def test_health_over_https_has_hsts(front):
    port, _, ctx = front
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=RECV_TIMEOUT)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert body["status"] == "ok" and body["service"] == "ringrelay"
    assert resp.getheader("strict-transport-security") == "max-age=31536000"
    # The relay's own headers pass through.
    assert resp.getheader("x-content-type-options") == "nosniff"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_template_refuses_old_tls(front):
    """ssl-min-ver TLSv1.2: a client that offers TLS 1.1 only gets a protocol_version alert.
    The client lowers OpenSSL's security level so that it can offer 1.1 at all (checked by
    hand against the template with ssl-min-ver TLSv1.0: the handshake then succeeds)."""
    port, _, _ = front
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    except ValueError:
        pytest.skip("this Python's OpenSSL cannot offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", port), timeout=RECV_TIMEOUT) as raw:
        with pytest.raises(ssl.SSLError) as refused:
            with old.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
    assert "PROTOCOL_VERSION" in str(refused.value).upper(), refused.value
