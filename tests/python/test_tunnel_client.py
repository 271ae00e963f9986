"""`ringrelay tunnel expose` against a fake relay (tunnel_helpers.FakeRelay) that speaks the
tunnel protocol of docs/tunnels.md, with a Python TCP echo service as the local service.
These pin the client's own behaviour (what it prints, what it asks for, when it retries and
when it gives up, how it drains); tests/python/test_tunnel_e2e.py runs it against the real
relay. Before: there was no tunnel client (`ringrelay tunnel` was an unknown subcommand)."""

from __future__ import annotations

import os
import socket
import time

import pytest

from helpers import closing_fixture
from tunnel_helpers import (EchoServer, FakeRelay, TunnelClient, check_half_close_both_ways,
                            echo_round, free_port, recv_all)


relay = closing_fixture(FakeRelay, "relay")
echo = closing_fixture(EchoServer, "echo")


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_prints_one_json_line_and_moves_bytes_both_ways(driver, relay, echo):
    cli = TunnelClient(relay.url, echo.local, driver)
    try:
        public = cli.public()
        assert cli.stdout == [f'{{"public":"127.0.0.1:{public[1]}"}}']
        data = os.urandom(3 << 20)
        assert echo_round(public, data) == data
        # Ten connections one after another, each with its own bytes.
        for i in range(10):
            assert echo_round(public, f"conn {i}".encode() * 100) == f"conn {i}".encode() * 100
        assert relay.control_paths == ["/v1/tunnel"]
        assert len(cli.stdout) == 1, cli.stdout
        assert cli.terminate() == 0
        # SIGTERM ends the tunnel with 1000, which releases the port at once.
        _wait(lambda: 1000 in relay.control_closes, 5, "the client's close 1000")
    finally:
        cli.kill()


def test_half_close_both_ways(driver, relay):
    check_half_close_both_ways(relay.url, driver)


def test_a_refusing_or_resetting_service_resets_the_public_connection(driver, relay):
    port = free_port()  # nothing listens there
    cli = TunnelClient(relay.url, f"127.0.0.1:{port}", driver)
    try:
        public = cli.public()
        t0 = time.monotonic()
        with socket.create_connection(public, timeout=5) as p:
            p.sendall(b"hello")
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                recv_all(p, 5)
        # Told at once, not after the relay's accept timeout.
        assert time.monotonic() - t0 < 3
        assert "the local service refused" in cli.log()
    finally:
        cli.kill()
    resetting = EchoServer(mode="reset")
    cli = TunnelClient(relay.url, resetting.local, driver)
    try:
        public = cli.public()
        with socket.create_connection(public, timeout=5) as p:
            p.sendall(b"hello there")
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                recv_all(p, 5)
        # The tunnel is still there for the next connection.
        assert cli.proc.poll() is None
    finally:
        cli.kill()
        resetting.close()


def test_a_non_loopback_local_is_refused_unless_allowed(driver, relay):
    cli = TunnelClient(relay.url, "192.0.2.1:22", driver)
    assert cli.wait(10) == 2
    assert "--allow-remote" in "\n".join(cli.stderr)
    assert relay.control_paths == []


@pytest.mark.parametrize("refusal", [("quota_exceeded", 1008), ("bad_request", 1008)])
def test_a_policy_close_exits_with_the_reason(driver, refusal):
    relay = FakeRelay(refuse_event=refusal)
    cli = TunnelClient(relay.url, "127.0.0.1:9", driver)
    try:
        assert cli.wait(10) == 1
        assert refusal[0] in cli.log()
        # Once (a resume key could have been stale; without one there is nothing to retry).
        assert len(relay.control_paths) == 1
        assert cli.stdout == []
    finally:
        cli.kill()
        relay.close()


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_not_retried(driver, status):
    relay = FakeRelay(refuse_status=status)
    cli = TunnelClient(relay.url, "127.0.0.1:9", driver)
    try:
        assert cli.wait(10) == 1
        assert str(status) in cli.log()
        assert len(relay.control_paths) == 1
    finally:
        cli.kill()
        relay.close()


def test_a_tunnel_taken_over_is_not_taken_back(driver):
    """Close 4001: another client resumed this tunnel with its key. Before, the client
    reconnected with the key and took the tunnel back, each pushing the other out in turn.
    Now it steps aside: exit 1, one attempt only."""
    relay = FakeRelay(refuse_event=("taken_over", 4001))
    cli = TunnelClient(relay.url, "127.0.0.1:9", driver)
    try:
        assert cli.wait(10) == 1
        assert "4001" in cli.log()
        assert len(relay.control_paths) == 1
    finally:
        cli.kill()
        relay.close()


def test_try_again_later_is_retried_with_backoff(driver):
    """1013 (at_capacity, port_unavailable) means retry: the client does, with back-off."""
    relay = FakeRelay(refuse_event=("at_capacity", 1013))
    cli = TunnelClient(relay.url, "127.0.0.1:9", driver)
    try:
        _wait(lambda: len(relay.control_paths) >= 3, 10, "three attempts")
        assert cli.proc.poll() is None
        assert cli.terminate() == 0
    finally:
        cli.kill()
        relay.close()


def test_reconnects_with_the_resume_key_and_keeps_open_connections(driver, relay, echo):
    cli = TunnelClient(relay.url, echo.local, driver)
    try:
        public = cli.public()
        open_conn = socket.create_connection(public, timeout=10)
        open_conn.sendall(b"before")
        assert open_conn.recv(100) == b"before"
        relay.drop_controls()
        _wait(lambda: len(relay.control_paths) >= 2, 10, "a reconnect")
        assert relay.control_paths[1].startswith("/v1/tunnel?resume=")
        # The connection in flight kept flowing, and new ones reach the same port.
        open_conn.sendall(b"during")
        assert open_conn.recv(100) == b"during"
        open_conn.close()
        _wait(lambda: len(relay.controls) >= 1, 5, "the new control connection")
        assert echo_round(public, b"after") == b"after"
        # The same port: nothing new printed.
        assert len(cli.stdout) == 1
    finally:
        cli.kill()


def test_a_restarted_client_resumes_from_its_resume_file(driver, relay, echo, tmp_path):
    path = tmp_path / "resume.json"
    extra = ["--resume-file", str(path)]
    cli = TunnelClient(relay.url, echo.local, driver, extra)
    try:
        public = cli.public()
        _wait(path.exists, 5, "the resume file")
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        cli.kill()  # SIGKILL: no clean close, the key stays on disk
    cli = TunnelClient(relay.url, echo.local, driver, extra)
    try:
        assert cli.public() == public
        assert relay.control_paths[1].startswith("/v1/tunnel?resume=")
        assert cli.terminate() == 0
        # A clean stop released the port: the key is worth nothing now and is removed.
        assert not path.exists()
    finally:
        cli.kill()


def test_sigterm_drains_open_connections_and_refuses_new_ones(driver, relay, echo):
    cli = TunnelClient(relay.url, echo.local, driver, ["--shutdown-grace", "3s"])
    try:
        public = cli.public()
        open_conn = socket.create_connection(public, timeout=10)
        open_conn.sendall(b"one")
        assert open_conn.recv(10) == b"one"
        cli.proc.terminate()
        _wait(lambda: "draining" in cli.log(), 5, "the drain")
        # The open connection still works during the drain ...
        open_conn.sendall(b"two")
        assert open_conn.recv(10) == b"two"
        # ... a new one is turned away at once ...
        with socket.create_connection(public, timeout=5) as p:
            p.sendall(b"x")
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                recv_all(p, 5)
        # ... and once the open one ends, the client leaves with 1000 and exit 0.
        open_conn.shutdown(socket.SHUT_WR)
        assert recv_all(open_conn) == b""
        open_conn.close()
        assert cli.wait(5) == 0
        assert 1000 in relay.control_closes
    finally:
        cli.kill()


def test_the_drain_deadline_resets_what_is_still_open(driver, relay, echo):
    cli = TunnelClient(relay.url, echo.local, driver, ["--shutdown-grace", "300ms"])
    try:
        public = cli.public()
        open_conn = socket.create_connection(public, timeout=10)
        open_conn.sendall(b"one")
        assert open_conn.recv(10) == b"one"
        t0 = time.monotonic()
        cli.proc.terminate()
        assert cli.wait(5) == 0
        assert time.monotonic() - t0 < 3
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            open_conn.sendall(b"x" * 100000)
            recv_all(open_conn, 5)
        open_conn.close()
    finally:
        cli.kill()


@pytest.mark.parametrize("test", ["bulk", "connect", "rr"])
def test_load_mode_tunnel_measures_through_a_tunnel(driver, relay, test):
    """`load --mode tunnel-echo` behind the client, `load --mode tunnel` on the public port:
    each test reports what it measures and no errors."""
    import json
    import subprocess
    from helpers import binary_path
    echo = subprocess.Popen([str(binary_path()), "load", "--mode", "tunnel-echo", "--listen", "127.0.0.1:0",
                             "--driver", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli = None
    try:
        local = echo.stdout.readline().split()[3]
        cli = TunnelClient(relay.url, local, driver)
        host, port = cli.public()
        extra = ["--rate", "200"] if test == "rr" else []
        out = subprocess.run([str(binary_path()), "load", "--mode", "tunnel", "--url", f"tcp://{host}:{port}",
                              "--tunnel-test", test, "--pairs", "2", "--size", "1024", "--warmup", "100ms",
                              "--duration", "500ms", "--driver", driver, "--json", *extra],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        assert r["test"] == test and r["errors"] == 0, r
        if test == "bulk":
            assert r["bytes"] > 0 and r["mb_per_s"] > 0
        else:
            assert r["ops"] > 0 and r["latency_us"]["count"] == r["ops"]
        if test == "rr":
            # The schedule is kept: about rate × duration round trips, not as many as fit.
            assert 50 <= r["ops"] <= 110, r
    finally:
        if cli:
            cli.kill()
        echo.kill()
        echo.wait()
