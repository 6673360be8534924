#!/bin/sh
# Builds fuzz-format with clang's libFuzzer (ASan + UBSan), outside meson so the
# regular build never needs clang. Usage:
#   tests/fuzz/build-libfuzzer.sh [OUT]          (default OUT: /tmp/fuzz-format)
#   mkdir -p /tmp/fuzz-corpus && /tmp/fuzz-format /tmp/fuzz-corpus tests/fuzz/corpus-format \
#       -max_total_time=300 -max_len=65536
# New crashers go into tests/fuzz/corpus-format/ once fixed (keep them small).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-/tmp/fuzz-format}
# shellcheck disable=SC2046
clang -std=c17 -g -O1 -D_GNU_SOURCE -DG_LOG_DOMAIN='"vmsnap"' \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$top/format" -I"$top/include" $(pkg-config --cflags glib-2.0 libxxhash) \
    "$top"/format/*.c "$top/tests/fuzz/fuzz-format.c" \
    $(pkg-config --libs glib-2.0 libxxhash) -o "$out"
echo "built $out"
