#!/usr/bin/env bash
# What holding an agent's JSON messages costs (docs/bridge.md, "How the relay reads the
# agent's messages"): instructions the relay spends per forwarded message, counted by
# callgrind as in scripts/callgrind_relay.sh, for 64-byte binary and 64-byte JSON-object text
# messages, in a plain session (a -> b), from an agent (agent -> web) and towards an agent
# (web -> agent). The sender is Python (websockets) at a fixed rate, so batching, and the
# count per message, is the same in every run; compare two builds with the same script.
#
#   scripts/callgrind_agent.sh [BIN]       default target/release/ringrelay
#   RATE=2000 SECONDS_EACH=5 PAIRS=4         messages/s over all pairs, measured seconds
#   KEEP=DIR                                 keep each profile as DIR/<roles>-<payload>.callgrind
#                                            (for `callgrind_annotate --inclusive=yes FILE`)
#   ONLY="agent->web json"                   run only this case
#
# Needs valgrind and Python's websockets. Loopback only; each run bounded by SECONDS_EACH + 60 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/release/ringrelay}
RATE=${RATE:-2000}
SECONDS_EACH=${SECONDS_EACH:-5}
PAIRS=${PAIRS:-4}
command -v valgrind >/dev/null || { echo "callgrind_agent: valgrind is needed" >&2; exit 2; }
[ -x "$BIN" ] || { echo "callgrind_agent: no binary $BIN" >&2; exit 2; }

SENDER=$(mktemp --suffix .py)
OUTS=$(mktemp -d)
trap 'rm -rf "$SENDER" "$OUTS"' EXIT
cat >"$SENDER" <<'EOF'
import json, os, sys, threading, time
from websockets.sync.client import connect
port, roles, payload, rate, seconds, pairs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
src, dst = roles.split("->")
per = rate / pairs
total = int(per * seconds)
got = [0] * pairs

def message(n):
    if payload == "binary":
        return os.urandom(64)
    m = json.dumps({"type": "status", "seq": n, "pad": ""}, separators=(",", ":"))
    return m[:-2] + "x" * (64 - len(m)) + '"}'

def run(i):
    s = f"cg-{os.getpid()}-{i}"
    opts = dict(compression=None, ping_interval=None, proxy=None, max_size=None, legacy=True)
    rx = connect(f"ws://127.0.0.1:{port}/v1/relay/{s}?role={dst}", **opts)
    tx = connect(f"ws://127.0.0.1:{port}/v1/relay/{s}?role={src}", **opts)
    def recv():
        for _ in range(total):
            rx.recv(timeout=60)
            got[i] += 1
    t = threading.Thread(target=recv)
    t.start()
    start = time.monotonic()
    for n in range(total):
        due = start + n / per
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        tx.send(message(n))
    t.join(90)
    tx.close(); rx.close()

ts = [threading.Thread(target=run, args=(i,)) for i in range(pairs)]
for t in ts: t.start()
for t in ts: t.join(120)
assert sum(got) == total * pairs, (sum(got), total * pairs)
EOF

measure() { # ROLES PAYLOAD AGENT_ROLE
    local roles=$1 payload=$2 agent_role=$3 out="$OUTS/cg.$RANDOM"
    if [ -n "${ONLY:-}" ] && [ "$ONLY" != "$roles $payload" ]; then return; fi
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; out="$KEEP/${roles/->/-}-$payload.callgrind"; fi
    local ports port aport log vpid forwarded ir
    ports=$(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
    read -r port aport <<<"$ports"
    log="$OUTS/log.$RANDOM"
    RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
        RINGRELAY_BRIDGE_AGENT_ROLE="$agent_role" \
        valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$BIN" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$aport" --workers 1 --driver epoll \
        >/dev/null 2>"$log" &
    vpid=$!
    for _ in $(seq 300); do curl -s -o /dev/null "127.0.0.1:$aport/health" && break; sleep 0.1; done
    timeout -k 5 $((SECONDS_EACH + 60)) python3 "$SENDER" "$port" "$roles" "$payload" "$RATE" "$SECONDS_EACH" "$PAIRS"
    forwarded=$(curl -s "127.0.0.1:$aport/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["totals"]["messages_forwarded"])')
    kill -TERM $vpid
    timeout 30 tail --pid=$vpid -f /dev/null || true
    ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    python3 -c "print(f'{\"$roles\":<14} {\"$payload\":<7} forwarded {$forwarded:>6}  instructions/message {$ir / $forwarded:8.0f}')"
}

echo "callgrind_agent: $BIN, $RATE msg/s over $PAIRS pairs for ${SECONDS_EACH}s"
measure "a->b" binary agent
measure "a->b" json agent
measure "agent->web" binary agent
measure "agent->web" json agent
measure "web->agent" binary agent
measure "web->agent" json agent
