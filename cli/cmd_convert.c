/* vmsnap convert: a migration stream (docs/PROTOCOL.md) to a mapped-RAM snapshot file
 * (docs/FORMAT.md) and back. */
#include "cli.h"
#include "config.h"
#include "format.h"
#include "progress.h"
#include "receiver.h"
#include "snapfile.h"
#include "stream_writer.h"
#include "transport.h"
#include "vmstate.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#define CONVERT_EXIT_FAILED 2 /* the input was refused, or reading or writing failed */

typedef struct ConvertArgs {
    char *in;
    char *out;
    bool quiet;
} ConvertArgs;

static bool convert_parse(int argc, char **argv, ConvertArgs *a, GError **error)
{
    gboolean quiet = FALSE;
    GOptionEntry entries[] = {
        { "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "Print nothing on success", NULL },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("IN OUT - convert between a migration stream and a snapshot file");
    g_option_context_set_summary(
        ctx, "The direction comes from IN. A stream (IN a file, '-' for stdin, or exec:CMD to "
             "read\nCMD's output) becomes the snapshot file OUT. A snapshot file (IN a path,\n"
             "FILE[,offset=N]) becomes the stream OUT (a path, '-' for stdout, or exec:CMD\n"
             "to feed CMD's input). Every record, page and checksum is checked on the way.");
    g_option_context_set_description(ctx, "Exit codes: 0 ok, 1 usage, 2 the input was refused "
                                          "or reading or writing failed.\n\n"
                                          "Examples:\n"
                                          "  vmsnap convert vm.snap vm.strm\n"
                                          "  vmsnap convert vm.snap 'exec:zstd -q -o vm.strm.zst'\n"
                                          "  vmsnap convert 'exec:zstd -dc vm.strm.zst' vm.snap\n"
                                          "  vmsnap convert - vm.snap < vm.strm\n");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_strict_posix(ctx, FALSE);
    g_auto(GStrv) args = g_new0(char *, argc + 1);
    for (int i = 0; i < argc; i++)
        args[i] = g_strdup(argv[i]);
    if (!g_option_context_parse_strv(ctx, &args, error))
        return false;
    guint n = g_strv_length(args);
    if (n < 3) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "missing %s; see --help",
                    n < 2 ? "IN and OUT" : "OUT");
        return false;
    }
    if (n > 3) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "unexpected argument '%s'",
                    args[3]);
        return false;
    }
    a->in = g_strdup(args[1]);
    a->out = g_strdup(args[2]);
    a->quiet = quiet;
    return true;
}

static bool errno_error(GError **error, int err, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static bool errno_error(GError **error, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s", what, g_strerror(err));
    return false;
}

/* ---- stream -> snapshot file ---- */

typedef struct StreamIn {
    uint8_t vm_uuid[16];
} StreamIn;

static bool take_config(void *opaque, GBytes *fields, uint32_t version, const uint8_t vm_uuid[16],
                        bool validate_uuid, GError **error)
{
    memcpy(((StreamIn *)opaque)->vm_uuid, vm_uuid, 16);
    return true;
}

/* A device of the written file: re-emits the fields received for it. */
static bool pass_through(void *opaque, VmsnapFieldWriter *w, GError **error)
{
    const ReceivedSection *sec = opaque;
    gsize len;
    const void *data = g_bytes_get_data(sec->fields, &len);
    if (!vmsnap_fw_raw(w, data, len)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "the received fields of device '%s' instance %u are not well formed", sec->name,
                    sec->instance);
        return false;
    }
    return true;
}

static bool stream_to_file(VStream *in, const ConvertArgs *a, GError **error)
{
    g_autofree char *path = NULL;
    uint64_t offset = 0;
    if (!strcmp(a->out, "-") || g_str_has_prefix(a->out, "exec:")) {
        vstream_free(in);
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "'%s': a stream becomes a snapshot file: OUT must be a path", a->out);
        return false;
    }
    if (!cli_parse_snapshot_arg(a->out, &path, &offset, error)) {
        vstream_free(in);
        return false;
    }
    g_autofree char *in_name = g_strdup(in->name);
    StreamIn si = { 0 };
    ReceiverHooks hooks = { .config = take_config, .opaque = &si };
    uint64_t t0 = g_get_monotonic_time();
    Receiver *r = receiver_new(in, NULL, 0, &hooks);
    if (!receiver_run(r, error)) {
        receiver_free(r);
        return false;
    }
    unsigned n_blocks, n_devices;
    const VmsnapRamBlock *blocks = receiver_ram_blocks(r, &n_blocks);
    const ReceivedSection *secs = receiver_devices(r, &n_devices);
    g_autofree VmsnapDevice *devices = g_new0(VmsnapDevice, MAX(n_devices, 1));
    for (unsigned i = 0; i < n_devices; i++) {
        devices[i] = (VmsnapDevice){
            .struct_size = sizeof(VmsnapDevice),
            .name = secs[i].name,
            .instance = secs[i].instance,
            .version = secs[i].version,
            .min_version = secs[i].version,
            .save = pass_through,
            .opaque = (void *)&secs[i],
        };
    }
    VmsnapVm vm = {
        .struct_size = sizeof(vm),
        .n_blocks = n_blocks,
        .blocks = blocks,
        .n_devices = n_devices,
        .devices = devices,
    };
    memcpy(vm.uuid, si.vm_uuid, 16);
    vm.config = receiver_config(r, &vm.config_version);
    VmsnapSaveOptions opt = { .struct_size = sizeof(opt), .offset = offset };
    VmsnapSaveStats stats;
    bool ok = vmsnap_save_path(&vm, path, &opt, &stats, error);
    if (ok && !a->quiet) {
        g_autofree char *bytes = progress_format_bytes(receiver_bytes(r));
        g_autofree char *ram = progress_format_bytes(stats.ram_bytes);
        double secs_taken = (double)(g_get_monotonic_time() - t0) / 1e6;
        fprintf(stderr,
                "vmsnap convert: %s (stream, %s, %u pass%s) -> %s (snapshot): RAM %s, "
                "%" G_GUINT64_FORMAT " pages written, %" G_GUINT64_FORMAT " zero, "
                "%u devices, %.2f s\n",
                in_name, bytes, receiver_passes(r), receiver_passes(r) == 1 ? "" : "es", path, ram,
                stats.normal_pages, stats.zero_pages, n_devices, secs_taken);
    }
    receiver_free(r);
    return ok;
}

/* ---- snapshot file -> stream ---- */

/* The CONFIG's run_state at save time decides END's SOURCE_RUNNING. */
static bool source_was_running(const VmsnapSnapshot *s, bool *running, GError **error)
{
    MachineConfig cfg;
    g_autofree char *run_state = NULL;
    if (!vmstate_config_decode(s->fmt->config, s->fmt->config_version, &cfg, &run_state, error)) {
        g_prefix_error(error, "%s: ", s->what);
        return false;
    }
    machine_config_clear(&cfg);
    *running = run_state && !strcmp(run_state, "running");
    return true;
}

/* Sends the present pages of block bi from a read-only mapping of its page area,
 * checking each against the file's checksum. */
static bool send_block(const VmsnapSnapshot *s, unsigned bi, StreamWriter *w, GError **error)
{
    const FormatSnapshot *f = s->fmt;
    const FormatBlock *b = &f->blocks[bi];
    const uint64_t *present = g_bytes_get_data(f->present[bi], NULL);
    const uint64_t *sums = f->checksums[bi] ? g_bytes_get_data(f->checksums[bi], NULL) : NULL;
    uint64_t pages = format_block_pages(b);
    size_t words = format_bitmap_words(pages), ps = b->page_size;
    if (format_snapshot_present_pages(f, bi) == 0)
        return true;
    uint8_t *area = mmap(NULL, b->size, PROT_READ, MAP_PRIVATE, s->fd, (off_t)b->pages_offset);
    if (area == MAP_FAILED)
        return errno_error(error, errno, "%s: mapping the page area of RAM block '%s'", s->what,
                           b->name);
    madvise(area, b->size, MADV_SEQUENTIAL);
    bool ok = true;
    for (size_t wi = 0; wi < words && ok; wi++) {
        uint64_t bits = GUINT64_FROM_LE(present[wi]);
        while (bits && ok) {
            uint64_t p = wi * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            const uint8_t *page = area + p * ps;
            if (sums && XXH3_64bits(page, ps) != GUINT64_FROM_LE(sums[p])) {
                g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                            "%s: RAM block '%s' page 0x%" G_GINT64_MODIFIER "x at file offset "
                            "0x%" G_GINT64_MODIFIER "x: checksum mismatch (vmsnap verify lists "
                            "every bad page)",
                            s->what, b->name, p, b->pages_offset + p * ps);
                ok = false;
                break;
            }
            ok = stream_writer_page(w, bi, p, page, error);
        }
    }
    /* The writer holds pointers into the mapping until the record is sent. */
    ok = ok && stream_writer_flush_pages(w, error);
    munmap(area, b->size);
    return ok;
}

static bool file_to_stream(VmsnapSnapshot *s, VStream *out, StreamWriter **wp, GError **error)
{
    const FormatSnapshot *f = s->fmt;
    bool running;
    if (!source_was_running(s, &running, error))
        return false;
    StreamHeader h = {
        .version = STREAM_VERSION,
        .channels = 1,
        .page_size = FORMAT_PAGE_SIZE,
        .writer_version =
            (VMSNAP_VERSION_MAJOR << 16) | (VMSNAP_VERSION_MINOR << 8) | VMSNAP_VERSION_MICRO,
    };
    memcpy(h.vm_uuid, f->header.vm_uuid, 16);
    for (unsigned i = 0; i < 4; i++) {
        guint32 v = g_random_int();
        memcpy(h.session + 4 * i, &v, 4);
    }
    StreamWriter *w = *wp = stream_writer_new(out, 0, FORMAT_PAGE_SIZE);
    stream_writer_set_zero_copy(w, true);
    if (!stream_writer_header(w, &h, error) ||
        !stream_writer_config(w, f->config_version, f->config, error) ||
        !stream_writer_ram_blocks(w, f->blocks, f->n_blocks, error))
        return false;
    for (unsigned bi = 0; bi < f->n_blocks; bi++)
        if (!send_block(s, bi, w, error))
            return false;
    if (!stream_writer_sync(w, 1, STREAM_SYNC_FINAL, 0, error))
        return false;
    for (unsigned i = 0; i < f->n_sections; i++) {
        const FormatSection *sec = &f->sections[i];
        if (sec->type != FORMAT_SECTION_DEVICE)
            continue;
        gsize len = 0;
        GBytes *payload = format_snapshot_payload(f, i);
        const void *data = payload ? g_bytes_get_data(payload, &len) : NULL;
        if (!stream_writer_device(w, sec->name, sec->instance, sec->version, data, len, error))
            return false;
    }
    return stream_writer_end(w, running ? STREAM_END_SOURCE_RUNNING : 0, error);
}

/* OUT: a path (written as PATH.partial, synced, renamed), '-' or exec:CMD. */
typedef struct StreamOut {
    VStream *s;
    int fd;
    char *path;
    char *tmp;
} StreamOut;

static bool stream_out_open(StreamOut *o, const char *out, GError **error)
{
    o->fd = -1;
    if (!strcmp(out, "-")) {
        o->s = vstream_fd_new(STDOUT_FILENO, false, "stdout");
        return true;
    }
    if (g_str_has_prefix(out, "exec:")) {
        MigrateUri uri = { .kind = MIGRATE_URI_EXEC, .command = (char *)out + 5 };
        o->s = transport_connect(&uri, error);
        return o->s != NULL;
    }
    o->path = g_strdup(out);
    o->tmp = g_strdup_printf("%s.partial", out);
    o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o->fd < 0)
        return errno_error(error, errno, "%s: cannot create", o->tmp);
    o->s = vstream_fd_new(o->fd, false, o->path);
    return true;
}

static bool stream_out_finish(StreamOut *o, GError **error)
{
    if (!o->path)
        return transport_stream_finish(o->s, error);
    if (fsync(o->fd) < 0)
        return errno_error(error, errno, "%s: fsync failed", o->tmp);
    if (rename(o->tmp, o->path) < 0)
        return errno_error(error, errno, "cannot rename %s to %s", o->tmp, o->path);
    g_clear_pointer(&o->tmp, g_free);
    g_autofree char *dir = g_path_get_dirname(o->path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return true;
}

static void stream_out_close(StreamOut *o)
{
    vstream_free(o->s);
    if (o->fd >= 0)
        close(o->fd);
    if (o->tmp)
        g_unlink(o->tmp); /* a failed conversion leaves nothing behind */
    g_free(o->tmp);
    g_free(o->path);
}

static bool convert_file(const char *path, uint64_t offset, const ConvertArgs *a, GError **error)
{
    uint64_t t0 = g_get_monotonic_time();
    g_autoptr(VmsnapSnapshot) s = vmsnap_snapshot_open(path, offset, 0, error);
    if (!s)
        return false;
    StreamOut o = { 0 };
    g_autoptr(StreamWriter) w = NULL;
    bool ok = stream_out_open(&o, a->out, error) && file_to_stream(s, o.s, &w, error) &&
              stream_out_finish(&o, error);
    if (ok && !a->quiet) {
        g_autofree char *bytes = progress_format_bytes(stream_writer_bytes(w));
        g_autofree char *ram = progress_format_bytes(s->fmt->header.ram_size);
        fprintf(stderr,
                "vmsnap convert: %s (snapshot, RAM %s) -> %s (stream, %s): %" G_GUINT64_FORMAT
                " data pages, %" G_GUINT64_FORMAT " zero, %" G_GUINT64_FORMAT " records, "
                "%.2f s\n",
                s->what, ram, o.s->name, bytes, stream_writer_data_pages(w),
                stream_writer_zero_pages(w), stream_writer_records(w),
                (double)(g_get_monotonic_time() - t0) / 1e6);
    }
    stream_out_close(&o);
    return ok;
}

/* ---- input ---- */

static bool convert(const ConvertArgs *a, GError **error)
{
    if (!strcmp(a->in, "-"))
        return stream_to_file(vstream_fd_new(STDIN_FILENO, false, "stdin"), a, error);
    if (g_str_has_prefix(a->in, "exec:")) {
        VStream *in = transport_exec_read(a->in + 5, error);
        return in && stream_to_file(in, a, error);
    }
    g_autofree char *path = NULL;
    uint64_t offset;
    if (!cli_parse_snapshot_arg(a->in, &path, &offset, error))
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno_error(error, errno, "%s: cannot open", path);
    uint8_t magic[8] = { 0 };
    ssize_t n = pread(fd, magic, sizeof(magic), (off_t)offset);
    if (n == (ssize_t)sizeof(magic) && !memcmp(magic, STREAM_MAGIC, 8)) {
        if (offset && lseek(fd, (off_t)offset, SEEK_SET) < 0) {
            int err = errno;
            close(fd);
            return errno_error(error, err, "%s: cannot seek to %" G_GUINT64_FORMAT, path, offset);
        }
        return stream_to_file(vstream_fd_new(fd, true, path), a, error);
    }
    close(fd);
    if (n == (ssize_t)sizeof(magic) && !memcmp(magic, FORMAT_MAGIC, 8))
        return convert_file(path, offset, a, error);
    if (n < 0)
        return errno_error(error, errno, "%s: cannot read", path);
    g_set_error(
        error, FORMAT_ERROR, FORMAT_ERROR_NOT_SNAPSHOT,
        "%s: neither a vmsnap snapshot nor a vmsnap stream (magic at offset %" G_GUINT64_FORMAT ")",
        path, offset);
    return false;
}

int cli_convert(int argc, char **argv)
{
    ConvertArgs a = { 0 };
    g_autoptr(GError) error = NULL;
    if (!convert_parse(argc, argv, &a, &error)) {
        fprintf(stderr, "vmsnap convert: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }
    bool ok = convert(&a, &error);
    if (!ok) {
        bool usage = error->domain == G_OPTION_ERROR;
        fprintf(stderr, "vmsnap convert: %s\n", error->message);
        g_free(a.in);
        g_free(a.out);
        return usage ? CLI_EXIT_USAGE : CONVERT_EXIT_FAILED;
    }
    g_free(a.in);
    g_free(a.out);
    return 0;
}
