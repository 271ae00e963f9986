"""End to end: a Python TCP service behind `ringrelay tunnel expose`, the real relay with
tunnels on, clients on the public port. Before: there was no tunnel (GET /v1/tunnel was 404
and `ringrelay tunnel` an unknown subcommand).

The big transfer is 64 MiB by default (a debug build moves it in a few seconds);
RINGRELAY_TUNNEL_BIG=1 makes it the issue's 1 GiB."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import threading
import time

import pytest

from helpers import closing_fixture
from tunnel_helpers import (EchoServer, TunnelClient, check_half_close_both_ways,
                            echo_round, free_port, recv_all)

BIG = (1 << 30) if os.environ.get("RINGRELAY_TUNNEL_BIG") == "1" else (64 << 20)


@pytest.fixture
def relay(make_server):
    base = random.randrange(30000, 31900, 20)
    return make_server(env={"RINGRELAY_TUNNEL_ENABLED": "true",
                            "RINGRELAY_TUNNEL_PORTS": f"{base}-{base + 19}",
                            "RINGRELAY_TUNNEL_RECONNECT_GRACE": "20s",
                            # 200 at once: over the default 100 per tunnel.
                            "RINGRELAY_TUNNEL_MAX_CONNECTIONS_PER_TUNNEL": "256"})


echo = closing_fixture(EchoServer, "echo")


def _url(srv) -> str:
    return f"ws://127.0.0.1:{srv.port}"


def test_big_transfer_through_one_connection_checked_by_sha256(driver, relay, echo):
    cli = TunnelClient(_url(relay), echo.local, driver)
    try:
        public = cli.public()
        sent, got = hashlib.sha256(), hashlib.sha256()
        received = 0
        with socket.create_connection(public, timeout=30) as s:
            def send():
                chunk = os.urandom(1 << 20)
                for i in range(BIG >> 20):
                    block = chunk[i % 7:] + chunk[:i % 7]  # not the same MiB over and over
                    sent.update(block)
                    s.sendall(block)
                s.shutdown(socket.SHUT_WR)
            t = threading.Thread(target=send)
            t.start()
            s.settimeout(30)
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got.update(b)
                received += len(b)
            t.join()
        assert received == BIG
        assert got.hexdigest() == sent.hexdigest()
    finally:
        cli.kill()


def test_200_concurrent_connections_each_with_its_own_data(driver, relay, echo):
    cli = TunnelClient(_url(relay), echo.local, driver)
    try:
        host, port = cli.public()

        async def one(i: int):
            r, w = await asyncio.open_connection(host, port)
            data = f"{i}:".encode() + os.urandom(4096 + i)
            w.write(data)
            await w.drain()
            w.write_eof()
            back = await r.read()
            w.close()
            return back == data

        async def all_():
            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 60)

        results = asyncio.run(all_())
        assert all(results), f"{results.count(False)} of 200 got back other bytes"
    finally:
        cli.kill()


def test_half_close_both_ways(driver, relay):
    check_half_close_both_ways(_url(relay), driver)


def _ends_with_nothing(p: socket.socket):
    """The public connection ends (a reset, or a FIN: the relay may pass the client's reset on
    as either) without a byte of answer."""
    try:
        assert recv_all(p, 5) == b""
    except (ConnectionResetError, BrokenPipeError):
        pass


def test_the_local_service_refusing_or_resetting(driver, relay, echo):
    cli = TunnelClient(_url(relay), f"127.0.0.1:{free_port()}", driver)
    try:
        public = cli.public()
        t0 = time.monotonic()
        with socket.create_connection(public, timeout=5) as p:
            p.sendall(b"hello")
            _ends_with_nothing(p)
        # At once, not after the relay's accept timeout (10 s).
        assert time.monotonic() - t0 < 3
    finally:
        cli.kill()
    resetting = EchoServer(mode="reset")
    cli = TunnelClient(_url(relay), resetting.local, driver)
    try:
        public = cli.public()
        with socket.create_connection(public, timeout=5) as p:
            p.sendall(b"hello there")
            _ends_with_nothing(p)
        assert cli.proc.poll() is None
        # The service saw the connection (the reset is its own), and the client lives on.
        assert resetting.accepted == 1
    finally:
        cli.kill()
        resetting.close()


def test_a_killed_client_restarted_in_the_grace_gets_its_port_back(driver, relay, echo, tmp_path):
    """SIGKILL (no close 1000): the relay keeps the port for the grace; the restarted client
    resumes with the key from --resume-file. A second tunnel's open connection (the control
    pair) keeps flowing all along."""
    other = TunnelClient(_url(relay), echo.local, driver)
    path = tmp_path / "resume.json"
    cli = TunnelClient(_url(relay), echo.local, driver, ["--resume-file", str(path)])
    try:
        control = socket.create_connection(other.public(), timeout=10)
        control.sendall(b"c1")
        assert control.recv(10) == b"c1"
        public = cli.public()
        assert echo_round(public, b"first life") == b"first life"
        cli.kill()
        control.sendall(b"c2")
        assert control.recv(10) == b"c2"
        cli = TunnelClient(_url(relay), echo.local, driver, ["--resume-file", str(path)])
        assert cli.public() == public
        assert echo_round(public, b"second life") == b"second life"
        control.sendall(b"c3")
        assert control.recv(10) == b"c3"
        control.close()
    finally:
        cli.kill()
        other.kill()


def test_without_tunnels_enabled_the_client_exits_with_the_reason(driver, server):
    cli = TunnelClient(_url(server), "127.0.0.1:9", driver)
    assert cli.wait(10) == 1
    assert "404" in cli.log()
