#include "precopy.h"

#include <inttypes.h>
#include <stddef.h>
#include <string.h>

static uint64_t now_us(void)
{
    return (uint64_t)g_get_monotonic_time();
}

static void set32(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static void set64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

bool device_payload_save(const VmsnapDevice *d, DevicePayload *out, GError **error)
{
    memset(out, 0, sizeof(*out));
    g_strlcpy(out->name, d->name, sizeof(out->name));
    out->instance = d->instance;
    out->version = d->version;
    VmsnapFieldWriter *w = vmsnap_fw_new();
    if (!d->save(d->opaque, w, error)) {
        vmsnap_fw_free(w);
        g_prefix_error(error, "saving device '%s' instance %u: ", d->name, d->instance);
        return false;
    }
    out->fields = vmsnap_fw_finish(w, error);
    if (!out->fields) {
        g_prefix_error(error, "saving device '%s' instance %u: ", d->name, d->instance);
        return false;
    }
    return true;
}

void device_payloads_free(DevicePayload *p, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (p[i].fields)
            g_bytes_unref(p[i].fields);
    g_free(p);
}

typedef struct Dirty {
    unsigned n;
    uint64_t **maps;
    size_t *words;
} Dirty;

static void dirty_clear(Dirty *d)
{
    for (unsigned i = 0; i < d->n; i++)
        memset(d->maps[i], 0, d->words[i] * sizeof(uint64_t));
}

/* ORs the pages dirtied since the last fetch into d; returns how many are set. */
static bool dirty_fetch(const VmsnapVm *vm, Dirty *d, uint64_t *count, GError **error)
{
    uint64_t n = 0;
    for (unsigned b = 0; b < d->n; b++) {
        if (!vm->ops->dirty_fetch(vm->ops->opaque, b, d->maps[b], error))
            return false;
        for (size_t w = 0; w < d->words[b]; w++)
            n += (uint64_t)__builtin_popcountll(d->maps[b][w]);
    }
    *count = n;
    return true;
}

static bool cancelled(const SaveSink *s)
{
    return s->cancel && __atomic_load_n(s->cancel, __ATOMIC_RELAXED);
}

/* QEMU's auto-converge rule: when the guest dirtied more than half of what a pass
 * sent, twice in a row, raise the throttle (initial, then by increment, up to max). */
static void converge_step(const VmsnapVm *vm, const PrecopyParams *p, PrecopyState *st,
                          uint64_t dirty_bytes, uint64_t sent_bytes, unsigned *strikes)
{
    if (!p->auto_converge || !vm->ops->throttle)
        return;
    if (dirty_bytes * 2 <= sent_bytes) {
        *strikes = 0;
        return;
    }
    if (++*strikes < 2)
        return;
    *strikes = 0;
    uint32_t t = __atomic_load_n(&st->throttle, __ATOMIC_RELAXED);
    t = t ? t + p->throttle_increment : p->throttle_initial;
    t = MIN(t, p->throttle_max);
    set32(&st->throttle, t);
    vm->ops->throttle(vm->ops->opaque, t);
}

/* Whether to pause now, after a pass that left `after` of the `before` pages it
 * started with dirty, `expected` ms to send at the measured rate.
 * - While each pass leaves at most two thirds of the set it sent, the passes still to
 *   come cost at most twice this one's rest: keep going until the rest takes 1 ms (a
 *   paced guest paused 4-6 ms after one live pass, ~1 ms after a few more). That
 *   ratio is the guest's dirty rate over the link's: the full-speed guest/dirty
 *   leaves about half (0.34-0.53 at 150 MiB), so a rule at exactly half paused it
 *   6-8 ms when a pass left 0.49 and 15-17 ms when it left 0.53 (3 of 5 runs).
 * - While passes still shrink the set, wait for a third of the limit: the switchover
 *   lands anywhere below the threshold a shrinking sequence first crosses, and one
 *   more pass costs less than the downtime it saves. A 1 GiB guest dirtying at full
 *   speed with a 300 ms limit paused 337 ms (median; up to 679) at the whole limit,
 *   144-197 ms at 3/4 of it, 44-66 ms at half; with the per-chunk re-arm and AVX2
 *   checksums its passes got faster and half the limit paused it 38-92 ms; a third,
 *   32-40 ms (4 GiB: 58 ms against 74), still well under QEMU's bytes.
 * - Once a pass no longer shrinks the set by a tenth, the whole limit.
 * - A disturbed pass says nothing of the next one: one more pass (unless the rest
 *   takes 1 ms). A pass is disturbed when it ran at under half the previous pass's
 *   rate, or grew the set right after a pass that shrank it: the host took the CPU
 *   from the sender, and may still be taking it. A 150 MiB guest whose third pass sent
 *   7471 pages in 97 ms (a pass normally sends 20 000 in 30-40) left 18 367 dirty and
 *   paused 48 ms for them at the whole limit; a 4 GiB guest whose sixth pass ran at
 *   1.1 GB/s (the fifth: 2.5) paused for its 35 565 pages at 0.36 GB/s: 411 ms.
 * - Never after the first pass (unless the rest takes 1 ms): its rate includes the
 *   destination's first touch of all RAM, and with the per-chunk re-arm it leaves
 *   only the pages written after they went out. A 150 MiB guest at full speed, 4
 *   runs each: one more pass paused it 3-35 ms instead of 7-69 (median 20 vs 40),
 *   for 213-332 MiB instead of 208-279. */
/* The pass left under nine tenths of the `before` pages it sent dirty. */
static bool shrank(uint64_t before, uint64_t after)
{
    return after * 10 < before * 9;
}

static bool switch_over_now(const PrecopyParams *p, uint32_t pass, uint64_t expected,
                            uint64_t before, uint64_t after, bool disturbed)
{
    if (after * 3 <= before * 2 && expected > 1)
        return false;
    if (pass == 1 || disturbed)
        return expected <= 1;
    uint64_t limit = p->downtime_limit_ms;
    return expected <= (shrank(before, after) ? limit / 3 : limit);
}

/* The VMM re-arms tracking per chunk, just before the pages are read (vm.h). */
static bool has_rearm(const VmsnapVmOps *ops)
{
    return ops->struct_size >= offsetof(VmsnapVmOps, dirty_rearm) + sizeof(ops->dirty_rearm) &&
           ops->dirty_rearm;
}

static bool live_passes(SaveSink *s, const PrecopyParams *p, PrecopyState *st, Dirty *d,
                        GError **error)
{
    const VmsnapVm *vm = s->vm;
    uint64_t count = 0, fetched_at = now_us();
    unsigned strikes = 0;
    bool last_shrank = false; /* shrank() held for the previous pass */
    uint64_t last_rate = 0;   /* bytes/s of the previous pass */

    /* Re-arming a chunk right before it is read, not the whole log at the fetch,
     * sends a page written between the two once, in this pass, instead of twice. */
    if (has_rearm(vm->ops)) {
        s->rearm = vm->ops->dirty_rearm;
        s->rearm_opaque = vm->ops->opaque;
    }

    if (!vm->ops->dirty_start(vm->ops->opaque, error))
        return false;
    /* The first fetch re-arms tracking (with dirty_rearm, the first pass does, chunk by
     * chunk); whatever it reports, the first pass sends every page. */
    if (!dirty_fetch(vm, d, &count, error))
        return false;
    count = 0;
    for (unsigned b = 0; b < d->n; b++) {
        uint64_t pages = vm->blocks[b].size / vm->blocks[b].page_size;
        memset(d->maps[b], 0xff, d->words[b] * sizeof(uint64_t));
        if (pages % 64)
            d->maps[b][d->words[b] - 1] = (1ull << (pages % 64)) - 1;
        count += pages;
    }
    set32(&st->phase, PRECOPY_ACTIVE);
    for (uint32_t pass = 1;; pass++) {
        uint64_t t0 = now_us();
        uint64_t sent0 = __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
        uint64_t before = count;
        if (!s->ops->pass(s, d->maps, pass, false, count, error))
            return false;
        uint64_t t1 = now_us();
        uint64_t sent = __atomic_load_n(&s->bytes, __ATOMIC_RELAXED) - sent0;
        uint64_t rate = t1 > t0 ? sent * 1000000 / (t1 - t0) : 0;
        bool slowed = rate && last_rate && rate * 2 < last_rate;
        if (rate) {
            uint64_t old = __atomic_load_n(&st->bandwidth, __ATOMIC_RELAXED);
            set64(&st->bandwidth, old ? (old + rate) / 2 : rate);
            last_rate = rate;
        }
        dirty_clear(d);
        if (!dirty_fetch(vm, d, &count, error))
            return false;
        uint64_t t2 = now_us();
        set64(&st->dirty_pages_rate, t2 > fetched_at ? count * 1000000 / (t2 - fetched_at) : 0);
        fetched_at = t2;
        uint64_t bw = __atomic_load_n(&st->bandwidth, __ATOMIC_RELAXED);
        uint64_t page = vm->blocks[0].page_size;
        uint64_t expected = bw ? count * page * 1000 / bw : UINT64_MAX;
        set64(&st->remaining_pages, count);
        set64(&st->expected_downtime_ms, expected);
        set32(&st->pass, pass);
        g_debug("precopy pass %u: %" PRIu64 " pages, %" PRIu64 " bytes in %" PRIu64 " us; %" PRIu64
                " dirty after (fetch %" PRIu64 " us), expected %" PRIu64 " ms",
                pass, before, sent, t1 - t0, count, t2 - t1, expected);
        if (p->pass_done)
            p->pass_done(p->opaque, pass);
        if (cancelled(s)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "migration cancelled");
            return false;
        }
        bool disturbed = slowed || (last_shrank && count > before);
        if (switch_over_now(p, pass, expected, before, count, disturbed) ||
            (p->max_passes && pass >= p->max_passes))
            return true;
        last_shrank = shrank(before, count);
        converge_step(vm, p, st, count * page, sent, &strikes);
    }
}

static bool save_devices(const VmsnapVm *vm, DevicePayload **out, GError **error)
{
    *out = g_new0(DevicePayload, vm->n_devices ? vm->n_devices : 1);
    for (unsigned i = 0; i < vm->n_devices; i++)
        if (!device_payload_save(&vm->devices[i], &(*out)[i], error))
            return false;
    return true;
}

bool precopy_run(SaveSink *s, const PrecopyParams *p, PrecopyState *st, GError **error)
{
    const VmsnapVm *vm = s->vm;
    const VmsnapVmOps *ops = vm->ops;
    bool running = vm->running;
    bool live = p->live && running && ops && ops->dirty_start && ops->dirty_fetch && ops->pause;
    bool tracking = false, ok = false;
    DevicePayload *devices = NULL;
    Dirty d = { 0 };

    set32(&st->phase, PRECOPY_SETUP);
    if (!s->ops->begin(s, error))
        goto out;
    if (live) {
        d.n = vm->n_blocks;
        d.maps = g_new0(uint64_t *, d.n);
        d.words = g_new0(size_t, d.n);
        for (unsigned b = 0; b < d.n; b++) {
            uint64_t pages = vm->blocks[b].size / vm->blocks[b].page_size;
            d.words[b] = (size_t)((pages + 63) / 64);
            d.maps[b] = g_new0(uint64_t, d.words[b]);
        }
        tracking = true;
        if (!live_passes(s, p, st, &d, error))
            goto out;
    }
    /* Paused, nothing is written any more: tracking ends with this pass. */
    s->rearm = NULL;
    if (running && ops && ops->pause) {
        set64(&st->paused_us, now_us());
        ops->pause(ops->opaque);
    }
    uint64_t parked_us = now_us();
    uint32_t final_pass = __atomic_load_n(&st->pass, __ATOMIC_RELAXED) + 1;
    uint64_t left = 0;
    if (live && !dirty_fetch(vm, &d, &left, error))
        goto out;
    uint64_t fetched_us = now_us();
    if (p->before_switchover) {
        set32(&st->phase, PRECOPY_PRE_SWITCHOVER);
        if (!p->before_switchover(p->opaque, error))
            goto out;
    }
    set32(&st->phase, PRECOPY_DEVICE);
    uint64_t t0 = now_us(), sent0 = __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
    if (!s->ops->pass(s, live ? d.maps : NULL, final_pass, true, left, error))
        goto out;
    uint64_t t1 = now_us();
    set32(&st->pass, final_pass);
    set64(&st->remaining_pages, 0);
    if (!save_devices(vm, &devices, error) ||
        !s->ops->finish(s, devices, vm->n_devices, running, error))
        goto out;
    g_debug("precopy final pass %u: %" PRIu64 " pages, %" PRIu64 " bytes in %" PRIu64
            " us (pause %" PRIu64 " us, fetch %" PRIu64 " us); devices and end %" PRIu64 " us",
            final_pass, left, __atomic_load_n(&s->bytes, __ATOMIC_RELAXED) - sent0, t1 - t0,
            st->paused_us ? parked_us - st->paused_us : 0, fetched_us - parked_us, now_us() - t1);
    /* VMSNAP_TRACE_DOWNTIME=1: monotonic timestamps, to line up with the destination's */
    if (g_getenv("VMSNAP_TRACE_DOWNTIME"))
        g_debug("downtime trace: pause %" PRIu64 " parked %" PRIu64 " fetched %" PRIu64
                " pass-start %" PRIu64 " pass-end %" PRIu64 " end %" PRIu64,
                st->paused_us, parked_us, fetched_us, t0, t1, now_us());
    set32(&st->phase, PRECOPY_DONE);
    ok = true;
out:
    if (__atomic_load_n(&st->paused_us, __ATOMIC_RELAXED))
        set64(&st->downtime_us, now_us() - st->paused_us);
    if (tracking) {
        if (ops->throttle && __atomic_load_n(&st->throttle, __ATOMIC_RELAXED))
            ops->throttle(ops->opaque, 0);
        if (ops->dirty_stop)
            ops->dirty_stop(ops->opaque);
    }
    if (!ok)
        s->ops->abort(s);
    if (devices)
        device_payloads_free(devices, vm->n_devices);
    for (unsigned b = 0; b < d.n; b++)
        g_free(d.maps[b]);
    g_free(d.maps);
    g_free(d.words);
    return ok;
}
