/* The page scanner (snapshot/scan.c): which pages a chunk selects, which it finds
 * zero, and that a live pass re-arms dirty tracking before it reads a page. */
#include <string.h>

#include "scan.h"

#define PAGES 2500u /* two whole chunks and a partial one */
#define PS    4096u

typedef struct Probe {
    uint8_t *host;
    unsigned rearms;
    uint64_t rearmed_pages;
    bool rearm_before_read; /* every selected page was re-armed before the sink saw it */
    uint64_t seen, seen_zero;
    uint64_t *rearmed; /* bitmap over PAGES */
} Probe;

static void *worker_new(void *sink, unsigned index, GError **error)
{
    (void)index;
    (void)error;
    return sink;
}

static bool chunk(void *worker, const ScanChunk *c, uint64_t *bytes, GError **error)
{
    (void)error;
    Probe *pr = worker;
    for (uint64_t i = 0; i < c->count; i++) {
        if (!((c->sel[i / 64] >> (i % 64)) & 1))
            continue;
        uint64_t page = c->first + i;
        pr->seen++;
        if ((c->zero[i / 64] >> (i % 64)) & 1)
            pr->seen_zero++;
        if (!((pr->rearmed[page / 64] >> (page % 64)) & 1))
            pr->rearm_before_read = false;
    }
    *bytes = 0;
    return true;
}

static bool worker_finish(void *worker, GError **error)
{
    (void)worker;
    (void)error;
    return true;
}

static void worker_free(void *worker)
{
    (void)worker;
}

static const ScanSinkOps probe_ops = { worker_new, chunk, worker_finish, worker_free };

/* Stands in for the VMM: records what it re-arms, and writes each page it re-arms,
 * as a guest could right after: the scan must see that write (not call it zero). */
static bool rearm(void *opaque, unsigned block, uint64_t first, uint64_t count, const uint64_t *sel,
                  GError **error)
{
    (void)error;
    Probe *pr = opaque;
    g_assert_cmpuint(block, ==, 0);
    g_assert_cmpuint(first % 64, ==, 0);
    g_assert_cmpuint(first + count, <=, PAGES);
    g_assert_true(count % 64 == 0 || first + count == PAGES);
    pr->rearms++;
    for (uint64_t i = 0; i < count; i++) {
        if (!((sel[i / 64] >> (i % 64)) & 1))
            continue;
        uint64_t page = first + i;
        pr->rearmed[page / 64] |= 1ull << (page % 64);
        pr->rearmed_pages++;
        pr->host[page * PS + 8] = 1;
    }
    return true;
}

static bool rearm_fails(void *opaque, unsigned block, uint64_t first, uint64_t count,
                        const uint64_t *sel, GError **error)
{
    (void)opaque;
    (void)block;
    (void)count;
    (void)sel;
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "re-arm at page %" G_GUINT64_FORMAT, first);
    return false;
}

typedef struct Fixture {
    VmsnapRamBlock block;
    uint64_t select[(PAGES + 63) / 64];
    uint64_t *selp;
    Probe probe;
    ScanJob job;
} Fixture;

/* Every third page selected, all pages zero. */
static void fixture_init(Fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->block = (VmsnapRamBlock){
        .name = "ram", .size = (uint64_t)PAGES * PS, .page_size = PS, .backing_fd = -1
    };
    f->block.host = g_malloc0((size_t)PAGES * PS);
    for (uint64_t p = 0; p < PAGES; p += 3)
        f->select[p / 64] |= 1ull << (p % 64);
    f->selp = f->select;
    f->probe = (Probe){ .host = f->block.host,
                        .rearm_before_read = true,
                        .rearmed = g_new0(uint64_t, (PAGES + 63) / 64) };
    f->job = (ScanJob){ .blocks = &f->block,
                        .n_blocks = 1,
                        .select = &f->selp,
                        .threads = 1,
                        .ops = &probe_ops,
                        .sink = &f->probe,
                        .first_here = true };
}

static void fixture_clear(Fixture *f)
{
    g_free(f->block.host);
    g_free(f->probe.rearmed);
}

static const uint64_t n_selected = (PAGES + 2) / 3;

/* Without a re-arm hook: the selected pages, all found zero. */
static void test_select_and_zero(void)
{
    Fixture f;
    fixture_init(&f);
    g_autoptr(GError) error = NULL;
    g_assert_true(scan_run(&f.job, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(f.probe.seen, ==, n_selected);
    g_assert_cmpuint(f.probe.seen_zero, ==, n_selected);
    fixture_clear(&f);
}

/* With it: each chunk's selection is re-armed once, before any page of it is read;
 * the write the hook makes is seen, so no page is judged zero from before it. */
static void test_rearm_before_read(void)
{
    Fixture f;
    fixture_init(&f);
    f.job.rearm = rearm;
    f.job.rearm_opaque = &f.probe;
    g_autoptr(GError) error = NULL;
    g_assert_true(scan_run(&f.job, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(f.probe.rearms, ==, (PAGES + SCAN_CHUNK_PAGES - 1) / SCAN_CHUNK_PAGES);
    g_assert_cmpuint(f.probe.rearmed_pages, ==, n_selected);
    g_assert_cmpuint(f.probe.seen, ==, n_selected);
    g_assert_true(f.probe.rearm_before_read);
    g_assert_cmpuint(f.probe.seen_zero, ==, 0);
    fixture_clear(&f);
}

/* A chunk with nothing selected is neither re-armed nor read. */
static void test_rearm_skips_empty(void)
{
    Fixture f;
    fixture_init(&f);
    memset(f.select, 0, sizeof(f.select));
    f.select[0] = 1; /* page 0 only: one chunk */
    f.job.rearm = rearm;
    f.job.rearm_opaque = &f.probe;
    g_autoptr(GError) error = NULL;
    g_assert_true(scan_run(&f.job, &error));
    g_assert_cmpuint(f.probe.rearms, ==, 1);
    g_assert_cmpuint(f.probe.seen, ==, 1);
    fixture_clear(&f);
}

/* A failing re-arm stops the scan with its error; no page of that chunk is sent. */
static void test_rearm_error(void)
{
    Fixture f;
    fixture_init(&f);
    f.job.rearm = rearm_fails;
    g_autoptr(GError) error = NULL;
    g_assert_false(scan_run(&f.job, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_FAILED);
    g_assert_nonnull(strstr(error->message, "re-arm at page 0"));
    g_assert_cmpuint(f.probe.seen, ==, 0);
    fixture_clear(&f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/scan/select-and-zero", test_select_and_zero);
    g_test_add_func("/scan/rearm/before-read", test_rearm_before_read);
    g_test_add_func("/scan/rearm/skips-empty-chunks", test_rearm_skips_empty);
    g_test_add_func("/scan/rearm/error-stops", test_rearm_error);
    return g_test_run();
}
