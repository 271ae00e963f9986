#!/usr/bin/env python3
"""Writes the small seed corpus checked in under fuzz/corpus/<target>/seed-*.

Run from anywhere: python3 fuzz/seeds.py. Each seed follows its target's input layout (see
the comment at the top of fuzz/fuzz_targets/<target>.rs).
"""

import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def client_frame(fin, opcode, payload, mask=b"\x37\xfa\x21\x3d"):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n <= 125:
        head = bytes([b0, 0x80 | n])
    elif n <= 0xFFFF:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def decoder_input(buf_size_knob, limit_knob, reads, stream, schedule=None):
    flags = len(reads) - 1
    tail = bytes(reads)
    if schedule is not None:
        flags |= 0x80
        tail += bytes([schedule])
    return struct.pack(">H", buf_size_knob) + bytes([limit_knob, flags]) + tail + stream


TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame_decoder():
    hello = client_frame(True, TEXT, "héllo €𝄞".encode())
    frag = (
        client_frame(False, TEXT, "€ par".encode())
        + client_frame(True, PING, b"p1", b"\x01\x02\x03\x04")
        + client_frame(False, CONT, "tie €".encode()[:6])
        + client_frame(True, PONG, b"")
        + client_frame(True, CONT, "tie €".encode()[6:])
    )
    big = client_frame(True, BINARY, bytes(i % 251 for i in range(300)), b"\xde\xad\xbe\xef")
    huge = client_frame(True, BINARY, bytes(i % 7 for i in range(70000)), b"\x01\x01\x01\x01")
    close = client_frame(True, CLOSE, struct.pack(">H", 1000) + b"bye")
    write("frame_decoder", "simple", decoder_input(4000, 200, [255], hello + close))
    write("frame_decoder", "fragmented", decoder_input(0, 200, [3, 7, 1], frag + hello))
    write("frame_decoder", "chunked", decoder_input(100, 200, [40, 200], big + hello + big))
    write("frame_decoder", "long-length", decoder_input(2000, 200, [255, 17], huge[:1500]))
    write("frame_decoder", "too-big", decoder_input(50, 3, [60], big))
    write("frame_decoder", "bad-utf8", decoder_input(50, 200, [5], hello + client_frame(True, TEXT, b"\xce\xba\xff")))
    write("frame_decoder", "receiver-changes", decoder_input(0, 200, [30, 70], frag + big + hello + frag, 0b10110110))
    write("frame_decoder", "bad-close", decoder_input(50, 200, [9], client_frame(True, CLOSE, struct.pack(">H", 1005))))


def handshake():
    good = (
        b"GET /v1/relay/abc-1?role=desktop&events=1 HTTP/1.1\r\n"
        b"Host: relay.example\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    write("handshake", "upgrade", bytes([250, 56]) + struct.pack(">H", 30000) + good + b"\x81\x80abcd")
    write("handshake", "mobile", bytes([250, 56, 0xFF, 0xFF]) + good.replace(b"/v1/relay/abc-1?role=desktop&events=1", b"/mobile/s.x~_"))
    write("handshake", "bridge", bytes([10, 0, 0x40, 0]) + b"POST /v1/http/sess/path?x=%41+b HTTP/1.0\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    write("handshake", "health", bytes([0, 0, 0x80, 0]) + b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n")
    write("handshake", "garbage", bytes([0, 0, 0x10, 0]) + b"\x00\x01garbage\r\n\r\n")


def mask_diff():
    data = bytes(range(200))
    write("mask_diff", "aligned", b"\x12\x34\x56\x78" + struct.pack(">Q", 0) + b"\x00" + data)
    write("mask_diff", "offset", b"\xde\xad\xbe\xef" + struct.pack(">Q", 7) + b"\x5b" + data[:37])
    write("mask_diff", "short", b"\x01\x02\x03\x04" + struct.pack(">Q", (1 << 62) + 3) + b"\xff" + b"xyz")


def utf8_stream():
    text = "héllo wörld €𝄞 κόσμε".encode()
    write("utf8_stream", "valid", bytes([3]) + struct.pack(">HHH", 5000, 20000, 40000) + text)
    write("utf8_stream", "surrogate", bytes([1]) + struct.pack(">H", 30000) + b"ab\xed\xa0\x80cd")
    write("utf8_stream", "truncated", bytes([2]) + struct.pack(">HH", 20000, 60000) + b"abc\xf0\x9f\x98")
    write("utf8_stream", "over-max", bytes([1]) + struct.pack(">H", 32768) + b"\xf4\x90\x80\x80")


# Must match SECRET in fuzz_targets/jwt_claims.rs, so seeded tokens get past the signature.
JWT_SECRET = b"fuzz-secret-0123456789abcdef-0123456789"
JWT_NOW = 1_700_000_000


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jws(header, claims, hash_fn=hashlib.sha256, secret=JWT_SECRET):
    signed = b64url(header) + b"." + b64url(claims)
    return signed + b"." + b64url(hmac.new(secret, signed, hash_fn).digest())


def claims_json(**extra):
    c = {"sid": "room-1", "exp": JWT_NOW + 60, "aud": "relay", "iss": "ops"}
    c.update(extra)
    return json.dumps(c, separators=(",", ":")).encode()


HS256 = b'{"alg":"HS256","typ":"JWT"}'


def jwt_claims():
    good = jws(HS256, claims_json(role="desktop"))
    write("jwt_claims", "token", b"\x00" + good)
    write("jwt_claims", "alg-none", b"\x00" + b64url(b'{"alg":"none"}') + b"." + b64url(claims_json()) + b".")
    write("jwt_claims", "hs512", b"\x00" + jws(b'{"alg":"HS512"}', claims_json(), hashlib.sha512))
    write("jwt_claims", "wrong-key", b"\x00" + jws(HS256, claims_json(), secret=b"k" * 32))
    head = b"role=desktop&token=" + good + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + good + b"\r\n\r\n"
    write("jwt_claims", "request", b"\x01" + head)
    write("jwt_claims", "request-two-headers", b"\x01events=1 HTTP/1.1\r\nAuthorization: bearer a.b.c\r\nAuthorization: Basic x\r\n\r\n")
    write("jwt_claims", "minted", b"\x02\x01\x00\x01\x00\x00\x10\x00\x01\x00\x00\x00\x00\x00\x00\x00\xff")
    write("jwt_claims", "minted-long", b"\x02" + bytes(range(256)))
    write("jwt_claims", "claims-float", b"\x03\x00" + claims_json(exp=JWT_NOW + 0.5, nbf=1e3, aud=["web", "relay"], role="agent_2"))
    write("jwt_claims", "claims-any", b"\x03\x00" + claims_json(sid="*", exp=-1, iat="x"))
    write("jwt_claims", "claims-huge", b"\x03\x00" + b'{"sid":"s","exp":1e300,"nbf":-1e300,"aud":[[[[1]]]],"iss":null}')
    header = b'{"alg":"HS512","typ":"jwt","crit":["exp"]}'
    write("jwt_claims", "header-crit", bytes([3, 1 | (2 << 1), len(header)]) + header + claims_json())


def config_parse():
    with open(os.path.join(HERE, "..", "systemd", "ringrelay.toml"), "rb") as f:
        write("config_parse", "example", f.read())
    secret = b"0123456789abcdef0123456789abcdef!"
    auth = b'[auth]\njwt_secret = "' + secret + b'"\nalgorithms = ["HS384", "HS256"]\naudience = "relay"\nissuer = "ops"\nleeway = "0s"\n'
    write("config_parse", "auth", auth)
    env = [secret, b"HS256,HS512", b"relay", b"ops", b"5s", b"128", b"4", b"127.0.0.1:0", b"1s", b"2s",
           b"https://A.example:8443,*", b"10.0.0.0/8,::1", b"200", b"ringrelay=debug,info"]
    write("config_parse", "env", b"workers = 2\n" + b"".join(b"\x00" + v for v in env))
    write("config_parse", "bad-key", b"[limits]\nmax_mesage_bytes = 10\n")
    write("config_parse", "bad-secret", b"\x00short secret")
    write("config_parse", "timers", b'[session]\nping_interval = "80s"\npeer_timeout = "75s"\n[security]\ntrusted_proxies = ["::ffff:10.0.0.1/120"]\n')


def answer_capture():
    def answer(i, pad):
        return ('{"type":"http_response","id":"%x","status":200,"body_b64":"%s"}' % (i, "A" * pad)).encode()

    a1, a2 = answer(1, 0), answer(2, 300)
    mixed = (
        client_frame(True, TEXT, a1)
        + client_frame(True, TEXT, b"hello")
        + client_frame(False, TEXT, a2[:40])
        + client_frame(True, PING, b"p")
        + client_frame(True, CONT, a2[40:])
        + client_frame(True, BINARY, a1)
        + client_frame(True, TEXT, b'{ "type":"http_response"}')
    )
    write("answer_capture", "mixed", bytes([5, 3, 200]) + mixed)
    write("answer_capture", "cut-by-limit", bytes([1, 40, 10]) + mixed)
    write("answer_capture", "close-after", bytes([7, 0, 255]) + client_frame(True, TEXT, a1) + client_frame(True, CLOSE, b"\x03\xe8"))
    # Other writers: Python's json.dumps defaults, id first, pretty-printed; a chat message.
    others = (
        client_frame(True, TEXT, json.dumps({"type": "http_response", "id": "3", "status": 200}).encode())
        + client_frame(False, TEXT, b"  ")
        + client_frame(True, CONT, json.dumps({"id": "4", "status": 204, "type": "http_response"}).encode())
        + client_frame(True, TEXT, json.dumps({"id": "5", "type": "http_response", "status": 200}, indent=2).encode())
        + client_frame(True, TEXT, b'{"type":"chat","text":"hi"}')
    )
    write("answer_capture", "writers", bytes([9, 2, 60]) + others)
    # Towards an agent (top bit of the first byte): a chat message, then a forged request.
    forged = client_frame(True, TEXT, b'{"type":"chat"}') + client_frame(
        True, TEXT, json.dumps({"id": "x", "type": "http_request", "method": "GET", "path": "/"}).encode())
    write("answer_capture", "forged-request", bytes([0x80 | 6, 3, 100]) + forged)


def server_frame(fin, opcode, payload):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n <= 125:
        head = bytes([b0, n])
    elif n <= 0xFFFF:
        head = bytes([b0, 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 127]) + struct.pack(">Q", n)
    return head + payload


def agent_inbound():
    req = b'{"type":"http_request","id":"1f","method":"GET","path":"/","headers":[],"body_b64":""}'
    mixed = (
        server_frame(False, TEXT, req[:30])
        + server_frame(True, PING, b"p")
        + server_frame(True, CONT, req[30:])
        + server_frame(True, BINARY, bytes(range(200)))
        + server_frame(True, PONG, b"")
        + server_frame(True, CLOSE, b"\x03\xe9")
    )
    write("agent_inbound", "mixed", bytes([3, 17, 100]) + mixed)
    write("agent_inbound", "oversized", bytes([1, 64, 10]) + mixed)
    write("agent_inbound", "stray", bytes([2, 5, 255]) + server_frame(True, CONT, b"x") + mixed)


def link_opening():
    owner, carrier = bytes([9]) * 16, bytes([4]) * 16
    desc = json.dumps({"from": "n2", "session": "s1", "ip": "127.0.0.1", "role": None,
                       "region": "eu"}, separators=(",", ":")).encode()
    mac = hmac.new(b"fuzz-secret-of-thirty-two-bytes!",
                   b"ringrelay-link/2 carrier\n" + owner + carrier + desc, hashlib.sha256).hexdigest()
    proof = carrier.hex().encode() + b" " + mac.encode()
    write("link_opening", "honest", bytes([7]) + desc + b"\n" + proof + b"\nGET / HTTP/1.1\r\n")
    write("link_opening", "wrong-mac",
          bytes([3]) + desc + b"\n" + carrier.hex().encode() + b" " + b"00" * 32 + b"\n")
    write("link_opening", "challenge", bytes([1]) + b"RRLINK/2 " + owner.hex().encode())
    frames = server_frame(True, BINARY, bytes(300)) + server_frame(True, CLOSE, b"\x03\xe8")
    write("link_opening", "frames", bytes([5]) + frames)


def proxy_header():
    request = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n\r\n"
    write("proxy_header", "v1", b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n" + request)
    write("proxy_header", "v1-tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 80\r\n" + request)
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addrs = bytes([203, 0, 113, 9, 10, 0, 0, 1]) + struct.pack(">HH", 4000, 8080)
    tlv = b"\x04\x00\x03abc"
    write("proxy_header", "v2", sig + b"\x21\x11" + struct.pack(">H", len(addrs + tlv)) + addrs + tlv + request)
    write("proxy_header", "v2-local", sig + b"\x20\x00\x00\x00" + request)


if __name__ == "__main__":
    frame_decoder()
    handshake()
    mask_diff()
    utf8_stream()
    jwt_claims()
    config_parse()
    answer_capture()
    agent_inbound()
    link_opening()
    proxy_header()
