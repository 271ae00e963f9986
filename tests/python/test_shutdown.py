"""SIGTERM / SIGINT: every WebSocket gets 1001, the process exits 0."""

import signal
import socket
import time

import pytest

from helpers import (EOF, OP_BINARY, OP_CONT, OP_TEXT, RawWS, closed_code, recv_event_of, round_trip, unique,
                     upgrade_request, ws_connect)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_paired_clients_get_1001_and_exit_0(make_server, sig):
    srv = make_server()
    s = unique()
    a = ws_connect(srv, f"/v1/relay/{s}?role=a")
    b = ws_connect(srv, f"/v1/relay/{s}?role=b")
    with a, b:
        round_trip(a, b)
        srv.proc.send_signal(sig)
        assert closed_code(a) == 1001
        assert closed_code(b) == 1001
    srv.proc.wait(15)
    assert srv.proc.returncode == 0, srv.log()[-3000:]


def test_every_kind_of_connection_gets_1001(make_server):
    srv = make_server(workers=3)
    lone = ws_connect(srv, f"/v1/relay/{unique()}?role=a&events=1")
    recv_event_of(lone, "connected")
    echo = ws_connect(srv, "/v1/echo")
    s = unique()
    d = ws_connect(srv, f"/desktop/{s}")
    m = ws_connect(srv, f"/mobile/{s}")
    with lone, echo, d, m:
        recv_event_of(d, "mobile_connected")
        srv.proc.send_signal(signal.SIGTERM)
        for ws in (lone, echo, d, m):
            assert closed_code(ws) == 1001
    srv.proc.wait(15)
    assert srv.proc.returncode == 0


def test_raw_clients_see_1001_frame_then_eof(make_server):
    srv = make_server()
    s = unique()
    with RawWS(srv.listen, f"/v1/relay/{s}?role=a") as a, RawWS(srv.listen, f"/v1/relay/{s}?role=b") as b:
        a.send_text("hi")
        assert b.recv_message() == (OP_TEXT, b"hi")
        srv.proc.send_signal(signal.SIGTERM)
        for ws in (a, b):
            f = ws.expect_close()
            assert f.close_code == 1001 and not f.masked
            ws.send_close(1001)
            ws.expect_eof(12)
    srv.proc.wait(15)
    assert srv.proc.returncode == 0


def test_shutdown_with_unanswered_close_exits_within_grace(make_server):
    """Clients that never answer the 1001 close: the relay still exits 0 after shutdown_grace."""
    srv = make_server(env={"RINGRELAY_SHUTDOWN_GRACE": "2s"})
    s = unique()
    with RawWS(srv.listen, f"/v1/relay/{s}?role=a") as a, RawWS(srv.listen, f"/v1/relay/{s}?role=b") as b:
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert a.expect_close().close_code == 1001
        assert b.expect_close().close_code == 1001
        srv.proc.wait(10)
        assert srv.proc.returncode == 0
        assert time.monotonic() - t0 < 8


def test_no_new_connections_after_sigterm(make_server):
    srv = make_server(env={"RINGRELAY_SHUTDOWN_GRACE": "3s"})
    with RawWS(srv.listen, f"/v1/relay/{unique()}?role=a") as a:  # keeps the relay draining
        srv.proc.send_signal(signal.SIGTERM)
        assert a.expect_close().close_code == 1001
        time.sleep(0.2)
        try:
            with socket.create_connection(srv.listen, timeout=2) as c:
                c.sendall(upgrade_request(srv.listen, "/v1/echo"))
                c.settimeout(3)
                try:
                    got = c.recv(4096)
                except (ConnectionResetError, socket.timeout):
                    got = b""
                assert not got.startswith(b"HTTP/1.1 101"), f"upgrade accepted after SIGTERM: {got!r}"
        except ConnectionRefusedError:
            pass
    srv.proc.wait(10)
    assert srv.proc.returncode == 0


def test_no_data_forwarded_after_shutdown_close(make_server):
    """RFC 6455 5.5.1: after the relay's 1001 close frame to b, no data frame may follow to b,
    even if a (which has not answered its own 1001 yet) keeps sending."""
    srv = make_server(env={"RINGRELAY_SHUTDOWN_GRACE": "2s"})
    s = unique()
    with RawWS(srv.listen, f"/v1/relay/{s}?role=a") as a, RawWS(srv.listen, f"/v1/relay/{s}?role=b") as b:
        srv.proc.send_signal(signal.SIGTERM)
        assert b.expect_close().close_code == 1001
        try:
            for i in range(5):
                a.send_text(f"late {i}")
        except OSError:
            pass
        after = []
        try:
            while True:
                f = b.recv_frame(timeout=1.0)
                after.append((f.opcode, f.payload[:30]))
        except (TimeoutError, EOF):
            pass
        assert not [x for x in after if x[0] in (OP_TEXT, OP_BINARY, OP_CONT)], after
    srv.proc.wait(10)
    assert srv.proc.returncode == 0
