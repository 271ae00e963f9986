#!/usr/bin/env bash
# Holds Cargo.toml's `rust-version` to the truth: that toolchain checks every target of the
# locked tree (with and without the default features), and the release before it is refused
# by the lock file's own crates, so the figure is the minimum and not merely one that works.
# Installs both toolchains with rustup when missing (about 100 MB each, minimal profile) and
# checks in a target directory of its own: another compiler shares no artifacts. .ci/run runs
# it (about 2.5 minutes on a quiet 2-core machine; docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

msrv=$(sed -n 's/^rust-version = "\([0-9.]*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$msrv" ] || { echo "msrv: no rust-version in Cargo.toml" >&2; exit 1; }
command -v rustup >/dev/null || { echo "msrv: rustup is needed to install Rust $msrv" >&2; exit 1; }
# rust-version "1.88" is 1.88.0; the release before it is 1.87.0.
IFS=. read -r major minor patch <<<"$msrv"
tc="$major.$minor.${patch:-0}"
below="$major.$((minor - 1)).0"
have() { rustup run "$1" rustc --version >/dev/null 2>&1; }
# A toolchain installed as "1.88" (rustup's channel name) is used when it is that same release:
# no second download of a compiler the machine already has.
pick() {
    local short=${1%.*}
    if ! have "$1" && have "$short" && rustup run "$short" rustc --version | grep -q "^rustc $1 "; then
        echo "$short"
    else
        echo "$1"
    fi
}
tc=$(pick "$tc")
below=$(pick "$below")
for t in "$tc" "$below"; do
    have "$t" || rustup toolchain install "$t" --profile minimal
done
target=${MSRV_TARGET_DIR:-target/msrv}

echo "== Rust $tc: cargo check --locked --all-targets"
cargo +"$tc" check --locked --all-targets --target-dir "$target"
echo "== Rust $tc: cargo check --locked --no-default-features"
cargo +"$tc" check --locked --no-default-features --target-dir "$target"

echo "== Rust $below is refused"
# Cargo compares every locked crate's rust-version before it compiles anything: a second.
if out=$(cargo +"$below" check --locked --target-dir "$target" 2>&1); then
    echo "msrv: Rust $below checks the tree too: lower rust-version in Cargo.toml" >&2
    exit 1
fi
if ! grep -q "is not supported by the following packages" <<<"$out"; then
    echo "msrv: Rust $below failed, but not on a crate's rust-version:" >&2
    echo "$out" >&2
    exit 1
fi
echo "msrv ok: rust-version $msrv builds the lock file; $below does not"
