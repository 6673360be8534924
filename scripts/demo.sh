#!/usr/bin/env bash
# The quick-start demo: sets everything up (Debian packages, build), boots the
# built-in self-checking guest, and drives it over its QMP socket.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
exec python3 scripts/demo.py build/cli/vmsnap
