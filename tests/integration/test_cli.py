#!/usr/bin/env python3
"""vmsnap's command line: help, versions, and clear errors for bad values."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import elfgen  # noqa: E402
from harness import (check, need_kvm, run_cli, run_tests, start_vm)  # noqa: E402


def test_help_lists_commands(workdir, vms):
    r = run_cli(["--help"])
    check(r.returncode == 0, "--help exit %d" % r.returncode)
    check("run" in r.stdout and "Usage: vmsnap COMMAND" in r.stdout, r.stdout)


def test_run_help(workdir, vms):
    r = run_cli(["run", "--help"])
    check(r.returncode == 0, "run --help exit %d" % r.returncode)
    for opt in ["--memory", "--cpus", "--kernel", "--append", "--serial", "--qmp", "--name",
                "--uuid", "--paused"]:
        check(opt in r.stdout, "run --help lacks %s: %s" % (opt, r.stdout))


def test_version(workdir, vms):
    r = run_cli(["--version"])
    check(r.returncode == 0 and r.stdout.startswith("vmsnap "), r.stdout)


def test_no_command_and_unknown_command(workdir, vms):
    r = run_cli([])
    check(r.returncode == 1 and "Usage" in r.stderr, r.stderr)
    r = run_cli(["frobnicate"])
    check(r.returncode == 1 and "unknown command 'frobnicate'" in r.stderr, r.stderr)


def expect_usage_error(args, needle):
    r = run_cli(["run"] + args)
    check(r.returncode == 1, "%s: exit %d, stderr %r" % (args, r.returncode, r.stderr))
    check(needle in r.stderr, "%s: expected %r in %r" % (args, needle, r.stderr))


def test_bad_values(workdir, vms):
    expect_usage_error(["--memory", "12Q"], "--memory: invalid size '12Q'")
    expect_usage_error(["--memory", "lots"], "--memory: invalid size 'lots'")
    expect_usage_error(["--memory", "1M"], "at least 2 MiB")
    expect_usage_error(["--memory", "99999999999999999999G"], "too large")
    expect_usage_error(["--cpus", "0"], "--cpus: '0' is not a whole number from 1 to 32")
    expect_usage_error(["--cpus", "two"], "--cpus: 'two'")
    expect_usage_error(["--cpus", "33"], "--cpus: '33'")
    expect_usage_error(["--serial", "tcp:1"], "--serial: unknown backend 'tcp' in 'tcp:1'")
    expect_usage_error(["--qmp", "/tmp/x"], "--qmp: '/tmp/x' is not unix:PATH")
    expect_usage_error(["--uuid", "nope"], "--uuid: 'nope' is not a UUID")
    expect_usage_error(["--memory-backend", "hugetlb"], "'hugetlb' is not anon or memfd")
    expect_usage_error(["extra"], "unexpected argument 'extra'")


def test_bad_kernel_files(workdir, vms):
    need_kvm()
    missing = os.path.join(workdir, "missing.elf")
    expect_usage_error(["--kernel", missing], "--kernel: Failed to open file")
    junk = os.path.join(workdir, "junk.bin")
    with open(junk, "wb") as f:
        f.write(os.urandom(4096))
    expect_usage_error(["--kernel", junk], "no multiboot v1 header")
    elf64 = os.path.join(workdir, "k64.elf")
    with open(elf64, "wb") as f:
        f.write(elfgen.elf32(elfgen.UD2, elf_class=2))
    expect_usage_error(["--kernel", elf64], "is an ELF64 image")
    trunc = os.path.join(workdir, "trunc.elf")
    with open(trunc, "wb") as f:
        f.write(elfgen.elf32(elfgen.UD2 * 100)[:120])
    expect_usage_error(["--kernel", trunc], "beyond the end of the file")


def test_memory_too_small_for_kernel(workdir, vms):
    need_kvm()
    high = os.path.join(workdir, "high.elf")
    with open(high, "wb") as f:
        f.write(elfgen.elf32(elfgen.UD2, load_addr=64 << 20))
    expect_usage_error(["--kernel", high, "--memory", "16M"], "does not fit in guest RAM (16 MiB)")


def test_no_kvm_device(workdir, vms):
    env = dict(os.environ, VMSNAP_KVM_DEVICE=os.path.join(workdir, "no-kvm"))
    r = run_cli(["run", "--memory", "16M"], env=env)
    check(r.returncode == 1, "exit %d" % r.returncode)
    check("cannot open %s/no-kvm: No such file or directory" % workdir in r.stderr, r.stderr)
    check("vmsnap needs KVM" in r.stderr, r.stderr)


def test_guest_triple_fault(workdir, vms):
    need_kvm()
    k = os.path.join(workdir, "tf.elf")
    with open(k, "wb") as f:
        f.write(elfgen.elf32(elfgen.UD2))
    vm = start_vm(vms, workdir, args=["--kernel", k], qmp=False)
    code = vm.wait_exit(60)
    check(code == 2, "exit %d (expected 2)" % code)
    check("guest triple fault" in vm.stderr_text(), vm.stderr_text())


def test_unhandled_io(workdir, vms):
    need_kvm()
    k = os.path.join(workdir, "io.elf")
    with open(k, "wb") as f:
        f.write(elfgen.elf32(elfgen.OUT_PORT_0x99))
    vm = start_vm(vms, workdir, args=["--kernel", k], qmp=False)
    code = vm.wait_exit(60)
    check(code == 2, "exit %d (expected 2)" % code)
    check("unhandled I/O: out port 0x0099, 1 byte(s), value 0x42" in vm.stderr_text(),
          vm.stderr_text())


def test_custom_kernel_serial_and_debug_exit(workdir, vms):
    need_kvm()
    k = os.path.join(workdir, "hi.elf")
    with open(k, "wb") as f:
        f.write(elfgen.elf32(elfgen.HELLO_THEN_DEBUG_EXIT))
    vm = start_vm(vms, workdir, args=["--kernel", k], qmp=False)
    code = vm.wait_exit(60)
    check(code == 7, "exit %d (expected (3 << 1) | 1 = 7)" % code)
    check(vm.serial() == "HI", "serial %r" % vm.serial())


if __name__ == "__main__":
    sys.exit(run_tests([
        test_help_lists_commands, test_run_help, test_version,
        test_no_command_and_unknown_command, test_bad_values, test_bad_kernel_files,
        test_memory_too_small_for_kernel, test_no_kvm_device, test_guest_triple_fault,
        test_unhandled_io, test_custom_kernel_serial_and_debug_exit,
    ]))
