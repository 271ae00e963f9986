# Sourced by the bench scripts: waits for a relay started in the background to log that it
# listens, and prints its public address. A script calls it inside $( ), so the relay must
# not hold that pipe open: start it with stdout to /dev/null and stderr to LOG.
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
