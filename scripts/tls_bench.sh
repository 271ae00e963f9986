#!/usr/bin/env bash
# What TLS costs, side by side on one server core: the same `ringrelay load` over wss://
# against
#   native     ringrelay serving TLS itself (tls.listen), one worker
#   haproxy    HAProxy terminating TLS (haproxy/ringrelay-tls.cfg, nbthread 1) in front of a
#              plain ringrelay with one worker, BOTH on the server core: the same one core
#              in total as native, which is the fair comparison
#   haproxy2   the same two with HAProxy on a core of its own (HAPROXY2_CPU): two cores in
#              total, so not a like-for-like figure; on a 2-core machine that core is the load
#              generator's, which then competes with HAProxy (the label says so)
#   tokio      peers/tokio-rustls-relay (tokio + tokio-tungstenite + tokio-rustls,
#              current-thread runtime)
#   plain      plain ringrelay over ws://, one worker: the baseline without TLS
#   tokio-plain  (not run unless named in SERVERS) the tokio peer over ws://
# for four loads: 64 B messages (msgs/s), 64 KiB messages (MB/s) in pairs, new connections
# per second (`--mode connect`: TCP, full TLS handshake, upgrade, close; the load resumes no
# session), and new connections from Python's websockets (connect-x25519: the key exchange
# browsers use; see there). The servers take turns within each round, starting one further
# along each round, so the shared machine's noise falls on all alike. Prints each round,
# then per server the median and spread (min–max), the share of a core its processes used,
# the server CPU per unit of work (which stays meaningful when the rate is set by something
# else: the one load core, doing its half of every handshake and encryption, or a shared
# machine's scheduling), the load generator's own share of its core, and native / each
# other as the median of the per-round ratios. docs/performance.md ("TLS") has figures.
#
#   scripts/tls_bench.sh
#   ROUNDS=5 SECONDS_EACH=3 WARMUP=1 PAIRS=4 WINDOW=16 CONNECT_LOOPS=16 scripts/tls_bench.sh
#   SERVERS="native haproxy tokio plain" LOADS="64B 64KiB connect connect-x25519" KEY=rsa scripts/tls_bench.sh
#
#   LOADS=connect-resume (not in the default set): --mode connect with --tls-resume, each
#     loop resuming with the session tickets the server gave it (returning clients)
#   CHECK_ONLY=1: start the servers, check each relays a pair (Python websockets), stop
#   KEY=ec (default: ECDSA P-256 certificate) or rsa (RSA 2048)
#   LOAD_BIN=path: the load generator from another build (default: this one's ringrelay)
#   BIN=path: the relay from another build (default: this one's target/release/ringrelay)
#   NO_BUILD=1: no cargo build first (the binaries as they are)
#   SERVER_CPU=0 CLIENT_CPU=1 HAPROXY2_CPU (default 2 with 3 or more cores, else CLIENT_CPU)
#   CLIENT_CPU=0 (the servers' core): the load shares the one core, so no message waits for
#     a wake-up on another core; on a machine whose cores are busy with other work, a task
#     woken on the other core can wait a scheduler slice (milliseconds) for it, and a server
#     that sleeps between batches (native, plain) pays that on every round trip while HAProxy
#     and the relay behind it keep their core (docs/performance.md, "Wake-ups")
#
# Everything on loopback and bounded: ROUNDS * LOADS * SERVERS runs of WARMUP + SECONDS_EACH
# (each killed after 60 s more); a CA and a server certificate (openssl) in a temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/relay_start.sh
. "$ROOT/scripts/relay_start.sh"
ROUNDS=${ROUNDS:-5}
SECONDS_EACH=${SECONDS_EACH:-3}
WARMUP=${WARMUP:-1}
PAIRS=${PAIRS:-4}
WINDOW=${WINDOW:-16}
CONNECT_LOOPS=${CONNECT_LOOPS:-16}
KEY=${KEY:-ec}
read -r -a SERVERS <<<"${SERVERS:-native haproxy haproxy2 tokio plain}"
read -r -a LOADS <<<"${LOADS:-64B 64KiB connect connect-x25519}"
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
if [ "$(nproc)" -ge 3 ]; then HAPROXY2_CPU=${HAPROXY2_CPU:-2}; else HAPROXY2_CPU=${HAPROXY2_CPU:-$CLIENT_CPU}; fi
BIN=${BIN:-$ROOT/target/release/ringrelay}
LOAD_BIN=${LOAD_BIN:-$BIN}
PEER_DIR="$ROOT/peers/tokio-rustls-relay"
PEER_TARGET="$ROOT/target/tokio-rustls-relay"
PEER="$PEER_TARGET/release/tokio-rustls-relay"
HAPROXY_CFG="$ROOT/haproxy/ringrelay-tls.cfg"

die() {
    echo "tls_bench: $*" >&2
    exit 1
}
command -v taskset >/dev/null || die "needs taskset (util-linux)"
command -v openssl >/dev/null || die "needs openssl"
[ "$(nproc)" -ge 2 ] || die "needs 2 cores: one for the servers, one for the load"

cd "$ROOT"
bench_workdir

# NO_BUILD=1: use the release binaries as they are (a build on a busy machine takes minutes).
if [ -z "${NO_BUILD:-}" ]; then
    echo "tls_bench: building ringrelay (release)" >&2
    cargo build --release --locked --quiet
fi
# The tokio-rustls peer is built only when it is measured.
if [[ " ${SERVERS[*]} " == *" tokio"* ]] && { [ -z "${NO_BUILD:-}" ] || [ ! -x "$PEER" ]; }; then
    echo "tls_bench: building the tokio-rustls peer (release)" >&2
    cargo build --release --locked --quiet --manifest-path "$PEER_DIR/Cargo.toml" \
        --target-dir "$PEER_TARGET"
fi

# What this build can do: native TLS needs the `tls` config section, wss:// loads need
# `ringrelay load --ca-file` and `--mode connect`.
has_native_tls() { "$BIN" serve --print-config 2>/dev/null | grep -q '^\[tls\]'; }
has_connect_mode() { "$LOAD_BIN" load --help | grep -q 'connect:'; }

# ---- certificates: a CA, and a server certificate for 127.0.0.1 and localhost ----
make_certs() {
    local d=$WORK/pki newkey
    mkdir -p "$d"
    case $KEY in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) die "KEY=$KEY: ec or rsa" ;;
    esac
    openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=tls-bench-ca \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    openssl req "${newkey[@]}" -nodes -subj /CN=localhost \
        -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
        'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' >"$d/ext.cnf"
    openssl x509 -req -days 2 -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -CAcreateserial -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
    # HAProxy takes the chain and the key in one file.
    cat "$d/server.pem" "$d/server.key" >"$d/haproxy.pem"
}
make_certs
CA="$WORK/pki/ca.pem"

# connect-x25519: new connections from Python's websockets over OpenSSL, which offers an
# X25519 key share first as browsers do. `ringrelay load` (rustls 0.23.48's ring provider)
# offers P-384 first, and the servers follow the client's order, so its connect figures
# include a P-384 exchange on both ends. Python is too slow to fill the server core: read
# this load's server CPU per connection, not its rate.
cat >"$WORK/connect_loops.py" <<'PY'
import asyncio, json, ssl, sys, time
import websockets
url, ca, loops, warmup, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca) if url.startswith("wss://") else None
t0 = time.monotonic()
warm, end = t0 + warmup, t0 + warmup + seconds
counted = errors = 0

async def loop(k):
    global counted, errors
    i = 0
    while time.monotonic() < end:
        i += 1
        start = time.monotonic()
        try:
            kw = {"ssl": ctx} if ctx else {}
            async with websockets.connect(f"{url}/v1/relay/tls-bench-{k}-{i}", compression=None,
                                          ping_interval=None, open_timeout=10, **kw):
                pass
            if start >= warm and time.monotonic() <= end:
                counted += 1
        except Exception:
            errors += 1
            await asyncio.sleep(0.05)

async def main():
    await asyncio.gather(*(loop(k) for k in range(loops)))

asyncio.run(main())
print(json.dumps({"cycles_per_s": counted / seconds, "errors": errors}))
PY

# ---- servers ----
# A free loopback port (the kernel's pick, released at once; nothing else on this machine
# is expected to take it in the moment before the server binds it).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until PORT accepts connections, then checks that the process we started is its
# only listener: HAProxy binds with SO_REUSEPORT, so it would share a port another
# program already listens on, and half the load would go there.
wait_port() {
    local name=$1 port=$2 log=$3
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            local n
            n=$(ss -Hltn "sport = :$port" | wc -l)
            [ "$n" -eq 1 ] || die "$name: port $port has $n listeners, not only ours"
            return
        fi
        sleep 0.05
    done
    cat "$log" >&2
    die "$name did not start listening on $port"
}

# Every ringrelay: one worker, the per-IP limits off (the load's connections all come from
# 127.0.0.1, and the connect load opens thousands a second).
RELAY_ENV=(RINGRELAY_LIMITS_IP_CONNECT_RATE=0 RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0
    RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP=0)

# start NAME CPU PORT COMMAND...: runs COMMAND pinned to CPU (its stderr in $WORK/NAME.log),
# keeps its pid under NAME and waits for PORT.
declare -A PID_OF
start() {
    local name=$1 cpu=$2 port=$3
    shift 3
    taskset -c "$cpu" "$@" >/dev/null 2>"$WORK/$name.log" &
    PIDS+=($!)
    PID_OF[$name]=$!
    wait_port "$name" "$port" "$WORK/$name.log"
}

# start_relay NAME PORT [VAR=value...]: a plain ringrelay on PORT with one worker.
start_relay() {
    local name=$1 port=$2
    shift 2
    start "$name" "$SERVER_CPU" "$port" env "${RELAY_ENV[@]}" "$@" "$BIN" \
        --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --workers 1
}

# ringrelay with native TLS on PORT (its plain listener stays, on a port of its own).
start_native() {
    local port=$1
    cat >"$WORK/native.toml" <<EOF
[tls]
listen = "127.0.0.1:$port"
cert_file = "$WORK/pki/server.pem"
key_file = "$WORK/pki/server.key"
EOF
    start native "$SERVER_CPU" "$port" env "${RELAY_ENV[@]}" "$BIN" --config "$WORK/native.toml" \
        --listen "127.0.0.1:$(free_port)" --admin-listen 127.0.0.1:0 --workers 1
}

# The plain relay HAProxy forwards to (one, for both HAProxy setups, which never run at
# the same time): it believes the PROXY v2 header HAProxy sends, as
# haproxy/ringrelay-tls.cfg tells an operator to set it up.
BEHIND_PORT=""
start_haproxy() {
    local name=$1 cpu=$2 port=$3
    if [ -z "$BEHIND_PORT" ]; then
        BEHIND_PORT=$(free_port)
        start_relay behind "$BEHIND_PORT" RINGRELAY_SECURITY_TRUSTED_PROXIES=127.0.0.1 \
            RINGRELAY_SECURITY_CLIENT_IP_HEADER=proxy-protocol
    fi
    start "$name" "$cpu" "$port" env RR_TLS_BIND="127.0.0.1:$port" \
        RR_TLS_CRT="$WORK/pki/haproxy.pem" RR_RELAY="127.0.0.1:$BEHIND_PORT" RR_NBTHREAD=1 \
        haproxy -db -f "$HAPROXY_CFG"
}

# URL_OF: where the load goes; PROCS_OF: the processes whose CPU time counts; LABEL_OF.
declare -A URL_OF PROCS_OF LABEL_OF
setup_server() {
    local s=$1 port
    port=$(free_port)
    URL_OF[$s]="wss://127.0.0.1:$port"
    PROCS_OF[$s]=$s
    case $s in
    native)
        start_native "$port"
        LABEL_OF[$s]="ringrelay native TLS, cpu$SERVER_CPU"
        ;;
    haproxy)
        start_haproxy haproxy "$SERVER_CPU" "$port"
        PROCS_OF[$s]="haproxy behind"
        LABEL_OF[$s]="HAProxy TLS + plain ringrelay, both on cpu$SERVER_CPU"
        ;;
    haproxy2)
        start_haproxy haproxy2 "$HAPROXY2_CPU" "$port"
        PROCS_OF[$s]="haproxy2 behind"
        LABEL_OF[$s]="HAProxy TLS on cpu$HAPROXY2_CPU + plain ringrelay on cpu$SERVER_CPU: 2 cores"
        if [ "$HAPROXY2_CPU" = "$CLIENT_CPU" ]; then
            LABEL_OF[$s]+=", HAProxy's shared with the load"
        fi
        ;;
    tokio)
        start tokio "$SERVER_CPU" "$port" "$PEER" --listen "127.0.0.1:$port" \
            --tls-cert "$WORK/pki/server.pem" --tls-key "$WORK/pki/server.key"
        LABEL_OF[$s]="tokio-rustls-relay (current-thread), cpu$SERVER_CPU"
        ;;
    tokio-plain)
        start tokio-plain "$SERVER_CPU" "$port" "$PEER" --listen "127.0.0.1:$port"
        URL_OF[$s]="ws://127.0.0.1:$port"
        LABEL_OF[$s]="tokio-rustls-relay without TLS, cpu$SERVER_CPU"
        ;;
    plain)
        start_relay plain "$port"
        URL_OF[$s]="ws://127.0.0.1:$port"
        LABEL_OF[$s]="plain ringrelay, no TLS (baseline), cpu$SERVER_CPU"
        ;;
    *) die "unknown server $s (native haproxy haproxy2 tokio tokio-plain plain)" ;;
    esac
}

active=()
for s in "${SERVERS[@]}"; do
    if [ "$s" = native ] && ! has_native_tls; then
        echo "tls_bench: this ringrelay has no native TLS (no [tls] config section): native skipped" >&2
        continue
    fi
    setup_server "$s"
    active+=("$s")
done
[ ${#active[@]} -gt 0 ] || die "no server to measure"
# A first check of each server with another client (Python's websockets): a pair over its
# URL, one message each way, so that a server that cannot relay fails here, not as zeros.
smoke() {
    python3 - "$CA" "$@" <<'PY'
import asyncio, ssl, sys
try:
    import websockets
except ImportError:
    print("tls_bench: no Python websockets, first check skipped", file=sys.stderr)
    sys.exit(0)
ca, urls = sys.argv[1], sys.argv[2:]

async def check(url):
    kw = {"ssl": ssl.create_default_context(cafile=ca)} if url.startswith("wss://") else {}
    route = f"{url}/v1/relay/tls-bench-check"
    async with websockets.connect(route, **kw) as a, websockets.connect(route, **kw) as b:
        await a.send(b"ping from a")
        assert await asyncio.wait_for(b.recv(), 5) == b"ping from a"
        await b.send("text from b")
        assert await asyncio.wait_for(a.recv(), 5) == "text from b"

async def main():
    for url in urls:
        try:
            await asyncio.wait_for(check(url), 10)
        except Exception as e:
            sys.exit(f"tls_bench: {url} failed the first check: {e!r}")

asyncio.run(main())
PY
}
urls=()
for s in "${active[@]}"; do urls+=("${URL_OF[$s]}"); done
smoke "${urls[@]}"
if [ -n "${CHECK_ONLY:-}" ]; then
    echo "tls_bench: every server relayed a pair over its URL (CHECK_ONLY: no load)"
    exit 0
fi
if [[ " ${urls[*]}" == *" wss://"* ]] && ! "$LOAD_BIN" load --help | grep -q -- '--ca-file'; then
    die "this ringrelay load has no wss:// support (--ca-file): only SERVERS=\"plain tokio-plain\" can run"
fi

loads=()
for l in "${LOADS[@]}"; do
    case $l in
    64B | 64KiB | connect-x25519) loads+=("$l") ;;
    connect-resume)
        if "$LOAD_BIN" load --help | grep -q -- '--tls-resume'; then loads+=(connect-resume); else
            echo "tls_bench: this ringrelay load has no --tls-resume: connect-resume skipped" >&2
        fi
        ;;
    connect)
        if has_connect_mode; then loads+=(connect); else
            echo "tls_bench: this ringrelay load has no --mode connect: connect skipped" >&2
        fi
        ;;
    *) die "unknown load $l (64B 64KiB connect connect-x25519 connect-resume)" ;;
    esac
done

# CPU time (user + system, clock ticks) of the named servers' processes, all their threads.
cpu_ticks() {
    local total=0 name f
    for name in "$@"; do
        f=$(cut -d' ' -f14,15 "/proc/${PID_OF[$name]}/stat") || die "$name is gone (log: $WORK/$name.log)"
        total=$((total + ${f% *} + ${f#* }))
    done
    echo "$total"
}

# Times the named servers' threads went to sleep (voluntary context switches, all threads):
# each is a wake-up later, so per unit of work it says how much each wake-up carried.
sleeps() {
    local total=0 name f n
    for name in "$@"; do
        for f in /proc/"${PID_OF[$name]}"/task/*/status; do
            n=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$f" 2>/dev/null) || n=0
            total=$((total + ${n:-0}))
        done
    done
    echo "$total"
}

# measure SERVER LOAD ROUND: one run; appends "load round server value busy errors
# load_busy sleeps_per_s" to $RESULTS (value 0 and errors -1 when the load printed no report).
RESULTS=$WORK/results
HZ=$(getconf CLK_TCK)
# The load's own CPU time, to see whether its core was the limit.
TIMED=()
if [ -x /usr/bin/time ]; then TIMED=(/usr/bin/time -f "%U %S" -o "$WORK/load.time"); fi
measure() {
    local s=$1 l=$2 r=$3 url=${URL_OF[$1]} json c0 c1 w0 w1 t0 t1 args=() procs=()
    case $l in
    64B) args=(--mode pairs --pairs "$PAIRS" --window "$WINDOW" --size 64) ;;
    64KiB) args=(--mode pairs --pairs "$PAIRS" --window "$WINDOW" --size 65536) ;;
    connect | connect-resume) args=(--mode connect --pairs "$CONNECT_LOOPS") ;;
    esac
    if [[ $url == wss://* ]]; then
        args+=(--ca-file "$CA")
        if [ "$l" = connect-resume ]; then args+=(--tls-resume); fi
    fi
    read -r -a procs <<<"${PROCS_OF[$s]}"
    echo "0 0" >"$WORK/load.time"
    c0=$(cpu_ticks "${procs[@]}")
    w0=$(sleeps "${procs[@]}")
    t0=$(date +%s.%N)
    if [ "$l" = connect-x25519 ]; then
        json=$(timeout -k 5 $((WARMUP + SECONDS_EACH + 60)) taskset -c "$CLIENT_CPU" \
            "${TIMED[@]}" python3 "$WORK/connect_loops.py" "$url" "$CA" "$CONNECT_LOOPS" "$WARMUP" "$SECONDS_EACH" \
            2>>"$WORK/load.log") || json='{}'
    else
        json=$(timeout -k 5 $((WARMUP + SECONDS_EACH + 60)) taskset -c "$CLIENT_CPU" \
            "${TIMED[@]}" "$LOAD_BIN" load --url "$url" "${args[@]}" --duration "${SECONDS_EACH}s" --warmup "${WARMUP}s" \
            --json 2>>"$WORK/load.log") || json='{}'
    fi
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "${procs[@]}")
    w1=$(sleeps "${procs[@]}")
    python3 - "$l" "$r" "$s" "$c0" "$c1" "$t0" "$t1" "$HZ" "$json" "$(tail -1 "$WORK/load.time")" "$w0" "$w1" \
        >>"$RESULTS" <<'PY'
import json, sys
load, rnd, server, c0, c1, t0, t1, hz, raw, load_time, w0, w1 = sys.argv[1:]
d = json.loads(raw or "{}")
key = {"64B": "msgs_per_s", "64KiB": "mb_per_s"}.get(load, "cycles_per_s")
value = d.get(key) or 0.0
errors = d.get("errors", -1)
tls = d.get("tls") or {}
if load == "connect-resume" and tls and not tls.get("resumed_handshakes"):
    print(f"tls_bench: {server} resumed no handshake in connect-resume", file=sys.stderr)
wall = float(t1) - float(t0)
busy = (int(c1) - int(c0)) / int(hz) / wall
user, system = (float(x) for x in load_time.split()[:2])
print(load, rnd, server, f"{value:.3f}", f"{busy:.4f}", errors, f"{(user + system) / wall:.4f}",
      f"{(int(w1) - int(w0)) / wall:.1f}")
PY
}

declare -A UNIT=([64B]="msgs/s" [64KiB]="MB/s" [connect]="connections/s"
    [connect-resume]="connections/s, resumed with the server's tickets"
    [connect-x25519]="connections/s, Python client")
echo "tls_bench: $ROUNDS rounds of ${WARMUP}s warm-up + ${SECONDS_EACH}s per server and load;" \
    "servers on cpu$SERVER_CPU, the load on cpu$CLIENT_CPU; $KEY certificate; $PAIRS pairs" \
    "(window $WINDOW), $CONNECT_LOOPS connect loops"
for s in "${active[@]}"; do printf '  %-12s %-24s %s\n' "$s" "${URL_OF[$s]}" "${LABEL_OF[$s]}"; done
: >"$RESULTS"
n=${#active[@]}
for l in "${loads[@]}"; do
    echo "== $l (${UNIT[$l]})"
    for r in $(seq "$ROUNDS"); do
        line="  round $r:"
        for i in $(seq 0 $((n - 1))); do
            # Each round starts one server further along.
            s=${active[$(((i + r - 1) % n))]}
            measure "$s" "$l" "$r"
            read -r _ _ _ v _ e _ _ < <(tail -1 "$RESULTS")
            flag=""
            [ "$e" = 0 ] || flag=" (errors: $e)"
            line+=$(printf '  %s %.0f%s' "$s" "$v" "$flag")
        done
        echo "$line"
    done
done

# ---- summary ----
python3 - "$RESULTS" "${active[@]}" <<'PY'
import statistics, sys
from collections import defaultdict
path, servers = sys.argv[1], sys.argv[2:]
rows = [l.split() for l in open(path) if l.strip()]
val = defaultdict(dict)  # (load, server) -> {round: value}
busy = defaultdict(list)
lbusy = defaultdict(list)
wakes = defaultdict(list)  # the server's sleeps per unit of work, per round
errs = defaultdict(int)
for load, rnd, server, v, b, e, lb, w in rows:
    val[(load, server)][int(rnd)] = float(v)
    busy[(load, server)].append(float(b))
    lbusy[(load, server)].append(float(lb))
    if float(v) > 0:
        wakes[(load, server)].append(float(w) / float(v))
    if int(e) != 0:
        errs[(load, server)] += 1
unit = {"64B": "msgs/s", "64KiB": "MB/s", "connect": "conn/s", "connect-x25519": "conn/s",
        "connect-resume": "conn/s"}
wake_scale = {"64B": 1e3}  # sleeps per 1,000 messages; per MB or per connection otherwise
per = {"64B": ("µs/msg", 1e6), "64KiB": ("ms/MB", 1e3), "connect": ("µs/conn", 1e6),
       "connect-x25519": ("µs/conn", 1e6), "connect-resume": ("µs/conn", 1e6)}
print()
print("summary: median and (min–max) over the rounds; busy: the server processes' CPU time")
print("over the run's wall time (100% = one core); cpu/unit: busy / rate, the server CPU each")
print("unit of work cost; load: the load generator's CPU share of its core (100%: it was the")
print("limit); sleeps: how often the server processes went to sleep (voluntary context")
print("switches, all threads) per 1,000 messages, per MB or per connection: each is a wake-up")
print("later, so it says how much work each wake-up carried; native/x: the median (min–max)")
print("of the per-round ratios of rates")
for load in dict.fromkeys(r[0] for r in rows):
    pu, scale = per[load]
    print(f"== {load}")
    print(f"  {'server':<12} {unit[load]:>10} {'(min–max)':>21} {'busy':>5} {pu:>8} {'load':>5} {'sleeps':>7}   native/x")
    nat = val.get((load, "native"))
    for s in servers:
        v = val.get((load, s))
        if not v:
            continue
        xs = sorted(v.values())
        med = statistics.median(xs)
        b = statistics.median(busy[(load, s)])
        lb = statistics.median(lbusy[(load, s)])
        cpu = f"{b / med * scale:8.2f}" if med else "       -"
        ws = wakes[(load, s)]
        sl = f"{statistics.median(ws) * wake_scale.get(load, 1):7.2f}" if ws else "      -"
        ratio = ""
        if nat and s != "native":
            rs = sorted(nat[r] / v[r] for r in v if r in nat and v[r] > 0)
            if rs:
                ratio = f"{statistics.median(rs):.2f} ({rs[0]:.2f}–{rs[-1]:.2f})"
        bad = f"  errors in {errs[(load, s)]} run(s)" if errs[(load, s)] else ""
        spread = f"({xs[0]:.0f}–{xs[-1]:.0f})"
        print(f"  {s:<12} {med:>10.0f} {spread:>21} {b * 100:>4.0f}% {cpu} {lb * 100:>4.0f}% {sl}   {ratio}{bad}")
PY
