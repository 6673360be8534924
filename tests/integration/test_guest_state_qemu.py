#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""guest/state boots unchanged under QEMU's multiboot loader and keeps its
contract (docs/GUEST.md, "guest/state"): 'A', a heartbeat 'S' about once a
second, no 'F' on a healthy VM, its status block at 0xE000 advancing, COM1
input echoed as <x>, and with 2 vCPUs the AP and the IPI ping-pong running.
Negative cases prove checks can fail: a pause longer than maxjump= (F08),
damaged SIMD expectations (F10, F11) and a damaged dirty page (F19), the
last two written into a running guest through a shared RAM file.  Also
audits the ring-0 code with objdump for instructions KVM's emulator lacks.

Python 3 stdlib only.  Prints TAP.  Env: VMSNAP_GUEST_STATE = path of
guest-state.elf (the x86_64 link, guest-state.elf64, is expected next to
it for the audit).  Skips the VM cases when qemu-system-x86_64 is missing;
uses KVM when /dev/kvm is usable, TCG otherwise (VMSNAP_QEMU_ACCEL,
VMSNAP_QEMU_CPU override).
"""
import concurrent.futures
import json
import mmap
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

QEMU = "qemu-system-x86_64"
ELF = os.environ.get("VMSNAP_GUEST_STATE", "")
ACCEL = os.environ.get("VMSNAP_QEMU_ACCEL") or (
    "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg")
# -cpu host for TSC-deadline; QEMU 7.2 cannot set MSR 0x10a on this host's
# KVM (PVM), hence -arch-capabilities.
CPU = os.environ.get("VMSNAP_QEMU_CPU") or (
    "host,-arch-capabilities" if ACCEL == "kvm" else "max")

BOOT_TIMEOUT = 30.0
F_TIMEOUT = 20.0

# guest/guests.h, VMSNAP_STATE_*
STATUS_GPA = 0xE000
STATUS_SIZE = 0x880
MAGIC = 0x54415453
SLOTS = 0x80
SLOT_SIZE = 0x80
FLAG_VMSNAP, FLAG_KVMCLOCK, FLAG_TSCDL, FLAG_AVX, FLAG_READY = 1, 2, 4, 8, 16
CPU_RUNNING = 2
DIRTY_GPA = 0x200000
F_CLOCK_JUMP, F_SSE, F_AVX, F_DIRTY = 8, 10, 11, 19

HEADER = [("magic", "I", 0x00), ("version", "I", 0x04), ("ncpus", "I", 0x08),
          ("flags", "I", 0x0C), ("hz", "I", 0x10), ("pit_hz", "I", 0x14),
          ("maxjump_ms", "I", 0x18), ("dirty_mb", "I", 0x1C), ("pit_pin", "I", 0x20),
          ("heartbeats", "I", 0x24), ("pit_ticks", "I", 0x28), ("rx_irqs", "I", 0x2C),
          ("rx_bytes", "I", 0x30), ("pings", "I", 0x34), ("pongs", "I", 0x38),
          ("f_count", "I", 0x3C), ("first_f", "I", 0x40), ("last_f", "I", 0x44),
          ("last_f_cpu", "I", 0x48), ("f_mask", "I", 0x4C), ("last_f_a", "Q", 0x50),
          ("last_f_b", "Q", 0x58), ("tsc_khz", "I", 0x60), ("lapic_khz", "I", 0x64),
          ("dirty_rate", "I", 0x68), ("cpus_wanted", "I", 0x6C),
          ("patterns_gpa", "I", 0x70), ("pattern_size", "I", 0x74)]
SLOT = [("state", "I", 0x00), ("apic_id", "I", 0x04), ("lapic_ticks", "I", 0x08),
        ("timer_mode", "I", 0x0C), ("ipis", "I", 0x10), ("f_count", "I", 0x14),
        ("last_f", "I", 0x18), ("r3_calls", "I", 0x1C), ("r3_loops", "Q", 0x20),
        ("kvmclock_ns", "Q", 0x28), ("tsc", "Q", 0x30), ("run_ns", "Q", 0x38),
        ("dirty_bytes", "Q", 0x40), ("dirty_passes", "I", 0x48),
        ("exc_vector", "I", 0x4C), ("exc_rip", "Q", 0x50), ("max_gap_ns", "Q", 0x58)]

results = []


def tap(ok, name, diag=None):
    results.append(ok)
    print("%s %d - %s" % ("ok" if ok else "not ok", len(results), name))
    if diag:
        for line in str(diag).splitlines():
            print("# " + line)
    sys.stdout.flush()


_capture = threading.local()  # a case run on a worker thread buffers its notes


def note(msg):
    buf = getattr(_capture, "notes", None)
    if buf is not None:
        buf.append(msg)
        return
    print("# " + msg)
    sys.stdout.flush()


class Fail(Exception):
    pass


class Skip(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def connect_unix(path, deadline):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise Fail("socket %s never came up" % path)
            time.sleep(0.05)


class Qmp:
    def __init__(self, path, deadline):
        self.sock = connect_unix(path, deadline)
        self.sock.settimeout(30)
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise Fail("QMP connection closed during %s" % name)
            r = json.loads(line)
            if "error" in r:
                raise Fail("QMP %s: %s" % (name, r["error"]))
            if "return" in r:
                return r["return"]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class SharedRam:
    """Guest RAM backed by a shared file the test maps too: writes land in
    the running guest without stopping it.  (QEMU's gdbstub is no use for
    this on PVM hosts: attaching it makes QEMU read and write back the vCPU
    state, which there loses the ymm upper halves -- guest/state reports
    that as F11 by itself.)"""

    def __init__(self, path, size):
        self.f = open(path, "r+b")
        self.map = mmap.mmap(self.f.fileno(), size)

    def write(self, gpa, data):
        self.map[gpa:gpa + len(data)] = data

    def read(self, gpa, size):
        return bytes(self.map[gpa:gpa + size])

    def close(self):
        self.map.close()
        self.f.close()


def parse_output(raw):
    """Splits the serial output into (echoed bytes, F lines, the rest)."""
    s = raw.decode("latin-1")
    echoes = "".join(re.findall(r"<(.)>", s, re.S))
    s = re.sub(r"<.>", "", s, flags=re.S)
    flines = re.findall(r"F\d\d [^\n]*\n", s)
    rest = re.sub(r"F\d\d [^\n]*\n", "", s)
    return echoes, flines, rest


class Vm:
    def __init__(self, smp=1, append="", mem_mb=256, shared=False):
        self.tmp = tempfile.mkdtemp(prefix="vmsnap-guest-state-")
        self.qmp_path = os.path.join(self.tmp, "qmp.sock")
        self.ser_path = os.path.join(self.tmp, "serial.sock")
        self.ram = None
        self.smp = smp
        self.out = bytearray()
        self.lock = threading.Lock()
        argv = [QEMU, "-accel", ACCEL, "-cpu", CPU, "-smp", str(smp), "-m", "%dM" % mem_mb,
                "-kernel", ELF, "-append", append,
                "-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
                "-monitor", "none",
                "-chardev", "socket,id=ser0,path=%s,server=on,wait=off" % self.ser_path,
                "-serial", "chardev:ser0",
                "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        if shared:
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else self.tmp
            self.ram_path = tempfile.mktemp(prefix="vmsnap-guest-state-ram-", dir=shm)
            argv += ["-object", "memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=on"
                     % (mem_mb, self.ram_path), "-machine", "memory-backend=ram0"]
        self.argv = argv
        self.stderr = open(os.path.join(self.tmp, "qemu.err"), "w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.stderr, stderr=self.stderr)
        deadline = time.monotonic() + BOOT_TIMEOUT
        self.qmp = Qmp(self.qmp_path, deadline)
        self.ser = connect_unix(self.ser_path, deadline)
        self.reader = threading.Thread(target=self._read_serial, daemon=True)
        self.reader.start()
        if shared:
            self.ram = SharedRam(self.ram_path, mem_mb << 20)

    def _read_serial(self):
        while True:
            try:
                b = self.ser.recv(4096)
            except OSError:
                return
            if not b:
                return
            with self.lock:
                self.out.extend(b)

    def serial(self):
        with self.lock:
            return bytes(self.out)

    def send(self, data):
        self.ser.sendall(data)

    def diag(self):
        self.stderr.flush()
        self.stderr.seek(0)
        err = self.stderr.read().strip()
        s = self.serial()
        return "command: %s\nserial (%d bytes): %r\nqemu stderr: %s" % (
            " ".join(self.argv), len(s), s[:400], err[-1500:] or "(empty)")

    def wait_for(self, pred, timeout, what, allow_f=False):
        """Polls pred(parsed output) until true; fails on an unexpected F,
        a dead QEMU or a VM stuck in an error state."""
        deadline = time.monotonic() + timeout
        next_status = time.monotonic() + 1.0
        while True:
            parsed = parse_output(self.serial())
            if pred(*parsed):
                return parsed
            if parsed[1] and not allow_f:
                raise Fail("guest reported %r while waiting for %s" % (parsed[1], what))
            if time.monotonic() > next_status:
                # a KVM "emulation failure" leaves QEMU alive in internal-error
                st = self.qmp.cmd("query-status")["status"]
                if st in ("internal-error", "shutdown", "guest-panicked", "io-error"):
                    raise Fail("VM is in state %r while waiting for %s" % (st, what))
                next_status = time.monotonic() + 1.0
            if self.proc.poll() is not None:
                raise Fail("QEMU exited (status %s) while waiting for %s"
                           % (self.proc.returncode, what))
            if time.monotonic() > deadline:
                raise Fail("no %s within %.0f s" % (what, timeout))
            time.sleep(0.05)

    def boot(self):
        return self.wait_for(lambda e, f, r: r.startswith("A"), BOOT_TIMEOUT, "'A'")

    def status(self):
        path = os.path.join(self.tmp, "status")
        self.qmp.cmd("pmemsave", val=STATUS_GPA, size=STATUS_SIZE, filename=path)
        with open(path, "rb") as f:
            raw = f.read()
        os.unlink(path)
        check(len(raw) == STATUS_SIZE, "pmemsave returned %d bytes" % len(raw))
        st = {n: struct.unpack_from("<" + t, raw, o)[0] for n, t, o in HEADER}
        st["slots"] = [{n: struct.unpack_from("<" + t, raw, SLOTS + SLOT_SIZE * i + o)[0]
                        for n, t, o in SLOT} for i in range(16)]
        st["time"] = time.monotonic()
        return st

    def close(self):
        if self.ram:
            self.ram.close()
        if getattr(self, "ram_path", None) and os.path.exists(self.ram_path):
            os.unlink(self.ram_path)
        self.qmp.close()
        try:
            self.ser.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def execute_case(name, fn, **vm_args):
    """Runs one case; returns (status, diag, notes), status "ok", "fail" or "skip".
    Thread-safe: notes are buffered, not printed."""
    vm = None
    _capture.notes = []
    try:
        vm = Vm(**vm_args)
        fn(vm)
        result = ("ok", None)
    except Skip as e:
        result = ("skip", str(e))
    except Fail as e:
        result = ("fail", "%s\n%s" % (e, vm.diag() if vm else ""))
    except Exception as e:  # keep TAP well-formed whatever happens
        result = ("fail", "%s: %s\n%s" % (type(e).__name__, e, vm.diag() if vm else ""))
    finally:
        if vm:
            vm.close()
        notes, _capture.notes = _capture.notes, None
    return result + (notes,)


def report_case(name, outcome):
    status, diag, notes = outcome
    for msg in notes:
        note(msg)
    if status == "skip":
        results.append(True)
        print("ok %d - %s # SKIP %s" % (len(results), name, diag))
        sys.stdout.flush()
    else:
        tap(status == "ok", name, diag)


def run_case(name, fn, **vm_args):
    report_case(name, execute_case(name, fn, **vm_args))


def run_cases_parallel(cases, workers=2):
    """The negative cases wait for one F code each, not for rates: two at a time
    halve the wall time. Reported in order."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(execute_case, name, fn, **args) for name, fn, args in cases]
        for (name, _, _), fut in zip(cases, futures):
            report_case(name, fut.result())


def rate(a, b, key, slot=None):
    va = a[key] if slot is None else a["slots"][slot][key]
    vb = b[key] if slot is None else b["slots"][slot][key]
    return (vb - va) / (b["time"] - a["time"])


def healthy_run(vm, ncpus, seconds=6.0):
    """Boot, then `seconds` of heartbeats with no F; counters advance; echo."""
    vm.boot()
    s0 = vm.status()
    check(s0["magic"] == MAGIC and s0["version"] == 1, "magic/version %#x/%d"
          % (s0["magic"], s0["version"]))
    check(s0["ncpus"] == ncpus, "ncpus %d, wanted %d" % (s0["ncpus"], ncpus))
    check(s0["flags"] & FLAG_READY, "flags %#x lack READY" % s0["flags"])
    check(s0["pit_pin"] in (0, 2), "PIT pin %#x" % s0["pit_pin"])
    hb0 = vm.serial().count(b"S")
    msg = b"echo me <ok>\n"
    vm.send(msg)
    vm.wait_for(lambda e, f, r: e == msg.decode(), 10, "the echo of %r" % msg)
    t_end = time.monotonic() + seconds
    vm.wait_for(lambda e, f, r: time.monotonic() > t_end, seconds + 5, "%.0f s" % seconds)
    s1 = vm.status()
    echoes, flines, rest = parse_output(vm.serial())
    check(not flines, "F lines: %r" % flines)
    check(re.fullmatch(r"AS*", rest), "unexpected output %r" % rest[:100])
    hb = rest.count("S") - hb0
    check(hb >= seconds * 0.6, "%d heartbeats in %.0f s" % (hb, seconds))
    check(s1["f_count"] == 0 and s1["first_f"] == 0, "f_count %d first_f %d"
          % (s1["f_count"], s1["first_f"]))
    check(s1["rx_bytes"] == len(msg) and s1["rx_irqs"] >= 1,
          "rx bytes/irqs %d/%d" % (s1["rx_bytes"], s1["rx_irqs"]))
    check(s1["heartbeats"] > s0["heartbeats"], "heartbeat counter stuck")
    check(s1["pit_ticks"] > s0["pit_ticks"], "PIT ticks stuck at %d" % s1["pit_ticks"])
    for c in range(ncpus):
        a, b = s0["slots"][c], s1["slots"][c]
        check(b["state"] == CPU_RUNNING, "vCPU %d state %d" % (c, b["state"]))
        check(b["apic_id"] == c, "vCPU %d APIC ID %d" % (c, b["apic_id"]))
        for k in ("lapic_ticks", "r3_loops", "kvmclock_ns", "tsc", "run_ns"):
            check(b[k] > a[k], "vCPU %d %s did not advance (%d -> %d)" % (c, k, a[k], b[k]))
    for c in range(ncpus, 16):
        check(s1["slots"][c]["state"] == 0, "slot %d state %d" % (c, s1["slots"][c]["state"]))
    if ncpus > 1:
        check(s1["pongs"] > s0["pongs"] and s1["pings"] - s1["pongs"] <= 1,
              "ping-pong %d/%d -> %d/%d" % (s0["pings"], s0["pongs"], s1["pings"], s1["pongs"]))
        for c in range(1, ncpus):
            check(s1["slots"][c]["ipis"] > s0["slots"][c]["ipis"], "AP %d got no pings" % c)
    note("%d vCPU(s), %s, flags %#x, PIT on IOAPIC pin %d, TSC %d kHz, LAPIC %d kHz" % (
        ncpus, ACCEL, s1["flags"], s1["pit_pin"], s1["tsc_khz"], s1["lapic_khz"]))
    note("heartbeats %.2f/s, PIT %.1f/s, pings %.1f/s" % (
        rate(s0, s1, "heartbeats"), rate(s0, s1, "pit_ticks"), rate(s0, s1, "pongs")))
    for c in range(ncpus):
        note("vCPU %d: timer mode %d, LAPIC %.1f ticks/s, ring 3 %.2fM loops/s, "
             "largest gap %.1f ms" % (c, s1["slots"][c]["timer_mode"],
                                       rate(s0, s1, "lapic_ticks", c),
                                       rate(s0, s1, "r3_loops", c) / 1e6,
                                       s1["slots"][c]["max_gap_ns"] / 1e6))
    return s0, s1


def case_one_cpu(vm):
    healthy_run(vm, 1)


def case_two_cpus(vm):
    s0, s1 = healthy_run(vm, 2)
    check(s1["cpus_wanted"] == 0, "cpus_wanted %d (probed)" % s1["cpus_wanted"])


def case_params(vm):
    vm.boot()
    time.sleep(1.0)
    s0 = vm.status()
    time.sleep(5.0)
    s1 = vm.status()
    got = (s1["ncpus"], s1["cpus_wanted"], s1["hz"], s1["pit_hz"], s1["maxjump_ms"],
           s1["dirty_mb"], s1["dirty_rate"])
    check(got == (2, 2, 250, 50, 90000, 32, 200), "header %r" % (got,))
    _, flines, _ = parse_output(vm.serial())
    check(not flines, "F lines: %r" % flines)
    # loose: timing on a shared host is not exact
    for c in range(2):
        r = rate(s0, s1, "lapic_ticks", c)
        check(125 < r < 375, "vCPU %d: %.1f LAPIC ticks/s for hz=250" % (c, r))
        d = rate(s0, s1, "dirty_bytes", c) / 2**20
        check(100 < d < 300, "vCPU %d dirtied %.1f MB/s for dirtyrate=200" % (c, d))
        check(s1["slots"][c]["dirty_passes"] >= 2, "vCPU %d: %d dirty passes" % (
            c, s1["slots"][c]["dirty_passes"]))
        note("vCPU %d: %.1f LAPIC ticks/s (hz=250), dirtied %.1f MB/s (dirtyrate=200)" % (
            c, r, d))
    p = rate(s0, s1, "pit_ticks")
    check(25 < p < 75, "%.1f PIT ticks/s for pithz=50" % p)
    # the ring-3 tasks' pages: (pass << 32 | page number) in every word
    vm.qmp.cmd("stop")
    path = os.path.join(vm.tmp, "page")
    for page in (DIRTY_GPA >> 12, (DIRTY_GPA >> 12) + 32 * 256 - 1):
        vm.qmp.cmd("pmemsave", val=page << 12, size=4096, filename=path)
        with open(path, "rb") as f:
            words = struct.unpack("<512Q", f.read())
        # one pass number throughout (or k+1 then k if stopped mid-page)
        passes = sorted(set(w >> 32 for w in words))
        check(all(w & 0xFFFFFFFF == page for w in words) and passes[0] >= 1 and
              (len(passes) == 1 or passes == [passes[0], passes[0] + 1]),
              "page %#x holds %#x.. (passes %r)" % (page, words[0], passes))
    vm.qmp.cmd("cont")


def case_unlimited_dirty(vm):
    vm.boot()
    time.sleep(2.0)
    s0 = vm.status()
    time.sleep(5.0)
    s1 = vm.status()
    _, flines, _ = parse_output(vm.serial())
    check(not flines, "F lines: %r" % flines)
    d = rate(s0, s1, "dirty_bytes", 0) / 2**20
    check(d > 50, "ring 3 dirtied only %.1f MB/s" % d)
    note("ring 3, dirty=64 (unlimited): %.0f MB/s (%d passes of 64 MiB)" % (
        d, s1["slots"][0]["dirty_passes"]))


def case_pause(vm):
    """A pause longer than maxjump= is a clock jump (the TSC keeps running
    across QEMU's stop/cont; kvmclock does not)."""
    vm.wait_for(lambda e, f, r: r.count("S") >= 2, BOOT_TIMEOUT + 5, "'A' and 2 heartbeats")
    vm.qmp.cmd("stop")
    time.sleep(2.5)
    vm.qmp.cmd("cont")
    _, flines, rest = vm.wait_for(lambda e, f, r: f, F_TIMEOUT, "an F line", allow_f=True)
    check(flines[0].startswith("F08 "), "first F line %r, wanted F08" % flines[0])
    st = vm.status()
    check(st["first_f"] == F_CLOCK_JUMP and st["f_mask"] == 1 << F_CLOCK_JUMP,
          "first_f %d f_mask %#x" % (st["first_f"], st["f_mask"]))
    m = re.search(r"a=([0-9a-f]+) b=([0-9a-f]+)", flines[0])
    check(m and int(m.group(1), 16) == 1 and int(m.group(2), 16) >= 2000,
          "F08 should name the TSC (a=1) and a jump >= 2000 ms: %r" % flines[0])
    # and it keeps running
    n = rest.count("S")
    vm.wait_for(lambda e, f, r: r.count("S") >= n + 2, 10, "heartbeats after the F",
                allow_f=True)


def case_simd(vm):
    """The ring-3 task compares its registers with patterns in RAM; damage
    the patterns behind its back: low half -> F10 (SSE), high half -> F11."""
    vm.wait_for(lambda e, f, r: r.count("S") >= 1, BOOT_TIMEOUT + 5, "'A' and a heartbeat")
    st = vm.status()
    base, size = st["patterns_gpa"], st["pattern_size"]
    check(base and size >= 14 * 32, "patterns at %#x, %d bytes" % (base, size))
    reg3 = vm.ram.read(base + 3 * 32, 32)
    check(0 not in reg3, "xmm3 pattern %s has zero bytes" % reg3.hex())
    vm.ram.write(base + 3 * 32 + 5, bytes([reg3[5] ^ 0xFF]))
    _, flines, _ = vm.wait_for(lambda e, f, r: f, F_TIMEOUT, "F10", allow_f=True)
    check(len(flines) == 1 and flines[0].startswith("F10 "), "F lines %r" % flines)
    m = re.search(r"a=([0-9a-f]+)", flines[0])
    check(m and int(m.group(1), 16) >> 32 == 3, "F10 should name register 3: %r" % flines[0])
    if not st["flags"] & FLAG_AVX:
        raise Skip("no AVX: only the SSE half was checked")
    time.sleep(0.5)
    old = vm.ram.read(base + 7 * 32 + 20, 1)[0]
    vm.ram.write(base + 7 * 32 + 20, bytes([old ^ 0x5A]))
    _, flines, _ = vm.wait_for(lambda e, f, r: len(f) >= 2, F_TIMEOUT, "F11", allow_f=True)
    check(len(flines) == 2 and flines[1].startswith("F11 "), "F lines %r, wanted F10, F11"
          % flines)
    m = re.search(r"a=([0-9a-f]+)", flines[1])
    # register 7, bytes 0-15 equal, byte 20 (bit 20 of the mask) not
    check(m and int(m.group(1), 16) == (7 << 32) | (0xFFFFFFFF & ~(1 << 20)),
          "F11 should name register 7, byte 20: %r" % flines[1])
    st = vm.status()
    check(st["f_mask"] == (1 << F_SSE) | (1 << F_AVX), "f_mask %#x" % st["f_mask"])
    n = vm.serial().count(b"S")
    vm.wait_for(lambda e, f, r: r.count("S") > n, 5, "a heartbeat after the F lines",
                allow_f=True)


def case_dirty_damage(vm):
    """dirty=2 dirtyrate=1: a pass over the 512 pages takes 2 s.  Pass 1
    only writes; damage a page once it holds pass 1's value."""
    vm.boot()
    deadline = time.monotonic() + 20
    while vm.status()["slots"][0]["dirty_passes"] < 1:
        check(time.monotonic() < deadline, "the first dirty pass never ended")
        time.sleep(0.2)
    page = (DIRTY_GPA >> 12) + 100
    vm.ram.write(page << 12, struct.pack("<Q", 0xDEADBEEF))
    _, flines, _ = vm.wait_for(lambda e, f, r: f, F_TIMEOUT, "F19", allow_f=True)
    check(len(flines) == 1 and flines[0].startswith("F19 "), "F lines %r, wanted F19" % flines)
    m = re.search(r"a=([0-9a-f]+) b=([0-9a-f]+)", flines[0])
    check(m and int(m.group(1), 16) == page << 12 and int(m.group(2), 16) == 0xDEADBEEF,
          "F19 should name page %#x and 0xdeadbeef: %r" % (page << 12, flines[0]))


def break_case(code, smp=1):
    """break=N (test-only fault injection, docs/GUEST.md): vCPU 0 damages
    the state behind check N 3 s after 'A'; exactly F<N> must follow."""
    def fn(vm):
        st = vm.boot() and vm.status()
        if code == 1 and not st["slots"][0]["timer_mode"] == 2:
            raise Skip("vCPU 0 is not in TSC-deadline mode (no tsc-deadline in CPUID)")
        _, flines, _ = vm.wait_for(lambda e, f, r: f, 3 + F_TIMEOUT, "F%02d" % code,
                                   allow_f=True)
        check(flines[0].startswith("F%02d " % code), "first F line %r, wanted F%02d"
              % (flines[0], code))
        time.sleep(3.0)  # nothing else may follow
        _, flines, _ = parse_output(vm.serial())
        codes = sorted(set(int(f[1:3]) for f in flines))
        check(codes == [code], "F codes %r after break=%d: %r" % (codes, code, flines))
        st = vm.status()
        check(st["first_f"] == code and st["f_mask"] == 1 << code,
              "first_f %d f_mask %#x" % (st["first_f"], st["f_mask"]))
    return fn


# ---- ring-0 instruction audit -------------------------------------------------
# KVM's emulator (PVM) lacks these, or runs them wrongly (platform matrix).
FORBIDDEN = re.compile(r"^(popcnt|lzcnt|tzcnt|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|"
                       r"rorx|sarx|shlx|shrx|movbe|crc32|rdtscp|rdpid|int3|int|into|icebp|"
                       r"iret|iretl|iretw|lsl|lar|verr|verw|fwait|wait|cmpxchg16b|xgetbv|"
                       r"pause|xsave\w*|xrstor\w*|endbr\w*|f\w+|v\w+|\w*xmm\w*)$")


def audit():
    elf64 = ELF + "64" if ELF.endswith(".elf") else ""
    if not (elf64 and os.path.isfile(elf64)):
        raise Skip("%r not found next to VMSNAP_GUEST_STATE" % elf64)
    for tool in ("nm", "objdump"):
        if shutil.which(tool) is None:
            raise Skip("%s not found" % tool)
    syms = {}
    for line in subprocess.run(["nm", elf64], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        p = line.split()
        if len(p) == 3:
            syms[p[2]] = int(p[0], 16)
    for s in ("__user_text_start", "__user_text_end", "__kernel_text_end", "_start",
              "long_entry", "tramp_start", "tramp32", "tramp_end"):
        check(s in syms, "symbol %s missing" % s)
    # (mode, start, end): the 16- and 32-bit stubs decoded in their own modes
    ranges = [("i8086", syms["tramp_start"], syms["tramp32"]),
              ("i386", syms["tramp32"], syms["tramp_end"]),
              ("i386", syms["_start"], syms["long_entry"]),
              ("x86-64", syms["__user_text_end"], syms["_start"]),
              ("x86-64", syms["long_entry"], syms["__kernel_text_end"])]
    bad, seen = [], 0
    for mode, start, end in ranges:
        args = ["objdump", "-d", "--no-show-raw-insn", "--start-address=%#x" % start,
                "--stop-address=%#x" % end]
        if mode != "x86-64":
            args += ["-M", mode]
        out = subprocess.run(args + [elf64], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s+([0-9a-f]+):\s+(\S+)\s*(.*)", line)
            if not m or m.group(2).startswith("."):
                continue
            # tramp_gdtr and the padding are data in the .rodata trampoline
            if start == syms["tramp32"] and int(m.group(1), 16) >= syms["tramp_end"] - 8:
                continue
            seen += 1
            mnem, ops = m.group(2), m.group(3)
            if mnem in ("rep", "repz", "repnz", "lock") and ops:
                mnem = ops.split()[0]
            if FORBIDDEN.match(mnem) or re.search(r"%[xyz]mm|%st", ops):
                bad.append(line.strip())
    check(seen > 500, "only %d ring-0 instructions disassembled" % seen)
    check(not bad, "forbidden in ring 0:\n" + "\n".join(bad[:20]))
    note("audited %d ring-0 instructions" % seen)


def main():
    cases = [
        ("1 vCPU (%s): A, heartbeats for 6 s, no F, counters advance, COM1 echo" % ACCEL,
         case_one_cpu, dict(smp=1)),
        ("2 vCPUs probed by INIT/SIPI: AP, IPI ping-pong, both timers, no F for 6 s, echo",
         case_two_cpus, dict(smp=2)),
        ("cpus=2 hz=250 pithz=50 maxjump=90000 dirty=32 dirtyrate=200 (+ ignored tokens)",
         case_params, dict(smp=2, append="noise cpus=2 hz=250 pithz=50 maxjump=90000 "
                                         "dirty=32 dirtyrate=200 color=red x= hz")),
        ("dirty=64 without dirtyrate: ring 3 dirties at native speed",
         case_unlimited_dirty, dict(smp=1, append="dirty=64")),
        ("negative: a 2.5 s stop with maxjump=1000 -> F08 (TSC jump), keeps running",
         case_pause, dict(smp=1, append="maxjump=1000")),
        ("negative: damaged SIMD expectations -> F10 (xmm) then F11 (ymm upper half)",
         case_simd, dict(smp=1, shared=True)),
        ("negative: a damaged page in the dirty range -> F19",
         case_dirty_damage, dict(smp=1, append="dirty=2 dirtyrate=1", shared=True)),
    ]
    for code, smp, extra, what in [
            (1, 1, " tscdl=1", "TSC-deadline disarmed -> F01 (timer silent, LAPIC intact)"),
            (2, 1, "", "LAPIC software-disabled -> F02"),
            (3, 1, "", "IOAPIC PIT pin masked -> F03"),
            (5, 1, "", "PIT in one-shot mode -> F05"),
            (9, 1, "", "kvmclock MSR cleared -> F09"),
            (13, 2, "", "AP stops answering pings -> F13"),
            (14, 2, "", "AP stops executing -> F14 (and no F13)"),
            (15, 1, "", "UART scratch register lost -> F15"),
            (17, 1, "", "ud2 in ring 0 -> F17")]:
        cases.append(("negative, break=%d: %s" % (code, what), break_case(code),
                      dict(smp=smp, append="break=%d%s" % (code, extra))))
    print("1..%d" % (len(cases) + 1))
    if not ELF or not os.path.isfile(ELF):
        for name, _, _ in cases:
            tap(False, name, "VMSNAP_GUEST_STATE=%r is not a file" % ELF)
        tap(False, "ring-0 audit", "no ELF")
        return 1
    try:
        audit()
        tap(True, "ring-0 code has no instruction KVM's emulator lacks (objdump)")
    except Skip as e:
        results.append(True)
        print("ok %d - ring-0 audit # SKIP %s" % (len(results), e))
    except Exception as e:
        tap(False, "ring-0 code has no instruction KVM's emulator lacks (objdump)",
            "%s: %s" % (type(e).__name__, e))
    if shutil.which(QEMU) is None:
        for name, _, _ in cases:
            results.append(True)
            print("ok %d - %s # SKIP %s not found on PATH" % (len(results), name, QEMU))
        return 0
    # Rate-checking cases run alone; the negative ones (one F code each) in pairs.
    steady = [c for c in cases if not c[0].startswith("negative")]
    for name, fn, args in steady:
        run_case(name, fn, **args)
    run_cases_parallel([c for c in cases if c[0].startswith("negative")])
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
