/* vmsnap save: save a running VM through its QMP socket (vmsnap's or QEMU's). */
#include "cli.h"
#include "migrate_common.h"
#include "parse.h"

#include <stdio.h>
#include <string.h>

typedef struct SaveArgs {
    char *socket;
    char *uri;
    bool resume;
    bool json;
    bool live;
    bool auto_converge;
    unsigned channels;      /* 0: leave the VM's setting */
    int64_t downtime_limit; /* -1: leave the VM's setting */
    int64_t max_bandwidth;  /* -1: leave the VM's setting */
} SaveArgs;

static void save_args_clear(SaveArgs *a)
{
    g_free(a->socket);
    g_free(a->uri);
}

static bool save_parse(int argc, char **argv, SaveArgs *a, GError **error)
{
    g_autofree char *qmp = NULL, *channels = NULL, *downtime = NULL, *bandwidth = NULL;
    gboolean resume = FALSE, json = FALSE, live = FALSE, auto_converge = FALSE;
    GOptionEntry entries[] = {
        { "qmp", 'q', 0, G_OPTION_ARG_STRING, &qmp, "QMP socket of the VM (required)",
          "unix:PATH" },
        { "resume", 'r', 0, G_OPTION_ARG_NONE, &resume,
          "Resume the VM after the save completes (snapshot semantics)", NULL },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &json,
          "Print the final query-migrate object as JSON on stdout", NULL },
        { "channels", 'C', 0, G_OPTION_ARG_STRING, &channels,
          "Parallel channels/writers, 1 to 255 (enables the multifd capability)", "N" },
        { "live", 'l', 0, G_OPTION_ARG_NONE, &live,
          "Save while the VM runs (precopy), pausing it only for the last pass", NULL },
        { "downtime-limit", 0, 0, G_OPTION_ARG_STRING, &downtime,
          "With --live: the longest pause allowed for the last pass", "MS" },
        { "max-bandwidth", 0, 0, G_OPTION_ARG_STRING, &bandwidth,
          "With --live: bandwidth limit in bytes per second (100M = 100 MiB/s)", "BYTES" },
        { "auto-converge", 0, 0, G_OPTION_ARG_NONE, &auto_converge,
          "With --live: throttle the vCPUs when the guest dirties memory too fast", NULL },
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
             "  vmsnap save --qmp unix:/tmp/vm.qmp --resume --channels 4 file:vm.vms\n"
             "  vmsnap save --qmp unix:/tmp/vm.qmp --live --downtime-limit 100 file:vm.vms\n");
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
    g_autofree char *socket = migrate_qmp_path(qmp, error);
    if (!socket)
        return false;
    if (!*args[1]) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "empty URI");
        return false;
    }
    uint64_t nch = 0;
    if (channels && !parse_uint(channels, "--channels", 1, 255, &nch, error))
        return false;
    /* These tune precopy; a stopped save has no passes to tune. */
    if (!live && (downtime || bandwidth || auto_converge)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "%s needs --live",
                    downtime    ? "--downtime-limit"
                    : bandwidth ? "--max-bandwidth"
                                : "--auto-converge");
        return false;
    }
    if (!migrate_parse_limits(downtime, bandwidth, &a->downtime_limit, &a->max_bandwidth, error))
        return false;
    a->socket = g_steal_pointer(&socket);
    a->uri = migrate_absolute_uri(args[1]);
    a->resume = resume;
    a->json = json;
    a->live = live;
    a->auto_converge = auto_converge;
    a->channels = (unsigned)nch;
    return true;
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
    MigrateRun r = {
        .prog = "vmsnap save",
        .socket = a.socket,
        .uri = a.uri,
        .json = a.json,
        .resume = a.resume,
        .multifd = a.channels > 0,
        .auto_converge = a.auto_converge,
        .stop_first = !a.live,
        .multifd_channels = a.channels,
        .downtime_limit = a.downtime_limit,
        .max_bandwidth = a.max_bandwidth,
        .live_progress = a.live,
    };
    int code = migrate_run(&r);
    save_args_clear(&a);
    return code;
}
