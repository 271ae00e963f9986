#!/usr/bin/env bash
# Instructions the relay spends per forwarded message, counted by callgrind (repeatable on a
# busy machine, unlike a timing). Runs a release relay (one worker, epoll: valgrind does not
# model io_uring) under `valgrind --tool=callgrind`, sends a fixed-rate load of 64-byte
# messages (so that batching, and thus the count per message, is the same in every run),
# then prints the program's instructions, the messages forwarded and their ratio. The
# profile is kept for `callgrind_annotate --auto=yes FILE`, which gives the cost per source
# line.
#
#   scripts/callgrind_relay.sh [BIN] [OUT]     default target/release/ringrelay, /tmp/ringrelay.callgrind
#   RATE=20000 SECONDS_EACH=5                    messages/s over all pairs (0: closed loop,
#                                                where batching varies), measured seconds
#   LOAD_ARGS=--resume                           more `ringrelay load` arguments
#
# Needs valgrind (Debian's valgrind package). Loopback only; bounded by SECONDS_EACH + 60 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/release/ringrelay}
OUT=${2:-/tmp/ringrelay.callgrind}
RATE=${RATE:-20000}
SECONDS_EACH=${SECONDS_EACH:-5}
read -r -a LOAD_ARGS <<<"${LOAD_ARGS:-}"
[ "$RATE" = 0 ] || LOAD_ARGS+=(--rate "$RATE")
command -v valgrind >/dev/null || { echo "callgrind_relay: valgrind is needed" >&2; exit 2; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --locked --quiet)
LOAD="$ROOT/target/release/ringrelay"
[ -x "$LOAD" ] || (cd "$ROOT" && cargo build --release --locked --quiet)

PORTS=$(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r PORT APORT <<<"$PORTS"
LOG=$(mktemp)
RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
    valgrind --tool=callgrind --callgrind-out-file="$OUT" \
    "$BIN" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$APORT" --workers 1 --driver epoll \
    >/dev/null 2>"$LOG" &
VPID=$!
trap 'kill -TERM $VPID 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 300); do curl -s -o /dev/null "127.0.0.1:$APORT/health" && break; sleep 0.1; done
timeout -k 5 $((SECONDS_EACH + 30)) "$LOAD" load --url "ws://127.0.0.1:$PORT" --pairs 4 --size 64 \
    --duration "${SECONDS_EACH}s" --warmup 1s --json "${LOAD_ARGS[@]}" 2>/dev/null |
    python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["errors"] == 0, d'
FORWARDED=$(curl -s "127.0.0.1:$APORT/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["totals"]["messages_forwarded"])')
kill -TERM $VPID
timeout 30 tail --pid=$VPID -f /dev/null || true
IR=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
python3 -c "print(f'instructions {$IR}  messages forwarded {$FORWARDED}  per message {$IR / $FORWARDED:.1f}  (profile: $OUT)')"
