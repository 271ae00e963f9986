#!/usr/bin/env python3
"""Measures the resident memory an idle paired connection costs the relay.

Starts the release binary, opens PAIRS sessions (two peers each) from several client
processes bound to distinct 127.0.0.x source addresses, sends one message each way per pair
so every connection has been used, waits, then reads the relay's VmRSS. The figure is
(RSS with the pairs) - (RSS before them), divided by the number of connections.

Usage: scripts/idle_memory.py [--pairs 8000] [--procs 4] [--bin target/release/ringrelay]
"""
import argparse, asyncio, base64, json, multiprocessing as mp, os, re, signal, subprocess, sys, time

KEY = base64.b64encode(os.urandom(16)).decode()
# A few client addresses open thousands of connections each: the per-IP limits (rate, open
# connections, unfinished handshakes) would refuse most of them, so they are off unless the
# environment says otherwise.
PER_IP_OFF = {"RINGRELAY_LIMITS_IP_CONNECT_RATE": "0", "RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP": "0",
              "RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP": "0"}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


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


async def client(worker, pairs, host, port, ready, hold):
    src = f"127.0.0.{10 + worker}"
    conns = []
    sem = asyncio.Semaphore(200)

    async def one(i):
        async with sem:
            path = f"/v1/relay/mem-{worker}-{i}"
            a = await upgrade(host, port, src, path)
            b = await upgrade(host, port, src, path)
            a[1].write(mask(b"ping"))
            assert (await b[0].readexactly(6))[2:] == b"ping"
            b[1].write(mask(b"pong"))
            assert (await a[0].readexactly(6))[2:] == b"pong"
            conns.append((a, b))

    await asyncio.gather(*(one(i) for i in range(pairs)))
    ready.put(len(conns) * 2)
    while not hold.is_set():
        await asyncio.sleep(0.1)


def run_client(worker, pairs, host, port, ready, hold):
    asyncio.run(client(worker, pairs, host, port, ready, hold))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bin", default="target/release/ringrelay")
    ap.add_argument("--server-log", default=None, help="keep the relay's stderr in this file")
    args = ap.parse_args()
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
    port = int(re.search(r"listen=127\.0\.0\.1:(\d+)", line).group(1))
    time.sleep(0.5)
    before = rss_kib(srv.pid)
    ready, hold = mp.Queue(), mp.Event()
    per = args.pairs // args.procs
    procs = [mp.Process(target=run_client, args=(k, per, "127.0.0.1", port, ready, hold)) for k in range(args.procs)]
    t0 = time.time()
    for p in procs:
        p.start()
    conns = sum(ready.get(timeout=300) for _ in procs)
    time.sleep(2)
    after = rss_kib(srv.pid)
    hold.set()
    for p in procs:
        p.join(30)
    srv.send_signal(signal.SIGTERM)
    srv.wait(30)
    per_conn = (after - before) * 1024 / conns
    print(json.dumps({"connections": conns, "rss_before_kib": before, "rss_after_kib": after,
                      "bytes_per_connection": round(per_conn), "setup_s": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
