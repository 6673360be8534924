/* Test helper: small snapshots in memory (see snapbuild.h). */
#include "snapbuild.h"

#include <string.h>
#include <vmsnap/fields.h>
#include <vmsnap/version.h>
#include <xxhash.h>

static uint64_t ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_LE(v);
}

static uint32_t ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_LE(v);
}

static void st64(uint8_t *p, uint64_t v)
{
    v = GUINT64_TO_LE(v);
    memcpy(p, &v, 8);
}

static GBytes *config_payload(void)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_str(w, "name", "test");
    vmsnap_fw_str(w, "uuid", "6b1f0f3e-5d1c-4b53-9a63-0c1c0f1e2d3c");
    vmsnap_fw_u64(w, "memory", 87 * 4096);
    vmsnap_fw_u32(w, "cpus", 2);
    vmsnap_fw_str(w, "kernel", "embedded:guest/dirty");
    vmsnap_fw_u64(w, "kernel_xxh3", 0x1234);
    vmsnap_fw_str(w, "cmdline", "");
    vmsnap_fw_str(w, "run_state", "paused");
    return vmsnap_fw_finish(w, NULL);
}

static GBytes *cpu_payload(unsigned i)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_struct_begin(w, "regs");
    vmsnap_fw_u64(w, "rip", 0x101234 + i);
    vmsnap_fw_u64(w, "rflags", 2);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_array_begin(w, "msrs", 2);
    vmsnap_fw_u64(w, NULL, 0xc0000080);
    vmsnap_fw_u64(w, NULL, 0x500);
    vmsnap_fw_array_end(w);
    vmsnap_fw_bytes(w, "xsave", "\x01\x02\x03\x04", 4);
    return vmsnap_fw_finish(w, NULL);
}

static uint8_t page_byte(unsigned b, uint64_t i, size_t k)
{
    return (uint8_t)(b * 31 + i * 7 + k * 13 + 1);
}

Snap *snap_build(const SnapSpec *spec)
{
    Snap *s = g_new0(Snap, 1);
    unsigned pages[2] = { spec->pages[0] ? spec->pages[0] : 20,
                          spec->pages[1] ? spec->pages[1] : 67 };
    s->n_blocks = 2;
    s->blocks[0] = (FormatBlock){ .name = "ram-below-4g",
                                  .gpa = 0,
                                  .size = (uint64_t)pages[0] * FORMAT_PAGE_SIZE,
                                  .page_size = FORMAT_PAGE_SIZE };
    s->blocks[1] = (FormatBlock){ .name = "ram-above-4g",
                                  .gpa = 4ull << 30,
                                  .size = (uint64_t)pages[1] * FORMAT_PAGE_SIZE,
                                  .page_size = FORMAT_PAGE_SIZE };
    uint64_t meta_off = 0;
    g_assert_true(format_plan_layout(spec->base, s->blocks, 2, &meta_off, NULL));

    FormatHeader *h = &s->h;
    h->format_version = FORMAT_VERSION;
    h->writer_version = VMSNAP_VERSION_NUMBER;
    h->state = FORMAT_STATE_PARTIAL;
    h->compat_features = spec->compat;
    h->incompat_features = spec->incompat;
    for (int i = 0; i < 16; i++) {
        h->snapshot_uuid[i] = (uint8_t)(0xa0 + i);
        h->vm_uuid[i] = (uint8_t)(0x10 + i);
    }
    h->created_ns = 1700000000123456789ull;
    h->base_offset = spec->base;
    h->file_size = meta_off;
    h->page_size = FORMAT_PAGE_SIZE;
    h->area_align = FORMAT_AREA_ALIGN;
    h->ram_size = s->blocks[0].size + s->blocks[1].size;

    s->file = g_byte_array_sized_new((guint)meta_off + 8192);
    g_byte_array_set_size(s->file, (guint)meta_off);
    memset(s->file->data, 0xee, spec->base);
    memset(s->file->data + spec->base, 0, meta_off - spec->base);

    /* Step 2: the pages. Every third page is zero, so not present. */
    g_autoptr(FormatMetaWriter) m = format_meta_new(meta_off);
    GBytes *keep[8];
    unsigned n_keep = 0;
    for (unsigned b = 0; b < 2; b++) {
        const FormatBlock *blk = &s->blocks[b];
        uint64_t n = format_block_pages(blk);
        uint64_t *bitmap = g_new0(uint64_t, format_bitmap_words(n));
        uint64_t *sums = g_new0(uint64_t, n);
        for (uint64_t i = 0; i < n; i++) {
            if (i % 3 == 0) {
                continue;
            }
            uint8_t *page = s->file->data + blk->pages_offset + i * FORMAT_PAGE_SIZE;
            for (size_t k = 0; k < FORMAT_PAGE_SIZE; k++) {
                page[k] = page_byte(b, i, k);
            }
            bitmap[i / 64] |= 1ull << (i % 64);
            sums[i] = GUINT64_TO_LE(XXH3_64bits(page, FORMAT_PAGE_SIZE));
            h->present_pages++;
        }
        for (size_t w = 0; w < format_bitmap_words(n); w++) {
            bitmap[w] = GUINT64_TO_LE(bitmap[w]);
        }
        keep[n_keep++] = g_bytes_new_take(bitmap, format_bitmap_words(n) * 8);
        keep[n_keep++] = g_bytes_new_take(sums, n * 8);
    }
    if (spec->partial) {
        uint8_t hdr[FORMAT_HEADER_SIZE];
        h->present_pages = 0;
        format_header_encode(h, hdr);
        memcpy(s->file->data + spec->base, hdr, sizeof(hdr));
        for (unsigned i = 0; i < n_keep; i++) {
            g_bytes_unref(keep[i]);
        }
        return s;
    }

    /* Step 3: the metadata, in the order a writer would add it. */
    g_autoptr(GBytes) config = config_payload();
    g_autoptr(GBytes) table = format_ram_blocks_encode(s->blocks, 2);
    format_meta_add(m, FORMAT_SECTION_CONFIG, 1, 0, FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED,
                    "config", config);
    format_meta_add(m, FORMAT_SECTION_RAM_BLOCKS, 1, 0, FORMAT_SECTION_REQUIRED, "ram-blocks",
                    table);
    for (unsigned b = 0; b < 2; b++) {
        format_meta_add(m, FORMAT_SECTION_PRESENT_BITMAP, 1, b, FORMAT_SECTION_REQUIRED,
                        s->blocks[b].name, keep[2 * b]);
        format_meta_add(m, FORMAT_SECTION_PAGE_CHECKSUMS, 1, b, FORMAT_SECTION_REQUIRED,
                        s->blocks[b].name, keep[2 * b + 1]);
    }
    for (unsigned i = 0; i < 2; i++) {
        g_autoptr(GBytes) cpu = cpu_payload(i);
        format_meta_add(m, FORMAT_SECTION_DEVICE, 1, i,
                        FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED, "cpu", cpu);
    }
    g_autoptr(GBytes) empty = vmsnap_fw_finish(vmsnap_fw_new(), NULL);
    format_meta_add(m, FORMAT_SECTION_DEVICE, 3, 0, FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED,
                    "serial", empty);
    if (spec->extra_type != 0) {
        g_autoptr(GBytes) extra = g_bytes_new("extra payload", 13);
        format_meta_add(m, spec->extra_type, 1, 0, spec->extra_flags, "extra", extra);
    }
    for (unsigned i = 0; i < n_keep; i++) {
        g_bytes_unref(keep[i]);
    }
    g_autoptr(GBytes) meta = format_meta_finish(g_steal_pointer(&m), h);
    g_assert_nonnull(meta);
    g_assert_cmpuint(h->metadata_offset, ==, meta_off);
    g_byte_array_append(s->file, g_bytes_get_data(meta, NULL), (guint)g_bytes_get_size(meta));
    g_assert_cmpuint(s->file->len, ==, h->file_size);

    /* Step 5: the commit. */
    h->state = FORMAT_STATE_DONE;
    format_header_encode(h, s->file->data + spec->base);
    return s;
}

void snap_free(Snap *s)
{
    if (s != NULL) {
        g_byte_array_unref(s->file);
        g_free(s);
    }
}

uint64_t snap_dir_entry(const Snap *s, unsigned i)
{
    return s->h.metadata_offset + (uint64_t)i * FORMAT_DIR_ENTRY_SIZE;
}

uint64_t snap_payload(const Snap *s, unsigned i, uint64_t *size)
{
    const uint8_t *d = s->file->data + snap_dir_entry(s, i);
    if (size != NULL) {
        *size = ld64(d + 24);
    }
    return ld64(d + 16);
}

int snap_find(const Snap *s, uint32_t type, uint32_t instance)
{
    for (unsigned i = 0; i < s->h.directory_entries; i++) {
        const uint8_t *d = s->file->data + snap_dir_entry(s, i);
        if (ld32(d) == type && ld32(d + 8) == instance) {
            return (int)i;
        }
    }
    return -1;
}

void snap_reseal(Snap *s)
{
    uint8_t *hdr = s->file->data + s->h.base_offset;
    uint64_t meta = ld64(hdr + 96);
    uint32_t n = ld32(hdr + 120);
    if (meta > s->file->len || (uint64_t)n * FORMAT_DIR_ENTRY_SIZE > s->file->len - meta) {
        /* The header no longer points at a directory: seal the header only. */
        st64(hdr + 4088, XXH3_64bits(hdr, 4088));
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = s->file->data + meta + (uint64_t)i * FORMAT_DIR_ENTRY_SIZE;
        uint64_t off = ld64(d + 16), size = ld64(d + 24);
        if (off <= s->file->len && size <= s->file->len - off) {
            st64(d + 32, XXH3_64bits(s->file->data + off, size));
        }
    }
    st64(hdr + 112, XXH3_64bits(s->file->data + meta, (size_t)n * FORMAT_DIR_ENTRY_SIZE));
    st64(hdr + 4088, XXH3_64bits(hdr, 4088));
}

bool snap_mem_read(void *opaque, uint64_t offset, void *buf, size_t len, GError **error)
{
    const MemFile *f = opaque;
    if (offset > f->size || len > f->size - offset) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO,
                    "memory: short read of %zu bytes at offset %" G_GUINT64_FORMAT
                    " (the file is %" G_GUINT64_FORMAT " bytes)",
                    len, offset, f->size);
        return false;
    }
    memcpy(buf, f->data + offset, len);
    return true;
}

FormatSnapshot *snap_parse(const Snap *s, unsigned flags, GError **error)
{
    MemFile f = { s->file->data, s->file->len };
    return format_snapshot_parse(snap_mem_read, &f, "vm.snap", s->h.base_offset, f.size, flags,
                                 error);
}
