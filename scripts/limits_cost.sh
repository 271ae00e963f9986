#!/usr/bin/env bash
# What the protection limits cost when they are on but never hit: two release relays (one
# worker each), one with every per-IP and per-connection limit off, one with every limit on
# and set far above the load, measured by `ringrelay load` in alternating rounds so that
# the shared machine's noise falls on both alike. Prints each round and the median ratio.
#
#   scripts/limits_cost.sh            ROUNDS=8 SIZE=64 PAIRS=4 SECONDS_EACH=3 by default
#
# Everything runs on loopback and is bounded: ROUNDS * 2 runs of SECONDS_EACH (+1 s warm-up).
set -euo pipefail
# shellcheck source=scripts/relay_start.sh
. "$(dirname "${BASH_SOURCE[0]}")/relay_start.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-8}
SIZE=${SIZE:-64}
PAIRS=${PAIRS:-4}
SECONDS_EACH=${SECONDS_EACH:-3}
BIN="$ROOT/target/release/ringrelay"

cd "$ROOT"
cargo build --release --locked --quiet
WORK=$(mktemp -d)
cleanup() {
    for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a relay on free loopback ports with the given environment; prints its public address.
# Called inside $( ): the relay must not hold that pipe open, hence its stdout to /dev/null,
# and its pid goes to a file since the subshell's variables are lost.
start() {
    local name=$1
    shift
    env "$@" "$BIN" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 1 \
        >/dev/null 2>"$WORK/$name.log" &
    echo $! >"$WORK/$name.pid"
    listen_address "$name" "$WORK/$name.log"
}

OFF=$(start off RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0)
ON=$(start on RINGRELAY_LIMITS_IP_CONNECT_RATE=100000000 RINGRELAY_LIMITS_IP_CONNECT_BURST=100000000 \
    RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=100000 \
    RINGRELAY_LIMITS_MESSAGE_RATE=1000000000 RINGRELAY_LIMITS_MESSAGE_BURST=1000000000 \
    RINGRELAY_LIMITS_BYTE_RATE=1099511627776 RINGRELAY_LIMITS_BYTE_BURST=1099511627776)

# Both relays pin their one worker to CPU 0; the client goes on CPU 1 when there is one, so
# the two never fight over a core.
PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN=(taskset -c 1); fi

run() {
    timeout -k 5 $((SECONDS_EACH + 30)) "${PIN[@]}" "$BIN" load --url "ws://$1" --pairs "$PAIRS" --size "$SIZE" \
        --duration "${SECONDS_EACH}s" --warmup 1s --json 2>/dev/null |
        python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["errors"] == 0, d; print(d["msgs_per_s"])'
}

echo "limits_cost: $ROUNDS rounds, $PAIRS pairs, $SIZE B messages, ${SECONDS_EACH}s each; off=$OFF on=$ON"
ratios=()
for r in $(seq "$ROUNDS"); do
    # Alternate which goes first, so neither always gets the warmer machine.
    if ((r % 2)); then off=$(run "$OFF"); on=$(run "$ON"); else on=$(run "$ON"); off=$(run "$OFF"); fi
    ratio=$(python3 -c "print(f'{$on / $off:.3f}')")
    ratios+=("$ratio")
    printf '  round %d: off %10.0f msgs/s   on %10.0f msgs/s   on/off %s\n' "$r" "$off" "$on" "$ratio"
done
python3 - "${ratios[@]}" <<'EOF'
import statistics, sys
r = sorted(float(x) for x in sys.argv[1:])
print(f"median on/off {statistics.median(r):.3f} (min {r[0]:.3f}, max {r[-1]:.3f}, {len(r)} rounds)")
EOF
