#!/usr/bin/env bash
# Same-node against cross-node pairs, on one machine: a redis-server and two release relay
# nodes (one worker each) on loopback. A same-node run connects both peers of every pair to
# node 1; a cross-node run connects the second peer to node 2, which carries it to node 1
# over the node-to-node link. Rounds alternate, so the shared machine's noise falls on both.
# Each run is closed-loop (throughput) or fixed-rate (latency, RATE msgs/s); Redis commands
# processed during each run are counted, to show the hop costs no Redis work per message.
#
#   scripts/cluster_bench.sh                 defaults below
#   ROUNDS=6 SIZE=64 PAIRS=4 SECONDS_EACH=3 RATE=20000 scripts/cluster_bench.sh
#   LINK_TLS=1 scripts/cluster_bench.sh        the node-to-node link over TLS (cluster.tls_*,
#       a cluster CA and node certificates made here with openssl), to set beside a run
#       without it: the hop's cost of TLS
#   RELAY_BIN=target/debug/ringrelay ...        another binary, not rebuilt (a quick check)
#   HOP_CALLGRIND=1 scripts/cluster_bench.sh   instead: node 2 (the carrying node) runs under
#       callgrind (epoll) for one closed-loop cross-node run, and the instructions it spent
#       per message carried are printed, to set beside scripts/callgrind_relay.sh's
#       instructions per message forwarded by a relay (the "one extra forward").
#
# Everything runs on loopback and is bounded: ROUNDS * 4 runs of SECONDS_EACH (+1 s warm-up).
set -euo pipefail
# shellcheck source=scripts/relay_start.sh
. "$(dirname "${BASH_SOURCE[0]}")/relay_start.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-6}
SIZE=${SIZE:-64}
PAIRS=${PAIRS:-4}
SECONDS_EACH=${SECONDS_EACH:-3}
RATE=${RATE:-20000}
BIN=${RELAY_BIN:-"$ROOT/target/release/ringrelay"}
SECRET="cluster-bench-secret-of-at-least-32-bytes"

command -v redis-server >/dev/null || { echo "cluster_bench: needs redis-server" >&2; exit 1; }
cd "$ROOT"
[ -n "${RELAY_BIN:-}" ] || cargo build --release --locked --quiet
WORK=$(mktemp -d)
cleanup() {
    for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# LINK_TLS=1: a cluster CA and one node certificate (IP SAN 127.0.0.1, the nodes' internal
# address; serverAuth and clientAuth, since it serves both ways), shared by both nodes.
TLS_ENV=()
if [ -n "${LINK_TLS:-}" ]; then
    command -v openssl >/dev/null || { echo "cluster_bench: LINK_TLS needs openssl" >&2; exit 1; }
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -days 2 \
        -subj "/CN=cluster_bench CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    openssl req "${ec[@]}" -keyout "$WORK/node.key" -out "$WORK/node.csr" -subj "/CN=node" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$WORK/node.ext"
    openssl x509 -req -in "$WORK/node.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
        -CAcreateserial -out "$WORK/node.pem" -days 2 -extfile "$WORK/node.ext" 2>/dev/null
    TLS_ENV=(RINGRELAY_CLUSTER_TLS_CERT_FILE="$WORK/node.pem" RINGRELAY_CLUSTER_TLS_KEY_FILE="$WORK/node.key"
        RINGRELAY_CLUSTER_TLS_CA_FILE="$WORK/ca.pem")
fi

REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
echo $! >"$WORK/redis.pid"
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
commands() { redis-cli -p "$REDIS_PORT" info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }

# Starts a node on free loopback ports; prints its public address (see ab_relay.sh on why
# the pid goes to a file).
start() {
    local name=$1
    shift
    env RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
        RINGRELAY_CLUSTER_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" RINGRELAY_CLUSTER_NODE_ID="$name" \
        RINGRELAY_CLUSTER_INTERNAL_LISTEN=127.0.0.1:0 RINGRELAY_CLUSTER_SECRET="$SECRET" \
        RINGRELAY_CLUSTER_KEY_PREFIX="bench$$" "${TLS_ENV[@]}" \
        "$@" "$BIN" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 1 \
        ${DRIVER:+--driver "$DRIVER"} >/dev/null 2>"$WORK/$name.log" &
    echo $! >"$WORK/$name.pid"
    listen_address "$name" "$WORK/$name.log" 300
}
N1=$(start n1)
if [ -n "${HOP_CALLGRIND:-}" ]; then
    command -v valgrind >/dev/null || { echo "cluster_bench: HOP_CALLGRIND needs valgrind" >&2; exit 2; }
    OUT=/tmp/ringrelay-hop.callgrind
    N2=$(DRIVER=epoll start n2 valgrind --tool=callgrind --callgrind-out-file="$OUT")
    sleep 2
    out=$(timeout -k 5 $((SECONDS_EACH + 60)) "$BIN" load --url "ws://$N1" --url-b "ws://$N2" \
        --pairs "$PAIRS" --size "$SIZE" --duration "${SECONDS_EACH}s" --warmup 1s --both-ways \
        --json 2>/dev/null)
    kill -TERM "$(cat "$WORK/n2.pid")"
    timeout 60 tail --pid="$(cat "$WORK/n2.pid")" -f /dev/null || true
    IR=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    python3 -c 'import json, sys; d = json.loads(sys.argv[1]); assert d["errors"] == 0, d
ir, n = int(sys.argv[2]), d["delivered"]
print(f"carrying node: instructions {ir}  messages carried {n}  per message {ir / n:.1f}  (profile: {sys.argv[3]})")' \
        "$out" "$IR" "$OUT"
    exit 0
fi
N2=$(start n2)
sleep 1

# Prints "msgs/s p99_us redis_commands" for one run; $1 is where the second peers go.
run() {
    local b=$1
    shift
    local before after out
    before=$(commands)
    out=$(timeout -k 5 $((SECONDS_EACH + 30)) "$BIN" load --url "ws://$N1" --url-b "ws://$b" \
        --pairs "$PAIRS" --size "$SIZE" --duration "${SECONDS_EACH}s" --warmup 1s --both-ways \
        --json "$@" 2>/dev/null)
    after=$(commands)
    python3 -c 'import json, sys; d = json.loads(sys.argv[1]); assert d["errors"] == 0, d
print(round(d["msgs_per_s"]), d["latency_us"]["p99"], int(sys.argv[2]) - int(sys.argv[3]) - 1, d["delivered"])' \
        "$out" "$after" "$before"
}

echo "cluster_bench: $ROUNDS rounds, $PAIRS pairs both ways, $SIZE B, ${SECONDS_EACH}s each; node1=$N1 node2=$N2${LINK_TLS:+; link over TLS}"
rows=()
for r in $(seq "$ROUNDS"); do
    for mode in closed rate; do
        extra=()
        [ "$mode" = rate ] && extra=(--rate "$RATE")
        if ((r % 2)); then
            same=$(run "$N1" "${extra[@]}"); cross=$(run "$N2" "${extra[@]}")
        else
            cross=$(run "$N2" "${extra[@]}"); same=$(run "$N1" "${extra[@]}")
        fi
        rows+=("$mode $same $cross")
        printf '  round %d %-6s same: %8s msgs/s p99 %6s us (%s redis cmds, %s msgs)   cross: %8s msgs/s p99 %6s us (%s redis cmds, %s msgs)\n' \
            "$r" "$mode" $same $cross
    done
done
python3 - "${rows[@]}" <<'EOF'
import statistics, sys
rows = [r.split() for r in sys.argv[1:]]
for mode in ("closed", "rate"):
    rs = [list(map(float, r[1:])) for r in rows if r[0] == mode]
    tput = sorted(c[4] / c[0] for c in rs)
    p99 = sorted(c[5] / c[1] for c in rs)
    cmds = sum(c[2] + c[6] for c in rs)
    msgs = sum(c[3] + c[7] for c in rs)
    print(f"{mode:6}: cross/same throughput median {statistics.median(tput):.3f} "
          f"(min {tput[0]:.3f}, max {tput[-1]:.3f}); p99 median {statistics.median(p99):.2f}x "
          f"(min {p99[0]:.2f}, max {p99[-1]:.2f}); {cmds:.0f} Redis commands for {msgs:.0f} messages")
EOF
