/* vmsnap save: save a running VM through its QMP socket (vmsnap's or QEMU's). */
#include "cli.h"
#include "parse.h"
#include "progress.h"
#include "qmp_client.h"
#include "qmp_json.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define SAVE_EXIT_FAILED 2 /* the migration failed or was cancelled */
#define SAVE_EXIT_QMP    3 /* cannot connect, or QMP protocol error */

#define POLL_MS     100
#define GREETING_MS 10000

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

typedef struct SaveArgs {
    char *socket;
    char *uri;
    bool resume;
    bool json;
    unsigned channels; /* 0: leave the VM's setting */
} SaveArgs;

static void save_args_clear(SaveArgs *a)
{
    g_free(a->socket);
    g_free(a->uri);
}

/* A relative file: path would be resolved in the VM's working directory, not ours. */
static char *absolute_uri(const char *uri)
{
    if (!g_str_has_prefix(uri, "file:") || uri[5] == '/' || uri[5] == '\0')
        return g_strdup(uri);
    g_autofree char *cwd = g_get_current_dir();
    return g_strdup_printf("file:%s/%s", cwd, uri + 5);
}

static bool save_parse(int argc, char **argv, SaveArgs *a, GError **error)
{
    g_autofree char *qmp = NULL, *channels = NULL;
    gboolean resume = FALSE, json = FALSE;
    GOptionEntry entries[] = {
        { "qmp", 'q', 0, G_OPTION_ARG_STRING, &qmp, "QMP socket of the VM (required)",
          "unix:PATH" },
        { "resume", 'r', 0, G_OPTION_ARG_NONE, &resume,
          "Resume the VM after the save completes (snapshot semantics)", NULL },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &json,
          "Print the final query-migrate object as JSON on stdout", NULL },
        { "channels", 'C', 0, G_OPTION_ARG_STRING, &channels,
          "Parallel channels/writers, 1 to 255 (enables the multifd capability)", "N" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("URI - save a running VM");
    g_option_context_set_summary(
        ctx, "Saves a running VM (vmsnap run, or QEMU) through its QMP socket: migrate to URI\n"
             "(file:PATH[,offset=N], fd:NAME, ...) and wait until it completes.");
    g_option_context_set_description(
        ctx, "Exit codes: 0 completed, 1 usage, 2 the migration failed or was cancelled,\n"
             "3 cannot connect or QMP protocol error.\n\n"
             "Examples:\n"
             "  vmsnap save --qmp unix:/tmp/vm.qmp file:/var/snap/vm.vms\n"
             "  vmsnap save --qmp unix:/tmp/vm.qmp --resume --channels 4 file:vm.vms\n");
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
                    "missing URI (e.g. file:/path/vm.vms); see --help");
        return false;
    }
    if (n > 2) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "unexpected argument '%s'",
                    args[2]);
        return false;
    }
    if (!qmp) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "--qmp unix:PATH is required (the VM's QMP socket)");
        return false;
    }
    if (!g_str_has_prefix(qmp, "unix:") || !qmp[5]) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--qmp: '%s' is not unix:PATH",
                    qmp);
        return false;
    }
    if (!*args[1]) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "empty URI");
        return false;
    }
    uint64_t nch = 0;
    if (channels && !parse_uint(channels, "--channels", 1, 255, &nch, error))
        return false;
    a->socket = g_strdup(qmp + 5);
    a->uri = absolute_uri(args[1]);
    a->resume = resume;
    a->json = json;
    a->channels = (unsigned)nch;
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

static void meter_update(Meter *m, JsonObject *info)
{
    JsonObject *ram = get_obj(info, "ram");
    const char *status = get_str(info, "status");
    uint64_t total = (uint64_t)MAX(get_int(ram, "total", 0), 0);
    uint64_t remaining = (uint64_t)MAX(get_int(ram, "remaining", 0), 0);
    uint64_t sent = (uint64_t)MAX(get_int(ram, "transferred", 0), 0);
    uint64_t done = total > remaining ? total - remaining : 0;
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

/* ---- summary ---- */

static void print_summary(JsonObject *info, bool resumed)
{
    JsonObject *ram = get_obj(info, "ram");
    const char *status = get_str(info, "status");
    g_autofree char *total_time = progress_format_duration(get_int(info, "total-time", -1) / 1e3);
    g_autofree char *sent = progress_format_bytes((uint64_t)MAX(get_int(ram, "transferred", 0), 0));
    g_autofree char *ram_total = progress_format_bytes((uint64_t)MAX(get_int(ram, "total", 0), 0));
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
    printf("\nthroughput:  %s\n", rate);
    if (resumed)
        printf("resumed:     yes (the VM keeps running)\n");
}

static void print_json(JsonObject *info)
{
    g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), info);
    g_autofree char *text = qmp_json_to_string(n);
    printf("%s\n", text);
}

/* ---- the command ---- */

static JsonObject *new_args(void)
{
    return json_object_new();
}

static JsonObject *capabilities_args(const SaveArgs *a)
{
    JsonObject *args = new_args();
    JsonArray *caps = json_array_new();
    JsonObject *ev = json_object_new();
    json_object_set_string_member(ev, "capability", "events");
    json_object_set_boolean_member(ev, "state", TRUE);
    json_array_add_object_element(caps, ev);
    if (a->channels) {
        /* As in QEMU, multifd-channels only matters with the multifd capability on. */
        JsonObject *mf = json_object_new();
        json_object_set_string_member(mf, "capability", "multifd");
        json_object_set_boolean_member(mf, "state", TRUE);
        json_array_add_object_element(caps, mf);
    }
    json_object_set_array_member(args, "capabilities", caps);
    return args;
}

/* Prints a QMP failure; returns the exit code it maps to. */
static int qmp_failure(const GError *error)
{
    fprintf(stderr, "vmsnap save: %s\n", error->message);
    return g_error_matches(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND) ? SAVE_EXIT_FAILED
                                                                          : SAVE_EXIT_QMP;
}

static int run_save(const SaveArgs *a)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = qmp_conn_connect_unix(a->socket, GREETING_MS, &error);
    if (!c) {
        fprintf(stderr, "vmsnap save: %s\n", error->message);
        return SAVE_EXIT_QMP;
    }
    if (!qmp_conn_negotiate(c, &error)) {
        fprintf(stderr, "vmsnap save: %s: capabilities negotiation failed: %s\n", a->socket,
                error->message);
        return SAVE_EXIT_QMP;
    }

    g_autoptr(JsonObject) caps = capabilities_args(a);
    g_autoptr(JsonNode) r1 = qmp_conn_execute(c, "migrate-set-capabilities", caps, &error);
    if (!r1)
        return qmp_failure(error);
    if (a->channels) {
        g_autoptr(JsonObject) params = new_args();
        json_object_set_int_member(params, "multifd-channels", a->channels);
        g_autoptr(JsonNode) r2 = qmp_conn_execute(c, "migrate-set-parameters", params, &error);
        if (!r2)
            return qmp_failure(error);
    }
    g_autoptr(JsonObject) margs = new_args();
    json_object_set_string_member(margs, "uri", a->uri);
    g_autoptr(JsonNode) r3 = qmp_conn_execute(c, "migrate", margs, &error);
    if (!r3)
        return qmp_failure(error);

    bool tty = isatty(STDERR_FILENO);
    bool cancel_sent = false;
    Meter meter = { 0 };
    g_autoptr(JsonNode) last = NULL;
    JsonObject *info = NULL;
    for (;;) {
        g_clear_pointer(&last, json_node_unref);
        last = qmp_conn_execute(c, "query-migrate", NULL, &error);
        if (!last) {
            if (tty)
                progress_clear(stderr);
            return qmp_failure(error);
        }
        info = JSON_NODE_HOLDS_OBJECT(last) ? json_node_get_object(last) : NULL;
        if (!info) {
            if (tty)
                progress_clear(stderr);
            fprintf(stderr, "vmsnap save: %s: query-migrate did not return an object\n", a->socket);
            return SAVE_EXIT_QMP;
        }
        if (terminal_status(get_str(info, "status")))
            break;
        if (interrupted && !cancel_sent) {
            if (tty)
                progress_clear(stderr);
            fprintf(stderr, "vmsnap save: interrupted: cancelling the migration\n");
            g_autoptr(JsonNode) rc = qmp_conn_execute(c, "migrate_cancel", NULL, &error);
            if (!rc)
                return qmp_failure(error);
            cancel_sent = true;
        }
        if (tty)
            meter_update(&meter, info);
        /* A MIGRATION event means the status changed: ask again at once. */
        g_autoptr(JsonObject) ev = qmp_conn_wait_event(c, "MIGRATION", POLL_MS, &error);
        if (!ev && !g_error_matches(error, QMP_CONN_ERROR, QMP_CONN_ERROR_TIMEOUT)) {
            if (tty)
                progress_clear(stderr);
            return qmp_failure(error);
        }
        g_clear_error(&error);
    }
    if (tty)
        progress_clear(stderr);

    const char *status = get_str(info, "status");
    if (strcmp(status, "completed")) {
        const char *desc = get_str(info, "error-desc");
        if (a->json)
            print_json(info);
        if (desc)
            fprintf(stderr, "vmsnap save: %s\n", desc);
        else
            fprintf(stderr, "vmsnap save: migration %s\n", status);
        return SAVE_EXIT_FAILED;
    }
    if (a->resume) {
        g_autoptr(JsonNode) rc = qmp_conn_execute(c, "cont", NULL, &error);
        if (!rc) {
            if (a->json)
                print_json(info);
            fprintf(stderr, "vmsnap save: saved to %s, but cont failed: %s\n", a->uri,
                    error->message);
            return g_error_matches(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND) ? SAVE_EXIT_FAILED
                                                                                  : SAVE_EXIT_QMP;
        }
    }
    if (a->json)
        print_json(info);
    else
        print_summary(info, a->resume);
    return 0;
}

int cli_save(int argc, char **argv)
{
    SaveArgs a = { 0 };
    g_autoptr(GError) error = NULL;
    if (!save_parse(argc, argv, &a, &error)) {
        fprintf(stderr, "vmsnap save: %s\n", error->message);
        save_args_clear(&a);
        return CLI_EXIT_USAGE;
    }
    /* The first Ctrl-C cancels the migration cleanly; a second one kills us. */
    struct sigaction sa = { .sa_handler = on_signal, .sa_flags = (int)SA_RESETHAND };
    struct sigaction old_int, old_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int code = run_save(&a);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    save_args_clear(&a);
    return code;
}
