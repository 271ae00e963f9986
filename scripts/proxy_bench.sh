#!/usr/bin/env bash
# ringrelay's reverse proxy beside HAProxy and nginx, in one run, each on one server core, all
# in front of the same backends:
#   HTTP       `ringrelay load --mode http-target` (64 B answers; a request's body echoed)
#   WebSocket  `ringrelay serve --workers 1` (its /v1/echo route), reached as /ws/v1/echo
#              through each proxy, which strips /ws
# and the same load on the proxy's port (`ringrelay load`, which knows none of them):
#   get     small keep-alive GETs, GET_CONC in flight, closed loop: requests/s
#   rate    small keep-alive GETs at RATE per second in total, RATE_CONC connections each on
#           its own schedule, latency from when a request was due (open loop, no coordinated
#           omission): p50/p99/p99.9
#   body    1 MiB POSTs echoed (1 MiB up and 1 MiB down each), BODY_CONC in flight: MB/s
#           each way
#   ws      WS_CONNS WebSocket connections to the echo through the proxy, 64 B messages, a
#           window of 16 each: messages/s (echoed, counted once)
# Every side forwards the same way: keep-alive to the backend, X-Forwarded-For/-Proto/-Host
# added, bodies streamed (nginx: proxy_buffering and proxy_request_buffering off), no request
# log (ringrelay: log.level warn; HAProxy: no log; nginx: access_log off).
#
# The proxy is pinned to SERVER_CPU, backends and load generator to LOAD_CPU. The sides take
# turns within each round, the first one rotating. For each run the proxy's CPU time over the
# measured window (utime+stime from /proc, every process of it) is divided by the work: µs per request (get,
# rate), per MB moved each way (body), per message (ws); the "per CPU-s" column is its
# inverse (requests, MB or messages per second of the proxy's CPU). Prints each run as one
# line, then per side and load the median and spread (min-max) over the rounds.
#
#   scripts/proxy_bench.sh
#   ROUNDS=5 SECONDS_EACH=5 WARMUP=1 scripts/proxy_bench.sh
#   BIN=path (default target/release/ringrelay, built unless NO_BUILD=1): the load tool, the
#     backends and the `ringrelay` side
#   BASE_BIN=path: adds a side `base`, another ringrelay binary's proxy (e.g. main's) to
#     compare with, e.g. SIDES="ringrelay base haproxy" BASE_BIN=/work/wt/bin/ringrelay-main23
#   SIDES="ringrelay haproxy nginx" LOADS="get rate body ws" SERVER_CPU=0 LOAD_CPU=1
#   GET_CONC=64 RATE=5000 RATE_CONC=32 BODY_CONC=4 WS_CONNS=32 LOAD_THREADS=1
#   RESULTS=path: also keep the per-run JSON lines there
#
# haproxy and nginx come from Debian (apt-get install haproxy nginx-light); a side whose
# program is missing is skipped with a note. Everything on loopback and bounded: ROUNDS *
# SIDES * LOADS runs of WARMUP + SECONDS_EACH, each killed after 60 s more.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/relay_start.sh
. scripts/relay_start.sh # bench_workdir

ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-5}
WARMUP=${WARMUP:-1}
GET_CONC=${GET_CONC:-64}
RATE=${RATE:-5000}
RATE_CONC=${RATE_CONC:-32}
BODY_CONC=${BODY_CONC:-4}
WS_CONNS=${WS_CONNS:-32}
LOAD_THREADS=${LOAD_THREADS:-1}
SIDES=${SIDES:-"ringrelay haproxy nginx"}
LOADS=${LOADS:-"get rate body ws"}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BIN=${BIN:-target/release/ringrelay}
BASE_BIN=${BASE_BIN:-}
BODY=$((1 << 20))

if [[ -z ${NO_BUILD:-} && $BIN == target/release/ringrelay ]]; then
  cargo build --release --quiet
fi
have_side() {
  case $1 in
    ringrelay) [[ -x $BIN ]] ;;
    base) [[ -n $BASE_BIN && -x $BASE_BIN ]] ;;
    haproxy) command -v haproxy >/dev/null ;;
    nginx) command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] ;;
    *) return 1 ;;
  esac
}
kept=""
for side in $SIDES; do
  if have_side "$side"; then kept="$kept $side"; else echo "skipping $side: not installed (or BASE_BIN unset)" >&2; fi
done
SIDES=${kept# }
[[ -n $SIDES ]] || { echo "no side to run" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

bench_workdir
RESULTS=${RESULTS:-$WORK/results.jsonl}
: >"$RESULTS"

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

# Waits until something accepts on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cpu_ticks() { # utime+stime of the given pids and their children, in clock ticks
  local sum=0 p f
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
    sum=$((sum + ${f% *} + ${f#* }))
  done
  echo "$sum"
}

# The backends, for the whole run.
taskset -c "$LOAD_CPU" "$BIN" load --mode http-target --listen 127.0.0.1:0 --size 64 \
  >"$WORK/target.out" 2>&1 &
PIDS+=($!)
HTTP_BACK=$(wait_line "$WORK/target.out" "listening on" 's/.*listening on ([^ ]+).*/\1/')
WS_BACK=127.0.0.1:$(free_port)
RINGRELAY_LOG_LEVEL=warn RINGRELAY_LIMITS_IP_CONNECT_RATE=0 \
  RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP=0 \
  taskset -c "$LOAD_CPU" "$BIN" serve --listen "$WS_BACK" --admin-listen 127.0.0.1:0 \
  --workers 1 >/dev/null 2>"$WORK/ws-back.log" &
PIDS+=($!)
wait_port "${WS_BACK#*:}"

start_ringrelay_bin() {
  local bin=$1
  PORT=$(free_port)
  RINGRELAY_LOG_LEVEL=warn RINGRELAY_LIMITS_IP_CONNECT_RATE=0 \
    RINGRELAY_LIMITS_MAX_CONNECTIONS_PER_IP=0 RINGRELAY_LIMITS_MAX_HANDSHAKES_PER_IP=0 \
    RINGRELAY_PROXY_ROUTES="[{ prefix = \"/ws\", strip_prefix = true, upstreams = [{ url = \"http://$WS_BACK\" }] }, { prefix = \"/\", upstreams = [{ url = \"http://$HTTP_BACK\" }] }]" \
    RINGRELAY_PROXY_POOL_MAX_IDLE=256 \
    taskset -c "$SERVER_CPU" "$bin" serve --listen "127.0.0.1:$PORT" \
    --admin-listen 127.0.0.1:0 --workers 1 >/dev/null 2>"$WORK/proxy.log" &
  SERVER_PID=$!
  wait_port "$PORT"
}
start_ringrelay() { start_ringrelay_bin "$BIN"; }
start_base() { start_ringrelay_bin "$BASE_BIN"; }

start_haproxy() {
  PORT=$(free_port)
  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  option forwardfor
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
frontend fe
  bind 127.0.0.1:$PORT
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  use_backend ws if { path_beg /ws/ }
  default_backend http
backend http
  http-reuse always
  server s1 $HTTP_BACK
backend ws
  http-request replace-path /ws(/.*) \1
  server s1 $WS_BACK
EOF
  taskset -c "$SERVER_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$PORT"
}

start_nginx() {
  PORT=$(free_port)
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 9000; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 1000000;
  client_max_body_size 0;
  upstream back { server $HTTP_BACK; keepalive 256; keepalive_requests 1000000; }
  upstream wsback { server $WS_BACK; }
  server {
    listen 127.0.0.1:$PORT;
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$host;
    location / {
      proxy_set_header Connection "";
      proxy_pass http://back;
    }
    location /ws/ {
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 60s;
      proxy_pass http://wsback/;
    }
  }
}
EOF
  taskset -c "$SERVER_CPU" "$NGINX" -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" \
    >"$WORK/nginx.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$PORT"
}

stop_side() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  sleep 0.2
}

load_args() {
  local url="http://127.0.0.1:$PORT/bench"
  case $1 in
    get) echo "--mode http --url $url --keep-alive --concurrency $GET_CONC" ;;
    rate) echo "--mode http --url $url --keep-alive --concurrency $RATE_CONC --rate $RATE" ;;
    body) echo "--mode http --url $url --keep-alive --concurrency $BODY_CONC --method POST --size $BODY" ;;
    ws) echo "--mode echo --url ws://127.0.0.1:$PORT/ws --pairs $WS_CONNS --size 64 --window 16" ;;
  esac
}

ROW='
import json, sys
r = json.loads(sys.stdin.read())
def f(v, d=0):
    return "-" if v is None else ("%.*f" % (d, v))
l = r.get("latency_us") or {}
print("%-10s %-5s %5s %10s %9s %8s %8s %8s %8s %10s %12s" % (
    r["side"], r["load"], r["round"], f(r["per_s"]), f(r.get("mb_each_way"), 1),
    l.get("p50", "-"), l.get("p99", "-"), l.get("p999", "-"), r["errors"],
    f(r["cpu_us_per_unit"], 2), f(r["per_cpu_s"])))
'
HZ=$(getconf CLK_TCK)
echo "proxy on cpu $SERVER_CPU; backends (http $HTTP_BACK, ws $WS_BACK) and load on cpu $LOAD_CPU"
echo "units: get/rate requests, body MB each way, ws messages; cpu_us/unit is the proxy's CPU"
printf '%-10s %-5s %5s %10s %9s %8s %8s %8s %8s %10s %12s\n' side load round per_s MB_each p50us p99us p999us errors cpu_us/unit per_cpu_s
read -r -a side_list <<<"$SIDES"
for round in $(seq "$ROUNDS"); do
  n=${#side_list[@]}
  order=()
  for i in $(seq 0 $((n - 1))); do order+=("${side_list[$(((i + round - 1) % n))]}"); done
  for side in "${order[@]}"; do
    "start_$side"
    for load in $LOADS; do
      # shellcheck disable=SC2046
      timeout $((SECONDS_EACH + WARMUP + 60)) taskset -c "$LOAD_CPU" "$BIN" load \
        $(load_args "$load") --threads "$LOAD_THREADS" --warmup "${WARMUP}s" \
        --duration "${SECONDS_EACH}s" --json >"$WORK/load.out" 2>"$WORK/load.err" &
      load_pid=$!
      # The proxy's CPU over the measured window only (the load's warm-up is over then).
      sleep "$WARMUP"
      before=$(cpu_ticks "$SERVER_PID")
      sleep "$SECONDS_EACH"
      after=$(cpu_ticks "$SERVER_PID")
      wait "$load_pid" || true
      out=$(cat "$WORK/load.out")
      python3 - "$side" "$load" "$round" "$((after - before))" "$HZ" "$BODY" "$out" \
        >>"$RESULTS" <<'PY'
import json, sys
side, load, rnd, ticks, hz, body, out = sys.argv[1:]
try:
    r = json.loads(out)
except ValueError:
    r = {}
secs = r.get("duration_s") or 0
cpu_s = int(ticks) / int(hz)
row = {"side": side, "load": load, "round": int(rnd), "cpu_s": cpu_s, "mb_each_way": None,
       "latency_us": r.get("latency_us"), "errors": r.get("errors", "no report")}
if load in ("get", "rate"):
    units = r.get("ok", 0)
elif load == "body":
    # Each request carried `body` bytes up and the same back: MB moved each way.
    units = r.get("ok", 0) * int(body) / 1e6
    row["mb_each_way"] = units / secs if secs else None
else:
    units = r.get("delivered", 0)
row["per_s"] = units / secs if secs else None
cpu = cpu_s
row["cpu_us_per_unit"] = cpu * 1e6 / units if units else None
row["per_cpu_s"] = units / cpu if cpu and units else None
print(json.dumps(row))
PY
      tail -n 1 "$RESULTS" | python3 -c "$ROW"
    done
    stop_side
  done
done

echo
echo "median (min-max) over $ROUNDS round(s)"
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = []
for r in rows:
    if (r["side"], r["load"]) not in keys:
        keys.append((r["side"], r["load"]))
def med(vals, d=0):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return "%.*f (%.*f-%.*f)" % (d, statistics.median(vals), d, min(vals), d, max(vals))
print("%-10s %-5s %-26s %-22s %-22s %-24s" % ("side", "load", "per_s", "p99us", "cpu_us/unit", "per_cpu_s"))
for side, load in sorted(keys, key=lambda k: (k[1], k[0])):
    rs = [r for r in rows if r["side"] == side and r["load"] == load]
    p99 = [(r["latency_us"] or {}).get("p99") for r in rs]
    per_s = [r["mb_each_way"] if load == "body" else r["per_s"] for r in rs]
    print("%-10s %-5s %-26s %-22s %-22s %-24s" % (side, load, med(per_s, 1 if load == "body" else 0),
          med(p99), med([r["cpu_us_per_unit"] for r in rs], 2), med([r["per_cpu_s"] for r in rs])))
PY
