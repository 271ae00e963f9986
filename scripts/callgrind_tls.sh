#!/usr/bin/env bash
# Instructions the relay spends per unit of TLS work, counted by callgrind: repeatable on a
# busy machine, where timings are not. The TLS twin of scripts/callgrind_relay.sh: a release
# relay (one worker, epoll: valgrind does not model io_uring) serving `tls.listen` with an
# ECDSA P-256 certificate (openssl, in a temp dir) runs under `valgrind --tool=callgrind`
# while `ringrelay load` (not under valgrind) drives it over wss://; then the program's
# instructions, the units of work done and their ratio are printed. The profile is kept for
# `callgrind_annotate --auto=yes FILE` (cost per source line) or `--inclusive=yes`.
#
#   scripts/callgrind_tls.sh [BIN] [OUT]   default target/release/ringrelay, /tmp/ringrelay-tls.callgrind
#   LOAD=64B        4 pairs of 64 B messages at RATE msgs/s (default 4000): per message forwarded
#   LOAD=64KiB      4 pairs of 64 KiB messages at RATE msgs/s (default 20): per MB forwarded
#   LOAD=connect    16 loops of new connections (full handshake, upgrade, close): per handshake
#   LOAD=connect-resume  the same, resuming with the server's tickets
#   SECONDS_EACH=5  measured seconds (after 1 s of warm-up)
#   PLAIN=1         the same load over ws:// (no TLS), for TLS's own cost against it
#
# A fixed rate, well under what the relay manages under valgrind, keeps the batching (messages per read, per record) the same from run to run,
# so counts compare across builds. The start-up and the warm-up are in the count too: a few
# million instructions, under 1 % of a run. Loopback only; bounded by SECONDS_EACH + 60 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/release/ringrelay}
OUT=${2:-/tmp/ringrelay-tls.callgrind}
LOAD_KIND=${LOAD:-64B}
SECONDS_EACH=${SECONDS_EACH:-5}
command -v valgrind >/dev/null || { echo "callgrind_tls: valgrind is needed" >&2; exit 2; }
command -v openssl >/dev/null || { echo "callgrind_tls: openssl is needed" >&2; exit 2; }
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --locked --quiet)
LOAD_BIN=${LOAD_BIN:-$ROOT/target/release/ringrelay}
[ -x "$LOAD_BIN" ] || (cd "$ROOT" && cargo build --release --locked --quiet)

WORK=$(mktemp -d)
VPID=""
cleanup() {
    [ -z "$VPID" ] || kill -TERM "$VPID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
openssl req -x509 "${EC[@]}" -nodes -days 2 -subj /CN=callgrind-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req "${EC[@]}" -nodes -subj /CN=localhost -keyout "$WORK/server.key" \
    -out "$WORK/server.csr" 2>/dev/null
printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'extendedKeyUsage=serverAuth' >"$WORK/ext.cnf"
openssl x509 -req -days 2 -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -extfile "$WORK/ext.cnf" -out "$WORK/server.pem" 2>/dev/null

PORTS=$(python3 -c 'import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r PORT TPORT APORT <<<"$PORTS"
cat >"$WORK/relay.toml" <<EOF
[tls]
listen = "127.0.0.1:$TPORT"
cert_file = "$WORK/server.pem"
key_file = "$WORK/server.key"
EOF
URL="wss://127.0.0.1:$TPORT"
[ -z "${PLAIN:-}" ] || URL="ws://127.0.0.1:$PORT"

case $LOAD_KIND in
64B) ARGS=(--mode pairs --pairs 4 --size 64 --rate "${RATE:-4000}") ;;
64KiB) ARGS=(--mode pairs --pairs 4 --size 65536 --rate "${RATE:-20}") ;;
connect) ARGS=(--mode connect --pairs 16) ;;
connect-resume) ARGS=(--mode connect --pairs 16 --tls-resume) ;;
*) echo "callgrind_tls: LOAD=$LOAD_KIND: 64B, 64KiB, connect or connect-resume" >&2; exit 2 ;;
esac
[[ $URL != wss://* ]] || ARGS+=(--ca-file "$WORK/ca.pem")

RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
    RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP=0 \
    valgrind --tool=callgrind --callgrind-out-file="$OUT" \
    "$BIN" --config "$WORK/relay.toml" --listen "127.0.0.1:$PORT" \
    --admin-listen "127.0.0.1:$APORT" --workers 1 --driver epoll >/dev/null 2>"$WORK/log" &
VPID=$!
for _ in $(seq 300); do curl -s -o /dev/null "127.0.0.1:$APORT/health" && break; sleep 0.1; done
# The load runs 1 s of warm-up and SECONDS_EACH + 2 s more; the count covers SECONDS_EACH of
# them in the middle (callgrind_control zeroes the counters, then dumps them), so the start,
# the certificate loading and the pairs' own handshakes are left out.
timeout -k 5 $((SECONDS_EACH + 40)) "$LOAD_BIN" load --url "$URL" "${ARGS[@]}" \
    --duration "$((SECONDS_EACH + 2))s" --warmup 1s --json 2>/dev/null >"$WORK/load.json" &
LPID=$!
units() {
    curl -s "127.0.0.1:$APORT/stats" | python3 -c 'import json, sys
t = json.load(sys.stdin)["totals"]
print(t["messages_forwarded"], t["connections_accepted"], t.get("tls_handshakes", 0))'
}
# The scrapes are outside the counted span (one costs the relay some millions).
sleep 2
U0=$(units)
callgrind_control -z "$VPID" >/dev/null 2>&1
sleep "$SECONDS_EACH"
callgrind_control -d "$VPID" >/dev/null 2>&1
U1=$(units)
wait "$LPID"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["errors"] == 0, d' "$WORK/load.json"
kill -TERM "$VPID"
timeout 30 tail --pid="$VPID" -f /dev/null || true
VPID=""
PART=$(ls -t "$OUT".* 2>/dev/null | head -1)
IR=$(callgrind_annotate "$PART" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
python3 - "$IR" "$LOAD_KIND" "$PART" "$U0" "$U1" <<'PY2'
import sys
ir, kind, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
(m0, c0, h0), (m1, c1, h1) = ([int(x) for x in a.split()] for a in sys.argv[4:6])
if kind.startswith("connect"):
    units, name = (h1 - h0) or (c1 - c0), "connections"
elif kind == "64KiB":
    units, name = (m1 - m0) * 65536 / 1e6, "MB forwarded"
else:
    units, name = m1 - m0, "messages forwarded"
print(f"instructions {ir}  {name} {units:.6g}  per unit {ir / units:.1f}  (profile: {out})")
PY2
