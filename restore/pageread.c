/*
 * Parallel page reading for copy restore and verification. Threads take chunks
 * of pages; runs of contiguous pages are read with libaio (O_DIRECT when the file
 * system allows it) either straight into guest memory (copy) or into bounce
 * buffers (verify), and every page is checked as its read completes.
 */
#include "aio_queue.h"
#include "snapfile.h"
#include "xxh.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK_PAGES  1024u
#define MAX_IO_BYTES (1u << 20)
#define QUEUE_DEPTH  16u

typedef struct Chunk {
    unsigned block; /* snapshot block index */
    uint64_t first;
    uint64_t count;
} Chunk;

typedef struct ReadJob {
    VmsnapSnapshot *s;
    int fd;
    bool verify;   /* false: copy into dst */
    uint8_t **dst; /* per snapshot block: guest memory (copy) */
    Chunk *chunks;
    unsigned n_chunks;
    gint next;
    gint failed;
    GMutex lock;
    GError *error;
    VmsnapBadPageFn bad;
    void *bad_opaque;
    uint64_t n_bad; /* atomic */
    VmsnapProgress *progress;
} ReadJob;

typedef struct Slot {
    unsigned block;
    uint64_t first;
    uint64_t count;
    uint8_t *buf; /* bounce buffer (verify) */
} Slot;

typedef struct Reader {
    ReadJob *job;
    AioQueue q;
    Slot slots[QUEUE_DEPTH];
    unsigned free_slots[QUEUE_DEPTH];
    unsigned n_free;
    uint8_t *bounce;
} Reader;

static void job_fail(ReadJob *job, GError *err)
{
    g_mutex_lock(&job->lock);
    if (!job->error)
        job->error = err;
    else
        g_error_free(err);
    g_mutex_unlock(&job->lock);
    g_atomic_int_set(&job->failed, 1);
}

static bool page_is_zero(const uint8_t *p, size_t len)
{
    const uint64_t *w = (const uint64_t *)p;
    uint64_t acc = 0;
    for (size_t i = 0; i < len / 8; i++)
        acc |= w[i];
    return acc == 0;
}

static void bad_page(Reader *r, const FormatBlock *b, uint64_t page, const char *reason)
{
    ReadJob *job = r->job;
    uint64_t off = b->pages_offset + page * b->page_size;
    if (job->verify) {
        __atomic_fetch_add(&job->n_bad, 1, __ATOMIC_RELAXED);
        g_mutex_lock(&job->lock);
        if (job->bad)
            job->bad(job->bad_opaque, b->name, page, off, reason);
        g_mutex_unlock(&job->lock);
        return;
    }
    GError *err = g_error_new(G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                              "%s: RAM block '%s' page 0x%" G_GINT64_MODIFIER "x at file offset "
                              "0x%" G_GINT64_MODIFIER "x: %s",
                              job->s->what, b->name, page, off, reason);
    job_fail(job, err);
}

static void check_pages(Reader *r, const Slot *slot, const uint8_t *data)
{
    const FormatSnapshot *f = r->job->s->fmt;
    const FormatBlock *b = &f->blocks[slot->block];
    const uint64_t *present = g_bytes_get_data(f->present[slot->block], NULL);
    const uint64_t *sums = g_bytes_get_data(f->checksums[slot->block], NULL);
    size_t ps = b->page_size;

    for (uint64_t i = 0; i < slot->count; i++) {
        uint64_t page = slot->first + i;
        const uint8_t *p = data + i * ps;
        if (format_bitmap_test(present, page)) {
            uint64_t want = GUINT64_FROM_LE(sums[page]);
            uint64_t got = vs_xxh3(p, ps);
            if (got != want) {
                char reason[96];
                g_snprintf(reason, sizeof(reason),
                           "checksum mismatch (stored 0x%016" G_GINT64_MODIFIER
                           "x, read 0x%016" G_GINT64_MODIFIER "x)",
                           want, got);
                bad_page(r, b, page, reason);
            }
        } else if (!page_is_zero(p, ps)) {
            bad_page(r, b, page, "page is absent from the bitmap but its bytes are not zero");
        }
    }
}

static void read_done(void *opaque, void *cookie, void *buf, size_t len, uint64_t offset)
{
    Reader *r = opaque;
    Slot *slot = cookie;
    check_pages(r, slot, buf);
    if (r->job->progress)
        __atomic_fetch_add(&r->job->progress->written_bytes, len, __ATOMIC_RELAXED);
    r->free_slots[r->n_free++] = (unsigned)(slot - r->slots);
}

static bool submit_run(Reader *r, unsigned block, uint64_t first, uint64_t count)
{
    if (!count)
        return true;
    ReadJob *job = r->job;
    const FormatBlock *b = &job->s->fmt->blocks[block];
    size_t ps = b->page_size;
    while (r->n_free == 0)
        aio_queue_wait_one(&r->q);
    Slot *slot = &r->slots[r->free_slots[--r->n_free]];
    slot->block = block;
    slot->first = first;
    slot->count = count;
    uint8_t *dest = job->verify ? slot->buf : job->dst[block] + first * ps;
    return aio_queue_submit(&r->q, dest, count * ps, b->pages_offset + first * ps, slot);
}

/* Verify: absent pages that lie in data extents of the file must be read too. */
static void data_ranges(const ReadJob *job, const FormatBlock *b, const Chunk *c, uint64_t *bm)
{
    size_t ps = b->page_size;
    off_t start = (off_t)(b->pages_offset + c->first * ps);
    off_t end = start + (off_t)(c->count * ps);
    off_t pos = start;
    while (pos < end) {
        off_t d = lseek(job->fd, pos, SEEK_DATA);
        if (d < 0 || d >= end)
            break;
        off_t h = lseek(job->fd, d, SEEK_HOLE);
        if (h < 0 || h > end)
            h = end;
        for (uint64_t p = (uint64_t)(d - start) / ps;
             p < (uint64_t)(h - start + (off_t)ps - 1) / ps; p++)
            bm[p / 64] |= 1ull << (p % 64);
        pos = h;
    }
}

static bool do_chunk(Reader *r, const Chunk *c)
{
    ReadJob *job = r->job;
    const FormatSnapshot *f = job->s->fmt;
    const FormatBlock *b = &f->blocks[c->block];
    const uint64_t *present = g_bytes_get_data(f->present[c->block], NULL);
    uint64_t want[CHUNK_PAGES / 64] = { 0 }; /* pages to read, relative to c->first */
    uint64_t max_run = MAX_IO_BYTES / b->page_size;

    for (uint64_t i = 0; i < c->count; i++)
        if (format_bitmap_test(present, c->first + i))
            want[i / 64] |= 1ull << (i % 64);
    if (job->verify)
        data_ranges(job, b, c, want);

    uint64_t run_first = 0, run_len = 0;
    for (uint64_t i = 0; i < c->count; i++) {
        bool read = (want[i / 64] >> (i % 64)) & 1;
        if (read && run_len < max_run) {
            if (!run_len)
                run_first = c->first + i;
            run_len++;
            continue;
        }
        if (!submit_run(r, c->block, run_first, run_len))
            return false;
        run_len = 0;
        if (read) {
            run_first = c->first + i;
            run_len = 1;
        }
    }
    return submit_run(r, c->block, run_first, run_len);
}

static gpointer reader_main(gpointer opaque)
{
    Reader *r = opaque;
    ReadJob *job = r->job;
    GError *err = NULL;

    if (!aio_queue_init(&r->q, job->fd, false, QUEUE_DEPTH, read_done, r, &err)) {
        job_fail(job, err);
        return NULL;
    }
    if (job->verify) {
        if (posix_memalign((void **)&r->bounce, 4096, (size_t)QUEUE_DEPTH * MAX_IO_BYTES)) {
            job_fail(job, g_error_new(G_IO_ERROR, G_IO_ERROR_NO_SPACE, "out of memory"));
            aio_queue_destroy(&r->q);
            return NULL;
        }
    }
    for (unsigned i = 0; i < QUEUE_DEPTH; i++) {
        r->slots[i].buf = r->bounce ? r->bounce + (size_t)i * MAX_IO_BYTES : NULL;
        r->free_slots[i] = i;
    }
    r->n_free = QUEUE_DEPTH;
    for (;;) {
        if (g_atomic_int_get(&job->failed))
            break;
        int i = g_atomic_int_add(&job->next, 1);
        if (i >= (int)job->n_chunks || !do_chunk(r, &job->chunks[i]))
            break;
    }
    if (!aio_queue_drain(&r->q)) {
        aio_queue_error(&r->q, job->s->what, &err);
        job_fail(job, err);
    }
    aio_queue_destroy(&r->q);
    free(r->bounce);
    return NULL;
}

static bool run_job(ReadJob *job, unsigned threads, GError **error)
{
    const FormatSnapshot *f = job->s->fmt;
    GArray *chunks = g_array_new(FALSE, FALSE, sizeof(Chunk));
    for (unsigned b = 0; b < f->n_blocks; b++) {
        uint64_t pages = format_block_pages(&f->blocks[b]);
        for (uint64_t p = 0; p < pages; p += CHUNK_PAGES) {
            Chunk c = { b, p, MIN((uint64_t)CHUNK_PAGES, pages - p) };
            g_array_append_val(chunks, c);
        }
    }
    job->chunks = (Chunk *)chunks->data;
    job->n_chunks = chunks->len;
    g_mutex_init(&job->lock);

    int direct = snapfile_open_direct(job->s);
    job->fd = direct >= 0 ? direct : job->s->fd;
    unsigned n = threads ? threads : (unsigned)g_get_num_processors();
    n = MAX(1u, MIN(n, job->n_chunks));
    Reader *readers = g_new0(Reader, n);
    GThread **t = g_new0(GThread *, n);
    for (unsigned i = 0; i < n; i++) {
        readers[i].job = job;
        t[i] = g_thread_new("vmsnap-reader", reader_main, &readers[i]);
    }
    for (unsigned i = 0; i < n; i++)
        g_thread_join(t[i]);
    g_free(t);
    g_free(readers);
    if (direct >= 0)
        close(direct);
    g_array_free(chunks, TRUE);
    g_mutex_clear(&job->lock);
    if (job->error) {
        g_propagate_error(error, job->error);
        return false;
    }
    return true;
}

static bool need_checksums(const VmsnapSnapshot *s, GError **error)
{
    if (s->fmt->header.state != FORMAT_STATE_DONE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "%s: incomplete snapshot (state PART): the save did not finish", s->what);
        return false;
    }
    for (unsigned i = 0; i < s->fmt->n_blocks; i++)
        if (!s->fmt->checksums[i]) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "%s: opened without page checksums", s->what);
            return false;
        }
    return true;
}

bool vmsnap_snapshot_copy(VmsnapSnapshot *s, const VmsnapRamBlock *blocks, unsigned n_blocks,
                          unsigned threads, VmsnapProgress *progress, GError **error)
{
    if (!need_checksums(s, error) || !snapfile_check_blocks(s, blocks, n_blocks, error))
        return false;
    g_autofree uint8_t **dst = g_new0(uint8_t *, s->fmt->n_blocks);
    for (unsigned i = 0; i < s->fmt->n_blocks; i++)
        for (unsigned j = 0; j < n_blocks; j++)
            if (!strcmp(blocks[j].name, s->fmt->blocks[i].name))
                dst[i] = blocks[j].host;
    ReadJob job = { .s = s, .dst = dst, .progress = progress };
    return run_job(&job, threads, error);
}

bool vmsnap_snapshot_verify_pages(VmsnapSnapshot *s, unsigned threads, VmsnapBadPageFn bad,
                                  void *opaque, uint64_t *n_bad, GError **error)
{
    if (!need_checksums(s, error))
        return false;
    ReadJob job = { .s = s, .verify = true, .bad = bad, .bad_opaque = opaque };
    bool ok = run_job(&job, threads, error);
    if (n_bad)
        *n_bad = job.n_bad;
    return ok;
}
