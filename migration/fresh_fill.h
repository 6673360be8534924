/* Filling never-touched anonymous memory with userfaultfd's UFFDIO_COPY instead of
 * a page fault (allocate, zero) followed by memcpy.
 *
 * An incoming migration writes every data page of its first pass into memory that
 * was discarded just before: each memcpy faults a fresh 4 KiB page in and the kernel
 * zeroes it before the copy overwrites it. UFFDIO_COPY allocates the page and copies
 * into it in one step, a run of pages per call: 100 MiB here, 4 MiB at a time, in
 * 29-30 ms instead of 58-63 ms (MADV_POPULATE_WRITE then memcpy: 45-47 ms).
 *
 * While the fill is open its blocks are registered for missing-page faults. A page
 * the fill has not written and something else touches (a QMP pmemsave during the
 * migration, say) is resolved by a helper thread with the zero page it would have
 * read anyway; a later copy to it finds the page present and falls back to memcpy. */
#pragma once

#include <gio/gio.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmsnap/vm.h"

typedef struct FreshFill FreshFill;

/* Registers the blocks (page-aligned anonymous or shared memory). NULL with `why`
 * set when userfaultfd is unavailable (not permitted, an old kernel, a mapping it
 * does not take): the caller then writes with memcpy as before. */
FreshFill *fresh_fill_new(const VmsnapRamBlock *blocks, unsigned n_blocks, GError **why);

/* Copies `len` bytes (whole pages) from `src` to `dst` inside a registered block.
 * Pages already present (written before, or faulted in by a stray access) are copied
 * with memcpy. Thread-safe: channels fill disjoint pages at once. */
bool fresh_fill_copy(FreshFill *f, uint8_t *dst, const uint8_t *src, size_t len, GError **error);

/* Pages written by UFFDIO_COPY, by the memcpy fallback, and stray faults resolved. */
void fresh_fill_stats(const FreshFill *f, uint64_t *copied, uint64_t *present, uint64_t *stray);

/* Unregisters the blocks (untouched pages read as zero again, as before) and stops
 * the helper thread. NULL is ignored. */
void fresh_fill_free(FreshFill *f);
