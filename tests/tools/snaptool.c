/*
 * snaptool: test-only surgery on snapshot files, so tests can build hostile
 * inputs whose checksums are right (a newer section version, a forced state) and
 * find the bytes they want to corrupt.
 *
 *   snaptool locate FILE [OFFSET]                  JSON: header, sections, blocks
 *   snaptool set-state FILE OFFSET PART|DONE        rewrite the header state
 *   snaptool set-section-version FILE OFFSET NAME INSTANCE VERSION
 */
#include "format.h"

#include <gio/gio.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static int fd = -1;

static bool rd(void *opaque, uint64_t off, void *buf, size_t len, GError **error)
{
    if (pread(fd, buf, len, (off_t)off) != (ssize_t)len) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "short read at %" G_GUINT64_FORMAT, off);
        return false;
    }
    return true;
}

static void die(const char *msg, GError *e)
{
    fprintf(stderr, "snaptool: %s%s%s\n", msg, e ? ": " : "", e ? e->message : "");
    exit(2);
}

static FormatSnapshot *parse(const char *path, uint64_t base)
{
    struct stat st;
    fstat(fd, &st);
    GError *e = NULL;
    FormatSnapshot *s = format_snapshot_parse(rd, NULL, path, base, (uint64_t)st.st_size,
                                              FORMAT_OPEN_ALLOW_PARTIAL, &e);
    if (!s)
        die("parse", e);
    return s;
}

static void rewrite_header(uint64_t base, void (*edit)(FormatHeader *, const char *),
                           const char *arg)
{
    uint8_t buf[FORMAT_HEADER_SIZE];
    GError *e = NULL;
    FormatHeader h;
    if (!rd(NULL, base, buf, sizeof(buf), &e) || !format_header_decode(buf, base, &h, &e))
        die("header", e);
    edit(&h, arg);
    format_header_encode(&h, buf);
    if (pwrite(fd, buf, sizeof(buf), (off_t)base) != (ssize_t)sizeof(buf))
        die("write header", NULL);
}

static void edit_state(FormatHeader *h, const char *arg)
{
    h->state = !strcmp(arg, "PART") ? FORMAT_STATE_PARTIAL : FORMAT_STATE_DONE;
}

static void edit_dir_checksum(FormatHeader *h, const char *arg)
{
    h->directory_checksum = strtoull(arg, NULL, 10);
}

static int locate(const char *path, uint64_t base)
{
    g_autoptr(FormatSnapshot) s = parse(path, base);
    printf("{\"state\": \"%s\", \"metadata_offset\": %" G_GUINT64_FORMAT
           ", \"file_size\": %" G_GUINT64_FORMAT ", \"sections\": [",
           s->header.state == FORMAT_STATE_DONE ? "DONE" : "PART", s->header.metadata_offset,
           s->header.file_size);
    for (unsigned i = 0; i < s->n_sections; i++) {
        const FormatSection *x = &s->sections[i];
        printf("%s{\"type\": \"%s\", \"name\": \"%s\", \"instance\": %u, \"version\": %u, "
               "\"offset\": %" G_GUINT64_FORMAT ", \"size\": %" G_GUINT64_FORMAT "}",
               i ? ", " : "", format_section_type_name(x->type), x->name, x->instance, x->version,
               x->offset, x->size);
    }
    printf("], \"blocks\": [");
    for (unsigned i = 0; i < s->n_blocks; i++) {
        const FormatBlock *b = &s->blocks[i];
        const uint64_t *bm = g_bytes_get_data(s->present[i], NULL);
        int64_t first_present = -1, first_absent = -1;
        for (uint64_t p = 0; p < format_block_pages(b) && (first_present < 0 || first_absent < 0);
             p++) {
            bool present = format_bitmap_test(bm, p);
            if (present && first_present < 0)
                first_present = (int64_t)p;
            /* an absent page past 1 MiB, away from the guest's boot data */
            if (!present && first_absent < 0 && p >= 256)
                first_absent = (int64_t)p;
        }
        printf("%s{\"name\": \"%s\", \"pages_offset\": %" G_GUINT64_FORMAT
               ", \"size\": %" G_GUINT64_FORMAT ", \"first_present\": %" G_GINT64_FORMAT
               ", \"first_absent\": %" G_GINT64_FORMAT ", \"present_pages\": %" G_GUINT64_FORMAT
               "}",
               i ? ", " : "", b->name, b->pages_offset, b->size, first_present, first_absent,
               format_snapshot_present_pages(s, i));
    }
    printf("]}\n");
    return 0;
}

static int set_section_version(const char *path, uint64_t base, const char *name, unsigned instance,
                               unsigned version)
{
    g_autoptr(FormatSnapshot) s = parse(path, base);
    uint64_t dir = s->header.metadata_offset;
    size_t len = (size_t)s->header.directory_entries * FORMAT_DIR_ENTRY_SIZE;
    g_autofree uint8_t *d = g_malloc(len);
    GError *e = NULL;
    if (!rd(NULL, dir, d, len, &e))
        die("directory", e);
    bool found = false;
    for (unsigned i = 0; i < s->header.directory_entries; i++) {
        uint8_t *ent = d + (size_t)i * FORMAT_DIR_ENTRY_SIZE;
        uint32_t inst;
        memcpy(&inst, ent + 8, 4);
        if (!strncmp((char *)ent + 40, name, 24) && inst == instance) {
            uint32_t v = GUINT32_TO_LE(version);
            memcpy(ent + 4, &v, 4);
            found = true;
        }
    }
    if (!found)
        die("no such section", NULL);
    if (pwrite(fd, d, len, (off_t)dir) != (ssize_t)len)
        die("write directory", NULL);
    char sum[32];
    g_snprintf(sum, sizeof(sum), "%" G_GUINT64_FORMAT, (guint64)XXH3_64bits(d, len));
    rewrite_header(base, edit_dir_checksum, sum);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        die("usage: locate FILE [OFFSET] | set-state FILE OFFSET PART|DONE | "
            "set-section-version FILE OFFSET NAME INSTANCE VERSION",
            NULL);
    fd = open(argv[2], O_RDWR);
    if (fd < 0)
        die(strerror(errno), NULL);
    uint64_t base = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;
    if (!strcmp(argv[1], "locate"))
        return locate(argv[2], base);
    if (!strcmp(argv[1], "set-state") && argc == 5) {
        rewrite_header(base, edit_state, argv[4]);
        return 0;
    }
    if (!strcmp(argv[1], "set-section-version") && argc == 7)
        return set_section_version(argv[2], base, argv[4], (unsigned)atoi(argv[5]),
                                   (unsigned)atoi(argv[6]));
    die("bad arguments", NULL);
}
