"""Upgrade handshake: the 101, and every refusal before it (raw sockets)."""

import socket
import time

import pytest

from helpers import (RECV_TIMEOUT, RawWS, assert_json_error, assert_security_headers, http_raw, pair, read_http_response,
                     round_trip, unique, upgrade_request, ws_accept, ws_connect)


# --------------------------------------------------------------------------------------------
# Successful upgrades
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/echo", "/v1/relay/{s}", "/v1/relay/{s}?role=desktop&events=1",
                                  "/desktop/{s}", "/mobile/{s}"])
def test_upgrade_101(server, path):
    ws = RawWS(server.listen, path.format(s=unique()))
    with ws:
        r = ws.response
        assert r.status == 101
        assert r.headers["upgrade"].lower() == "websocket"
        assert "upgrade" in r.headers["connection"].lower()
        assert r.headers["sec-websocket-accept"] == ws_accept(ws.key)
        assert "sec-websocket-extensions" not in r.headers


def test_rfc_sample_key(server):
    """RFC 6455 section 1.3 sample: key dGhlIHNhbXBsZSBub25jZQ== -> s3pPLMBiTxaQ9kYGzzhZRbK+xOo=."""
    with socket.create_connection(server.listen, timeout=RECV_TIMEOUT) as s:
        s.sendall(upgrade_request(server.listen, "/v1/echo", key="dGhlIHNhbXBsZSBub25jZQ=="))
        r = read_http_response(s, read_body=False)
        assert r.status == 101
        assert r.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("offer", ["permessage-deflate",
                                   "permessage-deflate; client_max_window_bits",
                                   "permessage-deflate; server_no_context_takeover, x-webkit-deflate-frame"])
def test_no_extension_negotiated(server, offer):
    with RawWS(server.listen, "/v1/echo", extra={"Sec-WebSocket-Extensions": offer}) as ws:
        assert "sec-websocket-extensions" not in ws.response.headers, ws.response.header_list
        # frames work uncompressed, RSV1 clear
        ws.send_text("plain")
        f = ws.recv_data_frame()
        assert (f.opcode, f.payload, f.rsv) == (1, b"plain", 0)


def test_unknown_subprotocol_not_selected(server):
    """RFC 6455 4.2.2: a server that supports none of the offered subprotocols omits the header."""
    with RawWS(server.listen, "/v1/echo", extra={"Sec-WebSocket-Protocol": "chat, superchat"}) as ws:
        proto = ws.response.headers.get("sec-websocket-protocol")
        assert proto in (None, "chat", "superchat"), proto


def test_websockets_client_offering_deflate_gets_none(server):
    with ws_connect(server, "/v1/echo", compression="deflate") as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        ws.send("x" * 1000)
        assert ws.recv(timeout=RECV_TIMEOUT) == "x" * 1000


def test_header_names_case_insensitive_and_connection_token_list(server):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    req = (f"GET /v1/echo HTTP/1.1\r\nhost: 127.0.0.1\r\nUPGRADE: WebSocket\r\n"
           f"connection: keep-alive, Upgrade\r\nsec-websocket-key: {key}\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n").encode()
    with socket.create_connection(server.listen, timeout=RECV_TIMEOUT) as s:
        s.sendall(req)
        r = read_http_response(s, read_body=False)
        assert r.status == 101
        assert r.headers["sec-websocket-accept"] == ws_accept(key)


def test_upgrade_request_split_into_small_writes(server):
    """The request head may arrive a few bytes at a time."""
    req = upgrade_request(server.listen, "/v1/echo", key="dGhlIHNhbXBsZSBub25jZQ==")
    with socket.create_connection(server.listen, timeout=RECV_TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(req), 7):
            s.sendall(req[i:i + 7])
            time.sleep(0.002)
        r = read_http_response(s, read_body=False)
        assert r.status == 101


def test_session_id_128_chars_accepted(server):
    with RawWS(server.listen, "/v1/relay/" + "a" * 128):
        pass


def test_session_id_all_allowed_characters(server):
    with RawWS(server.listen, "/v1/relay/AZaz09._~-" + unique()):
        pass


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------

def refused(server, req: bytes, status: int):
    r = http_raw(server.listen, req)
    assert_json_error(r, status)
    return r


@pytest.mark.parametrize("req", [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /v1/echo\r\n\r\n",
    b"GET /v1/echo HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
    b"GET /v1/echo HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
], ids=["garbage", "no-target", "no-version", "header-no-colon", "http-9.9", "space-in-name", "tls-hello"])
def test_malformed_request_400(server, req):
    refused(server, req, 400)


@pytest.mark.parametrize("omit", ["Upgrade", "Connection", "Sec-WebSocket-Key", "Host"])
def test_missing_upgrade_header_400(server, omit):
    refused(server, upgrade_request(server.listen, "/v1/echo", omit=(omit,)), 400)


@pytest.mark.parametrize("path", ["/v1/echo", "/v1/relay/{s}"])
@pytest.mark.parametrize("extra", [
    {"Upgrade": "h2c"},
    {"Connection": "keep-alive"},
    {"Sec-WebSocket-Key": "short"},
    {"Sec-WebSocket-Key": "not base64 at all!!!!!!!"},
    {"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},  # 24 bytes, not 16
    {"Sec-WebSocket-Key": ""},
], ids=["upgrade-h2c", "connection-keepalive", "key-short", "key-not-b64", "key-24-bytes", "key-empty"])
def test_bad_upgrade_headers_400(server, path, extra):
    refused(server, upgrade_request(server.listen, path.format(s=unique()), extra=extra), 400)


def test_http_1_0_upgrade_refused(server):
    req = upgrade_request(server.listen, "/v1/echo").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    r = http_raw(server.listen, req)
    assert r.status == 400, r.status


@pytest.mark.parametrize("version", ["8", "7", "14", "0"])
def test_wrong_version_426(server, version):
    r = refused(server, upgrade_request(server.listen, "/v1/echo", version=version), 426)
    assert r.headers.get("sec-websocket-version") == "13", r.header_list


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/v1/echo", "/v1/relay/{s}", "/desktop/{s}"])
def test_non_get_to_ws_route_405(server, method, path):
    req = upgrade_request(server.listen, path.format(s=unique()), method=method)
    req = req.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
    refused(server, req, 405)


def test_header_block_over_8192_is_431(server):
    refused(server, upgrade_request(server.listen, "/v1/echo", extra={"X-Pad": "a" * 9000}), 431)


def test_header_block_over_8192_many_headers_is_431(server):
    extra = {f"X-Pad-{i}": "b" * 200 for i in range(45)}  # ~9.5 KiB in 45 lines (< 100 lines)
    refused(server, upgrade_request(server.listen, "/v1/echo", extra=extra), 431)


def test_too_many_header_lines_is_431(server):
    extra = {f"X-H{i}": "1" for i in range(120)}  # small block, but over limits.max_headers (100)
    refused(server, upgrade_request(server.listen, "/v1/echo", extra=extra), 431)


def test_header_block_just_under_limit_accepted(server):
    base = len(upgrade_request(server.listen, "/v1/echo", extra={"X-Pad": ""}))
    pad = 8192 - base - 16
    req = upgrade_request(server.listen, "/v1/echo", extra={"X-Pad": "c" * pad})
    assert len(req) < 8192
    with socket.create_connection(server.listen, timeout=RECV_TIMEOUT) as s:
        s.sendall(req)
        assert read_http_response(s, read_body=False).status == 101


def test_431_without_end_of_headers(server):
    """A header block that just keeps coming (no blank line) is refused once over the limit."""
    with socket.create_connection(server.listen, timeout=RECV_TIMEOUT) as s:
        s.sendall(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"d" * 20000)
        r = read_http_response(s)
        assert_json_error(r, 431)


@pytest.mark.parametrize("session", ["a" * 129, "a*b", "a%20b", "sp ace".replace(" ", "%20"), "a/b", "%41",
                                     "caf%C3%A9", "a:b", "a@b"])
def test_invalid_session_id_400(server, session):
    body = assert_json_error(http_raw(server.listen, upgrade_request(server.listen, f"/v1/relay/{session}")), 400)
    assert body["code"]


def test_empty_session_id_refused(server):
    r = http_raw(server.listen, upgrade_request(server.listen, "/v1/relay/"))
    assert r.status in (400, 404), r.status
    assert_json_error(r, r.status)


@pytest.mark.parametrize("prefix", ["/desktop/", "/mobile/"])
def test_invalid_session_on_compat_paths_400(server, prefix):
    assert_json_error(http_raw(server.listen, upgrade_request(server.listen, prefix + "a*b")), 400)


@pytest.mark.parametrize("role", ["A", "Desktop", "x%20y", "r" * 33, "a.b", "a~b", ""])
def test_invalid_role_400(server, role):
    assert_json_error(http_raw(server.listen, upgrade_request(server.listen, f"/v1/relay/{unique()}?role={role}")), 400)


def test_role_32_chars_accepted(server):
    with RawWS(server.listen, f"/v1/relay/{unique()}?role={'r' * 32}"):
        pass


@pytest.mark.parametrize("third_role", [None, "c", "desktop"])
def test_third_peer_409(server, third_role):
    session = unique()
    with RawWS(server.listen, f"/v1/relay/{session}?role=a"), RawWS(server.listen, f"/v1/relay/{session}?role=b"):
        q = f"?role={third_role}" if third_role else ""
        r = http_raw(server.listen, upgrade_request(server.listen, f"/v1/relay/{session}{q}"))
        body = assert_json_error(r, 409)
        assert body["code"]


def test_third_peer_409_does_not_disturb_pair(server):
    session, a, b = pair(server, roles=("x", "y"))
    try:
        round_trip(a, b)
        for _ in range(3):
            assert_json_error(http_raw(server.listen, upgrade_request(server.listen, f"/v1/relay/{session}")), 409)
        round_trip(a, b)
    finally:
        a.close()
        b.close()


def test_refusal_has_security_headers(server):
    for req in [b"GARBAGE\r\n\r\n", upgrade_request(server.listen, "/v1/echo", version="8")]:
        assert_security_headers(http_raw(server.listen, req))


def test_101_has_security_headers(server):
    """The contract: every HTTP response carries the four security headers (101 included)."""
    with RawWS(server.listen, "/v1/echo") as ws:
        assert_security_headers(ws.response)


# --------------------------------------------------------------------------------------------
# Handshake timeout
# --------------------------------------------------------------------------------------------

@pytest.fixture
def hs_server(make_server):
    return make_server(env={"RINGRELAY_LIMITS_HANDSHAKE_TIMEOUT": "1s"})


def _wait_dropped(sock: socket.socket, within: float) -> float:
    t0 = time.monotonic()
    sock.settimeout(within)
    got = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError(f"connection still open after {within}s (got {got!r})")
        if not chunk:
            break
        got += chunk
    return time.monotonic() - t0


@pytest.mark.parametrize("sent", [b"", b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n", b"G"], ids=["nothing", "partial-head", "one-byte"])
def test_handshake_timeout_drops_connection(hs_server, sent):
    with socket.create_connection(hs_server.listen, timeout=RECV_TIMEOUT) as s:
        if sent:
            s.sendall(sent)
        elapsed = _wait_dropped(s, 3.5)
        assert elapsed >= 0.5, f"dropped too early ({elapsed:.2f}s) for a 1s handshake timeout"


def test_handshake_timeout_not_reset_by_trickle(hs_server):
    """Sending one byte every 300 ms must not keep a handshake alive past the timeout."""
    with socket.create_connection(hs_server.listen, timeout=RECV_TIMEOUT) as s:
        t0 = time.monotonic()
        req = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100
        dropped = False
        for byte in req:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            s.settimeout(0.3)
            try:
                if s.recv(4096) == b"":
                    dropped = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                dropped = True
                break
            if time.monotonic() - t0 > 4:
                break
        assert dropped, "slow-loris handshake kept alive past limits.handshake_timeout"
        assert time.monotonic() - t0 < 3.5


def test_completed_handshake_not_dropped_by_handshake_timeout(hs_server):
    with RawWS(hs_server.listen, "/v1/echo") as ws:
        time.sleep(1.6)
        ws.send_text("still here")
        f = ws.recv_data_frame()
        assert f.payload == b"still here"
