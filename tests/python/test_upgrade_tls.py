"""TLS connections across binary upgrades (SIGUSR2, issue 25; docs/upgrade.md, "TLS
connections"): pairs over wss on the relay's own TLS listener, TLS 1.3 and TLS 1.2 with
AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305, stream numbered messages both ways through
three upgrades. Every message arrives once and in order, no connection is closed, and the last
process adopted every one of them on carried keys (`handover_tls_adopted`).

Before: a TLS connection was closed with 1012 at every upgrade (its keys lived in rustls in the
old process): each reader here saw a close at the first upgrade.

asyncio clients: one thread per TLS session, as OpenSSL wants (see helpers.TicketsFirst).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time

import pytest
from websockets.asyncio.client import connect

from helpers import Server, http_get, unique, wait_for
from test_tls import pki, tls_env  # noqa: F401 (a fixture)

UPGRADES = 3
SEND_EVERY = 0.01


def contexts(pki):  # noqa: F811
    """One client context per way the connection's records can be protected."""
    out = {}
    out["tls13"] = ssl.create_default_context(cafile=pki["ca"])
    out["tls13"].minimum_version = ssl.TLSVersion.TLSv1_3
    for name, cipher in [("tls12-aes128", "ECDHE-ECDSA-AES128-GCM-SHA256"),
                         ("tls12-aes256", "ECDHE-ECDSA-AES256-GCM-SHA384"),
                         ("tls12-chacha", "ECDHE-ECDSA-CHACHA20-POLY1305")]:
        c = ssl.create_default_context(cafile=pki["ca"])
        c.maximum_version = ssl.TLSVersion.TLSv1_2
        c.set_ciphers(cipher)
        out[name] = c
    return out


def health(srv: Server) -> dict:
    r = http_get(srv.admin, "/health")
    assert r.status == 200
    return r.json()


def stats(srv: Server) -> dict:
    return http_get(srv.admin, "/stats").json()


def counter(doc: dict, name: str) -> int:
    """A counter wherever /stats puts it (totals, or the first level that has it)."""
    stack = [doc]
    while stack:
        d = stack.pop()
        if isinstance(d, dict):
            if name in d and isinstance(d[name], int):
                return d[name]
            stack.extend(d.values())
    raise AssertionError(f"{name} not in /stats")


async def stream(ws, tag: str, stop: asyncio.Event, sent: list, closed: list):
    n = 0
    try:
        while not stop.is_set():
            await ws.send(f"{tag}:{n}")
            sent.append(n)
            n += 1
            await asyncio.sleep(SEND_EVERY)
    except Exception as e:  # the connection closed under the sender
        closed.append(f"sending: {e!r}")


async def read(ws, tag: str, got: list, closed: list):
    try:
        async for m in ws:
            t, n = m.split(":")
            assert t == tag, m
            got.append(int(n))
    except Exception as e:  # a close or a broken stream: the verdict says so
        closed.append(repr(e))
    else:
        closed.append(f"closed {ws.close_code}")


def test_tls_connections_cross_upgrades(driver, pki):  # noqa: F811
    srv = Server(driver=driver, workers=2, env=tls_env(pki, RUST_LOG="info")).start()
    pid = health(srv)["pid"]
    try:
        pid = asyncio.run(_scenario(srv, pki, pid))
    finally:
        # The processes after the first are not this test's children.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        srv.kill()


async def _scenario(srv: Server, pki, pid: int) -> int:  # noqa: F811
    host, port = srv.tls
    ctxs = contexts(pki)
    conns = []
    for name, ctx in ctxs.items():
        session = unique(name)
        a = await connect(f"wss://{host}:{port}/v1/relay/{session}?role=a", ssl=ctx, server_hostname="localhost",
                          ping_interval=None, compression=None, open_timeout=10)
        b = await connect(f"wss://{host}:{port}/v1/relay/{session}?role=b", ssl=ctx, server_hostname="localhost",
                          ping_interval=None, compression=None, open_timeout=10)
        conns.append((name, a, b))
    stop = asyncio.Event()
    verdicts = {}
    tasks = []
    for name, a, b in conns:
        for (src, dst, tag) in [(a, b, f"{name}-ab"), (b, a, f"{name}-ba")]:
            sent, got, closed = [], [], []
            verdicts[tag] = (sent, got, closed)
            tasks.append(asyncio.create_task(stream(src, tag, stop, sent, closed)))
            tasks.append(asyncio.create_task(read(dst, tag, got, closed)))
    await asyncio.sleep(0.3)
    generation = (await asyncio.to_thread(health, srv))["generation"]
    for i in range(UPGRADES):
        old = pid
        os.kill(old, signal.SIGUSR2)
        deadline = time.monotonic() + 20
        while True:
            try:
                h = await asyncio.to_thread(health, srv)
            except (OSError, AssertionError):
                h = {"pid": old}
            if h["pid"] != old:
                break
            assert time.monotonic() < deadline, f"upgrade {i + 1}: no new pid\n{srv.log()[-3000:]}"
            await asyncio.sleep(0.05)
        pid = h["pid"]
        assert h["generation"] == generation + i + 1
        # Every stream keeps flowing under the new process.
        before = {tag: len(got) for tag, (_, got, _) in verdicts.items()}
        deadline = time.monotonic() + 5
        while any(len(v[1]) < before[t] + 10 for t, v in verdicts.items()):
            for tag, (_, got, closed) in verdicts.items():
                assert not closed, f"upgrade {i + 1}: {tag} {closed}"
            stalled = [t for t, v in verdicts.items() if len(v[1]) < before[t] + 10]
            assert time.monotonic() < deadline, f"upgrade {i + 1}: stalled {stalled}"
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.sleep(0.5)
    for tag, (sent, got, closed) in verdicts.items():
        assert not closed, f"{tag}: {closed}"
        assert got == sent, f"{tag}: sent {len(sent)}, got {len(got)}, first difference at " \
                            f"{next((k for k, (x, y) in enumerate(zip(sent, got)) if x != y), min(len(sent), len(got)))}"
        assert len(sent) > 50
    doc = await asyncio.to_thread(stats, srv)
    assert counter(doc, "handover_tls_adopted") == 2 * len(conns), doc
    assert counter(doc, "handover_closed") == 0
    for t in tasks:
        t.cancel()
    for _, a, b in conns:
        for ws in (a, b):
            ws.transport.abort()
    return pid
