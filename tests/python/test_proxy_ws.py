"""WebSockets through a proxy route (docs/proxy.md, "WebSockets and other upgrades"), with
Python's websockets library on both ends: two echo backends (regions 1 and 2) written here,
and the client through ringrelay over ws:// (the connections spliced) and over wss:// to the
TLS listener (ringrelay holds the TLS session: the bytes are copied through its buffers).

Before: every upgrade on a proxy route was answered 501 `upgrade_unsupported`, so each of
these connections failed its handshake.
"""

from __future__ import annotations

import os
import threading

import pytest
from websockets.sync.server import serve

from bridge_helpers import totals
from helpers import RECV_TIMEOUT, pair, round_trip, wait_for, ws_connect
from test_tls import pki, tls_env, wss  # noqa: F401 (pki is a fixture)

MESSAGES = 10_000


class EchoBackend:
    """A websockets server that greets with its name and the request path, then echoes every
    message, counting client messages `m{i}` that arrive in order."""

    def __init__(self, name: str):
        self.name = name
        self.in_order = 0
        self.out_of_order = 0
        self.lock = threading.Lock()
        self.server = serve(self.handler, "127.0.0.1", 0, compression=None, ping_interval=None,
                            max_size=64 * 1024 * 1024)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handler(self, ws):
        ws.send(f"{self.name} {ws.request.path}")
        expected = 0
        for m in ws:
            if isinstance(m, str):
                with self.lock:
                    if m == f"m{expected}":
                        self.in_order += 1
                    else:
                        self.out_of_order += 1
                expected += 1
            ws.send(m)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def backends():
    one, two = EchoBackend("one"), EchoBackend("two")
    yield one, two
    one.server.shutdown()
    two.server.shutdown()


def routes(one: EchoBackend, two: EchoBackend) -> str:
    return (f'[{{ prefix = "/", upstreams = [{{ url = "{one.url}", region = "1" }}, '
            f'{{ url = "{two.url}", region = "2" }}] }}]')


def stream_ordered(ws, n: int):
    """`m0`..`m{n}` out in batches of 500, each batch's echoes read back in order."""
    for start in range(0, n, 500):
        end = min(start + 500, n)
        for i in range(start, end):
            ws.send(f"m{i}")
        for i in range(start, end):
            assert ws.recv(timeout=RECV_TIMEOUT) == f"m{i}"


def test_ten_thousand_ordered_messages_each_way_through_the_proxy(make_server, backends):
    one, two = backends
    srv = make_server(env={"RINGRELAY_PROXY_ROUTES": routes(one, two)})
    _, a, b = pair(srv)
    ws = ws_connect(srv, "/live?x=1", additional_headers={"x-region": "1"})
    assert ws.recv(timeout=RECV_TIMEOUT) == "one /live?x=1"
    stream_ordered(ws, MESSAGES)
    big = os.urandom(300_000)
    ws.send(big)
    assert ws.recv(timeout=RECV_TIMEOUT) == big
    round_trip(a, b, "the control pair still flows")
    ws2 = ws_connect(srv, "/live?region=2")
    assert ws2.recv(timeout=RECV_TIMEOUT) == "two /live?region=2"
    stream_ordered(ws2, 10)
    assert (one.in_order, one.out_of_order, two.in_order) == (MESSAGES, 0, 10)
    t = totals(srv)
    assert t["proxy_upgrades"] == 2 and t["proxy_upgrades_open"] == 2, t
    ws.close()
    ws2.close()
    wait_for(lambda: totals(srv)["proxy_upgrades_open"] == 0, 10, "both upgrades to end")


def test_a_wss_client_through_the_proxy_is_copied_through_its_tls_session(make_server, backends, pki):
    one, two = backends
    srv = make_server(env=tls_env(pki, RINGRELAY_PROXY_ROUTES=routes(one, two)))
    ws = wss(srv, pki, "/live?region=2")
    assert ws.recv(timeout=RECV_TIMEOUT) == "two /live?region=2"
    stream_ordered(ws, MESSAGES)
    big = os.urandom(300_000)
    ws.send(big)
    assert ws.recv(timeout=RECV_TIMEOUT) == big
    assert (two.in_order, two.out_of_order) == (MESSAGES, 0)
    before = totals(srv)["proxy_upgrade_bytes_up"]
    assert before >= 300_000, before
    ws.close()
    wait_for(lambda: totals(srv)["proxy_upgrades_open"] == 0, 10, "the upgrade to end")
