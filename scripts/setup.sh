#!/usr/bin/env bash
# Installs vmsnap's build and test dependencies from Debian (when missing) and
# builds it into ./build (or $1). Idempotent: re-running only rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."
builddir=${1:-build}
shift || true

packages=(meson ninja-build pkg-config gcc libc6-dev binutils python3
          libglib2.0-dev libjson-glib-dev libaio-dev libxxhash-dev libarchive-dev
          qemu-system-x86 qemu-utils socat zstd gzip fio clang-format)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ ! -f "$builddir/build.ninja" ]; then
    meson setup "$builddir" "$@" >"$log" 2>&1 || { cat "$log"; exit 1; }
fi
ninja -C "$builddir" >"$log" 2>&1 || { cat "$log"; exit 1; }
echo "setup: built $builddir/cli/vmsnap"
