/*
 * Reading a snapshot (docs/FORMAT.md): the header, the section directory and every
 * payload, each bounded against the header and the file before it is read and
 * verified against its checksum. The file is hostile: nothing is allocated or read
 * before its size has been checked.
 */
#include "parse.h"

#include <inttypes.h>
#include <xxhash.h>

/* Gaps in the metadata region are read and checked in chunks of this size. */
#define GAP_CHUNK (64u << 10)

bool parse_error(Parser *p, GError **error, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, FORMAT_ERROR, code, "%s: %s", p->s->what, msg);
    return false;
}

bool parse_section_error(Parser *p, unsigned i, GError **error, int code, const char *fmt, ...)
{
    const FormatSection *sec = &p->s->sections[i];
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_autofree char *type =
        sec->type >= FORMAT_SECTION_CONFIG && sec->type <= FORMAT_SECTION_WORKSET
            ? g_strdup(format_section_type_name(sec->type))
            : g_strdup_printf("type %u", sec->type);
    g_set_error(error, FORMAT_ERROR, code,
                "%s: section %s '%s' instance %u at offset %" PRIu64 ": %s", p->s->what, type,
                sec->name, sec->instance, sec->offset, msg);
    return false;
}

static bool truncated(Parser *p, uint64_t needs, GError **error)
{
    return parse_error(p, error, FORMAT_ERROR_TRUNCATED,
                       "truncated: the file is %" PRIu64 " bytes, the snapshot needs %" PRIu64,
                       p->s->disk_size, needs);
}

/* Decodes and bounds the directory entries; the directory checksum is verified. */
static bool parse_directory(Parser *p, GError **error)
{
    FormatSnapshot *s = p->s;
    const FormatHeader *h = &s->header;
    unsigned n = h->directory_entries;
    size_t dir_size = (size_t)n * FORMAT_DIR_ENTRY_SIZE;
    uint64_t dir_end = h->metadata_offset + dir_size;
    g_autofree uint8_t *dir = g_malloc(dir_size);

    if (!p->read(p->opaque, h->metadata_offset, dir, dir_size, error)) {
        return false;
    }
    uint64_t computed = XXH3_64bits(dir, dir_size);
    if (computed != h->directory_checksum) {
        return parse_error(p, error, FORMAT_ERROR_CORRUPT,
                           "section directory at offset %" PRIu64
                           ": checksum mismatch (stored 0x%016" PRIx64 ", computed 0x%016" PRIx64
                           ")",
                           h->metadata_offset, h->directory_checksum, computed);
    }
    s->sections = g_new0(FormatSection, n);
    s->payloads = g_new0(GBytes *, n);
    s->n_sections = n;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *d = dir + (size_t)i * FORMAT_DIR_ENTRY_SIZE;
        uint64_t at = h->metadata_offset + (uint64_t)i * FORMAT_DIR_ENTRY_SIZE;
        FormatSection *sec = &s->sections[i];
        const char *why = NULL;
        sec->type = le32_load(d + DIR_TYPE);
        sec->version = le32_load(d + DIR_VERSION);
        sec->instance = le32_load(d + DIR_INSTANCE);
        sec->flags = le32_load(d + DIR_FLAGS);
        sec->offset = le64_load(d + DIR_OFFSET);
        sec->size = le64_load(d + DIR_SIZE);
        sec->checksum = le64_load(d + DIR_CHECKSUM);
        if (!format_name_decode(d + DIR_NAME, DIR_NAME_SIZE, sec->name,
                                sec->type != FORMAT_SECTION_DEVICE, &why)) {
            return parse_error(p, error, FORMAT_ERROR_CORRUPT,
                               "directory entry %u at offset %" PRIu64 " (type %u): %s", i, at,
                               sec->type, why);
        }
        if (sec->version == 0) {
            return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT, "version 0");
        }
        if ((sec->flags & ~FORMAT_SECTION_FLAGS_KNOWN) != 0) {
            return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT,
                                       "reserved flag bits 0x%x are set (directory entry %u "
                                       "at offset %" PRIu64 ")",
                                       sec->flags & ~FORMAT_SECTION_FLAGS_KNOWN, i, at);
        }
        if (sec->size > FORMAT_MAX_SECTION_SIZE) {
            return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT,
                                       "payload size %" PRIu64 " over the limit of %llu bytes",
                                       sec->size, FORMAT_MAX_SECTION_SIZE);
        }
        if (sec->offset % 8 != 0 || sec->offset < dir_end || sec->offset > h->file_size ||
            sec->size > h->file_size - sec->offset) {
            return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT,
                                       "payload [%" PRIu64 ", +%" PRIu64
                                       ") is not 8-aligned inside the metadata region [%" PRIu64
                                       ", %" PRIu64 ")",
                                       sec->offset, sec->size, dir_end, h->file_size);
        }
    }
    return true;
}

/* qsort comparators over arrays of section pointers (so no context is needed). */
static int by_identity(const void *a, const void *b)
{
    const FormatSection *x = *(const FormatSection *const *)a;
    const FormatSection *y = *(const FormatSection *const *)b;
    if (x->type != y->type) {
        return x->type < y->type ? -1 : 1;
    }
    if (x->instance != y->instance) {
        return x->instance < y->instance ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

static int by_offset(const void *a, const void *b)
{
    const FormatSection *x = *(const FormatSection *const *)a;
    const FormatSection *y = *(const FormatSection *const *)b;
    if (x->offset != y->offset) {
        return x->offset < y->offset ? -1 : 1;
    }
    if (x->size != y->size) {
        return x->size < y->size ? -1 : 1;
    }
    return x < y ? -1 : x > y;
}

/* Reads [off, end) and checks that every byte is zero. */
static bool check_gap(Parser *p, uint64_t off, uint64_t end, GError **error)
{
    g_autofree uint8_t *buf = NULL;
    while (off < end) {
        size_t n = (size_t)MIN(end - off, GAP_CHUNK);
        if (buf == NULL) {
            buf = g_malloc(n);
        }
        if (!p->read(p->opaque, off, buf, n, error)) {
            return false;
        }
        for (size_t i = 0; i < n; i++) {
            if (buf[i] != 0) {
                return parse_error(p, error, FORMAT_ERROR_CORRUPT,
                                   "metadata byte at offset %" PRIu64
                                   " is 0x%02x, outside every section, must be zero",
                                   off + i, buf[i]);
            }
        }
        off += n;
    }
    return true;
}

/* Unique (type, name, instance); payloads do not overlap; bytes between them are zero. */
static bool check_placement(Parser *p, GError **error)
{
    FormatSnapshot *s = p->s;
    unsigned n = s->n_sections;
    g_autofree const FormatSection **sorted = g_new(const FormatSection *, n);
    for (unsigned i = 0; i < n; i++) {
        sorted[i] = &s->sections[i];
    }
    qsort(sorted, n, sizeof(*sorted), by_identity);
    for (unsigned k = 1; k < n; k++) {
        if (by_identity(&sorted[k - 1], &sorted[k]) == 0) {
            unsigned a = (unsigned)(sorted[k - 1] - s->sections);
            unsigned b = (unsigned)(sorted[k] - s->sections);
            return parse_section_error(p, MAX(a, b), error, FORMAT_ERROR_CORRUPT,
                                       "same type, name and instance as directory entry %u",
                                       MIN(a, b));
        }
    }
    qsort(sorted, n, sizeof(*sorted), by_offset);

    uint64_t pos = s->header.metadata_offset + (uint64_t)n * FORMAT_DIR_ENTRY_SIZE;
    for (unsigned k = 0; k < n; k++) {
        const FormatSection *sec = sorted[k];
        if (sec->offset < pos) {
            /* k > 0: the first payload starts after the directory (parse_directory). */
            return parse_section_error(p, (unsigned)(sec - s->sections), error,
                                       FORMAT_ERROR_CORRUPT,
                                       "payload overlaps the payload of directory entry %u",
                                       (unsigned)(sorted[k - 1] - s->sections));
        }
        if (!check_gap(p, pos, sec->offset, error)) {
            return false;
        }
        pos = sec->offset + sec->size;
    }
    return check_gap(p, pos, s->header.file_size, error);
}

/* Reads each payload and verifies its checksum. */
static bool read_payloads(Parser *p, GError **error)
{
    FormatSnapshot *s = p->s;
    for (unsigned i = 0; i < s->n_sections; i++) {
        const FormatSection *sec = &s->sections[i];
        size_t size = (size_t)sec->size;
        if (p->map && size >= FORMAT_MAP_MIN) {
            s->payloads[i] = p->map(p->opaque, sec->offset, size, error);
            if (!s->payloads[i])
                return false;
        } else {
            uint8_t *buf = g_malloc(size);
            if (size > 0 && !p->read(p->opaque, sec->offset, buf, size, error)) {
                g_free(buf);
                return false;
            }
            s->payloads[i] = g_bytes_new_take(buf, size);
        }
        uint64_t computed = XXH3_64bits(g_bytes_get_data(s->payloads[i], NULL), size);
        if (computed != sec->checksum) {
            return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT,
                                       "payload checksum mismatch (stored 0x%016" PRIx64
                                       ", computed 0x%016" PRIx64 ")",
                                       sec->checksum, computed);
        }
    }
    return true;
}

FormatSnapshot *format_snapshot_parse(FormatReadFn read, void *opaque, const char *what,
                                      uint64_t base, uint64_t disk_size, unsigned flags,
                                      GError **error)
{
    return format_snapshot_parse_mapped(read, NULL, opaque, what, base, disk_size, flags, error);
}

FormatSnapshot *format_snapshot_parse_mapped(FormatReadFn read, FormatMapFn map, void *opaque,
                                             const char *what, uint64_t base, uint64_t disk_size,
                                             unsigned flags, GError **error)
{
    g_autoptr(FormatSnapshot) s = g_new0(FormatSnapshot, 1);
    Parser p = { .s = s, .read = read, .map = map, .opaque = opaque, .flags = flags };
    s->what = g_strdup(what != NULL ? what : "snapshot");
    s->disk_size = disk_size;

    if (base > disk_size || disk_size - base < FORMAT_HEADER_SIZE) {
        truncated(&p,
                  base > UINT64_MAX - FORMAT_HEADER_SIZE ? UINT64_MAX : base + FORMAT_HEADER_SIZE,
                  error);
        return NULL;
    }
    uint8_t hdr[FORMAT_HEADER_SIZE];
    if (!read(opaque, base, hdr, sizeof(hdr), error)) {
        return NULL;
    }
    if (!format_header_decode(hdr, base, &s->header, error)) {
        g_prefix_error(error, "%s: ", s->what);
        return NULL;
    }
    if (s->header.state == FORMAT_STATE_PARTIAL) {
        if (!(flags & FORMAT_OPEN_ALLOW_PARTIAL)) {
            parse_error(&p, error, FORMAT_ERROR_PARTIAL,
                        "incomplete snapshot (state PART): the save did not finish");
            return NULL;
        }
        return g_steal_pointer(&s);
    }
    if (s->header.file_size > disk_size) {
        truncated(&p, s->header.file_size, error);
        return NULL;
    }
    if (!parse_directory(&p, error) || !parse_check_types(&p, error) ||
        !check_placement(&p, error) || !read_payloads(&p, error) || !parse_check_ram(&p, error) ||
        !parse_check_fields(&p, error)) {
        return NULL;
    }
    if (flags & FORMAT_OPEN_DROP_CHECKSUMS) {
        for (unsigned i = 0; i < s->n_sections; i++) {
            if (s->sections[i].type == FORMAT_SECTION_PAGE_CHECKSUMS) {
                g_clear_pointer(&s->payloads[i], g_bytes_unref);
            }
        }
        for (unsigned b = 0; b < s->n_blocks; b++) {
            s->checksums[b] = NULL;
        }
    }
    return g_steal_pointer(&s);
}

void format_snapshot_free(FormatSnapshot *s)
{
    if (s == NULL) {
        return;
    }
    for (unsigned i = 0; i < s->n_sections; i++) {
        if (s->payloads[i] != NULL) {
            g_bytes_unref(s->payloads[i]);
        }
    }
    g_free(s->payloads);
    g_free(s->sections);
    g_free(s->blocks);
    g_free(s->present);
    g_free(s->checksums);
    g_free(s->what);
    g_free(s);
}

const FormatSection *format_snapshot_find(const FormatSnapshot *s, uint32_t type, const char *name,
                                          uint32_t instance)
{
    for (unsigned i = 0; i < s->n_sections; i++) {
        const FormatSection *sec = &s->sections[i];
        if (sec->type == type && sec->instance == instance &&
            (name == NULL || strcmp(sec->name, name) == 0)) {
            return sec;
        }
    }
    return NULL;
}

uint64_t format_snapshot_present_pages(const FormatSnapshot *s, unsigned block)
{
    if (block >= s->n_blocks || s->present == NULL || s->present[block] == NULL) {
        return 0;
    }
    gsize size;
    const uint8_t *p = g_bytes_get_data(s->present[block], &size);
    uint64_t count = 0;
    for (gsize i = 0; i + 8 <= size; i += 8) {
        count += (uint64_t)__builtin_popcountll(le64_load(p + i));
    }
    return count;
}
