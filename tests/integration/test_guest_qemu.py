#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""guest/dirty boots unchanged under QEMU's multiboot loader and keeps its
contract (docs/GUEST.md): 'A', then 'B' forever, a well-formed status block at
0xF000, and 'E' + page number when a page is damaged behind its back.

Python 3 stdlib only.  Prints TAP.  Env: VMSNAP_GUEST_DIRTY = path of
guest-dirty.elf.  Skips when qemu-system-x86_64 is missing; uses KVM when
/dev/kvm is usable, TCG otherwise.
"""
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

QEMU = "qemu-system-x86_64"
STATUS_GPA = 0xF000
STATUS_SIZE = 0x440
MAGIC = 0x59545244
NO_ERROR = 0xFFFFFFFF
TAG_XOR = 0xA5A5A5A5
BOOT_TIMEOUT = 30.0   # 'A' (KVM boot is ~1.5 s here)
B_TIMEOUT = 40.0      # 'A' -> 'B's (about 5 'B' per second here)

ELF = os.environ.get("VMSNAP_GUEST_DIRTY", "")
ACCEL = os.environ.get("VMSNAP_QEMU_ACCEL") or (
    "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg")

results = []


def tap(ok, name, diag=None):
    results.append(ok)
    print("%s %d - %s" % ("ok" if ok else "not ok", len(results), name))
    if diag:
        for line in str(diag).splitlines():
            print("# " + line)
    sys.stdout.flush()


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


class Qmp:
    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise Fail("QMP socket %s never came up" % path)
                time.sleep(0.05)
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

    def read_phys(self, addr, size, tmpdir):
        path = os.path.join(tmpdir, "pmem-%x" % addr)
        self.cmd("pmemsave", val=addr, size=size, filename=path)
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        check(len(data) == size, "pmemsave returned %d bytes, wanted %d" % (len(data), size))
        return data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Gdb:
    """Just enough of the GDB remote protocol to write guest memory."""

    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise Fail("gdbstub socket %s never came up" % path)
                time.sleep(0.05)
        self.sock.settimeout(30)
        self.buf = b""

    def _recv_packet(self):
        while True:
            m = re.search(rb"\$([^#]*)#[0-9a-fA-F]{2}", self.buf)
            if m:
                self.buf = self.buf[m.end():]
                self.sock.sendall(b"+")
                return m.group(1).decode()
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Fail("gdbstub closed the connection")
            self.buf += chunk

    def request(self, payload):
        data = payload.encode()
        self.sock.sendall(b"$%s#%02x" % (data, sum(data) & 0xFF))
        while True:
            r = self._recv_packet()
            # QEMU may queue a stop reply (the VM stops when we connect)
            if not re.match(r"[TS][0-9a-fA-F]{2}", r):
                return r

    def write_u32(self, addr, value):
        r = self.request("M%x,4:%s" % (addr, struct.pack("<I", value).hex()))
        check(r == "OK", "gdbstub memory write at %#x answered %r" % (addr, r))

    def detach(self):
        self.request("D")  # resumes the VM
        self.sock.close()


class Vm:
    def __init__(self, mem, append, qmp=False, gdb=False):
        self.tmp = tempfile.mkdtemp(prefix="vmsnap-guest-qemu-")
        self.out = os.path.join(self.tmp, "serial.out")
        self.qmp_path = os.path.join(self.tmp, "qmp.sock")
        self.gdb_path = os.path.join(self.tmp, "gdb.sock")
        self.qmp = None
        argv = [QEMU, "-accel", ACCEL, "-m", mem, "-kernel", ELF, "-append", append,
                "-display", "none", "-vga", "none", "-nodefaults",
                "-serial", "file:" + self.out, "-no-reboot", "-monitor", "none"]
        if qmp:
            argv += ["-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        if gdb:
            argv += ["-chardev", "socket,id=gdb0,path=%s,server=on,wait=off" % self.gdb_path,
                     "-gdb", "chardev:gdb0"]
        self.argv = argv
        self.stderr = open(os.path.join(self.tmp, "qemu.err"), "w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.stderr, stderr=self.stderr)
        self.t0 = time.monotonic()
        if qmp:
            self.qmp = Qmp(self.qmp_path, self.t0 + BOOT_TIMEOUT)

    def serial(self):
        try:
            with open(self.out, "rb") as f:
                return f.read().decode("latin-1")
        except FileNotFoundError:
            return ""

    def diag(self):
        self.stderr.flush()
        self.stderr.seek(0)
        err = self.stderr.read().strip()
        s = self.serial()
        return "command: %s\nserial (%d bytes): %r\nqemu stderr: %s" % (
            " ".join(self.argv), len(s), s[:200], err[-1500:] or "(empty)")

    def wait_for(self, pattern, timeout, what):
        """Wait until the serial output matches the regex; fail early on E."""
        deadline = time.monotonic() + timeout
        next_status = time.monotonic() + 1.0
        rx = re.compile(pattern)
        while True:
            s = self.serial()
            if rx.search(s):
                return s
            if self.qmp and time.monotonic() > next_status:
                # a KVM "emulation failure" leaves QEMU alive in internal-error
                st = self.qmp.cmd("query-status")["status"]
                if st in ("internal-error", "shutdown", "guest-panicked", "io-error"):
                    raise Fail("VM is in state %r while waiting for %s" % (st, what))
                next_status = time.monotonic() + 1.0
            if "E" in s and "E" not in pattern:
                raise Fail("guest reported an error while waiting for %s" % what)
            if self.proc.poll() is not None:
                raise Fail("QEMU exited (status %s) while waiting for %s"
                           % (self.proc.returncode, what))
            if time.monotonic() > deadline:
                raise Fail("no %s within %.0f s" % (what, timeout))
            time.sleep(0.05)

    def status(self):
        raw = self.qmp.read_phys(STATUS_GPA, STATUS_SIZE, self.tmp)
        w = struct.unpack("<%dI" % (STATUS_SIZE // 4), raw)
        st = dict(zip(["magic", "version", "ncpus", "page_size", "start_page", "end_page",
                       "step", "pace", "b_every", "error_page", "error_found",
                       "error_expected", "error_found1", "error_expected1", "error_cpu",
                       "flags"], w[:16]))
        st["slots"] = [dict(zip(["state", "passes", "first_page", "end_page", "cursor"],
                                w[16 + 8 * i:16 + 8 * i + 5])) for i in range(32)]
        return st

    def page_words(self, page):
        return struct.unpack("<II", self.qmp.read_phys(page << 12, 8, self.tmp))

    def close(self):
        if self.qmp:
            self.qmp.close()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_case(name, fn, **vm_args):
    vm = None
    try:
        vm = Vm(**vm_args)
        fn(vm)
        tap(True, name)
    except Fail as e:
        tap(False, name, "%s\n%s" % (e, vm.diag() if vm else ""))
    except Exception as e:  # keep TAP well-formed whatever happens
        tap(False, name, "%s: %s\n%s" % (type(e).__name__, e, vm.diag() if vm else ""))
    finally:
        if vm:
            vm.close()


def expect_ab(vm, nb=2):
    vm.wait_for(r"^A", BOOT_TIMEOUT, "'A'")
    s = vm.wait_for(r"^AB{%d}" % nb, B_TIMEOUT, "'A' then %d x 'B'" % nb)
    check(re.fullmatch(r"AB*", s), "unexpected serial output %r" % s[:80])
    return s


def case_default(vm):
    expect_ab(vm)
    st = vm.status()
    check(st["magic"] == MAGIC, "magic %#x" % st["magic"])
    check(st["version"] == 1 and st["ncpus"] == 1 and st["page_size"] == 4096,
          "version/ncpus/page_size %d/%d/%d" % (st["version"], st["ncpus"], st["page_size"]))
    check(st["start_page"] == 0x100, "default start page %#x, wanted 0x100" % st["start_page"])
    # end of the e820 RAM region that contains 1 MiB: a bit under 150 MiB
    check((140 << 8) < st["end_page"] <= (150 << 8), "default end page %#x" % st["end_page"])
    check(st["step"] == 1 and st["pace"] == 0 and st["b_every"] >= 1,
          "step/pace/b_every %d/%d/%d" % (st["step"], st["pace"], st["b_every"]))
    check(st["error_page"] == NO_ERROR, "error_page %#x" % st["error_page"])
    # not booted by vmsnap (bit 0 clear); range cleared (bit 1); pass 1 begun (bit 2)
    check(st["flags"] == 0x6, "flags %#x, wanted 0x6" % st["flags"])
    s0 = st["slots"][0]
    check(s0["state"] == 1 and s0["passes"] >= 2 * st["b_every"], "slot 0 %r" % s0)
    check(s0["first_page"] == st["start_page"] and s0["end_page"] == st["end_page"],
          "slot 0 share %r" % s0)


def case_params(vm):
    # hex, K/M suffixes, tokens without '=' and unknown keys are ignored
    s = expect_ab(vm, 3)
    vm.qmp.cmd("stop")  # a consistent view of the status block and the pages
    st = vm.status()
    got = (st["start_page"], st["end_page"], st["step"], st["pace"], st["b_every"])
    check(got == (0x305, 0x17fb, 1, 0, 2), "header start/end/step/pace/b_every = %r" % (got,))
    check(st["error_page"] == NO_ERROR and st["slots"][0]["state"] == 1, "status %r" % st)
    # every page holds (generation, page ^ 0xA5A5A5A5): generation p + 1 where
    # the pass in progress has been, p behind it (p = completed passes)
    p = st["slots"][0]["passes"]
    # unaligned head (generic loop), 32-page blocks, unaligned tail
    for page in (0x305, 0x306, 0x31f, 0x320, 0x33f, 0x1000, 0x17df, 0x17e0, 0x17fa):
        w0, w1 = vm.page_words(page)
        check(w1 == page ^ TAG_XOR, "page %#x word1 %#x" % (page, w1))
        check(p <= w0 <= p + 1, "page %#x word0 %d, passes %d" % (page, w0, p))
    for page in (0x304, 0x17fb):  # just outside [start, end)
        w0, w1 = vm.page_words(page)
        check(w1 != page ^ TAG_XOR, "page %#x outside the range was walked" % page)
    vm.qmp.cmd("cont")
    vm.wait_for(r"^AB{%d}" % (s.count("B") + 1), B_TIMEOUT, "one more 'B' after stop/cont")


def case_generic(vm):
    # step > 1 and pace exercise the generic loop (not the 32-page blocks)
    expect_ab(vm)
    vm.qmp.cmd("stop")
    st = vm.status()
    got = (st["start_page"], st["end_page"], st["step"], st["pace"], st["b_every"])
    check(got == (0x100, 0x200, 3, 10, 1), "header %r" % (got,))
    p = st["slots"][0]["passes"]
    for page in (0x100, 0x103, 0x1ff):
        w0, w1 = vm.page_words(page)
        check(w1 == page ^ TAG_XOR and p <= w0 <= p + 1, "page %#x: %d %#x" % (page, w0, w1))
    for page in (0x101, 0x1fe):
        w0, w1 = vm.page_words(page)
        check(w1 != page ^ TAG_XOR, "page %#x is not on the step-3 walk" % page)


def corrupt_case(word, value):
    def fn(vm):
        expect_ab(vm)
        page = 0x140 + word  # inside start=1M end=2M
        gdb = Gdb(vm.gdb_path, time.monotonic() + 10)  # connecting stops the VM
        gdb.write_u32((page << 12) + 4 * word, value)
        gdb.detach()
        s = vm.wait_for(r"E[0-9A-F]{8}\n", B_TIMEOUT, "'E' line")
        line = re.search(r"E([0-9A-F]{8})\n", s)
        check(int(line.group(1), 16) == page, "reported %r, corrupted page %#x" % (line.group(0), page))
        check(s.endswith(line.group(0)), "output after the E line: %r" % s[-40:])
        st = vm.status()
        check(st["error_page"] == page, "error_page %#x" % st["error_page"])
        check(st["slots"][0]["state"] == 2, "slot 0 state %d" % st["slots"][0]["state"])
        passes = st["slots"][0]["passes"]
        if word == 0:
            check(st["error_found"] == value and st["error_expected"] == passes,
                  "found/expected %#x/%#x, passes %d" % (st["error_found"], st["error_expected"], passes))
        else:
            check(st["error_found"] == st["error_expected"] == passes,
                  "word0 found/expected %#x/%#x" % (st["error_found"], st["error_expected"]))
            check(st["error_found1"] == value and st["error_expected1"] == page ^ TAG_XOR,
                  "word1 found/expected %#x/%#x" % (st["error_found1"], st["error_expected1"]))
        time.sleep(0.5)
        check(vm.serial() == s, "guest kept running after the error")
    return fn


def main():
    cases = [
        ("boots at 0x10000 under QEMU multiboot (%s, 150M, defaults): A, B, B, no E" % ACCEL,
         case_default, dict(mem="150M", append="", qmp=True)),
        ("explicit start=/end=/bevery= (hex, K, M suffixes) and the page contents",
         case_params, dict(mem="64M",
                           append="noise start=3092K end=0x17FB000 bevery=2 step=1 color=red x=",
                           qmp=True)),
        ("step=3 pace=10 (generic walk)", case_generic,
         dict(mem="64M", append="start=1024K end=2M step=3 pace=10 bevery=1", qmp=True)),
        ("a damaged word0 is reported as E + page number, then the guest halts",
         corrupt_case(0, 0xDEADBEEF),
         dict(mem="64M", append="start=1M end=2M bevery=1", qmp=True, gdb=True)),
        ("a damaged tag (word1) is reported as E + page number",
         corrupt_case(1, 0x12345678),
         dict(mem="64M", append="start=1M end=2M bevery=1", qmp=True, gdb=True)),
    ]
    print("1..%d" % len(cases))
    if not ELF or not os.path.isfile(ELF):
        for name, _, _ in cases:
            tap(False, name, "VMSNAP_GUEST_DIRTY=%r is not a file" % ELF)
        return 1
    if shutil.which(QEMU) is None:
        for name, _, _ in cases:
            results.append(True)
            print("ok %d - %s # SKIP %s not found on PATH" % (len(results), name, QEMU))
        return 0
    for name, fn, args in cases:
        run_case(name, fn, **args)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
