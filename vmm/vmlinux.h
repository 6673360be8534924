/* Loader for an uncompressed Linux kernel: the vmlinux ELF64 image. */
#pragma once

#include "ram.h"

#include <glib.h>
#include <stdint.h>

typedef struct VmlinuxImage {
    uint64_t entry;     /* physical address of startup_64 */
    uint64_t load_low;  /* lowest loaded physical byte */
    uint64_t load_high; /* one past the highest (including bss) */
} VmlinuxImage;

/* True for a little-endian x86-64 ELF64 image. */
bool vmlinux_detect(const uint8_t *image, size_t len);

/* Copies every PT_LOAD segment to its physical address (p_paddr), zero filling
 * bss, and finds the physical entry point (e_entry, translated through the
 * segments when it is a virtual address). Segments must lie at or above 1 MiB and
 * fit in RAM. Errors name the file (`what`) and the header or segment. */
bool vmlinux_load(const uint8_t *image, size_t len, const char *what, GuestRam *ram,
                  VmlinuxImage *out, GError **error);
