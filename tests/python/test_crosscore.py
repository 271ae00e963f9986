"""Cross-core pairing: with 4 workers, peers of one session usually land on different cores
(SO_REUSEPORT spreads connections); the relay hands them to the session's owner core.
The test only checks that every pair works."""

import time

from helpers import OP_BINARY, OP_TEXT, RawWS, http_get, unique

N = 200


def _wait_health(srv, sessions, conns, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        body = http_get(srv.listen, "/health").json()
        if (body["active_sessions"], body["active_connections"]) == (sessions, conns) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_200_sessions_pair_across_4_workers(make_server):
    srv = make_server(workers=4)
    sessions = [unique(f"x{i}") for i in range(N)]
    a_side, b_side = [], []
    try:
        for s in sessions:  # all first peers ...
            a_side.append(RawWS(srv.listen, f"/v1/relay/{s}?role=a"))
        for s in sessions:  # ... then all second peers, on separate connections
            b_side.append(RawWS(srv.listen, f"/v1/relay/{s}?role=b"))
        body = _wait_health(srv, N, 2 * N)
        assert (body["active_sessions"], body["active_connections"]) == (N, 2 * N), body
        for i, (a, b) in enumerate(zip(a_side, b_side)):
            a.send_text(f"a->b {sessions[i]}")
            b.send_binary(f"b->a {sessions[i]}".encode())
        for i, (a, b) in enumerate(zip(a_side, b_side)):
            assert b.recv_message() == (OP_TEXT, f"a->b {sessions[i]}".encode()), i
            assert a.recv_message() == (OP_BINARY, f"b->a {sessions[i]}".encode()), i
    finally:
        for ws in a_side + b_side:
            ws.close()
    body = _wait_health(srv, 0, 0)
    assert body["active_connections"] == 0, body


def test_interleaved_joins_and_replacements_across_workers(make_server):
    srv = make_server(workers=4)
    conns = []
    try:
        pairs = []
        for i in range(50):
            s = unique(f"y{i}")
            a = RawWS(srv.listen, f"/v1/relay/{s}?role=a")
            b = RawWS(srv.listen, f"/v1/relay/{s}?role=b")
            a2 = RawWS(srv.listen, f"/v1/relay/{s}?role=a")  # replaces a, probably from another core
            conns += [a, b, a2]
            pairs.append((s, a, b, a2))
        for s, a, b, a2 in pairs:
            f = a.expect_close()
            assert f.close_code == 4001
            a2.send_text(s)
            assert b.recv_message() == (OP_TEXT, s.encode())
            b.send_text(s[::-1])
            assert a2.recv_message() == (OP_TEXT, s[::-1].encode())
    finally:
        for c in conns:
            c.close()
