#!/usr/bin/env bash
# Runs every vmsnap test (unit and integration) in the build directory $1
# (default ./build, set up first if needed) and prints "N passed, N failed, N skipped",
# counting each TAP test case. Exit status 0 only if nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
builddir=${1:-build}
[ -f "$builddir/build.ninja" ] || bash scripts/setup.sh "$builddir"
ninja -C "$builddir" >/dev/null || { echo "0 passed, 1 failed"; exit 1; }
meson test -C "$builddir" --print-errorlogs --num-processes 1 "${@:2}"
status=$?
python3 scripts/tap-summary.py "$builddir/meson-logs/testlog.json"
summary=$?
[ $status -eq 0 ] && [ $summary -eq 0 ]
