#!/usr/bin/env bash
# ringrelay's TCP tunnels beside bore (the `bore-cli` crate), on the same two cores:
#   ringrelay  `ringrelay serve` (one worker, tunnel.enabled) + `ringrelay tunnel expose`
#   bore       `bore server` + `bore local`
# with the same local service behind each (`ringrelay load --mode tunnel-echo`) and the same
# load on the public port (`ringrelay load --mode tunnel`, which knows nothing of either):
#   bulk     PAIRS_BULK connections writing 64 KiB chunks and reading the echo: MB/s echoed
#   connect  CONNECT_LOOPS loops of connect, 64 B there and back, close: connections/s
#   rr       RR_CONNS connections, 64 B request/response at RR_RATE per second in total, each
#            on its own schedule, latency from when a request was due (no coordinated
#            omission): p50/p95/p99/p99.9
# The server (relay, bore server) is pinned to SERVER_CPU, the tunnel client (tunnel expose,
# bore local) to CLIENT_CPU; echo service and load generator float. The two sides take turns
# within each round, the first one alternating. For each run the CPU the server and the
# client used (utime+stime from /proc) is divided by the work: µs per MB echoed (bulk), per
# connection (connect), per round trip (rr). Prints each run as one line, then per side and
# load the median and spread (min-max) over the rounds.
#
#   scripts/tunnel_bench.sh
#   ROUNDS=5 SECONDS_EACH=5 WARMUP=1 scripts/tunnel_bench.sh
#   BIN=path (default target/release/ringrelay, built unless NO_BUILD=1)
#   BORE_ROOT=dir (default target/bore): `cargo install bore-cli --locked --root` there when
#     bin/bore is missing
#   SIDES="ringrelay bore" LOADS="bulk connect rr" SERVER_CPU=0 CLIENT_CPU=1
#   BASE_BIN=path adds the side "base": another ringrelay binary (say a release build of
#     main) run the same way, so a change is measured against it in the same rounds
#     (SIDES="ringrelay base bore")
#   DRIVER=io_uring|epoll (default auto) for the relay and the tunnel client
#
# Everything on loopback and bounded: ROUNDS * SIDES * LOADS runs of WARMUP + SECONDS_EACH,
# each killed after 30 s more. A run that fails (the load exits non-zero, nothing got
# through) is printed as such and counted out of the medians; the script goes on, and on
# any exit it stops the side it started, so it never waits on a process it left running.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/relay_start.sh
. scripts/relay_start.sh

ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-5}
WARMUP=${WARMUP:-1}
PAIRS_BULK=${PAIRS_BULK:-4}
CONNECT_LOOPS=${CONNECT_LOOPS:-8}
RR_CONNS=${RR_CONNS:-8}
RR_RATE=${RR_RATE:-4000}
SIDES=${SIDES:-"ringrelay bore"}
LOADS=${LOADS:-"bulk connect rr"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BIN=${BIN:-target/release/ringrelay}
BORE_ROOT=${BORE_ROOT:-target/bore}
BORE=$BORE_ROOT/bin/bore
BASE_BIN=${BASE_BIN:-}
DRIVER=${DRIVER:-auto}
SERVER_PID=
CLIENT_PID=

if [[ -z ${NO_BUILD:-} && $BIN == target/release/ringrelay ]]; then
  cargo build --release --quiet
fi
if [[ " $SIDES " == *" bore "* && ! -x $BORE ]]; then
  echo "installing bore-cli into $BORE_ROOT" >&2
  cargo install bore-cli --locked --root "$BORE_ROOT" --quiet
fi

bench_workdir
# The side running when the script exits is stopped before bench_cleanup waits for children.
trap 'stop_side; bench_cleanup' EXIT

# Waits for a line matching $2 in file $1 and prints the first capture of sed expression $3.
wait_line() {
  local file=$1 pattern=$2 expr=$3
  for _ in $(seq 200); do
    if grep -q "$pattern" "$file" 2>/dev/null; then
      grep -m1 "$pattern" "$file" | sed -E "$expr"
      return 0
    fi
    sleep 0.05
  done
  echo "timed out waiting for '$pattern' in $file:" >&2
  cat "$file" >&2
  return 1
}

cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local sum=0
  for p in "$@"; do
    local f
    f=$(cut -d' ' -f14,15 "/proc/$p/stat")
    sum=$((sum + ${f% *} + ${f#* }))
  done
  echo "$sum"
}

"$BIN" load --mode tunnel-echo --listen 127.0.0.1:0 >"$WORK/echo.out" 2>&1 &
PIDS+=($!)
ECHO=$(wait_line "$WORK/echo.out" "listening on" 's/.*listening on ([^ ]+).*/\1/')

start_ringrelay() { start_relay "$BIN"; }
start_base() { start_relay "$BASE_BIN"; }

start_relay() {
  local bin=$1
  RINGRELAY_DRIVER=$DRIVER RINGRELAY_TUNNEL_ENABLED=true RINGRELAY_TUNNEL_PORTS=34100-34199 \
    RINGRELAY_TUNNEL_MAX_CONNECTIONS_PER_TUNNEL=10000 RINGRELAY_LIMITS_IP_CONNECT_RATE=0 \
    taskset -c "$SERVER_CPU" "$bin" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --workers 1 >"$WORK/relay.log" 2>&1 &
  SERVER_PID=$!
  local listen
  listen=$(wait_line "$WORK/relay.log" "ringrelay listening" 's/.*listen=([^ ]+).*/\1/')
  RUST_LOG=warn taskset -c "$CLIENT_CPU" "$bin" tunnel expose --relay "ws://$listen" \
    --driver "$DRIVER" --local "$ECHO" --json >"$WORK/client.out" 2>"$WORK/client.log" &
  CLIENT_PID=$!
  PUBLIC=$(wait_line "$WORK/client.out" "public" 's/.*"public":"([^"]+)".*/\1/')
}

start_bore() {
  taskset -c "$SERVER_CPU" "$BORE" server --min-port 34200 --max-port 34299 \
    >"$WORK/bore-server.log" 2>&1 &
  SERVER_PID=$!
  sleep 0.3
  taskset -c "$CLIENT_CPU" "$BORE" local "${ECHO##*:}" --local-host 127.0.0.1 --to 127.0.0.1 \
    >"$WORK/bore-local.log" 2>&1 &
  CLIENT_PID=$!
  PUBLIC=127.0.0.1:$(wait_line "$WORK/bore-local.log" "listening at" 's/.*listening at [^:]+:([0-9]+).*/\1/')
}

# Stops the side's two processes: TERM, then KILL after 5 s, so this never waits long.
stop_side() {
  local pids=()
  for p in $CLIENT_PID $SERVER_PID; do pids+=("$p"); done
  ((${#pids[@]})) || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  CLIENT_PID=
  SERVER_PID=
}

load_args() {
  case $1 in
    bulk) echo "--tunnel-test bulk --pairs $PAIRS_BULK --size 65536" ;;
    connect) echo "--tunnel-test connect --pairs $CONNECT_LOOPS --size 64" ;;
    rr) echo "--tunnel-test rr --pairs $RR_CONNS --size 64 --rate $RR_RATE" ;;
  esac
}

RESULTS=$WORK/results.jsonl
ROW='
import json, sys
r = json.loads(sys.stdin.read())
l = r["latency_us"]
cells = [r["side"], r["load"], r["round"], round(r["mb_per_s"], 1), round(r["ops_per_s"]),
         l["p50"], l["p95"], l["p99"], l["p999"], round(r["cpu_us_per_unit"] or 0, 1)]
print("%-10s %-8s %5s %12s %12s %8s %8s %8s %8s %12s" % tuple(cells))
'
HZ=$(getconf CLK_TCK)
printf '%-10s %-8s %5s %12s %12s %8s %8s %8s %8s %12s\n' side load round MB/s ops/s p50us p95us p99us p999us cpu_us/unit
for round in $(seq "$ROUNDS"); do
  order=$SIDES
  if ((round % 2 == 0)); then order=$(echo "$SIDES" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for side in $order; do
    "start_$side"
    for load in $LOADS; do
      before=$(cpu_ticks "$SERVER_PID" "$CLIENT_PID")
      # shellcheck disable=SC2046
      if ! out=$(timeout -k 5 $((SECONDS_EACH + WARMUP + 30)) "$BIN" load --mode tunnel \
        --url "tcp://$PUBLIC" $(load_args "$load") --warmup "${WARMUP}s" \
        --duration "${SECONDS_EACH}s" --json 2>"$WORK/load.err"); then
        printf '%-10s %-8s %5s failed: %s\n' "$side" "$load" "$round" \
          "$(tr '\n' ' ' <"$WORK/load.err" | cut -c1-200)"
        continue
      fi
      after=$(cpu_ticks "$SERVER_PID" "$CLIENT_PID")
      python3 - "$side" "$load" "$round" "$((after - before))" "$HZ" "$out" >>"$RESULTS" <<'PY'
import json, sys
side, load, rnd, ticks, hz, out = sys.argv[1:]
r = json.loads(out)
cpu_us = int(ticks) * 1e6 / int(hz)
units = r["bytes"] / 1e6 if load == "bulk" else r["ops"]
r.update(side=side, load=load, round=int(rnd), cpu_us_per_unit=cpu_us / units if units else None)
print(json.dumps(r))
PY
      tail -1 "$RESULTS" | python3 -c "$ROW"
    done
    stop_side
  done
done

echo
echo "median (min-max) over $ROUNDS rounds; cpu: server + tunnel client, µs per MB echoed (bulk), per connection (connect), per round trip (rr)"
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(xs):
    xs = [x for x in xs if x is not None]
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})" if xs else "-"
for load in dict.fromkeys(r["load"] for r in rows):
    for side in dict.fromkeys(r["side"] for r in rows):
        rs = [r for r in rows if r["load"] == load and r["side"] == side]
        if not rs:
            continue
        main = [r["mb_per_s"] for r in rs] if load == "bulk" else [r["ops_per_s"] for r in rs]
        unit = "MB/s" if load == "bulk" else "ops/s"
        line = f"{load:<8} {side:<10} {unit} {med(main)}  cpu {med([r['cpu_us_per_unit'] for r in rs])}"
        if load == "rr":
            for q in ("p50", "p95", "p99", "p999"):
                line += f"  {q} {med([r['latency_us'][q] for r in rs])}"
        print(line)
PY
