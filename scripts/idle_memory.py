#!/usr/bin/env python3
"""Measures the resident memory an idle paired connection costs the relay, the way issue 17
describes a reconnect storm after a restart.

One client thread (one asyncio loop) opens PAIRS sessions (two peers each) as fast as it can,
with INFLIGHT pairs' handshakes in flight at once, alternating between SOURCES distinct
127.0.0.x source addresses; each pair exchanges one message each way to confirm it. The
connections are then held HOLD seconds and the relay's VmRSS is read. Figures:

- bytes_per_connection = (RSS with the pairs held - RSS before the burst) / connections
- rss_after_close_kib: RSS SETTLE seconds after every connection closed; returned_within is
  (after_close - before) / before, which should stay under 10%.

Each reading is also split into RssAnon (the heap: what the relay holds) and RssFile (mostly
the binary's code pages, which the storm's first connections page in and which stay):
anon_kib and file_kib are [before, held, after close], anon_returned_within is the anonymous
part's growth over the whole RSS before. --warmup N opens and closes N pairs first, so that
`before` is a relay that has served connections rather than one that has served none.

Usage: scripts/idle_memory.py [--pairs 5000] [--inflight 256] [--sources 2] [--hold 10]
                              [--workers 1] [--bin target/release/ringrelay] [--rounds N]
                              [--warmup 0]
Extra server environment (e.g. MIMALLOC_PURGE_DELAY=0) passes through from the environment.
"""
import argparse, asyncio, base64, json, os, re, signal, statistics, subprocess, sys, threading, time

KEY = base64.b64encode(os.urandom(16)).decode()
# Two client addresses open thousands of connections each: the per-IP limits (rate, open
# connections, unfinished handshakes) would refuse most of them, so they are off unless the
# environment says otherwise.
PER_IP_OFF = {"RINGRELAY_LIMITS_IP_CONNECT_RATE": "0", "RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP": "0",
              "RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP": "0"}


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def rss_parts(pid):
    """VmRSS and its parts: RssAnon is the heap (what the relay holds), RssFile mostly the
    binary's own code pages, which the first connections fault in and which stay (shared,
    clean, reclaimable by the kernel)."""
    return {k: rss_kib(pid, f) for k, f in (("rss", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile"))}


def dump_smaps(args, pid, label):
    """Keeps /proc/PID/smaps at one point of the round (--smaps-dir), to see which mappings
    grew and which kept their growth after the connections closed."""
    if args.smaps_dir:
        os.makedirs(args.smaps_dir, exist_ok=True)
        with open(f"/proc/{pid}/smaps") as f, open(f"{args.smaps_dir}/{label}.smaps", "w") as out:
            out.write(f.read())


def mask(payload):
    m = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + m + bytes(b ^ m[i % 4] for i, b in enumerate(payload))


async def upgrade(host, port, src, path):
    r, w = await asyncio.open_connection(host, port, local_addr=(src, 0))
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n".encode())
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return r, w


async def burst(args, port, tag, pairs=None):
    """Opens the pairs; returns the list of open (reader, writer) pairs of pairs."""
    conns = []
    pairs = args.pairs if pairs is None else pairs
    sem = asyncio.Semaphore(args.inflight)

    async def one(i):
        async with sem:
            src = f"127.0.0.{10 + i % args.sources}"
            path = f"/v1/relay/mem-{tag}-{i}"
            a = await upgrade("127.0.0.1", port, src, path)
            b = await upgrade("127.0.0.1", port, src, path)
            a[1].write(mask(b"ping"))
            assert (await b[0].readexactly(6))[2:] == b"ping"
            b[1].write(mask(b"pong"))
            assert (await a[0].readexactly(6))[2:] == b"pong"
            conns.append((a, b))

    await asyncio.gather(*(one(i) for i in range(pairs)))
    return conns


async def close_all(conns):
    for a, b in conns:
        for _, w in (a, b):
            w.close()
    await asyncio.gather(*(w.wait_closed() for a, b in conns for _, w in (a, b)),
                         return_exceptions=True)


def start_server(args):
    log = open(args.server_log, "w+") if args.server_log else subprocess.PIPE
    srv = subprocess.Popen([args.bin, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                            "--workers", str(args.workers)], stderr=log, text=True,
                           env={**PER_IP_OFF, **os.environ,
                                "RUST_LOG": "warn,ringrelay=info,ringrelay::relay=warn"})
    line = ""
    deadline = time.time() + 10
    while "listening" not in line:
        if args.server_log:
            time.sleep(0.05)
            with open(args.server_log) as f:
                line = next((l for l in f if "listening" in l), "")
        else:
            line = srv.stderr.readline()
        if time.time() > deadline:
            sys.exit("server did not start")
    if not args.server_log:
        # Keep reading the relay's log, so a full pipe never blocks its worker threads.
        threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    return srv, int(re.search(r"listen=127\.0\.0\.1:(\d+)", line).group(1))


async def one_round(args):
    srv, port = start_server(args)
    try:
        if args.warmup:
            # A relay that has served a few connections before the storm: the code the
            # storm runs is paged in already, so `before` is a running relay's level.
            await close_all(await burst(args, port, "w", args.warmup))
        await asyncio.sleep(0.5 + (args.settle if args.warmup else 0))
        before_parts = rss_parts(srv.pid)
        before = before_parts["rss"]
        dump_smaps(args, srv.pid, "before")
        t0 = time.time()
        conns = await burst(args, port, "r")
        setup = time.time() - t0
        await asyncio.sleep(args.hold)
        held_parts = rss_parts(srv.pid)
        held = held_parts["rss"]
        dump_smaps(args, srv.pid, "held")
        n = len(conns) * 2
        await close_all(conns)
        await asyncio.sleep(args.settle)
        after_parts = rss_parts(srv.pid)
        after_close = after_parts["rss"]
        dump_smaps(args, srv.pid, "after_close")
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(30)
    return {"workers": args.workers, "connections": n, "rss_before_kib": before, "rss_held_kib": held,
            "rss_after_close_kib": after_close, "bytes_per_connection": round((held - before) * 1024 / n),
            "returned_within": round((after_close - before) / before, 3), "setup_s": round(setup, 1),
            "anon_kib": [before_parts["anon"], held_parts["anon"], after_parts["anon"]],
            "file_kib": [before_parts["file"], held_parts["file"], after_parts["file"]],
            "anon_returned_within": round((after_parts["anon"] - before_parts["anon"]) / before, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--inflight", type=int, default=256, help="pairs being opened at once")
    ap.add_argument("--sources", type=int, default=2, help="distinct 127.0.0.x source addresses")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds the pairs are held idle")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after closing before RSS is read")
    ap.add_argument("--warmup", type=int, default=0,
                    help="open and close this many pairs before reading RSS before the burst")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--bin", default="target/release/ringrelay")
    ap.add_argument("--smaps-dir", default=None,
                    help="write /proc/PID/smaps before the burst, while held and after close here")
    ap.add_argument("--server-log", default=None, help="keep the relay's stderr in this file")
    args = ap.parse_args()
    results = []
    for _ in range(args.rounds):
        r = asyncio.run(one_round(args))
        print(json.dumps(r), flush=True)
        results.append(r)
    if len(results) > 1:
        per = [r["bytes_per_connection"] for r in results]
        back = [r["returned_within"] for r in results]
        print(json.dumps({"median_bytes_per_connection": statistics.median(per),
                          "min": min(per), "max": max(per),
                          "median_returned_within": statistics.median(back)}))


if __name__ == "__main__":
    main()
