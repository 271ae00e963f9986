#!/usr/bin/env bash
# Instructions the reverse proxy spends per small keep-alive GET, counted by callgrind
# (repeatable on a busy machine, unlike a timing). Runs a release relay (one worker, epoll:
# valgrind does not model io_uring) with one proxy route under `valgrind --tool=callgrind`, in
# front of `ringrelay load --mode http-target` (64-byte answers), sends small keep-alive GETs
# at a fixed rate (so that batching, and thus the count per request, is the same in every
# run), then prints the program's instructions, the requests proxied and their ratio. Start-up
# and the stop are in the total too (the same for every binary); compare binaries in one run:
#
#   scripts/callgrind_proxy.sh [BIN] [OUT]     default target/release/ringrelay, /tmp/proxy.callgrind
#   RATE=2000 SECONDS_EACH=5 CONC=8              requests/s in total, measured seconds, connections
#
# `callgrind_annotate --auto=yes OUT` gives the cost per source line. Needs valgrind.
# Loopback only; bounded by SECONDS_EACH + 60 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/release/ringrelay}
OUT=${2:-/tmp/proxy.callgrind}
RATE=${RATE:-2000}
SECONDS_EACH=${SECONDS_EACH:-5}
CONC=${CONC:-8}
command -v valgrind >/dev/null || { echo "callgrind_proxy: valgrind is needed" >&2; exit 2; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --locked --quiet)
LOAD="$ROOT/target/release/ringrelay"
[ -x "$LOAD" ] || (cd "$ROOT" && cargo build --release --locked --quiet)

PORTS=$(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r PORT APORT <<<"$PORTS"
WORK=$(mktemp -d)
"$LOAD" load --mode http-target --listen 127.0.0.1:0 --size 64 >"$WORK/target.out" 2>&1 &
TPID=$!
trap 'kill -TERM ${VPID:-} $TPID 2>/dev/null || true; rm -rf "$WORK"' EXIT
BACK=""
for _ in $(seq 100); do
  BACK=$(sed -nE 's/.*listening on ([^ ]+).*/\1/p' "$WORK/target.out" | head -1)
  [ -n "$BACK" ] && break
  sleep 0.1
done
[ -n "$BACK" ] || { echo "callgrind_proxy: the backend did not start" >&2; exit 1; }
RINGRELAY_LOG_LEVEL=warn RINGRELAY_LIMITS_IP_CONNECT_RATE=0 \
  RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGRELAY_PROXY_POOL_MAX_IDLE=256 \
  RINGRELAY_PROXY_ROUTES="[{ prefix = \"/\", upstreams = [{ url = \"http://$BACK\" }] }]" \
  valgrind --tool=callgrind --callgrind-out-file="$OUT" \
  "$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$APORT" --workers 1 \
  --driver epoll >/dev/null 2>"$WORK/proxy.log" &
VPID=$!
for _ in $(seq 300); do curl -s -o /dev/null "127.0.0.1:$APORT/health" && break; sleep 0.1; done
timeout -k 5 $((SECONDS_EACH + 30)) "$LOAD" load --mode http --url "http://127.0.0.1:$PORT/bench" \
  --keep-alive --concurrency "$CONC" --rate "$RATE" --duration "${SECONDS_EACH}s" --json \
  2>/dev/null >"$WORK/load.json"
PROXIED=$(curl -s "127.0.0.1:$APORT/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["totals"]["proxy_requests"])')
kill -TERM $VPID
timeout 30 tail --pid=$VPID -f /dev/null || true
IR=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
python3 -c "print(f'instructions {$IR}  requests proxied {$PROXIED}  per request {$IR / $PROXIED:.0f}  (profile: $OUT)')"
