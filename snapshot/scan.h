/*
 * The parallel page scanner shared by every save path (mapped files, streams, live
 * or stopped): threads take chunks of pages, find the zero pages among the selected
 * ones, and hand each chunk to a sink that writes it its own way.
 */
#pragma once

#include <gio/gio.h>
#include <stdbool.h>
#include <stdint.h>
#include <vmsnap/snapshot.h>

#define SCAN_CHUNK_PAGES 1024u /* a multiple of 64: chunks own whole bitmap words */

typedef struct ScanChunk {
    unsigned block;
    uint64_t first;                       /* page index in the block */
    uint64_t count;                       /* pages, at most SCAN_CHUNK_PAGES */
    uint64_t sel[SCAN_CHUNK_PAGES / 64];  /* pages to send, bit i = page first+i */
    uint64_t zero[SCAN_CHUNK_PAGES / 64]; /* of those, the zero pages */
    uint64_t nsel;
} ScanChunk;

typedef struct ScanSinkOps {
    /* Per worker thread: returns the worker's state, or NULL with an error. */
    void *(*worker_new)(void *sink, unsigned index, GError **error);
    /* Writes one chunk; returns false with an error. *bytes = bytes put on the wire or
     * disk (for the rate limit and statistics). */
    bool (*chunk)(void *worker, const ScanChunk *c, uint64_t *bytes, GError **error);
    /* Completes the worker's outstanding I/O; false with an error. */
    bool (*worker_finish)(void *worker, GError **error);
    void (*worker_free)(void *worker);
} ScanSinkOps;

/* Re-arms dirty tracking for the selected pages of a chunk (VmsnapVmOps.dirty_rearm). */
typedef bool (*ScanRearmFn)(void *opaque, unsigned block, uint64_t first, uint64_t count,
                            const uint64_t *sel, GError **error);

typedef struct ScanJob {
    const VmsnapRamBlock *blocks;
    unsigned n_blocks;
    uint64_t *const *select; /* per block, NULL = every page */
    unsigned threads;
    const ScanSinkOps *ops;
    void *sink;
    VmsnapProgress *progress; /* scanned/normal/zero pages (written by the sink) */
    const int *cancel;
    uint64_t max_bandwidth; /* bytes/s over all threads, 0 = unlimited */
    unsigned delay_us;      /* test hook: pause per chunk */
    /* Run worker 0 on the calling thread. For a final pass (VM paused): starting and
     * joining a thread cost more than a pass of a few dozen pages (0.3-0.6 ms against
     * 0.05-0.15 ms on a 2-CPU VM host, all of it downtime). Not for live passes: a
     * fresh thread per pass is placed on the least busy CPU, while the long-lived
     * caller may stay beside the busy vCPU (1 GiB full-speed guest: passes at 0.8
     * GB/s instead of 1.5, and no convergence). */
    bool first_here;
    /* Live passes: called with each chunk's selection before any of its pages is read
     * (zero test included), so that what is read is at least as new as the re-arm. */
    ScanRearmFn rearm;
    void *rearm_opaque;
} ScanJob;

/* Runs the job to the end or the first error (which stops every thread). */
bool scan_run(ScanJob *job, GError **error);

/* True when the page is all zero; stops at the first non-zero 64-byte line. */
bool scan_page_is_zero(const uint8_t *p, size_t len);
