#!/usr/bin/env python3
"""Linux boot: `vmsnap run --kernel` with Debian's cloud kernel (fetched by
scripts/fetch-linux.sh). On hosts where KVM emulates guest ring 0 (PVM), Linux
cannot boot to a shell, so these tests check what the kernel prints first: the
banner, the command line the VMM passed, the e820 map the VMM built, the initrd
placement; then they stop the VM. Skips when the kernel cannot be fetched."""
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Skip, TestFailure, check, need_kvm, run_cli, run_tests,  # noqa: E402
                     start_vm, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
FETCH = os.path.join(HERE, "..", "..", "scripts", "fetch-linux.sh")
LINUX_DIR = os.environ.get("VMSNAP_LINUX_DIR", os.path.join(HERE, "..", "..", "build", "linux"))
EARLY = "earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr"

_fetched = None


def need_linux():
    """Runs the fetch script once (it caches); skips when it exits 3 (no network)."""
    global _fetched
    if _fetched is None:
        r = subprocess.run(["bash", FETCH, LINUX_DIR], capture_output=True, text=True,
                           timeout=600)
        _fetched = (r.returncode, (r.stdout + r.stderr).strip())
    code, out = _fetched
    if code == 3:
        raise Skip("cannot fetch Debian's kernel (scripts/fetch-linux.sh exit 3): %s"
                   % out.splitlines()[-1] if out else "no output")
    if code != 0:
        raise TestFailure("scripts/fetch-linux.sh failed (%d): %s" % (code, out))
    return LINUX_DIR


def expected_e820(memory):
    """The map the VMM builds (vmm/e820.c), as Linux prints it (inclusive ends)."""
    low = min(memory, 3 << 30)
    entries = [(0, 0x9fc00, "usable"), (0x9fc00, 0x100000, "reserved"),
               (0x100000, low, "usable")]
    if memory > low:
        entries.append((4 << 30, (4 << 30) + memory - low, "usable"))
    return ["BIOS-e820: [mem 0x%016x-0x%016x] %s" % (a, b - 1, t) for a, b, t in entries]


def e820_done(text):
    """True once a complete line follows the last BIOS-e820 line (the map is whole)."""
    lines = text.split("\n")[:-1]  # complete lines only
    idx = [i for i, line in enumerate(lines) if "BIOS-e820:" in line]
    return bool(idx) and idx[-1] < len(lines) - 1


def start_vmlinux(vms, workdir, d, memory, initrd):
    token = "vmsnap-token-%s" % os.urandom(4).hex()
    append = "%s %s" % (EARLY, token)
    args = ["--kernel", os.path.join(d, "vmlinux")]
    if initrd:
        args += ["--initrd", os.path.join(d, "initramfs.gz")]
    vm = start_vm(vms, workdir, memory=memory, append=append, args=args, name="vm-" + memory)
    return vm, append


def check_vmlinux(vm, append, d, memory, memory_bytes, initrd, t0):
    """Checks the banner, the command line and the e820 map (and with an initrd,
    its placement), then stops the VM: no need to watch the kernel die."""
    # Everything up to the e820 map comes out at once, when earlyprintk registers
    # its console; the initrd line follows some seconds later.
    vm.wait_serial(e820_done, 420, "the banner and the e820 map (%s)" % memory)
    t_banner = time.monotonic() - t0
    if initrd:
        vm.wait_serial(lambda t: re.search(r"RAMDISK: .*\n", t), 120, "'RAMDISK:' (%s)" % memory)
    text = vm.serial()
    vm.quit()
    print("# %s: banner and e820 map after %.1fs%s" %
          (memory, t_banner, ", RAMDISK line after %.1fs" % (time.monotonic() - t0)
           if initrd else ""), flush=True)
    check("Linux version " in text, "%s: no banner: %r" % (memory, text[:300]))
    check(re.search(r"Command line: %s\r?\n" % re.escape(append), text),
          "%s: no command line echo of %r: %r" % (memory, append, text[:600]))
    got = [line.split("] ", 1)[1].strip() for line in text.splitlines() if "BIOS-e820:" in line]
    want = expected_e820(memory_bytes)
    check(got == want, "%s: e820 map:\n got %s\nwant %s" % (memory, got, want))
    if not initrd:
        check("RAMDISK" not in text, "%s: a RAMDISK line without --initrd" % memory)
        return
    # The initrd: page aligned, as high as possible in low RAM, its exact size.
    m = re.search(r"RAMDISK: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\]", text)
    check(m, "no RAMDISK line")
    size = os.path.getsize(os.path.join(d, "initramfs.gz"))
    top = min(memory_bytes, 3 << 30, 0x80000000)  # the VMM's initrd_addr_max for vmlinux
    start = (top - size) & ~0xfff
    check(int(m.group(1), 16) == start, "initrd at 0x%s, want 0x%x" % (m.group(1), start))
    # Linux prints the end rounded up to a page
    check(int(m.group(2), 16) == ((start + size + 0xfff) & ~0xfff) - 1,
          "initrd end 0x%s" % m.group(2))


def test_vmlinux_256M_initrd_and_5G(workdir, vms):
    """Two VMs at once (the early boot is slow here, so they overlap): 256M with the
    initrd, and 5G (two RAM blocks, so an e820 entry at 4 GiB) without."""
    need_kvm()
    d = need_linux()
    t0 = time.monotonic()
    small, small_append = start_vmlinux(vms, workdir, d, "256M", True)
    big, big_append = start_vmlinux(vms, workdir, d, "5G", False)
    check_vmlinux(small, small_append, d, "256M", 256 << 20, True, t0)
    check_vmlinux(big, big_append, d, "5G", 5 << 30, False, t0)


def test_bzimage_entry(workdir, vms):
    """The bzImage's decompressor runs in guest ring 0 (emulated here): the banner
    takes minutes, so only check that the 64-bit entry runs and reads the command
    line from the zero page (its 'nokaslr' message)."""
    need_kvm()
    d = need_linux()
    vm = start_vm(vms, workdir, memory="256M", append=EARLY,
                  args=["--kernel", os.path.join(d, "vmlinuz")])
    vm.wait_serial(lambda t: "KASLR disabled: 'nokaslr' on cmdline." in t, 60,
                   "the decompressor's nokaslr message")
    vm.quit()


def test_busybox_shell_under_qemu_tcg(workdir, vms):
    """The same kernel and initramfs reach a busybox shell where ring 0 is not
    emulated by KVM: QEMU's TCG. Shows the initramfs is good; no vmsnap code."""
    d = need_linux()
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise Skip("qemu-system-x86_64 is not installed")
    out = os.path.join(workdir, "tcg.serial")
    p = subprocess.Popen([qemu, "-accel", "tcg", "-cpu", "max", "-m", "256M",
                          "-kernel", os.path.join(d, "vmlinuz"),
                          "-initrd", os.path.join(d, "initramfs.gz"),
                          "-append", "console=ttyS0 panic=-1", "-display", "none", "-vga", "none",
                          "-nodefaults", "-serial", "file:" + out, "-no-reboot"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    try:
        def shell():
            if p.poll() is not None:
                raise TestFailure("qemu exited with %d" % p.returncode)
            try:
                with open(out, "rb") as f:
                    t = f.read().decode("latin-1")
            except FileNotFoundError:
                return False
            return "vmsnap-initramfs: busybox init reached" in t and "built-in shell" in t
        wait_for(shell, 180, "the busybox shell under QEMU TCG")
    finally:
        p.kill()
        p.wait()


def test_initrd_errors(workdir, vms):
    need_kvm()
    d = need_linux()
    initrd = os.path.join(d, "initramfs.gz")
    r = run_cli(["run", "--initrd", initrd, "--serial", "none"])
    check(r.returncode == 1 and "--initrd needs --kernel" in r.stderr, r.stderr)
    dirty = os.environ.get("VMSNAP_GUEST_DIRTY")
    if dirty:
        r = run_cli(["run", "--kernel", dirty, "--initrd", initrd, "--serial", "none"])
        check(r.returncode == 1 and "multiboot modules" in r.stderr, r.stderr)
    r = run_cli(["run", "--kernel", os.path.join(d, "vmlinux"), "--initrd",
                 os.path.join(workdir, "missing"), "--serial", "none"])
    check(r.returncode == 1 and "--initrd:" in r.stderr, r.stderr)
    # 32M: the vmlinux (about 50 MiB with bss, at 16 MiB) does not fit
    r = run_cli(["run", "--memory", "32M", "--kernel", os.path.join(d, "vmlinux"),
                 "--serial", "none"])
    check(r.returncode == 1 and "does not fit in guest RAM" in r.stderr, r.stderr)


if __name__ == "__main__":
    sys.exit(run_tests([test_vmlinux_256M_initrd_and_5G,
                        test_bzimage_entry, test_initrd_errors,
                        test_busybox_shell_under_qemu_tcg]))
