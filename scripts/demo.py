#!/usr/bin/env python3
"""vmsnap demo: boot the built-in self-checking guest, save it, restore it, and
show it carrying on.

The guest prints A at boot, then B every few passes over its memory; it would
print E and a page number if any page ever lost its contents.
"""
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
import harness  # noqa: E402

harness.VMSNAP = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/cli/vmsnap")


def show(label, text):
    print("  %-30s %s" % (label, text), flush=True)


def main():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("demo: /dev/kvm is not available; vmsnap needs KVM")
    work = tempfile.mkdtemp(prefix="vmsnap-demo-")
    snap = os.path.join(work, "vm.snap")
    vms = []
    try:
        print("1. boot the built-in guest, walking 128 MiB of its 512 MiB:\n"
              "   vmsnap run --memory 512M --append end=129M --qmp unix:%s/src.qmp" % work)
        src = harness.start_vm(vms, work, memory="512M", append="end=129M", name="src")
        src.wait_b(3)
        show("serial so far", src.serial()[:60])
        show("guest pass counter", src.passes())

        print("2. save it: vmsnap save --qmp unix:%s/src.qmp file:%s" % (work, snap))
        r = subprocess.run([harness.VMSNAP, "save", "--qmp", "unix:" + src.qmp_path,
                            "file:" + snap], capture_output=True, text=True)
        for line in (r.stdout + r.stderr).strip().splitlines():
            show("", line)
        if r.returncode != 0:
            sys.exit("demo: save failed")
        digest = src.digest()["digest"]
        st = os.stat(snap)
        show("source status", src.status())
        show("source memory digest", digest)
        show("snapshot size", "%d MiB logical, %d MiB on disk (zero pages are holes)" %
             (st.st_size >> 20, (st.st_blocks * 512) >> 20))
        r = subprocess.run([harness.VMSNAP, "verify", snap], capture_output=True, text=True)
        show("vmsnap verify", r.stdout.strip().splitlines()[0] if r.stdout else r.stderr)
        src.quit()

        print("3. restore it in a new process: vmsnap restore %s --paused" % snap)
        dst = harness.start_vm(vms, work, command="restore", args=[snap, "--paused"],
                               name="dst")
        got = dst.digest()["digest"]
        show("restored memory digest", "%s (%s)" % (got, "same" if got == digest else "DIFFERENT"))
        dst.qmp.cmd("cont")
        passes = dst.passes()
        dst.wait_b(3)
        show("status", dst.status())
        show("new output", dst.serial()[:60])
        show("pass counter", "%d -> %d (it went on from where it was)" % (passes, dst.passes()))
        dst.check_no_e()
        show("exit code after quit", dst.quit())
        if got != digest:
            sys.exit("demo: FAILED, the restored memory differs")
        print("demo: ok (same memory, no 'E': no page was lost)")
    finally:
        for v in vms:
            v.kill()
        if os.path.exists(snap):
            os.unlink(snap)


if __name__ == "__main__":
    main()
