#!/usr/bin/env python3
"""`vmsnap save` (the CLI, against a real VM), then `vmsnap inspect` and `vmsnap
verify` on the files it writes: output and JSON keys, --fields, --extract against
the guest's memory, and every kind of damage verify must report (bad page,
garbage in a hole, flipped metadata, truncation, a save killed half-way)."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (VMSNAP, check, flip_byte, need_kvm, run_cli, run_tests,  # noqa: E402
                     start_vm, wait_for)

MIB = 1 << 20
PAGE = 4096


def boot(vms, workdir, memory="64M", name="vm", env=None):
    vm = start_vm(vms, workdir, memory=memory, name=name, env=env)
    vm.wait_b(2, timeout=180)
    return vm


def cli_save(vm, uri, *extra, timeout=300):
    return run_cli(["save", "--qmp", "unix:" + vm.qmp_path] + list(extra) + [uri],
                   timeout=timeout)


def saved(vms, workdir, name="vm.snap", uri=None):
    """Boots a 64 MiB VM, stops it, takes its digest and saves it with `vmsnap save
    --json`. Returns (vm, path, digest, query-migrate object); the VM stays paused."""
    vm = boot(vms, workdir)
    vm.qmp.cmd("stop")
    digest = vm.digest()
    path = os.path.join(workdir, name)
    r = cli_save(vm, uri or "file:" + path, "--json")
    check(r.returncode == 0, "vmsnap save exit %d: %s" % (r.returncode, r.stderr))
    info = json.loads(r.stdout)
    check(info["status"] == "completed", "save: %s" % info)
    return vm, path, digest, info


def inspect_json(path, *extra):
    r = run_cli(["inspect", "--json"] + list(extra) + [path])
    check(r.returncode == 0, "inspect --json exit %d: %s" % (r.returncode, r.stderr))
    return json.loads(r.stdout)


def read_mem(vm, addr, size):
    return bytes.fromhex(vm.qmp.cmd("x-guest-memory-read", {"addr": addr, "size": size})["data"])


def test_save_inspect(workdir, vms):
    """save --json completes; inspect shows the header, config, sections, blocks and
    sizes, as text and as JSON; --fields prints device fields; verify says valid."""
    need_kvm()
    vm, path, digest, info = saved(vms, workdir)
    check(info["ram"]["total"] == 64 * MIB, "ram.total %s" % info["ram"])
    check(vm.status() == "postmigrate", "status after save: %s" % vm.status())

    r = run_cli(["inspect", path])
    check(r.returncode == 0, "inspect exit %d: %s" % (r.returncode, r.stderr))
    for needle in ("State:        complete", "Base offset:  0", "Page size:    4096",
                   "Configuration:", "config.memory = (u64) 0x0000000004000000",
                   "config.cpus = (u32) 0x00000001", "Sections:", "CONFIG", "RAM_BLOCKS",
                   "PRESENT_BITMAP", "PAGE_CHECKSUMS", "DEVICE", "RAM blocks:", "ram-below-4g",
                   "Sizes:", "logical:", "on disk:"):
        check(needle in r.stdout, "%r not in inspect output:\n%s" % (needle, r.stdout))
    check("cpu0.regs.rip" not in r.stdout, "device fields only with --fields")

    d = inspect_json(path)
    for key in ("file", "offset", "state", "complete", "header", "config", "sections",
                "ram_blocks", "sizes"):
        check(key in d, "inspect --json has no %r: %s" % (key, list(d)))
    check("fields" not in d, "fields only with --fields")
    check(d["state"] == "complete" and d["complete"] is True, d["state"])
    h = d["header"]
    uuid = vm.qmp.cmd("query-uuid")["UUID"]
    check(h["vm_uuid"] == uuid, "vm_uuid %s, query-uuid %s" % (h["vm_uuid"], uuid))
    check(h["ram_size"] == 64 * MIB and h["page_size"] == PAGE and h["base_offset"] == 0, h)
    check(h["file_size"] == os.path.getsize(path), "file_size %d" % h["file_size"])
    cfg = {f["name"]: f for f in d["config"]}
    check(cfg["config.memory"] == {"name": "config.memory", "type": "u64",
                                   "value": "0x0000000004000000"}, cfg.get("config.memory"))
    check(cfg["config.uuid"]["value"] == uuid, cfg.get("config.uuid"))
    types = [s["type_name"] for s in d["sections"]]
    for t, n in (("CONFIG", 1), ("RAM_BLOCKS", 1), ("PRESENT_BITMAP", 1),
                 ("PAGE_CHECKSUMS", 1)):
        check(types.count(t) == n, "%d %s sections: %s" % (types.count(t), t, types))
    check(any(s["type_name"] == "DEVICE" and s["name"] == "cpu" and s["instance"] == 0
              for s in d["sections"]), "no cpu 0 device section: %s" % d["sections"])
    check(all(re.fullmatch(r"0x[0-9a-f]{16}", s["checksum"]) for s in d["sections"]),
          "checksums %s" % [s["checksum"] for s in d["sections"]])
    check(len(d["ram_blocks"]) == 1, d["ram_blocks"])
    b = d["ram_blocks"][0]
    check(b["name"] == "ram-below-4g" and b["gpa"] == 0 and b["size"] == 64 * MIB, b)
    check(b["pages"] == 16384 and b["present_pages"] + b["zero_pages"] == b["pages"], b)
    check(b["present_pages"] == h["present_pages"] == info["ram"]["normal"],
          "present pages: block %d, header %d, query-migrate normal %d" %
          (b["present_pages"], h["present_pages"], info["ram"]["normal"]))
    check(b["pages_offset"] % MIB == 0, "pages_offset %d" % b["pages_offset"])
    z = d["sizes"]
    check(z["ram"] == 64 * MIB and z["logical"] == z["ram"] + z["metadata"], z)
    check(z["on_disk"] == os.stat(path).st_blocks * 512, "on_disk %d" % z["on_disk"])

    r = run_cli(["inspect", "--fields", path])
    check(r.returncode == 0, r.stderr)
    check(re.search(r"^  cpu0\.regs\.rip = \(u64\) 0x[0-9a-f]{16}$", r.stdout, re.M),
          "no cpu0.regs.rip line:\n%s" % r.stdout[-2000:])
    d = inspect_json(path, "--fields")
    names = {f["name"]: f for f in d["fields"]}
    check(names["cpu0.regs.rip"]["type"] == "u64", names.get("cpu0.regs.rip"))
    check(any(n.startswith("serial0.") for n in names), "no serial fields: %s" % list(names)[:20])

    r = run_cli(["verify", path])
    check(r.returncode == 0, "verify exit %d: %s %s" % (r.returncode, r.stdout, r.stderr))
    check("valid" in r.stdout, r.stdout)
    r = run_cli(["verify", "--json", "--threads", "2", path])
    check(r.returncode == 0, r.stdout + r.stderr)
    v = json.loads(r.stdout)
    check(v["valid"] is True and v["complete"] is True and v["bad_pages"] == [] and
          v["error"] is None, v)


def test_save_resume_channels(workdir, vms):
    """save --resume --channels 2 leaves the VM running (cont), and the guest goes on."""
    need_kvm()
    vm = boot(vms, workdir)
    path = os.path.join(workdir, "vm.snap")
    r = cli_save(vm, "file:" + path, "--resume", "--channels", "2")
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    check("status:      completed" in r.stdout and "resumed:     yes" in r.stdout, r.stdout)
    check(vm.status() == "running", "status after --resume: %s" % vm.status())
    vm.wait_b(2, after=len(vm.serial()))
    r = run_cli(["verify", path])
    check(r.returncode == 0, r.stdout + r.stderr)


def test_save_fails(workdir, vms):
    """A save the VM cannot do: exit 2 with QMP's error text; the VM keeps running."""
    need_kvm()
    vm = boot(vms, workdir)
    r = cli_save(vm, "file:" + os.path.join(workdir, "no", "such", "dir", "vm.snap"))
    check(r.returncode == 2, "exit %d: %s" % (r.returncode, r.stderr))
    check(r.stderr.startswith("vmsnap save: ") and "no/such/dir" in r.stderr, r.stderr)
    check(vm.status() == "running", "status %s" % vm.status())
    r = cli_save(vm, "tcp:")
    check(r.returncode == 2 and r.stderr.startswith("vmsnap save: "), r.stderr)


def test_extract(workdir, vms):
    """--extract writes each block, exactly `size` bytes, absent pages as holes, and
    the bytes are the guest's."""
    need_kvm()
    vm, path, digest, _ = saved(vms, workdir)
    out = os.path.join(workdir, "ram", "sub")
    r = run_cli(["inspect", "--extract", out, path])
    check(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr))
    raw = os.path.join(out, "ram-below-4g.raw")
    check(os.path.getsize(raw) == 64 * MIB, "size %d" % os.path.getsize(raw))
    present = inspect_json(path)["ram_blocks"][0]["present_pages"]
    used = os.stat(raw).st_blocks * 512
    check(used <= present * PAGE + MIB, "%d bytes allocated for %d present pages" %
          (used, present))
    with open(raw, "rb") as f:
        data = f.read()
    rng = random.Random(1)
    addrs = [0, 0xA0000, 0x100000, 0x2345000, 64 * MIB - 65536]
    addrs += [rng.randrange(0, 64 * MIB // 65536) * 65536 for _ in range(24)]
    for a in addrs:
        check(data[a:a + 65536] == read_mem(vm, a, 65536),
              "extracted bytes at 0x%x differ from guest memory" % a)
    xxhsum = shutil.which("xxhsum")
    if xxhsum:
        r = subprocess.run([xxhsum, "-H3", raw], capture_output=True, text=True)
        if r.returncode == 0:
            got = r.stdout.split()[0].lower().replace("xxh3_", "")
            want = digest["blocks"][0]["xxh3"]
            check(got == want, "xxhsum -H3 %s, guest digest %s" % (got, want))
            print("# xxhsum -H3 of the extracted block matches the guest digest", flush=True)
    d = inspect_json(path, "--extract", os.path.join(workdir, "again"))
    check(d["extracted"] == [{"block": "ram-below-4g", "path": os.path.join(
        workdir, "again", "ram-below-4g.raw"), "size": 64 * MIB, "pages_written": present,
        "bad_pages": 0}], d["extracted"])


def block_of(path):
    return inspect_json(path)["ram_blocks"][0]


def test_bad_present_page(workdir, vms):
    """A flipped byte in a present page: verify exit 1 naming block, page and offset."""
    need_kvm()
    vm, path, _, _ = saved(vms, workdir)
    blk = block_of(path)
    page = 0x300  # inside the walked range: present
    check(read_mem(vm, page * PAGE, PAGE) != bytes(PAGE), "page 0x300 is zero in the guest")
    off = blk["pages_offset"] + page * PAGE
    flip_byte(path, off + 100)
    r = run_cli(["verify", path])
    check(r.returncode == 1, "verify exit %d: %s" % (r.returncode, r.stdout))
    line = "ram-below-4g page 0x300 at file offset 0x%x: checksum mismatch" % off
    check(line in r.stdout, "%r not in %r" % (line, r.stdout))
    check("invalid: 1 bad page" in r.stdout, r.stdout)
    r = run_cli(["verify", "--json", path])
    check(r.returncode == 1, r.stdout)
    v = json.loads(r.stdout)
    check(v["valid"] is False and v["complete"] is True and v["bad_page_count"] == 1, v)
    bad = v["bad_pages"]
    check(len(bad) == 1 and bad[0]["block"] == "ram-below-4g" and bad[0]["page"] == page and
          bad[0]["offset"] == off and bad[0]["reason"].startswith("checksum mismatch"), bad)
    # the metadata is fine: inspect works; extracting reports the page
    check(run_cli(["inspect", path]).returncode == 0, "inspect of a file with a bad page")
    r = run_cli(["inspect", "--extract", os.path.join(workdir, "x"), path])
    check(r.returncode == 2 and "page 0x300" in r.stderr, r.stderr)


def test_garbage_in_hole(workdir, vms):
    """Non-zero bytes in an absent page's area would show through a map restore."""
    need_kvm()
    vm, path, _, _ = saved(vms, workdir)
    blk = block_of(path)
    page = 0xA0  # below 1 MiB, never touched by the guest: a hole
    check(read_mem(vm, page * PAGE, PAGE) == bytes(PAGE), "page 0xa0 is not zero")
    off = blk["pages_offset"] + page * PAGE
    with open(path, "r+b") as f:
        f.seek(off + 8)
        f.write(b"\x55")
    r = run_cli(["verify", path])
    check(r.returncode == 1, "verify exit %d: %s" % (r.returncode, r.stdout))
    check("ram-below-4g page 0xa0 at file offset 0x%x: " % off in r.stdout and
          "not zero" in r.stdout, r.stdout)


def test_flipped_metadata(workdir, vms):
    """A flipped byte in the header or in any section: verify exit 1 naming the
    header or the section; inspect exit 2 with the same error."""
    need_kvm()
    _, path, _, _ = saved(vms, workdir)
    d = inspect_json(path)
    clean = open(path, "rb").read()
    targets = [(40, "header at offset 0")]
    targets.append((d["header"]["metadata_offset"] + 20, "directory"))
    for s in d["sections"]:
        if s["size"]:
            targets.append((s["offset"] + s["size"] // 2, "section %s '%s' instance %d" %
                            (s["type_name"], s["name"], s["instance"])))
    for off, needle in targets:
        with open(path, "wb") as f:
            f.write(clean)
        flip_byte(path, off)
        r = run_cli(["verify", path])
        check(r.returncode == 1, "%s: verify exit %d: %s %s" % (needle, r.returncode,
                                                                r.stdout, r.stderr))
        check(needle in r.stdout and "checksum" in r.stdout and "invalid" in r.stdout,
              "%s: %r" % (needle, r.stdout))
        v = json.loads(run_cli(["verify", "--json", path]).stdout)
        check(v["valid"] is False and needle in v["error"], v)
        r = run_cli(["inspect", path])
        check(r.returncode == 2 and needle in r.stderr, "%s: inspect %d %r" % (needle,
                                                                            r.returncode,
                                                                            r.stderr))
    print("# %d metadata places checked" % len(targets), flush=True)


def test_truncated(workdir, vms):
    need_kvm()
    _, path, _, _ = saved(vms, workdir)
    size = os.path.getsize(path)
    for cut in (size - 1, size // 2, 100):
        with open(path, "r+b") as f:
            f.truncate(cut)
        r = run_cli(["verify", path])
        check(r.returncode == 1 and "truncated" in r.stdout,
              "cut at %d: verify %d %r" % (cut, r.returncode, r.stdout))
        r = run_cli(["inspect", path])
        check(r.returncode == 2 and "truncated" in r.stderr,
              "cut at %d: inspect %d %r" % (cut, r.returncode, r.stderr))


def test_partial(workdir, vms):
    """A save killed half-way (the VM gets SIGKILL while `vmsnap save` watches): save
    exits 3; the .partial file is "incomplete" to verify (exit 1) and "partial" to
    inspect (exit 0)."""
    need_kvm()
    vm = boot(vms, workdir, memory="1G", env={"VMSNAP_FAULT_SAVE_DELAY_US": "20000"})
    path = os.path.join(workdir, "vm.snap")
    save = subprocess.Popen([VMSNAP, "save", "--qmp", "unix:" + vm.qmp_path, "file:" + path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(path + ".partial") and
                 vm.qmp.cmd("query-migrate").get("ram", {}).get("transferred", 0) > 0,
                 60, "the save to start writing pages")
        vm.proc.send_signal(signal.SIGKILL)
        vm.wait_exit()
        out, err = save.communicate(timeout=60)
    finally:
        if save.poll() is None:
            save.kill()
    check(save.returncode == 3, "vmsnap save exit %d: %s" % (save.returncode, err))
    check("closed the connection" in err, err)
    partial = path + ".partial"
    r = run_cli(["verify", partial])
    check(r.returncode == 1, "verify exit %d: %s" % (r.returncode, r.stdout + r.stderr))
    check("incomplete: the save did not finish (state PART)" in r.stdout, r.stdout)
    v = json.loads(run_cli(["verify", "--json", partial]).stdout)
    check(v["valid"] is False and v["complete"] is False and "incomplete" in v["error"], v)
    r = run_cli(["inspect", partial])
    check(r.returncode == 0 and "State:        partial" in r.stdout, r.stdout + r.stderr)
    d = inspect_json(partial)
    check(d["state"] == "partial" and d["complete"] is False and d["config"] is None and
          d["sections"] == [] and d["ram_blocks"] == [], d)
    check(d["header"]["ram_size"] == 1 << 30, d["header"])
    r = run_cli(["inspect", "--extract", os.path.join(workdir, "x"), partial])
    check(r.returncode == 2 and "partial" in r.stderr, r.stderr)


def test_offset(workdir, vms):
    """A snapshot embedded at an offset: FILE,offset=N for inspect and verify."""
    need_kvm()
    path = os.path.join(workdir, "disk.img")
    prefix = os.urandom(4096)
    with open(path, "wb") as f:
        f.write(prefix)
    saved(vms, workdir, uri="file:%s,offset=4096" % path)
    with open(path, "rb") as f:
        check(f.read(4096) == prefix, "the bytes before the offset changed")
    for arg in ("%s,offset=4096" % path, "file:%s,offset=0x1000" % path, "%s,offset=4K" % path):
        r = run_cli(["verify", arg])
        check(r.returncode == 0, "%s: %s %s" % (arg, r.stdout, r.stderr))
        d = inspect_json(arg)
        check(d["offset"] == 4096 and d["header"]["base_offset"] == 4096, d["header"])
    r = run_cli(["verify", path])
    check(r.returncode == 1 and "not a vmsnap snapshot" in r.stdout, r.stdout)


def test_usage(workdir, vms):
    """Usage and unreadable files: verify exits 2 for both (1 means invalid), inspect
    1 for usage and 2 for a file it cannot read."""
    missing = os.path.join(workdir, "missing.snap")
    for args, code, needle in ((["verify"], 2, "missing FILE"),
                               (["verify", "--threads", "0", missing], 2, "--threads"),
                               (["verify", "a", "b"], 2, "unexpected"),
                               (["verify", missing], 2, "cannot open"),
                               (["verify", workdir], 2, "not a regular file"),
                               (["inspect"], 1, "missing FILE"),
                               (["inspect", "x,offset=zz"], 1, "offset"),
                               (["inspect", missing], 2, "cannot open")):
        r = run_cli(args)
        check(r.returncode == code, "%s: exit %d, expected %d" % (args, r.returncode, code))
        check(needle in r.stderr, "%s: %r" % (args, r.stderr))
    r = run_cli(["verify", "--json", missing])
    check(r.returncode == 2, "exit %d" % r.returncode)
    v = json.loads(r.stdout)
    check(v["valid"] is False and "cannot open" in v["error"], v)
    garbage = os.path.join(workdir, "garbage")
    with open(garbage, "wb") as f:
        f.write(os.urandom(8192))
    r = run_cli(["verify", garbage])
    check(r.returncode == 1 and "not a vmsnap snapshot" in r.stdout, r.stdout + r.stderr)


if __name__ == "__main__":
    sys.exit(run_tests([test_save_inspect, test_save_resume_channels, test_save_fails,
                        test_extract, test_bad_present_page, test_garbage_in_hole,
                        test_flipped_metadata, test_truncated, test_partial, test_offset,
                        test_usage]))
