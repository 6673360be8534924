/*
 * The mapped-RAM file sink (docs/FORMAT.md): every page at its fixed offset,
 * written with O_DIRECT straight from guest memory by libaio; zero pages stay holes
 * (a page that became zero since an earlier pass is punched back to a hole); each
 * written page is checksummed; the file is committed only when everything is
 * durable.
 */
#include "aio_queue.h"
#include "format.h"
#include "scan.h"
#include "sink.h"
#include "target.h"
#include "xxh.h"

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_IO_BYTES (1u << 20)
#define QUEUE_DEPTH  16u

typedef struct FileBlock {
    const VmsnapRamBlock *ram;
    FormatBlock fmt;
    uint64_t pages;
    uint64_t *present;   /* host-endian words */
    uint64_t *checksums; /* per page, 0 when absent */
} FileBlock;

typedef struct FileSink {
    SaveSink base;
    VmsnapSaveOptions opt;
    const char *path;
    int fd;
    SaveTarget target;
    bool target_open;
    unsigned n_blocks;
    FileBlock *blocks;
    uint64_t metadata_offset;
    FormatHeader header;
    VmsnapSaveStats stats;
} FileSink;

typedef struct FileWorker {
    FileSink *fs;
    AioQueue q;
    uint64_t normal, zero;
} FileWorker;

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- pages ---- */

static void write_done(void *opaque, void *cookie, void *buf, size_t len, uint64_t offset)
{
    FileWorker *w = opaque;
    __atomic_fetch_add(&w->fs->base.progress->written_bytes, len, __ATOMIC_RELAXED);
}

static void *worker_new(void *sink, unsigned index, GError **error)
{
    FileWorker *w = g_new0(FileWorker, 1);
    w->fs = sink;
    if (!aio_queue_init(&w->q, w->fs->target.page_fd, true, QUEUE_DEPTH, write_done, w, error)) {
        g_free(w);
        return NULL;
    }
    return w;
}

static bool submit_run(FileWorker *w, FileBlock *b, uint64_t first, uint64_t count)
{
    if (!count)
        return true;
    size_t ps = b->fmt.page_size;
    return aio_queue_submit(&w->q, b->ram->host + first * ps, count * ps,
                            b->fmt.pages_offset + first * ps, NULL);
}

/* A page written by an earlier pass that is zero now must read as zero again. */
static bool make_hole(FileWorker *w, FileBlock *b, uint64_t page)
{
    size_t ps = b->fmt.page_size;
    off_t off = (off_t)(b->fmt.pages_offset + page * ps);
    if (fallocate(w->fs->target.page_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                  (off_t)ps) == 0)
        return true;
    static const uint8_t zeros[4096] __attribute__((aligned(4096)));
    return aio_queue_submit(&w->q, (void *)zeros, ps, (uint64_t)off, NULL);
}

static bool chunk(void *worker, const ScanChunk *c, uint64_t *bytes, GError **error)
{
    FileWorker *w = worker;
    FileBlock *b = &w->fs->blocks[c->block];
    size_t ps = b->fmt.page_size;
    uint64_t max_run = MAX_IO_BYTES / ps;
    uint64_t run_first = 0, run_len = 0;
    bool checksums = !w->fs->opt.no_checksums;
    bool ok = true;

    for (uint64_t i = 0; i < c->count && ok; i++) {
        uint64_t bit = 1ull << (i % 64);
        uint64_t page = c->first + i;
        uint64_t pbit = 1ull << (page % 64);
        bool sel = c->sel[i / 64] & bit;
        bool zero = c->zero[i / 64] & bit;
        if (!sel || zero || run_len == max_run) {
            ok = submit_run(w, b, run_first, run_len);
            run_len = 0;
        }
        if (!sel)
            continue;
        if (zero) {
            if (b->present[page / 64] & pbit) {
                ok = ok && make_hole(w, b, page);
                b->present[page / 64] &= ~pbit;
            }
            b->checksums[page] = 0;
            w->zero++;
            continue;
        }
        b->checksums[page] = checksums ? vs_xxh3(b->ram->host + page * ps, ps) : 0;
        b->present[page / 64] |= pbit;
        w->normal++;
        *bytes += ps;
        if (run_len == 0)
            run_first = page;
        run_len++;
    }
    ok = ok && submit_run(w, b, run_first, run_len);
    if (!ok)
        aio_queue_error(&w->q, w->fs->target.what, error);
    return ok;
}

static bool worker_finish(void *worker, GError **error)
{
    FileWorker *w = worker;
    VmsnapProgress *p = w->fs->base.progress;
    __atomic_fetch_add(&p->normal_pages, w->normal, __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->zero_pages, w->zero, __ATOMIC_RELAXED);
    w->normal = w->zero = 0;
    if (!aio_queue_drain(&w->q)) {
        aio_queue_error(&w->q, w->fs->target.what, error);
        return false;
    }
    return true;
}

static void worker_free(void *worker)
{
    FileWorker *w = worker;
    aio_queue_destroy(&w->q);
    g_free(w);
}

static const ScanSinkOps file_scan_ops = { worker_new, chunk, worker_finish, worker_free };

static bool fs_pass(SaveSink *s, uint64_t *const *select, uint32_t pass, bool final,
                    uint64_t dirty_left, GError **error)
{
    FileSink *fs = (FileSink *)s;
    ScanJob job = {
        .blocks = s->vm->blocks,
        .n_blocks = s->vm->n_blocks,
        .select = select,
        .threads = s->threads,
        .ops = &file_scan_ops,
        .sink = fs,
        .progress = s->progress,
        .cancel = s->cancel,
        .max_bandwidth = s->max_bandwidth,
        .delay_us = s->delay_us,
        .first_here = final,
        .rearm = s->rearm,
        .rearm_opaque = s->rearm_opaque,
    };
    uint64_t before = __atomic_load_n(&s->progress->written_bytes, __ATOMIC_RELAXED);
    bool ok = scan_run(&job, error);
    __atomic_fetch_add(&s->bytes,
                       __atomic_load_n(&s->progress->written_bytes, __ATOMIC_RELAXED) - before,
                       __ATOMIC_RELAXED);
    if (!ok && g_error_matches(*error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        g_prefix_error(error, "%s: save ", fs->target.what);
    return ok;
}

/* ---- begin / finish ---- */

static bool fs_begin(SaveSink *s, GError **error)
{
    FileSink *fs = (FileSink *)s;
    SaveTarget *t = &fs->target;
    bool ok = fs->path ? save_target_open_path(t, fs->path, fs->opt.offset, fs->opt.in_place,
                                               fs->opt.buffered, error)
                       : save_target_open_fd(t, fs->fd, fs->opt.offset, fs->opt.buffered, error);
    fs->target_open = true;
    if (!ok)
        return false;
    g_autofree FormatBlock *blocks = g_new0(FormatBlock, fs->n_blocks);
    for (unsigned i = 0; i < fs->n_blocks; i++) {
        if (save_target_is_file(t, s->vm->blocks[i].backing_fd)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                        "%s: this VM's RAM block '%s' is mapped from this file (map restore); "
                        "saving over it in place would corrupt the running guest: save to "
                        "another file or to the same path without an offset",
                        t->what, s->vm->blocks[i].name);
            return false;
        }
        blocks[i] = fs->blocks[i].fmt;
    }
    if (!format_plan_layout(t->base, blocks, fs->n_blocks, &fs->metadata_offset, error)) {
        g_prefix_error(error, "%s: ", t->what);
        return false;
    }
    for (unsigned i = 0; i < fs->n_blocks; i++)
        fs->blocks[i].fmt.pages_offset = blocks[i].pages_offset;

    FormatHeader *h = &fs->header;
    memset(h, 0, sizeof(*h));
    h->format_version = FORMAT_VERSION;
    h->writer_version =
        (VMSNAP_VERSION_MAJOR << 16) | (VMSNAP_VERSION_MINOR << 8) | VMSNAP_VERSION_MICRO;
    h->state = FORMAT_STATE_PARTIAL;
    for (unsigned i = 0; i < 4; i++) {
        guint32 r = g_random_int();
        memcpy(h->snapshot_uuid + 4 * i, &r, 4);
    }
    h->snapshot_uuid[6] = (h->snapshot_uuid[6] & 0x0f) | 0x40; /* version 4 */
    h->snapshot_uuid[8] = (h->snapshot_uuid[8] & 0x3f) | 0x80; /* RFC 4122 variant */
    memcpy(h->vm_uuid, s->vm->uuid, 16);
    h->created_ns = realtime_ns();
    h->base_offset = t->base;
    h->file_size = fs->metadata_offset;
    h->page_size = FORMAT_PAGE_SIZE;
    h->area_align = FORMAT_AREA_ALIGN;
    h->ram_size = fs->stats.ram_bytes;

    /* Everything after the header becomes a hole: stale bytes of an older snapshot
     * in the same file must not show through pages we leave unwritten. */
    if (ftruncate(t->meta_fd, (off_t)t->base) < 0 ||
        ftruncate(t->meta_fd, (off_t)fs->metadata_offset) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "%s: cannot size the file to %" G_GUINT64_FORMAT " bytes: %s", t->what,
                    fs->metadata_offset, g_strerror(err));
        return false;
    }
    uint8_t buf[FORMAT_HEADER_SIZE];
    format_header_encode(h, buf);
    return save_target_pwrite(t, buf, sizeof(buf), t->base, "partial header", error);
}

/* The words in little-endian order, as a GBytes: no copy on little-endian hosts
 * (the arrays outlive the metadata write), which matters here because fresh memory
 * is slow to touch and the checksum table is 2 MiB per GiB of RAM. */
static GBytes *le_words(const uint64_t *words, size_t n)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
    return g_bytes_new_static(words, n * sizeof(uint64_t));
#else
    uint64_t *out = g_new(uint64_t, n);
    for (size_t i = 0; i < n; i++)
        out[i] = GUINT64_TO_LE(words[i]);
    return g_bytes_new_take(out, n * sizeof(uint64_t));
#endif
}

static bool fs_finish(SaveSink *s, const DevicePayload *devices, unsigned n_devices,
                      bool source_running, GError **error)
{
    FileSink *fs = (FileSink *)s;
    SaveTarget *t = &fs->target;
    uint64_t t0 = (uint64_t)g_get_monotonic_time();
    g_autoptr(FormatMetaWriter) m = format_meta_new(fs->metadata_offset);
    g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);

    format_meta_add(m, FORMAT_SECTION_CONFIG, s->vm->config_version, 0,
                    FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED, "config", s->vm->config);
    g_autofree FormatBlock *blocks = g_new0(FormatBlock, fs->n_blocks);
    for (unsigned i = 0; i < fs->n_blocks; i++)
        blocks[i] = fs->blocks[i].fmt;
    GBytes *table = format_ram_blocks_encode(blocks, fs->n_blocks);
    g_ptr_array_add(keep, table);
    format_meta_add(m, FORMAT_SECTION_RAM_BLOCKS, 1, 0, FORMAT_SECTION_REQUIRED, "ram-blocks",
                    table);
    uint64_t present = 0;
    for (unsigned i = 0; i < fs->n_blocks; i++) {
        FileBlock *b = &fs->blocks[i];
        size_t words = format_bitmap_words(b->pages);
        for (size_t w = 0; w < words; w++)
            present += (uint64_t)__builtin_popcountll(b->present[w]);
        GBytes *bm = le_words(b->present, words);
        GBytes *sums = le_words(b->checksums, b->pages);
        g_ptr_array_add(keep, bm);
        g_ptr_array_add(keep, sums);
        format_meta_add(m, FORMAT_SECTION_PRESENT_BITMAP, 1, i, FORMAT_SECTION_REQUIRED,
                        b->fmt.name, bm);
        format_meta_add(m, FORMAT_SECTION_PAGE_CHECKSUMS, 1, i, FORMAT_SECTION_REQUIRED,
                        b->fmt.name, sums);
    }
    for (unsigned i = 0; i < n_devices; i++)
        format_meta_add(m, FORMAT_SECTION_DEVICE, devices[i].version, devices[i].instance,
                        FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED, devices[i].name,
                        devices[i].fields);

    fs->header.present_pages = present;
    g_autoptr(GBytes) meta = format_meta_finish(g_steal_pointer(&m), &fs->header);
    if (!meta) {
        g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_INVALID,
                    "%s: the VM's sections break the format's rules (see the log)", t->what);
        return false;
    }
    gsize meta_len;
    const void *meta_data = g_bytes_get_data(meta, &meta_len);
    if (!save_target_pwrite(t, meta_data, meta_len, fs->metadata_offset, "metadata", error))
        return false;
    fs->header.metadata_offset = fs->metadata_offset;
    fs->header.file_size = fs->metadata_offset + meta_len;
    fs->stats.metadata_bytes = meta_len;
    uint64_t t1 = (uint64_t)g_get_monotonic_time();
    fs->stats.metadata_ns = (t1 - t0) * 1000;

    /* Commit: data durable first, then the header that says so. */
    if (!save_target_sync(t, error))
        return false;
    fs->header.state = FORMAT_STATE_DONE;
    uint8_t hdr[FORMAT_HEADER_SIZE];
    format_header_encode(&fs->header, hdr);
    if (!save_target_pwrite(t, hdr, sizeof(hdr), t->base, "complete header", error) ||
        !save_target_sync(t, error) || !save_target_commit(t, fs->header.file_size, error))
        return false;
    fs->stats.sync_ns = ((uint64_t)g_get_monotonic_time() - t1) * 1000;
    return true;
}

static void fs_abort(SaveSink *s)
{
    FileSink *fs = (FileSink *)s;
    if (fs->target_open)
        save_target_abort(&fs->target);
}

static void fs_free(SaveSink *s)
{
    FileSink *fs = (FileSink *)s;
    if (fs->target_open)
        save_target_close(&fs->target);
    for (unsigned i = 0; i < fs->n_blocks; i++) {
        g_free(fs->blocks[i].present);
        g_free(fs->blocks[i].checksums);
    }
    g_free(fs->blocks);
    g_free(fs);
}

static const SaveSinkOps file_sink_ops = { fs_begin, fs_pass, fs_finish, fs_abort, fs_free };

void file_sink_stats(SaveSink *s, VmsnapSaveStats *stats)
{
    FileSink *fs = (FileSink *)s;
    VmsnapProgress *p = s->progress;
    fs->stats.normal_pages = __atomic_load_n(&p->normal_pages, __ATOMIC_RELAXED);
    fs->stats.zero_pages = __atomic_load_n(&p->zero_pages, __ATOMIC_RELAXED);
    fs->stats.total_pages = fs->stats.normal_pages + fs->stats.zero_pages;
    fs->stats.written_bytes = __atomic_load_n(&p->written_bytes, __ATOMIC_RELAXED);
    fs->stats.threads = s->threads;
    fs->stats.direct_io = fs->target.direct;
    *stats = fs->stats;
}

SaveSink *file_sink_new(const VmsnapVm *vm, const char *path, int fd, const VmsnapSaveOptions *opt,
                        GError **error)
{
    FileSink *fs = g_new0(FileSink, 1);
    fs->base.ops = &file_sink_ops;
    fs->base.vm = vm;
    fs->target.meta_fd = fs->target.page_fd = -1;
    if (opt)
        memcpy(&fs->opt, opt,
               MIN(opt->struct_size ? opt->struct_size : sizeof(*opt), sizeof(fs->opt)));
    fs->path = path;
    fs->fd = fd;
    fs->n_blocks = vm->n_blocks;
    fs->blocks = g_new0(FileBlock, vm->n_blocks);
    for (unsigned i = 0; i < vm->n_blocks; i++) {
        const VmsnapRamBlock *r = &vm->blocks[i];
        FileBlock *b = &fs->blocks[i];
        b->ram = r;
        g_strlcpy(b->fmt.name, r->name, sizeof(b->fmt.name));
        b->fmt.gpa = r->gpa;
        b->fmt.size = r->size;
        b->fmt.page_size = r->page_size;
        if (r->page_size != FORMAT_PAGE_SIZE || r->size % r->page_size || !r->host) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "save: RAM block '%s' has page size %u or size %" G_GUINT64_FORMAT
                        " that the format cannot store",
                        r->name, r->page_size, r->size);
            fs_free(&fs->base);
            return NULL;
        }
        b->pages = r->size / r->page_size;
        b->present = g_new0(uint64_t, format_bitmap_words(b->pages));
        b->checksums = g_new0(uint64_t, b->pages);
        fs->stats.ram_bytes += r->size;
    }
    return &fs->base;
}
