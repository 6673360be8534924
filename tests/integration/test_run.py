#!/usr/bin/env python3
"""`vmsnap run` boots the embedded self-checking guest and obeys QMP run control."""
import os
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (QUICK, DIRTY_SLOTS, DIRTY_SLOT_SIZE, DIRTY_TAG_XOR, check,  # noqa: E402
                     need_kvm, run_tests, start_vm, wait_for)


def stop_cont_cycle(vm, cpus):
    """A then B; stop freezes serial output and every pass counter, digests agree;
    cont resumes; quit exits 0."""
    vm.wait_serial(lambda t: t.startswith("A"), 30, "'A'")
    vm.wait_b(1, timeout=120)
    before = [vm.passes(i) for i in range(cpus)]
    check(vm.status() == "running", "status %s" % vm.status())
    vm.qmp.cmd("stop")
    check(vm.status() == "paused", "status after stop: %s" % vm.status())
    vm.qmp.wait_event("STOP")
    frozen_serial = vm.serial()
    frozen = [vm.passes(i) for i in range(cpus)]
    d1 = vm.digest()
    time.sleep(0.5)
    check(vm.serial() == frozen_serial, "serial output changed while paused")
    check([vm.passes(i) for i in range(cpus)] == frozen, "pass counters moved while paused")
    d2 = vm.digest()
    check(d1 == d2, "digests differ while paused: %s %s" % (d1, d2))
    check(all(f >= b for f, b in zip(frozen, before)), "pass counters went backwards")
    vm.qmp.cmd("cont")
    vm.qmp.wait_event("RESUME")
    check(vm.status() == "running", "status after cont: %s" % vm.status())
    for i in range(cpus):
        wait_for(lambda: vm.passes(i) > frozen[i], 120, "vCPU %d to make progress" % i)
    vm.wait_b(1, timeout=120, after=len(frozen_serial))
    check(vm.quit() == 0, "quit exit code")
    vm.qmp.wait_event("SHUTDOWN")
    vm.check_no_e()
    return d1


def boot_case(memory, cpus):
    def test(workdir, vms):
        need_kvm()
        vm = start_vm(vms, workdir, memory=memory, cpus=cpus)
        digest = stop_cont_cycle(vm, cpus)
        nblocks = 2 if memory == "5G" else 1
        check(len(digest["blocks"]) == nblocks, "blocks: %s" % digest["blocks"])
        if nblocks == 2:
            check(digest["blocks"][1]["gpa"] == 4 << 30, "second block base")
            check(digest["blocks"][0]["size"] == 3 << 30, "first block size")
            check(digest["blocks"][1]["size"] == 2 << 30, "second block size")
    test.__name__ = "test_boot_%s_%dcpu" % (memory, cpus)
    return test


def test_shares_cover_range(workdir, vms):
    """With 2 vCPUs each walks its own half of the range."""
    need_kvm()
    vm = start_vm(vms, workdir, memory="64M", cpus=2)
    vm.wait_b(1)
    slots = []
    for i in range(2):
        base = DIRTY_SLOTS + i * DIRTY_SLOT_SIZE
        slots.append((vm.read_u32(base + 8), vm.read_u32(base + 12)))
    check(slots[0][0] == 0x100, "share 0 starts at 1 MiB: %s" % (slots,))
    check(slots[0][1] == slots[1][0], "shares are contiguous: %s" % (slots,))
    check(slots[1][1] == (64 << 20) >> 12, "share 1 ends at the end of RAM: %s" % (slots,))


def test_oracle_detects_corruption(workdir, vms):
    """Overwriting one page's generation while paused makes the guest print E + page."""
    need_kvm()
    vm = start_vm(vms, workdir, memory="64M")
    vm.wait_b(2)
    vm.qmp.cmd("stop")
    page = 0x2345  # well inside the walked range, already written by pass >= 1
    addr = page << 12
    gen = vm.read_u32(addr)
    tag = vm.read_u32(addr + 4)
    check(gen >= 1 and tag == page ^ DIRTY_TAG_XOR, "page not walked yet: gen %d tag %x" %
          (gen, tag))
    vm.qmp.cmd("x-guest-memory-write", {"addr": addr, "data": "efbeadde"})
    vm.qmp.cmd("cont")
    vm.wait_serial(lambda t: "E" in t, 60, "'E'")
    text = vm.serial()
    check("E%08X" % page in text, "expected E%08X in %r" % (page, text[-40:]))


def test_memory_write_needs_pause(workdir, vms):
    need_kvm()
    vm = start_vm(vms, workdir, memory="64M")
    resp = vm.qmp.execute("x-guest-memory-write", {"addr": 0x200000, "data": "00"})
    check(resp["error"]["class"] == "GenericError" and "stop" in resp["error"]["desc"], resp)
    resp = vm.qmp.execute("x-guest-memory-digest")
    check("error" in resp, "digest of a running VM must be refused: %s" % resp)


def test_paused_start(workdir, vms):
    """--paused starts in prelaunch without running guest code; cont starts it."""
    need_kvm()
    vm = start_vm(vms, workdir, memory="64M", extra=["--paused"])
    check(vm.status() == "prelaunch", "status %s" % vm.status())
    time.sleep(0.3)
    check(vm.serial() == "", "guest ran while paused: %r" % vm.serial())
    vm.qmp.cmd("cont")
    vm.wait_b(1)


def test_events_and_identity(workdir, vms):
    need_kvm()
    uuid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    vm = start_vm(vms, workdir, memory="64M", extra=["--name", "web1", "--uuid", uuid])
    check(vm.qmp.cmd("query-name") == {"name": "web1"}, "query-name")
    check(vm.qmp.cmd("query-uuid") == {"UUID": uuid}, "query-uuid")
    vm.qmp.cmd("stop")
    ev = vm.qmp.wait_event("STOP")
    check(set(ev["timestamp"]) == {"seconds", "microseconds"}, "timestamp shape %s" % ev)
    check(abs(ev["timestamp"]["seconds"] - time.time()) < 60, "timestamp is wall time")
    vm.qmp.cmd("stop")  # already stopped: succeeds without a second event
    vm.qmp.cmd("cont")
    vm.qmp.wait_event("RESUME")
    check(not any(e["event"] == "STOP" for e in vm.qmp.events), "duplicate STOP")
    vm.qmp.cmd("quit")
    ev = vm.qmp.wait_event("SHUTDOWN")
    check(ev["data"] == {"guest": False, "reason": "host-qmp-quit"}, "SHUTDOWN data %s" % ev)
    check(vm.wait_exit() == 0, "exit code")


def test_qmp_socket_mode(workdir, vms):
    need_kvm()
    vm = start_vm(vms, workdir, memory="64M")
    mode = stat.S_IMODE(os.stat(vm.qmp_path).st_mode)
    check(mode == 0o600, "socket mode %o" % mode)


def test_sigterm_exits_cleanly(workdir, vms):
    need_kvm()
    vm = start_vm(vms, workdir, memory="64M")
    vm.wait_serial(lambda t: "A" in t, 30, "'A'")
    vm.proc.terminate()
    check(vm.wait_exit() == 0, "SIGTERM exit code")
    check(not os.path.exists(vm.qmp_path), "QMP socket left behind")


if __name__ == "__main__":
    tests = [boot_case(m, c) for m in ("64M", "1G", "5G") for c in (1, 2)
             if not (QUICK and m == "5G" and c == 1)]
    tests += [test_shares_cover_range, test_oracle_detects_corruption,
              test_memory_write_needs_pause, test_paused_start, test_events_and_identity,
              test_qmp_socket_mode, test_sigterm_exits_cleanly]
    sys.exit(run_tests(tests))
