#!/usr/bin/env python3
"""Relay CPU time per delivered message, with and without resume and two-way resume's acks.

Each VARIANT is a relay binary and a `ringrelay load` mode: `plain` (no resume), `resume`
(`--resume`: the relay keeps a replay window and counts what each peer sends) and `acks`
(`--acks`: resume plus `events=1`, so the relay also sends each sender its `ack` events). One
relay per binary runs pinned to CPU 0 with one worker; the load runs pinned to CPU 1. Every
round runs every variant once, in a rotated order (so none always gets the warmer machine),
and measures the relay's utime + stime (/proc/PID/stat) over the run divided by the messages
it forwarded in that run (its /stats). CPU time per message, unlike a rate, does not move with
the other developers' builds on the shared machine as much; the spread over rounds says how
much it still does.

Usage: scripts/ack_cost.py [--bin target/release/ringrelay] [--base-bin PATH]
                           [--rounds 4] [--seconds 4] [--pairs 4] [--size 64]
                           [--modes plain,resume,acks] [--driver io_uring|epoll]
                           [--load-args '--rate 100000 --both-ways']
With --base-bin the modes run on both binaries ("base:acks" beside "this:acks").
Loopback only; bounded by rounds * variants * (seconds + 30 s).
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_ARGS = {"plain": [], "resume": ["--resume"], "acks": ["--acks"]}


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cpu_ticks(pid):
    """(utime, stime) in clock ticks: fields 14 and 15 of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def syscalls(pid):
    """(read, write) system calls so far (/proc/PID/io: syscr, syscw); with --driver epoll
    they are the socket reads and writes, so they show how the reads were batched."""
    with open(f"/proc/{pid}/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    return int(io["syscr"]), int(io["syscw"])


def forwarded(admin):
    with urllib.request.urlopen(f"http://{admin}/stats", timeout=5) as r:
        return json.load(r)["totals"]["messages_forwarded"]


class Relay:
    def __init__(self, name, binary, driver, log_dir):
        self.name = name
        port, aport = free_ports(2)
        self.url, self.admin = f"ws://127.0.0.1:{port}", f"127.0.0.1:{aport}"
        env = dict(os.environ, RINGRELAY_LIMITS_IP_CONNECT_RATE="0",
                   RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP="0")
        self.log = open(os.path.join(log_dir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", binary, "--listen", f"127.0.0.1:{port}", "--admin-listen",
             self.admin, "--workers", "1", "--driver", driver],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        for _ in range(200):
            try:
                forwarded(self.admin)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"ack_cost: relay {name} did not start (log: {self.log.name})")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run(load_bin, relay, mode, args):
    t0, m0, c0 = cpu_ticks(relay.proc.pid), forwarded(relay.admin), syscalls(relay.proc.pid)
    cmd = ["taskset", "-c", "1", load_bin, "load", "--url", relay.url, "--pairs", str(args.pairs),
           "--size", str(args.size), "--duration", f"{args.seconds}s", "--warmup", "1s",
           "--json"] + LOAD_ARGS[mode] + args.load_args.split()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 30)
    report = json.loads(out.stdout)
    if report["errors"]:
        raise SystemExit(f"ack_cost: load errors: {report}")
    t1, m1, c1 = cpu_ticks(relay.proc.pid), forwarded(relay.admin), syscalls(relay.proc.pid)
    n = max(m1 - m0, 1)
    per_msg = 1e6 / CLK_TCK / n
    user, system = (t1[0] - t0[0]) * per_msg, (t1[1] - t0[1]) * per_msg
    calls = ((c1[0] - c0[0]) / n, (c1[1] - c0[1]) / n)
    return user + system, user, report["msgs_per_s"], calls


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/ringrelay")
    p.add_argument("--base-bin")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--modes", default="plain,resume,acks")
    p.add_argument("--driver", default="io_uring")
    p.add_argument("--load-args", default="",
                   help="more `ringrelay load` arguments, e.g. '--rate 100000 --both-ways'")
    args = p.parse_args()
    modes = args.modes.split(",")
    bins = [("this", args.bin)] + ([("base", args.base_bin)] if args.base_bin else [])
    log_dir = tempfile.mkdtemp(prefix="ack_cost.")
    relays = {name: Relay(name, b, args.driver, log_dir) for name, b in bins}
    variants = [(name, m) for name, _ in bins for m in modes]
    per = {v: [] for v in variants}
    rates = {v: [] for v in variants}
    try:
        for r in range(args.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for name, mode in order:
                us, user, rate, (rd, wr) = run(args.bin, relays[name], mode, args)
                per[(name, mode)].append(us)
                rates[(name, mode)].append(rate)
                print(f"round {r + 1} {name}:{mode:7} {us:.3f} us/msg (user {user:.3f}, "
                      f"system {us - user:.3f})  {rate:,.0f} msgs/s  read/write calls per "
                      f"message {rd:.3f} {wr:.3f}", flush=True)
    finally:
        for relay in relays.values():
            relay.stop()
    print(f"relay CPU per message (us), {args.rounds} rounds, {args.pairs} pairs, "
          f"{args.size} B, {args.driver}: median (min..max)")
    ref = statistics.median(per[variants[0]])
    for v in variants:
        xs = sorted(per[v])
        med = statistics.median(xs)
        print(f"  {v[0]}:{v[1]:7} {med:.3f} ({xs[0]:.3f}..{xs[-1]:.3f})  x{med / ref:.3f} of "
              f"{variants[0][0]}:{variants[0][1]}  rate median {statistics.median(rates[v]):,.0f}")
    # The figure: acks against resume, per binary, as the median of per-round ratios.
    for name, _ in bins:
        if "acks" in modes and "resume" in modes:
            ratios = sorted(a / b for a, b in zip(per[(name, "acks")], per[(name, "resume")]))
            print(f"  {name}: acks / resume per round: "
                  + " ".join(f"{x:.3f}" for x in ratios)
                  + f"  median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    sys.exit(main())
