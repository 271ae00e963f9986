#!/usr/bin/env python3
"""Issue 25's benchmark: the longest any message waits while the relay is upgraded (SIGUSR2)
or restarted, against the same run without it (docs/upgrade.md, "Benchmark").

Two cases, each run with the action and without it, alternated within every round so the
shared machine's noise falls on both alike:

  streaming  PAIRS pairs stream both ways at a fixed total RATE (`ringrelay load --rate`:
             latency counts from when a message was due, so a stall is not hidden)
  idle       IDLE connections (IDLE/2 paired sessions that send nothing) held open by HOLDERS
             processes of this script, and beside them PROBE_PAIRS pairs at PROBE_RATE whose
             latency is measured (the load generator times out pairs that stay silent, so it
             cannot hold idle ones itself)

The action, half-way through the measured time:
  usr2     SIGUSR2: the binary upgrade (needs a build with it); the figure is the worst wait
           with it against without it, and the handover time (signal to /health naming the
           new pid)
  restart  SIGTERM, then the same binary again with the same session.state_dir: connections
           are closed with 1012 and the load generator does not reconnect, so the figures
           are the gap (SIGTERM to /health answering again) and the streams cut
  none     both runs without an action (a check of the bench's own noise)

  python3 scripts/upgrade_bench.py                          # release build, usr2, 3 rounds
  ACTION=restart ROUNDS=1 SECONDS_EACH=6 PAIRS=50 IDLE=1000 python3 scripts/upgrade_bench.py

  BIN (target/release/ringrelay), LOAD_BIN (BIN), ACTION (usr2), CASES ("streaming idle"),
  ROUNDS (3), SECONDS_EACH (10), WORKERS (2), PAIRS (1000), RATE (20000), IDLE (10000),
  HOLDERS (2; each holds IDLE/HOLDERS connections, under the 20,000 fds of a process),
  PROBE_PAIRS (20), PROBE_RATE (2000), JSON=1 (one JSON object at the end),
  RELAY_LOG (the relays' RUST_LOG, warn; `ringrelay=debug` logs the handover's phases),
  LOG_FILE (the relays' log is appended there rather than to a temporary file)
Loopback only; bounded: every load has a --duration and every wait a deadline.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E = os.environ.get
BIN = E("BIN", os.path.join(ROOT, "target/release/ringrelay"))
LOAD_BIN = E("LOAD_BIN", BIN)
ACTION = E("ACTION", "usr2")
CASES = E("CASES", "streaming idle").split()
ROUNDS, SECS, WORKERS = int(E("ROUNDS", "3")), int(E("SECONDS_EACH", "10")), E("WORKERS", "2")
PAIRS, RATE = int(E("PAIRS", "1000")), int(E("RATE", "20000"))
IDLE, HOLDERS = int(E("IDLE", "10000")), int(E("HOLDERS", "2"))
PROBE_PAIRS, PROBE_RATE = int(E("PROBE_PAIRS", "20")), int(E("PROBE_RATE", "2000"))
RELAY_LOG, LOG_FILE = E("RELAY_LOG", "warn"), E("LOG_FILE")
WARMUP = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(admin):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=1) as r:
            return json.load(r)
    except OSError:
        return None


def stats(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=2) as r:
        return json.load(r)


def wait_for(what, ok, limit=60.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        v = ok()
        if v:
            return v
        time.sleep(0.02)
    sys.exit(f"upgrade_bench: timed out waiting for {what}")


class Relay:
    def __init__(self, state_dir, log):
        self.port, self.admin, self.state_dir, self.log = free_port(), free_port(), state_dir, log
        self.start()

    def start(self):
        env = dict(os.environ, RUST_LOG=RELAY_LOG, RINGRELAY_SESSION_STATE_DIR=self.state_dir,
                   RINGRELAY_LIMITS_IP_CONNECT_RATE="0", RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP="0",
                   RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP="0", RINGRELAY_CLUSTER_NODE_ID="bench")
        cmd = [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--admin-listen",
               f"127.0.0.1:{self.admin}", "--workers", WORKERS]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        self.pid = wait_for("the relay to start", lambda: (health(self.admin) or {}).get("pid"))

    def act(self, action):
        """Does `action`; returns how long until /health answered from the new process (s)."""
        t = time.monotonic()
        if action == "usr2":
            old = self.pid
            os.kill(old, signal.SIGUSR2)
            self.pid = wait_for("the upgraded process", lambda: (
                (health(self.admin) or {}).get("pid") not in (None, old)) and health(self.admin)["pid"])
        elif action == "restart":
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.start()
        return time.monotonic() - t

    def stop(self):
        for pid in {self.pid, self.proc.pid}:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        wait_for("the relay to stop", lambda: health(self.admin) is None, 30)


def hold(port, pairs):
    """Holder process: opens `pairs` paired sessions' connections, says so, then sits until
    killed, reading nothing (the runs are far shorter than the relay's keepalive)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * pairs + 64), hard))
    held, tag = [], f"idle-{os.getpid()}"
    for i in range(pairs):
        for role in ("a", "b"):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(f"GET /v1/relay/{tag}-{i}?role={role} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit(f"holder: connection {len(held)} closed during its upgrade")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                sys.exit(f"holder: {head[:60]!r}")
            held.append(s)
    print("held", flush=True)
    signal.pause()


def holders(relay):
    share = IDLE // HOLDERS // 2
    procs = [subprocess.Popen([sys.executable, __file__, "--hold", str(relay.port), str(share)],
                              stdout=subprocess.PIPE, text=True) for _ in range(HOLDERS)]
    for p in procs:
        if p.stdout.readline().strip() != "held":
            sys.exit("upgrade_bench: a holder could not open its connections")
    return procs


def load(relay, pairs, rate, seconds, both_ways=True):
    cmd = [LOAD_BIN, "load", "--url", f"ws://127.0.0.1:{relay.port}", "--pairs", str(pairs),
           "--rate", str(rate), "--duration", f"{seconds}s", "--warmup", f"{WARMUP}s", "--json"]
    if both_ways:
        cmd.append("--both-ways")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def one_run(case, action, work):
    with tempfile.TemporaryDirectory(dir=work) as state, open(LOG_FILE or os.path.join(work, "relay.log"), "ab") as log:
        relay = Relay(state, log)
        held = []
        try:
            if case == "idle":
                held = holders(relay)
                probe = load(relay, PROBE_PAIRS, PROBE_RATE, SECS)
            else:
                probe = load(relay, PAIRS, RATE, SECS)
            time.sleep(WARMUP + SECS / 2)
            took = relay.act(action) if action != "none" else None
            out, err = probe.communicate(timeout=SECS + 120)
        finally:
            for h in held:
                h.kill()
                h.wait()
            relay.stop()
    try:
        r = json.loads(out)
    except json.JSONDecodeError:
        sys.exit(f"upgrade_bench: the load printed no report: {err[-2000:]}")
    lat = r["latency_us"]
    return {"case": case, "action": action, "max_us": lat["max"], "p99_us": lat["p99"],
            "p999_us": lat["p999"], "sent": r["sent"], "delivered": r["delivered"],
            "errors": r["errors"], "order": r["order"], "action_s": took}


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit(f"upgrade_bench: no relay at {BIN} (cargo build --release, or BIN=...)")
    runs = []
    with tempfile.TemporaryDirectory() as work:
        for rnd in range(ROUNDS):
            for case in CASES:
                order = [ACTION, "baseline"] if rnd % 2 else ["baseline", ACTION]
                for a in order:
                    r = one_run(case, "none" if a == "baseline" else a, work)
                    r["round"], r["run"] = rnd + 1, a
                    runs.append(r)
                    t = f"{r['action_s']:.3f} s" if r["action_s"] is not None else "-"
                    print(f"round {rnd + 1} {case:9} {a:8} max {r['max_us']:>9} µs  p99.9 "
                          f"{r['p999_us']:>8} µs  delivered {r['delivered']}/{r['sent']}  "
                          f"errors {r['errors']}  order {r['order']}  action {t}", flush=True)
    summary = {}
    for case in CASES:
        med = lambda run, k: statistics.median(x[k] for x in runs if x["case"] == case and x["run"] == run)
        acts = [x["action_s"] for x in runs if x["case"] == case and x["action_s"] is not None]
        summary[case] = {"max_us_with": med(ACTION, "max_us"), "max_us_without": med("baseline", "max_us"),
                         "action_s_median": statistics.median(acts) if acts else None}
        cut = sum(x["order"]["unfinished"] for x in runs if x["case"] == case)
        s = summary[case]
        s["streams_cut"] = cut
        print(f"{case}: longest wait, median of {ROUNDS}: {s['max_us_with']} µs with {ACTION}, "
              f"{s['max_us_without']} µs without; {ACTION} took {s['action_s_median']} s (median)")
        if cut:
            print(f"{case}: {cut} stream(s) were cut by the action: their connections were closed, so "
                  "the longest wait covers only what arrived before (not a figure for the goal)")
    if E("JSON") == "1":
        print(json.dumps({"runs": runs, "summary": summary}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--hold"]:
        hold(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
