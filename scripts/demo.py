#!/usr/bin/env python3
"""vmsnap demo: boot the built-in self-checking guest and drive it over QMP.

The guest prints A at boot, then B every few passes over its memory; it would
print E and a page number if any page ever lost its contents.
"""
import os
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
import harness  # noqa: E402

harness.VMSNAP = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/cli/vmsnap")


def show(label, text):
    print("  %-28s %s" % (label, text), flush=True)


def main():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("demo: /dev/kvm is not available; vmsnap needs KVM")
    work = tempfile.mkdtemp(prefix="vmsnap-demo-")
    vms = []
    try:
        print("1. boot the built-in guest: vmsnap run --memory 150M --qmp unix:%s/vm.qmp"
              % work)
        vm = harness.start_vm(vms, work, memory="150M")
        t0 = time.monotonic()
        vm.wait_serial(lambda t: "A" in t, 30, "'A'")
        show("first output after", "%.0f ms" % ((time.monotonic() - t0) * 1000))
        vm.wait_b(3)
        show("serial so far", vm.serial()[:60])
        show("guest pass counter", vm.passes())

        print("2. QMP stop: the guest freezes")
        vm.qmp.cmd("stop")
        frozen, passes = vm.serial(), vm.passes()
        time.sleep(1)
        show("status", vm.status())
        show("serial grew while paused", "%d bytes" % (len(vm.serial()) - len(frozen)))
        show("pass counter", "%d -> %d" % (passes, vm.passes()))
        show("memory digest", vm.digest()["digest"])

        print("3. QMP cont: it carries on, still checking every page")
        vm.qmp.cmd("cont")
        vm.wait_b(3, after=len(frozen))
        show("status", vm.status())
        show("new output", vm.serial()[len(frozen):][:60])
        show("pass counter", vm.passes())
        vm.check_no_e()

        print("4. QMP quit")
        show("exit code", vm.quit())
        print("demo: ok (no 'E': no page was ever lost)")
    finally:
        for v in vms:
            v.kill()


if __name__ == "__main__":
    main()
