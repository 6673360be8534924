/*
 * Test helper: builds small, valid snapshot files in memory with the format/
 * writer functions (header, page areas, metadata), and re-seals them after a
 * test edits their bytes. Used by test-format and the fuzz corpus generator.
 */
#pragma once

#include "format.h"

typedef struct {
    uint64_t base;   /* where the snapshot starts; bytes before are 0xEE */
    bool partial;    /* stop after step 2 of the commit protocol */
    uint64_t compat; /* feature bits to set */
    uint64_t incompat;
    uint32_t extra_type;  /* add one section of this type (0: none) ... */
    uint32_t extra_flags; /* ... with these flags */
    unsigned pages[2];    /* pages of the two blocks (0: 20 and 67) */
} SnapSpec;

typedef struct {
    GByteArray *file;
    FormatHeader h;
    unsigned n_blocks;
    FormatBlock blocks[2];
} Snap;

Snap *snap_build(const SnapSpec *spec);
void snap_free(Snap *s);

/* Directory index of the first section of this type and instance, or -1. */
int snap_find(const Snap *s, uint32_t type, uint32_t instance);
/* Absolute offset of directory entry i, and of its payload (size in *size). */
uint64_t snap_dir_entry(const Snap *s, unsigned i);
uint64_t snap_payload(const Snap *s, unsigned i, uint64_t *size);

/* Recomputes every payload checksum in the directory, the directory checksum and
 * the header checksum from the bytes as they are (the header fields are re-read
 * from the file, not from s->h). */
void snap_reseal(Snap *s);

/* A FormatReadFn over memory; opaque is a MemFile. */
typedef struct {
    const uint8_t *data;
    uint64_t size;
} MemFile;

bool snap_mem_read(void *opaque, uint64_t offset, void *buf, size_t len, GError **error);

/* Parses s->file (all of it) at s->h.base_offset. */
FormatSnapshot *snap_parse(const Snap *s, unsigned flags, GError **error);
