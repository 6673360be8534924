/*
 * A save in progress (internal). begin -> write_pages (once for a stopped save,
 * once per pass for a live save) -> finish, or abort at any point.
 */
#pragma once

#include "format.h"
#include "target.h"

#include <vmsnap/snapshot.h>

typedef struct SaveBlock {
    const VmsnapRamBlock *ram;
    FormatBlock fmt;       /* name, gpa, size, page_size, pages_offset */
    uint64_t pages;
    uint64_t *present;     /* bitmap, host-endian words */
    uint64_t *checksums;   /* one per page, 0 when absent */
} SaveBlock;

typedef struct SaveSession {
    const VmsnapVm *vm;
    VmsnapSaveOptions opt;
    VmsnapProgress own_progress;
    VmsnapProgress *progress;
    SaveTarget target;
    unsigned n_blocks;
    SaveBlock *blocks;
    uint64_t metadata_offset;
    FormatHeader header;
    unsigned threads;
    uint64_t start_ns;
    VmsnapSaveStats stats;
} SaveSession;

/* Checks the VM description, opens nothing. */
bool save_session_init(SaveSession *s, const VmsnapVm *vm, const VmsnapSaveOptions *opt,
                       GError **error);

/* Plans the layout on an opened target, writes the partial header and makes the
 * page areas holes. */
bool save_session_begin(SaveSession *s, GError **error);

/* Scans and writes pages in parallel. `select` (per block, bitmaps of pages to
 * consider) may be NULL for every page. Pages that are zero now but were written
 * before become holes again. */
bool save_session_write_pages(SaveSession *s, uint64_t *const *select, GError **error);

/* Saves device state, writes the metadata, syncs, writes the complete header,
 * syncs, commits (rename). */
bool save_session_finish(SaveSession *s, GError **error);

/* Removes a partial PATH.partial; safe after any failure. */
void save_session_abort(SaveSession *s);

void save_session_free(SaveSession *s);

/* Monotonic clock in ns. */
uint64_t save_now_ns(void);
