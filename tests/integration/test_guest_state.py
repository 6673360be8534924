#!/usr/bin/env python3
"""Device-state completeness under vmsnap, checked by guest/state (docs/GUEST.md).

guest/state reports any lost or damaged vCPU/device state as `Fnn` on COM1 and
counts it in its status block (guest-physical 0xE000). These tests:
  1. run it with 1 and 2 vCPUs (concurrently) and see it silent and advancing;
  2. move one running 2-vCPU guest through save/restore (map, copy) and live
     migrations over a unix socket, each into a new process, and check that it
     goes on from where it was with no F;
  3. restore with --x-skip-device-load (test only) one piece of state at a time
     and check that the matching F code follows, and that without it none does.

VMSNAP_TEST_QUICK=1 (the sanitizer build) shortens the runs (15 s, 4 cycles).
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Skip, TestFailure, check, need_kvm, run_cli, run_tests,  # noqa: E402
                     start_vm, wait_for)

GUEST_STATE = os.environ.get("VMSNAP_GUEST_STATE", "")
QUICK = os.environ.get("VMSNAP_TEST_QUICK", "") not in ("", "0")
STEADY_SECONDS = 15 if QUICK else 60
CYCLES = (["map", "copy", "migrate", "map"] if QUICK else
          ["map", "copy", "migrate", "map", "copy", "migrate", "map", "copy", "migrate", "map"])
MEMORY = "32M"
# A save pauses the guest briefly; anything beyond this is a clock bug (F08).
APPEND = "maxjump=10000"

# The status block (guest/guests.h VMSNAP_STATE_*)
STATUS_GPA = 0xE000
STATUS_MAGIC = 0x54415453
OFF = {"magic": 0x00, "ncpus": 0x08, "flags": 0x0C, "pit_pin": 0x20, "heartbeats": 0x24,
       "pit_ticks": 0x28, "pings": 0x34, "pongs": 0x38, "f_count": 0x3C, "first_f": 0x40,
       "last_f": 0x44, "f_mask": 0x4C}
SLOTS, SLOT_SIZE = 0x80, 0x80
SLOT_OFF = {"state": 0x00, "lapic_ticks": 0x08, "timer_mode": 0x0C, "ipis": 0x10,
            "f_count": 0x14}
SLOT_OFF64 = {"r3_loops": 0x20, "kvmclock_ns": 0x28, "tsc": 0x30, "run_ns": 0x38}

F_LINE = re.compile(r"F(\d\d) [^\n]*\n")
ECHO = re.compile(r"<(.)>", re.S)


def need_guest():
    need_kvm()
    if not GUEST_STATE or not os.path.exists(GUEST_STATE):
        raise Skip("VMSNAP_GUEST_STATE is not set (run through meson test)")


ECHO_BYTES = "kq79xz"  # never F or S: an echo must not look like a report


def with_input(vms, workdir, name, **kw):
    """start_vm with COM1 input from a FIFO (--serial file:OUT,input=FIFO)."""
    fifo = os.path.join(workdir, name + ".in")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    out = os.path.join(workdir, name + ".serial")
    vm = start_vm(vms, workdir, name=name, serial="file:%s,input=%s" % (out, fifo), **kw)
    vm.input_fifo = fifo
    vm.echo_round = 0
    return vm


def check_serial_echo(vm):
    """COM1 input reaches the guest through its RX interrupt and comes back as
    `<x>`, in this process too (the UART state moved with the VM)."""
    b = ECHO_BYTES[vm.echo_round % len(ECHO_BYTES)]
    vm.echo_round += 1
    after = len(vm.serial())
    fd = os.open(vm.input_fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b.encode())
    finally:
        os.close(fd)
    vm.wait_serial(lambda t: "<%s>" % b in t[after:], 20, "the echo of %r" % b)


# ---- Reading the guest ----

def read_status(vm, ncpus=2):
    size = SLOTS + SLOT_SIZE * ncpus
    data = bytes.fromhex(vm.qmp.cmd("x-guest-memory-read",
                                    {"addr": STATUS_GPA, "size": size})["data"])

    def u32(off):
        return int.from_bytes(data[off:off + 4], "little")

    def u64(off):
        return int.from_bytes(data[off:off + 8], "little")

    st = {k: u32(v) for k, v in OFF.items()}
    st["cpus"] = []
    for i in range(ncpus):
        base = SLOTS + SLOT_SIZE * i
        slot = {k: u32(base + v) for k, v in SLOT_OFF.items()}
        slot.update({k: u64(base + v) for k, v in SLOT_OFF64.items()})
        st["cpus"].append(slot)
    return st


def parse_serial(text):
    """(F codes in order, the text without echoes and F lines)."""
    text = ECHO.sub("", text)
    codes = [int(m.group(1)) for m in F_LINE.finditer(text)]
    return codes, F_LINE.sub("", text)


def f_lines(text):
    return [m.group(0).strip() for m in F_LINE.finditer(ECHO.sub("", text))]


def check_silent(vm, what):
    codes, rest = parse_serial(vm.serial())
    check(not codes, "%s: guest reported %s" % (what, f_lines(vm.serial())))
    check(re.fullmatch(r"A?S*", rest) is not None, "%s: unexpected serial output %r" %
          (what, rest[-80:]))


def boot(vms, workdir, cpus, name, append=APPEND):
    return with_input(vms, workdir, name, memory=MEMORY, cpus=cpus, append=append,
                      extra=["--kernel", GUEST_STATE])


def wait_ready(vm, ncpus, timeout=30):
    vm.wait_serial(lambda t: t.startswith("A"), timeout, "'A'")
    st = wait_for(lambda: (lambda s: s if s["magic"] == STATUS_MAGIC else None)(
        read_status(vm, ncpus)), timeout, "the status block magic")
    check(st["ncpus"] == ncpus, "ncpus %d, expected %d" % (st["ncpus"], ncpus))
    return st


def wait_heartbeats(vm, count, timeout, what=""):
    vm.wait_serial(lambda t: ECHO.sub("", t).count("S") >= count, timeout,
                   "%d heartbeats %s" % (count, what))


def check_advanced(before, after, ncpus, what):
    """Every counter of `after` is past `before`'s (none reset, none stuck)."""
    check(after["heartbeats"] > before["heartbeats"],
          "%s: heartbeats %d -> %d" % (what, before["heartbeats"], after["heartbeats"]))
    check(after["pit_ticks"] > before["pit_ticks"],
          "%s: PIT ticks %d -> %d" % (what, before["pit_ticks"], after["pit_ticks"]))
    for i in range(ncpus):
        b, a = before["cpus"][i], after["cpus"][i]
        check(a["lapic_ticks"] > b["lapic_ticks"],
              "%s: vCPU %d LAPIC ticks %d -> %d" % (what, i, b["lapic_ticks"], a["lapic_ticks"]))
        check(a["r3_loops"] > b["r3_loops"],
              "%s: vCPU %d ring-3 loops %d -> %d" % (what, i, b["r3_loops"], a["r3_loops"]))
        check(a["kvmclock_ns"] >= b["kvmclock_ns"] and a["tsc"] >= b["tsc"],
              "%s: vCPU %d clocks went back: kvmclock %d -> %d, TSC %d -> %d" %
              (what, i, b["kvmclock_ns"], a["kvmclock_ns"], b["tsc"], a["tsc"]))
    if ncpus > 1:
        check(after["pongs"] > before["pongs"],
              "%s: IPI ping-pong %d -> %d" % (what, before["pongs"], after["pongs"]))
    check(after["f_count"] == 0, "%s: %d violations, F mask 0x%x (first F%02d)" %
          (what, after["f_count"], after["f_mask"], after["first_f"]))


def advanced(before, after, ncpus):
    """True once every counter check_advanced() looks at has moved."""
    ok = (after["heartbeats"] > before["heartbeats"] and
          after["pit_ticks"] > before["pit_ticks"] and
          (ncpus == 1 or after["pongs"] > before["pongs"]))
    for i in range(ncpus):
        ok = ok and after["cpus"][i]["lapic_ticks"] > before["cpus"][i]["lapic_ticks"]
        ok = ok and after["cpus"][i]["r3_loops"] > before["cpus"][i]["r3_loops"]
    return ok


def wait_advanced(vm, before, ncpus, what, timeout=30):
    """Waits (in guest progress, not a fixed time: the host is shared) until every
    counter is past `before`, then checks them all; returns the new status."""
    last = [None]

    def probe():
        check(vm.proc.poll() is None, "%s: vmsnap exited: %s" % (what, vm.stderr_text()))
        last[0] = read_status(vm, ncpus)
        return advanced(before, last[0], ncpus)
    try:
        wait_for(probe, timeout, what + ": every counter moving on", interval=0.1)
    except TestFailure:
        pass  # check_advanced() names the counter that did not move
    check_advanced(before, last[0], ncpus, what)
    return last[0]


# ---- 1. Steady runs ----

def test_steady_1_and_2_vcpus(workdir, vms):
    """1 and 2 vCPUs side by side for STEADY_SECONDS: no F, everything advancing."""
    need_guest()
    one = boot(vms, workdir, 1, "one")
    two = boot(vms, workdir, 2, "two")
    start = {}
    for vm, n in ((one, 1), (two, 2)):
        wait_ready(vm, n)
    t0 = time.monotonic()
    for vm, n in ((one, 1), (two, 2)):
        start[n] = read_status(vm, n)
    mid = None
    while time.monotonic() - t0 < STEADY_SECONDS:
        time.sleep(min(5, max(0.1, STEADY_SECONDS - (time.monotonic() - t0))))
        for vm, n in ((one, 1), (two, 2)):
            check(vm.proc.poll() is None, "%d-vCPU VM exited: %s" % (n, vm.stderr_text()))
            check_silent(vm, "%d vCPU(s) at %.0fs" % (n, time.monotonic() - t0))
        if mid is None and time.monotonic() - t0 >= STEADY_SECONDS / 2:
            mid = {n: read_status(vm, n) for vm, n in ((one, 1), (two, 2))}
    elapsed = time.monotonic() - t0
    for vm, n in ((one, 1), (two, 2)):
        end = read_status(vm, n)
        what = "%d vCPU(s), %.0fs" % (n, elapsed)
        if mid:
            check_advanced(start[n], mid[n], n, what + " (first half)")
            check_advanced(mid[n], end, n, what + " (second half)")
        check_advanced(start[n], end, n, what)
        # Loose rates: heartbeats are 1/s of vCPU-0 ticks; the host is shared.
        beats = end["heartbeats"] - start[n]["heartbeats"]
        check(beats >= elapsed * 0.2, "%s: only %d heartbeats" % (what, beats))
        if n == 2:
            check(end["pongs"] - start[n]["pongs"] >= elapsed * 5,
                  "%s: only %d ping-pongs" % (what, end["pongs"] - start[n]["pongs"]))
            modes = sorted(c["timer_mode"] for c in end["cpus"])
            flags = end["flags"]
            if flags & (1 << 2):  # CPUID offers TSC-deadline: vCPU 1 uses it (tscdl=2)
                check(modes == [1, 2], "%s: timer modes %s" % (what, modes))
        check_silent(vm, what)
        check_serial_echo(vm)
    print("# steady %.1fs: 1 vCPU %d beats, 2 vCPUs %d beats, %d ping-pongs" % (
        elapsed, read_status(one, 1)["heartbeats"], read_status(two, 2)["heartbeats"],
        read_status(two, 2)["pongs"]), flush=True)


# ---- 2. Save/restore and migration cycles ----

def move(vms, workdir, src, how, k):
    """Moves running `src` into a new process by `how`; returns the running new VM.
    The source ends paused in postmigrate."""
    name = "c%d-%s" % (k, how)
    if how == "migrate":
        sock = os.path.join(workdir, name + ".sock")
        dst = with_input(vms, workdir, name, memory=MEMORY, cpus=2,
                         extra=["--incoming", "unix:" + sock])
        src.save("unix:" + sock, timeout=120)
    else:
        path = os.path.join(workdir, name + ".snap")
        src.save("file:" + path, timeout=120)
        dst = with_input(vms, workdir, name, command="restore", args=[path, "--mode", how])
    check(src.status() == "postmigrate", "%s: source status %s" % (name, src.status()))
    wait_for(lambda: dst.status() == "running", 60, name + " running")
    return dst


def test_cycles(workdir, vms):
    """One 2-vCPU guest through CYCLES: each moves it to a new process; it must go on
    from where it was (counters continue, clocks monotonic), with no F at all."""
    need_guest()
    vm = boot(vms, workdir, 2, "c0")
    wait_ready(vm, 2)
    wait_heartbeats(vm, 2, 30)
    check_silent(vm, "before the first cycle")
    times = []
    for k, how in enumerate(CYCLES, 1):
        what = "cycle %d (%s)" % (k, how)
        t0 = time.monotonic()
        dst = move(vms, workdir, vm, how, k)
        moved = time.monotonic() - t0
        saved = read_status(vm, 2)  # the source's final state
        check_silent(vm, what + ", source")
        vm.kill()
        vms.remove(vm)
        first = read_status(dst, 2)
        # Nothing reset, nothing went back: the restored guest starts from the saved state.
        for key in ("heartbeats", "pit_ticks", "pongs"):
            check(first[key] >= saved[key], "%s: %s went back %d -> %d" %
                  (what, key, saved[key], first[key]))
        for i in range(2):
            for key in ("lapic_ticks", "r3_loops", "kvmclock_ns", "tsc"):
                check(first["cpus"][i][key] >= saved["cpus"][i][key],
                      "%s: vCPU %d %s went back %d -> %d" %
                      (what, i, key, saved["cpus"][i][key], first["cpus"][i][key]))
        wait_heartbeats(dst, 1, 30, "after " + what)
        # Past one heartbeat (1 s of vCPU-0 ticks): every counter moved on.
        wait_advanced(dst, saved, 2, what)
        check_silent(dst, what)
        check_serial_echo(dst)
        times.append("%s %.2fs" % (how, moved))
        vm = dst
    # A last look, once everything moved on again.
    end = wait_advanced(vm, read_status(vm, 2), 2, "after the last cycle")
    check(end["f_count"] == 0, "violations: %d, mask 0x%x" % (end["f_count"], end["f_mask"]))
    check_silent(vm, "the end")
    print("# cycles: " + ", ".join(times), flush=True)


# ---- 3. Lost state: --x-skip-device-load ----

# (skip spec, acceptable codes (any of them must appear), bound in s of wall time, restore
# arguments). Latencies from docs/GUEST.md's table; bounds are generous (3 VMs share 2 CPUs).
NEGATIVE = [
    ("cpu1.mp_state", {14}, 20),  # the slowest first: it overlaps the others
    ("cpu.lapic", {2}, 10),
    ("ioapic", {3}, 10),
    ("pit", {5}, 10),
    ("kvmclock", {6, 8}, 10),
    ("cpu.xsave", {10, 11, 12}, 10),
    ("serial", {15}, 10),
    # Not required by the table's "sections", but cheap: single MSRs of one vCPU.
    ("cpu0.kvmclock_msr", {9}, 10),
    ("cpu1.tsc_deadline", {1}, 10),  # only when vCPU 1 runs in TSC-deadline mode
]


def restore_skipping(vms, workdir, path, spec, name, mode="map"):
    args = [path, "--mode", mode]
    if spec:
        args += ["--x-skip-device-load", spec]
    return start_vm(vms, workdir, command="restore", name=name, args=args)


def codes_seen(vm, what):
    if vm.proc.poll() is not None:
        raise TestFailure("%s: vmsnap exited %d: %s" % (what, vm.proc.returncode,
                                                        vm.stderr_text()))
    return set(parse_serial(vm.serial())[0])


def wait_codes(vm, codes, bound, what):
    t0 = time.monotonic()
    wait_for(lambda: codes_seen(vm, what) & codes, bound,
             "%s: F%s" % (what, "/F".join("%02d" % c for c in sorted(codes))), interval=0.05)
    return time.monotonic() - t0


def test_lost_state(workdir, vms):
    """Each lost piece of state gives its F code; the same snapshot restored in full
    gives none. At most 3 VMs at a time: the full restore runs alongside all of them,
    and 2 restores with a skip."""
    need_guest()
    # The guest's TSC is the host's on PVM (docs/GUEST.md): it jumps by the time between
    # save and restore, which here is up to the length of this test.
    src = boot(vms, workdir, 2, "src", append="maxjump=120000")
    wait_ready(src, 2)
    wait_heartbeats(src, 3, 30)
    path = os.path.join(workdir, "vm.snap")
    src.save("file:" + path, timeout=120)
    check_silent(src, "source")
    deadline_mode = read_status(src, 2)["cpus"][1]["timer_mode"] == 2
    src.kill()
    vms.remove(src)

    control = restore_skipping(vms, workdir, path, None, "full", mode="copy")
    results = []
    pending = [n for n in NEGATIVE if deadline_mode or "tsc_deadline" not in n[0]]
    running = []
    t_all = time.monotonic()
    while pending or running:
        while pending and len(running) < 2:
            spec, codes, bound = pending.pop(0)
            name = "skip-" + spec.replace(".", "-")
            mode = ("map", "copy")[len(pending) % 2]
            vm = restore_skipping(vms, workdir, path, spec, name, mode)
            running.append((vm, spec, codes, time.monotonic(), bound))
        time.sleep(0.05)
        for item in list(running):
            vm, spec, codes, t0, bound = item
            what = "--x-skip-device-load %s" % spec
            got = codes_seen(vm, what)
            took = time.monotonic() - t0
            if got & codes:
                results.append("%s -> F%s in %.1fs" % (spec, ",F".join(
                    "%02d" % c for c in sorted(got)), took))
                check("not loaded: " + spec in vm.stderr_text(),
                      "%s: no test-only notice: %s" % (what, vm.stderr_text()))
                vm.kill()
                vms.remove(vm)
                running.remove(item)
            elif took > bound:
                raise TestFailure("%s: no F%s within %ds (seen: %s)" % (
                    what, "/F".join("%02d" % c for c in sorted(codes)), bound,
                    f_lines(vm.serial()) or "nothing"))
        check_silent(control, "full restore")
    # The full restore ran alongside all of them: still silent and advancing.
    wait_advanced(control, read_status(control, 2), 2, "full restore")
    check_silent(control, "full restore")
    print("# %.1fs: %s" % (time.monotonic() - t_all, "; ".join(results)), flush=True)


def test_lost_state_stream(workdir, vms):
    """The switch works on a stream too: a live migration over a unix socket into
    `vmsnap run --incoming` without the IOAPIC, then without both LAPICs."""
    need_guest()
    src = boot(vms, workdir, 2, "src")
    wait_ready(src, 2)
    wait_heartbeats(src, 3, 30)
    for k, (spec, codes) in enumerate((("ioapic", {3}), ("cpu0.lapic,cpu1.lapic", {2}))):
        sock = os.path.join(workdir, "m%d.sock" % k)
        dst = start_vm(vms, workdir, memory=MEMORY, cpus=2, name="dst%d" % k,
                       extra=["--incoming", "unix:" + sock, "--x-skip-device-load", spec])
        src.save("unix:" + sock, timeout=120)
        check("not loaded: " in dst.stderr_text(), "no test-only notice: %s" %
              dst.stderr_text())
        wait_codes(dst, codes, 10, "unix: with --x-skip-device-load " + spec)
        src.qmp.cmd("cont")  # the source goes on and is migrated again
        dst.kill()
        vms.remove(dst)
        wait_advanced(src, read_status(src, 2), 2, "source after migration %d" % k)
        check_silent(src, "source")


def test_skip_errors(workdir, vms):
    """Unknown names are refused, listing the valid ones, by restore and run."""
    need_kvm()
    for argv in (["restore", "/nonexistent.snap", "--x-skip-device-load", "lapic"],
                 ["run", "--incoming", "unix:/nonexistent.sock", "--x-skip-device-load",
                  "pit,cpu.apic"]):
        r = run_cli(argv, timeout=30)
        check(r.returncode == 1, "%s: exit %d: %s" % (argv, r.returncode, r.stderr))
        check("--x-skip-device-load" in r.stderr and "cpu, pic, ioapic, pit, kvmclock, serial"
              in r.stderr and "tsc_deadline" in r.stderr, "%s: %s" % (argv, r.stderr))


if __name__ == "__main__":
    sys.exit(run_tests([test_skip_errors, test_steady_1_and_2_vcpus, test_cycles,
                        test_lost_state, test_lost_state_stream]))
