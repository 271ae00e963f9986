# Sourced by the bench scripts.
#
# listen_address waits for a relay started in the background to log that it listens, and
# prints its public address. A script calls it inside $( ), so the relay must not hold that
# pipe open: start it with stdout to /dev/null and stderr to LOG.
#
#   listen_address NAME LOG [TRIES]   TRIES * 50 ms at most (default 100); exits 1 on failure
listen_address() {
    local name=$1 log=$2 tries=${3:-100}
    for _ in $(seq "$tries"); do
        if grep -q "ringrelay listening" "$log"; then
            grep -o 'listen=[^ ]*' "$log" | head -1 | cut -d= -f2
            return
        fi
        sleep 0.05
    done
    echo "$(basename "$0"): $name did not start" >&2
    cat "$log" >&2
    exit 1
}

# A scratch dir WORK and a list PIDS the script appends its background processes to; on exit
# those are killed (and waited for) and WORK is removed.
#
#   bench_workdir
bench_workdir() {
    WORK=$(mktemp -d)
    PIDS=()
    trap bench_cleanup EXIT
}
bench_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
