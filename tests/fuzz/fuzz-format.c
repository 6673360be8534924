/*
 * Fuzz target for the snapshot parser and the fields walker/reader.
 *
 * The input is used three ways:
 *  1. as a whole snapshot file, read at base 0;
 *  2. "sparse": its first 4096 bytes are a header, placed at the header's own
 *     base_offset, and the rest is the metadata, placed at the header's
 *     metadata_offset (or file_size for a partial header); every other byte of
 *     the virtual file reads as zero. The parser never reads page areas, so this
 *     lets a few-KiB input describe a valid snapshot whose page areas start at
 *     1 MiB, and lets the fuzzer reach every check past the header;
 *  3. as a fields payload, walked by vmsnap_fields_print() and read by a
 *     CONFIG-like reader.
 *  4. sparse and "re-sealed": before parsing, every payload checksum, the
 *     directory checksum and the header checksum are recomputed, so mutations
 *     get past the checksums to the rules behind them.
 * Every FIELDS payload of a parsed snapshot is printed and read as well.
 */
#include <stdio.h>
#include <string.h>
#include <vmsnap/fields.h>

#include <xxhash.h>

#include "format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const uint8_t *data;
    size_t size;
    uint64_t base; /* sparse: where data[0..4096) lies */
    uint64_t meta; /* sparse: where data[4096..) lies */
    uint64_t disk_size;
    bool sparse;
} Input;

/* Copies the part of [src_at, src_at + n) that overlaps [off, off + len). */
static void overlay(uint8_t *buf, uint64_t off, size_t len, const uint8_t *src, uint64_t src_at,
                    size_t n)
{
    uint64_t lo = MAX(off, src_at), hi = MIN(off + len, src_at + n);
    if (lo < hi) {
        memcpy(buf + (lo - off), src + (lo - src_at), (size_t)(hi - lo));
    }
}

static bool input_read(void *opaque, uint64_t offset, void *buf, size_t len, GError **error)
{
    const Input *in = opaque;
    if (offset > in->disk_size || len > in->disk_size - offset) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO, "fuzz: read past the end");
        return false;
    }
    if (!in->sparse) {
        memcpy(buf, in->data + offset, len);
        return true;
    }
    memset(buf, 0, len);
    overlay(buf, offset, len, in->data + FORMAT_HEADER_SIZE, in->meta,
            in->size - FORMAT_HEADER_SIZE);
    overlay(buf, offset, len, in->data, in->base, FORMAT_HEADER_SIZE); /* the header wins */
    return true;
}

/* Reads a payload as a CONFIG version 1 (FORMAT.md section 7). */
static void read_config(const void *data, size_t len)
{
    g_autoptr(GError) error = NULL;
    VmsnapFieldReader *r = vmsnap_fr_new(data, len, "config", 0, 1);
    g_autofree char *name = NULL, *uuid = NULL, *kernel = NULL, *cmdline = NULL, *state = NULL;
    uint64_t memory, hash;
    uint32_t cpus;
    vmsnap_fr_str(r, "name", 256, &name);
    vmsnap_fr_str(r, "uuid", 64, &uuid);
    vmsnap_fr_u64(r, "memory", &memory);
    vmsnap_fr_u32(r, "cpus", &cpus);
    vmsnap_fr_str(r, "kernel", 4096, &kernel);
    vmsnap_fr_u64(r, "kernel_xxh3", &hash);
    vmsnap_fr_str(r, "cmdline", 4096, &cmdline);
    vmsnap_fr_str(r, "run_state", 64, &state);
    vmsnap_fr_finish(r, &error);
}

/* Reads a payload with nested structs and arrays, as a device might. */
static void read_device(const void *data, size_t len)
{
    g_autoptr(GError) error = NULL;
    VmsnapFieldReader *r = vmsnap_fr_new(data, len, "cpu", 0, 1);
    uint64_t v;
    uint32_t n = 0;
    uint8_t xsave[4];
    vmsnap_fr_struct_begin(r, "regs");
    vmsnap_fr_u64(r, "rip", &v);
    vmsnap_fr_u64(r, "rflags", &v);
    vmsnap_fr_struct_end(r);
    vmsnap_fr_array_begin(r, "msrs", 64, &n);
    for (uint32_t i = 0; i < n && !vmsnap_fr_failed(r); i++) {
        vmsnap_fr_u64(r, NULL, &v);
    }
    vmsnap_fr_array_end(r);
    vmsnap_fr_bytes(r, "xsave", xsave, sizeof(xsave));
    vmsnap_fr_finish(r, &error);
}

static void walk_fields(const void *data, size_t len)
{
    g_autoptr(GString) out = g_string_new(NULL);
    g_autoptr(GError) error = NULL;
    bool ok = vmsnap_fields_print(data, len, "f", len % 2 == 0, out, &error);
    g_autoptr(GError) error2 = NULL;
    if (vmsnap_fields_check(data, len, &error2) != ok) {
        __builtin_trap(); /* the checker and the printer must agree */
    }
    read_config(data, len);
    read_device(data, len);
}

static void parse(const Input *in, unsigned flags)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(FormatSnapshot) s = format_snapshot_parse(input_read, (void *)in, "fuzz", in->base,
                                                        in->disk_size, flags, &error);
#ifdef FUZZ_DEBUG
    /* -DFUZZ_DEBUG: say what each parse concluded (to check the seed corpus). */
    fprintf(stderr, "%s flags %u: %s\n", in->sparse ? "sparse" : "plain", flags,
            s != NULL ? "ok" : error->message);
#endif
    if (s == NULL) {
        if (error == NULL) {
            __builtin_trap(); /* every refusal has a reason */
        }
        return;
    }
    for (unsigned i = 0; i < s->n_sections; i++) {
        GBytes *p = format_snapshot_payload(s, i);
        if (p != NULL && (s->sections[i].flags & FORMAT_SECTION_FIELDS)) {
            walk_fields(g_bytes_get_data(p, NULL), g_bytes_get_size(p));
        }
        format_snapshot_find(s, s->sections[i].type, s->sections[i].name, s->sections[i].instance);
    }
    for (unsigned b = 0; b < s->n_blocks; b++) {
        if (format_snapshot_present_pages(s, b) > format_block_pages(&s->blocks[b])) {
            __builtin_trap();
        }
    }
}

static uint64_t ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_LE(v);
}

static void st64(uint8_t *p, uint64_t v)
{
    v = GUINT64_TO_LE(v);
    memcpy(p, &v, 8);
}

/* Recomputes the checksums of a sparse input in place (see 4. above). */
static void reseal(uint8_t *data, size_t size, uint64_t meta)
{
    uint8_t *hdr = data, *region = data + FORMAT_HEADER_SIZE;
    size_t region_size = size - FORMAT_HEADER_SIZE;
    uint32_t n;
    memcpy(&n, hdr + 120, 4);
    n = GUINT32_FROM_LE(n);
    if ((uint64_t)n * FORMAT_DIR_ENTRY_SIZE <= region_size) {
        for (uint32_t i = 0; i < n; i++) {
            uint8_t *d = region + (size_t)i * FORMAT_DIR_ENTRY_SIZE;
            uint64_t off = ld64(d + 16), len = ld64(d + 24);
            if (off >= meta && off - meta <= region_size && len <= region_size - (off - meta)) {
                st64(d + 32, XXH3_64bits(region + (off - meta), (size_t)len));
            }
        }
        st64(hdr + 112, XXH3_64bits(region, (size_t)n * FORMAT_DIR_ENTRY_SIZE));
    }
    st64(hdr + 4088, XXH3_64bits(hdr, 4088));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Input plain = { .data = data, .size = size, .disk_size = size };
    parse(&plain, 0);
    parse(&plain, FORMAT_OPEN_ALLOW_PARTIAL);

    if (size >= FORMAT_HEADER_SIZE) {
        /* Offsets far beyond any real file are clamped to keep the arithmetic simple. */
        const uint64_t limit = 1ull << 48;
        uint64_t base = ld64(data + 80);
        uint64_t meta = ld64(data + 96);
        if (meta == 0) {
            meta = ld64(data + 88); /* a partial header: file_size */
        }
        if (base < limit && meta < limit) {
            Input sparse = {
                .data = data, .size = size, .base = base, .meta = meta, .sparse = true
            };
            sparse.disk_size = MAX(base + FORMAT_HEADER_SIZE, meta + (size - FORMAT_HEADER_SIZE));
            parse(&sparse, 0);
            parse(&sparse, FORMAT_OPEN_ALLOW_PARTIAL | FORMAT_OPEN_DROP_CHECKSUMS);

            g_autofree uint8_t *copy = g_memdup2(data, size);
            reseal(copy, size, meta);
            sparse.data = copy;
            parse(&sparse, FORMAT_OPEN_ALLOW_PARTIAL);
        }
    }

    walk_fields(data, size);
    return 0;
}
