#!/usr/bin/env python3
"""Large messages: this relay against a baseline relay and the copying forwarder, on one core.

Issue 17's measurement: 64 KiB messages, 10 pairs a->b, window 32, each server pinned to CPU 0
(relays with one worker, per-IP limits off), the load generator (`ringrelay load`, one
thread; `--raw` for the forwarder) pinned to CPU 1. The servers run side by side and are
measured in alternating rounds, the order rotated each round, so the shared machine's noise
falls on all alike. Per run it takes the payload MB/s from the load's report and the
server's CPU time (/proc/PID/stat utime+stime) over the measured seconds only (sampled after
the warm-up and at the end), so it also gives CPU microseconds per MB forwarded and how busy
the server's core was.

  scripts/large_bench.py [--this BIN] [--base BIN] [--forwarder BIN] [--rounds 4]
                         [--size 65536] [--pairs 10] [--window 32] [--seconds 3]

Defaults: --this target/release/ringrelay, --base /work/wt/bin/ringrelay-main22 when it
exists, --forwarder target/release/examples/tcp_forwarder (`cargo build --release --example
tcp_forwarder`); `--base ''` or `--forwarder ''` leaves one out. The load generator is
--this's unless --load says otherwise. Everything is on loopback and bounded: rounds x
servers runs of seconds + warm-up each.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if os.cpu_count() and os.cpu_count() >= 2 else []


def start(name, argv, env=None, pattern=rb"listen(?:ing on |=)([0-9.:]+)"):
    log = open(f"/tmp/large_bench.{os.getpid()}.{name}.log", "w+b")
    proc = subprocess.Popen(pin(0) + argv, stdout=log, stderr=log, env=env)
    for _ in range(200):
        log.seek(0)
        m = re.search(pattern, log.read())
        if m:
            return proc, m.group(1).decode()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    log.seek(0)
    sys.exit(f"{name} did not start: {log.read().decode(errors='replace')}")


def run(load, addr, raw, a, pid):
    argv = pin(1) + [load, "load", "--url", f"ws://{addr}", "--pairs", str(a.pairs),
                     "--size", str(a.size), "--window", str(a.window),
                     "--duration", f"{int(a.seconds * 1000)}ms", "--warmup", f"{int(a.warmup * 1000)}ms", "--json"]
    if raw:
        argv.append("--raw")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The load connects first (well under the warm-up here), then warms up, then measures.
    time.sleep(a.warmup + 0.05)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(a.seconds - 0.1)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    out, err = p.communicate(timeout=a.seconds + 60)
    if p.returncode != 0:
        sys.exit(f"load against {addr} failed: {err.decode(errors='replace')[-2000:]}")
    d = json.loads(out)
    assert d["errors"] == 0 and d["delivered"] > 0, d
    mb = d["mb_per_s"]
    busy = (c1 - c0) / (t1 - t0)
    return {"mb_s": mb, "busy": busy, "us_per_mb": busy / mb * 1e6}


def spread(xs):
    xs = sorted(xs)
    return f"{statistics.median(xs):.3f} ({xs[0]:.3f}-{xs[-1]:.3f})"


def main():
    base_default = "/work/wt/bin/ringrelay-main22"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--this", default=os.path.join(ROOT, "target/release/ringrelay"))
    ap.add_argument("--base", default=base_default if os.path.exists(base_default) else "")
    ap.add_argument("--forwarder", default=os.path.join(ROOT, "target/release/examples/tcp_forwarder"))
    ap.add_argument("--load", default="")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--env", action="append", default=[],
                    help="KEY=VALUE for this build's relay only (repeatable)")
    ap.add_argument("--base-env", action="append", default=[],
                    help="KEY=VALUE for the base relay only (repeatable)")
    a = ap.parse_args()
    load = a.load or a.this
    env = dict(os.environ, RINGRELAY_LIMITS_IP_CONNECT_RATE="0",
               RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP="0")
    this_env = dict(env, **dict(kv.split("=", 1) for kv in a.env))
    relay = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--workers", "1"]
    servers = []
    try:
        if a.forwarder:
            p, addr = start("forwarder", [a.forwarder, "127.0.0.1:0"])
            servers.append(("forwarder", p, addr, True))
        if a.base:
            base_env = dict(env, **dict(kv.split("=", 1) for kv in a.base_env))
            p, addr = start("base", [a.base] + relay, base_env)
            servers.append(("base", p, addr, False))
        p, addr = start("this", [a.this] + relay, this_env)
        servers.append(("this", p, addr, False))
        print(f"large_bench: {a.size} B x {a.pairs} pairs, window {a.window}, {a.seconds}s "
              f"(+{a.warmup}s warm-up) per run, {a.rounds} rounds; "
              + ", ".join(f"{n}={addr}" for n, _, addr, _ in servers))
        res = {n: [] for n, *_ in servers}
        for r in range(a.rounds):
            k = r % len(servers)
            order = servers[k:] + servers[:k]
            line = []
            for name, proc, addr, raw in order:
                x = run(load, addr, raw, a, proc.pid)
                res[name].append(x)
                line.append(f"{name} {x['mb_s']:7.0f} MB/s {x['busy'] * 100:3.0f}% "
                            f"{x['us_per_mb']:6.0f} us/MB")
            print(f"  round {r + 1}: " + " | ".join(line), flush=True)
        print("median (min-max) over rounds:")
        for name in res:
            print(f"  {name:9} MB/s {spread([x['mb_s'] for x in res[name]])}  "
                  f"core busy {spread([x['busy'] for x in res[name]])}  "
                  f"CPU us/MB {spread([x['us_per_mb'] for x in res[name]])}")

        def ratio(p, q, key):
            return spread([x[key] / y[key] for x, y in zip(res[p], res[q])])
        for p, q in [("this", "forwarder"), ("base", "forwarder"), ("this", "base")]:
            if p in res and q in res:
                print(f"  {p}/{q}: MB/s {ratio(p, q, 'mb_s')}  CPU/MB {ratio(p, q, 'us_per_mb')}")
    finally:
        for _, proc, _, _ in servers:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
