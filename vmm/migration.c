/* QEMU's migration commands and states over QMP: migrate, migrate_cancel,
 * query-migrate, migrate-set/query-parameters and capabilities, migrate-continue,
 * migrate-incoming; events MIGRATION and MIGRATION_PASS. */
#include "migration_priv.h"

#include "dirty.h"
#include "vmstate.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const status_names[] = {
    [MIG_NONE] = "none",           [MIG_SETUP] = "setup",
    [MIG_ACTIVE] = "active",       [MIG_PRE_SWITCHOVER] = "pre-switchover",
    [MIG_DEVICE] = "device",       [MIG_COMPLETED] = "completed",
    [MIG_FAILED] = "failed",       [MIG_CANCELLING] = "cancelling",
    [MIG_CANCELLED] = "cancelled",
};

const char *migration_status_name(MigStatus s)
{
    return status_names[s];
}

static JsonNode *empty_reply(void)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, json_object_new());
    return n;
}

static uint64_t now_us(void)
{
    return (uint64_t)g_get_monotonic_time();
}

Migration *migration_get(Machine *m)
{
    if (!m->mig) {
        Migration *g = g_new0(Migration, 1);
        g->m = m;
        g->fd = -1;
        g_mutex_init(&g->lock);
        g_cond_init(&g->cond);
        /* QEMU's defaults, except: writer threads default to the number of CPUs, and
         * max-bandwidth 0 means unlimited. */
        g->params.multifd_channels = g_get_num_processors();
        g->params.downtime_limit = 300;
        g->params.max_bandwidth = 0;
        g->params.cpu_throttle_initial = 20;
        g->params.cpu_throttle_increment = 10;
        g->params.max_cpu_throttle = 99;
        g->params.x_page_checksums = true;
        m->mig = g;
    }
    return m->mig;
}

MigStatus migration_status(const Migration *g)
{
    return __atomic_load_n(&g->status, __ATOMIC_ACQUIRE);
}

bool migration_active(const Migration *g)
{
    MigStatus s = migration_status(g);
    return s != MIG_NONE && s != MIG_COMPLETED && s != MIG_FAILED && s != MIG_CANCELLED;
}

/* May run on the job thread: events are thread-safe. */
void migration_set_status(Migration *g, MigStatus s)
{
    __atomic_store_n(&g->status, s, __ATOMIC_RELEASE);
    if (g->params.cap_events && g->m->qmp) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "status");
        json_builder_add_string_value(b, status_names[s]);
        json_builder_end_object(b);
        qmp_server_emit_event(g->m->qmp, "MIGRATION", json_builder_get_root(b));
        g_object_unref(b);
    }
}

static void job_reset(Migration *g)
{
    migrate_uri_clear(&g->uri);
    if (g->fd >= 0)
        close(g->fd);
    g->fd = -1;
    vmstate_clear(&g->vm);
    g_clear_error(&g->job_error);
    memset(&g->progress, 0, sizeof(g->progress));
    memset(&g->file_stats, 0, sizeof(g->file_stats));
    memset(&g->pst, 0, sizeof(g->pst));
    g_clear_pointer(&g->error_desc, g_free);
    g->cancel = 0;
    g->paused_by_us = false;
    g->continue_requested = false;
}

void migration_out_finished(Migration *g)
{
    Machine *m = g->m;

    g_thread_join(g->thread);
    g->thread = NULL;
    g->end_us = now_us();
    if (g->job_error) {
        bool cancelled = g_error_matches(g->job_error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
        g->error_desc = g_strdup(g->job_error->message);
        if (!cancelled)
            g_printerr("vmsnap: migration failed: %s\n", g->job_error->message);
        /* The source keeps running: back to the state it had. */
        if (machine_state(m) == RUN_STATE_FINISH_MIGRATE) {
            if (g->was_running) {
                machine_set_state(m, RUN_STATE_PAUSED);
                machine_cont(m, NULL);
            } else {
                machine_set_state(m, g->prev_state);
            }
        }
        migration_set_status(g, cancelled ? MIG_CANCELLED : MIG_FAILED);
    } else {
        if (g->is_file && !g->file_stats.direct_io)
            g_printerr("vmsnap: note: %s does not support O_DIRECT; pages were written "
                       "through the page cache\n",
                       g->uri.kind == MIGRATE_URI_FILE ? g->uri.path : "the fd's file");
        machine_set_state(m, RUN_STATE_POSTMIGRATE);
        migration_set_status(g, MIG_COMPLETED);
    }
    vmstate_clear(&g->vm);
    if (g->fd >= 0)
        close(g->fd);
    g->fd = -1;
}

static bool fd_is_regular(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* QEMU's "channels" argument: [{"channel-type": "main", "addr": {...}}]. */
static char *uri_from_channels(JsonArray *channels, GError **error)
{
    if (json_array_get_length(channels) != 1) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Channel list has more than one entries");
        return NULL;
    }
    JsonNode *n = json_array_get_element(channels, 0);
    JsonObject *ch = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
    JsonObject *addr = ch && json_object_has_member(ch, "addr") &&
                               JSON_NODE_HOLDS_OBJECT(json_object_get_member(ch, "addr"))
                           ? json_object_get_object_member(ch, "addr")
                           : NULL;
    const char *ctype = ch && json_object_has_member(ch, "channel-type")
                            ? json_object_get_string_member(ch, "channel-type")
                            : NULL;
    const char *t = addr && json_object_has_member(addr, "transport")
                        ? json_object_get_string_member(addr, "transport")
                        : NULL;
    if (!ctype || strcmp(ctype, "main") || !t) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Parameter 'channels[0]' expects {\"channel-type\": \"main\", \"addr\": "
                    "{\"transport\": ...}}");
        return NULL;
    }
#define MEMBER(o, k) (json_object_has_member(o, k) ? json_object_get_string_member(o, k) : NULL)
    if (!strcmp(t, "socket")) {
        const char *type = MEMBER(addr, "type");
        if (type && !strcmp(type, "unix") && MEMBER(addr, "path"))
            return g_strdup_printf("unix:%s", MEMBER(addr, "path"));
        if (type && !strcmp(type, "inet") && MEMBER(addr, "host") && MEMBER(addr, "port"))
            return g_strdup_printf("tcp:%s:%s", MEMBER(addr, "host"), MEMBER(addr, "port"));
        if (type && !strcmp(type, "fd") && MEMBER(addr, "str"))
            return g_strdup_printf("fd:%s", MEMBER(addr, "str"));
    } else if (!strcmp(t, "file") && MEMBER(addr, "filename")) {
        if (json_object_has_member(addr, "offset"))
            return g_strdup_printf("file:%s,offset=%" G_GINT64_FORMAT, MEMBER(addr, "filename"),
                                   json_object_get_int_member(addr, "offset"));
        return g_strdup_printf("file:%s", MEMBER(addr, "filename"));
    } else if (!strcmp(t, "exec") && json_object_has_member(addr, "args")) {
        JsonArray *args = json_object_get_array_member(addr, "args");
        GString *cmd = g_string_new("exec:");
        /* QEMU runs args directly; "/bin/sh -c CMD" is the common form */
        for (guint i = 0; i < json_array_get_length(args); i++) {
            g_autofree char *q = g_shell_quote(json_array_get_string_element(args, i));
            g_string_append_printf(cmd, "%s%s", i ? " " : "", q);
        }
        return g_string_free(cmd, FALSE);
    }
#undef MEMBER
    g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                "Parameter 'channels[0].addr' has an unsupported transport '%s'", t);
    return NULL;
}

static JsonNode *cmd_migrate(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    Migration *g = migration_get(m);
    bool has_uri = json_object_has_member(args, "uri");
    bool has_channels = json_object_has_member(args, "channels");

    if (has_uri == has_channels) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "need either 'uri' or 'channels' argument");
        return NULL;
    }
    if (migration_active(g) || g->thread) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "There's a migration process in progress");
        return NULL;
    }
    RunState state = machine_state(m);
    if (state != RUN_STATE_RUNNING && state != RUN_STATE_PAUSED && state != RUN_STATE_PRELAUNCH &&
        state != RUN_STATE_POSTMIGRATE) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "cannot migrate a VM whose status is %s",
                    runstate_name(state));
        return NULL;
    }
    job_reset(g);
    g_autofree char *uri =
        has_uri ? g_strdup(json_object_get_string_member(args, "uri"))
                : uri_from_channels(json_object_get_array_member(args, "channels"), error);
    if (!uri)
        return NULL;
    GError *local = NULL;
    if (!migrate_uri_parse(uri, &g->uri, &local)) {
        g_set_error_literal(error, QMP_ERROR, QMP_ERROR_GENERIC, local->message);
        g_error_free(local);
        return NULL;
    }
    g->is_file = g->uri.kind == MIGRATE_URI_FILE;
    if (g->uri.kind == MIGRATE_URI_FD) {
        g->fd = qmp_server_take_fd(m->qmp, g->uri.fdname, error);
        if (g->fd < 0)
            return NULL;
        g->is_file = fd_is_regular(g->fd);
    }
    if (g->params.cap_multifd && g->params.multifd_channels > 1 && !g->is_file &&
        g->uri.kind != MIGRATE_URI_UNIX && g->uri.kind != MIGRATE_URI_TCP) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "multifd needs a unix: or tcp: address (extra connections), not %s:",
                    migrate_uri_kind_name(g->uri.kind));
        return NULL;
    }
    g->start_us = now_us();
    g->prev_state = state;
    g->was_running = runstate_is_running(state);
    migration_set_status(g, MIG_SETUP);
    if (!migration_out_start(g, &local)) {
        g->error_desc = g_strdup(local->message);
        g_propagate_error(error, local);
        migration_set_status(g, MIG_FAILED);
        return NULL;
    }
    return empty_reply();
}

static JsonNode *cmd_migrate_cancel(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Migration *g = migration_get(opaque);
    if (migration_active(g)) {
        __atomic_store_n(&g->cancel, 1, __ATOMIC_SEQ_CST);
        g_mutex_lock(&g->lock);
        g_cond_broadcast(&g->cond);
        g_mutex_unlock(&g->lock);
        migration_set_status(g, MIG_CANCELLING);
    }
    return empty_reply();
}

static JsonNode *cmd_migrate_continue(QmpClient *c, JsonObject *args, gpointer opaque,
                                      GError **error)
{
    Migration *g = migration_get(opaque);
    const char *want = json_object_get_string_member(args, "state");
    MigStatus s = migration_status(g);
    if (strcmp(want, status_names[s]) || s != MIG_PRE_SWITCHOVER) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Migration not in expected state: %s",
                    status_names[s]);
        return NULL;
    }
    g_mutex_lock(&g->lock);
    g->continue_requested = true;
    g_cond_broadcast(&g->cond);
    g_mutex_unlock(&g->lock);
    return empty_reply();
}

static void add_int(JsonBuilder *b, const char *name, int64_t v)
{
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, v);
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static void add_ram(JsonBuilder *b, Migration *g, uint64_t end)
{
    uint64_t ram = g->progress.ram_bytes;
    uint64_t written = LOAD(g->progress.written_bytes);
    uint64_t normal = LOAD(g->progress.normal_pages);
    uint64_t zero = LOAD(g->progress.zero_pages);
    uint64_t scanned = LOAD(g->progress.scanned_pages);
    uint32_t pass = LOAD(g->pst.pass);
    double secs = (double)(end - g->start_us) / 1e6;
    uint64_t remaining = pass ? LOAD(g->pst.remaining_pages) * 4096
                              : (ram > scanned * 4096 ? ram - scanned * 4096 : 0);
    if (migration_status(g) == MIG_COMPLETED)
        remaining = 0;
    json_builder_set_member_name(b, "ram");
    json_builder_begin_object(b);
    add_int(b, "transferred", (int64_t)written);
    add_int(b, "remaining", (int64_t)remaining);
    add_int(b, "total", (int64_t)ram);
    add_int(b, "duplicate", (int64_t)zero);
    add_int(b, "skipped", 0);
    add_int(b, "normal", (int64_t)normal);
    add_int(b, "normal-bytes", (int64_t)(normal * 4096));
    add_int(b, "dirty-pages-rate", (int64_t)LOAD(g->pst.dirty_pages_rate));
    json_builder_set_member_name(b, "mbps");
    json_builder_add_double_value(b, secs > 0 ? (double)written * 8 / 1e6 / secs : 0);
    add_int(b, "dirty-sync-count", pass);
    add_int(b, "postcopy-requests", 0);
    add_int(b, "page-size", 4096);
    add_int(b, "multifd-bytes", 0);
    add_int(b, "pages-per-second", secs > 0 ? (int64_t)((double)(normal + zero) / secs) : 0);
    json_builder_end_object(b);
}

static JsonNode *cmd_query_migrate(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    Migration *g = migration_get(m);
    MigStatus s = migration_status(g);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    migration_query_incoming(m, b);
    if (s == MIG_NONE)
        goto out;
    json_builder_set_member_name(b, "status");
    json_builder_add_string_value(b, status_names[s]);
    bool done = s == MIG_COMPLETED || s == MIG_FAILED || s == MIG_CANCELLED;
    uint64_t end = done ? g->end_us : now_us();
    add_int(b, "total-time", (int64_t)((end - g->start_us) / 1000));
    add_int(b, "setup-time", (int64_t)(g->setup_us / 1000));
    if (s == MIG_COMPLETED)
        add_int(b, "downtime", (int64_t)(LOAD(g->pst.downtime_us) / 1000));
    if (s == MIG_ACTIVE) {
        uint64_t e = LOAD(g->pst.expected_downtime_ms);
        add_int(b, "expected-downtime", e == UINT64_MAX ? 0 : (int64_t)e);
    }
    if (g->params.cap_auto_converge)
        add_int(b, "cpu-throttle-percentage", LOAD(g->pst.throttle));
    add_ram(b, g, end);
    if (s == MIG_COMPLETED && g->is_file) {
        /* vmsnap's own breakdown; QEMU clients ignore unknown members. */
        json_builder_set_member_name(b, "x-vmsnap");
        json_builder_begin_object(b);
        add_int(b, "metadata-us", (int64_t)(g->file_stats.metadata_ns / 1000));
        add_int(b, "sync-us", (int64_t)(g->file_stats.sync_ns / 1000));
        add_int(b, "threads", g->file_stats.threads);
        json_builder_set_member_name(b, "direct-io");
        json_builder_add_boolean_value(b, g->file_stats.direct_io);
        add_int(b, "metadata-bytes", (int64_t)g->file_stats.metadata_bytes);
        json_builder_end_object(b);
    }
    if (g->error_desc && s == MIG_FAILED) {
        json_builder_set_member_name(b, "error-desc");
        json_builder_add_string_value(b, g->error_desc);
    }
out:
    json_builder_end_object(b);
    JsonNode *root = json_builder_get_root(b);
    g_object_unref(b);
    return root;
}

/* ---- parameters and capabilities ---- */

typedef struct ParamDesc {
    const char *name;
    size_t offset;
    bool is_bool;
    int64_t min, max;
} ParamDesc;

/* clang-format off */
#define P(n, f, mn, mx) { n, offsetof(MigParams, f), false, mn, mx }
/* clang-format on */
static const ParamDesc params_desc[] = {
    P("multifd-channels", multifd_channels, 1, 64),
    P("downtime-limit", downtime_limit, 0, 2000000),
    P("max-bandwidth", max_bandwidth, 0, INT64_MAX),
    P("cpu-throttle-initial", cpu_throttle_initial, 1, 99),
    P("cpu-throttle-increment", cpu_throttle_increment, 1, 99),
    P("max-cpu-throttle", max_cpu_throttle, 1, 99),
    { "x-page-checksums", offsetof(MigParams, x_page_checksums), true, 0, 1 },
};
#undef P

static const ParamDesc *find_param(const char *name)
{
    for (unsigned i = 0; i < G_N_ELEMENTS(params_desc); i++)
        if (!strcmp(params_desc[i].name, name))
            return &params_desc[i];
    return NULL;
}

static JsonNode *cmd_set_parameters(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Migration *g = migration_get(opaque);
    MigParams next = g->params;
    g_autoptr(GList) members = json_object_get_members(args);
    for (GList *l = members; l; l = l->next) {
        const char *name = l->data;
        const ParamDesc *d = find_param(name);
        JsonNode *n = json_object_get_member(args, name);
        if (!d) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' is unexpected", name);
            return NULL;
        }
        GType want = d->is_bool ? G_TYPE_BOOLEAN : G_TYPE_INT64;
        if (JSON_NODE_TYPE(n) != JSON_NODE_VALUE || json_node_get_value_type(n) != want) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Invalid parameter type for '%s', expected: %s", name,
                        d->is_bool ? "boolean" : "integer");
            return NULL;
        }
        if (d->is_bool) {
            *(bool *)((char *)&next + d->offset) = json_node_get_boolean(n);
            continue;
        }
        int64_t v = json_node_get_int(n);
        if (v < d->min || v > d->max) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter '%s' expects a value between %" G_GINT64_FORMAT
                        " and %" G_GINT64_FORMAT,
                        name, d->min, d->max);
            return NULL;
        }
        *(int64_t *)((char *)&next + d->offset) = v;
    }
    g->params = next;
    return empty_reply();
}

static JsonNode *cmd_query_parameters(QmpClient *c, JsonObject *args, gpointer opaque,
                                      GError **error)
{
    Migration *g = migration_get(opaque);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    for (unsigned i = 0; i < G_N_ELEMENTS(params_desc); i++) {
        const ParamDesc *d = &params_desc[i];
        json_builder_set_member_name(b, d->name);
        if (d->is_bool)
            json_builder_add_boolean_value(b, *(bool *)((char *)&g->params + d->offset));
        else
            json_builder_add_int_value(b, *(int64_t *)((char *)&g->params + d->offset));
    }
    json_builder_end_object(b);
    JsonNode *root = json_builder_get_root(b);
    g_object_unref(b);
    return root;
}

static const struct {
    const char *name;
    size_t offset;
} caps_desc[] = {
    { "events", offsetof(MigParams, cap_events) },
    { "multifd", offsetof(MigParams, cap_multifd) },
    { "auto-converge", offsetof(MigParams, cap_auto_converge) },
    { "pause-before-switchover", offsetof(MigParams, cap_pause_before_switchover) },
    { "validate-uuid", offsetof(MigParams, cap_validate_uuid) },
};

static bool *capability(MigParams *p, const char *name)
{
    for (unsigned i = 0; i < G_N_ELEMENTS(caps_desc); i++)
        if (!strcmp(caps_desc[i].name, name))
            return (bool *)((char *)p + caps_desc[i].offset);
    return NULL;
}

static JsonNode *cmd_set_capabilities(QmpClient *c, JsonObject *args, gpointer opaque,
                                      GError **error)
{
    Migration *g = migration_get(opaque);
    JsonArray *caps = json_object_get_array_member(args, "capabilities");
    if (migration_active(g)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "There's a migration process in progress");
        return NULL;
    }
    MigParams next = g->params;
    for (guint i = 0; i < json_array_get_length(caps); i++) {
        JsonNode *n = json_array_get_element(caps, i);
        JsonObject *o = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
        const char *name = o && json_object_has_member(o, "capability")
                               ? json_object_get_string_member(o, "capability")
                               : NULL;
        JsonNode *state = o ? json_object_get_member(o, "state") : NULL;
        if (!name || !state || json_node_get_value_type(state) != G_TYPE_BOOLEAN) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter 'capabilities[%u]' expects {\"capability\": NAME, "
                        "\"state\": BOOL}",
                        i);
            return NULL;
        }
        bool *cap = capability(&next, name);
        if (!cap) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter 'capability' does not accept value '%s'", name);
            return NULL;
        }
        *cap = json_node_get_boolean(state);
    }
    g->params = next;
    return empty_reply();
}

static JsonNode *cmd_query_capabilities(QmpClient *c, JsonObject *args, gpointer opaque,
                                        GError **error)
{
    Migration *g = migration_get(opaque);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_array(b);
    for (unsigned i = 0; i < G_N_ELEMENTS(caps_desc); i++) {
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "capability");
        json_builder_add_string_value(b, caps_desc[i].name);
        json_builder_set_member_name(b, "state");
        json_builder_add_boolean_value(b, *capability(&g->params, caps_desc[i].name));
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    JsonNode *root = json_builder_get_root(b);
    g_object_unref(b);
    return root;
}

static JsonNode *cmd_migrate_incoming(QmpClient *c, JsonObject *args, gpointer opaque,
                                      GError **error)
{
    Machine *m = opaque;
    GError *local = NULL;
    if (!migration_incoming_start(m, json_object_get_string_member(args, "uri"), &local)) {
        g_set_error_literal(error, QMP_ERROR, QMP_ERROR_GENERIC, local->message);
        g_error_free(local);
        return NULL;
    }
    return empty_reply();
}

void migration_cleanup(Machine *m)
{
    Migration *g = m->mig;
    migration_incoming_cleanup(m);
    if (!g)
        return;
    if (g->thread) {
        __atomic_store_n(&g->cancel, 1, __ATOMIC_SEQ_CST);
        g_mutex_lock(&g->lock);
        g_cond_broadcast(&g->cond);
        g_mutex_unlock(&g->lock);
        g_thread_join(g->thread);
        g->thread = NULL;
    }
    job_reset(g);
    g_mutex_clear(&g->lock);
    g_cond_clear(&g->cond);
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
static const QmpArgSpec incoming_args[] = {
    { "uri", QMP_ARG_STR, FALSE },
    { NULL },
};
static const QmpArgSpec continue_args[] = { { "state", QMP_ARG_STR, FALSE }, { NULL } };
static const QmpArgSpec caps_args[] = { { "capabilities", QMP_ARG_ARRAY, FALSE }, { NULL } };
static const QmpArgSpec params_args[] = {
    { "multifd-channels", QMP_ARG_ANY, TRUE },       { "downtime-limit", QMP_ARG_ANY, TRUE },
    { "max-bandwidth", QMP_ARG_ANY, TRUE },          { "cpu-throttle-initial", QMP_ARG_ANY, TRUE },
    { "cpu-throttle-increment", QMP_ARG_ANY, TRUE }, { "max-cpu-throttle", QMP_ARG_ANY, TRUE },
    { "x-page-checksums", QMP_ARG_ANY, TRUE },       { NULL },
};
static const QmpArgSpec no_args[] = { { NULL } };

static const QmpCommand commands[] = {
    { "migrate", cmd_migrate, migrate_args },
    { "migrate_cancel", cmd_migrate_cancel, no_args },
    { "migrate-continue", cmd_migrate_continue, continue_args },
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
