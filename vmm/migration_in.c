/* Incoming migration / restore into this VMM (state inmigrate): from a mapped-RAM
 * file (map or copy), and from a stream. */
#include "migration_priv.h"

#include "devstate.h"
#include "vmstate.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsnap/restore.h>

VmsnapSnapshot *migration_open_snapshot(Machine *m, const char *text, unsigned flags,
                                        GError **error)
{
    MigrateUri uri;
    g_autofree char *with_scheme =
        strchr(text, ':') ? g_strdup(text) : g_strdup_printf("file:%s", text);
    if (!migrate_uri_parse(with_scheme, &uri, error))
        return NULL;
    VmsnapSnapshot *s = NULL;
    if (uri.kind == MIGRATE_URI_FILE) {
        s = vmsnap_snapshot_open(uri.path, uri.offset, flags, error);
    } else if (uri.kind == MIGRATE_URI_FD && m && m->qmp) {
        int fd = qmp_server_take_fd(m->qmp, uri.fdname, error); /* m may be NULL only for file: */
        if (fd >= 0) {
            g_autofree char *what = g_strdup_printf("fd:%s", uri.fdname);
            s = vmsnap_snapshot_open_fd(fd, 0, what, flags, error);
            close(fd);
        }
    } else {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "incoming migration from '%s:' is not supported yet (use file:PATH or fd:NAME)",
                    migrate_uri_kind_name(uri.kind));
    }
    migrate_uri_clear(&uri);
    return s;
}

typedef struct BadPages {
    GString *report;
    unsigned shown;
} BadPages;

static void note_bad_page(void *opaque, const char *block, uint64_t page, uint64_t off,
                          const char *reason)
{
    BadPages *bp = opaque;
    if (bp->shown++ < 8)
        g_string_append_printf(bp->report,
                               "\n  RAM block '%s' page 0x%" G_GINT64_MODIFIER
                               "x at file offset 0x%" G_GINT64_MODIFIER "x: %s",
                               block, page, off, reason);
}

unsigned migration_open_flags(const IncomingOptions *opt)
{
    /* Map restore without --verify reads no page, so it needs no page checksums
     * in memory (they are still checked against the directory on open). */
    return opt->mode == RESTORE_MODE_MAP && !opt->verify ? VMSNAP_OPEN_NO_PAGE_CHECKSUMS : 0;
}

bool migration_incoming(Machine *m, const char *uri, const IncomingOptions *opt, GError **error)
{
    g_autoptr(VmsnapSnapshot) s = migration_open_snapshot(m, uri, migration_open_flags(opt), error);
    return s && migration_incoming_snapshot(m, s, opt, error);
}

bool migration_incoming_snapshot(Machine *m, VmsnapSnapshot *s, const IncomingOptions *opt,
                                 GError **error)
{
    uint32_t version;
    GBytes *config = vmsnap_snapshot_config(s, &version);
    MachineConfig snap = { 0 };
    g_autofree char *run_state = NULL;
    if (!vmstate_config_decode(config, version, &snap, &run_state, error)) {
        g_prefix_error(error, "%s: ", vmsnap_snapshot_name(s));
        return false;
    }
    bool fits = vmstate_config_check(&m->cfg, &snap, vmsnap_snapshot_name(s), error);
    machine_config_clear(&snap);
    if (!fits)
        return false;

    VmsnapRamBlock blocks[RAM_MAX_BLOCKS];
    unsigned n = vmstate_ram_blocks(m, blocks);
    if (opt->mode == RESTORE_MODE_MAP) {
        if (!vmsnap_snapshot_map(s, blocks, n, error))
            return false;
        for (unsigned i = 0; i < n; i++) {
            RamBlock *rb = &m->vm->ram.blocks[i];
            if (rb->fd >= 0)
                close(rb->fd);
            rb->fd = blocks[i].backing_fd;
            rb->backing = RAM_BACKING_FILE;
        }
        if (opt->verify) {
            BadPages bp = { g_string_new(NULL), 0 };
            uint64_t bad = 0;
            bool ok = vmsnap_snapshot_verify_pages(s, 0, note_bad_page, &bp, &bad, error);
            if (ok && bad) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                            "%s: %" G_GUINT64_FORMAT " bad page(s):%s", vmsnap_snapshot_name(s),
                            bad, bp.report->str);
                ok = false;
            }
            g_string_free(bp.report, TRUE);
            if (!ok)
                return false;
        }
    } else if (!vmsnap_snapshot_copy(s, blocks, n, 0, NULL, error)) {
        return false;
    }
    unsigned n_dev;
    const VmsnapDevice *devs = devstate_devices(m->devstate, &n_dev);
    if (!vmsnap_snapshot_load_devices(s, devs, n_dev, NULL, error))
        return false;
    if (m->cfg.paused) {
        machine_set_state(m, RUN_STATE_PAUSED);
    } else {
        machine_set_state(m, RUN_STATE_PAUSED);
        machine_cont(m, NULL);
    }
    return true;
}

/* ---- streams ---- */

#include "receiver.h"
#include "stream_format.h"
#include "transport.h"

static Incoming *incoming(Machine *m)
{
    return &migration_get(m)->in;
}

static void set_in_status(Machine *m, MigStatus s)
{
    Migration *g = migration_get(m);
    __atomic_store_n(&g->in.status, s, __ATOMIC_RELEASE);
    if (g->params.cap_events && m->qmp) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "status");
        json_builder_add_string_value(b, migration_status_name(s));
        json_builder_end_object(b);
        qmp_server_emit_event(m->qmp, "MIGRATION", json_builder_get_root(b));
        g_object_unref(b);
    }
}

static bool uuid_parse(const char *text, uint8_t out[16])
{
    unsigned j = 0;
    for (const char *p = text; *p && j < 32; p++) {
        int v = g_ascii_xdigit_value(*p);
        if (v < 0)
            continue;
        if (j % 2 == 0)
            out[j / 2] = (uint8_t)(v << 4);
        else
            out[j / 2] |= (uint8_t)v;
        j++;
    }
    return j == 32;
}

/* ReceiverHooks.config: can this VMM run the incoming VM? */
static bool check_config(void *opaque, GBytes *fields, uint32_t version, const uint8_t vm_uuid[16],
                         bool validate_uuid, GError **error)
{
    Machine *m = opaque;
    Incoming *in = incoming(m);
    MachineConfig snap = { 0 };
    g_autofree char *run_state = NULL;
    if (!vmstate_config_decode(fields, version, &snap, &run_state, error))
        return false;
    bool ok = vmstate_config_check(&m->cfg, &snap, in->uri.path ? in->uri.path : "stream", error);
    machine_config_clear(&snap);
    if (ok && validate_uuid) {
        uint8_t mine[16];
        if (!uuid_parse(m->cfg.uuid, mine) || memcmp(mine, vm_uuid, 16)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "UUID of the source VM differs from this VM's UUID %s (the source "
                        "asked for validate-uuid)",
                        m->cfg.uuid);
            return false;
        }
    }
    return ok;
}

static VStream *accept_channel(void *opaque, GError **error)
{
    Machine *m = opaque;
    Incoming *in = incoming(m);
    if (!in->listener) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "the stream has extra (multifd) channels but the destination is not "
                    "listening on unix: or tcp:");
        return NULL;
    }
    return transport_accept(in->listener, 30000, error);
}

/* On the receive thread, once the whole stream is in: loads the devices and starts
 * the VM there and then. Waking the main loop first cost 0.1-0.3 ms of downtime, and
 * several ms now and then on a busy host. Device loads and run-state changes are
 * thread-safe (the source saves its devices on its job thread too). */
static void incoming_complete(Machine *m)
{
    Incoming *in = incoming(m);
    unsigned n_rx, n_dev;
    const ReceivedSection *rx = receiver_devices(in->rx, &n_rx);
    g_autofree VmsnapSectionPayload *secs = g_new0(VmsnapSectionPayload, n_rx + 1);
    for (unsigned i = 0; i < n_rx; i++)
        secs[i] = (VmsnapSectionPayload){ rx[i].name, rx[i].instance, rx[i].version, rx[i].fields };
    const VmsnapDevice *devs = devstate_devices(m->devstate, &n_dev);
    if (!vmsnap_load_device_sections(migrate_uri_kind_name(in->uri.kind), secs, n_rx, devs, n_dev,
                                     NULL, &in->error)) {
        g_prefix_error(&in->error, "incoming stream: ");
        return;
    }
    in->loaded_us = (uint64_t)g_get_monotonic_time();
    bool run =
        receiver_source_running(in->rx) && !__atomic_load_n(&m->cfg.paused, __ATOMIC_ACQUIRE);
    set_in_status(m, MIG_COMPLETED);
    machine_set_state(m, RUN_STATE_PAUSED);
    GError *error = NULL;
    if (run && !machine_cont(m, &error)) {
        fprintf(stderr, "vmsnap: %s\n", error->message);
        g_error_free(error);
    }
    in->resumed_us = (uint64_t)g_get_monotonic_time();
}

static gboolean incoming_finished(gpointer data)
{
    Machine *m = data;
    Incoming *in = incoming(m);

    g_thread_join(in->thread);
    in->thread = NULL;
    if (in->error) {
        fprintf(stderr, "vmsnap: incoming migration failed: %s\n", in->error->message);
        set_in_status(m, MIG_FAILED);
        machine_shutdown(m, MACHINE_EXIT_USAGE, false, "host-error");
        return G_SOURCE_REMOVE;
    }
    uint64_t end_us = receiver_end_us(in->rx);
    g_debug("incoming: stream closed %" PRIu64 " us after its END, devices loaded in %" PRIu64
            " us, running %" PRIu64 " us later",
            end_us ? in->ran_us - end_us : 0, in->loaded_us - in->ran_us,
            in->resumed_us - in->loaded_us);
    /* VMSNAP_TRACE_DOWNTIME=1: monotonic timestamps, to line up with the source's */
    if (g_getenv("VMSNAP_TRACE_DOWNTIME"))
        g_debug("downtime trace: end-record %" PRIu64 " eof %" PRIu64 " loaded %" PRIu64
                " resumed %" PRIu64,
                end_us, in->ran_us, in->loaded_us, in->resumed_us);
    return G_SOURCE_REMOVE;
}

static gpointer receive_thread(gpointer data)
{
    Machine *m = data;
    Incoming *in = incoming(m);
    VStream *main = in->main;
    in->main = NULL;
    if (!main)
        main = transport_accept(in->listener, -1, &in->error);
    if (main) {
        set_in_status(m, MIG_ACTIVE);
        VmsnapRamBlock blocks[RAM_MAX_BLOCKS];
        unsigned n = vmstate_ram_blocks(m, blocks);
        ReceiverHooks hooks = { .config = check_config,
                                .accept_channel = accept_channel,
                                .opaque = m };
        in->rx = receiver_new(main, blocks, n, &hooks);
        /* Every page arrives in the first pass: what the RAM held before is moot. Once
         * discarded it reads as zero, and the receiver need not touch zero pages. */
        GError *discard_error = NULL;
        if (ram_discard(&m->vm->ram, &discard_error))
            receiver_assume_zeroed(in->rx);
        g_clear_error(&discard_error);
        ram_prefer_huge_pages(&m->vm->ram, false);
        receiver_run(in->rx, &in->error);
        in->ran_us = (uint64_t)g_get_monotonic_time();
        if (!in->error)
            incoming_complete(m);
        ram_prefer_huge_pages(&m->vm->ram, true);
    }
    machine_call_in_main(m, G_PRIORITY_DEFAULT, incoming_finished, m, NULL);
    return NULL;
}

bool migration_incoming_start(Machine *m, const char *text, GError **error)
{
    Incoming *in = incoming(m);
    if (machine_state(m) != RUN_STATE_INMIGRATE || in->status != MIG_NONE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "The incoming migration has already been started (or the VM was not "
                    "started with --incoming)");
        return false;
    }
    g_autofree char *with_scheme =
        strchr(text, ':') ? g_strdup(text) : g_strdup_printf("file:%s", text);
    MigrateUri uri;
    if (!migrate_uri_parse(with_scheme, &uri, error))
        return false;
    IncomingOptions opt = {
        .mode = m->cfg.restore_mode_copy ? RESTORE_MODE_COPY : RESTORE_MODE_MAP,
        .verify = m->cfg.verify,
    };
    if (uri.kind == MIGRATE_URI_FILE) {
        migrate_uri_clear(&uri);
        return migration_incoming(m, with_scheme, &opt, error);
    }
    if (uri.kind == MIGRATE_URI_FD) {
        int fd = m->qmp ? qmp_server_take_fd(m->qmp, uri.fdname, error) : -1;
        if (fd < 0) {
            migrate_uri_clear(&uri);
            return false;
        }
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            g_autofree char *what = g_strdup_printf("fd:%s", uri.fdname);
            g_autoptr(VmsnapSnapshot) s =
                vmsnap_snapshot_open_fd(fd, 0, what, migration_open_flags(&opt), error);
            close(fd);
            migrate_uri_clear(&uri);
            return s && migration_incoming_snapshot(m, s, &opt, error);
        }
        g_autofree char *name = g_strdup_printf("fd:%s", uri.fdname);
        in->main = transport_stream_from_fd(fd, name);
    } else if (uri.kind == MIGRATE_URI_EXEC) {
        in->main = transport_exec_read(uri.command, error);
        if (!in->main) {
            migrate_uri_clear(&uri);
            return false;
        }
    } else {
        in->listener = transport_listen(&uri, error);
        if (!in->listener) {
            migrate_uri_clear(&uri);
            return false;
        }
    }
    in->uri = uri;
    set_in_status(m, MIG_SETUP);
    in->thread = g_thread_new("vmsnap-incoming", receive_thread, m);
    return true;
}

bool migration_incoming_stream(Machine *m, VStream *s, GError **error)
{
    Incoming *in = incoming(m);
    if (machine_state(m) != RUN_STATE_INMIGRATE || in->status != MIG_NONE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "The incoming migration has already been started");
        vstream_free(s);
        return false;
    }
    in->uri.kind = MIGRATE_URI_EXEC;
    in->main = s;
    set_in_status(m, MIG_SETUP);
    in->thread = g_thread_new("vmsnap-incoming", receive_thread, m);
    return true;
}

bool migration_peek_config(VStream **s, GBytes **fields, uint32_t *version, GError **error)
{
    uint8_t head[STREAM_HEADER_SIZE + STREAM_RECORD_HEADER];
    StreamHeader h;
    StreamRecordHeader rh;
    const char *what = (*s)->name;
    if (!vstream_read_all(*s, head, sizeof(head), NULL, error) ||
        !stream_header_decode(head, what, &h, error) ||
        !stream_record_header_decode(head + STREAM_HEADER_SIZE, what, 0, STREAM_HEADER_SIZE, &rh,
                                     error))
        return false;
    if (rh.type != STREAM_REC_CONFIG || rh.length < 8) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "%s: the first record is %s, not CONFIG", what, stream_record_name(rh.type));
        return false;
    }
    GByteArray *all = g_byte_array_sized_new(sizeof(head) + rh.length);
    g_byte_array_append(all, head, sizeof(head));
    g_byte_array_set_size(all, sizeof(head) + rh.length);
    uint8_t *payload = all->data + sizeof(head);
    if (!vstream_read_all(*s, payload, rh.length, NULL, error) ||
        !stream_record_check(&rh, payload, what, 0, STREAM_HEADER_SIZE, error)) {
        g_byte_array_unref(all);
        return false;
    }
    uint32_t v;
    memcpy(&v, payload, 4);
    *version = GUINT32_FROM_LE(v);
    GBytes *bytes = g_byte_array_free_to_bytes(all);
    *fields = g_bytes_new_from_bytes(bytes, sizeof(head) + 8, rh.length - 8);
    *s = vstream_prefix_new(*s, bytes);
    g_bytes_unref(bytes);
    return true;
}

void migration_query_incoming(Machine *m, JsonBuilder *b)
{
    if (!m->mig)
        return;
    Incoming *in = &m->mig->in;
    MigStatus s = __atomic_load_n(&in->status, __ATOMIC_ACQUIRE);
    if (s == MIG_NONE)
        return;
    if (migration_status(m->mig) == MIG_NONE) {
        json_builder_set_member_name(b, "status");
        json_builder_add_string_value(b, migration_status_name(s));
        if (s == MIG_FAILED && in->error) {
            json_builder_set_member_name(b, "error-desc");
            json_builder_add_string_value(b, in->error->message);
        }
    }
    if (in->listener) {
        json_builder_set_member_name(b, "socket-address");
        json_builder_begin_array(b);
        json_builder_begin_object(b);
        const char *type = transport_listener_type(in->listener);
        json_builder_set_member_name(b, "type");
        json_builder_add_string_value(b, type);
        json_builder_set_member_name(b, strcmp(type, "unix") ? "host" : "path");
        json_builder_add_string_value(b, transport_listener_host(in->listener));
        if (transport_listener_port(in->listener)) {
            json_builder_set_member_name(b, "port");
            json_builder_add_string_value(b, transport_listener_port(in->listener));
        }
        json_builder_end_object(b);
        json_builder_end_array(b);
    }
}

void migration_incoming_cleanup(Machine *m)
{
    if (!m->mig)
        return;
    Incoming *in = &m->mig->in;
    if (in->thread) {
        /* The process is exiting while a stream is still arriving: the receive thread
         * may be blocked reading a socket, so it is left to die with the process
         * (its memory is not freed under it). */
        if (in->listener)
            shutdown(transport_listener_fd(in->listener), SHUT_RDWR);
        return;
    }
    if (in->rx)
        receiver_free(in->rx);
    in->rx = NULL;
    if (in->main)
        vstream_free(in->main);
    in->main = NULL;
    if (in->listener)
        transport_listener_free(in->listener);
    in->listener = NULL;
    g_clear_error(&in->error);
    migrate_uri_clear(&in->uri);
}
