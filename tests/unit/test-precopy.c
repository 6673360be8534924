/* The precopy driver (snapshot/precopy.c) with a scripted VM and a sink that only
 * counts: when it switches over. */
#include <stddef.h>
#include <string.h>

#include "precopy.h"

#define PAGES       10000u
#define US_PER_PAGE 10 /* the fake sink "sends" at 4096 B / 10 us = ~410 MB/s */

typedef struct Script {
    /* pages dirty at fetch k (k = 1: after pass 1), 0-terminated; later fetches report
     * 100 pages, so a driver that misjudges ends with wrong counts instead of hanging */
    const uint64_t *dirty;
    unsigned n_dirty;
    unsigned slow_pass; /* this pass (1-based) sends 4 times slower; 0: none */
    unsigned fetches;
    unsigned passes; /* pass() calls, the final one included */
    bool paused;
    uint64_t final_pages; /* selected pages of the final pass */
    unsigned live_rearm;  /* live passes that had the VMM's re-arm hook */
    bool final_rearm;     /* the final pass had it */
} Script;

static bool fake_dirty_start(void *opaque, GError **error)
{
    (void)opaque;
    (void)error;
    return true;
}

static bool fake_dirty_fetch(void *opaque, unsigned block, uint64_t *bitmap, GError **error)
{
    (void)block;
    (void)error;
    Script *sc = opaque;
    unsigned k = sc->fetches++; /* fetch 0 re-arms tracking before pass 1 */
    if (k == 0 || sc->paused)
        return true;
    uint64_t n = k <= sc->n_dirty ? sc->dirty[k - 1] : 100;
    for (uint64_t p = 0; p < n; p++)
        bitmap[p / 64] |= 1ull << (p % 64);
    return true;
}

static void fake_pause(void *opaque)
{
    ((Script *)opaque)->paused = true;
}

static bool sink_begin(SaveSink *s, GError **error)
{
    (void)s;
    (void)error;
    return true;
}

static bool sink_pass(SaveSink *s, uint64_t *const *select, uint32_t pass, bool final,
                      uint64_t dirty_left, GError **error)
{
    (void)pass;
    (void)dirty_left;
    (void)error;
    Script *sc = (Script *)s->vm->ops->opaque;
    uint64_t n = 0;
    for (unsigned w = 0; w < (PAGES + 63) / 64; w++)
        n += (uint64_t)__builtin_popcountll(select[0][w]);
    sc->passes++;
    if (final) {
        sc->final_pages = n;
        sc->final_rearm = s->rearm != NULL;
    } else if (s->rearm) {
        g_assert_true(s->rearm == s->vm->ops->dirty_rearm);
        g_assert_true(s->rearm_opaque == sc);
        sc->live_rearm++;
    }
    g_usleep(n * US_PER_PAGE * (sc->passes == sc->slow_pass ? 4 : 1));
    __atomic_fetch_add(&s->bytes, n * 4096, __ATOMIC_RELAXED);
    return true;
}

static bool sink_finish(SaveSink *s, const DevicePayload *devices, unsigned n_devices,
                        bool source_running, GError **error)
{
    (void)s;
    (void)devices;
    (void)n_devices;
    (void)source_running;
    (void)error;
    return true;
}

static void sink_abort(SaveSink *s)
{
    (void)s;
}

static void sink_free(SaveSink *s)
{
    (void)s;
}

static const SaveSinkOps sink_ops = { sink_begin, sink_pass, sink_finish, sink_abort, sink_free };

static bool fake_dirty_rearm(void *opaque, unsigned block, uint64_t first, uint64_t count,
                             const uint64_t *bitmap, GError **error)
{
    (void)opaque;
    (void)block;
    (void)first;
    (void)count;
    (void)bitmap;
    (void)error;
    return true;
}

/* Runs a live save of a 1-block VM whose fetches report `dirty`; `ops_size` is the
 * VMM's sizeof(VmsnapVmOps) (0: this one's). Returns the script. */
static Script run_ops(const uint64_t *dirty, uint64_t limit_ms, uint32_t ops_size,
                      unsigned slow_pass)
{
    static uint8_t host[1]; /* never read by the fake sink */
    Script sc = { .dirty = dirty, .slow_pass = slow_pass };
    while (dirty[sc.n_dirty])
        sc.n_dirty++;
    VmsnapVmOps ops = {
        .struct_size = ops_size ? ops_size : sizeof(ops),
        .dirty_start = fake_dirty_start,
        .dirty_fetch = fake_dirty_fetch,
        .pause = fake_pause,
        .opaque = &sc,
        .dirty_rearm = fake_dirty_rearm,
    };
    VmsnapRamBlock block = { .name = "ram",
                             .size = (uint64_t)PAGES * 4096,
                             .page_size = 4096,
                             .host = host,
                             .backing_fd = -1 };
    VmsnapVm vm = {
        .struct_size = sizeof(vm), .n_blocks = 1, .blocks = &block, .ops = &ops, .running = true
    };
    VmsnapProgress progress = { 0 };
    SaveSink sink = { .ops = &sink_ops, .vm = &vm, .progress = &progress, .threads = 1 };
    PrecopyParams p = { .live = true, .downtime_limit_ms = limit_ms };
    PrecopyState st = { 0 };
    g_autoptr(GError) error = NULL;
    g_assert_true(precopy_run(&sink, &p, &st, &error));
    g_assert_no_error(error);
    g_assert_true(sc.paused);
    g_assert_cmpuint(st.pass, ==, sc.passes);
    return sc;
}

static Script run(const uint64_t *dirty, uint64_t limit_ms)
{
    return run_ops(dirty, limit_ms, 0, 0);
}

/* The VMM's per-chunk re-arm goes to the sink for every live pass, never for the
 * final one (the VM is paused, tracking ends with it). */
static void test_rearm_live_passes_only(void)
{
    static const uint64_t dirty[] = { 4000, 1500, 400, 50, 0 };
    Script sc = run(dirty, 100);
    g_assert_cmpuint(sc.live_rearm, ==, sc.passes - 1);
    g_assert_false(sc.final_rearm);
}

/* A VMM built against the older, shorter VmsnapVmOps has no dirty_rearm: its fetch
 * re-arms, and the sink gets no hook (the member past its struct_size is not read). */
static void test_rearm_old_ops(void)
{
    static const uint64_t dirty[] = { 50, 0 };
    Script sc = run_ops(dirty, 100, (uint32_t)offsetof(VmsnapVmOps, dirty_rearm), 0);
    g_assert_cmpuint(sc.live_rearm, ==, 0);
    g_assert_false(sc.final_rearm);
}

/* A pass that still shrinks the dirty set, but to more than two thirds, waits for a
 * third of the limit. After the first pass comes a second; its 6500 pages (65 ms or
 * more at the measured rate: sleeps only overshoot) fit half of 150 ms but not a
 * third, so one more pass runs; that one shrinks the set by less than a tenth, so the
 * whole limit applies and its 6400 pages are taken. */
static void test_margin_while_shrinking(void)
{
    static const uint64_t dirty[] = { 9000, 6500, 6400, 0 };
    Script sc = run(dirty, 150);
    g_assert_cmpuint(sc.passes, ==, 4); /* 3 live passes, then the final one */
    g_assert_cmpuint(sc.final_pages, ==, 6400);
}

/* The first pass is never the last live one: 8000 pages (80 ms) fit the 100 ms limit,
 * yet a second pass runs; it shrinks the set by less than a tenth, so its 7900 pages
 * are measured against the whole limit and taken. */
static void test_first_pass_not_last(void)
{
    static const uint64_t dirty[] = { 8000, 7900, 0 };
    Script sc = run(dirty, 100);
    g_assert_cmpuint(sc.passes, ==, 3);
    g_assert_cmpuint(sc.final_pages, ==, 7900);
}

/* ... unless what it leaves takes a millisecond or less: then the pause comes at once. */
static void test_first_pass_tiny_rest(void)
{
    static const uint64_t dirty[] = { 60, 0 };
    Script sc = run(dirty, 100);
    g_assert_cmpuint(sc.passes, ==, 2);
    g_assert_cmpuint(sc.final_pages, ==, 60);
}

/* While passes halve the set, more passes run until the rest takes about 1 ms, even
 * though 4000 pages (40 ms) already fit the limit. */
static void test_halving_keeps_going(void)
{
    static const uint64_t dirty[] = { 4000, 1500, 400, 50, 0 };
    Script sc = run(dirty, 100);
    g_assert_cmpuint(sc.passes, ==, 5);
    g_assert_cmpuint(sc.final_pages, ==, 50);
}

/* A guest dirtying at 0.6 of the link: each pass leaves 0.6 of what it sent, and
 * passes go on to the 1 ms rest although 2400 pages (24 ms) fit a third of the limit
 * (a rule at exactly half pauses there). */
static void test_two_thirds_keeps_going(void)
{
    static const uint64_t dirty[] = { 4000, 2400, 1440, 864, 50, 0 };
    Script sc = run(dirty, 100);
    g_assert_cmpuint(sc.passes, ==, 6);
    g_assert_cmpuint(sc.final_pages, ==, 50);
}

/* A pass that grows the set right after one that shrank it (a stalled sender) is not
 * taken at the whole limit, though its 3000 pages (30 ms) fit it: one more pass runs,
 * and the passes go on to the 1 ms rest. */
static void test_growth_after_shrink_keeps_going(void)
{
    static const uint64_t dirty[] = { 4000, 1500, 3000, 400, 50, 0 };
    Script sc = run(dirty, 100);
    g_assert_cmpuint(sc.passes, ==, 6);
    g_assert_cmpuint(sc.final_pages, ==, 50);
}

/* A pass at a quarter of the previous one's rate is not taken at its word: its 1800
 * pages (18 ms at full rate) fit the limit and it did not shrink the set by a tenth,
 * yet one more pass runs, which leaves 30. */
static void test_slow_pass_keeps_going(void)
{
    static const uint64_t dirty[] = { 4000, 2000, 1800, 30, 0 };
    Script sc = run_ops(dirty, 100, 0, 3);
    g_assert_cmpuint(sc.passes, ==, 5);
    g_assert_cmpuint(sc.final_pages, ==, 30);
}

/* A guest that re-dirties everything never fits: the driver keeps iterating (here
 * until the script lets the set fall). */
static void test_no_fit_keeps_going(void)
{
    static const uint64_t dirty[] = { PAGES, PAGES, PAGES, 2000, 30, 0 };
    Script sc = run(dirty, 50);
    g_assert_cmpuint(sc.passes, ==, 6);
    g_assert_cmpuint(sc.final_pages, ==, 30);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/precopy/switchover/margin-while-shrinking", test_margin_while_shrinking);
    g_test_add_func("/precopy/switchover/first-pass-not-last", test_first_pass_not_last);
    g_test_add_func("/precopy/switchover/first-pass-tiny-rest", test_first_pass_tiny_rest);
    g_test_add_func("/precopy/switchover/halving-keeps-going", test_halving_keeps_going);
    g_test_add_func("/precopy/switchover/two-thirds-keeps-going", test_two_thirds_keeps_going);
    g_test_add_func("/precopy/switchover/growth-after-shrink-keeps-going",
                    test_growth_after_shrink_keeps_going);
    g_test_add_func("/precopy/switchover/slow-pass-keeps-going", test_slow_pass_keeps_going);
    g_test_add_func("/precopy/switchover/no-fit-keeps-going", test_no_fit_keeps_going);
    g_test_add_func("/precopy/rearm/live-passes-only", test_rearm_live_passes_only);
    g_test_add_func("/precopy/rearm/old-ops", test_rearm_old_ops);
    return g_test_run();
}
