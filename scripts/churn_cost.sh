#!/usr/bin/env bash
# What one connection-churn cycle costs the relay (issue 17: connect a pair, one 64 B message
# each way, close), this build against another, on each driver. Per round and build: the
# relay's CPU per cycle (utime + stime from /proc over the run), its syscalls and io_uring
# submissions (SQEs) per cycle (the kernel's raw_syscalls:sys_enter and
# io_uring:io_uring_submit_req tracepoints, via `perf stat -p`), and the cycle rate. The
# counts per cycle are exact and repeat on a busy machine; CPU and rate are noisy, hence the
# alternated rounds and the per-round ratio. OPCODES=1 adds one more run per build and
# driver that prints the submissions by opcode (perf record; needs `perf script`).
#
#   BASE_BIN=/work/wt/bin/ringrelay-main21 scripts/churn_cost.sh
#   ROUNDS=4 SECONDS_EACH=4 PAIRS=64 DRIVERS="io_uring epoll" RELAY_ENV="RUST_LOG=info"
#
# Needs perf (linux-perf) and root, or perf_event_paranoid <= -1 for the tracepoints.
# Loopback only; bounded: ROUNDS * 2 builds * drivers runs of SECONDS_EACH (+ start-up).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/ringrelay}
BASE_BIN=${BASE_BIN:?"set BASE_BIN to the build to compare with"}
ROUNDS=${ROUNDS:-4}
SECONDS_EACH=${SECONDS_EACH:-4}
PAIRS=${PAIRS:-64}
DRIVERS=${DRIVERS:-"io_uring epoll"}
read -r -a RELAY_ENV <<<"${RELAY_ENV:-}"
command -v perf >/dev/null || { echo "churn_cost: perf is needed" >&2; exit 2; }
WORK=$(mktemp -d)
RELAY_PID=""
cleanup() {
    [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
PIN_RELAY=() PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN_RELAY=(taskset -c 0) PIN_LOAD=(taskset -c 1); fi

# Starts BIN on DRIVER (one worker, per-IP limits off); sets RELAY_PID and ADDR.
start() {
    local bin=$1 driver=$2
    : >"$WORK/log"
    env "${RELAY_ENV[@]}" RINGRELAY_LIMITS_IP_CONNECT_RATE=0 \
        RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP=0 \
        "${PIN_RELAY[@]}" "$bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 1 \
        --driver "$driver" >/dev/null 2>"$WORK/log" &
    RELAY_PID=$!
    for _ in $(seq 200); do
        grep -q "ringrelay listening" "$WORK/log" && break
        sleep 0.05
    done
    ADDR=$(grep -o 'listen=[^ ]*' "$WORK/log" | head -1 | cut -d= -f2)
    [ -n "$ADDR" ] || { echo "churn_cost: $bin did not start" >&2; cat "$WORK/log" >&2; exit 1; }
}

stop() {
    kill "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
    RELAY_PID=""
}

load() {
    timeout -k 5 $((SECONDS_EACH + 30)) "${PIN_LOAD[@]}" "$BIN" load --url "ws://$ADDR" \
        --mode churn --pairs "$PAIRS" --churn-messages 1 --both-ways \
        --duration "${SECONDS_EACH}s" --warmup 0s --json 2>/dev/null >"$WORK/out"
}

# One run: prints "rate cpu_us syscalls sqes" per cycle.
measure() {
    start "$1" "$2"
    local c0 c1 perf_pid
    c0=$(awk '{print $14 + $15}' "/proc/$RELAY_PID/stat")
    perf stat -x, -e 'io_uring:io_uring_submit_req,raw_syscalls:sys_enter' -p "$RELAY_PID" \
        -o "$WORK/perf" &
    perf_pid=$!
    sleep 0.2
    load
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    c1=$(awk '{print $14 + $15}' "/proc/$RELAY_PID/stat")
    stop
    python3 - "$WORK/out" "$WORK/perf" "$c0" "$c1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["errors"] == 0, d
cycles = d["cycles"]
ev = {}
for line in open(sys.argv[2]):
    p = line.strip().split(",")
    if len(p) > 3 and p[0].strip().isdigit():
        ev[p[2]] = int(p[0])
cpu = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5])
print(d["cycles_per_s"], cpu / cycles * 1e6,
      ev.get("raw_syscalls:sys_enter", 0) / cycles,
      ev.get("io_uring:io_uring_submit_req", 0) / cycles)
PY
}

# Submissions and syscalls per cycle by opcode / syscall number.
opcodes() {
    start "$1" "$2"
    local perf_pid
    perf record -q -e io_uring:io_uring_submit_req -e raw_syscalls:sys_enter -p "$RELAY_PID" \
        -o "$WORK/perf.data" 2>/dev/null &
    perf_pid=$!
    sleep 0.3
    load
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    stop
    perf script -i "$WORK/perf.data" 2>/dev/null >"$WORK/script"
    python3 - "$WORK/out" "$WORK/script" <<'PY'
import collections, json, re, sys
cycles = json.load(open(sys.argv[1]))["cycles"]
c = collections.Counter()
for line in open(sys.argv[2]):
    m = re.search(r"opcode (\w+)", line) or re.search(r"NR (\d+)", line)
    if m:
        c[("sqe " if "opcode" in line else "syscall ") + m.group(1)] += 1
print("   ", ", ".join(f"{k} {v / cycles:.2f}" for k, v in c.most_common()))
PY
}

for driver in $DRIVERS; do
    echo "== $driver: per cycle (rate/s, relay CPU us, syscalls, SQEs), this / base"
    : >"$WORK/rounds"
    for r in $(seq "$ROUNDS"); do
        read -r tr tc ts tq < <(measure "$BIN" "$driver")
        read -r br bc bs bq < <(measure "$BASE_BIN" "$driver")
        printf "round %d  this %6.0f/s %6.1f us %5.2f sys %5.2f sqe   base %6.0f/s %6.1f us %5.2f sys %5.2f sqe\n" \
            "$r" "$tr" "$tc" "$ts" "$tq" "$br" "$bc" "$bs" "$bq"
        echo "$tr $tc $br $bc" >>"$WORK/rounds"
    done
    python3 - "$WORK/rounds" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
rate = sorted(r[0] / r[2] for r in rows)
cpu = sorted(r[1] / r[3] for r in rows)
print(f"median ratio this/base: rate {statistics.median(rate):.3f} ({rate[0]:.3f} to {rate[-1]:.3f}),"
      f" CPU per cycle {statistics.median(cpu):.3f} ({cpu[0]:.3f} to {cpu[-1]:.3f})")
PY
    if [ "${OPCODES:-0}" = 1 ]; then
        echo "  this:"; opcodes "$BIN" "$driver"
        echo "  base:"; opcodes "$BASE_BIN" "$driver"
    fi
done
