/* Stopped save of a paused VM to a mapped-RAM file (docs/FORMAT.md section 2.1). */
#include "session.h"

#include "config.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t save_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool save_session_init(SaveSession *s, const VmsnapVm *vm, const VmsnapSaveOptions *opt,
                       GError **error)
{
    memset(s, 0, sizeof(*s));
    s->target.meta_fd = s->target.page_fd = -1;
    s->start_ns = save_now_ns();
    if (opt)
        memcpy(&s->opt, opt, MIN(opt->struct_size ? opt->struct_size : sizeof(*opt),
                                 sizeof(s->opt)));
    s->progress = s->opt.progress ? s->opt.progress : &s->own_progress;
    s->threads = s->opt.threads ? s->opt.threads : (unsigned)g_get_num_processors();
    s->vm = vm;
    if (!vm || vm->struct_size < sizeof(VmsnapVm) || !vm->n_blocks || !vm->config) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "save: the VM description is incomplete (no RAM blocks or no config)");
        return false;
    }
    s->n_blocks = vm->n_blocks;
    s->blocks = g_new0(SaveBlock, vm->n_blocks);
    uint64_t ram = 0;
    for (unsigned i = 0; i < vm->n_blocks; i++) {
        const VmsnapRamBlock *r = &vm->blocks[i];
        SaveBlock *b = &s->blocks[i];
        b->ram = r;
        g_strlcpy(b->fmt.name, r->name, sizeof(b->fmt.name));
        b->fmt.gpa = r->gpa;
        b->fmt.size = r->size;
        b->fmt.page_size = r->page_size;
        if (r->page_size != FORMAT_PAGE_SIZE || r->size % r->page_size || !r->host) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "save: RAM block '%s' has page size %u or size %" G_GUINT64_FORMAT
                        " that the format cannot store", r->name, r->page_size, r->size);
            return false;
        }
        b->pages = r->size / r->page_size;
        b->present = g_new0(uint64_t, format_bitmap_words(b->pages));
        b->checksums = g_new0(uint64_t, b->pages);
        ram += r->size;
    }
    s->progress->ram_bytes = ram;
    s->stats.ram_bytes = ram;
    return true;
}

bool save_session_begin(SaveSession *s, GError **error)
{
    SaveTarget *t = &s->target;
    g_autofree FormatBlock *blocks = g_new0(FormatBlock, s->n_blocks);

    for (unsigned i = 0; i < s->n_blocks; i++) {
        if (save_target_is_file(t, s->vm->blocks[i].backing_fd)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                        "%s: this VM's RAM block '%s' is mapped from this file (map restore); "
                        "saving over it in place would corrupt the running guest: save to "
                        "another file or to the same path without an offset",
                        t->what, s->vm->blocks[i].name);
            return false;
        }
        blocks[i] = s->blocks[i].fmt;
    }
    if (!format_plan_layout(t->base, blocks, s->n_blocks, &s->metadata_offset, error)) {
        g_prefix_error(error, "%s: ", t->what);
        return false;
    }
    for (unsigned i = 0; i < s->n_blocks; i++)
        s->blocks[i].fmt.pages_offset = blocks[i].pages_offset;

    FormatHeader *h = &s->header;
    memset(h, 0, sizeof(*h));
    h->format_version = FORMAT_VERSION;
    h->writer_version = (VMSNAP_VERSION_MAJOR << 16) | (VMSNAP_VERSION_MINOR << 8) |
                        VMSNAP_VERSION_MICRO;
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
    h->file_size = s->metadata_offset;
    h->page_size = FORMAT_PAGE_SIZE;
    h->area_align = FORMAT_AREA_ALIGN;
    h->ram_size = s->stats.ram_bytes;

    /* Everything after the header becomes a hole: stale bytes of an older snapshot
     * in the same file must not show through pages we leave unwritten. */
    if (ftruncate(t->meta_fd, (off_t)t->base) < 0 ||
        ftruncate(t->meta_fd, (off_t)s->metadata_offset) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "%s: cannot size the file to %" G_GUINT64_FORMAT " bytes: %s", t->what,
                    s->metadata_offset, g_strerror(err));
        return false;
    }
    uint8_t buf[FORMAT_HEADER_SIZE];
    format_header_encode(h, buf);
    return save_target_pwrite(t, buf, sizeof(buf), t->base, "partial header", error);
}

static bool add_device_sections(SaveSession *s, FormatMetaWriter *m, GError **error)
{
    for (unsigned i = 0; i < s->vm->n_devices; i++) {
        const VmsnapDevice *d = &s->vm->devices[i];
        VmsnapFieldWriter *w = vmsnap_fw_new();
        if (!d->save(d->opaque, w, error)) {
            vmsnap_fw_free(w);
            g_prefix_error(error, "saving device '%s' instance %u: ", d->name, d->instance);
            return false;
        }
        g_autoptr(GBytes) payload = vmsnap_fw_finish(w, error);
        if (!payload) {
            g_prefix_error(error, "saving device '%s' instance %u: ", d->name, d->instance);
            return false;
        }
        format_meta_add(m, FORMAT_SECTION_DEVICE, d->version, d->instance,
                        FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED, d->name, payload);
    }
    return true;
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

bool save_session_finish(SaveSession *s, GError **error)
{
    SaveTarget *t = &s->target;
    uint64_t t0 = save_now_ns();
    g_autoptr(FormatMetaWriter) m = format_meta_new(s->metadata_offset);
    g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);

    format_meta_add(m, FORMAT_SECTION_CONFIG, s->vm->config_version, 0,
                    FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED, "config", s->vm->config);
    g_autofree FormatBlock *blocks = g_new0(FormatBlock, s->n_blocks);
    for (unsigned i = 0; i < s->n_blocks; i++)
        blocks[i] = s->blocks[i].fmt;
    GBytes *table = format_ram_blocks_encode(blocks, s->n_blocks);
    g_ptr_array_add(keep, table);
    format_meta_add(m, FORMAT_SECTION_RAM_BLOCKS, 1, 0, FORMAT_SECTION_REQUIRED, "ram-blocks",
                    table);
    uint64_t present = 0;
    for (unsigned i = 0; i < s->n_blocks; i++) {
        SaveBlock *b = &s->blocks[i];
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
    if (!add_device_sections(s, m, error))
        return false;

    s->header.present_pages = present;
    g_autoptr(GBytes) meta = format_meta_finish(g_steal_pointer(&m), &s->header);
    gsize meta_len;
    const void *meta_data = g_bytes_get_data(meta, &meta_len);
    if (!save_target_pwrite(t, meta_data, meta_len, s->metadata_offset, "metadata", error))
        return false;
    s->header.metadata_offset = s->metadata_offset;
    s->header.file_size = s->metadata_offset + meta_len;
    s->stats.metadata_bytes = meta_len;
    uint64_t t1 = save_now_ns();
    s->stats.metadata_ns = t1 - t0;

    /* Commit: data durable first, then the header that says so. */
    if (!save_target_sync(t, error))
        return false;
    s->header.state = FORMAT_STATE_DONE;
    uint8_t hdr[FORMAT_HEADER_SIZE];
    format_header_encode(&s->header, hdr);
    if (!save_target_pwrite(t, hdr, sizeof(hdr), t->base, "complete header", error) ||
        !save_target_sync(t, error) || !save_target_commit(t, s->header.file_size, error))
        return false;
    s->stats.sync_ns = save_now_ns() - t1;
    return true;
}

void save_session_abort(SaveSession *s)
{
    save_target_abort(&s->target);
}

void save_session_free(SaveSession *s)
{
    save_target_close(&s->target);
    for (unsigned i = 0; i < s->n_blocks; i++) {
        g_free(s->blocks[i].present);
        g_free(s->blocks[i].checksums);
    }
    g_clear_pointer(&s->blocks, g_free);
}

static void fill_stats(SaveSession *s, VmsnapSaveStats *stats)
{
    if (!stats)
        return;
    s->stats.normal_pages = __atomic_load_n(&s->progress->normal_pages, __ATOMIC_RELAXED);
    s->stats.zero_pages = __atomic_load_n(&s->progress->zero_pages, __ATOMIC_RELAXED);
    s->stats.total_pages = s->stats.normal_pages + s->stats.zero_pages;
    s->stats.written_bytes = __atomic_load_n(&s->progress->written_bytes, __ATOMIC_RELAXED);
    s->stats.total_ns = save_now_ns() - s->start_ns;
    s->stats.threads = s->threads;
    s->stats.direct_io = s->target.direct;
    *stats = s->stats;
}

static bool run_save(SaveSession *s, VmsnapSaveStats *stats, GError **error)
{
    uint64_t t0 = save_now_ns();
    bool ok = save_session_begin(s, error) && save_session_write_pages(s, NULL, error);
    s->stats.pages_ns = save_now_ns() - t0;
    ok = ok && save_session_finish(s, error);
    if (!ok)
        save_session_abort(s);
    fill_stats(s, stats);
    save_session_free(s);
    return ok;
}

bool vmsnap_save_path(const VmsnapVm *vm, const char *path, const VmsnapSaveOptions *opt,
                      VmsnapSaveStats *stats, GError **error)
{
    SaveSession s;
    if (!save_session_init(&s, vm, opt, error)) {
        save_session_free(&s);
        return false;
    }
    if (!save_target_open_path(&s.target, path, s.opt.offset, s.opt.in_place, s.opt.buffered,
                               error)) {
        save_session_abort(&s);
        save_session_free(&s);
        return false;
    }
    return run_save(&s, stats, error);
}

bool vmsnap_save_fd(const VmsnapVm *vm, int fd, const VmsnapSaveOptions *opt,
                    VmsnapSaveStats *stats, GError **error)
{
    SaveSession s;
    if (!save_session_init(&s, vm, opt, error) ||
        !save_target_open_fd(&s.target, fd, s.opt.offset, s.opt.buffered, error)) {
        save_session_free(&s);
        return false;
    }
    return run_save(&s, stats, error);
}
