#!/usr/bin/env python3
"""Restoring into a VMM started with --incoming URI|defer, QEMU style."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, need_kvm, run_cli, run_tests, start_vm  # noqa: E402


def saved(vms, workdir, memory="64M", cpus=1):
    src = start_vm(vms, workdir, memory=memory, cpus=cpus, name="src")
    src.wait_b(2)
    src.qmp.cmd("stop")
    digest = src.digest()
    path = os.path.join(workdir, "vm.snap")
    src.save("file:" + path)
    src.quit()
    return path, digest


def test_incoming_uri(workdir, vms):
    """--incoming file:PATH loads at start; --paused keeps it paused for a digest."""
    need_kvm()
    path, digest = saved(vms, workdir, cpus=2)
    dst = start_vm(vms, workdir, memory="64M", cpus=2, name="dst",
                   extra=["--incoming", "file:" + path, "--paused"])
    check(dst.status() == "paused", "status %s" % dst.status())
    check(dst.digest() == digest, "digest differs")
    dst.qmp.cmd("cont")
    dst.wait_b(2, after=len(dst.serial()))


def test_incoming_defer(workdir, vms):
    """--incoming defer waits in inmigrate; cont is refused; migrate-incoming loads
    and, without --paused, the VM runs (RESUME)."""
    need_kvm()
    path, digest = saved(vms, workdir)
    dst = start_vm(vms, workdir, memory="64M", name="dst",
                   extra=["--incoming", "defer", "--restore-mode", "copy"])
    check(dst.status() == "inmigrate", "status %s" % dst.status())
    r = dst.qmp.execute("cont")
    check(r["error"]["desc"] == "Guest is waiting for an incoming migration", r)
    # a bad file is refused and the VMM keeps waiting
    bad = os.path.join(workdir, "nothing.snap")
    with open(bad, "wb") as f:
        f.write(b"\0" * 8192)
    r = dst.qmp.execute("migrate-incoming", {"uri": "file:" + bad})
    check("not a vmsnap snapshot" in r["error"]["desc"], r)
    check(dst.status() == "inmigrate", "status after a refused load: %s" % dst.status())
    dst.qmp.cmd("migrate-incoming", {"uri": "file:" + path})
    dst.qmp.wait_event("RESUME")
    check(dst.status() == "running", "status %s" % dst.status())
    dst.wait_b(2)
    r = dst.qmp.execute("migrate-incoming", {"uri": "file:" + path})
    check("already been started" in r["error"]["desc"], r)


def test_incoming_fd(workdir, vms):
    need_kvm()
    path, digest = saved(vms, workdir)
    dst = start_vm(vms, workdir, memory="64M", name="dst",
                   extra=["--incoming", "defer", "--paused"])
    fd = os.open(path, os.O_RDONLY)
    try:
        dst.qmp.cmd("getfd", {"fdname": "in"}, fds=[fd])
    finally:
        os.close(fd)
    dst.qmp.cmd("migrate-incoming", {"uri": "fd:in"})
    check(dst.status() == "paused", "status %s" % dst.status())
    check(dst.digest() == digest, "digest differs")


def test_incoming_config_mismatch(workdir, vms):
    need_kvm()
    path, _ = saved(vms, workdir)
    r = run_cli(["run", "--memory", "128M", "--incoming", "file:" + path, "--serial", "none"])
    check(r.returncode == 1, "exit %d" % r.returncode)
    check("config field 'memory' is 64 MiB in the snapshot, this VM has 128 MiB (--memory)"
          in r.stderr, r.stderr)
    r = run_cli(["run", "--memory", "64M", "--cpus", "2", "--incoming", "file:" + path,
                 "--serial", "none"])
    check("config field 'cpus' is 1 in the snapshot, this VM has 2 (--cpus)" in r.stderr,
          r.stderr)


def test_defer_needs_qmp(workdir, vms):
    r = run_cli(["run", "--incoming", "defer"])
    check(r.returncode == 1 and "--incoming defer needs --qmp" in r.stderr, r.stderr)


if __name__ == "__main__":
    sys.exit(run_tests([test_incoming_uri, test_incoming_defer, test_incoming_fd,
                        test_incoming_config_mismatch, test_defer_needs_qmp]))
