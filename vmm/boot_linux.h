/* Booting Linux: the x86 boot protocol's 64-bit entry, for a bzImage or a vmlinux. */
#pragma once

#include "bzimage.h"
#include "e820.h"
#include "vm.h"

typedef enum {
    LINUX_KIND_BZIMAGE,
    LINUX_KIND_VMLINUX,
} LinuxKind;

/* Where the VMM puts what it builds for Linux (all below 640 KiB, all usable RAM
 * in the e820 map: the kernel copies the zero page and command line early, and
 * replaces the page tables and GDT). */
#define LINUX_GDT_ADDR     0x00000800u
#define LINUX_ZERO_PAGE    0x00001000u
#define LINUX_CMDLINE_ADDR 0x00002000u
#define LINUX_CMDLINE_MAX  0x00001000u /* bytes, NUL included */
#define LINUX_PML4_ADDR    0x00009000u
#define LINUX_PDPT_ADDR    0x0000a000u
#define LINUX_PD_ADDR      0x0000b000u /* 4 pages: 4 GiB in 2 MiB pages */
#define LINUX_IDENT_GIB    4u
#define LINUX_BOOT_CS      0x10u /* __BOOT_CS */
#define LINUX_BOOT_DS      0x18u /* __BOOT_DS */
#define LINUX_BOOT_TSS     0x20u

typedef struct LinuxBoot {
    LinuxKind kind;
    uint16_t protocol;    /* boot protocol of the image (vmlinux: what the VMM writes) */
    uint64_t load_addr;   /* protected-mode kernel (bzImage) or lowest segment (vmlinux) */
    uint64_t kernel_end;  /* load_addr + init_size: the kernel's memory */
    uint64_t entry;       /* 64-bit entry point */
    uint64_t initrd_addr; /* 0 if none */
    uint64_t initrd_size;
    unsigned n_e820;
    E820Entry e820[E820_MAX];
} LinuxBoot;

/* True if `image` is a bzImage or an x86-64 ELF64 with no multiboot header. */
bool linux_detect(const uint8_t *image, size_t len, LinuxKind *kind);

/* Loads the kernel and the optional initrd (initrd NULL: none) into guest RAM and
 * builds the zero page, command line, GDT and identity page tables. Errors name the
 * file (`what` / `initrd_what`) and the field or range. */
bool linux_load(const uint8_t *image, size_t len, const char *what, const char *cmdline,
                const uint8_t *initrd, size_t initrd_len, const char *initrd_what, GuestRam *ram,
                LinuxBoot *out, GError **error);

/* Puts vCPU 0 in 64-bit mode at the entry (RSI = zero page, flat __BOOT_CS and
 * __BOOT_DS, paging on the VMM's identity map). Other vCPUs stay in the
 * wait-for-SIPI state, for the kernel to start. */
bool boot_linux_vcpus(Vm *vm, const LinuxBoot *lb, GError **error);
