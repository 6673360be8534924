"""Shared helpers for vmsnap's integration tests.

Each test script is a list of test functions run by `run_tests()`, which prints
TAP (one `ok`/`not ok` line per function) for meson. The helpers start real VMs
with the `vmsnap` binary and talk to them over their QMP socket. Python 3
standard library only.
"""
import array
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

VMSNAP = os.environ.get("VMSNAP_BIN", "vmsnap")
# The sanitizer build (tests/meson.build) sets VMSNAP_TEST_QUICK=1: scripts then
# leave out repeats of a path already covered (a second 5 GiB guest, long runs).
QUICK = os.environ.get("VMSNAP_TEST_QUICK", "") not in ("", "0")
GUEST_DIRTY = os.environ.get("VMSNAP_GUEST_DIRTY", "")

# guest/dirty's status block (docs/GUEST.md, guest/guests.h)
DIRTY_STATUS_GPA = 0xF000
DIRTY_SLOTS = DIRTY_STATUS_GPA + 0x40
DIRTY_SLOT_SIZE = 32
DIRTY_TAG_XOR = 0xA5A5A5A5


class Skip(Exception):
    """Raised by a test to report itself skipped, with the reason."""


class TestFailure(AssertionError):
    pass


def check(cond, message):
    if not cond:
        raise TestFailure(message)


def need_kvm():
    if not os.path.exists("/dev/kvm"):
        raise Skip("/dev/kvm is missing: KVM tests need it")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise Skip("/dev/kvm is not accessible to this user")


def wait_for(predicate, timeout, what, interval=0.02):
    """Polls predicate() until it returns a true value; fails after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TestFailure("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class QmpError(Exception):
    def __init__(self, error):
        self.error_class = error.get("class")
        self.desc = error.get("desc")
        super().__init__("%s: %s" % (self.error_class, self.desc))


class Qmp:
    """A minimal QMP client: greeting, negotiation, commands, events."""

    def __init__(self, path, timeout=30, negotiate=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.greeting = self._read_message()
        if negotiate:
            self.cmd("qmp_capabilities")

    def close(self):
        self.sock.close()

    def _read_message(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data):
        self.sock.sendall(data)

    def execute(self, name, args=None, fds=None):
        """Sends a command; returns the whole response object (return or error)."""
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        payload = json.dumps(msg).encode() + b"\n"
        if fds:
            self.sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                           array.array("i", fds))])
        else:
            self.sock.sendall(payload)
        return self.read_response()

    def read_response(self):
        while True:
            msg = self._read_message()
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    def cmd(self, name, args=None, fds=None):
        """Runs a command and returns its "return" value; raises QmpError."""
        resp = self.execute(name, args, fds)
        if "error" in resp:
            raise QmpError(resp["error"])
        return resp["return"]

    def wait_event(self, name, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TestFailure("no %s event within %ds" % (name, timeout))
            self.sock.settimeout(remaining)
            try:
                msg = self._read_message()
            except socket.timeout:
                continue
            finally:
                self.sock.settimeout(30)
            self.events.append(msg)


class Vm:
    """A `vmsnap run` (or restore) process with its serial output in a file.

    serial: the --serial spec (default file:<workdir>/<name>.serial). With "stdio" the
    process's stdout goes to that file; with "file:PATH,..." serial() reads PATH.
    stdin: what the process reads as stdin (default /dev/null), e.g. subprocess.PIPE
    (then self.proc.stdin is the pipe)."""

    def __init__(self, workdir, args=None, memory="64M", cpus=1, append=None,
                 command="run", extra=None, name="vm", qmp=True, wait_qmp=True, env=None,
                 serial=None, stdin=None):
        self.workdir = workdir
        self.serial_path = os.path.join(workdir, name + ".serial")
        if serial is None:
            serial = "file:" + self.serial_path
        elif serial.startswith("file:"):
            self.serial_path = serial[5:].split(",")[0]
        self.serial_spec = serial
        self.qmp_path = os.path.join(workdir, name + ".qmp") if qmp else None
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        argv = [VMSNAP, command]
        if command == "run":
            argv += ["--memory", str(memory), "--cpus", str(cpus)]
            if append is not None:
                argv += ["--append", append]
        argv += ["--serial", serial]
        if self.qmp_path:
            argv += ["--qmp", "unix:" + self.qmp_path]
        argv += list(args or []) + list(extra or [])
        self.argv = argv
        if self.qmp_path and os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)  # a killed VM leaves its socket behind
        self.stderr = open(self.stderr_path, "wb")
        penv = dict(os.environ, **env) if env else None
        self.stdout = open(self.serial_path, "wb") if serial == "stdio" else None
        self.proc = subprocess.Popen(argv, stdout=self.stdout or subprocess.DEVNULL,
                                     stderr=self.stderr,
                                     stdin=subprocess.DEVNULL if stdin is None else stdin,
                                     env=penv)
        self._qmp = None
        if self.qmp_path and wait_qmp:
            wait_for(lambda: os.path.exists(self.qmp_path) or self.proc.poll() is not None,
                     30, "the QMP socket of " + " ".join(argv))
            if self.proc.poll() is not None:
                raise TestFailure("vmsnap exited with %d: %s" % (self.proc.returncode,
                                                                  self.stderr_text()))

    @property
    def qmp(self):
        if self._qmp is None:
            self._qmp = Qmp(self.qmp_path)
        return self._qmp

    def serial(self):
        try:
            with open(self.serial_path, "rb") as f:
                return f.read().decode("latin-1")
        except FileNotFoundError:
            return ""

    def stderr_text(self):
        if not self.stderr.closed:
            self.stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_serial(self, predicate, timeout=60, what="serial output"):
        def probe():
            if self.proc.poll() is not None:
                raise TestFailure("vmsnap exited with %d while waiting for %s; stderr: %s; "
                                  "serial: %r" % (self.proc.returncode, what,
                                                  self.stderr_text(), self.serial()[-200:]))
            text = self.serial()
            return predicate(text)
        return wait_for(probe, timeout, what + " (serial so far: %r)" % self.serial()[-80:])

    def wait_b(self, count=1, timeout=60, after=0):
        """Waits until `count` B's appear after serial offset `after`."""
        self.wait_serial(lambda t: t[after:].count("B") >= count, timeout,
                         "%d 'B' after offset %d" % (count, after))
        self.check_no_e()

    def check_no_e(self):
        text = self.serial()
        check("E" not in text, "guest reported a bad page: %r" % text[text.find("E"):][:40])

    def read_u32(self, gpa):
        data = self.qmp.cmd("x-guest-memory-read", {"addr": gpa, "size": 4})["data"]
        return int.from_bytes(bytes.fromhex(data), "little")

    def passes(self, cpu=0):
        return self.read_u32(DIRTY_SLOTS + cpu * DIRTY_SLOT_SIZE + 4)

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def digest(self):
        return self.qmp.cmd("x-guest-memory-digest")

    def start_migration(self, uri, fds=None, caps=(), params=None):
        """migrate with the events capability and `caps` on and `params` set."""
        caps = [{"capability": c, "state": True} for c in ("events",) + tuple(caps)]
        self.qmp.cmd("migrate-set-capabilities", {"capabilities": caps})
        if params:
            self.qmp.cmd("migrate-set-parameters", params)
        if fds:
            self.qmp.cmd("getfd", {"fdname": "snap"}, fds=fds)
            uri = "fd:snap"
        self.qmp.cmd("migrate", {"uri": uri})

    def wait_migration(self, timeout=300, expect="completed"):
        deadline = time.monotonic() + timeout
        while True:
            info = self.qmp.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise TestFailure("migration did not finish in %ds: %s" % (timeout, info))
            time.sleep(0.05)
        check(info["status"] == expect, "migration ended %s (expected %s): %s" %
              (info["status"], expect, info.get("error-desc")))
        return info

    def save(self, uri, fds=None, timeout=300, expect="completed", caps=(), params=None):
        """Saves/migrates with QMP migrate (events on) and waits for the end; returns the
        final query-migrate object. Fails unless the status is `expect`."""
        self.start_migration(uri, fds, caps, params)
        return self.wait_migration(timeout, expect)

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure("vmsnap did not exit within %ds" % timeout)

    def quit(self):
        try:
            self.qmp.cmd("quit")
        except (EOFError, ConnectionError):
            pass
        return self.wait_exit()

    def sanitizer_report(self):
        """The first sanitizer report in this process's stderr, or None."""
        return sanitizer_report(self.stderr_text())

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._qmp:
            self._qmp.close()
            self._qmp = None
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        if self.stdout:
            self.stdout.close()
        self.stderr.close()


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def sanitizer_report(text):
    for marker in SANITIZER_MARKERS:
        i = text.find(marker)
        if i >= 0:
            return text[max(0, i - 200):i + 3000]
    return None


def run_cli(args, timeout=60, env=None, input=None):
    """Runs `vmsnap ARGS`; returns CompletedProcess with text stdout/stderr.
    Fails the test if the process printed a sanitizer report."""
    r = subprocess.run([VMSNAP] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=env, input=input)
    report = sanitizer_report(r.stderr)
    if report:
        raise TestFailure("sanitizer report from vmsnap %s:\n%s" % (" ".join(args), report))
    return r


def run_tests(tests):
    """Runs test functions, printing TAP. Each gets a fresh temporary directory.
    VMSNAP_TEST_ONLY=SUBSTRING runs only the tests whose name contains it."""
    only = os.environ.get("VMSNAP_TEST_ONLY")
    if only:
        tests = [t for t in tests if only in t.__name__]
    print("1..%d" % len(tests), flush=True)
    failed = 0
    for i, test in enumerate(tests, 1):
        name = test.__name__
        workdir = tempfile.mkdtemp(prefix="vmsnap-%s-" % name)
        vms = []
        start = time.monotonic()
        try:
            test(workdir, vms)
            for vm in vms:
                vm.kill()
                report = vm.sanitizer_report()
                if report:
                    raise TestFailure("sanitizer report from %s:\n%s" % (vm.argv[:2], report))
            print("ok %d - %s (%.1fs)" % (i, name, time.monotonic() - start), flush=True)
        except Skip as e:
            print("ok %d - %s # SKIP %s" % (i, name, e), flush=True)
        except Exception:
            failed += 1
            print("not ok %d - %s" % (i, name), flush=True)
            for line in traceback.format_exc().splitlines():
                print("# " + line, flush=True)
            for vm in vms:
                print("# %s stderr: %s" % (vm.argv[:2], vm.stderr_text()[-2000:]), flush=True)
                print("# serial tail: %r" % vm.serial()[-200:], flush=True)
        finally:
            for vm in vms:
                vm.kill()
            if failed == 0 or os.environ.get("VMSNAP_KEEP_TMP") is None:
                shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


SNAPTOOL = os.environ.get("VMSNAP_SNAPTOOL", "snaptool")


def snaptool(*args):
    """Runs the test tool tests/tools/snaptool; returns its stdout (JSON for locate)."""
    r = subprocess.run([SNAPTOOL] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise TestFailure("snaptool %s failed: %s" % (args, r.stderr))
    return json.loads(r.stdout) if args[0] == "locate" else r.stdout


def flip_byte(path, offset, mask=0x01):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))


def start_vm(vms, workdir, **kw):
    """Starts a Vm and records it so run_tests() cleans it up."""
    vm = Vm(workdir, **kw)
    vms.append(vm)
    return vm
