/* Initial vCPU state for booting a kernel. */
#pragma once

#include "multiboot.h"
#include "vm.h"

/* Marks the extra boot registers vmsnap passes to multiboot kernels:
 * ESI = this magic, ECX = vCPU index, EDX = vCPU count (docs/GUEST.md). */
#define VMSNAP_BOOT_MAGIC 0x564D534Eu /* 'VMSN' */

/* Puts every vCPU in 32-bit protected mode at the multiboot entry point, per the
 * multiboot v1 spec (flat segments, paging off, interrupts off, EAX/EBX set).
 * Application processors are made runnable directly: no INIT/SIPI needed. */
bool boot_multiboot_vcpus(Vm *vm, const MultibootImage *img, GError **error);

/* ioctl(v->fd, req, arg); false with "WHAT on vCPU N failed: errno text". */
bool boot_vcpu_ioctl(Vcpu *v, unsigned long req, void *arg, const char *what, GError **error);

/* A flat 4 GiB ring-0 segment (base 0, page granular, present): 64-bit code when
 * code64, else 32-bit (D/B set). */
void boot_flat_segment(struct kvm_segment *s, uint16_t selector, uint8_t type, bool code64);

/* The parts of a boot vCPU's sregs every entry mode shares: ES/FS/GS/SS copied from
 * DS, TR a busy TSS at selector `tss`, an empty LDT, the GDT, no IDT. */
void boot_sregs_tables(struct kvm_sregs *s, uint16_t tss, uint64_t gdt_base, uint16_t gdt_limit);
