"""Two ringrelay nodes and a real redis-server: Python websockets clients split across the
nodes exchange messages through the node-to-node hop, see events as on one node, and the
carried client is told 1012 when the owner node is killed.

Without redis-server these tests skip, unless RINGRELAY_REQUIRE_REDIS=1 (set by .ci/run).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
from websockets.exceptions import ConnectionClosed

from helpers import (Server, http_get, listening, recv_event, recv_event_of, stop_server, unique, wait_for,
                     ws_connect)

SECRET = "python-suite-secret-of-more-than-32-bytes"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url():
    if shutil.which("redis-server") is None:
        if os.environ.get("RINGRELAY_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required here (RINGRELAY_REQUIRE_REDIS=1)")
        pytest.skip("no redis-server (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), 5, "redis-server to listen")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def two_nodes(driver, redis_url):
    """Two nodes; a test may kill one (it is then not stopped at teardown)."""
    prefix = unique("py")
    started: list[Server] = []

    def node(node_id: str):
        srv = Server(driver=driver, workers=2, env={
            "RINGRELAY_CLUSTER_REDIS_URL": redis_url,
            "RINGRELAY_CLUSTER_NODE_ID": node_id,
            "RINGRELAY_CLUSTER_KEY_PREFIX": prefix,
            "RINGRELAY_CLUSTER_HEARTBEAT": "200ms",
            "RINGRELAY_CLUSTER_NODE_TTL": "1s",
            "RINGRELAY_CLUSTER_INTERNAL_LISTEN": "127.0.0.1:0",
            "RINGRELAY_CLUSTER_SECRET": SECRET,
        }).start()
        started.append(srv)
        return srv

    a, b = node("py1"), node("py2")
    for n in (a, b):
        wait_for(lambda: http_get(n.listen, "/health").json()["cluster"]["nodes"] == 2, 5,
                 "both nodes to see the fleet")
    yield a, b
    for srv in started:
        if srv.alive():
            stop_server(srv)


def test_a_pair_split_across_nodes_talks_through_the_hop(two_nodes):
    n1, n2 = two_nodes
    session = unique("split")
    desktop = ws_connect(n1, f"/v1/relay/{session}?role=desktop&events=1")
    assert recv_event(desktop)["peer_present"] is False
    mobile = ws_connect(n2, f"/v1/relay/{session}?role=mobile&events=1")
    assert recv_event(mobile)["peer_present"] is True
    assert recv_event_of(desktop, "peer_connected")["role"] == "mobile"
    for i in range(200):
        desktop.send(f"d{i} é")
        mobile.send(bytes([i % 256]) * (i * 331))
    for i in range(200):
        assert mobile.recv(timeout=5) == f"d{i} é"
        assert desktop.recv(timeout=5) == bytes([i % 256]) * (i * 331)
    mobile.close()
    ev = recv_event_of(desktop, "peer_disconnected")
    assert ev["role"] == "mobile" and ev["code"] == 1000
    desktop.close()


def test_the_carried_client_is_told_1012_when_the_owner_dies(two_nodes):
    n1, n2 = two_nodes
    session = unique("dies")
    owner_side = ws_connect(n1, f"/v1/relay/{session}?role=a")
    carried = ws_connect(n2, f"/v1/relay/{session}?role=b")
    owner_side.send("ping")
    assert carried.recv(timeout=5) == "ping"
    start = time.monotonic()
    n1.kill()
    with pytest.raises(ConnectionClosed) as closed:
        carried.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert time.monotonic() - start < 1.0


def test_the_durable_paths_keep_their_events_across_nodes(two_nodes):
    """`/desktop` and `/mobile` speak the Durable Object relay's events (issue 24) also when the
    two sides land on different nodes: the owner reads the carried request's path again."""
    n1, n2 = two_nodes
    session = unique("durable")
    desktop = ws_connect(n1, f"/desktop/{session}")
    ev = recv_event(desktop)
    assert (ev["type"], ev["clientType"], ev["sessionId"]) == ("connected", "desktop", session), ev
    mobile = ws_connect(n2, f"/mobile/{session}")
    ev = recv_event(mobile)
    assert (ev["type"], ev["clientType"], ev["sessionId"]) == ("connected", "mobile", session), ev
    assert recv_event(mobile)["type"] == "desktop_connected"
    assert recv_event(desktop)["type"] == "mobile_connected"
    mobile.send("through the hop")
    assert desktop.recv(timeout=5) == "through the hop"
    mobile.close()
    assert recv_event(desktop)["type"] == "mobile_disconnected"
    desktop.send("kept")
    ev = recv_event(desktop)
    assert (ev["type"], ev["error"]) == ("error", "Mobile device not connected"), ev
    assert isinstance(ev["timestamp"], int)
    desktop.close()
