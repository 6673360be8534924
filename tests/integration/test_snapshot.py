#!/usr/bin/env python3
"""Mapped-RAM snapshots: save, map/copy restore, and refusal of every bad file."""
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (QUICK, Skip, check, flip_byte, need_kvm, run_cli, run_tests,  # noqa: E402
                     snaptool, start_vm, wait_for)


def boot(vms, workdir, memory="64M", cpus=1, append=None, name="src", env=None):
    vm = start_vm(vms, workdir, memory=memory, cpus=cpus, append=append, name=name, env=env)
    vm.wait_b(2, timeout=180)
    return vm


def save_paused(vm, uri=None, fds=None):
    """stop, digest, save; returns (digest, query-migrate)."""
    vm.qmp.cmd("stop")
    digest = vm.digest()
    info = vm.save(uri, fds=fds)
    check(vm.status() == "postmigrate", "source status after save: %s" % vm.status())
    return digest, info


def restore(vms, workdir, uri, mode="map", name="dst", extra=()):
    args = [uri, "--mode", mode, "--paused"] + list(extra)
    return start_vm(vms, workdir, command="restore", args=args, name=name)


def check_restored(vm, digest, more_b=2):
    """The restored VM, before it runs, has the source's memory; then it runs on."""
    check(vm.status() == "paused", "restored status %s" % vm.status())
    got = vm.digest()
    check(got == digest, "digest after restore %s != source %s" % (got, digest))
    offset = len(vm.serial())
    vm.qmp.cmd("cont")
    vm.wait_b(more_b, timeout=180, after=offset)
    vm.check_no_e()


def round_trip(memory, cpus, mode, kind):
    def test(workdir, vms):
        need_kvm()
        src = boot(vms, workdir, memory, cpus)
        path = os.path.join(workdir, "vm.snap")
        if kind == "fd":
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                digest, info = save_paused(src, fds=[fd])
            finally:
                os.close(fd)
        else:
            digest, info = save_paused(src, "file:" + path)
        check(info["ram"]["total"] == int(memory[:-1]) << (30 if memory[-1] == "G" else 20),
              "ram.total %s" % info["ram"])
        check(info["ram"]["normal"] > 0 and info["ram"]["duplicate"] > 0, "page counts %s" %
              info["ram"])
        src.quit()
        dst = restore(vms, workdir, "file:" + path, mode)
        check_restored(dst, digest)
    test.__name__ = "test_round_trip_%s_%dcpu_%s_%s" % (memory, cpus, mode, kind)
    return test


def test_restored_vm_saves_again(workdir, vms):
    """A map-restored VM can be saved and restored again. Saving it in place over
    the file its RAM is mapped from is refused (the VM keeps running); saving over
    that path by name is fine: the new file replaces it atomically and the mapped
    inode is untouched."""
    need_kvm()
    src = boot(vms, workdir, "64M", 2)
    first = os.path.join(workdir, "first.snap")
    save_paused(src, "file:" + first)
    src.quit()
    mid = restore(vms, workdir, "file:" + first, "map", name="mid")
    mid.qmp.cmd("cont")
    mid.wait_b(2)
    fd = os.open(first, os.O_RDWR)
    try:
        info = mid.save(None, fds=[fd], expect="failed")
    finally:
        os.close(fd)
    check("mapped from this file" in info.get("error-desc", ""), info)
    check(mid.status() == "running", "status after the refused save: %s" % mid.status())
    second = os.path.join(workdir, "second.snap")
    digest, _ = save_paused(mid, "file:" + second)
    mid.qmp.cmd("cont")
    mid.wait_b(1, after=len(mid.serial()))
    digest2, _ = save_paused(mid, "file:" + first)
    mid.quit()
    dst = restore(vms, workdir, "file:" + second, "copy", name="dst")
    check_restored(dst, digest)
    dst.quit()
    dst2 = restore(vms, workdir, "file:" + first, "map", name="dst2")
    check_restored(dst2, digest2)


def test_offset_keeps_prefix(workdir, vms):
    need_kvm()
    path = os.path.join(workdir, "embedded.img")
    prefix = os.urandom(4096)
    with open(path, "wb") as f:
        f.write(prefix)
    src = boot(vms, workdir)
    digest, _ = save_paused(src, "file:%s,offset=4096" % path)
    with open(path, "rb") as f:
        check(f.read(4096) == prefix, "the 4096 bytes before the offset changed")
    r = run_cli(["verify", "file:%s,offset=4096" % path])
    check(r.returncode == 0, "verify: %s %s" % (r.stdout, r.stderr))
    dst = restore(vms, workdir, "file:%s,offset=4096" % path, "copy")
    check_restored(dst, digest)


def test_sparse_file(workdir, vms):
    """A 1 GiB guest whose workload touches 100 MiB takes about 100 MiB on disk."""
    need_kvm()
    src = boot(vms, workdir, "1G", append="end=101M")
    path = os.path.join(workdir, "sparse.snap")
    save_paused(src, "file:" + path)
    st = os.stat(path)
    used = st.st_blocks * 512
    check(st.st_size > 1 << 30, "logical size %d" % st.st_size)
    check(100 << 20 <= used <= 106 << 20, "on-disk size %.1f MiB, expected about 100 MiB" %
          (used / 2**20))


def test_killed_writer(workdir, vms):
    """SIGKILL mid-save: the in-place file and the .partial are refused and reported
    incomplete; an earlier snapshot at another path is untouched."""
    need_kvm()
    env = {"VMSNAP_FAULT_SAVE_DELAY_US": "20000"}
    src = boot(vms, workdir, "1G", env=env)
    earlier = os.path.join(workdir, "earlier.snap")
    digest, _ = save_paused(src, "file:" + earlier)
    with open(earlier, "rb") as f:
        earlier_bytes = f.read()
    src.qmp.cmd("cont")
    inplace = os.path.join(workdir, "inplace.snap")
    shutil.copy(earlier, inplace)           # a complete snapshot, overwritten in place
    src.qmp.cmd("stop")
    src.qmp.cmd("migrate", {"uri": "file:%s,offset=0" % inplace})
    wait_for(lambda: src.qmp.cmd("query-migrate")["ram"]["transferred"] > 0, 60, "progress")
    src.proc.send_signal(signal.SIGKILL)
    src.wait_exit()
    for path in (inplace,):
        r = run_cli(["verify", path])
        check(r.returncode == 1 and "incomplete" in (r.stdout + r.stderr),
              "verify of the killed save: %d %s %s" % (r.returncode, r.stdout, r.stderr))
        r = run_cli(["restore", path, "--serial", "none"], timeout=60)
        check(r.returncode != 0 and "incomplete" in r.stderr, "restore: %s" % r.stderr)
    # the same through the atomic path: only NAME.partial exists
    src2 = boot(vms, workdir, "1G", name="src2", env=env)
    fresh = os.path.join(workdir, "fresh.snap")
    src2.qmp.cmd("stop")
    src2.qmp.cmd("migrate", {"uri": "file:" + fresh})
    wait_for(lambda: src2.qmp.cmd("query-migrate")["ram"]["transferred"] > 0, 60, "progress")
    src2.proc.send_signal(signal.SIGKILL)
    src2.wait_exit()
    check(not os.path.exists(fresh), "a killed save left %s" % fresh)
    r = run_cli(["verify", fresh + ".partial"])
    check(r.returncode == 1 and "incomplete" in (r.stdout + r.stderr), r.stdout + r.stderr)
    with open(earlier, "rb") as f:
        check(f.read() == earlier_bytes, "the earlier snapshot changed")
    dst = restore(vms, workdir, "file:" + earlier, "copy")
    check_restored(dst, digest)


def test_buffered_fallback(workdir, vms):
    """ramfs has no O_DIRECT (tmpfs has it since Linux 6.6): pages go through the
    page cache, with a notice, and the snapshot restores."""
    need_kvm()
    if os.geteuid() != 0:
        raise Skip("mounting ramfs needs root")
    mnt = os.path.join(workdir, "ramfs")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "ramfs", "ramfs", mnt],
                      capture_output=True).returncode != 0:
        raise Skip("cannot mount ramfs here")
    try:
        src = boot(vms, workdir)
        path = os.path.join(mnt, "vm.snap")
        digest, info = save_paused(src, "file:" + path)
        check(info["x-vmsnap"]["direct-io"] is False, "direct-io on ramfs: %s" % info)
        check("does not support O_DIRECT" in src.stderr_text(), src.stderr_text())
        src.quit()
        dst = restore(vms, workdir, "file:" + path, "copy")
        check_restored(dst, digest)
    finally:
        for v in vms:
            v.kill()
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def test_fd_refusals(workdir, vms):
    """A regular file passed as fd: must allow positioned writes (the VM keeps
    running); a pipe gets the stream format."""
    need_kvm()
    src = boot(vms, workdir)
    path = os.path.join(workdir, "append.snap")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        info = src.save(None, fds=[fd], expect="failed")
    finally:
        os.close(fd)
    check("O_APPEND" in info.get("error-desc", ""), info)
    check(src.status() == "running", "status %s" % src.status())
    # A pipe carries the stream format instead (docs/PROTOCOL.md). The VM is
    # stopped first: an unpaced guest/dirty rewrites memory faster than a Python
    # reader drains a pipe, so a live save would not converge.
    src.qmp.cmd("stop")
    r, w = os.pipe()
    head = bytearray()
    total = [0]

    def drain():
        while True:
            chunk = os.read(r, 1 << 20)
            if not chunk:
                return
            if len(head) < 16:
                head.extend(chunk[:16 - len(head)])
            total[0] += len(chunk)
    import threading
    reader = threading.Thread(target=drain)
    reader.start()
    try:
        src.qmp.cmd("getfd", {"fdname": "p"}, fds=[w])
        os.close(w)
        src.save("fd:p")
    finally:
        reader.join(60)
        if not reader.is_alive():
            os.close(r)
    check(not reader.is_alive(), "the pipe was not closed after the save")
    check(bytes(head[:8]) == b"\x89VMSTRM\n", "pipe received %r" % bytes(head))
    check(total[0] > 1 << 20, "only %d bytes of stream" % total[0])
    check(src.status() == "postmigrate", "status after the pipe save: %s" % src.status())
    src.qmp.cmd("cont")
    src.wait_b(2, after=len(src.serial()))
    src.check_no_e()


def saved_64m(vms, workdir):
    src = boot(vms, workdir)
    path = os.path.join(workdir, "vm.snap")
    digest, _ = save_paused(src, "file:" + path)
    src.quit()
    return path, digest


def expect_refused(vms, workdir, path, needle, modes=("map", "copy")):
    for mode in modes:
        r = run_cli(["restore", path, "--mode", mode, "--serial", "none"], timeout=60)
        check(r.returncode == 1, "%s restore of a bad file exited %d" % (mode, r.returncode))
        check(needle in r.stderr, "%s restore: expected %r in %r" % (mode, needle, r.stderr))
    r = run_cli(["verify", path])
    check(r.returncode == 1, "verify exit %d: %s" % (r.returncode, r.stdout))
    return r


def test_flipped_page_byte(workdir, vms):
    need_kvm()
    path, _ = saved_64m(vms, workdir)
    loc = snaptool("locate", path)
    blk = loc["blocks"][0]
    page = 0x300  # inside the walked range: present
    off = blk["pages_offset"] + page * 4096 + 100
    flip_byte(path, off)
    r = run_cli(["verify", path])
    check(r.returncode == 1, "verify exit %d" % r.returncode)
    check("page 0x300 at file offset 0x%x" % (blk["pages_offset"] + page * 4096) in r.stdout,
          "verify output: %s" % r.stdout)
    r = run_cli(["restore", path, "--mode", "copy", "--serial", "none"])
    check(r.returncode == 1 and "page 0x300" in r.stderr and "checksum mismatch" in r.stderr,
          "copy restore: %s" % r.stderr)
    r = run_cli(["restore", path, "--mode", "map", "--verify", "--serial", "none"])
    check(r.returncode == 1 and "page 0x300" in r.stderr, "map --verify: %s" % r.stderr)


def test_garbage_in_absent_page(workdir, vms):
    """Bytes written into a hole would show through a map restore: verify catches it."""
    need_kvm()
    path, _ = saved_64m(vms, workdir)
    blk = snaptool("locate", path)["blocks"][0]
    # the guest walks all of RAM above 1 MiB; page 0xA0 (below 1 MiB) is a hole
    page = 0xA0
    with open(path, "r+b") as f:
        f.seek(blk["pages_offset"] + page * 4096)
        f.write(b"\x55" * 16)
    r = run_cli(["verify", path])
    check(r.returncode == 1 and "page 0xa0" in r.stdout and "not zero" in r.stdout, r.stdout)


def test_flipped_metadata_bytes(workdir, vms):
    need_kvm()
    path, _ = saved_64m(vms, workdir)
    loc = snaptool("locate", path)
    clean = open(path, "rb").read()
    targets = {"header": 40, "directory": loc["metadata_offset"] + 20}
    for sec in loc["sections"]:
        targets[sec["type"] + ":" + sec["name"]] = sec["offset"] + sec["size"] // 2
    for what, off in targets.items():
        with open(path, "wb") as f:
            f.write(clean)
        flip_byte(path, off)
        expect_refused(vms, workdir, path, "checksum", modes=("map", "copy"))
        print("# refused a flipped byte in the %s at offset %d" % (what, off), flush=True)


def test_truncated_file(workdir, vms):
    need_kvm()
    path, _ = saved_64m(vms, workdir)
    size = os.path.getsize(path)
    for cut in (size - 1, size // 2, 4096 + 7, 100):
        with open(path, "r+b") as f:
            f.truncate(cut)
        expect_refused(vms, workdir, path, "truncated" if cut > 4096 else "")


def test_newer_section_version(workdir, vms):
    need_kvm()
    path, _ = saved_64m(vms, workdir)
    snaptool("set-section-version", path, 0, "serial", 0, 99)
    r = run_cli(["restore", path, "--serial", "none"])
    check(r.returncode == 1, "exit %d" % r.returncode)
    check("section 'serial' instance 0 has version 99, this vmsnap loads versions 1 to 1"
          in r.stderr, r.stderr)


def mount_small_fs(workdir):
    """A 24 MiB filesystem (loop ext4, else tmpfs); needs root."""
    if os.geteuid() != 0:
        raise Skip("mounting a small filesystem needs root")
    mnt = os.path.join(workdir, "small")
    os.mkdir(mnt)
    img = os.path.join(workdir, "small.img")
    with open(img, "wb") as f:
        f.truncate(24 << 20)
    if subprocess.run(["mkfs.ext4", "-q", "-F", img], capture_output=True).returncode == 0 and \
            subprocess.run(["mount", "-o", "loop", img, mnt], capture_output=True).returncode == 0:
        return mnt
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt],
                      capture_output=True).returncode == 0:
        return mnt
    raise Skip("cannot mount a small filesystem here")


def test_full_filesystem(workdir, vms):
    """ENOSPC: clear error naming the file, no partial file left, the VM runs again."""
    need_kvm()
    mnt = mount_small_fs(workdir)
    try:
        src = boot(vms, workdir, "64M")
        src.qmp.cmd("migrate-set-capabilities",
                    {"capabilities": [{"capability": "events", "state": True}]})
        path = os.path.join(mnt, "vm.snap")
        src.qmp.cmd("migrate", {"uri": "file:" + path})
        info = wait_for(lambda: (lambda i: i if i.get("status") in ("completed", "failed")
                                 else None)(src.qmp.cmd("query-migrate")), 120, "the save")
        check(info["status"] == "failed", "status %s" % info)
        check("No space left on device" in info.get("error-desc", ""), info)
        check(path + ".partial" in info["error-desc"], info)
        check(src.status() == "running", "source status %s" % src.status())
        check(not os.listdir(mnt) or os.listdir(mnt) == ["lost+found"],
              "left behind: %s" % os.listdir(mnt))
        offset = len(src.serial())
        src.wait_b(2, after=offset)
    finally:
        for v in vms:
            v.kill()
        subprocess.run(["umount", "-l", mnt], capture_output=True)


if __name__ == "__main__":
    tests = []
    for mem in ("64M",):
        for cpus in (1, 2):
            for mode in ("map", "copy"):
                for kind in ("file", "fd"):
                    tests.append(round_trip(mem, cpus, mode, kind))
    for cpus in (1, 2):
        for mode in ("map", "copy"):
            if not QUICK or (cpus, mode) == (2, "map"):
                tests.append(round_trip("1G", cpus, mode, "file" if cpus == 1 else "fd"))
    # 5 GiB (two RAM blocks): every dimension once, to keep CI short; the quick
    # (sanitizer) run keeps the copy case, which reads and checks every page.
    if not QUICK:
        tests.append(round_trip("5G", 1, "map", "file"))
    tests.append(round_trip("5G", 2, "copy", "fd"))
    tests += [test_restored_vm_saves_again, test_offset_keeps_prefix, test_sparse_file,
              test_killed_writer, test_flipped_page_byte, test_garbage_in_absent_page,
              test_flipped_metadata_bytes, test_truncated_file, test_newer_section_version,
              test_full_filesystem, test_buffered_fallback, test_fd_refusals]
    sys.exit(run_tests(tests))
