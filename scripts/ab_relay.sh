#!/usr/bin/env bash
# Throughput of this build against another build of the relay, for claims such as "the
# single-node path is unchanged within 2%". Two release relays (one worker each) run side by
# side; `ringrelay load --mode pairs` measures each in alternating rounds, so that the shared
# machine's noise falls on both alike. Prints each round and the median of the per-round
# ratios (this build / the other).
#
#   scripts/ab_relay.sh REV             the other build: git revision REV, built in a worktree
#   BASE_BIN=path scripts/ab_relay.sh   the other build: a binary already built
#   BASE_BIN=target/release/ringrelay LOAD_B=--resume scripts/ab_relay.sh
#                                       one build against itself, this side's load with --resume
#   ROUNDS=10 SIZE=64 PAIRS=4 SECONDS_EACH=3 ENV_B="RINGRELAY_X=1" (environment for this build)
#   LOAD_B="--resume"                   more `ringrelay load` arguments for this build's runs
#   LOAD_A="--resume"                   ... and for the other build's (the load is this build's)
#
# Everything runs on loopback and is bounded: ROUNDS * 2 runs of SECONDS_EACH (+1 s warm-up).
set -euo pipefail
# shellcheck source=scripts/relay_start.sh
. "$(dirname "${BASH_SOURCE[0]}")/relay_start.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-10}
SIZE=${SIZE:-64}
PAIRS=${PAIRS:-4}
SECONDS_EACH=${SECONDS_EACH:-3}
read -r -a ENV_B <<<"${ENV_B:-}"
read -r -a LOAD_B <<<"${LOAD_B:-}"
read -r -a LOAD_A <<<"${LOAD_A:-}"
BIN="$ROOT/target/release/ringrelay"

cd "$ROOT"
WORK=$(mktemp -d)
WORKTREE=""
cleanup() {
    for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    [ -n "$WORKTREE" ] && git worktree remove --force "$WORKTREE" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${BASE_BIN:-}" ]; then
    REV=${1:?"usage: scripts/ab_relay.sh REV (or BASE_BIN=path)"}
    WORKTREE="$WORK/base"
    git worktree add --quiet --detach "$WORKTREE" "$REV"
    # Its own target directory, shared across runs, so a second comparison builds nothing.
    CARGO_TARGET_DIR="$ROOT/target/ab" cargo build --release --locked --quiet \
        --manifest-path "$WORKTREE/Cargo.toml"
    BASE_BIN="$WORK/ringrelay-base"
    cp "$ROOT/target/ab/release/ringrelay" "$BASE_BIN"
fi
cargo build --release --locked --quiet

# Starts a relay on free loopback ports; prints its public address. Called inside $( ): the
# relay must not hold that pipe open, hence its stdout to /dev/null, and its pid goes to a
# file since the subshell's variables are lost.
start() {
    local name=$1 bin=$2
    shift 2
    env "$@" "$bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 1 \
        >/dev/null 2>"$WORK/$name.log" &
    echo $! >"$WORK/$name.pid"
    listen_address "$name" "$WORK/$name.log"
}

# The per-IP limits would refuse a load's connections from one address: off for both.
LIMITS=(RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0)
A=$(start base "$BASE_BIN" "${LIMITS[@]}")
B=$(start this "$BIN" "${LIMITS[@]}" "${ENV_B[@]}")

# Both relays pin their one worker to CPU 0; the client goes on CPU 1 when there is one.
PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN=(taskset -c 1); fi

run() {
    local url=$1
    shift
    timeout -k 5 $((SECONDS_EACH + 30)) "${PIN[@]}" "$BIN" load --url "ws://$url" --pairs "$PAIRS" \
        --size "$SIZE" --duration "${SECONDS_EACH}s" --warmup 1s --json "$@" 2>/dev/null |
        python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["errors"] == 0, d; print(d["msgs_per_s"])'
}

echo "ab_relay: $ROUNDS rounds, $PAIRS pairs, $SIZE B messages, ${SECONDS_EACH}s each; base=$A this=$B"
ratios=()
for r in $(seq "$ROUNDS"); do
    # Alternate which goes first, so neither always gets the warmer machine.
    if ((r % 2)); then
        a=$(run "$A" "${LOAD_A[@]}")
        b=$(run "$B" "${LOAD_B[@]}")
    else
        b=$(run "$B" "${LOAD_B[@]}")
        a=$(run "$A" "${LOAD_A[@]}")
    fi
    ratio=$(python3 -c "print(f'{$b / $a:.3f}')")
    ratios+=("$ratio")
    printf '  round %d: base %10.0f msgs/s   this %10.0f msgs/s   this/base %s\n' "$r" "$a" "$b" "$ratio"
done
python3 - "${ratios[@]}" <<'EOF'
import statistics, sys
r = sorted(float(x) for x in sys.argv[1:])
print(f"median this/base {statistics.median(r):.3f} (min {r[0]:.3f}, max {r[-1]:.3f}, {len(r)} rounds)")
EOF
