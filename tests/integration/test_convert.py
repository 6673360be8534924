#!/usr/bin/env python3
"""`vmsnap convert`: a snapshot file saved from a real VM becomes a migration stream
(docs/PROTOCOL.md) and back, through files, pipes and exec: commands; the file that
comes back has the same pages and sections and restores to the same memory; damaged
streams and files are refused naming the record or page."""
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (VMSNAP, check, flip_byte, need_kvm, run_cli, run_tests,  # noqa: E402
                     start_vm)

RECORD_TYPES = {1: "CONFIG", 2: "RAM_BLOCKS", 3: "PAGES", 4: "SYNC", 5: "DEVICE", 6: "END"}


def saved(vms, workdir, memory="64M", cpus=2):
    """Boots a VM, stops it, saves it with QMP migrate; returns (path, digest). The
    source is shut down."""
    vm = start_vm(vms, workdir, memory=memory, cpus=cpus, name="src")
    vm.wait_b(2, timeout=180)
    vm.qmp.cmd("stop")
    digest = vm.digest()
    path = os.path.join(workdir, "vm.snap")
    vm.save("file:" + path)
    vm.quit()
    return path, digest


def convert(src, dst, expect=0, timeout=120):
    r = run_cli(["convert", src, dst], timeout=timeout)
    check(r.returncode == expect, "convert %s %s: exit %d (expected %d): %s" %
          (src, dst, r.returncode, expect, r.stderr))
    return r


def records(path):
    """The records of a one-channel stream file: (offset, type name, seq, length)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 64
    while pos + 24 <= len(data):
        rtype, seq, length = struct.unpack_from("<III", data, pos)
        out.append((pos, RECORD_TYPES.get(rtype, "?"), seq, length))
        pos += 24 + length
    return out


def inspect(path):
    r = run_cli(["inspect", "--json", "--fields", path])
    check(r.returncode == 0, "inspect %s: %s" % (path, r.stderr))
    return json.loads(r.stdout)


def extract(path, workdir, name):
    out = os.path.join(workdir, name)
    r = run_cli(["inspect", "--extract", out, path])
    check(r.returncode == 0, "inspect --extract %s: %s" % (path, r.stderr))
    blocks = {}
    for f in sorted(os.listdir(out)):
        with open(os.path.join(out, f), "rb") as fh:
            blocks[f] = fh.read()
    return blocks


def check_same_snapshot(a, b, workdir):
    """Same sections (payload checksums, offsets), blocks, config, fields and pages;
    only the snapshot's own uuid and creation time differ."""
    ja, jb = inspect(a), inspect(b)
    for key in ("sections", "ram_blocks", "config", "fields"):
        check(ja[key] == jb[key], "%s differs:\n%s\n%s" % (key, ja[key], jb[key]))
    for key, value in ja["header"].items():
        if key not in ("snapshot_uuid", "created_ns", "created"):
            check(jb["header"][key] == value, "header %s: %s != %s" %
                  (key, value, jb["header"][key]))
    check(extract(a, workdir, "xa") == extract(b, workdir, "xb"), "extracted pages differ")


def restore_and_run(vms, workdir, path, digest, name="dst"):
    dst = start_vm(vms, workdir, command="restore", name=name,
                   args=["file:" + path, "--paused"])
    check(dst.status() == "paused", "restored status %s" % dst.status())
    got = dst.digest()
    check(got == digest, "digest after restore %s != source %s" % (got, digest))
    offset = len(dst.serial())
    dst.qmp.cmd("cont")
    dst.wait_b(2, timeout=180, after=offset)
    dst.check_no_e()
    dst.quit()


def test_round_trip_files(workdir, vms):
    """file -> stream file -> file: identical pages and sections, and it restores."""
    need_kvm()
    snap, digest = saved(vms, workdir)
    strm = os.path.join(workdir, "vm.strm")
    back = os.path.join(workdir, "back.snap")
    r = convert(snap, strm)
    check("(snapshot" in r.stderr and "(stream" in r.stderr, r.stderr)
    check(not os.path.exists(strm + ".partial"), "a .partial was left behind")
    with open(strm, "rb") as f:
        check(f.read(8) == b"\x89VMSTRM\n", "the output is not a stream")
    recs = records(strm)
    types = [t for _, t, _, _ in recs]
    check(types[:2] == ["CONFIG", "RAM_BLOCKS"] and types[-1] == "END", types)
    check(types.count("SYNC") == 1 and "DEVICE" in types, types)
    check(os.path.getsize(strm) == recs[-1][0] + 24 + recs[-1][3], "bytes after END")
    convert(strm, back)
    check_same_snapshot(snap, back, workdir)
    r = run_cli(["verify", back])
    check(r.returncode == 0, "verify: %s %s" % (r.stdout, r.stderr))
    restore_and_run(vms, workdir, back, digest)


def test_pipes_and_exec(workdir, vms):
    """stdout -> stdin, and exec: at both ends, give the same file."""
    need_kvm()
    snap, digest = saved(vms, workdir, memory="32M", cpus=1)
    piped = os.path.join(workdir, "piped.snap")
    p1 = subprocess.Popen([VMSNAP, "convert", "-q", snap, "-"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    p2 = subprocess.Popen([VMSNAP, "convert", "-", piped], stdin=p1.stdout,
                          stderr=subprocess.PIPE)
    p1.stdout.close()
    err2 = p2.communicate(timeout=120)[1].decode()
    err1 = p1.communicate(timeout=120)[1].decode()
    check(p1.returncode == 0 and err1 == "", "convert to stdout: %d %s" % (p1.returncode, err1))
    check(p2.returncode == 0 and "stdin (stream" in err2, "convert from stdin: %s" % err2)
    check_same_snapshot(snap, piped, workdir)

    strm = os.path.join(workdir, "exec.strm")
    convert(snap, "exec:cat > '%s'" % strm)
    check(os.path.getsize(strm) > 0, "exec: wrote nothing")
    via = os.path.join(workdir, "via-exec.snap")
    convert("exec:cat '%s'" % strm, via)
    check_same_snapshot(snap, via, workdir)
    # a command that fails is an error, and no file is left
    r = convert(snap, "exec:exit 3", expect=2)
    check("exit" in r.stderr or "Broken pipe" in r.stderr or "status 3" in r.stderr, r.stderr)
    r = convert("exec:head -c 1000 '%s'" % strm, os.path.join(workdir, "short.snap"), expect=2)
    check("truncated: the stream ended in record 2 (RAM_BLOCKS)" in r.stderr or
          "truncated: the stream ended in" in r.stderr, r.stderr)
    check(not os.path.exists(os.path.join(workdir, "short.snap")), "a file was left behind")
    restore_and_run(vms, workdir, via, digest)


def test_damaged_stream(workdir, vms):
    """A flipped byte in a PAGES record, a cut stream, bytes after END: refused,
    naming the record, and nothing is written."""
    need_kvm()
    snap, _ = saved(vms, workdir, memory="32M", cpus=1)
    strm = os.path.join(workdir, "vm.strm")
    convert(snap, strm)
    clean = open(strm, "rb").read()
    recs = records(strm)
    pages = [r for r in recs if r[1] == "PAGES"]
    off, _, seq, length = pages[len(pages) // 2]
    out = os.path.join(workdir, "out.snap")

    flip_byte(strm, off + 24 + length // 2, 0x40)
    r = convert(strm, out, expect=2)
    want = "%s: channel 0, record %d (PAGES) at offset %d: bad checksum" % (strm, seq, off)
    check(want in r.stderr, "expected %r in: %s" % (want, r.stderr))
    check(not os.path.exists(out) and not os.path.exists(out + ".partial"), "output left")

    with open(strm, "wb") as f:
        f.write(clean[:off + 100])
    r = convert(strm, out, expect=2)
    want = ("%s: channel 0: truncated: the stream ended in record %d (PAGES) after %d bytes" %
            (strm, seq, off + 100))
    check(want in r.stderr, "expected %r in: %s" % (want, r.stderr))

    with open(strm, "wb") as f:
        f.write(clean + b"\0" * 24)
    r = convert(strm, out, expect=2)
    check("record %d (unknown type 0) at offset %d: a record after END" %
          (len(recs), len(clean)) in r.stderr, r.stderr)

    # the header's checksum
    with open(strm, "wb") as f:
        f.write(clean)
    flip_byte(strm, 30)
    r = convert(strm, out, expect=2)
    check("stream header: checksum at offset 60" in r.stderr, r.stderr)
    check(not os.path.exists(out), "output left")


def test_damaged_file(workdir, vms):
    """A bad page in the snapshot file is not laundered into a valid stream."""
    need_kvm()
    snap, _ = saved(vms, workdir, memory="32M", cpus=1)
    blk = inspect(snap)["ram_blocks"][0]
    page = 0x300  # inside the guest's walked range: present
    flip_byte(snap, blk["pages_offset"] + page * 4096 + 7)
    strm = os.path.join(workdir, "vm.strm")
    r = convert(snap, strm, expect=2)
    check("RAM block 'ram-below-4g' page 0x300 at file offset 0x%x: checksum mismatch" %
          (blk["pages_offset"] + page * 4096) in r.stderr, r.stderr)
    check(not os.path.exists(strm) and not os.path.exists(strm + ".partial"), "output left")


def test_usage_and_foreign_input(workdir, vms):
    junk = os.path.join(workdir, "junk")
    with open(junk, "wb") as f:
        f.write(os.urandom(10000))
    r = convert(junk, os.path.join(workdir, "x"), expect=2)
    check("neither a vmsnap snapshot nor a vmsnap stream" in r.stderr, r.stderr)
    r = convert(os.path.join(workdir, "missing"), os.path.join(workdir, "x"), expect=2)
    check("cannot open" in r.stderr, r.stderr)
    r = run_cli(["convert", junk])
    check(r.returncode == 1 and "missing OUT" in r.stderr, r.stderr)
    r = run_cli(["convert", "-", "-"], input="")
    check(r.returncode == 1 and "OUT must be a path" in r.stderr, r.stderr)
    r = run_cli(["convert", "-", os.path.join(workdir, "x")], input="")
    check(r.returncode == 2 and "stdin: channel 0: truncated: the stream ended in the stream "
          "header after 0 bytes" in r.stderr, r.stderr)
    r = run_cli(["convert", "--help"])
    check(r.returncode == 0 and "IN OUT" in r.stdout, r.stdout)


if __name__ == "__main__":
    sys.exit(run_tests([test_round_trip_files, test_pipes_and_exec, test_damaged_stream,
                        test_damaged_file, test_usage_and_foreign_input]))
