/* Guest RAM: blocks of host memory mapped into the guest's physical address space. */
#pragma once

#include <gio/gio.h> /* G_IO_ERROR */
#include <stdbool.h>
#include <stdint.h>

#define RAM_PAGE_SIZE 4096u
/* RAM up to this size sits in one block at GPA 0; the rest starts at 4 GiB, leaving
 * the hole below 4 GiB for the LAPIC, IOAPIC and future MMIO. */
#define RAM_LOW_LIMIT  (3ull << 30)
#define RAM_HIGH_BASE  (4ull << 30)
#define RAM_MAX_BLOCKS 2

typedef enum {
    RAM_BACKING_ANON,  /* private anonymous memory */
    RAM_BACKING_MEMFD, /* shared memfd: another process can map it */
    RAM_BACKING_FILE,  /* private mapping of a snapshot file (map restore) */
} RamBacking;

typedef struct RamBlock {
    char name[32]; /* "ram-below-4g", "ram-above-4g" */
    uint64_t gpa;  /* guest-physical base */
    uint64_t size; /* bytes, multiple of page_size */
    uint32_t page_size;
    RamBacking backing;
    uint8_t *host; /* host mapping of [gpa, gpa + size) */
    int fd;        /* memfd, or -1 */
} RamBlock;

typedef struct GuestRam {
    unsigned n_blocks;
    RamBlock blocks[RAM_MAX_BLOCKS];
    uint64_t total; /* sum of block sizes */
} GuestRam;

/* Fills ram->blocks with the layout for `total` bytes of RAM (no allocation).
 * Returns false and sets error if total is zero or not page aligned. */
bool ram_layout(GuestRam *ram, uint64_t total, GError **error);

/* Allocates host memory for every block. Returns false and sets error on failure;
 * on failure nothing stays allocated. */
bool ram_alloc(GuestRam *ram, RamBacking backing, GError **error);

/* Gives every block's memory back, so that it reads as zero (anonymous: dropped
 * pages; memfd: holes punched). False for file-backed blocks or on error. */
bool ram_discard(GuestRam *ram, GError **error);

/* Whether anonymous guest RAM asks for transparent huge pages (the default). An
 * incoming migration turns it off while it writes every page: on a host that hands
 * free memory back, faulting in a fresh 2 MiB page costs ~4x more per byte than
 * 4 KiB pages (measured on the PVM test machines); khugepaged may merge them once it
 * is back on. */
void ram_prefer_huge_pages(GuestRam *ram, bool huge);

/* Unmaps and closes everything ram_alloc() created. Safe on a zeroed GuestRam. */
void ram_free(GuestRam *ram);

/* Host pointer for [gpa, gpa + len) if the whole range is inside one block, else NULL. */
void *ram_ptr(const GuestRam *ram, uint64_t gpa, uint64_t len);

/* The block containing gpa, or NULL. */
RamBlock *ram_block_at(GuestRam *ram, uint64_t gpa);

const char *ram_backing_name(RamBacking b);
