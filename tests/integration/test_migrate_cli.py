#!/usr/bin/env python3
"""`vmsnap migrate` and `vmsnap save --live` against a scripted fake QMP server
(test_save_fake.py's, extended with query-migrate-capabilities, migrate-continue,
the pre-switchover state and MIGRATION / MIGRATION_PASS events): capabilities and
parameters sent, the live progress line, --json, pre-switchover, exit codes.
Needs no KVM."""
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import VMSNAP, check, run_cli, run_tests  # noqa: E402
from test_save_fake import GIB, FakeQmp, ram  # noqa: E402

MIB = 1 << 20

# What QEMU 9 answers to query-migrate-capabilities (abridged).
QEMU_CAPS = ["xbzrle", "auto-converge", "events", "postcopy-ram", "multifd",
             "validate-uuid", "pause-before-switchover", "background-snapshot", "mapped-ram"]


def live(status, npass, remaining, transferred, dirty_rate=1000, throttle=None, mbps=800.0):
    r = ram(4 * GIB, remaining, transferred, mbps=mbps)
    r["dirty-sync-count"] = npass
    r["dirty-pages-rate"] = dirty_rate
    r["page-size"] = 4096
    info = {"status": status, "total-time": 100 * npass, "setup-time": 2,
            "expected-downtime": 30, "ram": r}
    if throttle is not None:
        info["cpu-throttle-percentage"] = throttle
    return info


COMPLETED = {"status": "completed", "total-time": 2500, "setup-time": 4, "downtime": 21,
             "ram": dict(ram(4 * GIB, 0, 5 * GIB, mbps=16000.0), **{"dirty-sync-count": 3,
                                                                     "dirty-pages-rate": 0}),
             "cpu-throttle-percentage": 20}
FAILED = {"status": "failed", "total-time": 10, "setup-time": 1,
          "error-desc": "tcp:10.0.0.2:4444: write failed at byte offset 1048576: "
                        "Connection reset by peer",
          "ram": ram(4 * GIB, 4 * GIB, MIB, mbps=0)}
CANCELLED = {"status": "cancelled", "total-time": 10, "ram": ram(4 * GIB, 4 * GIB, 0, mbps=0)}


class FakeMigrate(FakeQmp):
    """A source VM that migrates live: each query-migrate answer comes from
    `states` (the last repeated); a change of status emits MIGRATION and a new
    pass MIGRATION_PASS. A `pre-switchover` state is repeated until
    migrate-continue. `caps` is the query-migrate-capabilities list."""

    def __init__(self, path, states, caps=QEMU_CAPS, continue_error=None, **kw):
        super().__init__(path, states, **kw)
        self.caps = caps
        self.continue_error = continue_error
        self.continued = False
        self.status = None
        self.npass = 0

    def event(self, conn, name, data=None):
        try:
            super().event(conn, name, data)
        except OSError:
            pass  # the client is done and gone

    def next_state(self):
        if self.cancelled:
            return CANCELLED
        state = self.states[0]
        if state["status"] == "pre-switchover" and not self.continued:
            return state
        if len(self.states) > 1:
            self.states.pop(0)
        return state

    def handle(self, conn, req):
        name = req.get("execute")
        args = req.get("arguments", {})
        if name == "query-migrate-capabilities":
            self.log.append((name, args))
            self.reply(conn, req, [{"capability": c, "state": False} for c in self.caps])
            return True
        if name == "migrate-continue":
            self.log.append((name, args))
            if self.continue_error:
                self.reply(conn, req, error={"class": "GenericError",
                                             "desc": self.continue_error})
                return True
            self.continued = True
            self.reply(conn, req)
            return True
        if name == "query-migrate":
            self.log.append((name, args))
            self.queries += 1
            if self.close_after_queries and self.queries > self.close_after_queries:
                return False
            time.sleep(self.query_delay)
            state = self.next_state()
            self.reply(conn, req, state)
            if state["status"] != self.status:
                self.status = state["status"]
                self.event(conn, "MIGRATION", {"status": self.status})
            npass = state.get("ram", {}).get("dirty-sync-count", 0)
            if npass != self.npass:
                self.npass = npass
                self.event(conn, "MIGRATION_PASS", {"pass": npass})
            return True
        return super().handle(conn, req)


def fake(workdir, states, **kw):
    return FakeMigrate(os.path.join(workdir, "qmp.sock"), states, **kw)


def qmp_arg(workdir):
    return "unix:" + os.path.join(workdir, "qmp.sock")


def migrate(workdir, *args, **kw):
    return run_cli(["migrate", "--qmp", qmp_arg(workdir)] + list(args), **kw)


def caps_sent(f):
    return [c["capability"] for c in f.args("migrate-set-capabilities")[0]["capabilities"]
            if c["state"]]


PASSES = [live("setup", 0, 4 * GIB, 0),
          live("active", 1, 2 * GIB, 2 * GIB),
          live("active", 2, 300 * MIB, 4 * GIB, dirty_rate=20000),
          live("active", 3, 40 * MIB, 4 * GIB + 260 * MIB, throttle=20),
          live("device", 3, 0, 5 * GIB),
          COMPLETED]


def test_completed(workdir, vms):
    """The commands (QEMU's, in QEMU's order), polling to completed, the summary."""
    f = fake(workdir, PASSES)
    r = migrate(workdir, "tcp:10.0.0.2:4444")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    cmds = f.commands()
    check(cmds[:3] == ["qmp_capabilities", "migrate-set-capabilities", "migrate"],
          "commands: %s" % cmds)
    check(caps_sent(f) == ["events"], "caps: %s" % caps_sent(f))
    check("migrate-set-parameters" not in cmds, "no parameters asked: %s" % cmds)
    check(f.args("migrate") == [{"uri": "tcp:10.0.0.2:4444"}], f.args("migrate"))
    check(cmds.count("query-migrate") >= len(PASSES), cmds)
    check("migrate-continue" not in cmds and "cont" not in cmds, cmds)
    check(r.stderr == "", "no progress without a terminal: %r" % r.stderr)
    for needle in ("status:      completed", "total time:  2.50 s (setup 4 ms)",
                   "downtime:    21 ms", "transferred: 5.0 GiB of 4.0 GiB RAM",
                   "passes:      3", "throughput:  2.00 GB/s", "throttle:    20%"):
        check(needle in r.stdout, "%r not in summary:\n%s" % (needle, r.stdout))


def test_options(workdir, vms):
    """Every option becomes QEMU's capability or parameter; only those asked for."""
    f = fake(workdir, [COMPLETED])
    r = migrate(workdir, "--channels", "4", "--downtime-limit", "50", "--max-bandwidth", "100M",
                "--auto-converge", "--validate-uuid", "--pause-before-switchover",
                "unix:/run/mig.sock")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check(caps_sent(f) == ["events", "multifd", "auto-converge", "validate-uuid",
                           "pause-before-switchover"], "caps: %s" % caps_sent(f))
    check(f.args("migrate-set-parameters") == [{"multifd-channels": 4, "downtime-limit": 50,
                                                "max-bandwidth": 100 * MIB}],
          "params: %s" % f.args("migrate-set-parameters"))
    cmds = f.commands()
    check(cmds.index("migrate-set-capabilities") < cmds.index("migrate-set-parameters")
          < cmds.index("migrate"), "order: %s" % cmds)

    # One channel is not multifd.
    d = os.path.join(workdir, "one")
    os.mkdir(d)
    f = fake(d, [COMPLETED])
    r = migrate(d, "--channels", "1", "--downtime-limit", "0", "unix:/run/mig.sock")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check(caps_sent(f) == ["events"], "caps: %s" % caps_sent(f))
    check(f.args("migrate-set-parameters") == [{"downtime-limit": 0}],
          "params: %s" % f.args("migrate-set-parameters"))


def test_save_stops_first(workdir, vms):
    """A plain save stops a running VM first (QMP migrate is live on a running VM, as
    in QEMU), and conts it again when the save fails; save --live does not stop."""
    f = fake(workdir, [COMPLETED])
    r = run_cli(["save", "--qmp", qmp_arg(workdir), "file:/snap/vm.vms"])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    cmds = f.commands()
    check(cmds.index("stop") < cmds.index("migrate"), cmds)
    check("cont" not in cmds, cmds)

    d = os.path.join(workdir, "failed")
    os.mkdir(d)
    f = fake(d, [FAILED])
    r = run_cli(["save", "--qmp", qmp_arg(d), "file:/snap/vm.vms"])
    check(r.returncode == 2, "exit %d: %s" % (r.returncode, r.stderr))
    cmds = f.commands()
    check("stop" in cmds and cmds[-1] == "cont", cmds)

    d = os.path.join(workdir, "live")
    os.mkdir(d)
    f = fake(d, [COMPLETED])
    r = run_cli(["save", "--qmp", qmp_arg(d), "--live", "file:/snap/vm.vms"])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check("stop" not in f.commands(), f.commands())


def test_relative_paths(workdir, vms):
    """Relative unix: and file: paths are made absolute (the VM has its own cwd);
    tcp:, exec: and fd: are passed as they are."""
    for uri, want in (("unix:mig.sock", "unix:%s/mig.sock"), ("file:a/vm.vms", "file:%s/a/vm.vms"),
                      ("tcp::4444", "tcp::4444"), ("exec:cat > x", "exec:cat > x"),
                      ("fd:mig", "fd:mig")):
        d = os.path.join(workdir, uri.replace("/", "_").replace(" ", "_"))
        os.mkdir(d)
        f = fake(d, [COMPLETED])
        r = subprocess.run([VMSNAP, "migrate", "--qmp", qmp_arg(d), uri], capture_output=True,
                           text=True, timeout=60, cwd=workdir)
        check(r.returncode == 0, "%s: exit %d: %s" % (uri, r.returncode, r.stderr))
        got = f.args("migrate")[0]["uri"]
        ok = got == want.replace("%s", workdir) or \
            got == want.replace("%s", os.path.realpath(workdir))
        check(ok, "%s -> %s" % (uri, got))


def test_json(workdir, vms):
    """--json prints the final query-migrate object, verbatim, as one line."""
    fake(workdir, PASSES)
    r = migrate(workdir, "--json", "tcp:10.0.0.2:4444")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check(r.stdout.count("\n") == 1, "one line: %r" % r.stdout)
    check(json.loads(r.stdout) == COMPLETED, r.stdout)


def test_pre_switchover(workdir, vms):
    """With --pause-before-switchover the source stops in pre-switchover: reported,
    then migrate-continue {"state": "pre-switchover"}, once."""
    states = [live("active", 1, GIB, GIB), live("pre-switchover", 2, 0, 4 * GIB),
              live("device", 2, 0, 4 * GIB), COMPLETED]
    f = fake(workdir, states)
    r = migrate(workdir, "--pause-before-switchover", "tcp:10.0.0.2:4444")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check("pause-before-switchover" in caps_sent(f), caps_sent(f))
    check(f.args("migrate-continue") == [{"state": "pre-switchover"}],
          "migrate-continue: %s" % f.args("migrate-continue"))
    check("pre-switchover" in r.stderr and "migrate-continue" in r.stderr, r.stderr)
    check("status:      completed" in r.stdout, r.stdout)


def test_pre_switchover_not_asked(workdir, vms):
    """A VM left with pause-before-switchover on by someone else: a hint, no
    migrate-continue of ours; whoever set it continues."""
    states = [live("pre-switchover", 2, 0, 4 * GIB), live("device", 2, 0, 4 * GIB), COMPLETED]
    f = fake(workdir, states)
    p = subprocess.Popen([VMSNAP, "migrate", "--qmp", qmp_arg(workdir), "tcp:h:1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while f.queries < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    check("migrate-continue" not in f.commands(), f.commands())
    f.continued = True  # the other tool
    out, err = p.communicate(timeout=30)
    check(p.returncode == 0, "exit %d: %s" % (p.returncode, err))
    check(err.count("send migrate-continue") == 1, err)


def test_failures(workdir, vms):
    """failed / cancelled: exit 2 with error-desc verbatim; a refused migrate or
    migrate-continue: exit 2 with QMP's desc; a VM that goes away: exit 3."""
    def sub(name):
        d = os.path.join(workdir, name)
        os.mkdir(d)
        return d

    d = sub("failed")
    fake(d, [live("active", 1, GIB, GIB), FAILED])
    r = migrate(d, "tcp:10.0.0.2:4444")
    check(r.returncode == 2, "exit %d: %s" % (r.returncode, r.stderr))
    check(r.stderr == "vmsnap migrate: " + FAILED["error-desc"] + "\n", repr(r.stderr))

    d = sub("failed-json")
    fake(d, [FAILED])
    r = migrate(d, "--json", "tcp:10.0.0.2:4444")
    check(r.returncode == 2 and json.loads(r.stdout) == FAILED, "%d %r" % (r.returncode, r.stdout))

    d = sub("cancelled")
    fake(d, [CANCELLED])
    r = migrate(d, "tcp:10.0.0.2:4444")
    check(r.returncode == 2, "exit %d" % r.returncode)
    check(r.stderr == "vmsnap migrate: migration cancelled\n", repr(r.stderr))

    d = sub("refused")
    desc = "tcp:10.0.0.2:4444: connect failed: Connection refused"
    f = fake(d, [COMPLETED], migrate_error=desc)
    r = migrate(d, "tcp:10.0.0.2:4444")
    check(r.returncode == 2, "exit %d: %s" % (r.returncode, r.stderr))
    check(r.stderr == "vmsnap migrate: %s\n" % desc, repr(r.stderr))
    check("query-migrate" not in f.commands(), f.commands())

    d = sub("continue-refused")
    fake(d, [live("pre-switchover", 1, 0, GIB)], continue_error="Migration not in expected state")
    r = migrate(d, "--pause-before-switchover", "tcp:h:1")
    check(r.returncode == 2, "exit %d: %s" % (r.returncode, r.stderr))
    check(r.stderr.endswith("vmsnap migrate: Migration not in expected state\n"), r.stderr)

    d = sub("closes")
    fake(d, [live("active", 1, GIB, GIB)], close_after_queries=2)
    r = migrate(d, "tcp:h:1", timeout=30)
    check(r.returncode == 3, "exit %d: %s" % (r.returncode, r.stderr))
    check("closed the connection" in r.stderr, r.stderr)

    r = migrate(sub("nothing"), "tcp:h:1")
    check(r.returncode == 3 and "cannot connect" in r.stderr, "%d %s" % (r.returncode, r.stderr))


def test_usage(workdir, vms):
    for args, needle in ((["migrate", "tcp:h:1"], "--qmp"),
                         (["migrate", "--qmp", "unix:/x"], "missing URI"),
                         (["migrate", "--qmp", "/x", "tcp:h:1"], "unix:PATH"),
                         (["migrate", "--qmp", "unix:/x", "--channels", "0", "tcp:h:1"],
                          "--channels"),
                         (["migrate", "--qmp", "unix:/x", "--downtime-limit", "-1", "tcp:h:1"],
                          "--downtime-limit"),
                         (["migrate", "--qmp", "unix:/x", "--downtime-limit", "2000001",
                           "tcp:h:1"], "--downtime-limit"),
                         (["migrate", "--qmp", "unix:/x", "--max-bandwidth", "fast", "tcp:h:1"],
                          "--max-bandwidth"),
                         (["migrate", "--qmp", "unix:/x", "tcp:h:1", "extra"], "unexpected"),
                         (["migrate", "--bogus"], "bogus"),
                         (["save", "--qmp", "unix:/x", "--downtime-limit", "5", "file:/x"],
                          "needs --live"),
                         (["save", "--qmp", "unix:/x", "--auto-converge", "file:/x"],
                          "needs --live")):
        r = run_cli(args)
        check(r.returncode == 1, "%s: exit %d" % (args, r.returncode))
        check(needle in r.stderr, "%s: %r" % (args, r.stderr))
    r = run_cli(["migrate", "--help"])
    check(r.returncode == 0 and "--pause-before-switchover" in r.stdout, r.stdout)
    r = run_cli(["--help"])
    check("migrate" in r.stdout, r.stdout)


def test_sigint_cancels(workdir, vms):
    f = fake(workdir, [live("active", 1, GIB, GIB)])
    p = subprocess.Popen([VMSNAP, "migrate", "--qmp", qmp_arg(workdir), "tcp:h:1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while f.queries < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    check(p.returncode == 2, "exit %d: %s" % (p.returncode, err))
    check("migrate_cancel" in f.commands(), f.commands())
    check("vmsnap migrate: interrupted: cancelling" in err, err)


def run_on_tty(argv, columns=None):
    pid, fd = pty.fork()
    if pid == 0:
        if columns:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        os.execv(VMSNAP, argv)
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
    return os.WEXITSTATUS(status), out.decode("utf-8", "replace")


def test_progress_on_tty(workdir, vms):
    """On a terminal: status, pass, remaining, throughput, dirty rate, throttle and
    bytes sent, redrawn in place and erased before the summary. On 80 columns the
    least telling field (sent) goes first."""
    fake(workdir, PASSES, query_delay=0.05)
    code, text = run_on_tty([VMSNAP, "migrate", "--qmp", qmp_arg(workdir), "tcp:h:1"], 200)
    check(code == 0, "exit %d: %s" % (code, text))
    for needle in ("\rsetup  pass 0  remaining 4.0 GiB  100.0 MB/s  dirty 4.1 MB/s  sent 0 B",
                   "\ractive  pass 1  remaining 2.0 GiB  100.0 MB/s  dirty 4.1 MB/s  sent 2.0 GiB",
                   "\ractive  pass 2  remaining 300.0 MiB  100.0 MB/s  dirty 81.9 MB/s  "
                   "sent 4.0 GiB\x1b[K",
                   "\ractive  pass 3  remaining 40.0 MiB  100.0 MB/s  dirty 4.1 MB/s  "
                   "throttle 20%  sent 4.3 GiB\x1b[K",
                   "\rdevice  pass 3", "\r\x1b[K", "status:      completed"):
        check(needle in text, "%r not in %r" % (needle, text))
    check("ETA" not in text and "[" not in text.replace("\x1b[K", ""), "no bar: %r" % text)

    d = os.path.join(workdir, "narrow")
    os.mkdir(d)
    fake(d, PASSES, query_delay=0.02)
    code, text = run_on_tty([VMSNAP, "migrate", "--qmp", qmp_arg(d), "tcp:h:1"], 80)
    check(code == 0, "exit %d: %s" % (code, text))
    needle = "\ractive  pass 3  remaining 40.0 MiB  100.0 MB/s  dirty 4.1 MB/s  throttle 20%\x1b[K"
    check(needle in text, "%r not in %r" % (needle, text))


def test_save_live(workdir, vms):
    """save --live: the same tuning as migrate, the live progress line and passes;
    the VM stays stopped (no cont)."""
    f = fake(workdir, PASSES, caps=["events", "multifd", "auto-converge"])
    r = run_cli(["save", "--qmp", qmp_arg(workdir), "--live", "--downtime-limit", "100",
                 "--max-bandwidth", "1G", "--auto-converge", "--channels", "2",
                 "file:/snap/vm.vms"])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    cmds = f.commands()
    check(cmds[:4] == ["qmp_capabilities", "migrate-set-capabilities",
                       "migrate-set-parameters", "migrate"], cmds)
    check(caps_sent(f) == ["events", "multifd", "auto-converge"], caps_sent(f))
    check(f.args("migrate-set-parameters") == [{"multifd-channels": 2, "downtime-limit": 100,
                                                "max-bandwidth": GIB}],
          f.args("migrate-set-parameters"))
    check(f.args("migrate") == [{"uri": "file:/snap/vm.vms"}], f.args("migrate"))
    check("cont" not in cmds, cmds)
    check("passes:      3" in r.stdout, r.stdout)

    # --resume conts after a live save too.
    d = os.path.join(workdir, "qemu")
    os.mkdir(d)
    f = fake(d, [COMPLETED])
    r = run_cli(["save", "--qmp", qmp_arg(d), "--live", "--resume", "file:/snap/vm.vms"])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check(caps_sent(f) == ["events"], caps_sent(f))
    check(f.commands()[-1] == "cont", f.commands())

    # On a terminal: the live line, not the bar.
    d = os.path.join(workdir, "tty")
    os.mkdir(d)
    fake(d, PASSES, query_delay=0.02)
    code, text = run_on_tty([VMSNAP, "save", "--qmp", qmp_arg(d), "--live", "file:/x.vms"])
    check(code == 0, "exit %d: %s" % (code, text))
    check("\ractive  pass 2  remaining 300.0 MiB" in text, repr(text))

    # Without --live the VM is stopped first and there are no passes.
    d = os.path.join(workdir, "stopped")
    os.mkdir(d)
    f = fake(d, [COMPLETED])
    r = run_cli(["save", "--qmp", qmp_arg(d), "file:/snap/vm.vms"])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check(f.commands()[:5] == ["qmp_capabilities", "query-status", "stop",
                               "migrate-set-capabilities", "migrate"], f.commands())
    check("passes" not in r.stdout, r.stdout)


if __name__ == "__main__":
    sys.exit(run_tests([test_completed, test_options, test_save_stops_first, test_relative_paths, test_json,
                        test_pre_switchover, test_pre_switchover_not_asked, test_failures,
                        test_usage, test_sigint_cancels, test_progress_on_tty, test_save_live]))
