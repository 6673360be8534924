/* The QMP side of vmsnap save and vmsnap migrate (see migrate_common.h). */
#include "migrate_common.h"
#include "parse.h"
#include "progress.h"
#include "qmp_client.h"
#include "qmp_json.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define POLL_MS     100
#define GREETING_MS 10000

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

char *migrate_absolute_uri(const char *uri)
{
    const char *schemes[] = { "file:", "unix:" };
    for (unsigned i = 0; i < G_N_ELEMENTS(schemes); i++) {
        size_t n = strlen(schemes[i]);
        if (!g_str_has_prefix(uri, schemes[i]) || uri[n] == '/' || uri[n] == '\0')
            continue;
        g_autofree char *cwd = g_get_current_dir();
        return g_strdup_printf("%s%s/%s", schemes[i], cwd, uri + n);
    }
    return g_strdup(uri);
}

char *migrate_qmp_path(const char *qmp, GError **error)
{
    if (!qmp) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "--qmp unix:PATH is required (the VM's QMP socket)");
        return NULL;
    }
    if (!g_str_has_prefix(qmp, "unix:") || !qmp[5]) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--qmp: '%s' is not unix:PATH",
                    qmp);
        return NULL;
    }
    return g_strdup(qmp + 5);
}

bool migrate_parse_limits(const char *downtime, const char *bandwidth, int64_t *downtime_limit,
                          int64_t *max_bandwidth, GError **error)
{
    uint64_t v;
    *downtime_limit = -1;
    *max_bandwidth = -1;
    if (downtime) {
        if (!parse_uint(downtime, "--downtime-limit", 0, 2000000, &v, error))
            return false;
        *downtime_limit = (int64_t)v;
    }
    if (bandwidth) {
        if (!parse_size(bandwidth, 1, &v, error)) {
            g_prefix_error(error, "--max-bandwidth: ");
            return false;
        }
        if (v > G_MAXINT64) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--max-bandwidth: '%s' is too large", bandwidth);
            return false;
        }
        *max_bandwidth = (int64_t)v;
    }
    return true;
}

/* ---- reading query-migrate ---- */

static JsonNode *member(JsonObject *o, const char *name)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    return n && JSON_NODE_HOLDS_VALUE(n) ? n : NULL;
}

static int64_t get_int(JsonObject *o, const char *name, int64_t def)
{
    JsonNode *n = member(o, name);
    if (!n)
        return def;
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64)
        return json_node_get_int(n);
    if (t == G_TYPE_DOUBLE)
        return (int64_t)json_node_get_double(n);
    return def;
}

static uint64_t get_u64(JsonObject *o, const char *name)
{
    return (uint64_t)MAX(get_int(o, name, 0), 0);
}

static double get_double(JsonObject *o, const char *name, double def)
{
    JsonNode *n = member(o, name);
    if (!n)
        return def;
    GType t = json_node_get_value_type(n);
    if (t == G_TYPE_INT64 || t == G_TYPE_DOUBLE)
        return json_node_get_double(n);
    return def;
}

static const char *get_str(JsonObject *o, const char *name)
{
    JsonNode *n = member(o, name);
    return n && json_node_get_value_type(n) == G_TYPE_STRING ? json_node_get_string(n) : NULL;
}

static JsonObject *get_obj(JsonObject *o, const char *name)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static bool terminal_status(const char *s)
{
    return s && (!strcmp(s, "completed") || !strcmp(s, "failed") || !strcmp(s, "cancelled"));
}

/* Transfer throughput in bytes/s: QEMU's mbps is megabits per second. */
static double throughput(JsonObject *info)
{
    JsonObject *ram = get_obj(info, "ram");
    double mbps = get_double(ram, "mbps", 0);
    if (mbps > 0)
        return mbps * 1e6 / 8;
    int64_t ms = get_int(info, "total-time", 0);
    int64_t sent = get_int(ram, "transferred", 0);
    return ms > 0 && sent > 0 ? (double)sent * 1000.0 / (double)ms : 0;
}

/* ---- progress on a terminal ---- */

typedef struct Meter {
    gint64 last_us;
    uint64_t last_done;
    uint64_t last_sent;
    double done_rate; /* smoothed bytes/s of RAM processed (for the ETA) */
    double sent_rate; /* smoothed bytes/s transferred, when the server gives no mbps */
} Meter;

static void meter_sample(Meter *m, uint64_t done, uint64_t sent)
{
    gint64 now = g_get_monotonic_time();
    if (m->last_us && now > m->last_us) {
        double dt = (double)(now - m->last_us) / 1e6;
        double dr = done >= m->last_done ? (double)(done - m->last_done) / dt : 0;
        double sr = sent >= m->last_sent ? (double)(sent - m->last_sent) / dt : 0;
        /* Exponential smoothing keeps the ETA from jumping at every poll. */
        m->done_rate = m->done_rate > 0 ? 0.7 * m->done_rate + 0.3 * dr : dr;
        m->sent_rate = m->sent_rate > 0 ? 0.7 * m->sent_rate + 0.3 * sr : sr;
    }
    m->last_us = now;
    m->last_done = done;
    m->last_sent = sent;
}

/* save: a bar over the RAM processed, with percent and ETA. */
static void draw_save(Meter *m, JsonObject *info)
{
    JsonObject *ram = get_obj(info, "ram");
    const char *status = get_str(info, "status");
    uint64_t total = get_u64(ram, "total");
    uint64_t remaining = get_u64(ram, "remaining");
    uint64_t sent = get_u64(ram, "transferred");
    uint64_t done = total > remaining ? total - remaining : 0;
    meter_sample(m, done, sent);

    double mbps = get_double(ram, "mbps", 0);
    ProgressLine line = {
        .label = status ? status : "waiting",
        .done = total ? done : sent,
        .total = total,
        .rate = mbps > 0 ? mbps * 1e6 / 8 : m->sent_rate,
        .eta = progress_eta_seconds(remaining, m->done_rate),
    };
    progress_draw(stderr, &line);
}

/*
 * A live migration has no fixed end (pages get dirty again), so no bar: what is
 * left, how fast it goes out against how fast the guest dirties it, which pass, the
 * vCPU throttle of auto-converge, and what was sent:
 *   active  pass 3  remaining 96.0 MiB  850.3 MB/s  dirty 40.1 MB/s  throttle 20%  sent 1.2 GiB
 * Fields that do not fit are dropped from the right, least telling last.
 */
static char *render_live(JsonObject *info, double fallback_rate, unsigned width)
{
    JsonObject *ram = get_obj(info, "ram");
    const char *status = get_str(info, "status");
    g_autoptr(GPtrArray) f = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(f, g_strdup(status ? status : "waiting"));
    if (member(ram, "dirty-sync-count"))
        g_ptr_array_add(
            f, g_strdup_printf("pass %" G_GINT64_FORMAT, get_int(ram, "dirty-sync-count", 0)));
    g_autofree char *left = progress_format_bytes(get_u64(ram, "remaining"));
    g_ptr_array_add(f, g_strdup_printf("remaining %s", left));
    double mbps = get_double(ram, "mbps", 0);
    g_ptr_array_add(f, progress_format_rate(mbps > 0 ? mbps * 1e6 / 8 : fallback_rate));
    if (member(ram, "dirty-pages-rate")) {
        double page = (double)get_int(ram, "page-size", 4096);
        double rate = get_double(ram, "dirty-pages-rate", 0) * (page > 0 ? page : 4096);
        g_autofree char *dirty = progress_format_rate(rate);
        g_ptr_array_add(f, g_strdup_printf("dirty %s", dirty));
    }
    if (member(info, "cpu-throttle-percentage"))
        g_ptr_array_add(f, g_strdup_printf("throttle %" G_GINT64_FORMAT "%%",
                                           get_int(info, "cpu-throttle-percentage", 0)));
    g_autofree char *sent = progress_format_bytes(get_u64(ram, "transferred"));
    g_ptr_array_add(f, g_strdup_printf("sent %s", sent));

    GString *s = g_string_new(NULL);
    for (guint n = f->len; n > 0; n--) {
        g_string_truncate(s, 0);
        for (guint i = 0; i < n; i++)
            g_string_append_printf(s, "%s%s", i ? "  " : "", (char *)f->pdata[i]);
        if (s->len <= width)
            break;
    }
    if (s->len > width)
        g_string_truncate(s, width);
    return g_string_free(s, FALSE);
}

static void draw_live(Meter *m, JsonObject *info)
{
    JsonObject *ram = get_obj(info, "ram");
    meter_sample(m, 0, get_u64(ram, "transferred"));
    /* One column spare: writing the last column makes some terminals wrap. */
    unsigned width = progress_term_width(stderr, 80);
    g_autofree char *line = render_live(info, m->sent_rate, width > 1 ? width - 1 : width);
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
}

/* ---- summary ---- */

static void print_summary(const MigrateRun *r, JsonObject *info)
{
    JsonObject *ram = get_obj(info, "ram");
    const char *status = get_str(info, "status");
    g_autofree char *total_time = progress_format_duration(get_int(info, "total-time", -1) / 1e3);
    g_autofree char *sent = progress_format_bytes(get_u64(ram, "transferred"));
    g_autofree char *ram_total = progress_format_bytes(get_u64(ram, "total"));
    g_autofree char *rate = progress_format_rate(throughput(info));

    printf("status:      %s\n", status ? status : "?");
    printf("total time:  %s", total_time);
    if (member(info, "setup-time")) {
        g_autofree char *setup = progress_format_duration(get_int(info, "setup-time", 0) / 1e3);
        printf(" (setup %s)", setup);
    }
    printf("\n");
    if (member(info, "downtime")) {
        g_autofree char *down = progress_format_duration(get_int(info, "downtime", 0) / 1e3);
        printf("downtime:    %s\n", down);
    }
    printf("transferred: %s of %s RAM", sent, ram_total);
    if (member(ram, "normal") || member(ram, "duplicate"))
        printf(" (%" G_GINT64_FORMAT " pages written, %" G_GINT64_FORMAT " zero pages skipped)",
               get_int(ram, "normal", 0), get_int(ram, "duplicate", 0));
    printf("\n");
    if (r->live_progress && member(ram, "dirty-sync-count"))
        printf("passes:      %" G_GINT64_FORMAT "\n", get_int(ram, "dirty-sync-count", 0));
    printf("throughput:  %s\n", rate);
    if (r->live_progress && member(info, "cpu-throttle-percentage"))
        printf("throttle:    %" G_GINT64_FORMAT "%%\n",
               get_int(info, "cpu-throttle-percentage", 0));
    if (r->resume)
        printf("resumed:     yes (the VM keeps running)\n");
}

static void print_json(JsonObject *info)
{
    g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), info);
    g_autofree char *text = qmp_json_to_string(n);
    printf("%s\n", text);
}

/* ---- the commands ---- */

static void add_capability(JsonArray *caps, const char *name)
{
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "capability", name);
    json_object_set_boolean_member(o, "state", TRUE);
    json_array_add_object_element(caps, o);
}

static JsonObject *capabilities_args(const MigrateRun *r)
{
    JsonObject *args = json_object_new();
    JsonArray *caps = json_array_new();
    add_capability(caps, "events");
    /* As in QEMU, multifd-channels only matters with the multifd capability on. */
    if (r->multifd)
        add_capability(caps, "multifd");
    if (r->auto_converge)
        add_capability(caps, "auto-converge");
    if (r->validate_uuid)
        add_capability(caps, "validate-uuid");
    if (r->pause_before_switchover)
        add_capability(caps, "pause-before-switchover");
    json_object_set_array_member(args, "capabilities", caps);
    return args;
}

/* Only the parameters asked for: others keep the VM's values. NULL when none. */
static JsonObject *parameters_args(const MigrateRun *r)
{
    if (!r->multifd_channels && r->downtime_limit < 0 && r->max_bandwidth < 0)
        return NULL;
    JsonObject *args = json_object_new();
    if (r->multifd_channels)
        json_object_set_int_member(args, "multifd-channels", r->multifd_channels);
    if (r->downtime_limit >= 0)
        json_object_set_int_member(args, "downtime-limit", r->downtime_limit);
    if (r->max_bandwidth >= 0)
        json_object_set_int_member(args, "max-bandwidth", r->max_bandwidth);
    return args;
}

/* Prints a QMP failure; returns the exit code it maps to. */
static int qmp_failure(const MigrateRun *r, const GError *error)
{
    fprintf(stderr, "%s: %s\n", r->prog, error->message);
    return g_error_matches(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND) ? MIGRATE_EXIT_FAILED
                                                                          : MIGRATE_EXIT_QMP;
}

/* True when the VM's query-status says it is running. */
static bool vm_running(QmpConn *c, GError **error)
{
    g_autoptr(JsonNode) n = qmp_conn_execute(c, "query-status", NULL, error);
    JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
    return o && json_object_has_member(o, "running") &&
           json_object_get_boolean_member(o, "running");
}

static int setup(const MigrateRun *r, QmpConn *c, bool *stopped)
{
    g_autoptr(GError) error = NULL;
    *stopped = false;
    if (r->stop_first) {
        bool running = vm_running(c, &error);
        if (error)
            return qmp_failure(r, error);
        if (running) {
            g_autoptr(JsonNode) rs = qmp_conn_execute(c, "stop", NULL, &error);
            if (!rs)
                return qmp_failure(r, error);
            *stopped = true;
        }
    }
    g_autoptr(JsonObject) caps = capabilities_args(r);
    g_autoptr(JsonNode) r1 = qmp_conn_execute(c, "migrate-set-capabilities", caps, &error);
    if (!r1)
        return qmp_failure(r, error);
    g_autoptr(JsonObject) params = parameters_args(r);
    if (params) {
        g_autoptr(JsonNode) r2 = qmp_conn_execute(c, "migrate-set-parameters", params, &error);
        if (!r2)
            return qmp_failure(r, error);
    }
    g_autoptr(JsonObject) margs = json_object_new();
    json_object_set_string_member(margs, "uri", r->uri);
    g_autoptr(JsonNode) r3 = qmp_conn_execute(c, "migrate", margs, &error);
    if (!r3)
        return qmp_failure(r, error);
    return 0;
}

/* Polls query-migrate until a final status; *out is the last answer. */
static int follow(const MigrateRun *r, QmpConn *c, JsonNode **out)
{
    g_autoptr(GError) error = NULL;
    bool tty = isatty(STDERR_FILENO);
    bool cancel_sent = false, continue_sent = false, waiting_noted = false;
    Meter meter = { 0 };
    for (;;) {
        g_autoptr(JsonNode) last = qmp_conn_execute(c, "query-migrate", NULL, &error);
        if (!last) {
            if (tty)
                progress_clear(stderr);
            return qmp_failure(r, error);
        }
        JsonObject *info = JSON_NODE_HOLDS_OBJECT(last) ? json_node_get_object(last) : NULL;
        if (!info) {
            if (tty)
                progress_clear(stderr);
            fprintf(stderr, "%s: %s: query-migrate did not return an object\n", r->prog, r->socket);
            return MIGRATE_EXIT_QMP;
        }
        const char *status = get_str(info, "status");
        if (terminal_status(status)) {
            if (tty)
                progress_clear(stderr);
            *out = g_steal_pointer(&last);
            return 0;
        }
        if (interrupted && !cancel_sent) {
            if (tty)
                progress_clear(stderr);
            fprintf(stderr, "%s: interrupted: cancelling the migration\n", r->prog);
            g_autoptr(JsonNode) rc = qmp_conn_execute(c, "migrate_cancel", NULL, &error);
            if (!rc)
                return qmp_failure(r, error);
            cancel_sent = true;
        }
        /* The source stopped before switching over, as asked: let it go on. */
        if (status && !strcmp(status, "pre-switchover") && !cancel_sent) {
            if (r->pause_before_switchover && !continue_sent) {
                if (tty)
                    progress_clear(stderr);
                fprintf(stderr,
                        "%s: pre-switchover: the source is paused before the switchover;"
                        " sending migrate-continue\n",
                        r->prog);
                g_autoptr(JsonObject) a = json_object_new();
                json_object_set_string_member(a, "state", "pre-switchover");
                g_autoptr(JsonNode) rc = qmp_conn_execute(c, "migrate-continue", a, &error);
                if (!rc)
                    return qmp_failure(r, error);
                continue_sent = true;
            } else if (!r->pause_before_switchover && !waiting_noted) {
                if (tty)
                    progress_clear(stderr);
                fprintf(stderr,
                        "%s: the VM waits in pre-switchover (its pause-before-switchover "
                        "capability is on): send migrate-continue\n",
                        r->prog);
                waiting_noted = true;
            }
        }
        if (tty) {
            if (r->live_progress)
                draw_live(&meter, info);
            else
                draw_save(&meter, info);
        }
        /* An event (MIGRATION: a new status, MIGRATION_PASS: a new pass) means there
         * is something new to show: ask again at once. Taking any event also keeps
         * others (STOP, RESUME) from piling up. */
        g_autoptr(JsonObject) ev = qmp_conn_wait_event(c, NULL, POLL_MS, &error);
        if (!ev && !g_error_matches(error, QMP_CONN_ERROR, QMP_CONN_ERROR_TIMEOUT)) {
            if (tty)
                progress_clear(stderr);
            return qmp_failure(r, error);
        }
        g_clear_error(&error);
    }
}

static int run(const MigrateRun *r)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = qmp_conn_connect_unix(r->socket, GREETING_MS, &error);
    if (!c) {
        fprintf(stderr, "%s: %s\n", r->prog, error->message);
        return MIGRATE_EXIT_QMP;
    }
    if (!qmp_conn_negotiate(c, &error)) {
        fprintf(stderr, "%s: %s: capabilities negotiation failed: %s\n", r->prog, r->socket,
                error->message);
        return MIGRATE_EXIT_QMP;
    }
    bool stopped = false;
    int code = setup(r, c, &stopped);
    g_autoptr(JsonNode) last = NULL;
    if (!code)
        code = follow(r, c, &last);
    const char *status = last ? get_str(json_node_get_object(last), "status") : NULL;
    if (stopped && (code || !status || strcmp(status, "completed"))) {
        /* A save that did not happen leaves the VM as we found it: running. */
        g_autoptr(GError) cerr = NULL;
        g_autoptr(JsonNode) rc = qmp_conn_execute(c, "cont", NULL, &cerr);
        if (!rc)
            fprintf(stderr, "%s: cont after the failed save failed too: %s\n", r->prog,
                    cerr->message);
    }
    if (code)
        return code;

    JsonObject *info = json_node_get_object(last);
    if (strcmp(status, "completed")) {
        const char *desc = get_str(info, "error-desc");
        if (r->json)
            print_json(info);
        if (desc)
            fprintf(stderr, "%s: %s\n", r->prog, desc);
        else
            fprintf(stderr, "%s: migration %s\n", r->prog, status);
        return MIGRATE_EXIT_FAILED;
    }
    if (r->resume) {
        g_autoptr(JsonNode) rc = qmp_conn_execute(c, "cont", NULL, &error);
        if (!rc) {
            if (r->json)
                print_json(info);
            fprintf(stderr, "%s: saved to %s, but cont failed: %s\n", r->prog, r->uri,
                    error->message);
            return g_error_matches(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND)
                       ? MIGRATE_EXIT_FAILED
                       : MIGRATE_EXIT_QMP;
        }
    }
    if (r->json)
        print_json(info);
    else
        print_summary(r, info);
    return 0;
}

int migrate_run(const MigrateRun *r)
{
    /* The first Ctrl-C cancels the migration cleanly; a second one kills us. */
    struct sigaction sa = { .sa_handler = on_signal, .sa_flags = (int)SA_RESETHAND };
    struct sigaction old_int, old_term;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int code = run(r);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return code;
}
