/*
 * What a VMM hands the engine (DESIGN.md section 2): its RAM blocks, its device
 * state handlers and its configuration. The structs carry their own size so
 * they can grow.
 */
#pragma once

#include <vmsnap/device.h>

G_BEGIN_DECLS

typedef struct VmsnapRamBlock {
    char name[32];      /* unique, 1-31 chars: "ram-below-4g" */
    uint64_t gpa;       /* guest-physical base */
    uint64_t size;      /* bytes, multiple of page_size */
    uint32_t page_size; /* 4096 */
    uint8_t *host;      /* host mapping of the whole block */
    int backing_fd;     /* file the block is mapped from (map restore), or -1: a save
                         * refuses to overwrite that file in place */
} VmsnapRamBlock;

/* Live operations a VMM offers for live save and migration. Called from the
 * engine's thread. Any member may be NULL when the VMM cannot do it (then only
 * stopped saves are possible). */
typedef struct VmsnapVmOps {
    uint32_t struct_size; /* sizeof(VmsnapVmOps) */
    /* Starts dirty tracking. Cost must not grow with the RAM size. The engine sends
     * every page in its first pass, whatever the first fetch reports. Returns false
     * with an error. */
    bool (*dirty_start)(void *opaque, GError **error);
    /* ORs into `bitmap` (host-endian u64 words, one bit per page of `block`) the pages
     * written since the previous fetch (or the start), and re-arms tracking for them:
     * a write after this call shows in the next fetch. A VMM that offers dirty_rearm
     * only reports here: the pages stay armed-off until dirty_rearm names them. */
    bool (*dirty_fetch)(void *opaque, unsigned block, uint64_t *bitmap, GError **error);
    void (*dirty_stop)(void *opaque);
    /* Stops the vCPUs for the final pass (the VM's state is then "finish-migrate"). */
    void (*pause)(void *opaque);
    /* Slows the vCPUs down to (100 - percent)% of their time; 0 stops throttling. */
    void (*throttle)(void *opaque, unsigned percent);
    void *opaque;
    /* Optional (check struct_size): re-arms tracking for the pages of `block` set in
     * `bitmap` (bit i = page first + i; `first` is a multiple of 64, `count` too unless
     * it ends the block). The engine calls it for each chunk of a live pass just
     * before it reads the chunk's pages, so a write between the fetch and the read
     * travels in this pass instead of being sent again in the next one. */
    bool (*dirty_rearm)(void *opaque, unsigned block, uint64_t first, uint64_t count,
                        const uint64_t *bitmap, GError **error);
} VmsnapVmOps;

typedef struct VmsnapVm {
    uint32_t struct_size; /* sizeof(VmsnapVm) */
    uint8_t uuid[16];     /* the VM's UUID */
    unsigned n_blocks;
    const VmsnapRamBlock *blocks;
    unsigned n_devices;
    const VmsnapDevice *devices; /* saved in this order, loaded in this order */
    GBytes *config;              /* CONFIG section payload (fields), written by the VMM */
    uint32_t config_version;
    const VmsnapVmOps *ops; /* NULL: stopped saves only */
    bool running;           /* the VM runs now (live save/migration possible) */
} VmsnapVm;

G_END_DECLS
