/*
 * The save driver shared by every sink: a stopped save is one final pass; a live
 * save or migration iterates passes over the dirty pages while the VM runs, until
 * what is left fits the downtime limit at the measured bandwidth, then pauses the
 * VM, sends the rest and the device state.
 */
#pragma once

#include "sink.h"

typedef struct PrecopyParams {
    bool live;                   /* iterate while the VM runs (needs vm->ops) */
    uint64_t downtime_limit_ms;  /* converged when the rest takes at most this long */
    bool auto_converge;          /* throttle the vCPUs when the guest dirties too fast */
    unsigned throttle_initial;   /* percent, QEMU's cpu-throttle-initial */
    unsigned throttle_increment; /* percent, cpu-throttle-increment */
    unsigned throttle_max;       /* percent, max-cpu-throttle */
    unsigned max_passes;         /* stop iterating after this many (0: no limit) */
    /* Called after every pass (MIGRATION_PASS), from the engine's thread. */
    void (*pass_done)(void *opaque, uint32_t pass);
    /* pause-before-switchover: called with the VM paused, before the final pass;
     * blocks until the migration may continue; false with an error cancels. */
    bool (*before_switchover)(void *opaque, GError **error);
    void *opaque;
} PrecopyParams;

/* Live figures; every field is read and written atomically. */
typedef struct PrecopyState {
    uint32_t pass;             /* dirty-sync-count */
    uint64_t bandwidth;        /* bytes/s, measured */
    uint64_t dirty_pages_rate; /* pages/s */
    uint64_t remaining_pages;  /* dirty after the last pass */
    uint64_t expected_downtime_ms;
    uint32_t throttle;    /* cpu-throttle-percentage */
    uint64_t paused_us;   /* monotonic time of the pause we caused, 0 if none */
    uint64_t downtime_us; /* paused_us to the end */
    uint32_t phase;       /* PrecopyPhase */
} PrecopyState;

typedef enum {
    PRECOPY_SETUP,
    PRECOPY_ACTIVE,
    PRECOPY_PRE_SWITCHOVER,
    PRECOPY_DEVICE, /* final pass and device state, VM paused */
    PRECOPY_DONE,
} PrecopyPhase;

/* Runs the whole save into `sink` (begin .. finish). On failure the sink is aborted,
 * throttling and dirty tracking are stopped; the caller resumes the VM. */
bool precopy_run(SaveSink *sink, const PrecopyParams *p, PrecopyState *st, GError **error);
