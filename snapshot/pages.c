/* Parallel page scanning and writing: each thread takes chunks of pages, skips
 * zero pages (holes), checksums the rest and writes runs of contiguous non-zero
 * pages with libaio straight from guest memory. */
#include "aio_queue.h"
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <xxhash.h>

#define CHUNK_PAGES   1024u        /* 4 MiB of 4 KiB pages; a multiple of 64 */
#define MAX_IO_BYTES  (1u << 20)   /* one write covers at most 1 MiB */
#define QUEUE_DEPTH   16u

typedef struct Chunk {
    unsigned block;
    uint64_t first;
    uint64_t count;
} Chunk;

typedef struct PageJob {
    SaveSession *s;
    unsigned delay_us;       /* test-only: VMSNAP_FAULT_SAVE_DELAY_US, a pause per chunk */
    uint64_t *const *select;
    Chunk *chunks;
    unsigned n_chunks;
    gint next;               /* atomic: next chunk to take */
    GMutex lock;
    GError *error;           /* first error of any thread */
    gint failed;             /* atomic: stop early */
} PageJob;

typedef struct Worker {
    PageJob *job;
    AioQueue q;
    uint64_t normal, zero;
} Worker;

/* True when the page is all zero. Stops at the first non-zero 64-byte line, so
 * a non-zero page is usually decided from its first bytes and then read once by
 * the checksum. */
static bool page_is_zero(const uint8_t *p, size_t len)
{
    const uint64_t *w = (const uint64_t *)p;
    for (size_t i = 0; i < len / 8; i += 8) {
        uint64_t acc = w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
                       w[i + 7];
        if (acc)
            return false;
    }
    return true;
}

static void write_done(void *opaque, void *cookie, void *buf, size_t len, uint64_t offset)
{
    Worker *w = opaque;
    __atomic_fetch_add(&w->job->s->progress->written_bytes, len, __ATOMIC_RELAXED);
}

static void job_fail(PageJob *job, GError *err)
{
    g_mutex_lock(&job->lock);
    if (!job->error)
        job->error = err;
    else
        g_error_free(err);
    g_mutex_unlock(&job->lock);
    g_atomic_int_set(&job->failed, 1);
}

static bool flush_run(Worker *w, SaveBlock *b, uint64_t first, uint64_t count)
{
    if (!count)
        return true;
    size_t ps = b->fmt.page_size;
    return aio_queue_submit(&w->q, b->ram->host + first * ps, count * ps,
                            b->fmt.pages_offset + first * ps, NULL);
}

/* A page that was written by an earlier pass and is zero now must read as zero. */
static bool make_hole(Worker *w, SaveBlock *b, uint64_t page)
{
    SaveSession *s = w->job->s;
    size_t ps = b->fmt.page_size;
    off_t off = (off_t)(b->fmt.pages_offset + page * ps);
    if (fallocate(s->target.page_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                  (off_t)ps) == 0)
        return true;
    static const uint8_t zeros[65536] __attribute__((aligned(4096)));
    return aio_queue_submit(&w->q, (void *)zeros, ps, (uint64_t)off, NULL);
}

static bool do_chunk(Worker *w, const Chunk *c)
{
    PageJob *job = w->job;
    SaveSession *s = job->s;
    SaveBlock *b = &s->blocks[c->block];
    const uint64_t *sel = job->select ? job->select[c->block] : NULL;
    size_t ps = b->fmt.page_size;
    uint64_t run_first = 0, run_len = 0;
    uint64_t max_run = MAX_IO_BYTES / ps;
    bool checksums = !s->opt.no_checksums;

    for (uint64_t p = c->first; p < c->first + c->count; p++) {
        uint64_t bit = 1ull << (p % 64);
        if (sel && !(sel[p / 64] & bit)) {
            if (!flush_run(w, b, run_first, run_len))
                return false;
            run_len = 0;
            continue;
        }
        const uint8_t *host = b->ram->host + p * ps;
        if (page_is_zero(host, ps)) {
            if (!flush_run(w, b, run_first, run_len))
                return false;
            run_len = 0;
            if (b->present[p / 64] & bit) {
                if (!make_hole(w, b, p))
                    return false;
                b->present[p / 64] &= ~bit;
            }
            b->checksums[p] = 0;
            w->zero++;
            continue;
        }
        b->checksums[p] = checksums ? XXH3_64bits(host, ps) : 0;
        b->present[p / 64] |= bit;
        w->normal++;
        if (run_len == max_run) {
            if (!flush_run(w, b, run_first, run_len))
                return false;
            run_len = 0;
        }
        if (run_len == 0)
            run_first = p;
        run_len++;
    }
    return flush_run(w, b, run_first, run_len);
}

static gpointer worker_main(gpointer opaque)
{
    Worker *w = opaque;
    PageJob *job = w->job;
    SaveSession *s = job->s;
    GError *err = NULL;

    if (!aio_queue_init(&w->q, s->target.page_fd, true, QUEUE_DEPTH, write_done, w, &err)) {
        job_fail(job, err);
        return NULL;
    }
    for (;;) {
        if (g_atomic_int_get(&job->failed) || (s->opt.cancel && *(volatile const int *)s->opt.cancel))
            break;
        int i = g_atomic_int_add(&job->next, 1);
        if (i >= (int)job->n_chunks)
            break;
        const Chunk *c = &job->chunks[i];
        if (job->delay_us)
            g_usleep(job->delay_us);
        bool ok = do_chunk(w, c);
        __atomic_fetch_add(&s->progress->scanned_pages, c->count, __ATOMIC_RELAXED);
        if (!ok)
            break;
    }
    if (!aio_queue_drain(&w->q)) {
        aio_queue_error(&w->q, s->target.what, &err);
        job_fail(job, err);
    }
    aio_queue_destroy(&w->q);
    __atomic_fetch_add(&s->progress->normal_pages, w->normal, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->progress->zero_pages, w->zero, __ATOMIC_RELAXED);
    return NULL;
}

bool save_session_write_pages(SaveSession *s, uint64_t *const *select, GError **error)
{
    PageJob job = { .s = s, .select = select };
    /* Test hook: slows the save so a test can kill the writer in the middle. */
    const char *delay = g_getenv("VMSNAP_FAULT_SAVE_DELAY_US");
    job.delay_us = delay ? (unsigned)g_ascii_strtoull(delay, NULL, 10) : 0;
    GArray *chunks = g_array_new(FALSE, FALSE, sizeof(Chunk));

    for (unsigned b = 0; b < s->n_blocks; b++)
        for (uint64_t p = 0; p < s->blocks[b].pages; p += CHUNK_PAGES) {
            Chunk c = { b, p, MIN((uint64_t)CHUNK_PAGES, s->blocks[b].pages - p) };
            g_array_append_val(chunks, c);
        }
    job.chunks = (Chunk *)chunks->data;
    job.n_chunks = chunks->len;
    g_mutex_init(&job.lock);

    unsigned n = MAX(1u, MIN(s->threads, job.n_chunks));
    Worker *workers = g_new0(Worker, n);
    GThread **threads = g_new0(GThread *, n);
    for (unsigned i = 0; i < n; i++) {
        workers[i].job = &job;
        threads[i] = g_thread_new("vmsnap-writer", worker_main, &workers[i]);
    }
    for (unsigned i = 0; i < n; i++)
        g_thread_join(threads[i]);
    g_free(threads);
    g_free(workers);
    g_array_free(chunks, TRUE);
    g_mutex_clear(&job.lock);

    if (job.error) {
        g_propagate_error(error, job.error);
        return false;
    }
    if (s->opt.cancel && *(volatile const int *)s->opt.cancel) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "%s: save cancelled", s->target.what);
        return false;
    }
    return true;
}
