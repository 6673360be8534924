#!/usr/bin/env python3
"""Guest input on COM1: every --serial backend feeds the UART's receive path, and
guest/state echoes each byte from its RX interrupt as <x> (docs/GUEST.md, Output).
Input waits while the VM is stopped, and echo still works after save + restore.
The guest must never report an F line (F15: UART configuration lost, F16: RX
interrupt not delivered)."""
import os
import re
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (VMSNAP, Skip, TestFailure, check, need_kvm, run_cli,  # noqa: E402
                     run_tests, start_vm)

GUEST_STATE = os.environ.get("VMSNAP_GUEST_STATE", "")


def need_guest():
    need_kvm()
    if not GUEST_STATE or not os.path.exists(GUEST_STATE):
        raise Skip("guest/state is not built (VMSNAP_GUEST_STATE=%r)" % GUEST_STATE)


def parse(text):
    """(echoed bytes, the rest) of guest/state's output."""
    echoes = "".join(re.findall(r"<(.)>", text, re.S))
    return echoes, re.sub(r"<.>", "", text, flags=re.S)


def check_no_f(text, where):
    _, rest = parse(text)
    m = re.search(r"F\d\d [^\n]*", rest)
    check(m is None, "%s: guest reported %r" % (where, m and m.group(0)))
    check(re.fullmatch(r"AS*", rest) is not None, "%s: unexpected output %r" % (where, rest[:80]))


def boot(vms, workdir, name="vm", **kw):
    vm = start_vm(vms, workdir, memory="64M", cpus=1, args=["--kernel", GUEST_STATE],
                  name=name, **kw)
    return vm


def wait_echo(vm, want, after=0, timeout=10):
    vm.wait_serial(lambda t: parse(t[after:])[0] == want, timeout,
                   "the echo of %r" % want)


def test_stdin(workdir, vms):
    """stdio: bytes written to vmsnap's stdin (a pipe) are echoed, raw; EOF on stdin
    stops input and nothing else."""
    need_guest()
    vm = boot(vms, workdir, serial="stdio", stdin=subprocess.PIPE)
    vm.wait_serial(lambda t: t.startswith("A"), 30, "'A'")
    data = "hi<\x00\xff\r\n"
    vm.proc.stdin.write(data.encode("latin-1"))
    vm.proc.stdin.flush()
    wait_echo(vm, data)
    vm.proc.stdin.close()
    beats = vm.serial().count("S")
    vm.wait_serial(lambda t: t.count("S") > beats, 10, "a heartbeat after EOF on stdin")
    check(vm.status() == "running", "status after EOF: %s" % vm.status())
    check_no_f(vm.serial(), "stdin")


def test_stdin_terminal(workdir, vms):
    """stdio on a terminal: raw mode while running (no echo, no line editing, CR passed
    as is, signals still on), echo works, Ctrl-C exits 0 and the terminal is restored."""
    need_guest()
    import pty
    import select
    import termios
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(VMSNAP, [VMSNAP, "run", "--memory", "64M", "--kernel", GUEST_STATE])
        finally:
            os._exit(127)

    out = b""

    def read_for(seconds, until=None):
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until(out)):
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return

    try:
        read_for(10, lambda o: o.startswith(b"A"))
        check(out.startswith(b"A"), "no 'A' on the terminal: %r" % out)
        lflag = termios.tcgetattr(fd)[3]
        check(not lflag & termios.ICANON and not lflag & termios.ECHO, "not raw: lflag %#x" % lflag)
        check(lflag & termios.ISIG, "signals turned off: lflag %#x" % lflag)
        os.write(fd, b"t\r")
        read_for(10, lambda o: b"<t><\r>" in o)
        check(b"<t><\r>" in out, "echo on the terminal: %r" % out[-60:])
        os.write(fd, b"\x03")  # Ctrl-C: SIGINT to vmsnap
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            check(time.monotonic() < deadline, "vmsnap did not exit on Ctrl-C")
            read_for(0.05)
        pid = 0
        check(os.waitstatus_to_exitcode(status) == 0, "exit status %d" % status)
        lflag = termios.tcgetattr(fd)[3]
        check(lflag & termios.ICANON and lflag & termios.ECHO, "terminal not restored: %#x" % lflag)
        check_no_f(out.decode("latin-1").replace("\r\n", "\n"), "terminal")
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def test_fifo_input_flow_control(workdir, vms):
    """file:PATH,input=FIFO: a burst far larger than the UART (FIFO off: a 1-byte
    holding register) arrives whole and in order: the backend reads only what the UART
    has room for. EOF (the writer closes) stops input; the VM runs on."""
    need_guest()
    fifo = os.path.join(workdir, "in.fifo")
    os.mkfifo(fifo)
    out = os.path.join(workdir, "out.serial")
    vm = boot(vms, workdir, serial="file:%s,input=%s" % (out, fifo))
    vm.wait_serial(lambda t: t.startswith("A"), 30, "'A'")
    burst = "".join(chr(33 + (i * 7) % 90) for i in range(300))
    with open(fifo, "wb") as w:
        w.write(burst.encode("latin-1"))
    wait_echo(vm, burst, timeout=15)
    status = vm.qmp.cmd("x-guest-memory-read", {"addr": 0xE000 + 0x2C, "size": 8})["data"]
    irqs = int.from_bytes(bytes.fromhex(status[:8]), "little")
    nbytes = int.from_bytes(bytes.fromhex(status[8:]), "little")
    check(nbytes == len(burst), "guest counted %d RX bytes, sent %d" % (nbytes, len(burst)))
    check(irqs >= 1, "no RX interrupt counted")
    beats = vm.serial().count("S")
    vm.wait_serial(lambda t: t.count("S") > beats, 10, "a heartbeat after EOF")
    check_no_f(vm.serial(), "fifo")


def recv_until(sock, pred, timeout, what):
    deadline = time.monotonic() + timeout
    buf = b""
    while not pred(buf.decode("latin-1")):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TestFailure("timed out waiting for %s on the socket; got %r" % (what, buf[-80:]))
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        if not data:
            raise TestFailure("socket closed while waiting for %s; got %r" % (what, buf[-80:]))
        buf += data
    return buf.decode("latin-1")


def unix_client(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def test_unix_socket(workdir, vms):
    """unix:PATH replaces a stale socket, is 0600, echoes over the socket both ways,
    and accepts a new client after the first disconnects."""
    need_guest()
    path = os.path.join(workdir, "serial.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # leaves the socket file, nobody listening
    vm = boot(vms, workdir, serial="unix:" + path)
    check(stat.S_ISSOCK(os.stat(path).st_mode), "not a socket")
    check(stat.S_IMODE(os.stat(path).st_mode) == 0o600, "mode %o" % os.stat(path).st_mode)
    c = unix_client(path)
    # Output reaches the client (heartbeats), then input comes back as echoes.
    recv_until(c, lambda t: "S" in t, 10, "a heartbeat")
    c.sendall(b"abc")
    text = recv_until(c, lambda t: "abc" in parse(t)[0], 10, "the echo of abc")
    check_no_f("A" + text, "unix client 1")  # the A went out before the client came
    c.close()
    time.sleep(0.2)
    c = unix_client(path)
    c.sendall(b"xyz")
    text = recv_until(c, lambda t: "xyz" in parse(t)[0], 10, "the echo of xyz")
    check(parse(text)[0] == "xyz", "second client saw %r" % parse(text)[0])
    c.close()
    vm.quit()
    check(not os.path.exists(path), "serial socket left behind")


def test_input_waits_while_stopped(workdir, vms):
    """Input sent while the VM is stopped is not delivered; after cont it is."""
    need_guest()
    path = os.path.join(workdir, "serial.sock")
    vm = boot(vms, workdir, name="vm", serial="unix:" + path)
    c = unix_client(path)
    recv_until(c, lambda t: "S" in t, 10, "a heartbeat")
    vm.qmp.cmd("stop")
    vm.qmp.wait_event("STOP")
    c.sendall(b"late")
    c.settimeout(0.7)
    try:
        early = c.recv(4096)
    except socket.timeout:
        early = b""
    check(early == b"", "output while stopped: %r" % early)
    check(vm.read_u32(0xE000 + 0x30) == 0, "guest counted RX bytes while stopped")
    # The UART took nothing either: the input waits on the host side, so a snapshot
    # taken now has an empty RX FIFO.
    snap = os.path.join(workdir, "stopped.snap")
    vm.save("file:" + snap)
    r = run_cli(["inspect", "--fields", snap])
    check(r.returncode == 0, "inspect: %s" % r.stderr)
    fields = dict(re.findall(r"serial0\.(\w+) = \(\w+(?:\[\d+\])?\) (\S+)", r.stdout))
    check(fields.get("rx_count") == "0x00", "UART fields of a stopped VM: %s" % fields)
    check(int(fields["lsr"], 16) & 1 == 0, "LSR.DR set while stopped: %s" % fields)
    vm.qmp.cmd("cont")
    text = recv_until(c, lambda t: parse(t)[0] == "late", 10, "the echo of 'late' after cont")
    check("F" not in parse(text)[1], "F in %r" % text)
    c.close()


def test_echo_after_save_restore(workdir, vms):
    """Echo works before a save and after the restore (new backend, new input)."""
    need_guest()
    fifo = os.path.join(workdir, "src.fifo")
    os.mkfifo(fifo)
    src = boot(vms, workdir, name="src",
               serial="file:%s,input=%s" % (os.path.join(workdir, "src.out"), fifo))
    src.wait_serial(lambda t: t.startswith("A"), 30, "'A'")
    w = open(fifo, "wb", buffering=0)
    w.write(b"pre")
    wait_echo(src, "pre")
    src.qmp.cmd("stop")
    snap = os.path.join(workdir, "vm.snap")
    src.save("file:" + snap)
    check(src.status() == "postmigrate", "source status %s" % src.status())
    check_no_f(src.serial(), "source")
    src.quit()
    w.close()

    path = os.path.join(workdir, "dst.sock")
    dst = start_vm(vms, workdir, command="restore", args=[snap, "--paused"], name="dst",
                   serial="unix:" + path)
    check(dst.status() == "paused", "restored status %s" % dst.status())
    c = unix_client(path)
    c.sendall(b"post")  # held until cont
    time.sleep(0.3)
    check(dst.read_u32(0xE000 + 0x30) == 3, "RX bytes before cont: %d" %
          dst.read_u32(0xE000 + 0x30))
    dst.qmp.cmd("cont")
    text = recv_until(c, lambda t: parse(t)[0] == "post" and "S" in parse(t)[1], 15,
                      "the echo of 'post' and a heartbeat")
    check("F" not in parse(text)[1], "restored guest reported %r" % text)
    check(dst.read_u32(0xE000 + 0x30) == 7, "RX bytes after restore")
    c.close()


def test_bad_specs(workdir, vms):
    """A bad spec or input file stops vmsnap with exit 1 and names the option and part."""
    r = run_cli(["run", "--serial", "file:%s/o,inptu=x" % workdir])
    check(r.returncode == 1 and "--serial: unknown option 'inptu=x'" in r.stderr, r.stderr)
    r = run_cli(["restore", "x.snap", "--serial", "tcp:1"])
    check(r.returncode == 1 and "--serial: unknown backend 'tcp'" in r.stderr, r.stderr)
    if os.path.exists("/dev/kvm"):
        missing = os.path.join(workdir, "missing")
        r = run_cli(["run", "--serial", "file:%s/o,input=%s" % (workdir, missing)])
        check(r.returncode == 1 and "--serial: cannot open the input '%s'" % missing in r.stderr,
              r.stderr)
        plain = os.path.join(workdir, "plain")
        open(plain, "w").close()
        r = run_cli(["run", "--serial", "unix:" + plain])
        check(r.returncode == 1 and "exists and is not a socket" in r.stderr, r.stderr)


if __name__ == "__main__":
    sys.exit(run_tests([test_stdin, test_stdin_terminal, test_fifo_input_flow_control, test_unix_socket,
                        test_input_waits_while_stopped, test_echo_after_save_restore,
                        test_bad_specs]))
