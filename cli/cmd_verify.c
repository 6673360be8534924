/* vmsnap verify: check a snapshot file with restore's own parser, then every page. */
#include "cli.h"
#include "format.h"
#include "parse.h"
#include "progress.h"
#include "snapfile.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

/* restic-like: 1 means "checked, and it is not good". */
#define VERIFY_EXIT_INVALID 1
#define VERIFY_EXIT_ERROR   2 /* usage, or the file cannot be opened or read */

/* Bad pages kept for the report; the count goes on past it. */
#define MAX_LISTED 100000u

typedef struct VerifyArgs {
    char *path;
    uint64_t offset;
    bool json;
    unsigned threads;
} VerifyArgs;

typedef struct BadPage {
    unsigned block_index;
    char *block;
    uint64_t page;
    uint64_t offset;
    char *reason;
} BadPage;

typedef struct Report {
    const FormatSnapshot *f;
    GArray *bad; /* BadPage */
} Report;

static void bad_page_clear(gpointer p)
{
    BadPage *b = p;
    g_free(b->block);
    g_free(b->reason);
}

static bool verify_parse(int argc, char **argv, VerifyArgs *a, GError **error)
{
    gboolean json = FALSE;
    g_autofree char *threads = NULL;
    GOptionEntry entries[] = {
        { "json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print the result as one JSON object", NULL },
        { "threads", 't', 0, G_OPTION_ARG_STRING, &threads,
          "Parallel readers, 1 to 1024 (default: the number of CPUs)", "N" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("FILE[,offset=N] - verify a snapshot");
    g_option_context_set_summary(ctx,
                                 "Checks a snapshot file with the parser restore uses (header, "
                                 "commit state,\nevery metadata checksum, offset and size), then "
                                 "reads every page: present pages\nmust match their checksum, "
                                 "absent pages must read as zero.");
    g_option_context_set_description(ctx, "Exit codes: 0 valid; 1 invalid (bad pages, "
                                          "incomplete save, corrupt metadata,\ntruncated file); "
                                          "2 usage, or the file cannot be opened or read.\n");
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
    uint64_t t = 0;
    if (threads && !parse_uint(threads, "--threads", 1, 1024, &t, error))
        return false;
    a->threads = (unsigned)t;
    a->json = json;
    return cli_parse_snapshot_arg(args[1], &a->path, &a->offset, error);
}

static void on_bad_page(void *opaque, const char *block, uint64_t page, uint64_t file_offset,
                        const char *reason)
{
    Report *r = opaque;
    if (r->bad->len >= MAX_LISTED)
        return;
    BadPage b = {
        .block = g_strdup(block), .page = page, .offset = file_offset, .reason = g_strdup(reason)
    };
    for (unsigned i = 0; i < r->f->n_blocks; i++)
        if (!strcmp(r->f->blocks[i].name, block))
            b.block_index = i;
    g_array_append_val(r->bad, b);
}

static int by_position(gconstpointer a, gconstpointer b)
{
    const BadPage *x = a, *y = b;
    if (x->block_index != y->block_index)
        return x->block_index < y->block_index ? -1 : 1;
    return x->page < y->page ? -1 : x->page > y->page;
}

/* Which exit code an open/parse error deserves: a file that is provably bad is
 * invalid (1); one we could not open or read, or that needs a newer vmsnap, is an
 * error (2). */
static int open_error_code(const GError *e)
{
    if (e->domain == FORMAT_ERROR)
        return e->code == FORMAT_ERROR_UNSUPPORTED ? VERIFY_EXIT_ERROR : VERIFY_EXIT_INVALID;
    /* snapfile_read() reports a short read as INVALID_DATA ("truncated: ...") */
    if (g_error_matches(e, G_IO_ERROR, G_IO_ERROR_INVALID_DATA))
        return VERIFY_EXIT_INVALID;
    return VERIFY_EXIT_ERROR;
}

/* The message without the leading "FILE: " (the report names the file once). */
static const char *without_file(const char *msg, const char *file)
{
    size_t n = strlen(file);
    if (!strncmp(msg, file, n) && !strncmp(msg + n, ": ", 2))
        return msg + n + 2;
    return msg;
}

static void print_json(const VerifyArgs *a, bool valid, bool complete, const GArray *bad,
                       uint64_t n_bad, const char *error)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "file");
    json_builder_add_string_value(b, a->path);
    json_builder_set_member_name(b, "offset");
    json_builder_add_int_value(b, (gint64)a->offset);
    json_builder_set_member_name(b, "valid");
    json_builder_add_boolean_value(b, valid);
    json_builder_set_member_name(b, "complete");
    json_builder_add_boolean_value(b, complete);
    json_builder_set_member_name(b, "bad_page_count");
    json_builder_add_int_value(b, (gint64)n_bad);
    json_builder_set_member_name(b, "bad_pages");
    json_builder_begin_array(b);
    for (guint i = 0; bad && i < bad->len; i++) {
        const BadPage *p = &g_array_index(bad, BadPage, i);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "block");
        json_builder_add_string_value(b, p->block);
        json_builder_set_member_name(b, "page");
        json_builder_add_int_value(b, (gint64)p->page);
        json_builder_set_member_name(b, "offset");
        json_builder_add_int_value(b, (gint64)p->offset);
        json_builder_set_member_name(b, "reason");
        json_builder_add_string_value(b, p->reason);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "error");
    if (error)
        json_builder_add_string_value(b, error);
    else
        json_builder_add_null_value(b);
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_pretty(gen, TRUE);
    json_generator_set_root(gen, root);
    g_autofree char *text = json_generator_to_data(gen, NULL);
    printf("%s\n", text);
}

static int run_verify(const VerifyArgs *a)
{
    g_autoptr(GError) error = NULL;
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(VmsnapSnapshot) s =
        vmsnap_snapshot_open(a->path, a->offset, VMSNAP_OPEN_ALLOW_PARTIAL, &error);
    if (!s) {
        int code = open_error_code(error);
        if (a->json)
            print_json(a, false, false, NULL, 0, error->message);
        else if (code == VERIFY_EXIT_INVALID)
            printf("%s: invalid: %s\n", a->path, without_file(error->message, a->path));
        else
            fprintf(stderr, "vmsnap verify: %s\n", error->message);
        return code;
    }
    if (!vmsnap_snapshot_complete(s)) {
        const char *msg = "incomplete: the save did not finish (state PART)";
        if (a->json)
            print_json(a, false, false, NULL, 0, msg);
        else
            printf("%s: %s\n", a->path, msg);
        return VERIFY_EXIT_INVALID;
    }

    const FormatSnapshot *f = s->fmt;
    g_autoptr(GArray) bad = g_array_new(FALSE, TRUE, sizeof(BadPage));
    g_array_set_clear_func(bad, bad_page_clear);
    Report r = { .f = f, .bad = bad };
    uint64_t n_bad = 0;
    if (!vmsnap_snapshot_verify_pages(s, a->threads, on_bad_page, &r, &n_bad, &error)) {
        if (a->json)
            print_json(a, false, true, bad, n_bad, error->message);
        else
            fprintf(stderr, "vmsnap verify: %s\n", error->message);
        return VERIFY_EXIT_ERROR;
    }
    /* Readers run in parallel: report in file order. */
    g_array_sort(bad, by_position);

    if (a->json) {
        g_autofree char *msg =
            n_bad ? g_strdup_printf("%" G_GUINT64_FORMAT " bad pages", n_bad) : NULL;
        print_json(a, n_bad == 0, true, bad, n_bad, msg);
        return n_bad ? VERIFY_EXIT_INVALID : 0;
    }
    for (guint i = 0; i < bad->len; i++) {
        const BadPage *p = &g_array_index(bad, BadPage, i);
        printf("%s page 0x%" G_GINT64_MODIFIER "x at file offset 0x%" G_GINT64_MODIFIER "x: %s\n",
               p->block, p->page, p->offset, p->reason);
    }
    if (n_bad > bad->len)
        printf("(%" G_GUINT64_FORMAT " more bad pages not listed)\n", n_bad - bad->len);
    if (n_bad) {
        printf("%s: invalid: %" G_GUINT64_FORMAT " bad page%s\n", a->path, n_bad,
               n_bad == 1 ? "" : "s");
        return VERIFY_EXIT_INVALID;
    }

    uint64_t pages = 0, present = 0;
    for (unsigned i = 0; i < f->n_blocks; i++) {
        pages += format_block_pages(&f->blocks[i]);
        present += format_snapshot_present_pages(f, i);
    }
    g_autofree char *ram = progress_format_bytes(f->header.ram_size);
    g_autofree char *took = progress_format_duration((double)(g_get_monotonic_time() - t0) / 1e6);
    printf("%s: valid: %u sections, %u RAM block%s (%s, %" G_GUINT64_FORMAT
           " pages, %" G_GUINT64_FORMAT " present), checked in %s\n",
           a->path, f->n_sections, f->n_blocks, f->n_blocks == 1 ? "" : "s", ram, pages, present,
           took);
    return 0;
}

int cli_verify(int argc, char **argv)
{
    VerifyArgs a = { 0 };
    g_autoptr(GError) error = NULL;
    if (!verify_parse(argc, argv, &a, &error)) {
        fprintf(stderr, "vmsnap verify: %s\n", error->message);
        g_free(a.path);
        /* Usage is 2 here, not CLI_EXIT_USAGE: 1 means "invalid" to cron jobs. */
        return VERIFY_EXIT_ERROR;
    }
    int code = run_verify(&a);
    g_free(a.path);
    return code;
}
