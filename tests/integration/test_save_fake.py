#!/usr/bin/env python3
"""`vmsnap save` against a scripted fake QMP server: the command sequence, exit
codes, verbatim errors, --json, --resume, --channels, cancel on SIGINT and the
progress bar on a terminal. Needs no KVM (the real VMM is tested elsewhere)."""
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import VMSNAP, check, run_cli, run_tests  # noqa: E402

GIB = 1 << 30


def ram(total, remaining, transferred, mbps=800.0):
    return {"transferred": transferred, "remaining": remaining, "total": total,
            "duplicate": 1000, "normal": transferred // 4096,
            "normal-bytes": transferred, "mbps": mbps, "dirty-sync-count": 1,
            "pages-per-second": 12345, "dirty-pages-rate": 0}


def active(fraction, total=4 * GIB):
    done = int(total * fraction)
    return {"status": "active", "total-time": 100, "setup-time": 2,
            "expected-downtime": 300, "ram": ram(total, total - done, done // 2)}


COMPLETED = {"status": "completed", "total-time": 1234, "setup-time": 3, "downtime": 56,
             "ram": ram(4 * GIB, 0, GIB + 12345, mbps=6960.5)}
FAILED = {"status": "failed", "total-time": 10, "setup-time": 1,
          "error-desc": "/snap/x.vms: write at offset 0x100000: No space left on device \u00e9",
          "ram": ram(4 * GIB, 4 * GIB, 0, mbps=0)}


class FakeQmp:
    """A QMP server that answers from a script: `states` is the list of
    query-migrate answers, the last repeated forever."""

    def __init__(self, path, states, migrate_error=None, close_after_queries=None,
                 cont_error=None, query_delay=0.0, running=True):
        self.path = path
        self.running = running
        self.states = list(states)
        self.migrate_error = migrate_error
        self.cont_error = cont_error
        self.close_after_queries = close_after_queries
        self.query_delay = query_delay
        self.log = []  # (command, arguments)
        self.cancelled = False
        self.queries = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def commands(self):
        return [c for c, _ in self.log]

    def args(self, name):
        return [a for c, a in self.log if c == name]

    def send(self, conn, obj):
        try:
            conn.sendall(json.dumps(obj).encode() + b"\r\n")
        except BrokenPipeError:
            pass  # the client may hang up right after its last command

    def event(self, conn, name, data=None):
        ev = {"event": name, "timestamp": {"seconds": int(time.time()), "microseconds": 0}}
        if data is not None:
            ev["data"] = data
        self.send(conn, ev)

    def serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            self.send(conn, {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 9},
                                                  "package": "fake"}, "capabilities": []}})
            buf = b""
            dec = json.JSONDecoder()
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                text = buf.decode()
                while text.strip():
                    text = text.lstrip()
                    try:
                        req, end = dec.raw_decode(text)
                    except ValueError:
                        break
                    text = text[end:]
                    if not self.handle(conn, req):
                        return
                buf = text.encode()

    def reply(self, conn, req, ret=None, error=None):
        resp = {"error": error} if error else {"return": {} if ret is None else ret}
        if "id" in req:
            resp["id"] = req["id"]
        self.send(conn, resp)

    def handle(self, conn, req):
        name = req.get("execute")
        args = req.get("arguments", {})
        self.log.append((name, args))
        if name == "migrate":
            if self.migrate_error:
                self.reply(conn, req, error={"class": "GenericError",
                                             "desc": self.migrate_error})
                return True
            self.reply(conn, req)
            self.event(conn, "MIGRATION", {"status": "setup"})
            return True
        if name == "query-migrate":
            self.queries += 1
            if self.close_after_queries and self.queries > self.close_after_queries:
                return False
            time.sleep(self.query_delay)
            if self.cancelled:
                state = {"status": "cancelled", "total-time": 50, "ram": ram(GIB, GIB, 0)}
            else:
                state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            self.reply(conn, req, state)
            return True
        if name == "migrate_cancel":
            self.cancelled = True
            self.reply(conn, req)
            self.event(conn, "MIGRATION", {"status": "cancelled"})
            return True
        if name == "query-status":
            self.reply(conn, req, {"running": self.running, "singlestep": False,
                                   "status": "running" if self.running else "paused"})
            return True
        if name in ("stop", "cont"):
            self.running = name == "cont"
        if name == "cont" and self.cont_error:
            self.reply(conn, req, error={"class": "GenericError", "desc": self.cont_error})
            return True
        self.reply(conn, req)
        if name == "cont":
            self.event(conn, "RESUME")
        return True

    def close(self):
        self.sock.close()


def fake(workdir, states, **kw):
    return FakeQmp(os.path.join(workdir, "qmp.sock"), states, **kw)


def save(workdir, *args, **kw):
    return run_cli(["save", "--qmp", "unix:" + os.path.join(workdir, "qmp.sock")] + list(args),
                   **kw)


def save_in(cwd, workdir, *args):
    """Runs vmsnap save in directory `cwd`."""
    return subprocess.run([VMSNAP, "save", "--qmp", "unix:" + os.path.join(workdir, "qmp.sock")]
                          + list(args), capture_output=True, text=True, timeout=60, cwd=cwd)


def test_completed(workdir, vms):
    """Capabilities, migrate with the URI, polling until completed; a summary; no cont."""
    f = fake(workdir, [active(0.1), active(0.5), active(0.9), COMPLETED])
    r = save(workdir, "file:/snap/vm.vms")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    cmds = f.commands()
    # A plain save stops the VM first, so the image is one consistent instant.
    check(cmds[:5] == ["qmp_capabilities", "query-status", "stop", "migrate-set-capabilities",
                       "migrate"], "commands: %s" % cmds)
    check(f.args("migrate-set-capabilities")[0] ==
          {"capabilities": [{"capability": "events", "state": True}]},
          "capabilities: %s" % f.args("migrate-set-capabilities"))
    check(f.args("migrate") == [{"uri": "file:/snap/vm.vms"}], "migrate: %s" % f.args("migrate"))
    check("migrate-set-parameters" not in cmds, "set-parameters without --channels")
    check("cont" not in cmds, "cont without --resume")
    check(cmds.count("query-migrate") >= 4, "polled %d times" % cmds.count("query-migrate"))
    check(r.stderr == "", "no progress without a terminal: %r" % r.stderr)
    out = r.stdout
    for needle in ("status:      completed", "1.23 s", "setup 3 ms", "downtime:    56 ms",
                   "1.0 GiB of 4.0 GiB", "870.1 MB/s"):
        check(needle in out, "%r not in summary:\n%s" % (needle, out))
    check("resumed" not in out, "no resume: %s" % out)


def test_json(workdir, vms):
    """--json prints the final query-migrate object, exactly, as one object."""
    fake(workdir, [active(0.5), COMPLETED])
    r = save(workdir, "--json", "file:/snap/vm.vms")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check(r.stdout.count("\n") == 1, "one line: %r" % r.stdout)
    check(json.loads(r.stdout) == COMPLETED, "json: %s" % r.stdout)


def test_resume_channels(workdir, vms):
    """--resume sends cont after completed; --channels enables multifd and sets it."""
    f = fake(workdir, [COMPLETED])
    r = save(workdir, "--resume", "--channels", "4", "file:/snap/vm.vms")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    cmds = f.commands()
    check(cmds[-1] == "cont", "cont last: %s" % cmds)
    check(cmds.index("migrate-set-parameters") < cmds.index("migrate"), "order: %s" % cmds)
    check(f.args("migrate-set-parameters") == [{"multifd-channels": 4}],
          "params: %s" % f.args("migrate-set-parameters"))
    caps = f.args("migrate-set-capabilities")[0]["capabilities"]
    check({"capability": "multifd", "state": True} in caps, "caps: %s" % caps)
    check("resumed:     yes" in r.stdout, r.stdout)


def test_cont_fails(workdir, vms):
    fake(workdir, [COMPLETED], cont_error="cannot resume: guest crashed")
    r = save(workdir, "--resume", "file:/snap/vm.vms")
    check(r.returncode == 2, "exit %d" % r.returncode)
    check("cont failed: cannot resume: guest crashed" in r.stderr, r.stderr)


def test_relative_path(workdir, vms):
    """A relative file: path is made absolute: the VM has its own working directory."""
    f = fake(workdir, [COMPLETED])
    r = save_in(workdir, workdir, "file:rel/vm.vms,offset=4096")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    uri = f.args("migrate")[0]["uri"]
    check(uri == "file:" + os.path.realpath(workdir) + "/rel/vm.vms,offset=4096"
          or uri == "file:" + workdir + "/rel/vm.vms,offset=4096", uri)
    f2_dir = os.path.join(workdir, "b")
    os.mkdir(f2_dir)
    f2 = fake(f2_dir, [COMPLETED])
    r = save_in(workdir, f2_dir, "fd:snapfd")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check(f2.args("migrate")[0]["uri"] == "fd:snapfd", "fd: URIs are left alone")


def test_failed(workdir, vms):
    """A failed migration: exit 2 and QMP's error-desc verbatim (also with --json)."""
    fake(workdir, [active(0.2), FAILED])
    r = save(workdir, "file:/snap/x.vms")
    check(r.returncode == 2, "exit %d: %s" % (r.returncode, r.stderr))
    check(r.stderr == "vmsnap save: " + FAILED["error-desc"] + "\n", repr(r.stderr))
    d = os.path.join(workdir, "j")
    os.mkdir(d)
    fake(d, [FAILED])
    r = save(d, "--json", "file:/snap/x.vms")
    check(r.returncode == 2, "exit %d" % r.returncode)
    check(json.loads(r.stdout) == FAILED, r.stdout)


def test_migrate_refused(workdir, vms):
    """migrate answered with an error: exit 2, the desc verbatim, no polling."""
    desc = "Parameter 'uri' expects a valid migration protocol"
    f = fake(workdir, [COMPLETED], migrate_error=desc)
    r = save(workdir, "bogus:x")
    check(r.returncode == 2, "exit %d: %s" % (r.returncode, r.stderr))
    check(r.stderr == "vmsnap save: %s\n" % desc, repr(r.stderr))
    check("query-migrate" not in f.commands(), f.commands())


def test_server_closes(workdir, vms):
    """The VM goes away in the middle: exit 3, a message, no crash."""
    fake(workdir, [active(0.1)], close_after_queries=2)
    r = save(workdir, "file:/snap/x.vms", timeout=30)
    check(r.returncode == 3, "exit %d: %s" % (r.returncode, r.stderr))
    check("closed the connection" in r.stderr, r.stderr)


def test_connect_and_usage(workdir, vms):
    r = save(workdir, "file:/x")
    check(r.returncode == 3, "no socket: exit %d" % r.returncode)
    check("cannot connect" in r.stderr, r.stderr)
    for args, needle in ((["save", "file:/x"], "--qmp"),
                         (["save", "--qmp", "unix:/x"], "missing URI"),
                         (["save", "--qmp", "/x", "file:/x"], "unix:PATH"),
                         (["save", "--qmp", "unix:/x", "--channels", "0", "file:/x"],
                          "--channels"),
                         (["save", "--qmp", "unix:/x", "--channels", "256", "file:/x"],
                          "--channels"),
                         (["save", "--qmp", "unix:/x", "file:/x", "extra"], "unexpected"),
                         (["save", "--bogus"], "bogus")):
        r = run_cli(args)
        check(r.returncode == 1, "%s: exit %d" % (args, r.returncode))
        check(needle in r.stderr, "%s: %r" % (args, r.stderr))


def test_sigint_cancels(workdir, vms):
    """The first SIGINT sends migrate_cancel and waits for cancelled: exit 2."""
    f = fake(workdir, [active(0.1)])
    p = subprocess.Popen([VMSNAP, "save", "--qmp", "unix:" + os.path.join(workdir, "qmp.sock"),
                          "file:/snap/x.vms"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while f.queries < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    check(p.returncode == 2, "exit %d: %s" % (p.returncode, err))
    check("migrate_cancel" in f.commands(), f.commands())
    check("cancelling" in err and "cancelled" in err, err)


def test_progress_on_tty(workdir, vms):
    """On a terminal, a progress line with percent, bytes, rate and ETA is redrawn
    on stderr and erased before the summary."""
    fake(workdir, [active(0.25), active(0.25), active(0.5), active(0.75), COMPLETED],
         query_delay=0.05)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(VMSNAP, [VMSNAP, "save", "--qmp", "unix:" + os.path.join(workdir, "qmp.sock"),
                          "file:/snap/x.vms"])
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if not r:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace")
    check(os.WEXITSTATUS(status) == 0, "exit %d: %s" % (os.WEXITSTATUS(status), text))
    for needle in ("\ractive [", " 25%", " 50%", "1.0 GiB / 4.0 GiB", "100.0 MB/s", "ETA ",
                   "\r\x1b[K", "status:      completed"):
        check(needle in text, "%r not in %r" % (needle, text))


if __name__ == "__main__":
    sys.exit(run_tests([test_completed, test_json, test_resume_channels, test_cont_fails,
                        test_relative_path, test_failed, test_migrate_refused,
                        test_server_closes, test_connect_and_usage, test_sigint_cancels,
                        test_progress_on_tty]))
