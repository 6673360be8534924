#!/usr/bin/env python3
"""Live migration and stream saves: every transport, multifd, auto-converge,
cancel, failures, validate-uuid, and broken streams.

Each success case checks: the source's digest at the final pause equals the
destination's before it runs, the destination prints B and never E, the source
ends postmigrate.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (QmpError, Skip, check, need_kvm, run_cli, run_tests, start_vm,  # noqa: E402
                     wait_for)

MEM = "64M"
SLOW = 20 << 20  # max-bandwidth that makes a 64 MiB pass last about 3 s


def source(vms, workdir, memory=MEM, name="src", cpus=1, append=None, extra=()):
    src = start_vm(vms, workdir, memory=memory, cpus=cpus, name=name, append=append,
                   extra=list(extra))
    src.wait_b(2)
    return src


def destination(vms, workdir, incoming, memory=MEM, name="dst", cpus=1, extra=(), env=None):
    return start_vm(vms, workdir, memory=memory, cpus=cpus, name=name,
                    extra=["--incoming", incoming, "--paused"] + list(extra), env=env)


def check_fresh_fill(dst):
    """The destination wrote first copies of pages with UFFDIO_COPY (its debug log,
    G_MESSAGES_DEBUG=vmsnap), not by the memcpy fallback."""
    m = re.search(r"incoming: (\d+) pages filled by UFFDIO_COPY", dst.stderr_text())
    check(m is not None, "no UFFDIO_COPY line in the destination's log: %s"
          % dst.stderr_text()[-800:])
    check(int(m.group(1)) > 0, "no page filled by UFFDIO_COPY: %s" % m.group(0))


def finish_checks(src, dst, info, min_passes=2):
    """The success checks of every case."""
    check(info["status"] == "completed", "status %s" % info)
    check(info["ram"]["dirty-sync-count"] >= min_passes,
          "passes: %d" % info["ram"]["dirty-sync-count"])
    check(src.status() == "postmigrate", "source status %s" % src.status())
    digest = src.digest()
    wait_for(lambda: dst.status() == "paused", 30, "the destination to load")
    got = dst.digest()
    check(got == digest, "destination digest %s != source %s" % (got, digest))
    offset = len(dst.serial())
    dst.qmp.cmd("cont")
    dst.wait_b(2, after=offset)
    dst.check_no_e()


def live_case(transport):
    def test(workdir, vms):
        need_kvm()
        src = source(vms, workdir)
        if transport == "unix":
            path = os.path.join(workdir, "mig.sock")
            dst = destination(vms, workdir, "unix:" + path, env={"G_MESSAGES_DEBUG": "vmsnap"})
            info = src.save("unix:" + path)
        elif transport == "tcp":
            dst = destination(vms, workdir, "tcp:127.0.0.1:0")
            addr = wait_for(lambda: dst.qmp.cmd("query-migrate").get("socket-address"), 10,
                            "socket-address")
            check(addr[0]["type"] == "inet" and addr[0]["port"] != "0", "address %s" % addr)
            info = src.save("tcp:127.0.0.1:%s" % addr[0]["port"])
        elif transport == "fd":
            a, b = socket.socketpair()
            dst = destination(vms, workdir, "defer")
            dst.qmp.cmd("getfd", {"fdname": "mig"}, fds=[b.fileno()])
            dst.qmp.cmd("migrate-incoming", {"uri": "fd:mig"})
            b.close()
            info = src.save(None, fds=[a.fileno()])
            a.close()
        elif transport == "exec":
            path = os.path.join(workdir, "mig.sock")
            dst = destination(vms, workdir, "unix:" + path)
            # socat adds a copy and a context switch per buffer: on a loaded host the
            # unpaced guest outruns it, so auto-converge bounds the passes.
            info = src.save("exec:socat - UNIX-CONNECT:" + path, caps=("auto-converge",))
        finish_checks(src, dst, info)
        if transport == "unix":
            check_fresh_fill(dst)
    test.__name__ = "test_live_%s" % transport
    return test


def test_nonlive_unix(workdir, vms):
    need_kvm()
    src = source(vms, workdir)
    src.qmp.cmd("stop")
    path = os.path.join(workdir, "mig.sock")
    dst = destination(vms, workdir, "unix:" + path)
    info = src.save("unix:" + path)
    finish_checks(src, dst, info, min_passes=1)
    check(info["ram"]["dirty-sync-count"] == 1, "a stopped VM needs one pass: %s" % info)


def test_stop_while_incoming(workdir, vms):
    """QMP stop on a destination still waiting for its stream means "do not autostart"
    (QEMU): it ends paused. Without it the destination runs at once: migrated on from
    there, the next destination is running when its migration completes."""
    need_kvm()
    src = source(vms, workdir)
    path = os.path.join(workdir, "mig.sock")
    dst = start_vm(vms, workdir, memory=MEM, name="dst", extra=["--incoming", "unix:" + path])
    dst.qmp.cmd("stop")
    src.save("unix:" + path)
    wait_for(lambda: dst.qmp.cmd("query-migrate").get("status") == "completed", 30,
             "the destination to complete")
    time.sleep(0.3)
    check(dst.status() == "paused", "stopped while incoming, then %s" % dst.status())
    offset = len(dst.serial())
    dst.qmp.cmd("cont")
    dst.wait_b(2, after=offset)
    path2 = os.path.join(workdir, "mig2.sock")
    dst2 = start_vm(vms, workdir, memory=MEM, name="dst2",
                    extra=["--incoming", "unix:" + path2])
    dst2.qmp  # connected before the stream ends
    dst.save("unix:" + path2)
    wait_for(lambda: dst2.status() == "running", 30, "the second destination to run")
    offset = len(dst2.serial())
    dst2.wait_b(2, after=offset)
    dst2.check_no_e()


def test_live_save_file_then_restore(workdir, vms):
    need_kvm()
    src = source(vms, workdir, memory="256M")
    path = os.path.join(workdir, "live.snap")
    info = src.save("file:" + path)
    check(info["ram"]["dirty-sync-count"] >= 2, "passes %s" % info["ram"])
    check(os.path.getsize(path) < (256 << 20) + (2 << 20), "file larger than RAM + metadata")
    dst = start_vm(vms, workdir, command="restore", args=[path, "--paused"], name="dst")
    finish_checks(src, dst, info)


def compressed_case(tool):
    def test(workdir, vms):
        need_kvm()
        if not subprocess.run(["which", tool], capture_output=True).returncode == 0:
            raise Skip("%s is not installed" % tool)
        src = source(vms, workdir)
        # A stopped save: live precopy into a compressor slower than the guest dirties
        # memory would never converge (as in QEMU) and write pass after pass.
        src.qmp.cmd("stop")
        path = os.path.join(workdir, "vm." + tool)
        info = src.save("exec:%s -c > %s" % (tool, path))
        dst = start_vm(vms, workdir, command="restore",
                       args=["exec:%s -dc %s" % (tool, path), "--paused"], name="dst")
        finish_checks(src, dst, info, min_passes=1)
    test.__name__ = "test_exec_%s" % tool
    return test


def multifd_case(channels):
    def test(workdir, vms):
        need_kvm()
        src = source(vms, workdir, memory="256M", cpus=2)
        path = os.path.join(workdir, "mig.sock")
        dst = destination(vms, workdir, "unix:" + path, memory="256M", cpus=2)
        # Unpaced guest/dirty rewrites memory about as fast as a loaded host moves it:
        # auto-converge keeps the test finite whatever the load.
        info = src.save("unix:" + path, caps=("multifd", "auto-converge"),
                        params={"multifd-channels": channels})
        finish_checks(src, dst, info)
    test.__name__ = "test_multifd_%d_channels" % channels
    return test


def test_auto_converge(workdir, vms):
    """The link is slower than the guest dirties memory: without throttling it would
    never converge; the throttle rises and the migration completes."""
    need_kvm()
    src = source(vms, workdir, memory="32M")
    path = os.path.join(workdir, "mig.sock")
    dst = destination(vms, workdir, "unix:" + path, memory="32M")
    src.start_migration("unix:" + path, caps=("auto-converge",),
                        params={"max-bandwidth": 100 << 20, "downtime-limit": 100,
                                "cpu-throttle-initial": 80, "cpu-throttle-increment": 10})
    seen = [0]

    def throttled():
        info = src.qmp.cmd("query-migrate")
        seen[0] = max(seen[0], info.get("cpu-throttle-percentage", 0))
        return info["status"] in ("completed", "failed")
    wait_for(throttled, 120, "the migration", interval=0.1)
    info = src.wait_migration()
    check(seen[0] >= 80, "throttle never rose: max %d" % seen[0])
    check(info["ram"]["dirty-sync-count"] >= 4, "passes %d" % info["ram"]["dirty-sync-count"])
    finish_checks(src, dst, info)


def test_cancel_then_migrate_again(workdir, vms):
    need_kvm()
    src = source(vms, workdir)
    path = os.path.join(workdir, "one.sock")
    dst = destination(vms, workdir, "unix:" + path)
    src.start_migration("unix:" + path, params={"max-bandwidth": SLOW})
    wait_for(lambda: src.qmp.cmd("query-migrate")["ram"]["transferred"] > 0, 30, "progress")
    src.qmp.cmd("migrate_cancel")
    info = src.wait_migration(expect="cancelled")
    check(src.status() == "running", "source status %s" % src.status())
    offset = len(src.serial())
    src.wait_b(1, after=offset)
    check(dst.wait_exit(30) != 0, "the first destination must fail")
    path2 = os.path.join(workdir, "two.sock")
    dst2 = destination(vms, workdir, "unix:" + path2, name="dst2")
    src.qmp.cmd("migrate-set-parameters", {"max-bandwidth": 0})
    info = src.save("unix:" + path2)
    finish_checks(src, dst2, info)


def test_nothing_listening(workdir, vms):
    need_kvm()
    src = source(vms, workdir)
    path = os.path.join(workdir, "nobody.sock")
    info = src.save("unix:" + path, expect="failed")
    check(path in info["error-desc"], info)
    check(src.status() == "running", "source status %s" % src.status())
    src.wait_b(1, after=len(src.serial()))


def test_destination_killed(workdir, vms):
    need_kvm()
    src = source(vms, workdir)
    path = os.path.join(workdir, "mig.sock")
    dst = destination(vms, workdir, "unix:" + path)
    src.start_migration("unix:" + path, params={"max-bandwidth": SLOW})
    wait_for(lambda: src.qmp.cmd("query-migrate")["ram"]["transferred"] > 4 << 20, 30,
             "progress")
    dst.proc.send_signal(signal.SIGKILL)
    info = src.wait_migration(expect="failed")
    check(info.get("error-desc"), info)
    check(src.status() == "running", "source status %s" % src.status())
    src.wait_b(1, after=len(src.serial()))


UUID_A = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
UUID_B = "7ba7b810-9dad-11d1-80b4-00c04fd430c8"


def uuid_case(src_uuid, dst_uuid, validate, ok):
    def test(workdir, vms):
        need_kvm()
        src = source(vms, workdir, extra=["--uuid", src_uuid])
        path = os.path.join(workdir, "mig.sock")
        dst = destination(vms, workdir, "unix:" + path, extra=["--uuid", dst_uuid])
        caps = ("validate-uuid",) if validate else ()
        info = src.save("unix:" + path, caps=caps, expect="completed" if ok else "failed")
        if ok:
            finish_checks(src, dst, info)
        else:
            check(dst.wait_exit(30) == 1, "the destination must exit 1")
            check("UUID" in dst.stderr_text(), dst.stderr_text())
            check(src.status() == "running", "source status %s" % src.status())
    test.__name__ = "test_validate_uuid_%s_%s" % (
        "on" if validate else "off", "equal" if src_uuid == dst_uuid else "different")
    return test


def test_qmp_argument_errors(workdir, vms):
    need_kvm()
    src = source(vms, workdir)
    r = src.qmp.execute("migrate", {"uri": "unix:/x", "channels": [
        {"channel-type": "main", "addr": {"transport": "socket", "type": "unix", "path": "/x"}}]})
    check(r["error"]["desc"] == "need either 'uri' or 'channels' argument", r)
    r = src.qmp.execute("migrate", {"uri": "gopher:x"})
    check(r["error"]["desc"] == "Parameter 'uri' expects a valid migration protocol", r)
    r = src.qmp.execute("migrate", {})
    check(r["error"]["desc"] == "need either 'uri' or 'channels' argument", r)
    check(src.status() == "running", "status %s" % src.status())


def test_channels_argument(workdir, vms):
    """QEMU's channels form of the address works like uri."""
    need_kvm()
    src = source(vms, workdir)
    path = os.path.join(workdir, "mig.sock")
    dst = destination(vms, workdir, "unix:" + path)
    src.qmp.cmd("migrate-set-capabilities",
                {"capabilities": [{"capability": "events", "state": True}]})
    src.qmp.cmd("migrate", {"channels": [{"channel-type": "main", "addr": {
        "transport": "socket", "type": "unix", "path": path}}]})
    finish_checks(src, dst, src.wait_migration())


def saved_stream(vms, workdir):
    src = source(vms, workdir)
    src.qmp.cmd("stop")
    path = os.path.join(workdir, "vm.stream")
    src.save("exec:cat > " + path)
    src.quit()
    return path


def test_broken_streams(workdir, vms):
    """A destination fed a stream cut in half, or with a flipped byte, exits 1 with
    the record named."""
    need_kvm()
    path = saved_stream(vms, workdir)
    data = open(path, "rb").read()
    half = os.path.join(workdir, "half.stream")
    with open(half, "wb") as f:
        f.write(data[:len(data) // 2])
    r = run_cli(["run", "--memory", MEM, "--serial", "none", "--incoming",
                 "exec:cat " + half], timeout=60)
    check(r.returncode == 1, "exit %d" % r.returncode)
    check("incoming migration failed" in r.stderr and "truncated" in r.stderr, r.stderr)
    flipped = os.path.join(workdir, "flipped.stream")
    b = bytearray(data)
    b[len(b) // 3] ^= 0x40
    with open(flipped, "wb") as f:
        f.write(bytes(b))
    r = run_cli(["run", "--memory", MEM, "--serial", "none", "--incoming",
                 "exec:cat " + flipped], timeout=60)
    check(r.returncode == 1, "exit %d" % r.returncode)
    check("record" in r.stderr and "checksum" in r.stderr, r.stderr)


def test_random_bytes(workdir, vms):
    need_kvm()
    for i in range(5):
        junk = os.path.join(workdir, "junk%d" % i)
        with open(junk, "wb") as f:
            f.write(os.urandom(1 << 16))
        r = run_cli(["run", "--memory", MEM, "--serial", "none", "--incoming",
                     "exec:cat " + junk], timeout=60)
        check(r.returncode == 1 and "incoming migration failed" in r.stderr, r.stderr)


def test_pause_before_switchover(workdir, vms):
    """pause-before-switchover on real VMs: the source stops in pre-switchover with
    the guest paused and the destination not yet running; migrate-continue finishes
    the migration, and the guest carries on at the destination."""
    need_kvm()
    src = source(vms, workdir)
    path = os.path.join(workdir, "mig.sock")
    dst = destination(vms, workdir, "unix:" + path)
    src.start_migration("unix:" + path, caps=("pause-before-switchover",))
    wait_for(lambda: src.qmp.cmd("query-migrate")["status"] == "pre-switchover", 120,
             "pre-switchover")
    # As in QEMU: the VM is stopped for the switchover, run state finish-migrate.
    check(src.status() == "finish-migrate", "source in pre-switchover: %s" % src.status())
    check(dst.status() == "inmigrate", "destination in pre-switchover: %s" % dst.status())
    time.sleep(0.3)  # it stays there until told
    check(src.qmp.cmd("query-migrate")["status"] == "pre-switchover", "left pre-switchover")
    try:
        src.qmp.cmd("migrate-continue", {"state": "active"})
        check(False, "migrate-continue from the wrong state was accepted")
    except QmpError as e:
        check(e.error_class == "GenericError", "error class %s" % e.error_class)
    src.qmp.cmd("migrate-continue", {"state": "pre-switchover"})
    info = src.wait_migration()
    finish_checks(src, dst, info)


def test_cli_migrate(workdir, vms):
    """`vmsnap migrate` between two real VMs: exit 0, its JSON is the final
    query-migrate, and the guest carries on at the destination."""
    need_kvm()
    src = source(vms, workdir, memory="128M", cpus=2)
    path = os.path.join(workdir, "mig.sock")
    dst = destination(vms, workdir, "unix:" + path, memory="128M", cpus=2)
    r = run_cli(["migrate", "--qmp", "unix:" + src.qmp_path, "--json", "--auto-converge",
                 "--channels", "2", "unix:" + path], timeout=300)
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    info = json.loads(r.stdout)
    check(info["ram"]["total"] == 128 << 20, "total %s" % info["ram"])
    finish_checks(src, dst, info)


if __name__ == "__main__":
    tests = [live_case(t) for t in ("unix", "tcp", "fd", "exec")]
    tests += [test_nonlive_unix, test_stop_while_incoming, test_live_save_file_then_restore,
              compressed_case("gzip"),
              compressed_case("zstd")]
    tests += [multifd_case(n) for n in (1, 2, 4)]
    tests += [test_auto_converge, test_cancel_then_migrate_again, test_nothing_listening,
              test_destination_killed,
              uuid_case(UUID_A, UUID_A, True, True), uuid_case(UUID_A, UUID_B, True, False),
              uuid_case(UUID_A, UUID_B, False, True),
              test_qmp_argument_errors, test_channels_argument, test_broken_streams,
              test_random_bytes, test_pause_before_switchover, test_cli_migrate]
    sys.exit(run_tests(tests))
