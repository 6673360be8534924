#!/usr/bin/env python3
"""Save and restore speed of mapped-RAM snapshots beside the disk's own limits.

One table, medians of --runs runs, measured in the same run on the same
filesystem (--dir):
  * fio sequential O_DIRECT write and read (1 MiB blocks, libaio, depth 16);
  * save GB/s of guests whose every page is non-zero (x-guest-memory-fill), with
    1..N writer threads, with and without page checksums (QMP migrate);
  * peak extra memory of the saving process (VmHWM after - VmRSS before);
  * map restore: launch of `vmsnap restore` to vCPUs running (VMSNAP_TRACE_RESUME);
  * copy restore GB/s (launch to running) beside fio read, and the speed at which
    this machine hands out fresh memory (first touch), which bounds it too.

usage: bench/snapshot.py [--dir DIR] [--sizes 1G,4G,8G] [--runs 3] [--vmsnap PATH]
"""
import argparse
import json
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
import harness  # noqa: E402

GIB = 1 << 30


def size_bytes(text):
    return int(text[:-1]) << (30 if text[-1] == "G" else 20)


def fio(path, rw, jobs=1, size=2 * GIB):
    """Sequential O_DIRECT GB/s. Writes go to a new file without preallocation, as a
    sparse snapshot does; `jobs` writers take disjoint parts of the file."""
    if rw == "write" and os.path.exists(path):
        os.unlink(path)
    part = size // jobs
    r = subprocess.run(["fio", "--name=b", "--filename=" + path, "--rw=" + rw, "--bs=1M",
                        "--direct=1", "--ioengine=libaio", "--iodepth=16",
                        "--size=%d" % part, "--numjobs=%d" % jobs, "--offset_increment=%d" % part,
                        "--fallocate=none", "--group_reporting", "--output-format=json"],
                       capture_output=True, text=True, check=True)
    job = json.loads(r.stdout)["jobs"][0]
    return job["write" if rw == "write" else "read"]["bw_bytes"] / 1e9


def first_touch_gbps(size=2 * GIB):
    m = mmap.mmap(-1, size)
    t0 = time.monotonic()
    m[::4096] = bytes(size // 4096)
    dt = time.monotonic() - t0
    m.close()
    return size / dt / 1e9


def vm_status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def bench_save(work, size, threads_list, runs):
    """Returns {(threads, checksums): [GB/s...]}, extra memory MiB, snapshot path."""
    vms = []
    out = {}
    extra = []
    vm = harness.start_vm(vms, work, memory=size, extra=["--paused"], name="save-" + size)
    try:
        vm.qmp.cmd("x-guest-memory-fill")
        path = os.path.join(work, "vm-%s.snap" % size)
        for checksums in (True, False):
            for threads in threads_list:
                vm.qmp.cmd("migrate-set-parameters",
                           {"multifd-channels": threads, "x-page-checksums": checksums})
                for _ in range(runs):
                    if os.path.exists(path):
                        os.unlink(path)
                    subprocess.run(["sync"])
                    rss = vm_status_kb(vm.proc.pid, "VmRSS")
                    with open("/proc/%d/clear_refs" % vm.proc.pid, "w") as f:
                        f.write("5")  # reset VmHWM
                    info = vm.save("file:" + path)
                    hwm = vm_status_kb(vm.proc.pid, "VmHWM")
                    extra.append((hwm - rss) / 1024)
                    secs = info["total-time"] / 1000
                    out.setdefault((threads, checksums), []).append(size_bytes(size) / secs / 1e9)
        # leave a checksummed snapshot for the restore benchmarks
        vm.qmp.cmd("migrate-set-parameters", {"x-page-checksums": True})
        os.unlink(path)
        vm.save("file:" + path)
        vm.quit()
    finally:
        for v in vms:
            v.kill()
    return out, max(extra), path


def restore_ms(path, mode):
    env = dict(os.environ, VMSNAP_TRACE_RESUME="1")
    subprocess.run(["sync"])
    t0 = time.monotonic()
    p = subprocess.Popen([harness.VMSNAP, "restore", path, "--mode", mode, "--serial", "none"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    try:
        for line in p.stderr:
            if line.startswith("vmsnap-trace: vcpus running at monotonic"):
                us = int(line.split()[5])
                return (us / 1e6 - t0) * 1000
        raise RuntimeError("restore of %s did not report running" % path)
    finally:
        p.kill()
        p.wait()


def incoming_ms(work, path, size):
    """QMP migrate-incoming (map) on a VMM already started with --incoming defer, to
    the vCPUs running: the restore itself, without process start and VM creation."""
    vms = []
    env = {"VMSNAP_TRACE_RESUME": "1"}
    vm = harness.start_vm(vms, work, memory=size, name="in-" + size,
                          extra=["--incoming", "defer"], env=env)
    try:
        vm.qmp  # connect before timing
        t0 = time.monotonic()
        vm.qmp.cmd("migrate-incoming", {"uri": "file:" + path})
        vm.qmp.wait_event("RESUME")
        for line in vm.stderr_text().splitlines():
            if line.startswith("vmsnap-trace: vcpus running at monotonic"):
                return (int(line.split()[5]) / 1e6 - t0) * 1000
        raise RuntimeError("no resume trace")
    finally:
        for v in vms:
            v.kill()


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.path.join(here, "..", "build", "bench-tmp"))
    ap.add_argument("--sizes", default="1G,4G,8G")
    ap.add_argument("--map-sizes", default="64M,1G,4G,8G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--vmsnap", default=os.path.join(here, "..", "build", "cli", "vmsnap"))
    a = ap.parse_args()
    harness.VMSNAP = os.path.abspath(a.vmsnap)
    os.makedirs(a.dir, exist_ok=True)
    work = tempfile.mkdtemp(dir=a.dir)
    ncpu = os.cpu_count()
    threads_list = sorted({1, 2, ncpu})
    try:
        fiofile = os.path.join(work, "fio.tmp")
        # the limit is the better of one and N writers, like our 1..N threads
        w = max(statistics.median(fio(fiofile, "write", jobs) for _ in range(a.runs))
                for jobs in sorted({1, ncpu}))
        r = statistics.median(fio(fiofile, "read") for _ in range(a.runs))
        os.unlink(fiofile)
        touch = statistics.median(first_touch_gbps() for _ in range(a.runs))
        print("limits on %s: O_DIRECT write %.2f GB/s, O_DIRECT read %.2f GB/s, fresh-memory "
              "first touch %.2f GB/s" % (a.dir, w, r, touch), flush=True)

        print("\n| measurement | vmsnap | physical limit (same run) | ratio |")
        print("|---|---:|---:|---:|", flush=True)

        class Rows(list):
            def append(self, row):
                print("| %s | %s | %s | %s |" % row, flush=True)
                super().append(row)
        rows = Rows()
        snaps = {}
        extra = 0
        for size in a.sizes.split(","):
            res, ex, path = bench_save(work, size, threads_list, a.runs)
            extra = max(extra, ex)
            snaps[size] = path
            for (threads, sums), v in sorted(res.items()):
                med = statistics.median(v)
                rows.append(("save %s, %d thread%s, checksums %s" %
                             (size, threads, "s" if threads > 1 else "", "on" if sums else "off"),
                             "%.2f GB/s" % med, "%.2f GB/s write" % w, "%.0f%%" % (100 * med / w)))
        for size in a.map_sizes.split(","):
            if size not in snaps:
                _, _, snaps[size] = bench_save(work, size, [ncpu], 1)
            ms = statistics.median(incoming_ms(work, snaps[size], size)
                                   for _ in range(max(5, a.runs)))
            rows.append(("map restore %s: QMP migrate-incoming to vCPUs running" % size,
                         "%.2f ms" % ms, "target < 10 ms", ""))
            ms = statistics.median(restore_ms(snaps[size], "map") for _ in range(max(5, a.runs)))
            rows.append(("map restore %s: `vmsnap restore` launch to vCPUs running" % size,
                         "%.1f ms" % ms, "(includes process start, KVM VM and memslot)", ""))
        for size in a.sizes.split(","):
            times = []
            for _ in range(a.runs):
                drop_caches()
                times.append(restore_ms(snaps[size], "copy"))
            ms = statistics.median(times)
            gbps = size_bytes(size) / (ms / 1000) / 1e9
            limit = min(r, touch)
            rows.append(("copy restore %s (launch to running, %.0f ms)" % (size, ms),
                         "%.2f GB/s" % gbps, "%.2f GB/s (min of read, first touch)" % limit,
                         "%.0f%%" % (100 * gbps / limit)))
        rows.append(("peak extra memory of the saving process", "%.0f MiB" % extra,
                     "target <= 64 MiB + metadata", ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
