"""Large messages through a pair (limits.max_message_bytes raised to 32 MiB)."""

import hashlib
import os
import random
import threading

import pytest

from helpers import OP_BINARY, OP_CONT, OP_TEXT, RawWS, encode_frame, send_in_background, sha256, unique, ws_connect

BIG_ENV = {"RINGRELAY_LIMITS_MAX_MESSAGE_BYTES": "33554432"}


@pytest.fixture
def big_server(make_server):
    return make_server(env=BIG_ENV)


def multibyte_text(n_bytes: int) -> str:
    """About n_bytes of UTF-8 mixing 1-, 2-, 3- and 4-byte characters."""
    rnd = random.Random(1234)
    alphabet = "aZ9~éñßкЖ€✓中文한𝄞😀🚀\U0010FFFF"
    chunk = "".join(rnd.choice(alphabet) for _ in range(4096))
    reps = n_bytes // len(chunk.encode()) + 1
    return (chunk * reps)[: n_bytes // 3]  # fewer chars than bytes; trimmed below by encoded size


def test_16mib_binary_through_pair(big_server):
    data = os.urandom(16 * 1024 * 1024)
    s = unique("big")
    with ws_connect(big_server, f"/v1/relay/{s}?role=a", max_queue=None) as a, \
            ws_connect(big_server, f"/v1/relay/{s}?role=b", max_queue=None) as b:
        sent = send_in_background(a, data)
        got = b.recv(timeout=60)
        sent()
        assert isinstance(got, bytes)
        assert len(got) == len(data)
        assert sha256(got) == sha256(data)
        # and back
        sent = send_in_background(b, got)
        back = a.recv(timeout=60)
        sent()
        assert len(back) == len(data) and sha256(back) == sha256(data)


def test_4mib_multibyte_text_through_pair(big_server):
    text = multibyte_text(4 * 1024 * 1024)
    while len(text.encode()) < 4 * 1024 * 1024:
        text += text[:100000]
    raw = text.encode()
    assert len(raw) >= 4 * 1024 * 1024 and len(raw) > len(text) * 2
    s = unique("big")
    with ws_connect(big_server, f"/v1/relay/{s}?role=a", max_queue=None) as a, \
            ws_connect(big_server, f"/v1/relay/{s}?role=b", max_queue=None) as b:
        sent = send_in_background(a, text)
        got = b.recv(timeout=60)
        sent()
        assert isinstance(got, str)
        assert len(got.encode()) == len(raw)
        assert sha256(got.encode()) == sha256(raw)


def test_large_fragmented_text_split_inside_code_points(big_server):
    """2 MiB of 4-byte characters sent in 1000-byte fragments (so most boundaries split a character)."""
    raw = ("😀🚀𝄞" * (2 * 1024 * 1024 // 12)).encode()
    s = unique("big")
    with RawWS(big_server.listen, f"/v1/relay/{s}?role=a") as a, RawWS(big_server.listen, f"/v1/relay/{s}?role=b") as b:
        step = 1000
        out = bytearray()
        for i in range(0, len(raw), step):
            op = OP_TEXT if i == 0 else OP_CONT
            out += encode_frame(op, raw[i:i + step], fin=i + step >= len(raw))
        a.send_raw(bytes(out))
        op, got = b.recv_message(timeout=60)
        assert op == OP_TEXT
        assert hashlib.sha256(got).digest() == hashlib.sha256(raw).digest()


def test_large_messages_both_ways_at_once(big_server):
    x = os.urandom(3 * 1024 * 1024)
    y = os.urandom(5 * 1024 * 1024)
    s = unique("big")
    with ws_connect(big_server, f"/v1/relay/{s}?role=a", max_queue=None) as a, \
            ws_connect(big_server, f"/v1/relay/{s}?role=b", max_queue=None) as b:
        sent_x = send_in_background(a, x)
        sent_y = send_in_background(b, y)
        assert sha256(b.recv(timeout=60)) == sha256(x)
        assert sha256(a.recv(timeout=60)) == sha256(y)
        sent_x()
        sent_y()


def test_16mib_binary_through_echo(big_server):
    """Raw client, sending from a thread while reading: an echo applies backpressure, so a client
    that does not read while it sends would deadlock (the websockets sync client does, since it
    holds its connection lock during a send)."""
    data = os.urandom(16 * 1024 * 1024)
    with RawWS(big_server.listen, "/v1/echo") as e:
        frame = encode_frame(OP_BINARY, data)
        err = []

        def send():
            try:
                e.sock.sendall(frame)
            except OSError as ex:
                err.append(ex)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        op, got = e.recv_message(timeout=60)
        t.join(10)
        assert not err and not t.is_alive()
        assert op == OP_BINARY and len(got) == len(data) and sha256(got) == sha256(data)
