"""Echo conformance for /v1/echo, written from RFC 6455 in the spirit of Autobahn sections
1 (framing), 2 (ping/pong), 3 (reserved bits), 4 (opcodes), 5 (fragmentation), 6 (UTF-8),
7 (close), 9 (limits/performance) and 10 (misc)."""

import os
import time

import pytest

from helpers import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RECV_TIMEOUT, RawWS,
                     encode_frame, expect_violation_close, send_lenient, ws_connect)

SIZES = [0, 1, 125, 126, 127, 128, 65535, 65536, 65537, 1024 * 1024]


@pytest.fixture
def echo(server):
    ws = RawWS(server.listen, "/v1/echo")
    yield ws
    ws.close()


def text_of(n: int) -> bytes:
    return (b"0123456789abcdef*" * (n // 17 + 1))[:n]


# --------------------------------------------------------------------------------------------
# 1. Framing: text and binary of many sizes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_echo_sizes_raw(echo, opcode, size):
    payload = text_of(size) if opcode == OP_TEXT else os.urandom(size)
    echo.send_frame(opcode, payload)
    op, got = echo.recv_message(timeout=20)
    assert op == opcode
    assert len(got) == size and got == payload


@pytest.mark.parametrize("size", [0, 125, 126, 127, 65535, 65536, 1024 * 1024])
def test_echo_sizes_websockets(server, size):
    with ws_connect(server, "/v1/echo", max_queue=None) as ws:
        t = text_of(size).decode()
        ws.send(t)
        assert ws.recv(timeout=20) == t
        b = os.urandom(size)
        ws.send(b)
        assert ws.recv(timeout=20) == b


@pytest.mark.parametrize("chop", [1, 7, 997])
def test_frame_written_in_small_chunks(echo, chop):
    """One 64 KiB frame written `chop` bytes at a time (tiny chunks only for the head)."""
    payload = os.urandom(65536)
    data = encode_frame(OP_BINARY, payload)
    i = 0
    while i < len(data):
        step = chop if (chop > 1 or i < 20) else 4096  # with chop=1: the head byte by byte, then faster
        echo.send_raw(data[i:i + step])
        i += step
    assert echo.recv_message(timeout=20) == (OP_BINARY, payload)


def test_all_byte_values_binary(echo):
    payload = bytes(range(256)) * 4
    echo.send_binary(payload)
    assert echo.recv_message() == (OP_BINARY, payload)


def test_server_frames_are_unmasked_and_clean(echo):
    echo.send_text("x" * 300)
    f = echo.recv_data_frame()
    assert not f.masked and f.rsv == 0


# --------------------------------------------------------------------------------------------
# 2. Ping / pong
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125)), b"\xff\xfe\x00binary"])
def test_ping_gets_pong_with_same_payload(echo, payload):
    echo.send_frame(OP_PING, payload)
    f = echo.recv_frame()
    assert (f.opcode, f.payload, f.fin) == (OP_PONG, payload, True)


def test_unsolicited_pong_ignored(echo):
    echo.send_frame(OP_PONG, b"unsolicited")
    echo.send_text("after pong")
    f = echo.recv_frame()
    assert (f.opcode, f.payload) == (OP_TEXT, b"after pong")


def test_ten_pings_in_a_row(echo):
    for i in range(10):
        echo.send_frame(OP_PING, f"ping {i}".encode())
    seen = []
    while not seen or seen[-1] != b"ping 9":
        f = echo.recv_frame()
        assert f.opcode == OP_PONG
        seen.append(f.payload)
    # RFC 6455 5.5.3 lets an endpoint answer only the latest of several pings
    idx = [int(p.split()[1]) for p in seen]
    assert idx == sorted(set(idx))


def test_ping_after_close_not_answered(echo):
    echo.send_close(1000)
    echo.send_frame(OP_PING, b"late")
    f = echo.recv_frame()
    assert f.opcode == OP_CLOSE and f.close_code == 1000
    rest = echo.expect_eof()
    assert b"late" not in rest


# --------------------------------------------------------------------------------------------
# 5. Fragmentation
# --------------------------------------------------------------------------------------------

def collect_until_message(ws, want_pongs=()):
    """Read frames until a whole data message has arrived and every expected pong was seen."""
    pongs, parts, op = [], [], None
    deadline = time.monotonic() + RECV_TIMEOUT
    done = False
    while not done or not set(want_pongs) <= set(pongs):
        f = ws.recv_frame(max(0.05, deadline - time.monotonic()))
        if f.opcode == OP_PONG:
            pongs.append(f.payload)
            continue
        if f.opcode == OP_PING:
            ws.send_frame(OP_PONG, f.payload)
            continue
        if op is None:
            assert f.opcode in (OP_TEXT, OP_BINARY), f
            op = f.opcode
        else:
            assert f.opcode == OP_CONT, f
        parts.append(f.payload)
        done = f.fin
    return op, b"".join(parts), pongs


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("nfrag", [2, 3, 10])
def test_fragmented_message_echoed_whole(echo, opcode, nfrag):
    payload = text_of(1000)
    size = len(payload) // nfrag
    chunks = [payload[i * size:(i + 1) * size] for i in range(nfrag - 1)] + [payload[(nfrag - 1) * size:]]
    for i, c in enumerate(chunks):
        echo.send_frame(opcode if i == 0 else OP_CONT, c, fin=i == nfrag - 1)
    op, got, _ = collect_until_message(echo)
    assert (op, got) == (opcode, payload)


def test_fragments_one_byte_each(echo):
    payload = "Hello-µ@ßöäüàá-UTF-8!!".encode()
    for i in range(len(payload)):
        echo.send_frame(OP_TEXT if i == 0 else OP_CONT, payload[i:i + 1], fin=i == len(payload) - 1)
    op, got, _ = collect_until_message(echo)
    assert (op, got) == (OP_TEXT, payload)


def test_fragments_with_empty_payloads(echo):
    echo.send_frame(OP_TEXT, b"", fin=False)
    echo.send_frame(OP_CONT, b"", fin=False)
    echo.send_frame(OP_CONT, b"abc", fin=False)
    echo.send_frame(OP_CONT, b"", fin=True)
    op, got, _ = collect_until_message(echo)
    assert (op, got) == (OP_TEXT, b"abc")


def test_single_fragment_with_fin_on_continuation(echo):
    echo.send_frame(OP_BINARY, b"", fin=False)
    echo.send_frame(OP_CONT, b"", fin=True)
    op, got, _ = collect_until_message(echo)
    assert (op, got) == (OP_BINARY, b"")


@pytest.mark.parametrize("delay", [0, 0.05])
def test_pings_interleaved_between_fragments(echo, delay):
    payload = text_of(300)
    echo.send_frame(OP_TEXT, payload[:100], fin=False)
    time.sleep(delay)
    echo.send_frame(OP_PING, b"between-1")
    time.sleep(delay)
    echo.send_frame(OP_CONT, payload[100:200], fin=False)
    time.sleep(delay)
    echo.send_frame(OP_PING, b"between-2")
    echo.send_frame(OP_PONG, b"unsolicited-between")
    time.sleep(delay)
    echo.send_frame(OP_CONT, payload[200:], fin=True)
    op, got, pongs = collect_until_message(echo, want_pongs=[b"between-2"])
    assert (op, got) == (OP_TEXT, payload)
    assert b"between-2" in pongs
    assert b"unsolicited-between" not in pongs


def test_many_fragments_each_followed_by_ping(echo):
    payload = text_of(2000)
    for i in range(20):
        echo.send_frame(OP_TEXT if i == 0 else OP_CONT, payload[i * 100:(i + 1) * 100], fin=i == 19)
        echo.send_frame(OP_PING, str(i).encode())
    op, got, pongs = collect_until_message(echo, want_pongs=[b"19"])
    assert (op, got) == (OP_TEXT, payload)


def test_websockets_fragmented_send(server):
    with ws_connect(server, "/v1/echo") as ws:
        ws.send(["frag", "ment", "ed ✓"])
        assert ws.recv(timeout=RECV_TIMEOUT) == "fragmented ✓"
        ws.send([b"\x00", b"\x01" * 70000])
        assert ws.recv(timeout=RECV_TIMEOUT) == b"\x00" + b"\x01" * 70000


# --------------------------------------------------------------------------------------------
# 9/10. Many messages, pipelined
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count,size", [(1000, 16), (200, 4096), (50, 65536)])
def test_pipelined_messages(echo, count, size):
    msgs = [(f"{i:06d}".encode() + text_of(size))[:size] if size >= 6 else f"{i}".encode() for i in range(count)]
    out = b"".join(encode_frame(OP_TEXT if i % 2 else OP_BINARY, m) for i, m in enumerate(msgs))
    import threading
    t = threading.Thread(target=echo.send_raw, args=(out,), daemon=True)
    t.start()
    for i, m in enumerate(msgs):
        op, got = echo.recv_message(timeout=20)
        assert (op, got) == (OP_TEXT if i % 2 else OP_BINARY, m), i
    t.join(10)


def test_pipelined_websockets(server):
    with ws_connect(server, "/v1/echo", max_queue=None) as ws:
        for i in range(1000):
            ws.send(f"msg {i}")
        for i in range(1000):
            assert ws.recv(timeout=RECV_TIMEOUT) == f"msg {i}"


# --------------------------------------------------------------------------------------------
# 6. UTF-8
# --------------------------------------------------------------------------------------------

EDGE_POINTS = ["\u007f", "\u0080", "\u07ff", "\u0800", "\uffff", "\U00010000", "\U0010ffff",
               "\ufeff", "\ufffd", "\ud7ff", "\ue000", "\u0000"]


@pytest.mark.parametrize("ch", EDGE_POINTS, ids=[f"U+{ord(c):04X}" for c in EDGE_POINTS])
def test_utf8_edge_code_points(echo, ch):
    payload = f"<{ch}>".encode()
    echo.send_text(payload)
    assert echo.recv_message() == (OP_TEXT, payload)


def test_utf8_edge_code_points_split_byte_by_byte(echo):
    payload = "".join(EDGE_POINTS).encode() + "κόσμε".encode()
    for i in range(len(payload)):
        echo.send_frame(OP_TEXT if i == 0 else OP_CONT, payload[i:i + 1], fin=i == len(payload) - 1)
    op, got, _ = collect_until_message(echo)
    assert (op, got) == (OP_TEXT, payload)


def test_utf8_websockets(server):
    s = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 中文 😀 " + "".join(EDGE_POINTS)
    with ws_connect(server, "/v1/echo") as ws:
        ws.send(s)
        assert ws.recv(timeout=RECV_TIMEOUT) == s


INVALID = {
    "surrogate-high": b"\xed\xa0\x80",
    "surrogate-low": b"\xed\xbf\xbf",
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "overlong-slash-2": b"\xc0\xaf",
    "overlong-slash-3": b"\xe0\x80\xaf",
    "overlong-slash-4": b"\xf0\x80\x80\xaf",
    "overlong-c1": b"\xc1\xbf",
    "above-max": b"\xf4\x90\x80\x80",
    "f8-lead": b"\xf8\x88\x80\x80\x80",
    "fe": b"\xfe",
    "ff": b"\xff",
    "lone-continuation": b"\x80",
    "truncated-2": b"\xc3",
    "truncated-3": b"\xe2\x82",
    "truncated-4": b"\xf0\x9f\x98",
    "valid-then-invalid": "κόσμε".encode() + b"\xed\xa0\x80edited",
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_utf8_single_frame_1007(echo, name):
    echo.send_text(b"ok" + INVALID[name])
    expect_violation_close(echo, 1007)


@pytest.mark.parametrize("name", ["surrogate-high", "overlong-slash-2", "above-max", "valid-then-invalid", "truncated-4"])
def test_invalid_utf8_byte_per_fragment_1007(echo, name):
    payload = INVALID[name]
    # the relay may fail fast, before the last fragment: send leniently
    send_lenient(echo, b"".join(encode_frame(OP_TEXT if i == 0 else OP_CONT, payload[i:i + 1], fin=i == len(payload) - 1)
                                for i in range(len(payload))), chunk=6)
    expect_violation_close(echo, 1007)


def test_invalid_utf8_in_binary_is_fine(echo):
    payload = b"".join(INVALID.values())
    echo.send_binary(payload)
    assert echo.recv_message() == (OP_BINARY, payload)


# --------------------------------------------------------------------------------------------
# 7. Close
# --------------------------------------------------------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_echoed(echo, code):
    echo.send_close(code)
    f = echo.expect_close()
    assert f.close_code == code, f
    echo.expect_eof()


def test_close_with_reason(echo):
    echo.send_close(1000, "bye ✓ κόσμε".encode())
    f = echo.expect_close()
    assert f.close_code == 1000
    if f.close_reason:
        f.close_reason.decode("utf-8")  # whatever reason comes back must be valid UTF-8
    echo.expect_eof()


def test_close_with_max_reason(echo):
    echo.send_close(1000, b"r" * 123)
    assert echo.expect_close().close_code == 1000
    echo.expect_eof()


def test_empty_close_answered_with_empty_close(echo):
    echo.send_close(None)
    f = echo.expect_close()
    assert f.payload == b"", f
    echo.expect_eof()


def test_text_after_close_not_echoed(echo):
    echo.send_close(1000)
    echo.send_text("after close")
    f = echo.recv_frame()
    assert f.opcode == OP_CLOSE and f.close_code == 1000
    rest = echo.expect_eof()
    assert b"after close" not in rest


def test_two_close_frames(echo):
    echo.send_close(1000)
    echo.send_close(1000)
    f = echo.recv_frame()
    assert f.opcode == OP_CLOSE and f.close_code == 1000
    rest = echo.expect_eof()
    assert rest == b"", "only one close frame expected from the relay"


def test_close_in_the_middle_of_fragmented_message(echo):
    echo.send_frame(OP_TEXT, b"part", fin=False)
    echo.send_close(1000)
    f = echo.expect_close()
    assert f.close_code == 1000
    echo.expect_eof()


def test_websockets_close_handshake(server):
    ws = ws_connect(server, "/v1/echo")
    ws.send("x")
    assert ws.recv(timeout=RECV_TIMEOUT) == "x"
    ws.close(4321, "custom")
    assert ws.close_code == 4321
