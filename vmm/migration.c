#include "migration.h"

#include "devstate.h"
#include "uri.h"
#include "vmstate.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <vmsnap/restore.h>

typedef enum {
    MIG_NONE,
    MIG_SETUP,
    MIG_ACTIVE,
    MIG_COMPLETED,
    MIG_FAILED,
    MIG_CANCELLING,
    MIG_CANCELLED,
} MigStatus;

static const char *const status_names[] = {
    "none", "setup", "active", "completed", "failed", "cancelling", "cancelled",
};

struct Migration {
    Machine *m;
    MigStatus status;
    uint64_t start_ns, setup_ns, end_ns, paused_ns;
    bool paused_by_us;
    RunState prev_state;
    char *error_desc;
    int cancel;
    GThread *thread;
    /* job */
    MigrateUri uri;
    int fd;
    VmsnapVm vm;
    VmsnapRamBlock blocks[RAM_MAX_BLOCKS];
    VmsnapProgress progress;
    VmsnapSaveStats stats;
    GError *job_error;
    /* parameters and capabilities (QEMU names) */
    int64_t multifd_channels;
    int64_t downtime_limit;     /* ms */
    int64_t max_bandwidth;      /* bytes/s */
    bool page_checksums;        /* x-page-checksums: off only for benchmarks */
    bool cap_events;
    bool cap_multifd;
};

static JsonNode *empty_reply(void)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, json_object_new());
    return n;
}

static uint64_t now_ns(void)
{
    return (uint64_t)g_get_monotonic_time() * 1000;
}

static Migration *mig(Machine *m)
{
    if (!m->mig) {
        m->mig = g_new0(Migration, 1);
        m->mig->m = m;
        m->mig->fd = -1;
        /* Until set, writer threads = online CPUs (reported as such). */
        m->mig->multifd_channels = g_get_num_processors();
        m->mig->downtime_limit = 300;
        m->mig->max_bandwidth = 134217728;
        m->mig->page_checksums = true;
    }
    return m->mig;
}

static void set_status(Migration *g, MigStatus s)
{
    g->status = s;
    if (g->cap_events && g->m->qmp) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "status");
        json_builder_add_string_value(b, status_names[s]);
        json_builder_end_object(b);
        qmp_server_emit_event(g->m->qmp, "MIGRATION", json_builder_get_root(b));
        g_object_unref(b);
    }
}

static bool active(const Migration *g)
{
    return g->status == MIG_SETUP || g->status == MIG_ACTIVE || g->status == MIG_CANCELLING;
}

/* ---- outgoing ---- */

static void job_reset(Migration *g)
{
    migrate_uri_clear(&g->uri);
    if (g->fd >= 0)
        close(g->fd);
    g->fd = -1;
    vmstate_clear(&g->vm);
    g_clear_error(&g->job_error);
    memset(&g->progress, 0, sizeof(g->progress));
    memset(&g->stats, 0, sizeof(g->stats));
    g_clear_pointer(&g->error_desc, g_free);
    g->cancel = 0;
}

static gboolean save_finished(gpointer data)
{
    Migration *g = data;
    Machine *m = g->m;

    g_thread_join(g->thread);
    g->thread = NULL;
    g->end_ns = now_ns();
    if (g->job_error) {
        bool cancelled = g_error_matches(g->job_error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
        g->error_desc = g_strdup(g->job_error->message);
        if (!cancelled)
            g_printerr("vmsnap: migration failed: %s\n", g->job_error->message);
        /* The source keeps running: back to where it was. */
        machine_set_state(m, g->prev_state == RUN_STATE_RUNNING ? RUN_STATE_PAUSED : g->prev_state);
        if (g->prev_state == RUN_STATE_RUNNING)
            machine_cont(m, NULL);
        set_status(g, cancelled ? MIG_CANCELLED : MIG_FAILED);
    } else {
        if (!g->stats.direct_io)
            g_printerr("vmsnap: note: %s does not support O_DIRECT; pages were written "
                       "through the page cache\n",
                       g->uri.kind == MIGRATE_URI_FILE ? g->uri.path : "the fd's file");
        machine_set_state(m, RUN_STATE_POSTMIGRATE);
        set_status(g, MIG_COMPLETED);
    }
    vmstate_clear(&g->vm);
    if (g->fd >= 0)
        close(g->fd);
    g->fd = -1;
    return G_SOURCE_REMOVE;
}

static gpointer save_thread(gpointer data)
{
    Migration *g = data;
    VmsnapSaveOptions opt = {
        .struct_size = sizeof(opt),
        .threads = (unsigned)g->multifd_channels, /* mapped files: one writer per channel */
        .offset = g->uri.offset,
        .in_place = g->uri.has_offset,
        .progress = &g->progress,
        .cancel = &g->cancel,
        .no_checksums = !g->page_checksums,
    };
    bool ok = g->uri.kind == MIGRATE_URI_FILE
                  ? vmsnap_save_path(&g->vm, g->uri.path, &opt, &g->stats, &g->job_error)
                  : vmsnap_save_fd(&g->vm, g->fd, &opt, &g->stats, &g->job_error);
    (void)ok;
    g_main_context_invoke(g_main_loop_get_context(g->m->loop), save_finished, g);
    return NULL;
}

static bool fd_is_regular(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static JsonNode *cmd_migrate(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    Migration *g = mig(m);

    if (active(g)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "There's a migration process in progress");
        return NULL;
    }
    if (m->state != RUN_STATE_RUNNING && m->state != RUN_STATE_PAUSED &&
        m->state != RUN_STATE_PRELAUNCH && m->state != RUN_STATE_POSTMIGRATE) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "cannot migrate a VM whose status is %s", runstate_name(m->state));
        return NULL;
    }
    if (!json_object_has_member(args, "uri")) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter 'uri' is missing");
        return NULL;
    }
    job_reset(g);
    GError *local = NULL;
    if (!migrate_uri_parse(json_object_get_string_member(args, "uri"), &g->uri, &local)) {
        g_set_error_literal(error, QMP_ERROR, QMP_ERROR_GENERIC, local->message);
        g_error_free(local);
        return NULL;
    }
    if (g->uri.kind == MIGRATE_URI_FD) {
        g->fd = qmp_server_take_fd(m->qmp, g->uri.fdname, error);
        if (g->fd < 0)
            return NULL;
        if (!fd_is_regular(g->fd)) {
            close(g->fd);
            g->fd = -1;
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "fd '%s' is a pipe or socket: the stream format is not supported yet; "
                        "pass a regular file", g->uri.fdname);
            return NULL;
        }
    } else if (g->uri.kind != MIGRATE_URI_FILE) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "migration to '%s:' is not supported yet (use file:PATH or fd:NAME)",
                    migrate_uri_kind_name(g->uri.kind));
        return NULL;
    }

    g->start_ns = now_ns();
    g->prev_state = m->state;
    set_status(g, MIG_SETUP);
    g->paused_by_us = runstate_is_running(m->state);
    machine_stop(m, RUN_STATE_FINISH_MIGRATE);
    g->paused_ns = now_ns();
    if (!vmstate_describe(m, &g->vm, g->blocks, &local)) {
        g->error_desc = g_strdup(local->message);
        g_propagate_error(error, local);
        set_status(g, MIG_FAILED);
        if (g->prev_state == RUN_STATE_RUNNING)
            machine_cont(m, NULL);
        else
            machine_set_state(m, g->prev_state);
        return NULL;
    }
    g->progress.ram_bytes = m->vm->ram.total; /* query-migrate shows the total at once */
    g->setup_ns = now_ns() - g->start_ns;
    set_status(g, MIG_ACTIVE);
    g->thread = g_thread_new("vmsnap-save", save_thread, g);
    return empty_reply();
}

static JsonNode *cmd_migrate_cancel(QmpClient *c, JsonObject *args, gpointer opaque,
                                    GError **error)
{
    Migration *g = mig(opaque);
    if (active(g)) {
        g->status = MIG_CANCELLING;
        __atomic_store_n(&g->cancel, 1, __ATOMIC_SEQ_CST);
    }
    return empty_reply();
}

static void add_int(JsonBuilder *b, const char *name, int64_t v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, v);
}

static JsonNode *cmd_query_migrate(QmpClient *c, JsonObject *args, gpointer opaque,
                                   GError **error)
{
    Migration *g = mig(opaque);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    if (g->status == MIG_NONE) {
        json_builder_end_object(b);
        goto out;
    }
    json_builder_set_member_name(b, "status");
    json_builder_add_string_value(b, status_names[g->status]);
    uint64_t end = active(g) ? now_ns() : g->end_ns;
    uint64_t total_ms = (end - g->start_ns) / 1000000;
    add_int(b, "total-time", (int64_t)total_ms);
    add_int(b, "setup-time", (int64_t)(g->setup_ns / 1000000));
    if (g->status == MIG_COMPLETED)
        add_int(b, "downtime", g->paused_by_us ? (int64_t)((end - g->paused_ns) / 1000000) : 0);
    if (g->status == MIG_ACTIVE)
        add_int(b, "expected-downtime", (int64_t)total_ms);

    uint64_t ram = g->progress.ram_bytes;
    uint64_t written = __atomic_load_n(&g->progress.written_bytes, __ATOMIC_RELAXED);
    uint64_t normal = __atomic_load_n(&g->progress.normal_pages, __ATOMIC_RELAXED);
    uint64_t zero = __atomic_load_n(&g->progress.zero_pages, __ATOMIC_RELAXED);
    uint64_t scanned = __atomic_load_n(&g->progress.scanned_pages, __ATOMIC_RELAXED);
    double secs = (double)(end - g->start_ns) / 1e9;
    json_builder_set_member_name(b, "ram");
    json_builder_begin_object(b);
    add_int(b, "transferred", (int64_t)written);
    add_int(b, "remaining", (int64_t)(ram > scanned * 4096 ? ram - scanned * 4096 : 0));
    add_int(b, "total", (int64_t)ram);
    add_int(b, "duplicate", (int64_t)zero);
    add_int(b, "skipped", 0);
    add_int(b, "normal", (int64_t)normal);
    add_int(b, "normal-bytes", (int64_t)(normal * 4096));
    add_int(b, "dirty-pages-rate", 0);
    json_builder_set_member_name(b, "mbps");
    json_builder_add_double_value(b, secs > 0 ? (double)written * 8 / 1e6 / secs : 0);
    add_int(b, "dirty-sync-count", g->status == MIG_NONE ? 0 : 1);
    add_int(b, "postcopy-requests", 0);
    add_int(b, "page-size", 4096);
    add_int(b, "multifd-bytes", 0);
    add_int(b, "pages-per-second", secs > 0 ? (int64_t)((double)(normal + zero) / secs) : 0);
    json_builder_end_object(b);
    if (g->status == MIG_COMPLETED) {
        /* vmsnap's own breakdown; QEMU clients ignore unknown members. */
        json_builder_set_member_name(b, "x-vmsnap");
        json_builder_begin_object(b);
        add_int(b, "pages-us", (int64_t)(g->stats.pages_ns / 1000));
        add_int(b, "metadata-us", (int64_t)(g->stats.metadata_ns / 1000));
        add_int(b, "sync-us", (int64_t)(g->stats.sync_ns / 1000));
        add_int(b, "save-us", (int64_t)(g->stats.total_ns / 1000));
        add_int(b, "threads", g->stats.threads);
        json_builder_set_member_name(b, "direct-io");
        json_builder_add_boolean_value(b, g->stats.direct_io);
        add_int(b, "metadata-bytes", (int64_t)g->stats.metadata_bytes);
        json_builder_end_object(b);
    }
    if (g->error_desc && g->status == MIG_FAILED) {
        json_builder_set_member_name(b, "error-desc");
        json_builder_add_string_value(b, g->error_desc);
    }
    json_builder_end_object(b);
out:;
    JsonNode *root = json_builder_get_root(b);
    g_object_unref(b);
    return root;
}

static JsonNode *cmd_set_parameters(QmpClient *c, JsonObject *args, gpointer opaque,
                                    GError **error)
{
    Migration *g = mig(opaque);
    GList *members = json_object_get_members(args);
    for (GList *l = members; l; l = l->next) {
        const char *name = l->data;
        JsonNode *n = json_object_get_member(args, name);
        if (!strcmp(name, "x-page-checksums")) {
            if (JSON_NODE_TYPE(n) != JSON_NODE_VALUE ||
                json_node_get_value_type(n) != G_TYPE_BOOLEAN) {
                g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                            "Invalid parameter type for 'x-page-checksums', expected: boolean");
                g_list_free(members);
                return NULL;
            }
            continue;
        }
        int64_t *slot = !strcmp(name, "multifd-channels") ? &g->multifd_channels
                        : !strcmp(name, "downtime-limit") ? &g->downtime_limit
                        : !strcmp(name, "max-bandwidth")  ? &g->max_bandwidth
                                                          : NULL;
        if (!slot) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' is unexpected",
                        name);
            g_list_free(members);
            return NULL;
        }
        if (JSON_NODE_TYPE(n) != JSON_NODE_VALUE || json_node_get_value_type(n) != G_TYPE_INT64 ||
            json_node_get_int(n) < 0 ||
            (slot == &g->multifd_channels && (json_node_get_int(n) < 1 ||
                                               json_node_get_int(n) > 255))) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter '%s' expects %s", name,
                        slot == &g->multifd_channels ? "a value between 1 and 255"
                                                     : "a non-negative integer");
            g_list_free(members);
            return NULL;
        }
    }
    for (GList *l = members; l; l = l->next) {
        const char *name = l->data;
        if (!strcmp(name, "x-page-checksums")) {
            g->page_checksums = json_object_get_boolean_member(args, name);
            continue;
        }
        int64_t v = json_object_get_int_member(args, name);
        if (!strcmp(name, "multifd-channels"))
            g->multifd_channels = v;
        else if (!strcmp(name, "downtime-limit"))
            g->downtime_limit = v;
        else
            g->max_bandwidth = v;
    }
    g_list_free(members);
    return empty_reply();
}

static JsonNode *cmd_query_parameters(QmpClient *c, JsonObject *args, gpointer opaque,
                                      GError **error)
{
    Migration *g = mig(opaque);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    add_int(b, "multifd-channels", g->multifd_channels);
    add_int(b, "downtime-limit", g->downtime_limit);
    add_int(b, "max-bandwidth", g->max_bandwidth);
    json_builder_set_member_name(b, "x-page-checksums");
    json_builder_add_boolean_value(b, g->page_checksums);
    json_builder_end_object(b);
    JsonNode *root = json_builder_get_root(b);
    g_object_unref(b);
    return root;
}

static bool *capability(Migration *g, const char *name)
{
    if (!strcmp(name, "events"))
        return &g->cap_events;
    if (!strcmp(name, "multifd"))
        return &g->cap_multifd;
    return NULL;
}

static JsonNode *cmd_set_capabilities(QmpClient *c, JsonObject *args, gpointer opaque,
                                      GError **error)
{
    Migration *g = mig(opaque);
    JsonArray *caps = json_object_get_array_member(args, "capabilities");
    if (active(g)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "There's a migration process in progress");
        return NULL;
    }
    for (guint i = 0; i < json_array_get_length(caps); i++) {
        JsonNode *n = json_array_get_element(caps, i);
        JsonObject *o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
        const char *name = o && json_object_has_member(o, "capability")
                               ? json_object_get_string_member(o, "capability")
                               : NULL;
        if (!name || !json_object_has_member(o, "state")) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter 'capabilities[%u]' expects {\"capability\": NAME, "
                        "\"state\": BOOL}", i);
            return NULL;
        }
        if (!capability(g, name)) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter 'capability' does not accept value '%s'", name);
            return NULL;
        }
    }
    for (guint i = 0; i < json_array_get_length(caps); i++) {
        JsonObject *o = json_array_get_object_element(caps, i);
        *capability(g, json_object_get_string_member(o, "capability")) =
            json_object_get_boolean_member(o, "state");
    }
    return empty_reply();
}

static JsonNode *cmd_query_capabilities(QmpClient *c, JsonObject *args, gpointer opaque,
                                        GError **error)
{
    Migration *g = mig(opaque);
    static const char *const names[] = { "events", "multifd" };
    JsonBuilder *b = json_builder_new();
    json_builder_begin_array(b);
    for (unsigned i = 0; i < G_N_ELEMENTS(names); i++) {
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "capability");
        json_builder_add_string_value(b, names[i]);
        json_builder_set_member_name(b, "state");
        json_builder_add_boolean_value(b, *capability(g, names[i]));
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    JsonNode *root = json_builder_get_root(b);
    g_object_unref(b);
    return root;
}

/* ---- incoming ---- */

VmsnapSnapshot *migration_open_snapshot(Machine *m, const char *text, unsigned flags,
                                        GError **error)
{
    MigrateUri uri;
    g_autofree char *with_scheme = strchr(text, ':') ? g_strdup(text)
                                                     : g_strdup_printf("file:%s", text);
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
        g_string_append_printf(bp->report, "\n  RAM block '%s' page 0x%" G_GINT64_MODIFIER
                               "x at file offset 0x%" G_GINT64_MODIFIER "x: %s", block, page,
                               off, reason);
}

unsigned migration_open_flags(const IncomingOptions *opt)
{
    /* Map restore without --verify reads no page, so it needs no page checksums
     * in memory (they are still checked against the directory on open). */
    return opt->mode == RESTORE_MODE_MAP && !opt->verify ? VMSNAP_OPEN_NO_PAGE_CHECKSUMS : 0;
}

bool migration_incoming(Machine *m, const char *uri, const IncomingOptions *opt,
                        GError **error)
{
    g_autoptr(VmsnapSnapshot) s =
        migration_open_snapshot(m, uri, migration_open_flags(opt), error);
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
    if (!vmsnap_snapshot_load_devices(s, devs, n_dev, opt->skip, error))
        return false;
    if (m->cfg.paused) {
        machine_set_state(m, RUN_STATE_PAUSED);
    } else {
        machine_set_state(m, RUN_STATE_PAUSED);
        machine_cont(m, NULL);
    }
    return true;
}

static JsonNode *cmd_migrate_incoming(QmpClient *c, JsonObject *args, gpointer opaque,
                                      GError **error)
{
    Machine *m = opaque;
    if (m->state != RUN_STATE_INMIGRATE || !m->cfg.incoming_defer) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "The incoming migration has already been started (or the VM was not "
                    "started with --incoming defer)");
        return NULL;
    }
    IncomingOptions opt = { .mode = m->cfg.restore_mode_copy ? RESTORE_MODE_COPY
                                                             : RESTORE_MODE_MAP,
                            .verify = m->cfg.verify,
                            .skip = (const char *const *)m->cfg.skip_devices };
    GError *local = NULL;
    if (!migration_incoming(m, json_object_get_string_member(args, "uri"), &opt, &local)) {
        g_set_error_literal(error, QMP_ERROR, QMP_ERROR_GENERIC, local->message);
        g_error_free(local);
        return NULL;
    }
    m->cfg.incoming_defer = false;
    return empty_reply();
}

void migration_cleanup(Machine *m)
{
    Migration *g = m->mig;
    if (!g)
        return;
    if (g->thread) {
        __atomic_store_n(&g->cancel, 1, __ATOMIC_SEQ_CST);
        g_thread_join(g->thread);
        g->thread = NULL;
    }
    job_reset(g);
    g_free(g);
    m->mig = NULL;
}

static const QmpArgSpec migrate_args[] = {
    { "uri", QMP_ARG_STR, TRUE },
    { "channels", QMP_ARG_ARRAY, TRUE },
    { "detach", QMP_ARG_BOOL, TRUE },
    { "resume", QMP_ARG_BOOL, TRUE },
    { NULL },
};
static const QmpArgSpec incoming_args[] = { { "uri", QMP_ARG_STR, FALSE }, { NULL } };
static const QmpArgSpec caps_args[] = { { "capabilities", QMP_ARG_ARRAY, FALSE }, { NULL } };
static const QmpArgSpec params_args[] = {
    { "multifd-channels", QMP_ARG_ANY, TRUE },
    { "downtime-limit", QMP_ARG_ANY, TRUE },
    { "max-bandwidth", QMP_ARG_ANY, TRUE },
    { "x-page-checksums", QMP_ARG_ANY, TRUE },
    { NULL },
};
static const QmpArgSpec no_args[] = { { NULL } };

static const QmpCommand commands[] = {
    { "migrate", cmd_migrate, migrate_args },
    { "migrate_cancel", cmd_migrate_cancel, no_args },
    { "query-migrate", cmd_query_migrate, no_args },
    { "migrate-set-parameters", cmd_set_parameters, params_args },
    { "query-migrate-parameters", cmd_query_parameters, no_args },
    { "migrate-set-capabilities", cmd_set_capabilities, caps_args },
    { "query-migrate-capabilities", cmd_query_capabilities, no_args },
    { "migrate-incoming", cmd_migrate_incoming, incoming_args },
};

void migration_register_qmp(Machine *m)
{
    for (unsigned i = 0; i < G_N_ELEMENTS(commands); i++)
        qmp_server_register(m->qmp, &commands[i], m);
}
