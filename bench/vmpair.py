"""Shared helpers of bench/migration.py and bench/state.py: start the same guest
under `vmsnap run` and under qemu-system-x86_64, migrate or save it through QMP,
read QMP event timestamps, and measure the raw loopback unix-socket bandwidth.

Python 3 standard library only; reuses tests/integration/harness.py (Qmp, Vm).
"""
import os
import re
import socket
import subprocess
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
import harness  # noqa: E402

QEMU = "qemu-system-x86_64"
# guest/state: -cpu host for TSC-deadline, minus arch-capabilities (QEMU 7.2 cannot
# set MSR 0x10a on this PVM host); see tests/integration/test_guest_state_qemu.py
QEMU_CPU_STATE = os.environ.get("VMSNAP_QEMU_CPU", "host,-arch-capabilities")
BIG_BANDWIDTH = 1 << 40  # bytes/s: "unlimited" (QEMU 7.2's default is 32 MiB/s)


class BenchFailure(Exception):
    pass


def ev_time(ev):
    """A QMP event's timestamp (host wall clock) in seconds."""
    ts = ev["timestamp"]
    return ts["seconds"] + ts["microseconds"] / 1e6


class QemuVm:
    """A qemu-system-x86_64 process with a QMP socket (harness.Qmp: events kept) and
    its serial output in a file, mirroring harness.Vm's interface."""

    def __init__(self, workdir, name, elf, memory, append="", cpus=1, cpu=None,
                 incoming=None):
        self.workdir = workdir
        self.serial_path = os.path.join(workdir, name + ".serial")
        self.qmp_path = os.path.join(workdir, name + ".qmp")
        for p in (self.serial_path, self.qmp_path):
            if os.path.exists(p):
                os.unlink(p)
        argv = [QEMU, "-accel", "kvm"]
        if cpu:
            argv += ["-cpu", cpu]
        argv += ["-smp", str(cpus), "-m", memory, "-kernel", elf, "-append", append,
                 "-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
                 "-monitor", "none", "-serial", "file:" + self.serial_path,
                 "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        if incoming:
            argv += ["-incoming", incoming]
        self.argv = argv
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        self.stderr = open(self.stderr_path, "wb")
        self.t_spawn = time.time()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr)
        self._qmp = None
        harness.wait_for(lambda: os.path.exists(self.qmp_path) or self.proc.poll() is not None,
                         30, "QEMU's QMP socket")
        if self.proc.poll() is not None:
            raise BenchFailure("QEMU exited %d: %s" % (self.proc.returncode,
                                                       self.stderr_text()))

    @property
    def qmp(self):
        if self._qmp is None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    self._qmp = harness.Qmp(self.qmp_path)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        return self._qmp

    def serial(self):
        try:
            with open(self.serial_path, "rb") as f:
                return f.read().decode("latin-1")
        except FileNotFoundError:
            return ""

    def stderr_text(self):
        self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def read_u32(self, gpa):
        """A little-endian u32 of guest memory, through pmemsave."""
        path = os.path.join(self.workdir, "pmem.%d" % os.getpid())
        self.qmp.cmd("pmemsave", {"val": gpa, "size": 4, "filename": path})
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        return int.from_bytes(data, "little")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._qmp:
            self._qmp.close()
            self._qmp = None
        self.stderr.close()


def vmsnap_vm(workdir, name, memory, append=None, cpus=1, kernel=None, incoming=None,
              paused=False, env=None):
    extra = []
    if kernel:
        extra += ["--kernel", kernel]
    if incoming:
        extra += ["--incoming", incoming]
    if paused:
        extra += ["--paused"]
    t_spawn = time.time()
    vm = harness.Vm(workdir, memory=memory, cpus=cpus, append=append, name=name, extra=extra,
                    env=env)
    vm.t_spawn = t_spawn  # before the process starts, as QemuVm's
    return vm


DIRTY_FLAGS_GPA = 0xF03C  # guest/dirty status block flags (docs/GUEST.md)
DIRTY_FLAG_WALKING = 1 << 2  # vCPU 0 has begun pass 1 (the clearing pre-pass is over)


DIRTY_SLOT0_GPA = 0xF040  # vCPU 0's slot: +4 passes, +8 first_page, +12 end_page, +16 cursor


def pages_walked(vm):
    """Pages vCPU 0 of guest/dirty has walked since boot: passes x share + cursor. The
    cursor is read between two reads of the pass counter, so a pass boundary in the
    middle cannot put it off by a whole pass."""
    first = vm.read_u32(DIRTY_SLOT0_GPA + 8)
    share = vm.read_u32(DIRTY_SLOT0_GPA + 12) - first
    for _ in range(5):
        passes = vm.read_u32(DIRTY_SLOT0_GPA + 4)
        cursor = vm.read_u32(DIRTY_SLOT0_GPA + 16)
        if vm.read_u32(DIRTY_SLOT0_GPA + 4) == passes:
            break
    return passes * share + max(0, min(cursor - first, share))


def wait_walking(vm, timeout):
    """Waits until guest/dirty really dirties: under QEMU it first zeroes its range
    (clear=1), which only writes zero pages for seconds at 1 GiB and more."""
    deadline = time.monotonic() + timeout
    while not vm.read_u32(DIRTY_FLAGS_GPA) & DIRTY_FLAG_WALKING:
        if vm.proc.poll() is not None or time.monotonic() > deadline:
            raise BenchFailure("guest/dirty did not begin pass 1 within %ds" % timeout)
        time.sleep(0.05)


def wait_serial(vm, predicate, timeout, what, bad=None):
    """Polls vm's serial output until predicate(text); fails at once on `bad` (a regex)
    or when the VMM exits."""
    deadline = time.monotonic() + timeout
    while True:
        text = vm.serial()
        if bad and re.search(bad, text):
            raise BenchFailure("guest error while waiting for %s: %r" %
                               (what, text[re.search(bad, text).start():][:120]))
        if predicate(text):
            return text
        if vm.proc.poll() is not None:
            raise BenchFailure("%s exited %d while waiting for %s: %s" %
                               (vm.argv[0], vm.proc.returncode, what, vm.stderr_text()[-500:]))
        if time.monotonic() > deadline:
            raise BenchFailure("no %s within %ds (serial tail %r)" % (what, timeout, text[-80:]))
        time.sleep(0.02)


def set_migration(vm, params):
    vm.qmp.cmd("migrate-set-capabilities",
               {"capabilities": [{"capability": "events", "state": True}]})
    if params:
        vm.qmp.cmd("migrate-set-parameters", params)


def wait_migration(vm, timeout):
    """Polls query-migrate until completed/failed; on timeout cancels and returns None."""
    deadline = time.monotonic() + timeout
    while True:
        info = vm.qmp.cmd("query-migrate")
        st = info.get("status")
        if st == "completed":
            if not info.get("total-time"):
                # QEMU 7.2 can report completed before it fills in the times
                time.sleep(0.05)
                info = vm.qmp.cmd("query-migrate")
            return info
        if st in ("failed", "cancelled"):
            raise BenchFailure("migration %s: %s" % (st, info.get("error-desc")))
        if time.monotonic() > deadline:
            vm.qmp.cmd("migrate_cancel")
            return None
        time.sleep(0.01)


def migrate(src, dst, uri, params, timeout):
    """Migrates src to dst (already listening on uri). Returns a dict of total/reported
    downtime/guest-visible downtime (src STOP to dst RESUME event timestamps), MiB
    transferred, passes and the guest's walk rate until STOP (pages/s, guest/dirty with
    one vCPU), or None when it did not complete within timeout."""
    set_migration(src, params)
    dst.qmp  # connect now, so the RESUME event is queued
    src.qmp.events.clear()
    walked0 = pages_walked(src)
    t0 = time.time()
    src.qmp.cmd("migrate", {"uri": uri})
    info = wait_migration(src, timeout)
    if info is None:
        return None
    stop = src.qmp.wait_event("STOP", timeout=30)
    # the source is paused from STOP on: its counters are those the destination resumes
    walk_rate = (pages_walked(src) - walked0) / max(ev_time(stop) - t0, 1e-3)
    resume = dst.qmp.wait_event("RESUME", timeout=60)
    timeline = ["%+.1f ms %s %s" % ((ev_time(e) - t0) * 1000, e["event"], e.get("data", ""))
                for e in sorted(src.qmp.events + [stop], key=ev_time)]
    timeline.append("%+.1f ms dst RESUME" % ((ev_time(resume) - t0) * 1000))
    ram = info.get("ram", {})
    return {"total": info.get("total-time", 0), "downtime": info.get("downtime", 0),
            "visible": (ev_time(resume) - ev_time(stop)) * 1000,
            "mib": ram.get("transferred", 0) / (1 << 20),
            "passes": ram.get("dirty-sync-count", 0), "info": info, "walk": walk_rate,
            "timeline": timeline}


def loopback_gbps(workdir, total=4 << 30, buf=4 << 20):
    """Raw AF_UNIX stream bandwidth: one sender thread, one receiver thread, `buf`-sized
    send/recv_into (the GIL is released in both), over a named socket."""
    path = os.path.join(workdir, "loopback.sock")
    if os.path.exists(path):
        os.unlink(path)
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)
    data = memoryview(bytearray(b"\x5a" * buf))
    err = []

    def send():
        try:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buf)
            c.connect(path)
            left = total
            while left > 0:
                n = min(left, buf)
                c.sendall(data[:n])
                left -= n
            c.close()
        except Exception as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=send)
    t.start()
    s, _ = ls.accept()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buf)
    rbuf = memoryview(bytearray(buf))
    got = 0
    t0 = time.monotonic()
    while True:
        n = s.recv_into(rbuf)
        if not n:
            break
        got += n
    dt = time.monotonic() - t0
    t.join()
    s.close()
    ls.close()
    os.unlink(path)
    if err or got != total:
        raise BenchFailure("loopback transfer failed: %s, %d of %d bytes" % (err, got, total))
    return got / dt / 1e9


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def print_table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()
