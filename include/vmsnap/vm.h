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

typedef struct VmsnapVm {
    uint32_t struct_size;          /* sizeof(VmsnapVm) */
    uint8_t uuid[16];              /* the VM's UUID */
    unsigned n_blocks;
    const VmsnapRamBlock *blocks;
    unsigned n_devices;
    const VmsnapDevice *devices;   /* saved in this order, loaded in this order */
    GBytes *config;                /* CONFIG section payload (fields), written by the VMM */
    uint32_t config_version;
} VmsnapVm;

G_END_DECLS
