/* The BIOS e820 memory map the VMM gives Linux, built from the VM's RAM blocks. */
#pragma once

#include "ram.h"

#include <stdint.h>

#define E820_RAM      1u
#define E820_RESERVED 2u

#define E820_LOW_END    0x0009fc00ull /* conventional memory below the EBDA */
#define E820_HIGH_START 0x00100000ull /* 1 MiB */
#define E820_MAX        8u

typedef struct E820Entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} E820Entry;

/* Fills `out` (room for E820_MAX) from the RAM layout: usable RAM below 640 KiB,
 * reserved 640 KiB-1 MiB, usable from 1 MiB to the end of the low block, and the
 * block above 4 GiB when there is one. Returns the entry count, or 0 when the low
 * block does not reach past 1 MiB. Needs only ram_layout(), no allocation. */
unsigned e820_build(const GuestRam *ram, E820Entry *out);

/* Writes `n` entries in the zero page's e820_table format (20 bytes each). */
void e820_write(uint8_t *dst, const E820Entry *e, unsigned n);
