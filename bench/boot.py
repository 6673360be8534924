#!/usr/bin/env python3
"""Launch-to-first-output latency: `vmsnap run` vs QEMU on the same guest ELF.

Measures, over several runs, the wall time from spawning the VMM to reading the
guest's first serial byte ('A') through a pipe, for vmsnap and (when installed)
qemu-system-x86_64 -accel kvm -kernel guest-dirty.elf. Prints a table of medians.

usage: bench/boot.py [--runs N] [--vmsnap PATH] [--elf PATH] [--memory SIZE]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import time


def first_byte_ms(argv):
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    try:
        b = p.stdout.read(1)
        dt = (time.monotonic() - t0) * 1000
    finally:
        p.kill()
        p.wait()
    if b != b"A":
        raise RuntimeError("%s printed %r first" % (argv[0], b))
    return dt


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--vmsnap", default=os.path.join(here, "..", "build", "cli", "vmsnap"))
    ap.add_argument("--elf", default=os.path.join(here, "..", "build", "guest",
                                                  "guest-dirty.elf"))
    ap.add_argument("--memory", default="256M")
    a = ap.parse_args()

    rows = []
    vm = [first_byte_ms([a.vmsnap, "run", "--memory", a.memory, "--serial", "stdio"])
          for _ in range(a.runs)]
    rows.append(("vmsnap run", vm))
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        mem = a.memory.rstrip("M")
        q = [first_byte_ms([qemu, "-accel", "kvm", "-m", mem, "-kernel", a.elf, "-display",
                            "none", "-vga", "none", "-nodefaults", "-serial", "stdio",
                            "-no-reboot", "-monitor", "none"]) for _ in range(a.runs)]
        rows.append(("qemu-system-x86_64 -kernel", q))
    print("launch to first guest byte, %s RAM, %d runs" % (a.memory, a.runs))
    print("| VMM | median ms | min ms | max ms |")
    print("|---|---:|---:|---:|")
    for name, v in rows:
        print("| %s | %.1f | %.1f | %.1f |" % (name, statistics.median(v), min(v), max(v)))


if __name__ == "__main__":
    main()
