#!/usr/bin/env python3
"""Live migration over a unix socket on localhost: vmsnap->vmsnap beside QEMU->QEMU.

The same guest (guest/dirty, build/guest/guest-dirty.elf) runs under `vmsnap run`
and under qemu-system-x86_64 -accel kvm -kernel; each is migrated to a fresh
destination VMM of its kind listening on unix:PATH (QMP migrate, events on,
max-bandwidth unlimited for both: QEMU 7.2's default is 32 MiB/s). Variants:
  * unpaced: the guest walks as fast as it can (re-dirties ~1.1-1.5 GB/s here),
    downtime-limit --downtime-limit (default 300 ms, QEMU's default);
  * paced: --append pace=N (default 100, ~9 000 pages/s) and downtime-limit
    --paced-downtime-limit (default 10 ms), so that it converges.
Columns (medians of --runs runs): total time and downtime as query-migrate reports
them, guest-visible downtime (the source's STOP event to the destination's RESUME
event, both QMP event timestamps on this host's clock: the time no vCPU of the guest
runs anywhere), MiB transferred, passes (dirty-sync-count) and the achieved
throughput (transferred / total time) beside the raw loopback unix-socket bandwidth
measured in the same run (one sender and one receiver thread, 4 MiB buffers), and the
guest's own speed while it migrated: pages guest/dirty walked (each one a page it
re-dirtied) per second from `migrate` to STOP, from its status block. On 2 host CPUs
the guest, the sender and the receiver share the machine: a VMM that leaves the guest
more CPU has more pages to send again.

Each run checks the oracle: the destination prints 2 'B' after it resumes (paced:
one 'B' with bevery=1, or --check-secs of walking, since a paced pass of a 4G guest
lasts minutes) and neither side's serial output has an 'E' (a lost or stale page); any failure is reported and
the exit status is 1. A migration that does not complete within its timeout is
cancelled and shown as not converged (n/c) without failing the bench.

Run by run the VMMs alternate (vmsnap then QEMU, QEMU then vmsnap, ...), so that both
meet the same host: its free memory and CPU share drift over a bench.

A run whose guest-visible pause exceeds its downtime-limit is flagged as it ends (for
vmsnap with its per-pass trace, which the source always logs), and the count per VMM
is printed under the table.

Reading the table: the reported downtime is each VMM's own (source side, from the
pause request); the guest-visible one starts at the STOP event (after the vCPUs have
parked) and ends when the destination runs, so it includes the destination's load
time but not a slow vCPU kick. Under QEMU the guest zeroes its range in a pre-pass
(clear=1, docs/GUEST.md) and -m 4G leaves only ~3 GiB below 4 GiB (PCI hole) for the
walk, so 4G runs do not dirty exactly the same set under both VMMs. Paced runs start
their warm-up when the guest's status block says pass 1 has begun (under QEMU the
pre-pass takes seconds at 1 GiB and only writes zero pages).

Sizes: RAM, or RAM:WALKED to have the guest walk (re-dirty) only WALKED from 1 MiB up
(end=1 MiB+WALKED on its command line, under both VMMs). The default follows the issue:
a 150 MiB guest with 99 MiB actively dirtied (150M:99M), then the same guest walking
all of its RAM (150M), then 1 GiB and 4 GiB guests walking all of theirs.

usage: bench/migration.py [--sizes 150M:99M,150M,1G,4G] [--runs 5] [--variants unpaced,paced]
                          [--pace 100] [--quick] [--vmsnap PATH] [--elf PATH]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import vmpair  # noqa: E402
from vmpair import BenchFailure, median  # noqa: E402

GIB = 1 << 30


def size_bytes(text):
    return int(text[:-1]) << (30 if text[-1] in "Gg" else 20)


def parse_size(spec):
    """'150M' -> ('150M', '', '150M'); '150M:99M' -> ('150M', 'end=0x6400000', '150M (99M walked)')."""
    ram, _, walked = spec.partition(":")
    if not walked:
        return ram, "", ram
    if size_bytes(walked) + (1 << 20) > size_bytes(ram):
        raise SystemExit("--sizes %s: the walk starts at 1 MiB, so WALKED must be below RAM - 1 MiB"
                         % spec)
    return ram, "end=%#x" % ((1 << 20) + size_bytes(walked)), "%s (%s walked)" % (ram, walked)


def no_e(vm, who):
    text = vm.serial()
    if "E" in text:
        raise BenchFailure("%s guest reported a bad page: %r" % (who, text[text.find("E"):][:40]))


def one_run(a, work, kind, size, append, downtime_limit):
    """One migration of `kind` (vmsnap|qemu); returns the result dict or None (n/c)."""
    vms = []
    sock = os.path.join(work, "mig-%s.sock" % kind)
    if os.path.exists(sock):
        os.unlink(sock)
    timeout = 60 + 30 * size_bytes(size) / GIB
    try:
        if kind == "vmsnap":
            # the per-pass trace (one line a pass), shown for a run over its limit
            src = vmpair.vmsnap_vm(work, "vsrc", size, append=append or None,
                                   env={"G_MESSAGES_DEBUG": "vmsnap"})
        else:
            src = vmpair.QemuVm(work, "qsrc", a.elf, size, append=append)
        vms.append(src)
        # boot (QEMU: SeaBIOS ~3 s, plus the clearing pre-pass) and two passes
        if "pace=" in append:
            # a paced pass of a large VM lasts minutes: run a few seconds after 'A'
            vmpair.wait_serial(src, lambda t: t.startswith("A"), 60, "A on the source",
                               bad="E")
            vmpair.wait_walking(src, 60 + 30 * size_bytes(size) / GIB)
            time.sleep(a.warmup)
        else:
            vmpair.wait_serial(src, lambda t: t.count("B") >= 2,
                               60 + 60 * size_bytes(size) / GIB, "2 B on the source", bad="E")
        if kind == "vmsnap":
            dst = vmpair.vmsnap_vm(work, "vdst", size, append=append or None,
                                   incoming="unix:" + sock)
        else:
            dst = vmpair.QemuVm(work, "qdst", a.elf, size, append=append,
                                incoming="unix:" + sock)
        vms.append(dst)
        harness_wait_listen(dst, sock, kind)
        res = vmpair.migrate(src, dst, "unix:" + sock,
                             {"downtime-limit": downtime_limit,
                              "max-bandwidth": vmpair.BIG_BANDWIDTH}, timeout)
        if res is None:
            no_e(src, "source")
            return None
        if "pace=" in append:
            # the destination keeps walking: one B, or --check-secs without an E
            end = time.monotonic() + a.check_secs
            vmpair.wait_serial(dst, lambda t: "B" in t or time.monotonic() > end,
                               a.check_secs + 30, "B on the destination", bad="E")
            if dst.status() != "running":
                raise BenchFailure("destination is %s, not running" % dst.status())
        else:
            vmpair.wait_serial(dst, lambda t: t.count("B") >= 2, 60, "2 B on the destination",
                               bad="E")
        no_e(src, "source")
        no_e(dst, "destination")
        # vmsnap's per-pass trace (G_MESSAGES_DEBUG=vmsnap), for --verbose
        res["passlog"] = [ln.split(": ", 1)[-1] for ln in src.stderr_text().splitlines()
                          if "vmsnap-DEBUG" in ln]
        return res
    except Exception:
        for v in vms:
            sys.stderr.write("--- %s stderr tail: %s\n--- serial tail: %r\n" %
                             (" ".join(v.argv[:3]), v.stderr_text()[-1500:], v.serial()[-200:]))
        raise
    finally:
        for v in vms:
            v.kill()


def harness_wait_listen(dst, sock, kind):
    """The destination must be listening before the source connects."""
    vmpair.harness.wait_for(lambda: os.path.exists(sock) or dst.proc.poll() is not None, 30,
                            "%s destination listening on %s" % (kind, sock))
    if dst.proc.poll() is not None:
        raise BenchFailure("%s destination exited %d: %s" % (kind, dst.proc.returncode,
                                                             dst.stderr_text()[-500:]))


def fmt(values, spec="%.0f"):
    return spec % median(values) if values else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="150M:99M,150M,1G,4G")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--variants", default="unpaced,paced")
    ap.add_argument("--pace", type=int, default=100, help="pace=N of the paced variant")
    ap.add_argument("--downtime-limit", type=int, default=300, help="ms, unpaced variant")
    ap.add_argument("--paced-downtime-limit", type=int, default=10, help="ms, paced variant")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="paced: seconds the source runs after 'A' before migrating")
    ap.add_argument("--check-secs", type=float, default=5.0,
                    help="paced: seconds the destination must run without E (or until B)")
    ap.add_argument("--verbose", action="store_true",
                    help="print each run's event timeline and query-migrate (and vmsnap's "
                    "per-pass trace when G_MESSAGES_DEBUG=vmsnap)")
    ap.add_argument("--vmms", default="vmsnap,qemu")
    ap.add_argument("--quick", action="store_true", help="1 run, 150M only (smoke test)")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--vmsnap", default=os.path.join(here, "..", "build", "cli", "vmsnap"))
    ap.add_argument("--elf", default=os.path.join(here, "..", "build", "guest",
                                                  "guest-dirty.elf"))
    a = ap.parse_args()
    if a.quick:
        a.runs = 1
        a.sizes = a.sizes.split(",")[0]
    vmpair.harness.VMSNAP = os.path.abspath(a.vmsnap)
    a.elf = os.path.abspath(a.elf)
    vmms = a.vmms.split(",")
    if "qemu" in vmms and not shutil.which(vmpair.QEMU):
        print("qemu-system-x86_64 not found: vmsnap only")
        vmms = [v for v in vmms if v != "qemu"]
    work = tempfile.mkdtemp(prefix="vmsnap-bench-mig-", dir=a.dir)
    failures = []
    rows = []
    over_limit = {}  # kind -> runs whose guest-visible pause exceeded downtime-limit
    header = ["guest, variant", "VMM", "total ms", "downtime ms (reported)",
              "guest-visible downtime ms", "transferred MiB", "passes", "GB/s achieved",
              "guest k pages/s while migrating", "converged"]
    try:
        lb = [vmpair.loopback_gbps(work) for _ in range(max(3, a.runs))]
        loop = median(lb)
        print("raw loopback unix-socket bandwidth (same run, median of %d): %.2f GB/s" %
              (len(lb), loop), flush=True)
        for spec in a.sizes.split(","):
            size, walk, name = parse_size(spec)
            for variant in a.variants.split(","):
                if variant == "paced":
                    append, dl = "pace=%d bevery=1" % a.pace, a.paced_downtime_limit
                    label = "dirty %s, pace=%d, limit %d ms" % (name, a.pace, dl)
                else:
                    append, dl = "", a.downtime_limit
                    label = "dirty %s, unpaced, limit %d ms" % (name, dl)
                append = " ".join(x for x in (walk, append) if x)
                res = {kind: [] for kind in vmms}
                nc = {kind: 0 for kind in vmms}
                # run by run, the VMMs alternate (A B, B A, ...): both meet the same
                # host, whose memory and CPU share drift over a bench
                for i in range(a.runs):
                    for kind in (vmms if i % 2 == 0 else vmms[::-1]):
                        t0 = time.monotonic()
                        try:
                            r = one_run(a, work, kind, size, append, dl)
                        except Exception as e:  # noqa: BLE001
                            failures.append("%s %s run %d: %s" % (label, kind, i + 1, e))
                            print("FAILED: %s %s run %d: %s" % (label, kind, i + 1, e),
                                  flush=True)
                            traceback.print_exc()
                            continue
                        if r is None:
                            nc[kind] += 1
                            print("  %s %s run %d: did not converge (%.0f s)" %
                                  (label, kind, i + 1, time.monotonic() - t0), flush=True)
                            continue
                        res[kind].append(r)
                        print("  %s %s run %d: total %d ms, downtime %d ms, visible %.1f ms, "
                              "%.0f MiB, %d passes, guest walked %.0f k pages/s" %
                              (label, kind, i + 1, r["total"], r["downtime"], r["visible"],
                               r["mib"], r["passes"], r["walk"] / 1000), flush=True)
                        over = r["visible"] > dl
                        if over:
                            over_limit[kind] = over_limit.get(kind, 0) + 1
                            print("    paused %.1f ms, over the %d ms downtime-limit" %
                                  (r["visible"], dl), flush=True)
                        if a.verbose or (over and r.get("passlog")):
                            print("    source events: " + "; ".join(r["timeline"]))
                            print("    query-migrate: %s" % r["info"])
                            for ln in r.get("passlog", []):
                                print("    " + ln)
                for kind in vmms:
                    rs = res[kind]
                    gbps = [r["mib"] * (1 << 20) / (r["total"] / 1000) / 1e9
                            for r in rs if r["total"]]
                    rows.append([label, kind, fmt([r["total"] for r in rs]),
                                 fmt([r["downtime"] for r in rs]),
                                 fmt([r["visible"] for r in rs], "%.1f"),
                                 fmt([r["mib"] for r in rs]),
                                 fmt([r["passes"] for r in rs]),
                                 fmt(gbps, "%.2f"),
                                 fmt([r["walk"] / 1000 for r in rs]),
                                 "%d/%d" % (len(rs), len(rs) + nc[kind])])
        rows.append(["raw loopback unix socket (reference)", "python, 4 MiB buffers", "", "",
                     "", "", "", "%.2f" % loop, "", ""])
        print("\nlive migration over unix socket, medians of %d run%s (host: %d CPUs, shared)\n"
              % (a.runs, "s" if a.runs > 1 else "", os.cpu_count()))
        vmpair.print_table(header, rows)
        print("\nruns paused longer than their downtime-limit (guest-visible): %s" %
              (", ".join("%s %d" % (k, over_limit.get(k, 0)) for k in vmms)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("\n%d FAILED run(s):" % len(failures))
        for f in failures:
            print("  " + f)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
