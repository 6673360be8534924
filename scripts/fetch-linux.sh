#!/usr/bin/env bash
# Fetches a Linux kernel and builds a tiny initramfs for `vmsnap run --kernel`.
#
#   scripts/fetch-linux.sh [DIR]      (default: build/linux)
#
# Produces, in DIR:
#   vmlinuz         Debian's cloud kernel (a bzImage, x86 boot protocol)
#   vmlinux         the same kernel, uncompressed (an ELF64; boots much faster on
#                   hosts where KVM emulates guest ring 0, see README "Booting Linux")
#   initramfs.gz    busybox (static) with an /init that prints a line and runs a shell
#   VERSION         the kernel package and version
# Everything is cached: a second run with the files present does nothing.
#
# Exit codes: 0 ok, 1 error, 3 cannot fetch (no network or no package registry),
# so that tests can skip with a clear message.
set -euo pipefail

dir=${1:-build/linux}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

if [ -s "$dir/vmlinuz" ] && [ -s "$dir/vmlinux" ] && [ -s "$dir/initramfs.gz" ]; then
    echo "fetch-linux: cached in $dir ($(cat "$dir/VERSION" 2>/dev/null || echo '?'))"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else "$@"; fi
}

# apt-get download: after one `apt-get update` if the first try fails (fresh CI
# images ship without package lists). Exit 3 when the registry is unreachable.
download() {
    (cd "$work" && apt-get download "$@" >/dev/null 2>"$work/apt.err") && return 0
    as_root apt-get update -qq >/dev/null 2>&1 || true
    if ! (cd "$work" && apt-get download "$@" >/dev/null 2>"$work/apt.err"); then
        echo "fetch-linux: cannot download $*: $(tail -1 "$work/apt.err")" >&2
        exit 3
    fi
}

need_tool() { # tool package
    command -v "$1" >/dev/null && return 0
    echo "fetch-linux: installing $2 for $1" >&2
    as_root apt-get install -y -qq "$2" >/dev/null 2>&1 || {
        as_root apt-get update -qq >/dev/null 2>&1 || true
        as_root apt-get install -y -qq "$2" >/dev/null 2>&1
    } || { echo "fetch-linux: cannot install $2 (needed: $1)" >&2; exit 3; }
}

# The metapackage depends on the versioned image package: resolve it.
meta=linux-image-cloud-amd64
if ! apt-cache show "$meta" >/dev/null 2>&1; then
    as_root apt-get update -qq >/dev/null 2>&1 || true
fi
pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$pkg" ]; then
    echo "fetch-linux: cannot resolve $meta (no package lists, no network?)" >&2
    exit 3
fi
echo "fetch-linux: downloading $pkg and busybox-static" >&2
download "$pkg" busybox-static

mkdir -p "$work/k" "$work/bb"
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/bb"
vmlinuz=$(ls "$work"/k/boot/vmlinuz-* | head -1)
version=$(basename "$vmlinuz" | sed 's/^vmlinuz-//')

# The bzImage payload is compressed: find the first known magic and decompress
# from there (trailing bytes after the stream are ignored or reported; the ELF
# header at the start of the output is what we check).
python3 - "$vmlinuz" "$work/payload" <<'PY' > "$work/kind"
import sys
data = open(sys.argv[1], "rb").read()
setup = (data[0x1f1] or 4) + 1
off = setup * 512
payload_offset = int.from_bytes(data[0x248:0x24c], "little")
payload_length = int.from_bytes(data[0x24c:0x250], "little")
blob = data[off + payload_offset: off + payload_offset + payload_length]
magics = [(b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip"),
          (b"\x02\x21\x4c\x18", "lz4"), (b"\x5d\x00\x00", "lzma"), (b"BZh", "bzip2")]
for magic, kind in magics:
    if blob.startswith(magic):
        open(sys.argv[2], "wb").write(blob)
        print(kind)
        sys.exit(0)
# Fallback: search the whole file.
best = None
for magic, kind in magics[:4]:
    i = data.find(magic)
    if i >= 0 and (best is None or i < best[0]):
        best = (i, kind)
if best is None:
    sys.exit("no known compression magic in the bzImage payload")
open(sys.argv[2], "wb").write(data[best[0]:])
print(best[1])
PY
kind=$(cat "$work/kind")
case $kind in
    zstd) need_tool zstd zstd; zstd -dc -q "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
    xz) need_tool xz xz-utils; xz -dc -q "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
    lzma) need_tool xz xz-utils; xz -dc -q --format=lzma "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
    gzip) gzip -dc -q "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
    lz4) need_tool lz4 lz4; lz4 -dc -q "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
    bzip2) need_tool bzip2 bzip2; bzip2 -dc -q "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
esac
if [ "$(head -c 5 "$work/vmlinux" | od -An -tx1 | tr -d ' \n')" != 7f454c4602 ]; then
    echo "fetch-linux: the $kind payload of $vmlinuz did not decompress to an ELF64 vmlinux" >&2
    exit 1
fi

# initramfs: busybox + /init, cpio newc (written here: cpio may not be installed), gzip.
python3 - "$work/bb/bin/busybox" "$work/initramfs.cpio" <<'PY'
import os, sys
busybox = open(sys.argv[1], "rb").read()
init = b"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
echo "vmsnap-initramfs: busybox init reached, $(uname -sr)"
exec /bin/sh
"""
entries = [("bin", 0o040755, b""), ("dev", 0o040755, b""), ("proc", 0o040755, b""),
           ("sys", 0o040755, b""), ("bin/busybox", 0o100755, busybox),
           ("bin/sh", 0o120777, b"busybox"), ("init", 0o100755, init)]
out = bytearray()
def pad(n):
    out.extend(b"\0" * ((4 - len(out) % 4) % 4))
def add(ino, name, mode, data, nlink=1):
    nb = name.encode() + b"\0"
    hdr = "070701" + "".join("%08X" % v for v in (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nb), 0))
    out.extend(hdr.encode()); out.extend(nb); pad(0); out.extend(data); pad(0)
# /dev/console for the kernel's own console open before devtmpfs
for i, (name, mode, data) in enumerate(entries, 1):
    add(i, name, mode, data, 2 if mode & 0o040000 else 1)
nb = b"dev/console\0"
hdr = "070701" + "".join("%08X" % v for v in (100, 0o020600, 0, 0, 1, 0, 0, 0, 0, 5, 1, len(nb), 0))
out.extend(hdr.encode()); out.extend(nb); pad(0)
add(0, "TRAILER!!!", 0, b"")
open(sys.argv[2], "wb").write(out)
PY
gzip -9 -n < "$work/initramfs.cpio" > "$work/initramfs.gz"

install -m 0644 "$vmlinuz" "$dir/vmlinuz"
install -m 0644 "$work/vmlinux" "$dir/vmlinux"
install -m 0644 "$work/initramfs.gz" "$dir/initramfs.gz"
echo "$pkg $version ($kind payload)" > "$dir/VERSION"
echo "fetch-linux: $dir: vmlinuz, vmlinux, initramfs.gz ($pkg, $kind payload)"
