#include "scan.h"

#include <string.h>

typedef struct Chunk {
    unsigned block;
    uint64_t first;
    uint64_t count;
} Chunk;

typedef struct Shared {
    ScanJob *job;
    Chunk *chunks;
    unsigned n_chunks;
    gint next;
    gint failed;
    GMutex lock;
    GError *error;
    uint64_t start_us;
    uint64_t bytes; /* atomic: for the rate limit */
} Shared;

typedef struct Worker {
    Shared *sh;
    unsigned index;
} Worker;

bool scan_page_is_zero(const uint8_t *p, size_t len)
{
    const uint64_t *w = (const uint64_t *)p;
    for (size_t i = 0; i < len / 8; i += 8) {
        uint64_t acc =
            w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
        if (acc)
            return false;
    }
    return true;
}

/* Keeps the first error of any thread; takes *err and clears it. */
static void fail(Shared *sh, GError **err)
{
    g_mutex_lock(&sh->lock);
    if (!sh->error)
        sh->error = g_steal_pointer(err);
    else
        g_clear_error(err);
    g_mutex_unlock(&sh->lock);
    g_atomic_int_set(&sh->failed, 1);
}

static bool cancelled(const ScanJob *job)
{
    return job->cancel && __atomic_load_n(job->cancel, __ATOMIC_RELAXED);
}

/* Sleeps so that the bytes sent by all threads stay under max_bandwidth. */
static void rate_limit(Shared *sh, uint64_t bytes)
{
    uint64_t max = sh->job->max_bandwidth;
    uint64_t total = __atomic_add_fetch(&sh->bytes, bytes, __ATOMIC_RELAXED);
    if (!max)
        return;
    uint64_t due_us = total * 1000000 / max;
    uint64_t now_us = (uint64_t)g_get_monotonic_time() - sh->start_us;
    if (due_us > now_us && !cancelled(sh->job))
        g_usleep(MIN(due_us - now_us, 1000000));
}

/* Selects the chunk's pages, has the VMM re-arm tracking for them, then tests them
 * for zero: the re-arm comes before the first read. */
static bool fill_chunk(const ScanJob *job, const Chunk *c, ScanChunk *out, GError **error)
{
    const VmsnapRamBlock *b = &job->blocks[c->block];
    const uint64_t *sel = job->select ? job->select[c->block] : NULL;
    out->block = c->block;
    out->first = c->first;
    out->count = c->count;
    out->nsel = 0;
    memset(out->zero, 0, sizeof(out->zero));
    for (uint64_t w = 0; w < (c->count + 63) / 64; w++) {
        uint64_t bits = sel ? sel[c->first / 64 + w] : ~0ull;
        if (c->count - w * 64 < 64)
            bits &= (1ull << (c->count - w * 64)) - 1;
        out->sel[w] = bits;
        out->nsel += (uint64_t)__builtin_popcountll(bits);
    }
    memset(out->sel + (c->count + 63) / 64, 0,
           sizeof(out->sel) - (c->count + 63) / 64 * sizeof(uint64_t));
    if (!out->nsel)
        return true;
    if (job->rearm && !job->rearm(job->rearm_opaque, c->block, c->first, c->count, out->sel, error))
        return false;
    for (uint64_t i = 0; i < c->count; i++) {
        if (!((out->sel[i / 64] >> (i % 64)) & 1))
            continue;
        if (scan_page_is_zero(b->host + (c->first + i) * b->page_size, b->page_size))
            out->zero[i / 64] |= 1ull << (i % 64);
    }
    return true;
}

static gpointer worker_main(gpointer data)
{
    Worker *w = data;
    Shared *sh = w->sh;
    ScanJob *job = sh->job;
    GError *err = NULL;
    ScanChunk *chunk = g_new(ScanChunk, 1);
    void *state = job->ops->worker_new(job->sink, w->index, &err);

    if (!state) {
        fail(sh, &err);
        g_free(chunk);
        return NULL;
    }
    while (!g_atomic_int_get(&sh->failed) && !cancelled(job)) {
        int i = g_atomic_int_add(&sh->next, 1);
        if (i >= (int)sh->n_chunks)
            break;
        if (job->delay_us)
            g_usleep(job->delay_us);
        uint64_t bytes = 0;
        if (!fill_chunk(job, &sh->chunks[i], chunk, &err) ||
            (chunk->nsel && !job->ops->chunk(state, chunk, &bytes, &err))) {
            fail(sh, &err);
            break;
        }
        if (job->progress)
            __atomic_fetch_add(&job->progress->scanned_pages, chunk->nsel, __ATOMIC_RELAXED);
        rate_limit(sh, bytes);
    }
    if (!job->ops->worker_finish(state, &err))
        fail(sh, &err);
    job->ops->worker_free(state);
    g_free(chunk);
    return NULL;
}

bool scan_run(ScanJob *job, GError **error)
{
    Shared sh = { .job = job, .start_us = (uint64_t)g_get_monotonic_time() };
    GArray *chunks = g_array_new(FALSE, FALSE, sizeof(Chunk));

    for (unsigned b = 0; b < job->n_blocks; b++) {
        uint64_t pages = job->blocks[b].size / job->blocks[b].page_size;
        const uint64_t *sel = job->select ? job->select[b] : NULL;
        for (uint64_t p = 0; p < pages; p += SCAN_CHUNK_PAGES) {
            Chunk c = { b, p, MIN((uint64_t)SCAN_CHUNK_PAGES, pages - p) };
            if (sel) {
                /* skip chunks with nothing selected without waking a thread */
                bool any = false;
                for (uint64_t w = p / 64; w < (p + c.count + 63) / 64 && !any; w++)
                    any = sel[w] != 0;
                if (!any)
                    continue;
            }
            g_array_append_val(chunks, c);
        }
    }
    sh.chunks = (Chunk *)chunks->data;
    sh.n_chunks = chunks->len;
    g_mutex_init(&sh.lock);

    unsigned n = MAX(1u, job->threads);
    Worker *workers = g_new0(Worker, n);
    GThread **threads = g_new0(GThread *, n);
    unsigned first = job->first_here ? 1 : 0;
    for (unsigned i = 0; i < n; i++)
        workers[i] = (Worker){ &sh, i };
    for (unsigned i = first; i < n; i++)
        threads[i] = g_thread_new("vmsnap-pages", worker_main, &workers[i]);
    if (first)
        worker_main(&workers[0]);
    for (unsigned i = first; i < n; i++)
        g_thread_join(threads[i]);
    g_free(threads);
    g_free(workers);
    g_array_free(chunks, TRUE);
    g_mutex_clear(&sh.lock);

    if (sh.error) {
        g_propagate_error(error, sh.error);
        return false;
    }
    if (cancelled(job)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "cancelled");
        return false;
    }
    return true;
}
