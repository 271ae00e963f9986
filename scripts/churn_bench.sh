#!/usr/bin/env bash
# Connection churn side by side on one server core (issue 17): each cycle connects a pair,
# sends one 64 B message each way, closes both (`ringrelay load --mode churn`), PAIRS cycles
# in flight, per-IP limits off. The servers, each pinned to SERVER_CPU with the load on
# CLIENT_CPU:
#   uring      this build's ringrelay, one worker, io_uring driver
#   epoll      the same on the epoll driver
#   base-uring / base-epoll   BASE_BIN (another build, e.g. main at a session's start), when set
#   fws        peers/fastwebsockets-relay (tokio current-thread + hyper + fastwebsockets)
#   uws        the uWebSockets relay (../shared/peers/uws, `send` mode), built into
#              target/uws/ from UWS_SRC and USOCKETS_SRC when those sources are there;
#              left out with a note otherwise
# The servers take turns within each round, starting one further along each round, so the
# shared machine's noise falls on all alike. Prints each round, then per server the median
# rate (cycles/s) with its spread and the server's CPU per cycle (utime + stime from /proc
# over the run, µs), then uring / each other as the median of per-round ratios (rate; a ratio
# above 1 means uring is faster) and of CPU per cycle (below 1: uring spends less).
#
#   scripts/churn_bench.sh
#   ROUNDS=5 SECONDS_EACH=3 PAIRS=64 SERVERS="uring epoll fws uws" scripts/churn_bench.sh
#   BASE_BIN=/work/wt/bin/ringrelay-main22 SERVERS="uring epoll base-uring base-epoll fws" ...
#
#   BIN=path       the relay (default target/release/ringrelay); LOAD_BIN the load generator
#                  (default BIN)
#   NO_BUILD=1     no cargo build of ringrelay or the fastwebsockets peer first
#   SERVER_CPU=0 CLIENT_CPU=1
# Loopback only; bounded: ROUNDS * servers runs of SECONDS_EACH (+ start-up) each.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/relay_start.sh
. "$ROOT/scripts/relay_start.sh"
BIN=${BIN:-$ROOT/target/release/ringrelay}
LOAD_BIN=${LOAD_BIN:-$BIN}
BASE_BIN=${BASE_BIN:-}
ROUNDS=${ROUNDS:-5}
SECONDS_EACH=${SECONDS_EACH:-3}
PAIRS=${PAIRS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
FWS_DIR=$ROOT/peers/fastwebsockets-relay
FWS_BIN=${FWS_BIN:-$FWS_DIR/target/release/fastwebsockets-relay}
UWS_DIR=$ROOT/target/uws
UWS_PEER=${UWS_PEER:-$ROOT/../shared/peers/uws}
default_servers="uring epoll fws uws"
[ -n "$BASE_BIN" ] && default_servers="uring epoll base-uring base-epoll fws uws"
read -r -a SERVERS <<<"${SERVERS:-$default_servers}"

if [ "${NO_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet)
    cargo build --release --quiet --manifest-path "$FWS_DIR/Cargo.toml"
fi

# The uWS relay: built once into target/uws/ (its build script writes beside itself, and
# the shared copy is read-only).
uws_ready() {
    [ -x "$UWS_DIR/relay" ] && return 0
    local uws_src=${UWS_SRC:-/tmp/uws/uWebSockets} us_src=${USOCKETS_SRC:-/tmp/uws/uSockets}
    if [ ! -f "$UWS_PEER/relay.cpp" ] || [ ! -d "$uws_src/src" ] || [ ! -d "$us_src/src" ]; then
        echo "churn_bench: no uWS sources ($UWS_PEER/README.md says how to get them): uws left out" >&2
        return 1
    fi
    mkdir -p "$UWS_DIR"
    cp "$UWS_PEER/relay.cpp" "$UWS_PEER/build.sh" "$UWS_DIR/"
    chmod u+w "$UWS_DIR"/*
    UWS_SRC=$uws_src USOCKETS_SRC=$us_src "$UWS_DIR/build.sh" >/dev/null 2>&1 ||
        { echo "churn_bench: the uWS build failed: uws left out" >&2; return 1; }
}
kept=()
for s in "${SERVERS[@]}"; do
    case $s in
        uws) uws_ready && kept+=("$s") ;;
        base-*) [ -n "$BASE_BIN" ] && kept+=("$s") || echo "churn_bench: $s needs BASE_BIN" >&2 ;;
        uring | epoll | fws) kept+=("$s") ;;
        *) echo "churn_bench: unknown server $s" >&2; exit 2 ;;
    esac
done
SERVERS=("${kept[@]}")

bench_workdir
SERVER_PID=""
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts server $1 on SERVER_CPU; sets SERVER_PID and ADDR.
start() {
    local log=$WORK/log.$1 bin=$BIN driver
    : >"$log"
    case $1 in
        uring | epoll | base-uring | base-epoll)
            driver=${1#base-}
            [ "$driver" = uring ] && driver=io_uring
            [ "${1%%-*}" = base ] && bin=$BASE_BIN
            RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
                RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP=0 taskset -c "$SERVER_CPU" "$bin" \
                --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 1 --driver "$driver" \
                >/dev/null 2>"$log" &
            SERVER_PID=$!
            PIDS+=("$SERVER_PID")
            ADDR=$(listen_address "$1" "$log")
            ;;
        fws)
            taskset -c "$SERVER_CPU" "$FWS_BIN" --listen 127.0.0.1:0 >/dev/null 2>"$log" &
            SERVER_PID=$!
            PIDS+=("$SERVER_PID")
            ADDR=""
            for _ in $(seq 100); do
                ADDR=$(grep -o 'listening on [^ ]*' "$log" | cut -d' ' -f3) && [ -n "$ADDR" ] && break
                sleep 0.05
            done
            ;;
        uws)
            local port
            port=$(free_port)
            taskset -c "$SERVER_CPU" "$UWS_DIR/relay" --listen "127.0.0.1:$port" >/dev/null 2>"$log" &
            SERVER_PID=$!
            PIDS+=("$SERVER_PID")
            ADDR=""
            for _ in $(seq 100); do
                grep -q "listening" "$log" && ADDR=127.0.0.1:$port && break
                sleep 0.05
            done
            ;;
    esac
    [ -n "$ADDR" ] || { echo "churn_bench: $1 did not start" >&2; cat "$log" >&2; exit 1; }
}

stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One run of server $1: prints "rate cpu_us_per_cycle errors".
measure() {
    start "$1"
    local c0 c1
    c0=$(cpu_ticks "$SERVER_PID")
    timeout -k 5 $((SECONDS_EACH + 30)) taskset -c "$CLIENT_CPU" "$LOAD_BIN" load \
        --url "ws://$ADDR" --mode churn --pairs "$PAIRS" --churn-messages 1 --both-ways \
        --duration "${SECONDS_EACH}s" --warmup 0s --json 2>/dev/null >"$WORK/out" || true
    c1=$(cpu_ticks "$SERVER_PID")
    stop
    python3 - "$WORK/out" "$c0" "$c1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except ValueError:
    print("0 0 -1")
    sys.exit()
cycles = max(d["cycles"], 1)
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(d["cycles_per_s"], cpu / cycles * 1e6, d["errors"])
PY
}

echo "churn: pairs $PAIRS, ${SECONDS_EACH}s rounds, server core $SERVER_CPU, load core $CLIENT_CPU; servers: ${SERVERS[*]}"
: >"$WORK/rounds"
n=${#SERVERS[@]}
for r in $(seq "$ROUNDS"); do
    line="round $r"
    for i in $(seq 0 $((n - 1))); do
        s=${SERVERS[$(((i + r - 1) % n))]}
        read -r rate cpu errs < <(measure "$s")
        echo "$r $s $rate $cpu $errs" >>"$WORK/rounds"
        line+=$(printf "  %s %.0f/s %.0fus" "$s" "$rate" "$cpu")
        [ "$errs" != 0 ] && line+="(errors $errs)"
    done
    echo "$line"
done
python3 - "$WORK/rounds" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, s, rate, cpu, errs = line.split()
    runs[s][r] = (float(rate), float(cpu), int(errs))
def spread(xs):
    xs = sorted(xs)
    return f"{statistics.median(xs):.3f} ({xs[0]:.3f}-{xs[-1]:.3f})"
print(f"{'server':<11} {'cycles/s median (min-max)':<28} {'CPU us/cycle median (min-max)':<30} errors")
for s, rs in runs.items():
    rates = sorted(v[0] for v in rs.values())
    cpus = sorted(v[1] for v in rs.values())
    errs = sum(v[2] for v in rs.values())
    print(f"{s:<11} {statistics.median(rates):>8.0f} ({rates[0]:.0f}-{rates[-1]:.0f}){'':<8}"
          f" {statistics.median(cpus):>8.1f} ({cpus[0]:.1f}-{cpus[-1]:.1f}){'':<10} {errs}")
if "uring" in runs:
    u = runs["uring"]
    for s, rs in runs.items():
        if s == "uring":
            continue
        common = [r for r in u if r in rs and rs[r][0] > 0 and rs[r][1] > 0]
        if not common:
            continue
        rate = [u[r][0] / rs[r][0] for r in common]
        cpu = [u[r][1] / rs[r][1] for r in common]
        print(f"uring / {s:<10} rate {spread(rate)}   CPU per cycle {spread(cpu)}")
PY
