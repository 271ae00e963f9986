#!/usr/bin/env bash
# Fuzzes the I/O-free codec, the request-head path, token verification, the config loader,
# the agent's reader, the node-to-node link's opening and the PROXY protocol header with
# cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh                 run every target for FUZZ_SECONDS (default 60) each
#   scripts/fuzz.sh TARGET...       run only these targets
#   scripts/fuzz.sh --build-only    build every target and stop (what CI calls)
#   scripts/fuzz.sh --regressions   replay the saved inputs in fuzz/regressions/
#
# Exits non-zero when any target crashes (the input is left in fuzz/artifacts/TARGET/) or
# fails to build. Only stable Rust is needed: cargo-fuzz passes nightly -Z flags, which
# stable rustc accepts under RUSTC_BOOTSTRAP=1. AddressSanitizer is used when it builds;
# otherwise (or with FUZZ_SANITIZER=none) the targets are built without a sanitizer.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ_DIR="$ROOT/fuzz"
ALL_TARGETS=(frame_decoder handshake mask_diff utf8_stream jwt_claims config_parse answer_capture agent_inbound link_opening proxy_header)
SECONDS_EACH=${FUZZ_SECONDS:-60}
CARGO_FUZZ_VERSION=${CARGO_FUZZ_VERSION:-0.13.2}
export RUSTC_BOOTSTRAP=1

mode=run
targets=()
for arg in "$@"; do
    case "$arg" in
        --build-only) mode=build ;;
        --regressions) mode=regressions ;;
        -h | --help)
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "fuzz.sh: unknown option $arg" >&2
            exit 2
            ;;
        *) targets+=("$arg") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [ -f "$FUZZ_DIR/fuzz_targets/$t.rs" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
done
case "$SECONDS_EACH" in '' | *[!0-9]*) echo "fuzz.sh: FUZZ_SECONDS must be a whole number" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

cd "$FUZZ_DIR"

# Pick the sanitizer once: address if it builds here, else none.
sanitizer=${FUZZ_SANITIZER:-}
if [ -z "$sanitizer" ]; then
    probe_log="$FUZZ_DIR/target/asan-probe.log"
    mkdir -p "$FUZZ_DIR/target"
    if cargo fuzz build --sanitizer address "${targets[0]}" >"$probe_log" 2>&1; then
        sanitizer=address
    else
        echo "== AddressSanitizer build failed (fuzz/target/asan-probe.log); building without a sanitizer"
        sanitizer=none
    fi
fi

build() {
    local t
    if [ ${#targets[@]} -eq ${#ALL_TARGETS[@]} ]; then
        echo "== building all fuzz targets (sanitizer: $sanitizer)"
        cargo fuzz build --sanitizer "$sanitizer"
        return
    fi
    for t in "${targets[@]}"; do
        echo "== building $t (sanitizer: $sanitizer)"
        cargo fuzz build --sanitizer "$sanitizer" "$t"
    done
}

if [ "$mode" = build ]; then
    build
    echo "== built ${#targets[@]} fuzz target(s)"
    exit 0
fi

failed=()

if [ "$mode" = regressions ]; then
    build
    for t in "${targets[@]}"; do
        inputs=("$FUZZ_DIR"/regressions/"$t"-*)
        [ -e "${inputs[0]}" ] || continue
        for input in "${inputs[@]}"; do
            if cargo fuzz run --sanitizer "$sanitizer" "$t" "$input" >"$FUZZ_DIR/target/regression.log" 2>&1; then
                echo "ok      $t $(basename "$input")"
            else
                echo "CRASH   $t $(basename "$input")"
                grep -m1 -A3 'panicked at' "$FUZZ_DIR/target/regression.log" | sed 's/^/        /' || true
                failed+=("$t/$(basename "$input")")
            fi
        done
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "== ${#failed[@]} regression input(s) still crash: ${failed[*]}"
        exit 1
    fi
    echo "== every regression input passes"
    exit 0
fi

build
mkdir -p "$FUZZ_DIR/target/logs"
for t in "${targets[@]}"; do
    log="$FUZZ_DIR/target/logs/$t.log"
    args=(-max_total_time="$SECONDS_EACH" -timeout=30 -print_final_stats=1)
    [ -f "$FUZZ_DIR/dicts/$t.dict" ] && args+=(-dict="$FUZZ_DIR/dicts/$t.dict")
    # The checked-in seeds are read alongside the (ignored) corpus the runs grow.
    mkdir -p "$FUZZ_DIR/corpus/$t"
    echo "== fuzzing $t for ${SECONDS_EACH}s (log: fuzz/target/logs/$t.log)"
    if cargo fuzz run --sanitizer "$sanitizer" "$t" -- "${args[@]}" >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed 's/^/   /' || true
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | sed 's/^/   /' || true
    else
        echo "   CRASH in $t:"
        grep -m1 -A4 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log" | sed 's/^/     /' || true
        grep -E 'Test unit written to|^artifact_prefix' "$log" | sed 's/^/     /' || true
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "== crashes in: ${failed[*]}"
    exit 1
fi
echo "== no crashes in ${#targets[@]} target(s), ${SECONDS_EACH}s each"
