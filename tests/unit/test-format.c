/* The snapshot file format (format/format.h, docs/FORMAT.md). */
#include <string.h>
#include <vmsnap/fields.h>
#include <vmsnap/version.h>
#include <xxhash.h>

#include "snapbuild.h"

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL) {
        g_printerr("'%s'\n  does not contain\n'%s'\n", haystack, needle);
    }
    g_assert_nonnull(strstr(haystack, needle));
}

/* Parses and expects a FORMAT_ERROR with this code whose message contains needle. */
static void expect_fail(const Snap *s, unsigned flags, int code, const char *needle)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, flags, &error);
    g_assert_null(f);
    g_assert_nonnull(error);
    assert_contains(error->message, needle);
    if (!g_error_matches(error, FORMAT_ERROR, code)) {
        g_printerr("code %d for: %s\n", error->code, error->message);
    }
    g_assert_error(error, FORMAT_ERROR, code);
    g_assert_true(g_str_has_prefix(error->message, "vm.snap: "));
}

static void st32(Snap *s, uint64_t off, uint32_t v)
{
    v = GUINT32_TO_LE(v);
    memcpy(s->file->data + off, &v, 4);
}

static void st64(Snap *s, uint64_t off, uint64_t v)
{
    v = GUINT64_TO_LE(v);
    memcpy(s->file->data + off, &v, 8);
}

static uint64_t ld64(const Snap *s, uint64_t off)
{
    uint64_t v;
    memcpy(&v, s->file->data + off, 8);
    return GUINT64_FROM_LE(v);
}

/* ---- names, header, layout, metadata writer ---- */

static void test_type_names(void)
{
    static const char *names[] = { "unknown",       "CONFIG",         "DEVICE",
                                   "RAM_BLOCKS",    "PRESENT_BITMAP", "PAGE_CHECKSUMS",
                                   "ZEROED_BITMAP", "PARENT",         "WORKSET",
                                   "unknown" };
    for (uint32_t t = 0; t < G_N_ELEMENTS(names); t++) {
        g_assert_cmpstr(format_section_type_name(t), ==, names[t]);
    }
    g_assert_cmpstr(format_section_type_name(UINT32_MAX), ==, "unknown");
}

static FormatHeader sample_header(void)
{
    FormatHeader h = {
        .format_version = FORMAT_VERSION,
        .writer_version = 0x010203,
        .state = FORMAT_STATE_DONE,
        .compat_features = 1ull << 40,
        .created_ns = 123456789,
        .base_offset = 8192,
        .metadata_offset = 8192 + (2u << 20),
        .metadata_size = 64 * 3 + 100,
        .directory_checksum = 0x1122334455667788ull,
        .directory_entries = 3,
        .page_size = FORMAT_PAGE_SIZE,
        .area_align = FORMAT_AREA_ALIGN,
        .ram_size = 1u << 20,
        .present_pages = 17,
    };
    h.file_size = h.metadata_offset + h.metadata_size;
    for (int i = 0; i < 16; i++) {
        h.snapshot_uuid[i] = (uint8_t)i;
        h.vm_uuid[i] = (uint8_t)(255 - i);
    }
    return h;
}

static void test_header_round_trip(void)
{
    FormatHeader h = sample_header(), out;
    uint8_t buf[FORMAT_HEADER_SIZE];
    g_autoptr(GError) error = NULL;
    format_header_encode(&h, buf);

    /* The documented byte layout (FORMAT.md section 2). */
    g_assert_cmpmem(buf, 8, "\x89VMSNAP\n", 8);
    g_assert_cmpuint(GUINT32_FROM_LE(*(uint32_t *)(buf + 8)), ==, 4096);
    g_assert_cmpmem(buf + 20, 4, "DONE", 4);
    g_assert_cmpuint(buf[120], ==, 3);
    uint64_t sum;
    memcpy(&sum, buf + 4088, 8);
    g_assert_cmphex(GUINT64_FROM_LE(sum), ==, XXH3_64bits(buf, 4088));
    for (size_t i = 152; i < 4088; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }

    g_assert_true(format_header_decode(buf, 8192, &out, &error));
    g_assert_no_error(error);
    g_assert_cmpmem(&out, sizeof(out), &h, sizeof(h));

    /* base_offset must be where the header was read. */
    g_assert_false(format_header_decode(buf, 0, &out, &error));
    g_assert_cmpstr(error->message, ==,
                    "header at offset 0: base_offset at offset 80 is 8192, but the header was "
                    "read at offset 0");
    g_clear_error(&error);

    /* A checksum mismatch names both values. */
    buf[200] = 1;
    g_assert_false(format_header_decode(buf, 8192, &out, &error));
    g_autofree char *msg = g_strdup_printf(
        "header at offset 8192: header_checksum mismatch (stored 0x%016" G_GINT64_MODIFIER
        "x, computed 0x%016" G_GINT64_MODIFIER "x)",
        GUINT64_FROM_LE(sum), XXH3_64bits(buf, 4088));
    g_assert_cmpstr(error->message, ==, msg);
    g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT);
}

/* Header checks in the documented order, each with the field and its offset. */
static void expect_header(FormatHeader h, uint64_t at, int code, const char *message)
{
    uint8_t buf[FORMAT_HEADER_SIZE];
    FormatHeader out;
    g_autoptr(GError) error = NULL;
    format_header_encode(&h, buf);
    g_assert_false(format_header_decode(buf, at, &out, &error));
    g_assert_cmpstr(error->message, ==, message);
    g_assert_error(error, FORMAT_ERROR, code);
}

static void test_header_checks(void)
{
    FormatHeader h = sample_header();
    h.format_version = 2;
    expect_header(h, 8192, FORMAT_ERROR_UNSUPPORTED,
                  "header at offset 8192: format_version at offset 8204 is 2, this vmsnap reads "
                  "version 1");
    h = sample_header();
    h.incompat_features = 0x4;
    expect_header(h, 8192, FORMAT_ERROR_UNSUPPORTED,
                  "header at offset 8192: incompatible feature bits 0x4 unknown to this vmsnap "
                  "(incompat_features at offset 8224)");
    h.incompat_features = 0x5;
    expect_header(h, 8192, FORMAT_ERROR_UNSUPPORTED,
                  "header at offset 8192: incompatible feature bits 0x5 unknown to this vmsnap "
                  "(bit 0: DELTA, incremental snapshots) (incompat_features at offset 8224)");
    h = sample_header();
    h.state = 0x12345678;
    expect_header(h, 8192, FORMAT_ERROR_CORRUPT,
                  "header at offset 8192: state at offset 8212 is 0x12345678, expected \"PART\" "
                  "or \"DONE\"");
    h = sample_header();
    h.page_size = 8192;
    expect_header(h, 8192, FORMAT_ERROR_UNSUPPORTED,
                  "header at offset 8192: page_size at offset 8316 is 8192, this vmsnap supports "
                  "4096");
    h = sample_header();
    h.area_align = 2u << 20;
    expect_header(h, 8192, FORMAT_ERROR_UNSUPPORTED,
                  "header at offset 8192: area_align at offset 8320 is 2097152, expected 1048576 "
                  "for 4 KiB pages");
    h = sample_header();
    h.directory_entries = 0;
    expect_header(h, 8192, FORMAT_ERROR_CORRUPT,
                  "header at offset 8192: directory_entries at offset 8312 is 0, expected 1 to "
                  "4096");
    h.directory_entries = 4097;
    expect_header(h, 8192, FORMAT_ERROR_CORRUPT,
                  "header at offset 8192: directory_entries at offset 8312 is 4097, expected 1 to "
                  "4096");
    h = sample_header();
    h.metadata_offset += 8;
    h.file_size += 8;
    expect_header(h, 8192, FORMAT_ERROR_CORRUPT,
                  "header at offset 8192: metadata_offset at offset 8288 is 2105352, not a "
                  "4096-aligned offset after the header and 1048576 bytes of RAM");
    h = sample_header();
    h.file_size += 1;
    expect_header(h, 8192, FORMAT_ERROR_CORRUPT,
                  "header at offset 8192: metadata_size at offset 8296 is 292: the metadata must "
                  "hold the 192-byte directory and end at file_size 2105637");
    h = sample_header();
    h.present_pages = 257;
    expect_header(h, 8192, FORMAT_ERROR_CORRUPT,
                  "header at offset 8192: present_pages at offset 8336 is 257, more than the 256 "
                  "pages of RAM");
    h = sample_header();
    h.ram_size = 4095;
    expect_header(h, 8192, FORMAT_ERROR_CORRUPT,
                  "header at offset 8192: ram_size at offset 8328 is 4095, expected a non-zero "
                  "multiple of page_size up to 1125899906842624");

    /* Partial: the metadata fields are zero, file_size is the end of the areas. */
    h = sample_header();
    h.state = FORMAT_STATE_PARTIAL;
    expect_header(h, 8192, FORMAT_ERROR_CORRUPT,
                  "header at offset 8192: metadata_offset at offset 8288 is 2105344, must be 0 in "
                  "a partial header");
    h.metadata_offset = h.metadata_size = h.directory_checksum = 0;
    h.directory_entries = 0;
    h.present_pages = 0;
    h.file_size = 8192 + (2u << 20);
    uint8_t buf[FORMAT_HEADER_SIZE];
    FormatHeader out;
    g_autoptr(GError) error = NULL;
    format_header_encode(&h, buf);
    g_assert_true(format_header_decode(buf, 8192, &out, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(out.state, ==, FORMAT_STATE_PARTIAL);

    /* Magic, checked first. */
    buf[0] = 'x';
    g_assert_false(format_header_decode(buf, 8192, &out, &error));
    g_assert_cmpstr(error->message, ==, "header at offset 8192: not a vmsnap snapshot (bad magic)");
    g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_NOT_SNAPSHOT);
}

static void test_plan_layout(void)
{
    static const uint64_t bases[] = { 0, 4096, 12345, (1u << 20) - 4096, 5ull << 30 };
    for (size_t k = 0; k < G_N_ELEMENTS(bases); k++) {
        uint64_t base = bases[k];
        FormatBlock b[3] = {
            { .name = "a", .gpa = 0, .size = 3 * 4096, .page_size = 4096 },
            { .name = "b.2", .gpa = 1ull << 32, .size = (1u << 20) + 4096, .page_size = 4096 },
            { .name = "c_3-x", .gpa = 1ull << 40, .size = 4096, .page_size = 4096 },
        };
        uint64_t meta = 0;
        g_autoptr(GError) error = NULL;
        g_assert_true(format_plan_layout(base, b, 3, &meta, &error));
        g_assert_no_error(error);
        uint64_t prev_end = base + FORMAT_HEADER_SIZE;
        for (int i = 0; i < 3; i++) {
            g_assert_cmpuint(b[i].pages_offset % FORMAT_AREA_ALIGN, ==, 0);
            g_assert_cmpuint(b[i].pages_offset, >=, prev_end);
            /* the first aligned offset after the previous area */
            g_assert_cmpuint(b[i].pages_offset - prev_end, <, FORMAT_AREA_ALIGN);
            prev_end = b[i].pages_offset + b[i].size;
        }
        g_assert_cmpuint(meta % 4096, ==, 0);
        g_assert_cmpuint(meta, ==, prev_end);
    }

    struct {
        FormatBlock b;
        const char *message;
    } bad[] = {
        { { .name = "", .size = 4096, .page_size = 4096 },
          "RAM block 1 '': invalid name (1 to 31 characters of [A-Za-z0-9_.-])" },
        { { .name = "bad name", .size = 4096, .page_size = 4096 },
          "RAM block 1 'bad name': invalid name (1 to 31 characters of [A-Za-z0-9_.-])" },
        { { .name = "x", .gpa = 1ull << 33, .size = 0, .page_size = 4096 },
          "RAM block 1 'x': size 0 is not a non-zero multiple of 4096 up to 17592186044416" },
        { { .name = "x", .gpa = 1ull << 33, .size = 100, .page_size = 4096 },
          "RAM block 1 'x': size 100 is not a non-zero multiple of 4096 up to 17592186044416" },
        { { .name = "x", .gpa = 1ull << 33, .size = (16ull << 40) + 4096, .page_size = 4096 },
          "RAM block 1 'x': size 17592186048512 is not a non-zero multiple of 4096 up to "
          "17592186044416" },
        { { .name = "x", .gpa = 4097, .size = 4096, .page_size = 4096 },
          "RAM block 1 'x': gpa 0x1001 is not page aligned or the block wraps" },
        { { .name = "x", .gpa = 1ull << 33, .size = 8192, .page_size = 8192 },
          "RAM block 1 'x': page_size 8192, expected 4096" },
        { { .name = "x", .gpa = 1ull << 33, .size = 4096, .page_size = 4096, .flags = 1 },
          "RAM block 1 'x': reserved flags 0x1 are not zero" },
        { { .name = "low", .gpa = 1ull << 33, .size = 4096, .page_size = 4096 },
          "RAM block 1 'low': same name as block 0" },
        { { .name = "x", .gpa = 4096, .size = 4096, .page_size = 4096 },
          "RAM block 1 'x': guest-physical range [0x1000, 0x2000) overlaps block 0 'low'" },
    };
    for (size_t k = 0; k < G_N_ELEMENTS(bad); k++) {
        FormatBlock b[2] = { { .name = "low", .gpa = 0, .size = 1u << 20, .page_size = 4096 },
                             bad[k].b };
        uint64_t meta = 1;
        g_autoptr(GError) error = NULL;
        g_assert_false(format_plan_layout(0, b, 2, &meta, &error));
        g_assert_cmpstr(error->message, ==, bad[k].message);
        g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_INVALID);
    }

    g_autofree FormatBlock *many = g_new0(FormatBlock, 65);
    for (int i = 0; i < 65; i++) {
        g_snprintf(many[i].name, sizeof(many[i].name), "b%d", i);
        many[i].gpa = (uint64_t)i << 30;
        many[i].size = 4096;
        many[i].page_size = 4096;
    }
    uint64_t meta;
    g_autoptr(GError) error = NULL;
    g_assert_true(format_plan_layout(0, many, 64, &meta, &error));
    g_assert_false(format_plan_layout(0, many, 65, &meta, &error));
    g_assert_cmpstr(error->message, ==, "65 RAM blocks, expected 1 to 64");
    g_clear_error(&error);
    g_assert_false(format_plan_layout(0, many, 0, &meta, &error));
}

static void test_meta_writer(void)
{
    g_autoptr(FormatMetaWriter) m = format_meta_new(1u << 20);
    g_autoptr(GBytes) a = g_bytes_new("abc", 3);
    g_autoptr(GBytes) b = g_bytes_new("0123456789", 10);
    format_meta_add(m, FORMAT_SECTION_DEVICE, 2, 7, FORMAT_SECTION_FIELDS, "pic", a);
    format_meta_add(m, 99, 1, 0, 0, NULL, b);
    format_meta_add(m, 98, 1, 0, 0, "", NULL);
    FormatHeader h = { 0 };
    g_autoptr(GBytes) region = format_meta_finish(g_steal_pointer(&m), &h);
    gsize len;
    const uint8_t *p = g_bytes_get_data(region, &len);
    /* directory: 3 * 64; payloads at 192 (3 bytes), 200 (10), 216 (0). */
    g_assert_cmpuint(len, ==, 216);
    g_assert_cmpuint(h.metadata_offset, ==, 1u << 20);
    g_assert_cmpuint(h.metadata_size, ==, 216);
    g_assert_cmpuint(h.file_size, ==, (1u << 20) + 216);
    g_assert_cmpuint(h.directory_entries, ==, 3);
    g_assert_cmphex(h.directory_checksum, ==, XXH3_64bits(p, 192));
    static const uint8_t entry0[64] = {
        2,  0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0,          0,   192, 0,
        16, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, [40] = 'p', 'i', 'c',
    };
    uint64_t sum = GUINT64_TO_LE(XXH3_64bits("abc", 3));
    uint8_t want[64];
    memcpy(want, entry0, 64);
    memcpy(want + 32, &sum, 8);
    g_assert_cmpmem(p, 64, want, 64);
    g_assert_cmpmem(p + 192, 3, "abc", 3);
    g_assert_cmpmem(p + 195, 5, "\0\0\0\0\0", 5); /* padding */
    g_assert_cmpmem(p + 200, 10, "0123456789", 10);
    g_assert_cmpuint(p[64 + 40], ==, 0); /* NULL name is "" */
    uint64_t off2;
    memcpy(&off2, p + 128 + 16, 8);
    g_assert_cmpuint(GUINT64_FROM_LE(off2), ==, (1u << 20) + 216);
    g_assert_cmpmem(p + 210, 6, "\0\0\0\0\0\0", 6);

    /* Misuse is a programming error: a critical, and finish returns NULL. */
    if (g_test_undefined()) {
        FormatMetaWriter *bad = format_meta_new(0);
        format_meta_add(bad, FORMAT_SECTION_DEVICE, 1, 0, FORMAT_SECTION_FIELDS, "cpu", a);
        g_test_expect_message("vmsnap", G_LOG_LEVEL_CRITICAL, "*added twice*");
        format_meta_add(bad, FORMAT_SECTION_DEVICE, 1, 0, FORMAT_SECTION_FIELDS, "cpu", a);
        g_test_assert_expected_messages();
        g_assert_null(format_meta_finish(bad, &h));

        bad = format_meta_new(0);
        g_test_expect_message("vmsnap", G_LOG_LEVEL_CRITICAL, "*invalid name ''*");
        format_meta_add(bad, FORMAT_SECTION_DEVICE, 1, 0, FORMAT_SECTION_FIELDS, "", a);
        g_test_assert_expected_messages();
        g_assert_null(format_meta_finish(bad, &h));

        bad = format_meta_new(0);
        g_test_expect_message("vmsnap", G_LOG_LEVEL_CRITICAL, "*invalid name*");
        format_meta_add(bad, FORMAT_SECTION_DEVICE, 1, 0, 0, "a-name-of-24-characters-", a);
        g_test_assert_expected_messages();
        format_meta_free(bad);

        bad = format_meta_new(0);
        g_test_expect_message("vmsnap", G_LOG_LEVEL_CRITICAL, "*unknown flags 0x4*");
        format_meta_add(bad, 50, 1, 0, 4, "x", a);
        g_test_assert_expected_messages();
        format_meta_free(bad);
    }
}

/* ---- whole snapshots ---- */

static void check_valid(uint64_t base)
{
    SnapSpec spec = { .base = base };
    Snap *s = snap_build(&spec);
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_no_error(error);
    g_assert_nonnull(f);

    g_assert_cmpstr(f->what, ==, "vm.snap");
    g_assert_cmpuint(f->disk_size, ==, s->file->len);
    g_assert_cmpmem(&f->header, sizeof(f->header), &s->h, sizeof(s->h));
    g_assert_cmpuint(f->header.state, ==, FORMAT_STATE_DONE);
    g_assert_cmpuint(f->header.writer_version, ==, VMSNAP_VERSION_NUMBER);
    g_assert_cmpuint(f->n_sections, ==, 9);
    g_assert_cmpuint(f->n_blocks, ==, 2);
    for (unsigned b = 0; b < 2; b++) {
        const FormatBlock *blk = &f->blocks[b];
        g_assert_cmpstr(blk->name, ==, s->blocks[b].name);
        g_assert_cmpuint(blk->pages_offset, ==, s->blocks[b].pages_offset);
        g_assert_cmpuint(blk->pages_offset % FORMAT_AREA_ALIGN, ==, 0); /* absolute */
        g_assert_cmpuint(blk->pages_offset, >=, base + FORMAT_HEADER_SIZE);
        uint64_t pages = format_block_pages(blk);
        g_assert_cmpuint(format_snapshot_present_pages(f, b), ==, pages - (pages + 2) / 3);
        const uint64_t *bits = g_bytes_get_data(f->present[b], NULL);
        const uint64_t *sums = g_bytes_get_data(f->checksums[b], NULL);
        for (uint64_t i = 0; i < pages; i++) {
            g_assert_cmpint(format_bitmap_test(bits, i), ==, i % 3 != 0);
            const uint8_t *page = s->file->data + blk->pages_offset + i * 4096;
            uint64_t want = i % 3 != 0 ? XXH3_64bits(page, 4096) : 0;
            g_assert_cmphex(GUINT64_FROM_LE(sums[i]), ==, want);
        }
    }
    g_assert_cmpuint(f->header.present_pages, ==,
                     format_snapshot_present_pages(f, 0) + format_snapshot_present_pages(f, 1));
    g_assert_cmpuint(format_snapshot_present_pages(f, 2), ==, 0);

    /* CONFIG and devices are there, and their fields read back. */
    g_assert_nonnull(f->config);
    g_assert_cmpuint(f->config_version, ==, 1);
    g_autoptr(VmsnapFieldReader) r = vmsnap_fr_new(g_bytes_get_data(f->config, NULL),
                                                   g_bytes_get_size(f->config), "config", 0, 1);
    g_autofree char *name = NULL;
    g_assert_true(vmsnap_fr_str(r, "name", 64, &name));
    g_assert_cmpstr(name, ==, "test");
    const FormatSection *cpu1 = format_snapshot_find(f, FORMAT_SECTION_DEVICE, "cpu", 1);
    g_assert_nonnull(cpu1);
    g_assert_cmpuint(cpu1->version, ==, 1);
    g_assert_cmpuint(cpu1->offset % 8, ==, 0);
    const FormatSection *serial = format_snapshot_find(f, FORMAT_SECTION_DEVICE, NULL, 0);
    g_assert_nonnull(serial);
    g_assert_cmpstr(serial->name, ==, "cpu"); /* the first match in directory order */
    serial = format_snapshot_find(f, FORMAT_SECTION_DEVICE, "serial", 0);
    g_assert_nonnull(serial);
    g_assert_cmpuint(serial->version, ==, 3);
    unsigned si = (unsigned)(serial - f->sections);
    g_assert_cmpuint(g_bytes_get_size(format_snapshot_payload(f, si)), ==, 0);
    g_assert_null(format_snapshot_payload(f, f->n_sections));
    g_assert_null(format_snapshot_find(f, FORMAT_SECTION_DEVICE, "cpu", 2));
    g_assert_null(format_snapshot_find(f, FORMAT_SECTION_DEVICE, "pic", 0));

    /* DROP_CHECKSUMS: verified, then freed. */
    g_autoptr(FormatSnapshot) d = snap_parse(s, FORMAT_OPEN_DROP_CHECKSUMS, &error);
    g_assert_no_error(error);
    for (unsigned b = 0; b < 2; b++) {
        g_assert_null(d->checksums[b]);
        g_assert_nonnull(d->present[b]);
    }
    for (unsigned i = 0; i < d->n_sections; i++) {
        bool dropped = d->sections[i].type == FORMAT_SECTION_PAGE_CHECKSUMS;
        g_assert_true((format_snapshot_payload(d, i) == NULL) == dropped);
    }

    /* The same file read at a wrong base is refused. */
    if (base >= 4096) {
        MemFile m = { s->file->data, s->file->len };
        g_autoptr(FormatSnapshot) w =
            format_snapshot_parse(snap_mem_read, &m, "vm.snap", base - 4096, m.size, 0, &error);
        g_assert_null(w);
        assert_contains(error->message, "not a vmsnap snapshot");
        g_clear_error(&error);
    }
    snap_free(s);
}

static void test_valid(void)
{
    check_valid(0);
    check_valid(4096);
    check_valid(12345);
    check_valid((1u << 20) - 4096); /* the header ends exactly at the first area */
}

/* Every byte of the header, flipped, makes the file unreadable. */
static void test_flip_header(void)
{
    SnapSpec spec = { .base = 4096 };
    Snap *s = snap_build(&spec);
    uint8_t *hdr = s->file->data + 4096;
    unsigned magic = 0, checksum = 0;
    for (unsigned i = 0; i < FORMAT_HEADER_SIZE; i++) {
        for (unsigned mask = 0x01; mask <= 0x80; mask <<= 7) {
            hdr[i] ^= (uint8_t)mask;
            g_autoptr(GError) error = NULL;
            g_autoptr(FormatSnapshot) f = snap_parse(s, FORMAT_OPEN_ALLOW_PARTIAL, &error);
            g_assert_null(f);
            g_assert_error(error, FORMAT_ERROR,
                           (i < 8 ? FORMAT_ERROR_NOT_SNAPSHOT : FORMAT_ERROR_CORRUPT));
            if (i < 8) {
                g_assert_cmpstr(error->message, ==,
                                "vm.snap: header at offset 4096: not a vmsnap snapshot (bad "
                                "magic)");
                magic++;
            } else {
                assert_contains(error->message,
                                "vm.snap: header at offset 4096: header_checksum mismatch");
                checksum++;
            }
            hdr[i] ^= (uint8_t)mask;
        }
    }
    g_assert_cmpuint(magic, ==, 16);
    g_assert_cmpuint(checksum, ==, 2 * (4096 - 8));
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_no_error(error);
    snap_free(s);
}

/* With the header checksum recomputed, only the free-form fields may change:
 * every other byte is checked by some rule. */
static void test_flip_header_resealed(void)
{
    SnapSpec spec = { .base = 12345 };
    Snap *s = snap_build(&spec);
    uint8_t *hdr = s->file->data + 12345;
    /* snap_reseal() follows the header, so restore the whole file each time. */
    g_autoptr(GByteArray) orig = g_byte_array_new();
    g_byte_array_append(orig, s->file->data, s->file->len);
    for (unsigned i = 8; i < FORMAT_HEADER_SIZE - 8; i++) {
        if (i >= 112 && i < 120) {
            continue; /* directory_checksum: snap_reseal() rewrites it */
        }
        bool free_form = (i >= 16 && i < 20) || /* writer_version */
                         (i >= 24 && i < 32) || /* compat_features */
                         (i >= 40 && i < 80);   /* uuids, created_ns */
        hdr[i] ^= 0x10;
        snap_reseal(s);
        g_autoptr(GError) error = NULL;
        g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
        if (free_form) {
            g_assert_no_error(error);
        } else {
            if (f != NULL) {
                g_printerr("header byte %u flipped was accepted\n", i);
            }
            g_assert_null(f);
            g_assert_nonnull(error);
            g_assert_true(g_str_has_prefix(error->message, "vm.snap: "));
        }
        if (i >= 152 && error != NULL) {
            g_autofree char *want =
                g_strdup_printf("reserved byte at offset %u is 0x10, must be zero", 12345 + i);
            assert_contains(error->message, want);
        }
        memcpy(s->file->data, orig->data, orig->len);
    }
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_no_error(error);
    snap_free(s);
}

/* Every byte of the metadata region, flipped, makes the file unreadable. */
static void test_flip_metadata(void)
{
    SnapSpec spec = { .base = 0 };
    Snap *s = snap_build(&spec);
    uint64_t start = s->h.metadata_offset, end = s->h.file_size;
    g_assert_cmpuint(end - start, >, 9 * 64 + 300);
    unsigned padding_or_payload[2] = { 0, 0 };
    for (uint64_t i = start; i < end; i++) {
        s->file->data[i] ^= 0x04;
        g_autoptr(GError) error = NULL;
        g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
        if (f != NULL) {
            g_printerr("metadata byte at %" G_GUINT64_FORMAT " flipped was accepted\n", i);
        }
        g_assert_null(f);
        g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT);
        if (i < start + 9 * 64) {
            assert_contains(error->message, "section directory at offset");
        } else if (strstr(error->message, "outside every section") == NULL) {
            /* in a payload, not in the padding between payloads */
            assert_contains(error->message, "payload checksum mismatch");
            padding_or_payload[1]++;
        } else {
            padding_or_payload[0]++;
        }
        s->file->data[i] ^= 0x04;
    }
    g_assert_cmpuint(padding_or_payload[0], >, 0);
    g_assert_cmpuint(padding_or_payload[1], >, 500);
    snap_free(s);
}

/* Resealed random edits of the metadata: refused or accepted, never a crash or an
 * over-read (run under ASan). */
static void test_resealed_mutations(void)
{
    SnapSpec spec = { .base = 4096 };
    Snap *s = snap_build(&spec);
    g_autoptr(GByteArray) orig = g_byte_array_new();
    g_byte_array_append(orig, s->file->data, s->file->len);
    GRand *rand = g_rand_new_with_seed(99);
    uint64_t start = s->h.metadata_offset, len = s->h.file_size - start;
    unsigned refused = 0;
    for (int round = 0; round < 3000; round++) {
        memcpy(s->file->data, orig->data, orig->len);
        int edits = g_rand_int_range(rand, 1, 4);
        for (int e = 0; e < edits; e++) {
            uint64_t at = start + (uint64_t)g_rand_int_range(rand, 0, (gint32)len);
            s->file->data[at] = (uint8_t)g_rand_int(rand);
        }
        snap_reseal(s);
        g_autoptr(GError) error = NULL;
        g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
        g_assert_true((f == NULL) == (error != NULL));
        refused += f == NULL;
    }
    g_rand_free(rand);
    g_assert_cmpuint(refused, >, 100);
    snap_free(s);
}

static void test_truncated(void)
{
    SnapSpec spec = { .base = 12345 };
    Snap *s = snap_build(&spec);
    MemFile m = { s->file->data, 0 };
    uint64_t full = s->file->len;
    uint64_t lengths[] = { 0,
                           1,
                           4095,
                           12345,
                           12345 + 4095,
                           12345 + 4096,
                           1u << 20,
                           s->h.metadata_offset,
                           s->h.metadata_offset + 1,
                           full - 8,
                           full - 1 };
    for (size_t k = 0; k < G_N_ELEMENTS(lengths); k++) {
        m.size = lengths[k];
        g_autoptr(GError) error = NULL;
        g_autoptr(FormatSnapshot) f =
            format_snapshot_parse(snap_mem_read, &m, "vm.snap", 12345, m.size, 0, &error);
        g_assert_null(f);
        uint64_t needs = m.size < 12345 + 4096 ? 12345 + 4096 : full;
        g_autofree char *want = g_strdup_printf("vm.snap: truncated: the file is %" G_GUINT64_FORMAT
                                                " bytes, the snapshot needs "
                                                "%" G_GUINT64_FORMAT,
                                                m.size, needs);
        g_assert_cmpstr(error->message, ==, want);
        g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_TRUNCATED);
    }
    /* Every length in the metadata region. */
    for (uint64_t len = s->h.metadata_offset; len < full; len++) {
        m.size = len;
        g_autoptr(GError) error = NULL;
        g_autoptr(FormatSnapshot) f =
            format_snapshot_parse(snap_mem_read, &m, "vm.snap", 12345, m.size, 0, &error);
        g_assert_null(f);
        g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_TRUNCATED);
    }
    /* A larger file (the snapshot embedded before other data) is fine. */
    g_byte_array_set_size(s->file, (guint)full + 5000);
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_no_error(error);
    snap_free(s);
}

static void test_partial(void)
{
    SnapSpec spec = { .base = 4096, .partial = true };
    Snap *s = snap_build(&spec);
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_null(f);
    g_assert_cmpstr(error->message, ==,
                    "vm.snap: incomplete snapshot (state PART): the save did not finish");
    g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_PARTIAL);
    g_clear_error(&error);

    f = snap_parse(s, FORMAT_OPEN_ALLOW_PARTIAL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(f);
    g_assert_cmpuint(f->header.state, ==, FORMAT_STATE_PARTIAL);
    g_assert_cmpuint(f->n_sections, ==, 0);
    g_assert_cmpuint(f->n_blocks, ==, 0);
    g_assert_cmpuint(f->header.file_size, ==, s->file->len);
    g_assert_null(format_snapshot_find(f, FORMAT_SECTION_CONFIG, NULL, 0));
    snap_free(s);
}

static void test_features(void)
{
    SnapSpec spec = { .base = 0, .incompat = 1ull << 2 };
    Snap *s = snap_build(&spec);
    expect_fail(s, 0, FORMAT_ERROR_UNSUPPORTED,
                "vm.snap: header at offset 0: incompatible feature bits 0x4 unknown to this "
                "vmsnap");
    snap_free(s);

    spec = (SnapSpec){ .base = 0, .incompat = 1 };
    s = snap_build(&spec);
    expect_fail(s, FORMAT_OPEN_ALLOW_PARTIAL, FORMAT_ERROR_UNSUPPORTED, "DELTA");
    snap_free(s);

    spec = (SnapSpec){ .base = 0, .compat = (1ull << 5) | 1 };
    s = snap_build(&spec);
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_no_error(error);
    g_assert_cmphex(f->header.compat_features, ==, (1ull << 5) | 1);
    snap_free(s);
}

static void test_unknown_sections(void)
{
    g_autoptr(GError) error = NULL;
    SnapSpec spec = { .extra_type = 99 };
    Snap *s = snap_build(&spec);
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_no_error(error);
    const FormatSection *x = format_snapshot_find(f, 99, "extra", 0);
    g_assert_nonnull(x);
    g_assert_cmpuint(g_bytes_get_size(format_snapshot_payload(f, (unsigned)(x - f->sections))), ==,
                     13);
    snap_free(s);

    /* An unknown type with the FIELDS flag is carried, not interpreted. */
    spec = (SnapSpec){ .extra_type = 1000, .extra_flags = FORMAT_SECTION_FIELDS };
    s = snap_build(&spec);
    g_autoptr(FormatSnapshot) f2 = snap_parse(s, 0, &error);
    g_assert_no_error(error);
    snap_free(s);

    spec = (SnapSpec){ .extra_type = 99, .extra_flags = FORMAT_SECTION_REQUIRED };
    s = snap_build(&spec);
    expect_fail(s, 0, FORMAT_ERROR_UNSUPPORTED, "section type 99 'extra' instance 0 at offset ");
    expect_fail(s, 0, FORMAT_ERROR_UNSUPPORTED,
                "section type 99 (unknown) is required by the file but unknown to this vmsnap");
    snap_free(s);

    /* WORKSET is reserved: ignored unless required. */
    spec = (SnapSpec){ .extra_type = FORMAT_SECTION_WORKSET };
    s = snap_build(&spec);
    g_autoptr(FormatSnapshot) f3 = snap_parse(s, 0, &error);
    g_assert_no_error(error);
    snap_free(s);
    spec =
        (SnapSpec){ .extra_type = FORMAT_SECTION_WORKSET, .extra_flags = FORMAT_SECTION_REQUIRED };
    s = snap_build(&spec);
    expect_fail(s, 0, FORMAT_ERROR_UNSUPPORTED, "section WORKSET 'extra'");
    snap_free(s);

    /* Delta sections in a full snapshot. */
    spec =
        (SnapSpec){ .extra_type = FORMAT_SECTION_PARENT, .extra_flags = FORMAT_SECTION_REQUIRED };
    s = snap_build(&spec);
    expect_fail(s, 0, FORMAT_ERROR_UNSUPPORTED,
                "PARENT sections belong to incremental snapshots (incompat bit DELTA)");
    snap_free(s);
}

/* Edits a RAM_BLOCKS entry field and reseals. */
static void set_block(Snap *s, unsigned b, unsigned field, uint64_t v, bool wide)
{
    int i = snap_find(s, FORMAT_SECTION_RAM_BLOCKS, 0);
    g_assert_cmpint(i, >=, 0);
    uint64_t at = snap_payload(s, (unsigned)i, NULL) + 8 + 64 * b + field;
    if (wide) {
        st64(s, at, v);
    } else {
        st32(s, at, (uint32_t)v);
    }
    snap_reseal(s);
}

static void test_layout_rules(void)
{
    SnapSpec spec = { .base = 12345 };
    Snap *s = snap_build(&spec);
    g_autoptr(GByteArray) orig = g_byte_array_new();
    g_byte_array_append(orig, s->file->data, s->file->len);
    int rb = snap_find(s, FORMAT_SECTION_RAM_BLOCKS, 0);
    g_autofree char *rb_at = g_strdup_printf("vm.snap: section RAM_BLOCKS 'ram-blocks' instance 0 "
                                             "at offset %" G_GUINT64_FORMAT ": ",
                                             snap_payload(s, (unsigned)rb, NULL));
#define RESET() memcpy(s->file->data, orig->data, orig->len)

    /* Overlapping page areas. */
    set_block(s, 1, 48, s->blocks[0].pages_offset, true);
    g_autofree char *m1 =
        g_strdup_printf("%sRAM block 1 'ram-above-4g': page area at %" G_GUINT64_FORMAT
                        " overlaps the page area of block 0 'ram-below-4g'",
                        rb_at, s->blocks[0].pages_offset);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, m1);
    RESET();

    /* Misaligned pages_offset. */
    set_block(s, 1, 48, s->blocks[1].pages_offset + 4096, true);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "RAM block 1 'ram-above-4g': page area [");
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, ") is not a multiple of 1048576 between the header");
    RESET();

    /* A page area inside the header (base 12345: offset 0 is before it). */
    set_block(s, 0, 48, 0, true);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "RAM block 0 'ram-below-4g': page area [0, +81920)");
    RESET();

    /* A page area running into the metadata. */
    set_block(s, 1, 48, s->h.metadata_offset, true);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "RAM block 1 'ram-above-4g': page area [");
    RESET();

    /* Guest-physical overlap, reported with the entry offset. */
    set_block(s, 1, 32, 4096, true);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "overlaps block 0 'ram-below-4g'");
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "(entry at offset ");
    RESET();

    /* Block size not matching the header's ram_size. */
    set_block(s, 1, 40, 66 * 4096, true);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT,
                "the blocks add up to 352256 bytes, the header's "
                "ram_size is 356352");
    RESET();

    /* Block flags, page size, names. */
    set_block(s, 0, 60, 1, false);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "reserved flags 0x1 are not zero");
    RESET();
    set_block(s, 0, 56, 8192, false);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "page_size 8192, expected 4096");
    RESET();
    s->file->data[snap_payload(s, (unsigned)rb, NULL) + 8 + 20] = 'z'; /* after the NUL */
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "RAM block 0 (entry at offset ");
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "name padding is not zero");
    RESET();
    st32(s, snap_payload(s, (unsigned)rb, NULL), 0); /* count 0 */
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "count at offset ");
    RESET();

    /* ram_size in the header must be the sum. */
    st64(s, 12345 + 136, s->h.ram_size + 4096);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT,
                "the blocks add up to 356352 bytes, the header's "
                "ram_size is 360448");
    RESET();

    /* Bitmap: a bit past the last page (block 1 has 67 pages). */
    int bm = snap_find(s, FORMAT_SECTION_PRESENT_BITMAP, 1);
    uint64_t bm_at = snap_payload(s, (unsigned)bm, NULL);
    st64(s, bm_at + 8, ld64(s, bm_at + 8) | (1ull << 5));
    snap_reseal(s);
    g_autofree char *m2 = g_strdup_printf(
        "vm.snap: section PRESENT_BITMAP 'ram-above-4g' instance 1 at offset %" G_GUINT64_FORMAT
        ": bit 69 is set, past the last page 66",
        bm_at);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, m2);
    RESET();

    /* A bitmap bit for a page that has a zero checksum... */
    st64(s, bm_at, ld64(s, bm_at) | 1);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT,
                "the bitmaps have 58 present pages, the header's "
                "present_pages (at offset 12489) says 57");
    RESET();

    /* ... and a checksum for an absent page (page 3 of block 0). */
    int cs = snap_find(s, FORMAT_SECTION_PAGE_CHECKSUMS, 0);
    uint64_t cs_at = snap_payload(s, (unsigned)cs, NULL);
    st64(s, cs_at + 3 * 8, 0x5555);
    snap_reseal(s);
    g_autofree char *m3 = g_strdup_printf(
        "vm.snap: section PAGE_CHECKSUMS 'ram-below-4g' instance 0 at offset %" G_GUINT64_FORMAT
        ": page 3 is not present but its checksum (at offset %" G_GUINT64_FORMAT
        ") is 0x0000000000005555",
        cs_at, cs_at + 24);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, m3);
    expect_fail(s, FORMAT_OPEN_DROP_CHECKSUMS, FORMAT_ERROR_CORRUPT, m3);
    RESET();

    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_no_error(error);
#undef RESET
    snap_free(s);
}

/* Directory entry edits, resealed: each breaks one rule. */
static void test_directory_rules(void)
{
    SnapSpec spec = { .base = 4096 };
    Snap *s = snap_build(&spec);
    g_autoptr(GByteArray) orig = g_byte_array_new();
    g_byte_array_append(orig, s->file->data, s->file->len);
    int cpu1 = snap_find(s, FORMAT_SECTION_DEVICE, 1);
    int cpu0 = snap_find(s, FORMAT_SECTION_DEVICE, 0);
    uint64_t e1 = snap_dir_entry(s, (unsigned)cpu1);
    uint64_t e0 = snap_dir_entry(s, (unsigned)cpu0);
#define RESET() memcpy(s->file->data, orig->data, orig->len)

    /* Duplicate (type, name, instance). */
    st32(s, e1 + 8, 0);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "same type, name and instance as directory entry");
    RESET();

    /* Overlapping payloads. */
    st64(s, e1 + 16, ld64(s, e0 + 16) + 8);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "payload overlaps the payload of directory entry");
    RESET();

    /* A payload inside the directory, one past the end, one misaligned. */
    st64(s, e1 + 16, s->h.metadata_offset);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "is not 8-aligned inside the metadata region");
    RESET();
    st64(s, e1 + 16, s->h.file_size);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "is not 8-aligned inside the metadata region");
    RESET();
    st64(s, e1 + 16, ld64(s, e1 + 16) + 1);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "is not 8-aligned inside the metadata region");
    RESET();

    /* Oversized payload. */
    st64(s, e1 + 24, (256ull << 20) + 1);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "payload size 268435457 over the limit");
    RESET();

    /* Shrinking a payload leaves a non-zero byte outside every section. */
    st64(s, e1 + 24, ld64(s, e1 + 24) - 1);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "outside every section, must be zero");
    RESET();

    /* Reserved flag bit, version 0, flags of a known type, names. */
    st32(s, e1 + 12, 0x7);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "section DEVICE 'cpu' instance 1 at offset ");
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "reserved flag bits 0x4 are set");
    RESET();
    st32(s, e1 + 4, 0);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "version 0");
    RESET();
    st32(s, e1 + 12, FORMAT_SECTION_REQUIRED);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "flags 0x2, expected 0x3");
    RESET();
    memset(s->file->data + e1 + 40, 0, 24);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "(type 2): name is empty");
    RESET();
    s->file->data[e1 + 40] = '/';
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "name has a character outside [A-Za-z0-9_.-]");
    RESET();
    memset(s->file->data + e1 + 40, 'a', 24);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "name is not NUL-terminated");
    RESET();

    /* Versions of the RAM sections are this reader's. */
    int cs = snap_find(s, FORMAT_SECTION_PAGE_CHECKSUMS, 1);
    st32(s, snap_dir_entry(s, (unsigned)cs) + 4, 2);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_UNSUPPORTED, "version 2, this vmsnap reads version 1");
    RESET();

    /* A per-block section for a block that does not exist, and a missing one. */
    st32(s, snap_dir_entry(s, (unsigned)cs) + 8, 2);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "instance 2, but there are 2 RAM blocks");
    RESET();
    st32(s, snap_dir_entry(s, (unsigned)cs) + 0, 77); /* now an unknown, ignored type */
    st32(s, snap_dir_entry(s, (unsigned)cs) + 12, 0);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT,
                "vm.snap: no PAGE_CHECKSUMS section for RAM block 1 'ram-above-4g'");
    RESET();

    /* CONFIG: missing, or a second one. */
    int cfg = snap_find(s, FORMAT_SECTION_CONFIG, 0);
    st32(s, snap_dir_entry(s, (unsigned)cfg), 77);
    st32(s, snap_dir_entry(s, (unsigned)cfg) + 12, FORMAT_SECTION_FIELDS);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "vm.snap: no CONFIG section");
    RESET();
    st32(s, e1, FORMAT_SECTION_CONFIG);
    st32(s, e1 + 8, 0);
    snap_reseal(s);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "a second CONFIG section");
    RESET();

    /* A DEVICE payload that is not well-formed fields. */
    uint64_t p1 = snap_payload(s, (unsigned)cpu1, NULL);
    s->file->data[p1] = 0x42;
    snap_reseal(s);
    g_autofree char *m =
        g_strdup_printf("vm.snap: section DEVICE 'cpu' instance 1 at offset %" G_GUINT64_FORMAT
                        ": payload offset 0: unknown field kind",
                        p1);
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, m);
    RESET();

    /* Directory checksum in the header. */
    st64(s, 4096 + 112, ld64(s, 4096 + 112) ^ 1);
    st64(s, 4096 + 4088, XXH3_64bits(s->file->data + 4096, 4088));
    expect_fail(s, 0, FORMAT_ERROR_CORRUPT, "section directory at offset ");
    RESET();

    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f = snap_parse(s, 0, &error);
    g_assert_no_error(error);
#undef RESET
    snap_free(s);
}

/* A read callback failing is passed through, unchanged. */
static bool failing_read(void *opaque, uint64_t offset, void *buf, size_t len, GError **error)
{
    unsigned *calls = opaque;
    if ((*calls)-- == 0) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO, "disk.img: EIO at %" G_GUINT64_FORMAT,
                    offset);
        return false;
    }
    memset(buf, 0, len);
    return true;
}

typedef struct {
    MemFile m;
    unsigned left; /* reads that succeed before one fails */
} CountedRead;

static bool counted_read(void *opaque, uint64_t offset, void *buf, size_t len, GError **error)
{
    CountedRead *c = opaque;
    if (c->left-- == 0) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO, "EIO");
        return false;
    }
    return snap_mem_read(&c->m, offset, buf, len, error);
}

static void test_read_errors(void)
{
    unsigned calls = 0;
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) f =
        format_snapshot_parse(failing_read, &calls, "disk.img", 0, 1u << 30, 0, &error);
    g_assert_null(f);
    g_assert_cmpstr(error->message, ==, "disk.img: EIO at 0");
    g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_IO);

    /* Failing at each read of a valid snapshot in turn. */
    SnapSpec spec = { .base = 0 };
    Snap *s = snap_build(&spec);
    for (unsigned n = 0;; n++) {
        CountedRead ctx = { { s->file->data, s->file->len }, n };
        g_clear_error(&error);
        FormatSnapshot *p =
            format_snapshot_parse(counted_read, &ctx, "vm.snap", 0, s->file->len, 0, &error);
        if (p != NULL) {
            g_assert_cmpuint(n, >, 5);
            format_snapshot_free(p);
            break;
        }
        g_assert_cmpstr(error->message, ==, "EIO");
    }
    snap_free(s);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/format/type-names", test_type_names);
    g_test_add_func("/format/header/round-trip", test_header_round_trip);
    g_test_add_func("/format/header/checks", test_header_checks);
    g_test_add_func("/format/plan-layout", test_plan_layout);
    g_test_add_func("/format/meta-writer", test_meta_writer);
    g_test_add_func("/format/parse/valid", test_valid);
    g_test_add_func("/format/parse/flip-header", test_flip_header);
    g_test_add_func("/format/parse/flip-header-resealed", test_flip_header_resealed);
    g_test_add_func("/format/parse/flip-metadata", test_flip_metadata);
    g_test_add_func("/format/parse/resealed-mutations", test_resealed_mutations);
    g_test_add_func("/format/parse/truncated", test_truncated);
    g_test_add_func("/format/parse/partial", test_partial);
    g_test_add_func("/format/parse/features", test_features);
    g_test_add_func("/format/parse/unknown-sections", test_unknown_sections);
    g_test_add_func("/format/parse/layout-rules", test_layout_rules);
    g_test_add_func("/format/parse/directory-rules", test_directory_rules);
    g_test_add_func("/format/parse/read-errors", test_read_errors);
    return g_test_run();
}
