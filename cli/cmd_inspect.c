/* vmsnap inspect: show what a snapshot file holds; extract its RAM blocks. */
#include "cli.h"
#include "parse.h"
#include "progress.h"
#include "snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsnap/fields.h>
#include <xxhash.h>

#define INSPECT_EXIT_BAD 2 /* unreadable or invalid file */

#define EXTRACT_MAX_RUN 256u /* pages per read/write when extracting */

bool cli_parse_snapshot_arg(const char *arg, char **path, uint64_t *offset, GError **error)
{
    const char *p = g_str_has_prefix(arg, "file:") ? arg + 5 : arg;
    const char *opt = g_strrstr(p, ",offset=");
    *offset = 0;
    if (opt) {
        const char *num = opt + strlen(",offset=");
        bool ok;
        if (g_str_has_prefix(num, "0x") || g_str_has_prefix(num, "0X")) {
            char *end = NULL;
            errno = 0;
            *offset = g_ascii_strtoull(num + 2, &end, 16);
            ok = num[2] && end && !*end && errno == 0;
        } else {
            ok = parse_size(num, 1, offset, NULL);
        }
        if (!ok) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "'%s': offset '%s' is not a number (decimal, 0x-hex, or with K/M/G)", arg,
                        num);
            return false;
        }
    }
    size_t len = opt ? (size_t)(opt - p) : strlen(p);
    if (len == 0) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "'%s': no file name (FILE[,offset=N])", arg);
        return false;
    }
    *path = g_strndup(p, len);
    return true;
}

char *cli_uuid_string(const uint8_t uuid[16])
{
    return g_strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                           uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7],
                           uuid[8], uuid[9], uuid[10], uuid[11], uuid[12], uuid[13], uuid[14],
                           uuid[15]);
}

typedef struct InspectArgs {
    char *path;
    uint64_t offset;
    bool fields;
    bool json;
    char *extract;
} InspectArgs;

static void inspect_args_clear(InspectArgs *a)
{
    g_free(a->path);
    g_free(a->extract);
}

static bool inspect_parse(int argc, char **argv, InspectArgs *a, GError **error)
{
    gboolean fields = FALSE, json = FALSE;
    GOptionEntry entries[] = {
        { "fields", 'f', 0, G_OPTION_ARG_NONE, &fields,
          "Print every device field (cpu0.regs.rip = (u64) 0x...)", NULL },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print everything as one JSON object", NULL },
        { "extract", 'x', 0, G_OPTION_ARG_FILENAME, &a->extract,
          "Write each RAM block to DIR/<block>.raw (sparse; absent pages are holes)", "DIR" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("FILE[,offset=N] - inspect a snapshot");
    g_option_context_set_summary(ctx,
                                 "Shows a snapshot file's header, configuration, sections, RAM "
                                 "blocks and sizes.\nA partial file (a save that did not finish) "
                                 "is shown as such.");
    g_option_context_set_description(ctx, "Exit codes: 0 ok, 1 usage, 2 unreadable or invalid "
                                          "file.\n\n"
                                          "Examples:\n"
                                          "  vmsnap inspect vm.vms\n"
                                          "  vmsnap inspect --fields --json vm.vms,offset=1M\n"
                                          "  vmsnap inspect --extract /tmp/ram vm.vms\n");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_strict_posix(ctx, FALSE);

    g_auto(GStrv) args = g_new0(char *, argc + 1);
    for (int i = 0; i < argc; i++)
        args[i] = g_strdup(argv[i]);
    if (!g_option_context_parse_strv(ctx, &args, error))
        return false;
    guint n = g_strv_length(args);
    if (n < 2) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "missing FILE[,offset=N]; see --help");
        return false;
    }
    if (n > 2) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "unexpected argument '%s'",
                    args[2]);
        return false;
    }
    if (a->extract && !*a->extract) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--extract: empty DIR");
        return false;
    }
    a->fields = fields;
    a->json = json;
    return cli_parse_snapshot_arg(args[1], &a->path, &a->offset, error);
}

/* ---- fields: printed text, and the same as JSON ---- */

/* Undoes fields_print's quoting: \" \\ \xNN. */
static char *unquote(const char *v)
{
    size_t len = strlen(v);
    if (len < 2 || v[0] != '"' || v[len - 1] != '"')
        return g_strdup(v);
    GString *s = g_string_sized_new(len);
    for (size_t i = 1; i + 1 < len; i++) {
        if (v[i] == '\\' && i + 2 < len && v[i + 1] == 'x' && i + 4 < len &&
            g_ascii_isxdigit(v[i + 2]) && g_ascii_isxdigit(v[i + 3])) {
            g_string_append_c(
                s, (char)(g_ascii_xdigit_value(v[i + 2]) << 4 | g_ascii_xdigit_value(v[i + 3])));
            i += 3;
        } else if (v[i] == '\\' && i + 2 < len) {
            g_string_append_c(s, v[++i]);
        } else {
            g_string_append_c(s, v[i]);
        }
    }
    return g_string_free(s, FALSE);
}

/* Adds one object per line "path = (type) value" of vmsnap_fields_print() output. */
static void fields_to_json(JsonBuilder *b, const char *text)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        /* Names are [A-Za-z0-9_.[]-]: the first " = (" ends the path. */
        char *eq = strstr(*l, " = (");
        char *close = eq ? strchr(eq + 4, ')') : NULL;
        if (!close)
            continue;
        g_autofree char *name = g_strndup(*l, (size_t)(eq - *l));
        g_autofree char *type = g_strndup(eq + 4, (size_t)(close - eq - 4));
        const char *value = close[1] == ' ' ? close + 2 : close + 1;
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "name");
        json_builder_add_string_value(b, name);
        json_builder_set_member_name(b, "type");
        json_builder_add_string_value(b, type);
        json_builder_set_member_name(b, "value");
        if (!strcmp(type, "str")) {
            g_autofree char *s = unquote(value);
            json_builder_add_string_value(b, s);
        } else {
            json_builder_add_string_value(b, value);
        }
        json_builder_end_object(b);
    }
}

/* Prints the payload of section i with `prefix`; false with an error naming it. */
static bool print_section_fields(const FormatSnapshot *f, unsigned i, const char *prefix, bool full,
                                 GString *out, GError **error)
{
    GBytes *payload = format_snapshot_payload(f, i);
    gsize len = 0;
    const void *data = payload ? g_bytes_get_data(payload, &len) : NULL;
    if (!vmsnap_fields_print(data, len, prefix, full, out, error)) {
        const FormatSection *sec = &f->sections[i];
        g_prefix_error(error, "%s: section %s '%s' instance %u: ", f->what,
                       format_section_type_name(sec->type), sec->name, sec->instance);
        return false;
    }
    return true;
}

static bool config_text(const FormatSnapshot *f, bool full, GString *out, GError **error)
{
    for (unsigned i = 0; i < f->n_sections; i++)
        if (f->sections[i].type == FORMAT_SECTION_CONFIG)
            return print_section_fields(f, i, "config", full, out, error);
    return true;
}

static bool device_text(const FormatSnapshot *f, bool full, GString *out, GError **error)
{
    for (unsigned i = 0; i < f->n_sections; i++) {
        const FormatSection *sec = &f->sections[i];
        if (sec->type != FORMAT_SECTION_DEVICE)
            continue;
        g_autofree char *prefix = g_strdup_printf("%s%u", sec->name, sec->instance);
        if (!print_section_fields(f, i, prefix, full, out, error))
            return false;
    }
    return true;
}

/* ---- sizes ---- */

typedef struct Sizes {
    uint64_t ram;
    uint64_t metadata; /* header + directory + payloads */
    uint64_t logical;
    uint64_t on_disk; /* st_blocks * 512 of the whole file */
} Sizes;

static Sizes snapshot_sizes(const VmsnapSnapshot *s)
{
    const FormatHeader *h = &s->fmt->header;
    Sizes z = { .ram = h->ram_size, .metadata = FORMAT_HEADER_SIZE + h->metadata_size };
    z.logical = z.ram + z.metadata;
    struct stat st;
    if (fstat(s->fd, &st) == 0)
        z.on_disk = (uint64_t)st.st_blocks * 512;
    return z;
}

static char *writer_version(uint32_t v)
{
    return g_strdup_printf("%u.%u.%u", v >> 16, (v >> 8) & 0xff, v & 0xff);
}

static char *created_text(uint64_t ns)
{
    g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc((gint64)(ns / 1000000000ull));
    if (!t)
        return g_strdup_printf("%" G_GUINT64_FORMAT " ns since the epoch", ns);
    g_autofree char *base = g_date_time_format(t, "%Y-%m-%dT%H:%M:%S");
    return g_strdup_printf("%s.%03uZ", base, (unsigned)(ns / 1000000 % 1000));
}

static char *features_text(uint64_t compat, uint64_t incompat)
{
    if (!compat && !incompat)
        return g_strdup("none");
    return g_strdup_printf("compat 0x%" G_GINT64_MODIFIER "x, incompat 0x%" G_GINT64_MODIFIER "x",
                           compat, incompat);
}

/* ---- human output ---- */

static bool print_human(const VmsnapSnapshot *s, const InspectArgs *a, GError **error)
{
    const FormatSnapshot *f = s->fmt;
    const FormatHeader *h = &f->header;
    bool complete = h->state == FORMAT_STATE_DONE;
    g_autofree char *wv = writer_version(h->writer_version);
    g_autofree char *su = cli_uuid_string(h->snapshot_uuid);
    g_autofree char *vu = cli_uuid_string(h->vm_uuid);
    g_autofree char *created = created_text(h->created_ns);
    g_autofree char *feat = features_text(h->compat_features, h->incompat_features);
    g_autofree char *ram = progress_format_bytes(h->ram_size);
    g_autofree char *align = progress_format_bytes(h->area_align);

    printf("File:         %s\n", s->what);
    printf("State:        %s\n", complete ? "complete"
                                          : "partial (the save did not finish; this file cannot be "
                                            "restored)");
    printf("Format:       version %u, written by vmsnap %s\n", h->format_version, wv);
    printf("Snapshot:     %s\n", su);
    printf("VM:           %s\n", vu);
    printf("Created:      %s\n", created);
    printf("Base offset:  %" G_GUINT64_FORMAT "\n", h->base_offset);
    printf("Page size:    %u (page areas aligned to %s)\n", h->page_size, align);
    printf("Features:     %s\n", feat);
    printf("RAM:          %s (%" G_GUINT64_FORMAT " bytes)", ram, h->ram_size);
    if (complete)
        printf(", %" G_GUINT64_FORMAT " present pages", h->present_pages);
    printf("\n");
    if (complete)
        printf("Metadata:     %" G_GUINT64_FORMAT " bytes at offset 0x%" G_GINT64_MODIFIER
               "x, %u sections, ends at %" G_GUINT64_FORMAT "\n",
               h->metadata_size, h->metadata_offset, h->directory_entries, h->file_size);

    if (complete) {
        g_autoptr(GString) cfg = g_string_new(NULL);
        if (!config_text(f, false, cfg, error))
            return false;
        printf("\nConfiguration:\n");
        g_auto(GStrv) lines = g_strsplit(cfg->str, "\n", -1);
        for (char **l = lines; *l; l++)
            if (**l)
                printf("  %s\n", *l);

        printf("\nSections:\n");
        printf("  %-3s %-15s %-16s %4s %4s %12s %10s  %s\n", "#", "TYPE", "NAME", "INST", "VER",
               "OFFSET", "SIZE", "CHECKSUM");
        for (unsigned i = 0; i < f->n_sections; i++) {
            const FormatSection *sec = &f->sections[i];
            const char *tn = format_section_type_name(sec->type);
            g_autofree char *type =
                !strcmp(tn, "unknown") ? g_strdup_printf("unknown(%u)", sec->type) : g_strdup(tn);
            printf("  %-3u %-15s %-16s %4u %4u %#12" G_GINT64_MODIFIER "x %10" G_GUINT64_FORMAT
                   "  0x%016" G_GINT64_MODIFIER "x\n",
                   i, type, sec->name[0] ? sec->name : "-", sec->instance, sec->version,
                   sec->offset, sec->size, sec->checksum);
        }

        printf("\nRAM blocks:\n");
        printf("  %-16s %18s %10s %14s %9s %9s %9s\n", "NAME", "GPA", "SIZE", "PAGES OFFSET",
               "PAGES", "PRESENT", "ZERO");
        for (unsigned i = 0; i < f->n_blocks; i++) {
            const FormatBlock *b = &f->blocks[i];
            uint64_t pages = format_block_pages(b);
            uint64_t present = format_snapshot_present_pages(f, i);
            g_autofree char *size = progress_format_bytes(b->size);
            printf("  %-16s 0x%016" G_GINT64_MODIFIER "x %10s %#14" G_GINT64_MODIFIER
                   "x %9" G_GUINT64_FORMAT " %9" G_GUINT64_FORMAT " %9" G_GUINT64_FORMAT "\n",
                   b->name, b->gpa, size, b->pages_offset, pages, present, pages - present);
        }
    }

    Sizes z = snapshot_sizes(s);
    g_autofree char *zr = progress_format_bytes(z.ram);
    g_autofree char *zm = progress_format_bytes(z.metadata);
    g_autofree char *zl = progress_format_bytes(z.logical);
    g_autofree char *zd = progress_format_bytes(z.on_disk);
    printf("\nSizes:\n");
    printf("  logical:    %s (RAM %s + metadata %s)\n", zl, zr, zm);
    printf("  on disk:    %s (allocated blocks of the file)", zd);
    if (z.logical)
        printf(", %.1f%% of logical", 100.0 * (double)z.on_disk / (double)z.logical);
    printf("\n");

    if (a->fields && complete) {
        g_autoptr(GString) dev = g_string_new(NULL);
        if (!device_text(f, false, dev, error))
            return false;
        printf("\nDevice fields:\n");
        g_auto(GStrv) lines = g_strsplit(dev->str, "\n", -1);
        for (char **l = lines; *l; l++)
            if (**l)
                printf("  %s\n", *l);
    }
    return true;
}

/* ---- JSON output ---- */

static void add_u64(JsonBuilder *b, const char *name, uint64_t v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, (gint64)v);
}

static void add_str(JsonBuilder *b, const char *name, const char *v)
{
    json_builder_set_member_name(b, name);
    if (v)
        json_builder_add_string_value(b, v);
    else
        json_builder_add_null_value(b);
}

static void add_hex(JsonBuilder *b, const char *name, uint64_t v)
{
    g_autofree char *s = g_strdup_printf("0x%016" G_GINT64_MODIFIER "x", v);
    add_str(b, name, s);
}

static bool build_json(JsonBuilder *b, const VmsnapSnapshot *s, const InspectArgs *a,
                       GError **error)
{
    const FormatSnapshot *f = s->fmt;
    const FormatHeader *h = &f->header;
    bool complete = h->state == FORMAT_STATE_DONE;

    json_builder_begin_object(b);
    add_str(b, "file", s->what);
    add_u64(b, "offset", s->base);
    add_str(b, "state", complete ? "complete" : "partial");
    json_builder_set_member_name(b, "complete");
    json_builder_add_boolean_value(b, complete);

    json_builder_set_member_name(b, "header");
    json_builder_begin_object(b);
    add_u64(b, "format_version", h->format_version);
    g_autofree char *wv = writer_version(h->writer_version);
    add_str(b, "writer_version", wv);
    g_autofree char *su = cli_uuid_string(h->snapshot_uuid);
    g_autofree char *vu = cli_uuid_string(h->vm_uuid);
    add_str(b, "snapshot_uuid", su);
    add_str(b, "vm_uuid", vu);
    add_u64(b, "created_ns", h->created_ns);
    g_autofree char *created = created_text(h->created_ns);
    add_str(b, "created", created);
    add_u64(b, "base_offset", h->base_offset);
    add_u64(b, "file_size", h->file_size);
    add_u64(b, "metadata_offset", h->metadata_offset);
    add_u64(b, "metadata_size", h->metadata_size);
    add_hex(b, "directory_checksum", h->directory_checksum);
    add_u64(b, "directory_entries", h->directory_entries);
    add_u64(b, "page_size", h->page_size);
    add_u64(b, "area_align", h->area_align);
    add_u64(b, "ram_size", h->ram_size);
    add_u64(b, "present_pages", h->present_pages);
    add_u64(b, "compat_features", h->compat_features);
    add_u64(b, "incompat_features", h->incompat_features);
    json_builder_end_object(b);

    json_builder_set_member_name(b, "config");
    if (complete) {
        g_autoptr(GString) cfg = g_string_new(NULL);
        if (!config_text(f, true, cfg, error))
            return false;
        json_builder_begin_array(b);
        fields_to_json(b, cfg->str);
        json_builder_end_array(b);
    } else {
        json_builder_add_null_value(b);
    }

    json_builder_set_member_name(b, "sections");
    json_builder_begin_array(b);
    for (unsigned i = 0; i < f->n_sections; i++) {
        const FormatSection *sec = &f->sections[i];
        json_builder_begin_object(b);
        add_u64(b, "index", i);
        add_u64(b, "type", sec->type);
        add_str(b, "type_name", format_section_type_name(sec->type));
        add_str(b, "name", sec->name);
        add_u64(b, "instance", sec->instance);
        add_u64(b, "version", sec->version);
        add_u64(b, "flags", sec->flags);
        add_u64(b, "offset", sec->offset);
        add_u64(b, "size", sec->size);
        add_hex(b, "checksum", sec->checksum);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);

    json_builder_set_member_name(b, "ram_blocks");
    json_builder_begin_array(b);
    for (unsigned i = 0; i < f->n_blocks; i++) {
        const FormatBlock *blk = &f->blocks[i];
        uint64_t pages = format_block_pages(blk);
        uint64_t present = format_snapshot_present_pages(f, i);
        json_builder_begin_object(b);
        add_str(b, "name", blk->name);
        add_u64(b, "gpa", blk->gpa);
        add_u64(b, "size", blk->size);
        add_u64(b, "pages_offset", blk->pages_offset);
        add_u64(b, "page_size", blk->page_size);
        add_u64(b, "pages", pages);
        add_u64(b, "present_pages", present);
        add_u64(b, "zero_pages", pages - present);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);

    Sizes z = snapshot_sizes(s);
    json_builder_set_member_name(b, "sizes");
    json_builder_begin_object(b);
    add_u64(b, "ram", z.ram);
    add_u64(b, "metadata", z.metadata);
    add_u64(b, "logical", z.logical);
    add_u64(b, "on_disk", z.on_disk);
    json_builder_set_member_name(b, "ratio");
    json_builder_add_double_value(b, z.logical ? (double)z.on_disk / (double)z.logical : 0);
    json_builder_end_object(b);

    if (a->fields) {
        json_builder_set_member_name(b, "fields");
        json_builder_begin_array(b);
        if (complete) {
            g_autoptr(GString) dev = g_string_new(NULL);
            if (!device_text(f, true, dev, error))
                return false;
            fields_to_json(b, dev->str);
        }
        json_builder_end_array(b);
    }
    /* "extracted" is added by the caller; the object stays open. */
    return true;
}

/* ---- --extract ---- */

typedef struct Extracted {
    char *block;
    char *path;
    uint64_t size;
    uint64_t pages_written;
    uint64_t bad_pages;
} Extracted;

static void extracted_clear(gpointer p)
{
    Extracted *e = p;
    g_free(e->block);
    g_free(e->path);
}

static bool io_error(GError **error, int err, const char *what, const char *path)
{
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s: %s", path, what,
                g_strerror(err));
    return false;
}

static bool pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* the parser bounded every page area: a short read is odd */
            return false;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return true;
}

static bool pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return false;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return true;
}

/* Copies the present pages run by run; checks each against its checksum. */
static bool extract_block(const VmsnapSnapshot *s, unsigned bi, int out, Extracted *e,
                          GError **error)
{
    const FormatSnapshot *f = s->fmt;
    const FormatBlock *b = &f->blocks[bi];
    const uint64_t *present = g_bytes_get_data(f->present[bi], NULL);
    const uint64_t *sums = f->checksums[bi] ? g_bytes_get_data(f->checksums[bi], NULL) : NULL;
    uint64_t pages = format_block_pages(b);
    size_t ps = b->page_size;
    g_autofree uint8_t *buf = g_malloc((size_t)EXTRACT_MAX_RUN * ps);

    for (uint64_t p = 0; p < pages;) {
        if (!format_bitmap_test(present, p)) {
            p++;
            continue;
        }
        uint64_t n = 1;
        while (n < EXTRACT_MAX_RUN && p + n < pages && format_bitmap_test(present, p + n))
            n++;
        uint64_t src = b->pages_offset + p * ps;
        if (!pread_all(s->fd, buf, n * ps, src)) {
            g_autofree char *what =
                g_strdup_printf("read at offset 0x%" G_GINT64_MODIFIER "x", src);
            return io_error(error, errno, what, s->what);
        }
        for (uint64_t i = 0; sums && i < n; i++) {
            if (XXH3_64bits(buf + i * ps, ps) != GUINT64_FROM_LE(sums[p + i])) {
                fprintf(stderr,
                        "vmsnap inspect: %s: RAM block '%s' page 0x%" G_GINT64_MODIFIER
                        "x at file offset 0x%" G_GINT64_MODIFIER "x: checksum mismatch "
                        "(extracted anyway)\n",
                        s->what, b->name, p + i, src + i * ps);
                e->bad_pages++;
            }
        }
        if (!pwrite_all(out, buf, n * ps, p * ps))
            return io_error(error, errno, "write", e->path);
        e->pages_written += n;
        p += n;
    }
    return true;
}

static bool extract(const VmsnapSnapshot *s, const char *dir, GArray *done, GError **error)
{
    const FormatSnapshot *f = s->fmt;
    if (f->header.state != FORMAT_STATE_DONE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "%s: cannot extract from a partial snapshot: it has no RAM block table",
                    s->what);
        return false;
    }
    if (g_mkdir_with_parents(dir, 0755) < 0)
        return io_error(error, errno, "cannot create the directory", dir);
    for (unsigned i = 0; i < f->n_blocks; i++) {
        const FormatBlock *b = &f->blocks[i];
        /* The parser allows [A-Za-z0-9_.-]; never let a name leave DIR. */
        if (!b->name[0] || strchr(b->name, '/')) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s: RAM block %u: name '%s' is not usable as a file name", s->what, i,
                        b->name);
            return false;
        }
        Extracted e = { .block = g_strdup(b->name), .size = b->size };
        g_autofree char *file = g_strconcat(b->name, ".raw", NULL);
        e.path = g_build_filename(dir, file, NULL);
        g_array_append_val(done, e);
        Extracted *ep = &g_array_index(done, Extracted, done->len - 1);
        int out = open(ep->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0)
            return io_error(error, errno, "cannot create", ep->path);
        /* Truncating to the size first leaves every absent page a hole. */
        bool ok = ftruncate(out, (off_t)b->size) == 0 ||
                  io_error(error, errno, "cannot set the size", ep->path);
        ok = ok && extract_block(s, i, out, ep, error);
        if (close(out) < 0 && ok)
            ok = io_error(error, errno, "close", ep->path);
        if (!ok)
            return false;
    }
    return true;
}

static void extracted_json(JsonBuilder *b, GArray *done)
{
    json_builder_set_member_name(b, "extracted");
    json_builder_begin_array(b);
    for (guint i = 0; i < done->len; i++) {
        Extracted *e = &g_array_index(done, Extracted, i);
        json_builder_begin_object(b);
        add_str(b, "block", e->block);
        add_str(b, "path", e->path);
        add_u64(b, "size", e->size);
        add_u64(b, "pages_written", e->pages_written);
        add_u64(b, "bad_pages", e->bad_pages);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
}

/* ---- the command ---- */

static int run_inspect(const InspectArgs *a)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmsnapSnapshot) s =
        vmsnap_snapshot_open(a->path, a->offset, VMSNAP_OPEN_ALLOW_PARTIAL, &error);
    if (!s) {
        fprintf(stderr, "vmsnap inspect: %s\n", error->message);
        return INSPECT_EXIT_BAD;
    }

    g_autoptr(GArray) done = g_array_new(FALSE, TRUE, sizeof(Extracted));
    g_array_set_clear_func(done, extracted_clear);
    bool extract_ok = !a->extract || extract(s, a->extract, done, &error);
    uint64_t bad = 0;
    for (guint i = 0; i < done->len; i++)
        bad += g_array_index(done, Extracted, i).bad_pages;

    if (a->json) {
        g_autoptr(JsonBuilder) b = json_builder_new();
        g_autoptr(GError) jerr = NULL;
        if (!build_json(b, s, a, &jerr)) {
            fprintf(stderr, "vmsnap inspect: %s\n", jerr->message);
            return INSPECT_EXIT_BAD;
        }
        if (a->extract)
            extracted_json(b, done);
        json_builder_end_object(b);
        g_autoptr(JsonNode) root = json_builder_get_root(b);
        g_autoptr(JsonGenerator) gen = json_generator_new();
        json_generator_set_pretty(gen, TRUE);
        json_generator_set_root(gen, root);
        g_autofree char *text = json_generator_to_data(gen, NULL);
        printf("%s\n", text);
    } else {
        g_autoptr(GError) perr = NULL;
        if (!print_human(s, a, &perr)) {
            fflush(stdout);
            fprintf(stderr, "vmsnap inspect: %s\n", perr->message);
            return INSPECT_EXIT_BAD;
        }
        if (done->len)
            printf("\nExtracted:\n");
        for (guint i = 0; i < done->len; i++) {
            Extracted *e = &g_array_index(done, Extracted, i);
            g_autofree char *size = progress_format_bytes(e->size);
            printf("  %s: %s, %" G_GUINT64_FORMAT " pages written\n", e->path, size,
                   e->pages_written);
        }
    }
    fflush(stdout);
    if (!extract_ok) {
        fprintf(stderr, "vmsnap inspect: --extract: %s\n", error->message);
        return INSPECT_EXIT_BAD;
    }
    if (bad) {
        fprintf(stderr,
                "vmsnap inspect: %s: %" G_GUINT64_FORMAT " extracted pages do not match "
                "their checksums\n",
                s->what, bad);
        return INSPECT_EXIT_BAD;
    }
    return 0;
}

int cli_inspect(int argc, char **argv)
{
    InspectArgs a = { 0 };
    g_autoptr(GError) error = NULL;
    if (!inspect_parse(argc, argv, &a, &error)) {
        fprintf(stderr, "vmsnap inspect: %s\n", error->message);
        inspect_args_clear(&a);
        return CLI_EXIT_USAGE;
    }
    int code = run_inspect(&a);
    inspect_args_clear(&a);
    return code;
}
