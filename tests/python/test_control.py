"""Control frames and timers: ping/pong per hop, relay pings, peer_timeout, idle_timeout, close handshake."""

import time

import pytest

from helpers import (EOF, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RECV_TIMEOUT, RawWS, Scenarios,
                     Server, closed_code, recv_event_of, stop_server, unique, ws_connect)


def raw_pair(server, session=None, events_a=False):
    session = session or unique()
    a = RawWS(server.listen, f"/v1/relay/{session}?role=a" + ("&events=1" if events_a else ""))
    b = RawWS(server.listen, f"/v1/relay/{session}?role=b")
    return session, a, b


# --------------------------------------------------------------------------------------------
# Pings from clients are answered by the relay, never forwarded
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"abc", bytes(range(125))])
def test_client_ping_answered_not_forwarded(server, payload):
    _, a, b = raw_pair(server)
    with a, b:
        a.send_frame(OP_PING, payload)
        f = a.recv_frame()
        assert (f.opcode, f.payload, f.fin) == (OP_PONG, payload, True)
        a.send_text("after ping")
        f = b.recv_frame()  # the very next frame b sees is the data, not a ping
        assert (f.opcode, f.payload) == (OP_TEXT, b"after ping")


def test_ping_between_fragments_answered_not_forwarded(server):
    _, a, b = raw_pair(server)
    with a, b:
        a.send_frame(OP_TEXT, b"x1", fin=False)
        a.send_frame(OP_PING, b"mid")
        a.send_frame(OP_CONT, b"x2", fin=True)
        f = a.recv_frame()
        assert (f.opcode, f.payload) == (OP_PONG, b"mid")
        got = []
        while True:
            f = b.recv_frame()
            assert f.opcode in (OP_TEXT, 0), f"b got a non-data frame {f}"
            got.append(f.payload)
            if f.fin:
                break
        assert b"".join(got) == b"x1x2"


def test_unsolicited_pong_ignored_not_forwarded(server):
    _, a, b = raw_pair(server)
    with a, b:
        a.send_frame(OP_PONG, b"unsolicited")
        a.send_text("data")
        f = b.recv_frame()
        assert (f.opcode, f.payload) == (OP_TEXT, b"data")
        b.send_text("back")
        f = a.recv_frame()
        assert (f.opcode, f.payload) == (OP_TEXT, b"back")


def test_close_not_forwarded_as_frame(server):
    """Close is per hop: when a closes, b gets no close frame (it stays connected)."""
    _, a, b = raw_pair(server)
    with a, b:
        a.send_close(1000)
        assert a.expect_close().close_code == 1000
        b.send_frame(OP_PING, b"alive?")
        f = b.recv_frame()
        assert (f.opcode, f.payload) == (OP_PONG, b"alive?")


def test_ping_with_websockets_client(server):
    _, a, b = raw_pair(server)
    a.close()
    b.close()
    with ws_connect(server, f"/v1/relay/{unique()}?role=a") as c:
        for i in range(5):
            assert c.ping(f"p{i}".encode()).wait(RECV_TIMEOUT)


def test_many_pings_between_data(server):
    _, a, b = raw_pair(server)
    with a, b:
        for i in range(50):
            a.send_frame(OP_PING, str(i).encode())
            a.send_text(f"d{i}")
        # RFC 6455 5.5.3: pongs may be coalesced (only the most recent ping answered), but every
        # pong echoes a ping's payload, in order, and the last ping is answered.
        answered = []
        while not answered or answered[-1] != 49:
            f = a.recv_frame()
            assert f.opcode == OP_PONG, f
            answered.append(int(f.payload))
        assert answered == sorted(set(answered)), answered
        for i in range(50):
            f = b.recv_frame()
            assert (f.opcode, f.payload) == (OP_TEXT, f"d{i}".encode())


# --------------------------------------------------------------------------------------------
# Relay pings, peer timeout and idle timeout.
#
# These wait on timers, so the scenarios of one driver run concurrently in background threads
# (started by the module fixture `timers`), and each test below checks one scenario's outcome.
# --------------------------------------------------------------------------------------------

KEEPALIVE_ENV = {"RINGRELAY_SESSION_PING_INTERVAL": "1s", "RINGRELAY_SESSION_PEER_TIMEOUT": "3s"}
IDLE_ENV = {"RINGRELAY_SESSION_IDLE_TIMEOUT": "2s", "RINGRELAY_SESSION_PING_INTERVAL": "1s",
            "RINGRELAY_SESSION_PEER_TIMEOUT": "3s"}


def _answering_peer(srv, path, seconds=4.5):
    """Answers every relay ping with a pong and sends nothing else; returns ping arrival times."""
    with RawWS(srv.listen, path) as ws:
        t0 = time.monotonic()
        times = []
        while time.monotonic() - t0 < seconds:
            f = ws.recv_frame(timeout=3)
            assert f.opcode == OP_PING, f"unexpected frame {f} after {time.monotonic() - t0:.1f}s"
            assert not f.masked and f.fin and f.rsv == 0 and len(f.payload) <= 125, f
            times.append(time.monotonic() - t0)
            ws.send_frame(OP_PONG, f.payload)
        # still connected: our own ping is answered
        ws.send_frame(OP_PING, b"still")
        while True:
            f = ws.recv_frame()
            if f.opcode == OP_PING:
                ws.send_frame(OP_PONG, f.payload)
                continue
            assert (f.opcode, f.payload) == (OP_PONG, b"still"), f
            break
        return times


def _silent_peer(srv, path):
    """Sends nothing at all (not even pongs); returns (seconds until dropped, opcodes seen, close code)."""
    with RawWS(srv.listen, path) as ws:
        t0 = time.monotonic()
        frames, code = [], None
        try:
            while True:
                f = ws.recv_frame(timeout=7)
                frames.append(f.opcode)
                if f.opcode == OP_CLOSE:
                    code = f.close_code
                    ws.expect_eof(3)
                    break
        except EOF:
            pass
        return time.monotonic() - t0, frames, code


def _silent_peer_seen_by_other(srv):
    s = unique()
    with ws_connect(srv, f"/v1/relay/{s}?role=a&events=1") as a:  # the websockets client answers pings
        recv_event_of(a, "connected")
        with RawWS(srv.listen, f"/v1/relay/{s}?role=b"):
            recv_event_of(a, "peer_connected")
            ev = recv_event_of(a, "peer_disconnected", timeout=7)
            assert ev["role"] == "b" and isinstance(ev["code"], int), ev
        assert a.ping().wait(RECV_TIMEOUT), "the answering peer should still be connected"
    return ev


def _idle_both_closed(srv):
    s = unique()
    with ws_connect(srv, f"/v1/relay/{s}?role=a") as a, ws_connect(srv, f"/v1/relay/{s}?role=b") as b:
        a.send("one message")
        assert b.recv(timeout=RECV_TIMEOUT) == "one message"
        t0 = time.monotonic()
        ca = closed_code(a, timeout=7)
        cb = closed_code(b, timeout=3)
        return ca, cb, time.monotonic() - t0


def _idle_kept_by_messages(srv):
    s = unique()
    with ws_connect(srv, f"/v1/relay/{s}?role=a") as a, ws_connect(srv, f"/v1/relay/{s}?role=b") as b:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 3.5:  # longer than idle_timeout, with traffic every 0.5 s
            (a if i % 2 else b).send(f"m{i}")
            assert (b if i % 2 else a).recv(timeout=RECV_TIMEOUT) == f"m{i}"
            i += 1
            time.sleep(0.5)
        t1 = time.monotonic()
        return closed_code(a, timeout=7), closed_code(b, timeout=3), time.monotonic() - t1


def _idle_despite_pings(srv):
    s = unique()
    with ws_connect(srv, f"/v1/relay/{s}?role=a", ping_interval=0.5, ping_timeout=5) as a, \
            ws_connect(srv, f"/v1/relay/{s}?role=b") as b:
        t0 = time.monotonic()
        return closed_code(a, timeout=7), closed_code(b, timeout=3), time.monotonic() - t0


def _idle_raw(srv):
    s = unique()
    codes = []
    with RawWS(srv.listen, f"/v1/relay/{s}?role=a") as a, RawWS(srv.listen, f"/v1/relay/{s}?role=b") as b:
        a.send_binary(b"x")
        assert b.recv_message() == (OP_BINARY, b"x")
        for ws in (a, b):
            deadline = time.monotonic() + 7
            while True:  # answer pings while waiting for the close
                f = ws.recv_frame(max(0.1, deadline - time.monotonic()))
                if f.opcode == OP_PING:
                    ws.send_frame(OP_PONG, f.payload)
                    continue
                break
            assert f.opcode == OP_CLOSE, f
            codes.append(f.close_code)
            ws.send_close(f.close_code)
            ws.expect_eof(3)
    return codes


def _idle_alone(srv):
    """A lone peer (no partner ever) is also idle: closed with 4002."""
    with ws_connect(srv, f"/v1/relay/{unique()}?role=a") as a:
        t0 = time.monotonic()
        return closed_code(a, timeout=7), time.monotonic() - t0


@pytest.fixture(scope="module")
def timers(driver):
    keep = Server(driver=driver, env=KEEPALIVE_ENV).start()
    idle = Server(driver=driver, env=IDLE_ENV).start()
    sc = Scenarios()
    sc.start("answering_relay", _answering_peer, keep, f"/v1/relay/{unique()}?role=a")
    sc.start("answering_echo", _answering_peer, keep, "/v1/echo")
    sc.start("silent_relay", _silent_peer, keep, f"/v1/relay/{unique()}?role=a")
    sc.start("silent_relay_paired", _silent_peer_seen_by_other, keep)
    sc.start("silent_echo", _silent_peer, keep, "/v1/echo")
    sc.start("idle_both", _idle_both_closed, idle)
    sc.start("idle_kept", _idle_kept_by_messages, idle)
    sc.start("idle_pings", _idle_despite_pings, idle)
    sc.start("idle_raw", _idle_raw, idle)
    sc.start("idle_alone", _idle_alone, idle)
    yield sc
    sc.shutdown()
    stop_server(keep)
    stop_server(idle)


@pytest.mark.parametrize("route", ["relay", "echo"])
def test_relay_sends_pings(timers, route):
    times = timers.result(f"answering_{route}")
    assert times, "no ping from the relay"
    assert times[0] <= 2.0, f"first ping after {times[0]:.2f}s with ping_interval=1s"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.5 <= g <= 2.0 for g in gaps), f"ping gaps {gaps}"


@pytest.mark.parametrize("route", ["relay", "echo"])
def test_peer_answering_pings_is_kept(timers, route):
    times = timers.result(f"answering_{route}")
    assert len(times) >= 3, times  # it lived 4.5 s > peer_timeout = 3 s


@pytest.mark.parametrize("route", ["relay", "echo"])
def test_silent_peer_dropped_after_peer_timeout(timers, route):
    elapsed, frames, code = timers.result(f"silent_{route}")
    assert 2.5 <= elapsed <= 5.5, f"dropped after {elapsed:.2f}s, expected about 3 s (frames {frames})"
    assert OP_PING in frames, "the relay should have pinged the silent peer before dropping it"


def test_silent_peer_drop_seen_by_other_peer(timers):
    timers.result("silent_relay_paired")


def test_idle_session_closes_both_peers_4002(timers):
    ca, cb, elapsed = timers.result("idle_both")
    assert (ca, cb) == (4002, 4002)
    assert 1.5 <= elapsed <= 4.5, f"closed after {elapsed:.2f}s for a 2s idle timeout"


def test_messages_keep_session_alive(timers):
    ca, cb, elapsed = timers.result("idle_kept")
    assert (ca, cb) == (4002, 4002)
    assert 1.0 <= elapsed <= 4.5, elapsed


def test_pings_do_not_count_as_activity(timers):
    """The websockets clients answer the relay's 1 s pings, and one also pings: still closed with 4002."""
    ca, cb, elapsed = timers.result("idle_pings")
    assert (ca, cb) == (4002, 4002)
    assert 1.5 <= elapsed <= 4.5, elapsed


def test_idle_close_raw_frames(timers):
    assert timers.result("idle_raw") == [4002, 4002]


def test_idle_lone_peer_closed_4002(timers):
    code, elapsed = timers.result("idle_alone")
    assert code == 4002
    assert 1.5 <= elapsed <= 4.5, elapsed


# --------------------------------------------------------------------------------------------
# Close handshake
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["relay", "echo"])
@pytest.mark.parametrize("code", [1000, 1001, 3000, 4000, 4999])
def test_client_close_code_echoed(server, route, code):
    path = f"/v1/relay/{unique()}?role=a" if route == "relay" else "/v1/echo"
    with RawWS(server.listen, path) as ws:
        ws.send_close(code, b"bye")
        f = ws.expect_close()
        assert f.close_code == code
        assert not f.masked
        ws.expect_eof()


@pytest.mark.parametrize("route", ["relay", "echo"])
def test_client_close_with_websockets(server, route):
    path = f"/v1/relay/{unique()}" if route == "relay" else "/v1/echo"
    ws = ws_connect(server, path)
    ws.close(1000, "done")
    assert ws.close_code == 1000


def test_no_data_after_close(server):
    """After the client's close, the relay must not send data frames (and must not forward later frames)."""
    _, a, b = raw_pair(server)
    with a, b:
        a.send_close(1000)
        a.send_text("after close")  # must be ignored
        f = a.expect_close()
        assert f.close_code == 1000
        b.send_frame(OP_PING, b"x")
        f = b.recv_frame()
        assert f.opcode == OP_PONG  # b did not receive "after close"
