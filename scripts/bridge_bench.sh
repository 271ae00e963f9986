#!/usr/bin/env bash
# HTTP bridge benchmark: requests/s and latency of HTTP requests sent through the relay's
# bridge (client -> relay -> agent -> target, and back) beside the same requests sent straight
# to the target, measured alternately in one run so that both see the same machine.
#
# Builds the release binary and starts, on loopback:
#   * the target: `ringrelay load --mode http-target` (200 to everything, BRIDGE_SIZE bytes);
#   * a relay with one worker (`--workers 1`), per-IP connection limits off;
#   * `ringrelay agent --relay ws://127.0.0.1:PORT --session S --target http://127.0.0.1:TPORT`;
# then runs `ringrelay load --mode http` BRIDGE_ROUNDS times against each of
#   direct   http://127.0.0.1:TPORT/hello                  (a new connection per request)
#   bridged  http://127.0.0.1:PORT/v1/http/S/hello           (a new connection per request)
#   direct-ka  the direct URL with --keep-alive              (BRIDGE_KEEPALIVE=1 only)
# rotating the order every round, and prints each round, the medians, and the ratios
# bridged/direct within each round. See docs/bridge-bench.md.
#
# Exits 0 when every run was clean (answers, all 2xx, no errors), 1 when one was not, 2 when
# something could not be set up (no `ringrelay agent` in this build, above all).
#
# Environment (all optional):
#   BRIDGE_CONCURRENCY=32   requests in flight
#   BRIDGE_METHOD=GET       GET: BRIDGE_SIZE-byte answers; POST/PUT: BRIDGE_SIZE-byte bodies,
#                           echoed back by the target
#   BRIDGE_SIZE=64
#   BRIDGE_DURATION=5s      measured time per run
#   BRIDGE_WARMUP=1s        warm-up per run
#   BRIDGE_ROUNDS=3         runs of each kind
#   BRIDGE_THREADS=1        load generator threads
#   BRIDGE_TIMEOUT=5s       per request
#   BRIDGE_KEEPALIVE=1      also a direct run with kept-alive connections each round (0: no)
#   BRIDGE_PIN=1            with taskset and 2+ CPUs: the relay on CPU 0 (where its single
#                           worker pins itself anyway), everything else on the other CPUs;
#                           0: no taskset
#   BRIDGE_SESSION=bench    the bridge session
#   BRIDGE_AGENT_ARGS=      extra arguments for `ringrelay agent`
#   BRIDGE_SKIP_BUILD=1     use the existing target/release/ringrelay
#   BRIDGE_KEEP=1           keep the reports and logs (their directory is printed)
set -euo pipefail

cd "$(dirname "$0")/.."

CONCURRENCY=${BRIDGE_CONCURRENCY:-32}
METHOD=${BRIDGE_METHOD:-GET}
SIZE=${BRIDGE_SIZE:-64}
DURATION=${BRIDGE_DURATION:-5s}
WARMUP=${BRIDGE_WARMUP:-1s}
ROUNDS=${BRIDGE_ROUNDS:-3}
THREADS=${BRIDGE_THREADS:-1}
TIMEOUT=${BRIDGE_TIMEOUT:-5s}
KEEPALIVE=${BRIDGE_KEEPALIVE:-1}
PIN=${BRIDGE_PIN:-1}
SESSION=${BRIDGE_SESSION:-bench}
read -r -a AGENT_ARGS <<<"${BRIDGE_AGENT_ARGS:-}"
BIN=target/release/ringrelay

die() {
    echo "bridge_bench: $*" >&2
    exit 2
}

command -v python3 >/dev/null || die "python3 is needed (JSON, ports, the summary)"
command -v curl >/dev/null || die "curl is needed (readiness checks)"

# Seconds in a duration such as 10s, 500ms or 1m, rounded up (for the time bounds below).
seconds() {
    python3 - "$1" <<'EOF'
import math, re, sys
m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", sys.argv[1].strip())
if not m:
    sys.exit(f"bad duration {sys.argv[1]!r}")
n, unit = float(m.group(1)), m.group(2) or "s"
print(math.ceil(n * {"ms": 0.001, "s": 1, "m": 60}[unit]))
EOF
}
# A run takes warm-up + duration + at most the request timeout to drain; the rest is slack.
RUN_BOUND=$(($(seconds "$DURATION") + $(seconds "$WARMUP") + $(seconds "$TIMEOUT") + 20))

# N distinct ports nothing listens on, all held at once while they are picked so that none
# comes back twice (SO_REUSEADDR, as a listener has it, so that connections of an earlier run
# in TIME_WAIT do not count).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

if [[ -z ${BRIDGE_SKIP_BUILD:-} ]]; then
    cargo build --release --locked
fi
[[ -x $BIN ]] || die "$BIN is missing"
if ! "$BIN" agent --help >/dev/null 2>&1; then
    die "\`$BIN agent --help\` fails: this build has no bridge agent yet (\`ringrelay agent\`" \
        "is being built on its own branch); merge it, rebuild, and run this again"
fi

# CPU placement. The relay's single worker pins itself to CPU 0 (worker i goes to CPU
# i % CPUs), so CPU 0 is the relay's and the rest of the machine runs everything else.
CPUS=$(nproc)
RELAY_PIN=()
OTHER_PIN=()
PLACEMENT="no pinning (BRIDGE_PIN=0 or no taskset or 1 CPU); the relay's worker pins itself to CPU 0"
if [[ $PIN == 1 ]] && command -v taskset >/dev/null && ((CPUS >= 2)); then
    RELAY_PIN=(taskset -c 0)
    OTHER_PIN=(taskset -c "1-$((CPUS - 1))")
    PLACEMENT="relay on CPU 0; target, agent and load on CPU(s) 1-$((CPUS - 1))"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bridge_bench.XXXXXX")
PIDS=()
LOAD_PID=""
cleanup() {
    if [[ -n $LOAD_PID ]]; then
        # `timeout` passes the signal on to the load it runs.
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        wait "$LOAD_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n ${BRIDGE_KEEP:-} ]]; then
        echo "bridge_bench: reports and logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r TPORT PORT ADMIN_PORT <<<"$(free_ports 3)"

# Waits up to 10 s for `curl URL` to answer with status $2; dies with the log $3 otherwise.
wait_for() {
    local url=$1 want=$2 log=$3 pid=$4 got=""
    for _ in $(seq 100); do
        got=$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$url" || true)
        [[ $got == "$want" ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log" >&2
    die "$url answered ${got:-nothing}, not $want"
}

"${OTHER_PIN[@]}" "$BIN" load --mode http-target --listen "127.0.0.1:$TPORT" --size "$SIZE" \
    >"$WORK/target.log" 2>&1 &
TARGET_PID=$!
PIDS+=("$TARGET_PID")
wait_for "http://127.0.0.1:$TPORT/hello" 200 "$WORK/target.log" "$TARGET_PID"

# Every bridged request is a new connection from 127.0.0.1: the per-IP limits would refuse
# most of them, so they are off.
RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
    "${RELAY_PIN[@]}" "$BIN" serve --listen "127.0.0.1:$PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --workers 1 2>"$WORK/relay.log" &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
wait_for "http://127.0.0.1:$ADMIN_PORT/health" 200 "$WORK/relay.log" "$RELAY_PID"

"${OTHER_PIN[@]}" "$BIN" agent --relay "ws://127.0.0.1:$PORT" --session "$SESSION" \
    --target "http://127.0.0.1:$TPORT" "${AGENT_ARGS[@]}" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
DIRECT_URL="http://127.0.0.1:$TPORT/hello"
BRIDGED_URL="http://127.0.0.1:$PORT/v1/http/$SESSION/hello"
wait_for "$BRIDGED_URL" 200 "$WORK/agent.log" "$AGENT_PID"

# CPU seconds (user + system) a process has used so far.
cpu_of() {
    python3 - "$1" <<'EOF'
import os, sys
try:
    f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
    print((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
except (OSError, IndexError, ValueError):
    print(0)
EOF
}

# One run: the report goes to $WORK/<name>.json, and the CPU the relay, agent and target used
# during it (as a share of one core) to $WORK/<name>.cpu.
run() {
    local name=$1 url=$2
    shift 2
    local args=(load --mode http --url "$url" --method "$METHOD" --size "$SIZE"
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP"
        --threads "$THREADS" --timeout "$TIMEOUT" --json "$@")
    echo "== $name: ringrelay ${args[*]}" >&2
    local before=() pid rc=0 t0 t1
    for pid in "$RELAY_PID" "$AGENT_PID" "$TARGET_PID"; do before+=("$(cpu_of "$pid")"); done
    t0=$(date +%s.%N)
    # In the background and waited for, so that an interrupt stops the run at once (bash runs
    # a trap only after a foreground command ends, but interrupts `wait`).
    "${OTHER_PIN[@]}" timeout -k 5 "$RUN_BOUND" "$BIN" "${args[@]}" \
        >"$WORK/$name.json" 2>"$WORK/$name.progress" &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    t1=$(date +%s.%N)
    local i=0 out=""
    for pid in "$RELAY_PID" "$AGENT_PID" "$TARGET_PID"; do
        out+="$(python3 -c "print(f'{($(cpu_of "$pid")-${before[$i]})/($t1-$t0):.3f}')") "
        i=$((i + 1))
    done
    echo "$out" >"$WORK/$name.cpu"
    if ((rc != 0)); then
        cat "$WORK/$name.progress" >&2
        echo "bridge_bench: $name: ringrelay load failed (exit $rc)" >&2
    fi
    python3 - "$WORK/$name.json" "$name" <<'EOF' >&2
import json, sys
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except (ValueError, IndexError):
    print(f"   {sys.argv[2]}: no report")
    sys.exit(0)
l = r["latency_us"]
print(f"   {sys.argv[2]}: {r['requests_per_s']:.0f} req/s  p50 {l['p50']} µs  p99 {l['p99']} µs"
      f"  non-2xx {r['non_2xx']}  errors {r['errors']}")
EOF
}

KINDS=(direct bridged)
[[ $KEEPALIVE == 1 ]] && KINDS+=(direct-ka)
echo "bridge_bench: $METHOD $SIZE B, $CONCURRENCY in flight, $THREADS load thread(s)," \
    "$DURATION after $WARMUP warm-up, $ROUNDS round(s) of: ${KINDS[*]}" >&2
echo "bridge_bench: target 127.0.0.1:$TPORT, relay 127.0.0.1:$PORT (--workers 1)," \
    "session $SESSION; $PLACEMENT" >&2
for round in $(seq "$ROUNDS"); do
    # Rotate the order, so that no kind always runs first (or after the same one).
    n=${#KINDS[@]}
    for k in $(seq 0 $((n - 1))); do
        kind=${KINDS[$(((k + round - 1) % n))]}
        case $kind in
        direct) run "direct-$round" "$DIRECT_URL" ;;
        bridged) run "bridged-$round" "$BRIDGED_URL" ;;
        direct-ka) run "direct-ka-$round" "$DIRECT_URL" --keep-alive ;;
        esac
    done
done

python3 - "$WORK" "$ROUNDS" "$PLACEMENT" "${KINDS[@]}" <<'EOF'
import json, os, statistics, sys

work, rounds, placement, kinds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]

def report(name):
    try:
        return json.loads(open(os.path.join(work, name + ".json")).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None

def cpu(name):
    try:
        return [float(x) for x in open(os.path.join(work, name + ".cpu")).read().split()]
    except (OSError, ValueError):
        return [float("nan")] * 3

runs = {k: [report(f"{k}-{i}") for i in range(1, rounds + 1)] for k in kinds}
failed = []
for k, rs in runs.items():
    for i, r in enumerate(rs, 1):
        if r is None:
            failed.append(f"{k}-{i}: no report")
        elif r["requests"] == 0 or r["non_2xx"] or r["errors"]:
            failed.append(f"{k}-{i}: {r['requests']} answered, non-2xx {r['non_2xx']} "
                          f"{r['status']}, errors {r['errors']} {r['error_samples'][:2]}")

def fig(r):
    if r is None:
        return (float("nan"),) * 3
    return (r["requests_per_s"], r["latency_us"]["p50"], r["latency_us"]["p99"])

def cell(r):
    rps, p50, p99 = fig(r)
    return f"{rps:>9.0f} {p50:>8} {p99:>8}"

med = lambda xs: statistics.median(xs) if xs else float("nan")
head = "".join(f" | {k + ' req/s':>9} {'p50 µs':>8} {'p99 µs':>8}" for k in kinds)
print(f"bridge_bench results ({placement})")
print(f"{'round':>6}{head} | bridged/direct req/s   p50   p99 | CPU relay agent target (bridged)")
ratios = []
for i in range(rounds):
    d, b = runs["direct"][i], runs["bridged"][i]
    row = "".join(f" | {cell(runs[k][i])}" for k in kinds)
    (drps, dp50, dp99), (brps, bp50, bp99) = fig(d), fig(b)
    rt = (brps / drps if drps else float("nan"), bp50 / max(dp50, 1), bp99 / max(dp99, 1))
    ratios.append(rt)
    c = cpu(f"bridged-{i + 1}")
    print(f"{i + 1:>6}{row} | {rt[0]:>20.3f} {rt[1]:>5.2f} {rt[2]:>5.2f} | "
          f"{c[0]:>9.0%} {c[1]:>5.0%} {c[2]:>6.0%}")
medrow = ""
for k in kinds:
    fs = [fig(r) for r in runs[k] if r is not None]
    medrow += f" | {med([f[0] for f in fs]):>9.0f} {med([f[1] for f in fs]):>8.0f} {med([f[2] for f in fs]):>8.0f}"
mr = [med([r[j] for r in ratios]) for j in range(3)]
print(f"{'median':>6}{medrow} | {mr[0]:>20.3f} {mr[1]:>5.2f} {mr[2]:>5.2f} |")
print(f"bridged/direct, median of the per-round ratios: req/s {mr[0]:.3f}, p50 {mr[1]:.2f}x, "
      f"p99 {mr[2]:.2f}x")
dc = [cpu(f"direct-{i}") for i in range(1, rounds + 1)]
print(f"CPU during the direct runs (share of one core, median): target "
      f"{med([c[2] for c in dc]):.0%}; relay and agent idle")
for f in failed:
    print(f"FAIL {f}")
print("bridge_bench: " + ("FAIL" if failed else "OK"))
sys.exit(1 if failed else 0)
EOF
