"""Pairing, forwarding and events on the relay routes (websockets client + raw sockets)."""

import json
import os
import socket
import time

import pytest

from helpers import (EOF, OP_BINARY, OP_CONT, OP_TEXT, RECV_TIMEOUT, RawWS, assert_no_message, closed_code, pair,
                     recv_event, recv_event_of, round_trip, unique, ws_connect)


def now_ms():
    return int(time.time() * 1000)


def check_event_common(ev, typ):
    assert ev["type"] == typ, ev
    assert isinstance(ev["ts"], int), ev
    assert abs(ev["ts"] - now_ms()) < 60_000, f"ts should be ms since the epoch: {ev}"


# --------------------------------------------------------------------------------------------
# Forwarding
# --------------------------------------------------------------------------------------------

def test_text_and_binary_both_directions(server):
    _, a, b = pair(server)
    with a, b:
        a.send("hello from a")
        assert b.recv(timeout=RECV_TIMEOUT) == "hello from a"
        b.send("héllo ✓ from b")
        assert a.recv(timeout=RECV_TIMEOUT) == "héllo ✓ from b"
        blob = os.urandom(3000)
        a.send(blob)
        got = b.recv(timeout=RECV_TIMEOUT)
        assert isinstance(got, bytes) and got == blob
        b.send(b"\x00\xff\x00")
        got = a.recv(timeout=RECV_TIMEOUT)
        assert isinstance(got, bytes) and got == b"\x00\xff\x00"


def test_empty_messages_forwarded(server):
    _, a, b = pair(server)
    with a, b:
        a.send("")
        assert b.recv(timeout=RECV_TIMEOUT) == ""
        b.send(b"")
        assert a.recv(timeout=RECV_TIMEOUT) == b""


def test_order_kept_over_1000_messages(server):
    _, a, b = pair(server)
    with a, b:
        for i in range(1000):
            if i % 2:
                a.send(f"m{i}")
            else:
                a.send(i.to_bytes(4, "big"))
        for i in range(1000):
            got = b.recv(timeout=RECV_TIMEOUT)
            assert got == (f"m{i}" if i % 2 else i.to_bytes(4, "big")), (i, got)
        # and the other way, interleaved sends
        for i in range(1000):
            b.send(f"r{i}")
        for i in range(1000):
            assert a.recv(timeout=RECV_TIMEOUT) == f"r{i}"


def test_order_kept_both_directions_at_once(server):
    _, a, b = pair(server)
    with a, b:
        for i in range(300):
            a.send(f"a{i}")
            b.send(f"b{i}")
        for i in range(300):
            assert b.recv(timeout=RECV_TIMEOUT) == f"a{i}"
            assert a.recv(timeout=RECV_TIMEOUT) == f"b{i}"


def test_fragmented_message_arrives_whole(server):
    _, a, b = pair(server)
    with a, b:
        a.send(["frag", "mented ", "✓ text"])
        assert b.recv(timeout=RECV_TIMEOUT) == "fragmented ✓ text"
        b.send([b"\x01\x02", b"", b"\x03" * 1000])
        assert a.recv(timeout=RECV_TIMEOUT) == b"\x01\x02" + b"\x03" * 1000


def test_fragmented_raw_keeps_opcode_and_content(server):
    """Raw peers: fragments (with a multi-byte char split across them) come out as one message."""
    session = unique()
    with RawWS(server.listen, f"/v1/relay/{session}?role=a") as a, RawWS(server.listen, f"/v1/relay/{session}?role=b") as b:
        text = "añ€𝄞".encode()
        a.send_frame(OP_TEXT, text[:2], fin=False)
        a.send_frame(OP_CONT, text[2:5], fin=False)
        a.send_frame(OP_CONT, text[5:], fin=True)
        op, payload = b.recv_message()
        assert (op, payload) == (OP_TEXT, text)
        b.send_frame(OP_BINARY, b"xy", fin=False)
        b.send_frame(OP_CONT, b"z", fin=True)
        assert a.recv_message() == (OP_BINARY, b"xyz")


def test_sessions_are_isolated(server):
    _, a1, b1 = pair(server)
    _, a2, b2 = pair(server)
    with a1, b1, a2, b2:
        a1.send("one")
        a2.send("two")
        assert b2.recv(timeout=RECV_TIMEOUT) == "two"
        assert b1.recv(timeout=RECV_TIMEOUT) == "one"
        assert_no_message(b1, 0.3)
        assert_no_message(b2, 0.1)


def test_desktop_and_mobile_paths_pair(server):
    s = unique()
    with ws_connect(server, f"/desktop/{s}") as d:
        ev = recv_event(d)
        check_event_common(ev, "connected")
        assert (ev["role"], ev["session"], ev["peer_present"]) == ("desktop", s, False)
        with ws_connect(server, f"/mobile/{s}") as m:
            ev = recv_event(m)
            assert (ev["type"], ev["role"], ev["peer_present"]) == ("connected", "mobile", True)
            # The Durable Object relay's names on these paths (tests/durable_events.rs).
            assert recv_event(m)["type"] == "desktop_connected"
            ev = recv_event(d)
            assert (ev["type"], ev["role"]) == ("mobile_connected", "mobile")
            m.send("from mobile")
            assert d.recv(timeout=RECV_TIMEOUT) == "from mobile"
            d.send(b"from desktop")
            assert m.recv(timeout=RECV_TIMEOUT) == b"from desktop"


def test_compat_path_pairs_with_v1_relay_role(server):
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=desktop") as d, ws_connect(server, f"/mobile/{s}") as m:
        assert recv_event(m)["type"] == "connected"
        assert recv_event(m)["type"] == "desktop_connected"
        d.send("hi")
        assert m.recv(timeout=RECV_TIMEOUT) == "hi"


# --------------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------------

def test_default_roles_a_then_b(server):
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?events=1") as x:
        ev = recv_event(x)
        check_event_common(ev, "connected")
        assert ev == {**ev, "role": "a", "session": s, "peer_present": False}
        with ws_connect(server, f"/v1/relay/{s}?events=1") as y:
            ev = recv_event(y)
            assert (ev["type"], ev["role"], ev["peer_present"]) == ("connected", "b", True)
            ev = recv_event(x)
            check_event_common(ev, "peer_connected")
            assert ev["role"] == "b"


def test_default_role_takes_free_one(server):
    """With b taken explicitly, a connection without role gets a (and vice versa)."""
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=b&events=1") as y:
        assert recv_event(y)["role"] == "b"
        with ws_connect(server, f"/v1/relay/{s}?events=1") as x:
            assert recv_event(x)["role"] == "a"
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events=1") as x:
        assert recv_event(x)["role"] == "a"
        with ws_connect(server, f"/v1/relay/{s}?events=1") as y:
            assert recv_event(y)["role"] == "b"


def test_same_role_replaces_old_peer(server):
    s = unique()
    old = ws_connect(server, f"/v1/relay/{s}?role=a")
    other = ws_connect(server, f"/v1/relay/{s}?role=b&events=1")
    with old, other:
        assert recv_event(other)["type"] == "connected"
        old.send("from old")
        assert other.recv(timeout=RECV_TIMEOUT) == "from old"
        with ws_connect(server, f"/v1/relay/{s}?role=a") as new:
            assert closed_code(old) == 4001
            # the other peer stays connected and now talks to the new one
            deadline = time.monotonic() + RECV_TIMEOUT
            new.send("from new")
            while True:
                msg = other.recv(timeout=max(0.1, deadline - time.monotonic()))
                if msg == "from new":
                    break
                ev = json.loads(msg)  # events about the replacement are allowed
                assert ev["type"] in ("peer_disconnected", "peer_connected"), ev
            other.send("to new")
            assert new.recv(timeout=RECV_TIMEOUT) == "to new"


def test_replacement_close_reason_and_other_peer_not_closed(server):
    s = unique()
    with RawWS(server.listen, f"/v1/relay/{s}?role=a") as old, RawWS(server.listen, f"/v1/relay/{s}?role=b") as other:
        with RawWS(server.listen, f"/v1/relay/{s}?role=a") as new:
            f = old.expect_close()
            assert f.close_code == 4001
            old.send_close(4001)
            old.expect_eof()
            new.send_text("hello b")
            assert other.recv_message() == (OP_TEXT, b"hello b")
            other.send_text("hello new a")
            assert new.recv_message() == (OP_TEXT, b"hello new a")


def test_replacement_without_events_is_transparent_to_other(server):
    s = unique()
    other = ws_connect(server, f"/v1/relay/{s}?role=b")
    old = ws_connect(server, f"/v1/relay/{s}?role=a")
    with other, old:
        with ws_connect(server, f"/v1/relay/{s}?role=a") as new:
            assert closed_code(old) == 4001
            new.send("x")
            assert other.recv(timeout=RECV_TIMEOUT) == "x"  # nothing else before it


def test_peer_leaves_other_stays_and_new_peer_joins(server):
    s = unique()
    a = ws_connect(server, f"/v1/relay/{s}?role=a")
    with a:
        with ws_connect(server, f"/v1/relay/{s}?role=b") as b:
            round_trip(a, b)
        # b closed normally; a stays connected
        time.sleep(0.2)
        pong = a.ping()
        assert pong.wait(RECV_TIMEOUT), "a should still be connected"
        with ws_connect(server, f"/v1/relay/{s}?role=b") as b2:
            round_trip(a, b2)
        with ws_connect(server, f"/v1/relay/{s}") as b3:  # no role: takes the free one
            round_trip(a, b3)


def test_both_leave_then_session_reusable(server):
    s = unique()
    _, a, b = pair(server, session=s)
    with a, b:
        round_trip(a, b)
    _, a, b = pair(server, session=s)
    with a, b:
        round_trip(a, b)


def test_messages_while_alone_are_kept_for_the_next_peer(server):
    """Sent while alone: no error, and a peer of another role that joins gets them first, in
    order, then the live stream (docs/durability.md)."""
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events=1") as a:
        assert recv_event(a)["type"] == "connected"
        a.send("nobody here")
        a.send(b"nor here")
        assert_no_message(a, 0.5)
        with ws_connect(server, f"/v1/relay/{s}?role=b&events=1") as b:
            ev = recv_event(b)
            assert (ev["type"], ev["peer_present"]) == ("connected", True), ev
            assert b.recv(timeout=RECV_TIMEOUT) == "nobody here"
            assert b.recv(timeout=RECV_TIMEOUT) == b"nor here"
            a.send("live")
            assert b.recv(timeout=RECV_TIMEOUT) == "live"


def test_resume_after_a_cut_gets_exactly_the_rest(server):
    """A receiver that joined with resume=0 has its TCP connection cut (no close frame); it
    reconnects with resume=3 and gets messages 4 and 5 again, then the live stream."""
    s = unique()
    b = RawWS(server.listen, f"/v1/relay/{s}?role=b&events=1&resume=0")
    assert b.response.status == 101
    ev = json.loads(b.recv_frame().payload)
    assert (ev["type"], ev["next_seq"]) == ("connected", 1), ev
    with ws_connect(server, f"/v1/relay/{s}?role=a") as a:
        for i in range(1, 6):
            a.send(f"m{i}")
        got = []
        while len(got) < 5:
            f = b.recv_frame()
            msg = json.loads(f.payload) if f.payload.startswith(b"{") else None
            if msg is None:
                got.append(f.payload.decode())
        assert got == ["m1", "m2", "m3", "m4", "m5"]
        b.sock.shutdown(socket.SHUT_RDWR)
        b.sock.close()
        with ws_connect(server, f"/v1/relay/{s}?role=b&events=1&resume=3") as b2:
            ev = recv_event(b2)
            assert (ev["type"], ev["next_seq"]) == ("connected", 4), ev
            assert [b2.recv(timeout=RECV_TIMEOUT) for _ in range(2)] == ["m4", "m5"]
            a.send("m6")
            assert b2.recv(timeout=RECV_TIMEOUT) == "m6"


def test_message_while_alone_dropped_with_error_event_when_buffering_is_off(make_server):
    srv = make_server(env={"RINGRELAY_SESSION_BUFFER_BYTES": "0"})
    s = unique()
    with ws_connect(srv, f"/v1/relay/{s}?role=a&events=1") as a:
        assert recv_event(a)["type"] == "connected"
        a.send("nobody here")
        ev = recv_event(a)
        check_event_common(ev, "error")
        assert ev.get("error") == "peer_absent", ev


def test_message_while_alone_without_events_gets_nothing(server):
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a") as a:
        a.send("nobody here")
        a.send(b"nor here")
        assert_no_message(a, 0.5)
        assert a.ping().wait(RECV_TIMEOUT)


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

def test_events_full_lifecycle(server):
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=host&events=1") as h:
        ev = recv_event(h)
        check_event_common(ev, "connected")
        assert (ev["session"], ev["role"], ev["peer_present"]) == (s, "host", False)
        g = ws_connect(server, f"/v1/relay/{s}?role=guest&events=1")
        ev = recv_event(g)
        check_event_common(ev, "connected")
        assert (ev["session"], ev["role"], ev["peer_present"]) == (s, "guest", True)
        ev = recv_event(h)
        check_event_common(ev, "peer_connected")
        assert ev["role"] == "guest"
        g.send("data")
        assert h.recv(timeout=RECV_TIMEOUT) == "data"
        g.close(1000)
        ev = recv_event(h)
        check_event_common(ev, "peer_disconnected")
        assert (ev["role"], ev["code"]) == ("guest", 1000)


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4000, 4999])
def test_peer_disconnected_carries_close_code(server, code):
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events=1") as a:
        recv_event_of(a, "connected")
        with RawWS(server.listen, f"/v1/relay/{s}?role=b") as b:
            recv_event_of(a, "peer_connected")
            b.send_close(code, b"bye")
            f = b.expect_close()
            assert f.close_code == code
            ev = recv_event_of(a, "peer_disconnected")
            assert (ev["role"], ev["code"]) == ("b", code)


def test_peer_disconnected_1006_on_tcp_drop(server):
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events=1") as a:
        recv_event_of(a, "connected")
        b = RawWS(server.listen, f"/v1/relay/{s}?role=b")
        recv_event_of(a, "peer_connected")
        b.close()  # no close frame
        ev = recv_event_of(a, "peer_disconnected")
        assert (ev["role"], ev["code"]) == ("b", 1006)
        assert a.ping().wait(RECV_TIMEOUT)


def test_peer_disconnected_1006_on_tcp_reset(server):
    import socket
    import struct
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events=1") as a:
        recv_event_of(a, "connected")
        b = RawWS(server.listen, f"/v1/relay/{s}?role=b")
        recv_event_of(a, "peer_connected")
        b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b.close()  # RST
        ev = recv_event_of(a, "peer_disconnected")
        assert (ev["role"], ev["code"]) == ("b", 1006)


def test_empty_close_reports_1005_or_1000(server):
    """A close frame with no code: RFC 6455 says the status is then 1005 ('no status received')."""
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events=1") as a:
        recv_event_of(a, "connected")
        with RawWS(server.listen, f"/v1/relay/{s}?role=b") as b:
            recv_event_of(a, "peer_connected")
            b.send_close(None)
            b.expect_close()
            ev = recv_event_of(a, "peer_disconnected")
            assert ev["role"] == "b"
            assert ev["code"] in (1005, 1000), ev


def test_peer_disconnected_on_replacement(server):
    """When b is replaced, a (with events) hears of it in some form and keeps working with the new b."""
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events=1") as a:
        recv_event_of(a, "connected")
        old = ws_connect(server, f"/v1/relay/{s}?role=b")
        recv_event_of(a, "peer_connected")
        with old, ws_connect(server, f"/v1/relay/{s}?role=b") as new:
            assert closed_code(old) == 4001
            new.send("after")
            deadline = time.monotonic() + RECV_TIMEOUT
            while True:
                msg = a.recv(timeout=max(0.1, deadline - time.monotonic()))
                if msg == "after":
                    break
                ev = json.loads(msg)
                assert ev["type"] in ("peer_connected", "peer_disconnected"), ev


def test_no_events_without_flag(server):
    """Without events=1 a peer gets only its peer's messages: no connected/peer_* events."""
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a") as a:
        assert_no_message(a, 0.3)
        with ws_connect(server, f"/v1/relay/{s}?role=b") as b:
            b.send("first")
            assert a.recv(timeout=RECV_TIMEOUT) == "first"
            assert_no_message(b, 0.2)
        # b left: no peer_disconnected for a
        assert_no_message(a, 0.3)
        with ws_connect(server, f"/v1/relay/{s}?role=b") as b:
            b.send("second")
            assert a.recv(timeout=RECV_TIMEOUT) == "second"


@pytest.mark.parametrize("value", ["0", "no", "false"])
def test_events_off_values(server, value):
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events={value}") as a:
        assert_no_message(a, 0.3)


def test_events_only_for_the_peer_that_asked(server):
    s = unique()
    with ws_connect(server, f"/v1/relay/{s}?role=a&events=1") as a:
        recv_event_of(a, "connected")
        with ws_connect(server, f"/v1/relay/{s}?role=b") as b:
            recv_event_of(a, "peer_connected")
            a.send("x")
            assert b.recv(timeout=RECV_TIMEOUT) == "x"
            assert_no_message(b, 0.2)


def test_events_are_single_text_frames_with_json_objects(server):
    s = unique()
    with RawWS(server.listen, f"/v1/relay/{s}?role=a&events=1") as a:
        op, payload = a.recv_message()
        assert op == OP_TEXT
        ev = json.loads(payload)
        assert ev["type"] == "connected"
        with RawWS(server.listen, f"/v1/relay/{s}?role=b") as b:
            f = a.recv_data_frame()
            assert f.fin and f.opcode == OP_TEXT and f.rsv == 0 and not f.masked
            assert json.loads(f.payload)["type"] == "peer_connected"
            b.send_binary(b"bin")
            assert a.recv_message() == (OP_BINARY, b"bin")


# --------------------------------------------------------------------------------------------
# A peer that leaves in the middle of a fragmented message
# --------------------------------------------------------------------------------------------

def _start_fragmented_then_drop(server, s):
    b = RawWS(server.listen, f"/v1/relay/{s}?role=b")
    a = RawWS(server.listen, f"/v1/relay/{s}?role=a")
    a.send_frame(OP_TEXT, b"part1 ", fin=False)
    f = b.recv_frame()
    assert (f.opcode, f.fin, f.payload) == (OP_TEXT, False, b"part1 ")
    a.close()  # TCP drop mid-message: the message can never be finished
    return a, b


def test_peer_left_mid_message_receiver_closed(server):
    """b holds half a message that will never end; the relay must not hand it on as if whole.
    (ringrelay closes b with 4004 "peer left mid-message".)"""
    s = unique()
    a, b = _start_fragmented_then_drop(server, s)
    with b:
        f = b.expect_close()
        assert f.close_code == 4004, f
        b.send_close(4004)
        b.expect_eof()


def test_no_data_frames_after_relay_close(server):
    """RFC 6455 5.5.1: after sending a Close frame an endpoint MUST NOT send further data frames.
    b was sent close 4004 and has not answered yet (it may take up to session.close_timeout);
    a new peer a2 joins and sends: nothing may reach b after the close frame."""
    s = unique()
    a, b = _start_fragmented_then_drop(server, s)
    with b:
        f = b.expect_close()
        assert f.close_code == 4004, f
        with RawWS(server.listen, f"/v1/relay/{s}?role=a", expect_status=None) as a2:
            if a2.response.status == 101:
                a2.send_text("hello after close")
                a2.send_binary(b"bin after close")
            after = []
            try:
                while True:
                    f = b.recv_frame(timeout=1.0)
                    after.append((f.opcode, f.payload[:40]))
            except (TimeoutError, EOF):
                pass
            assert not [x for x in after if x[0] in (OP_TEXT, OP_BINARY, OP_CONT)], \
                f"data frames sent to b after the relay's close frame: {after}"


def test_receiver_replaced_mid_message_new_peer_never_sees_a_bare_continuation(server):
    """a is half-way through a fragmented message to b when b is replaced by b2: b2 must not get
    the rest as continuation frames without a start; the next whole message reaches b2."""
    s = unique()
    with RawWS(server.listen, f"/v1/relay/{s}?role=a") as a, RawWS(server.listen, f"/v1/relay/{s}?role=b") as b:
        a.send_frame(OP_TEXT, b"p1", fin=False)
        f = b.recv_frame()
        assert (f.opcode, f.fin) == (OP_TEXT, False)
        with RawWS(server.listen, f"/v1/relay/{s}?role=b") as b2:
            assert b.expect_close().close_code == 4001
            a.send_frame(OP_CONT, b"p2", fin=True)
            a.send_text("next")
            f = b2.recv_data_frame()
            assert f.opcode != OP_CONT, f"b2 got a continuation without a start: {f}"
            if f.payload != b"next":
                # the relay may have delivered the tail as a message of its own; it must be whole
                assert f.fin, f
                f = b2.recv_data_frame()
            assert (f.opcode, f.fin, f.payload) == (OP_TEXT, True, b"next")
