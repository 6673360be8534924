#!/usr/bin/env python3
"""guest/state (2 vCPUs, 512M) under vmsnap beside QEMU: save, restore, live migration.

The same ELF (build/guest/guest-state.elf) runs under `vmsnap run --kernel` and under
qemu-system-x86_64 -accel kvm -cpu host,-arch-capabilities -smp 2 -kernel. Rows
(medians of --runs runs, both VMMs measured in the same run):
  * save of the running guest to a file: vmsnap QMP `migrate file:PATH` (mapped-RAM
    snapshot) vs QEMU 7.2 `migrate exec:cat > PATH` (QEMU 7.2 has no file: URI).
    query-migrate total-time, downtime, and the file's allocated MiB. The guest runs
    during the save (a paused QEMU source would leave its destination paused);
  * restore: a VMM started with --incoming defer / -incoming defer, then QMP
    migrate-incoming file:PATH (vmsnap, map mode) / exec:cat PATH (QEMU) until its
    RESUME event, and from the VMM's launch until RESUME;
  * live migration over a unix socket to a fresh destination (downtime-limit
    --downtime-limit ms, unlimited bandwidth): total, reported downtime, guest-visible
    downtime (source STOP event to destination RESUME event timestamps), MiB;
  * the same with the guest's ring-3 dirtying on (`dirty=MB`, --dirty, at native
    speed unless --dirtyrate): total, downtime, MiB, passes.
After every restore and migration the destination must print 2 heartbeats `S`, and no
serial output of any VM may contain an `F` report (docs/GUEST.md): a violation is
printed loudly and the exit status is 1. A live migration that does not complete in
its timeout is cancelled and shown as not converged (n/c).

usage: bench/state.py [--runs 5] [--memory 512M] [--cpus 2] [--dirty 256] [--quick]
"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import traceback

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import vmpair  # noqa: E402
from vmpair import BenchFailure, ev_time, median  # noqa: E402

F_RE = r"F\d\d [^\n]*"


def guest_text(vm):
    """Serial output without the RX echoes `<x>`."""
    return re.sub(r"<(.)>", "", vm.serial(), flags=re.S)


def f_codes(vm, who):
    """The F reports in vm's output (printed loudly), as a set of 'Fnn'."""
    lines = re.findall(F_RE, guest_text(vm))
    for line in sorted(set(lines)):
        print("  !!! guest/state on %s (%s) reported: %s" % (who, vm.argv[0], line), flush=True)
    return {line[:3] for line in lines}


def wait_beats(vm, n, who, timeout=60):
    vmpair.wait_serial(vm, lambda t: re.sub(r"<(.)>", "", t, flags=re.S).count("S") >= n,
                       timeout, "%d heartbeats on %s" % (n, who))


class Bench:
    def __init__(self, a, work):
        self.a = a
        self.work = work
        self.vms = []

    def start(self, kind, name, append, incoming=None):
        a = self.a
        if kind == "vmsnap":
            vm = vmpair.vmsnap_vm(self.work, name, a.memory, append=append or None,
                                  cpus=a.cpus, kernel=a.elf, incoming=incoming)
        else:
            vm = vmpair.QemuVm(self.work, name, a.elf, a.memory, append=append,
                               cpus=a.cpus, cpu=vmpair.QEMU_CPU_STATE, incoming=incoming)
        self.vms.append(vm)
        return vm

    def boot(self, kind, name, append):
        vm = self.start(kind, name, append)
        vmpair.wait_serial(vm, lambda t: t.startswith("A"), 60, "A on " + name, bad=F_RE)
        wait_beats(vm, self.a.beats, name)
        return vm

    def cleanup(self, failed):
        for v in self.vms:
            if failed:
                sys.stderr.write("--- %s stderr tail: %s\n--- serial tail: %r\n" %
                                 (" ".join(v.argv[:3]), v.stderr_text()[-1500:],
                                  v.serial()[-300:]))
            v.kill()
        self.vms = []

    def save_restore(self, kind):
        """Returns (save info, allocated MiB, restore ms from migrate-incoming, from launch)."""
        a = self.a
        path = os.path.join(self.work, "state-%s.snap" % kind)
        if os.path.exists(path):
            os.unlink(path)
        src = self.boot(kind, kind[0] + "src", a.append)
        vmpair.set_migration(src, {"max-bandwidth": vmpair.BIG_BANDWIDTH})
        src.qmp.cmd("migrate", {"uri": ("file:" if kind == "vmsnap" else "exec:cat > ") + path})
        info = vmpair.wait_migration(src, 300)
        if info is None:
            raise BenchFailure("save to %s did not complete in 300 s" % path)
        fs = f_codes(src, "the saved source")
        src.kill()
        self.vms.remove(src)
        os.sync()
        mib = os.stat(path).st_blocks * 512 / (1 << 20)
        dst = self.start(kind, kind[0] + "rst", a.append, incoming="defer")
        dst.qmp  # connected: the RESUME event will be queued
        t0 = time.time()
        dst.qmp.cmd("migrate-incoming",
                    {"uri": ("file:" if kind == "vmsnap" else "exec:cat ") + path})
        resume = ev_time(dst.qmp.wait_event("RESUME", timeout=120))
        wait_beats(dst, 2, "the restored VM")
        fs |= f_codes(dst, "the restored VM")
        self.cleanup(False)
        os.unlink(path)
        return info, mib, (resume - t0) * 1000, (resume - dst.t_spawn) * 1000, fs

    def live(self, kind, append, timeout):
        a = self.a
        sock = os.path.join(self.work, "mig-%s.sock" % kind)
        if os.path.exists(sock):
            os.unlink(sock)
        src = self.boot(kind, kind[0] + "msrc", append)
        dst = self.start(kind, kind[0] + "mdst", append, incoming="unix:" + sock)
        vmpair.harness.wait_for(lambda: os.path.exists(sock) or dst.proc.poll() is not None,
                                30, "the destination listening")
        res = vmpair.migrate(src, dst, "unix:" + sock,
                             {"downtime-limit": a.downtime_limit,
                              "max-bandwidth": vmpair.BIG_BANDWIDTH}, timeout)
        fs = set()
        if res is not None:
            wait_beats(dst, 2, "the migrated VM")
            fs |= f_codes(dst, "the migrated VM")
        fs |= f_codes(src, "the migration source")
        self.cleanup(False)
        if res is None:
            return fs and {"fs": fs} or None
        res["fs"] = fs
        return res


def fmt(values, spec="%.0f"):
    return spec % median(values) if values else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--append", default="", help="extra guest/state command line")
    ap.add_argument("--dirty", type=int, default=256, help="MiB of ring-3 dirtying (dirty=)")
    ap.add_argument("--dirtyrate", type=int, default=0, help="MiB/s per vCPU, 0 = native")
    ap.add_argument("--downtime-limit", type=int, default=300, help="ms")
    ap.add_argument("--timeout", type=float, default=120, help="s per live migration")
    ap.add_argument("--beats", type=int, default=2, help="heartbeats before saving")
    ap.add_argument("--tolerate-qemu-f11", action="store_true",
                    help="QEMU's F11 (ymm upper halves lost on this PVM host, docs/GUEST.md) "
                    "is printed but does not fail the bench")
    ap.add_argument("--vmms", default="vmsnap,qemu")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1 run (smoke test)")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--vmsnap", default=os.path.join(here, "..", "build", "cli", "vmsnap"))
    ap.add_argument("--elf", default=os.path.join(here, "..", "build", "guest",
                                                  "guest-state.elf"))
    a = ap.parse_args()
    if a.quick:
        a.runs = 1
    vmpair.harness.VMSNAP = os.path.abspath(a.vmsnap)
    a.elf = os.path.abspath(a.elf)
    vmms = a.vmms.split(",")
    if "qemu" in vmms and not shutil.which(vmpair.QEMU):
        print("qemu-system-x86_64 not found: vmsnap only")
        vmms = [v for v in vmms if v != "qemu"]
    dirty_append = (a.append + " dirty=%d" % a.dirty +
                    (" dirtyrate=%d" % a.dirtyrate if a.dirtyrate else "")).strip()
    work = tempfile.mkdtemp(prefix="vmsnap-bench-state-", dir=a.dir)
    failures = []
    results = {}  # (kind, what) -> list

    fseen = {}  # kind -> set of F codes

    def note_f(kind, what, fs):
        for f in fs:
            fseen.setdefault(kind, set()).add(f)
            if not (kind == "qemu" and f == "F11" and a.tolerate_qemu_f11):
                failures.append("%s %s: guest/state reported %s" % (kind, what, f))

    def attempt(kind, what, fn):
        b = Bench(a, work)
        try:
            return fn(b)
        except Exception as e:  # noqa: BLE001
            failures.append("%s %s: %s" % (kind, what, e))
            print("FAILED: %s %s: %s" % (kind, what, e), flush=True)
            traceback.print_exc()
            b.cleanup(True)
            return "failed"

    try:
        for i in range(a.runs):
            for kind in vmms:
                r = attempt(kind, "save/restore", lambda b: b.save_restore(kind))
                if r != "failed":
                    info, mib, rst, launch, fs = r
                    note_f(kind, "save/restore", fs)
                    results.setdefault((kind, "save"), []).append((info, mib))
                    results.setdefault((kind, "restore"), []).append((rst, launch))
                    print("  run %d %s: save %d ms (downtime %s ms, %.0f MiB file), restore "
                          "%.1f ms (launch to running %.1f ms)" %
                          (i + 1, kind, info.get("total-time", 0), info.get("downtime"), mib,
                           rst, launch), flush=True)
                for what, app in (("live", a.append), ("dirty", dirty_append)):
                    r = attempt(kind, what, lambda b: b.live(kind, app, a.timeout))
                    if r == "failed":
                        continue
                    if r is not None:
                        note_f(kind, what, r["fs"])
                        if "total" not in r:
                            r = None
                    results.setdefault((kind, what), []).append(r)
                    if r is None:
                        print("  run %d %s %s: did not converge in %.0f s" %
                              (i + 1, kind, what, a.timeout), flush=True)
                        continue
                    print("  run %d %s %s: total %d ms, downtime %d ms, visible %.1f ms, "
                          "%.0f MiB, %d passes" % (i + 1, kind, what, r["total"], r["downtime"],
                                                   r["visible"], r["mib"], r["passes"]),
                          flush=True)
                    if a.verbose:
                        print("    events: " + "; ".join(r["timeline"]))
                        print("    query-migrate: %s" % r["info"])
        rows = []
        for kind in vmms:
            sv = results.get((kind, "save"), [])
            rows.append(["save of the running guest to a file (%s)" %
                         ("migrate file:" if kind == "vmsnap" else "migrate exec:cat >"), kind,
                         fmt([s[0].get("total-time", 0) for s in sv]),
                         fmt([s[0].get("downtime", 0) for s in sv]), "",
                         fmt([s[1] for s in sv]) + " (file)", fmt([s[0].get("ram", {}).get(
                             "dirty-sync-count", 0) for s in sv]), "%d/%d" % (len(sv), a.runs)])
        for kind in vmms:
            rs = results.get((kind, "restore"), [])
            rows.append(["restore: migrate-incoming %s to RESUME (launch to RESUME: %s ms)" %
                         ("file: (map)" if kind == "vmsnap" else "exec:cat", fmt([r[1] for r in rs])),
                         kind, fmt([r[0] for r in rs], "%.1f"), "", "", "", "",
                         "%d/%d" % (len(rs), a.runs)])
        for what, label in (("live", "live migration, unix socket"),
                            ("dirty", "live migration, ring-3 %s" % dirty_append)):
            for kind in vmms:
                rs = results.get((kind, what), [])
                ok = [r for r in rs if r]
                rows.append(["%s, limit %d ms" % (label, a.downtime_limit), kind,
                             fmt([r["total"] for r in ok]), fmt([r["downtime"] for r in ok]),
                             fmt([r["visible"] for r in ok], "%.1f"),
                             fmt([r["mib"] for r in ok]), fmt([r["passes"] for r in ok]),
                             "%d/%d" % (len(ok), a.runs)])
        for kind in vmms:
            print("F reports of guest/state under %s (all runs): %s" %
                  (kind, ", ".join(sorted(fseen.get(kind, ()))) or "none"))
        print("\nguest/state, %s, %d vCPUs, medians of %d run%s (host: %d CPUs, shared)\n" %
              (a.memory, a.cpus, a.runs, "s" if a.runs > 1 else "", os.cpu_count()))
        vmpair.print_table(["measurement", "VMM", "time ms", "downtime ms (reported)",
                            "guest-visible downtime ms", "MiB", "passes", "ok/converged"],
                           rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("\n%d FAILED (F reports or errors):" % len(failures))
        for f in failures:
            print("  " + f)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
