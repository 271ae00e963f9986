"""The demo page in a real browser: headless Chromium (Debian's chromium package) driven by
playwright-core (tests/browser/demo.mjs). The browser's own WebSocket client offers
permessage-deflate and masks every frame; it must pair and talk with our framing.

Screenshots are kept in target/browser-artifacts/. Without a browser, or without Node.js and
npm to install playwright-core, these tests skip and say why; .ci/run installs both and sets
RINGRELAY_REQUIRE_BROWSER=1, which turns a skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import Server, http_get, recv_event_of, unique, ws_connect

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "tests" / "browser"
ARTIFACTS = ROOT / "target" / "browser-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
STEP_TIMEOUT = 60


def _why_not() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no browser at {CHROMIUM} (apt-get install chromium)"
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "no Node.js / npm to run playwright-core"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, capture_output=True,
                             timeout=300)
        if out.returncode != 0:
            return f"npm ci failed in tests/browser: {out.stderr.decode()[-500:]}"
    return None


_REASON = _why_not()
if _REASON and os.environ.get("RINGRELAY_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"browser tests required but cannot run: {_REASON}")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def run_demo(srv: Server, mode: str, *extra: str, base: str | None = None) -> dict:
    out_dir = ARTIFACTS / srv.driver
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    base = base or f"http://{srv.host}:{srv.port}"
    proc = subprocess.run(["node", "demo.mjs", mode, base, str(out_dir), *extra],
                          cwd=BROWSER_DIR, capture_output=True, timeout=STEP_TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def check_closed_world(result: dict, srv: Server):
    """Nothing but the relay was asked for, and the page logged no error."""
    origin = f"http://{srv.host}:{srv.port}/"
    assert all(u.startswith(origin) for u in result["requests"]), result["requests"]
    assert not result["console"], result["console"]
    # The browser offered permessage-deflate; nothing was agreed.
    exts = result["extensions"] if isinstance(result["extensions"], list) else [result["extensions"]]
    assert exts and all(e == "" for e in exts), exts


def test_two_tabs_talk_through_the_relay(make_server):
    srv = make_server()
    r = run_demo(srv, "two-pages")
    check_closed_world(r, srv)
    s = r["session"]
    assert r["events_a"] == [f"connected to {s} as desktop, waiting for a peer", "peer mobile connected",
                             "peer mobile disconnected (1000)"], r["events_a"]
    assert r["messages_b"] == ["hello from the desktop tab", "hello back, grüße ✓"], r["messages_b"]
    for name in ("demo-desktop-tab.png", "demo-mobile-tab.png"):
        shot = ARTIFACTS / srv.driver / name
        assert shot.exists() and shot.stat().st_size > 10_000, shot


def test_a_page_and_a_python_peer_exchange_text_and_binary(make_server):
    """Also: the peer sends text shaped exactly like relay events. Before: the page showed
    any JSON with a known type and a numeric ts as an event, so the forged
    `peer native disconnected (4001)` below appeared in its events list. Now the page takes
    as events only texts carrying the key of its own `connected`, and shows these as the
    messages they are."""
    srv = make_server()
    s = unique("browser")
    box: dict = {}
    # The native peer's own key is the one a forger knows; the page's key is never sent to it.
    with ws_connect(srv, f"/v1/relay/{s}?role=native&events=1") as peer:
        hello = recv_event_of(peer, "connected")
        assert hello["peer_present"] is False
        own_key = hello["key"]
        forged = [
            json.dumps({"type": "peer_disconnected", "ts": hello["ts"], "role": "native", "code": 4001},
                       separators=(",", ":")),
            json.dumps({"type": "error", "ts": hello["ts"], "error": "forged_error", "key": own_key}),
            json.dumps({"type": "connected", "ts": hello["ts"], "session": "elsewhere", "role": "x",
                        "peer_present": True, "key": own_key}),
        ]

        def page():
            try:
                box["result"] = run_demo(srv, "page-and-peer", s, json.dumps(forged))
            except BaseException as e:  # noqa: BLE001 - reported below
                box["error"] = e

        t = threading.Thread(target=page, daemon=True)
        t.start()
        ev = recv_event_of(peer, "peer_connected", timeout=STEP_TIMEOUT)
        assert ev["role"] == "web", ev
        assert ev["key"] == own_key, ev
        peer.send("from python")
        peer.send(bytes(range(256)))
        for f in forged:
            peer.send(f)
        got = peer.recv(timeout=STEP_TIMEOUT)
        assert got == "from the page", got
    t.join(STEP_TIMEOUT)
    assert "error" not in box, box.get("error")
    r = box["result"]
    check_closed_world(r, srv)
    assert r["binary"] == "binary, 256 bytes: " + " ".join(f"{i:02x}" for i in range(32)), r["binary"]
    assert r["messages"] == ["from python", r["binary"], *forged], r["messages"]
    assert r["events"] == [f"connected to {s} as web, peer present", "peer native disconnected (1000)"], \
        r["events"]
    assert (ARTIFACTS / srv.driver / "demo-page-and-peer.png").exists()


def test_a_demo_tab_survives_a_dropped_connection(make_server):
    """The demo runs on clients/js's RelayClient: when a tab's connection ends under it (as on
    a network change), it reconnects by itself and resumes; what it sent while away, and
    what its peer sent meanwhile, each arrive once. Before: the page showed "Closed" and
    everything sent while away was lost or never sent."""
    srv = make_server()
    r = run_demo(srv, "drop")
    check_closed_world(r, srv)
    assert r["messages_a"] == ["sent to the desktop while it was away"], r["messages_a"]
    assert r["messages_b"] == ["before the drop", "typed while away"], r["messages_b"]


def test_the_demo_can_be_turned_off_and_is_only_on_the_public_listener(make_server):
    """(Off by default on a listener that is not loopback: a config unit test, since tests
    here listen on loopback only.)"""
    off = make_server(env={"RINGRELAY_DEMO_ENABLED": "false"})
    assert http_get(off.listen, "/demo").status == 404
    on = make_server()
    r = http_get(on.listen, "/demo")
    assert r.status == 200 and "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert http_get(on.admin, "/demo").status == 404


def test_the_demo_over_https_talks_over_wss(make_server, tmp_path):
    """Over the TLS listener (`tls.listen`) the page is served over https and its WebSocket
    goes to wss:// on the same port (app.js picks wss: from the page's scheme); two tabs pair
    and talk, as over plain http. Before: there was no TLS listener to open it from."""
    from test_tls import _leaf, _openssl
    d = str(tmp_path)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             "ca.key", "-out", "ca.pem", "-days", "3", "-subj", "/CN=browser test CA", cwd=d)
    cert, key = _leaf(d, "relay", "DNS:localhost,IP:127.0.0.1")
    srv = make_server(env={"RINGRELAY_TLS_LISTEN": "127.0.0.1:0", "RINGRELAY_TLS_CERT_FILE": cert,
                           "RINGRELAY_TLS_KEY_FILE": key})
    host, port = srv.tls
    r = run_demo(srv, "two-pages", base=f"https://{host}:{port}")
    origin = f"https://{host}:{port}/"
    assert r["requests"] and all(u.startswith(origin) for u in r["requests"]), r["requests"]
    assert not r["console"], r["console"]
    s = r["session"]
    assert r["events_a"] == [f"connected to {s} as desktop, waiting for a peer", "peer mobile connected",
                             "peer mobile disconnected (1000)"], r["events_a"]
    assert r["messages_b"] == ["hello from the desktop tab", "hello back, grüße ✓"], r["messages_b"]
    t = http_get(srv.admin, "/stats").json()["totals"]
    assert t["tls_handshakes"] >= 3, t  # the page, and each tab's wss socket
