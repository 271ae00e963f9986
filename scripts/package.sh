#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and checks what is in it.
#
#   scripts/package.sh                  release build, then target/debian/ringrelay_*.deb
#   scripts/package.sh --profile dev    package the debug build instead (CI: scripts/test has
#                                       built it already, so no release build is needed)
#   scripts/package.sh --check-only F   only check an existing .deb
#
# Before cargo-deb runs, the files that come from the binary itself are generated into
# target/package/: the man pages (`ringrelay man --out-dir`), the bash, zsh and fish
# completions (`ringrelay completions`) and the unit, whose ExecStart= names /usr/bin (where
# the package puts the binary) instead of /usr/local/bin (where docs/systemd.md installs it
# by hand). The check unpacks the .deb with `dpkg -x` into a temporary directory and looks
# for every file, runs the packaged binary (--version, --print-config of the packaged
# config), and reads the control data (conffiles, maintainer scripts).
#
# Needs cargo-deb (`cargo install cargo-deb --locked`; .ci/run installs it when missing),
# dpkg-deb and gzip. See docs/operations.md.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
check_only=
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --check-only) check_only="$2"; shift 2 ;;
        *) echo "usage: scripts/package.sh [--profile release|dev] [--check-only FILE.deb]" >&2; exit 2 ;;
    esac
done

fail() { echo "scripts/package.sh: $*" >&2; exit 1; }

case "$profile" in
    dev) bin=target/debug/ringrelay ;;
    *) bin="target/$profile/ringrelay" ;;
esac

generate() {
    echo "== cargo build --profile $profile"
    cargo build --locked --profile "$profile" --bin ringrelay
    echo "== generating man pages, completions and the packaged unit into target/package"
    rm -rf target/package
    mkdir -p target/package/man target/package/completions target/package/debian
    "$bin" man --out-dir target/package/man
    # -n: no name or time stamp in the gzip header, so the same input packs the same bytes.
    gzip -9n target/package/man/*.1
    "$bin" completions bash >target/package/completions/ringrelay
    "$bin" completions zsh >target/package/completions/_ringrelay
    "$bin" completions fish >target/package/completions/ringrelay.fish
    sed 's|^ExecStart=/usr/local/bin/ringrelay |ExecStart=/usr/bin/ringrelay |' \
        systemd/ringrelay.service >target/package/ringrelay.service
    grep -q '^ExecStart=/usr/bin/ringrelay ' target/package/ringrelay.service ||
        fail "systemd/ringrelay.service: no ExecStart=/usr/local/bin/ringrelay line to point at /usr/bin"
}

build_deb() {
    command -v cargo-deb >/dev/null || fail "cargo-deb is missing: cargo install cargo-deb --locked"
    echo "== cargo deb --no-build --profile $profile"
    rm -rf target/debian
    # cargo-deb maps the assets' target/release/ to the profile's own directory. --fast: gzip
    # rather than xz; a debug build packs in seconds instead of a minute.
    local fast=()
    [ "$profile" = release ] || fast=(--fast)
    cargo deb --no-build --locked --profile "$profile" "${fast[@]}" --output target/debian/
}

check_deb() {
    local deb="$1" root ctl
    echo "== checking $deb"
    root=$(mktemp -d)
    ctl=$(mktemp -d)
    trap 'rm -rf "$root" "$ctl"' RETURN
    dpkg-deb -x "$deb" "$root"
    dpkg-deb -e "$deb" "$ctl"
    local want=(
        usr/bin/ringrelay
        etc/ringrelay/ringrelay.toml
        lib/systemd/system/ringrelay.service
        usr/share/man/man1/ringrelay.1.gz
        usr/share/man/man1/ringrelay-serve.1.gz
        usr/share/man/man1/ringrelay-load.1.gz
        usr/share/bash-completion/completions/ringrelay
        usr/share/zsh/vendor-completions/_ringrelay
        usr/share/fish/vendor_completions.d/ringrelay.fish
        usr/share/doc/ringrelay/copyright
        usr/share/doc/ringrelay/operations.md
    )
    local f unit="$root/usr/lib/systemd/system/ringrelay.service"
    # cargo-deb 3 puts units under /usr/lib (merged /usr); 2 under /lib.
    [ -e "$unit" ] || unit="$root/lib/systemd/system/ringrelay.service"
    for f in "${want[@]}"; do
        [ "$f" = lib/systemd/system/ringrelay.service ] && f=${unit#"$root"/}
        [ -s "$root/$f" ] || fail "$deb has no $f (or it is empty)"
        echo "   ok  /$f"
    done
    grep -q '^ExecStart=/usr/bin/ringrelay serve --config /etc/ringrelay/ringrelay.toml$' "$unit" ||
        fail "the packaged unit does not start /usr/bin/ringrelay with /etc/ringrelay/ringrelay.toml"
    grep -q '^DynamicUser=yes$' "$unit" || fail "the packaged unit has no DynamicUser=yes (and the package makes no user)"
    [ -x "$root/usr/bin/ringrelay" ] || fail "/usr/bin/ringrelay is not executable"
    local version
    version=$("$root/usr/bin/ringrelay" --version) || fail "the packaged binary does not run"
    echo "   ok  /usr/bin/ringrelay --version: $version"
    env -u RUST_LOG "$root/usr/bin/ringrelay" serve --print-config --config "$root/etc/ringrelay/ringrelay.toml" >/dev/null ||
        fail "the packaged config does not load"
    echo "   ok  the packaged config loads"
    for f in "$root"/usr/share/man/man1/*.1.gz; do
        gzip -dc "$f" | grep -q '^\.TH ' || fail "$f is not a man page"
    done
    echo "   ok  $(ls "$root"/usr/share/man/man1 | wc -l) man pages"
    grep -qx '/etc/ringrelay/ringrelay.toml' "$ctl/conffiles" || fail "ringrelay.toml is not a conffile"
    echo "   ok  conffiles: $(tr '\n' ' ' <"$ctl/conffiles")"
    grep -q 'deb-systemd-helper.*ringrelay.service' "$ctl/postinst" 2>/dev/null ||
        fail "no postinst enabling ringrelay.service (is maintainer-scripts set in Cargo.toml?)"
    grep -q 'ringrelay.service' "$ctl/postrm" 2>/dev/null || fail "no postrm for ringrelay.service"
    echo "   ok  maintainer scripts: $(cd "$ctl" && ls | grep -E '^(pre|post)' | tr '\n' ' ')"
    local mode
    mode=$(stat -c %a "$root/etc/ringrelay/ringrelay.toml")
    [ "$mode" = 644 ] || fail "ringrelay.toml is $mode; the dynamic user must be able to read it (644)"
    echo "   ok  $(dpkg-deb -f "$deb" Package Version Architecture Depends | tr '\n' ' ')"
}

if [ -n "$check_only" ]; then
    check_deb "$check_only"
    exit 0
fi
generate
build_deb
deb=$(ls target/debian/ringrelay_*.deb | head -1)
check_deb "$deb"
echo "== package ok: $deb ($(du -h "$deb" | cut -f1))"
