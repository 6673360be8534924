/* Multiboot v1 loader: ELF32 (and a.out-kludge) kernels into guest RAM. */
#pragma once

#include "ram.h"

#include <glib.h>
#include <stdint.h>

#define MULTIBOOT_HEADER_MAGIC     0x1BADB002u
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002u
#define MULTIBOOT_SEARCH           8192u

/* Where the VMM puts what the loader builds. Kernels must not load over it. */
#define BOOT_GDT_ADDR         0x00000800u /* flat GDT used by the VMM's boot state */
#define BOOT_INFO_BASE        0x00001000u
#define BOOT_INFO_MBI         0x00001000u /* struct multiboot_info */
#define BOOT_INFO_MMAP        0x00001200u /* memory map entries */
#define BOOT_INFO_NAME        0x00001800u /* boot loader name */
#define BOOT_INFO_CMDLINE     0x00002000u /* command line, NUL terminated */
#define BOOT_INFO_CMDLINE_MAX 0x00001000u
#define BOOT_INFO_END         0x00008000u

typedef struct MultibootImage {
    uint32_t entry;        /* protected-mode entry point */
    uint32_t mbi_addr;     /* multiboot info, passed in EBX */
    uint32_t load_low;     /* lowest loaded byte */
    uint32_t load_high;    /* one past the highest loaded byte (incl. bss) */
    uint32_t header_flags; /* the kernel's multiboot header flags */
} MultibootImage;

/* Loads the multiboot v1 kernel `image` (len bytes; `what` names it in errors) into
 * guest RAM and builds the multiboot info (memory map, command line, loader name).
 * Returns false with an error naming the file, offset or segment on bad input or
 * when the kernel does not fit in RAM. */
bool multiboot_load(const uint8_t *image, size_t len, const char *what, const char *cmdline,
                    GuestRam *ram, MultibootImage *out, GError **error);

/* Finds the multiboot header; returns its offset or -1. */
long multiboot_find_header(const uint8_t *image, size_t len);
