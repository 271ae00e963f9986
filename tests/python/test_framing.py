"""Framing violations on a raw socket after a valid upgrade.

Each case must make the relay send a close frame with the right code and then close the TCP
connection, on the echo route and on the relay route (alone, or paired with a well-behaved peer).
Meanwhile a separate healthy pair on the same server keeps working (a round trip afterwards).
"""


import time

import pytest
from websockets.exceptions import ConnectionClosed

from helpers import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RECV_TIMEOUT, RawWS,
                     check_healthy, close_payload, closed_code, send_lenient, encode_frame, expect_violation_close, unique, ws_connect)


def partner_state(ws) -> "str | int | None":
    """'open' if a ping is answered, else the close code the relay sent."""
    from websockets.protocol import State
    try:
        pong = ws.ping()
    except ConnectionClosed:
        return closed_code(ws)
    deadline = time.monotonic() + RECV_TIMEOUT
    while time.monotonic() < deadline:
        if pong.wait(0.05):
            return "open"
        if ws.state is not State.OPEN:
            return closed_code(ws)
    return "no pong and not closed"


def frames(*fs):
    return b"".join(fs)


LIMIT = 1048576  # default limits.max_message_bytes

# name -> (bytes to send, expected close code). Client frames are masked unless stated.
CASES = {
    # masking and reserved bits
    "unmasked-text": (encode_frame(OP_TEXT, b"hello", mask=False), 1002),
    "unmasked-ping": (encode_frame(OP_PING, b"p", mask=False), 1002),
    "unmasked-close": (encode_frame(OP_CLOSE, close_payload(1000), mask=False), 1002),
    "rsv1-text": (encode_frame(OP_TEXT, b"x", rsv=4), 1002),
    "rsv2-binary": (encode_frame(OP_BINARY, b"x", rsv=2), 1002),
    "rsv3-text": (encode_frame(OP_TEXT, b"x", rsv=1), 1002),
    "rsv-all-ping": (encode_frame(OP_PING, b"x", rsv=7), 1002),
    "rsv1-continuation": (frames(encode_frame(OP_TEXT, b"a", fin=False), encode_frame(OP_CONT, b"b", rsv=4)), 1002),
    # reserved opcodes
    **{f"opcode-{op:#x}": (encode_frame(op, b"x"), 1002) for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)},
    "opcode-3-empty": (encode_frame(3, b""), 1002),
    "opcode-0xb-after-text": (frames(encode_frame(OP_TEXT, b"ok"), encode_frame(0xB, b"")), 1002),
    # control frames
    "fragmented-ping": (encode_frame(OP_PING, b"p", fin=False), 1002),
    "fragmented-pong": (encode_frame(OP_PONG, b"p", fin=False), 1002),
    "fragmented-close": (encode_frame(OP_CLOSE, close_payload(1000), fin=False), 1002),
    "ping-126-bytes": (encode_frame(OP_PING, b"p" * 126), 1002),
    "pong-126-bytes": (encode_frame(OP_PONG, b"p" * 126), 1002),
    "close-126-bytes": (encode_frame(OP_CLOSE, close_payload(1000, b"r" * 124)), 1002),
    "ping-64bit-length": (encode_frame(OP_PING, b"p" * 200, length_form="64"), 1002),
    # fragmentation
    "continuation-without-start": (encode_frame(OP_CONT, b"x"), 1002),
    "final-continuation-without-start": (encode_frame(OP_CONT, b"x", fin=True), 1002),
    "continuation-after-complete-message": (frames(encode_frame(OP_TEXT, b"done"), encode_frame(OP_CONT, b"x")), 1002),
    "text-inside-fragmented-text": (frames(encode_frame(OP_TEXT, b"a", fin=False), encode_frame(OP_TEXT, b"b")), 1002),
    "binary-inside-fragmented-text": (frames(encode_frame(OP_TEXT, b"a", fin=False), encode_frame(OP_BINARY, b"b")), 1002),
    "text-inside-fragmented-binary": (frames(encode_frame(OP_BINARY, b"a", fin=False),
                                             encode_frame(OP_CONT, b"b", fin=False), encode_frame(OP_TEXT, b"c")), 1002),
    # close frames
    **{f"close-code-{c}": (encode_frame(OP_CLOSE, close_payload(c)), 1002)
       for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)},
    "close-1-byte-payload": (encode_frame(OP_CLOSE, b"\x03"), 1002),
    "close-invalid-utf8-reason": (encode_frame(OP_CLOSE, close_payload(1000, b"bad \xff reason")), 1007),
    "close-reason-surrogate": (encode_frame(OP_CLOSE, close_payload(1000, b"\xed\xa0\x80")), 1007),
    "close-reason-truncated": (encode_frame(OP_CLOSE, close_payload(1000, b"ok \xe2\x82")), 1007),
    # UTF-8
    "text-invalid-byte-ff": (encode_frame(OP_TEXT, b"abc\xffdef"), 1007),
    "text-surrogate": (encode_frame(OP_TEXT, b"\xed\xa0\x80"), 1007),
    "text-overlong-slash": (encode_frame(OP_TEXT, b"\xc0\xaf"), 1007),
    "text-overlong-3byte": (encode_frame(OP_TEXT, b"\xe0\x80\xaf"), 1007),
    "text-above-10ffff": (encode_frame(OP_TEXT, b"\xf4\x90\x80\x80"), 1007),
    "text-f5-lead": (encode_frame(OP_TEXT, b"\xf5\x80\x80\x80"), 1007),
    "text-lone-continuation": (encode_frame(OP_TEXT, b"a\x80b"), 1007),
    "text-ends-mid-code-point": (encode_frame(OP_TEXT, b"ok \xe2\x82"), 1007),
    "text-ends-mid-4byte": (encode_frame(OP_TEXT, b"\xf0\x9f\x98"), 1007),
    "fragmented-text-invalid-in-second": (frames(encode_frame(OP_TEXT, "κό".encode(), fin=False),
                                                 encode_frame(OP_CONT, b"\xed\xa0\x80", fin=True)), 1007),
    "fragmented-text-invalid-across-boundary": (frames(encode_frame(OP_TEXT, b"ab\xce", fin=False),
                                                       encode_frame(OP_CONT, b"\xff", fin=True)), 1007),
    "fragmented-text-ends-mid-code-point": (frames(encode_frame(OP_TEXT, b"ab", fin=False),
                                                   encode_frame(OP_CONT, b"\xe2\x82", fin=True)), 1007),
    "fragmented-text-empty-final-after-partial": (frames(encode_frame(OP_TEXT, b"\xf0\x9f", fin=False),
                                                         encode_frame(OP_CONT, b"", fin=True)), 1007),
    "fragmented-text-invalid-first-fragment": (frames(encode_frame(OP_TEXT, b"\xc0\xaf", fin=False),
                                                      encode_frame(OP_CONT, b"ok", fin=True)), 1007),
    # lengths
    "length-64bit-top-bit": (encode_frame(OP_BINARY, b"", length=(1 << 63) + 5, length_form="64"), 1002),
    "length-64bit-all-ones": (encode_frame(OP_BINARY, b"", length=(1 << 64) - 1, length_form="64"), 1002),
    "length-over-limit-header-only": (encode_frame(OP_BINARY, b"", length=1 << 40, length_form="64"), 1009),
    "message-over-limit-by-one": (encode_frame(OP_BINARY, b"\x00" * (LIMIT + 1)), 1009),
    "text-over-limit-by-one": (encode_frame(OP_TEXT, b"a" * (LIMIT + 1)), 1009),
    "fragmented-over-limit": (frames(encode_frame(OP_BINARY, b"\x01" * (LIMIT // 2), fin=False),
                                     encode_frame(OP_CONT, b"\x02" * (LIMIT // 2), fin=False),
                                     encode_frame(OP_CONT, b"\x03" * 10, fin=True)), 1009),
    "many-small-fragments-over-limit": (frames(*[encode_frame(OP_TEXT if i == 0 else OP_CONT, b"z" * 65536, fin=False)
                                                 for i in range(17)], encode_frame(OP_CONT, b"", fin=True)), 1009),
}

ROUTES = ["echo", "relay-alone", "relay-paired"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(CASES))
def test_violation_closes_with_code(server, healthy_pair, route, case):
    data, code = CASES[case]
    partner = None
    if route == "echo":
        ws = RawWS(server.listen, "/v1/echo")
    else:
        session = unique("viol")
        if route == "relay-paired":
            partner = ws_connect(server, f"/v1/relay/{session}?role=b", max_queue=None)
        ws = RawWS(server.listen, f"/v1/relay/{session}?role=a")
    try:
        send_lenient(ws, data)
        expect_violation_close(ws, code)
        if partner is not None:
            # The well-behaved peer stays connected, unless it had been handed part of the message
            # that will now never be finished: then the relay closes it with 4004.
            state = partner_state(partner)
            assert state == "open" or state == 4004, f"partner: {state}"
    finally:
        ws.close()
        if partner is not None:
            partner.close()
    check_healthy(healthy_pair)


@pytest.mark.parametrize("case", ["text-surrogate", "unmasked-text", "opcode-0x3"])
def test_violation_after_valid_traffic(server, healthy_pair, case):
    """A connection that worked first, then misbehaves, is closed the same way."""
    data, code = CASES[case]
    with RawWS(server.listen, "/v1/echo") as ws:
        for i in range(5):
            ws.send_text(f"ok {i}")
            assert ws.recv_message() == (OP_TEXT, f"ok {i}".encode())
        ws.send_raw(data)
        expect_violation_close(ws, code)
    check_healthy(healthy_pair)


def test_violation_close_on_relay_reports_to_peer(server):
    """When a peer is closed for a violation, its partner (events=1) hears peer_disconnected."""
    from helpers import recv_event_of
    session = unique("viol")
    with ws_connect(server, f"/v1/relay/{session}?role=b&events=1") as partner:
        recv_event_of(partner, "connected")
        with RawWS(server.listen, f"/v1/relay/{session}?role=a") as ws:
            recv_event_of(partner, "peer_connected")
            ws.send_raw(encode_frame(OP_TEXT, b"x", mask=False))
            expect_violation_close(ws, 1002)
        ev = recv_event_of(partner, "peer_disconnected")
        assert ev["role"] == "a"
        assert isinstance(ev["code"], int)


def test_message_exactly_at_limit_accepted(server):
    payload = bytes(range(256)) * (LIMIT // 256)
    assert len(payload) == LIMIT
    with RawWS(server.listen, "/v1/echo") as ws:
        ws.send_binary(payload)
        op, got = ws.recv_message(timeout=20)
        assert op == OP_BINARY and got == payload


@pytest.fixture
def small_limit_server(make_server):
    return make_server(env={"RINGRELAY_LIMITS_MAX_MESSAGE_BYTES": "1000"})


@pytest.mark.parametrize("route", ["echo", "relay"])
def test_small_configured_limit(small_limit_server, route):
    srv = small_limit_server
    path = "/v1/echo" if route == "echo" else f"/v1/relay/{unique()}?role=a"
    with RawWS(srv.listen, path) as ws:
        if route == "relay":
            peer = RawWS(srv.listen, path.replace("role=a", "role=b"))
        ws.send_binary(b"k" * 1000)  # exactly the limit: fine
        if route == "echo":
            assert ws.recv_message() == (OP_BINARY, b"k" * 1000)
        else:
            assert peer.recv_message() == (OP_BINARY, b"k" * 1000)
        ws.send_frame(OP_TEXT, b"t" * 600, fin=False)
        ws.send_frame(OP_CONT, b"t" * 401, fin=True)  # 1001 in all
        expect_violation_close(ws, 1009)
        if route == "relay":
            peer.close()


def test_control_frame_payload_125_is_fine(server):
    with RawWS(server.listen, "/v1/echo") as ws:
        ws.send_frame(OP_PING, b"q" * 125)
        f = ws.recv_frame()
        assert (f.opcode, f.payload) == (OP_PONG, b"q" * 125)
        ws.send_close(1000, b"r" * 123)
        f = ws.expect_close()
        assert f.close_code == 1000
        ws.expect_eof()


def test_masking_with_zero_key_and_varied_keys(server):
    with RawWS(server.listen, "/v1/echo") as ws:
        for key in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04"):
            ws.send_raw(encode_frame(OP_BINARY, b"masked payload", mask_key=key))
            assert ws.recv_message() == (OP_BINARY, b"masked payload")


def test_non_minimal_length_encoding_accepted_or_1002(server):
    """A 5-byte payload with a 16-bit length: RFC 6455 says minimal encoding MUST be used, so
    1002 is right; relays commonly accept it. Either way the relay must not misparse it."""
    with RawWS(server.listen, "/v1/echo") as ws:
        ws.send_raw(encode_frame(OP_TEXT, b"hello", length_form="16"))
        f = ws.recv_data_frame()
        if f.opcode == OP_CLOSE:
            assert f.close_code == 1002
        else:
            assert (f.opcode, f.payload) == (OP_TEXT, b"hello")
