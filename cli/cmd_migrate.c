/* vmsnap migrate: live-migrate a running VM through its QMP socket (vmsnap's or QEMU's). */
#include "cli.h"
#include "migrate_common.h"
#include "parse.h"

#include <stdio.h>
#include <string.h>

typedef struct MigrateArgs {
    char *socket;
    char *uri;
    bool json;
    unsigned channels; /* 0: leave the VM's setting */
    int64_t downtime_limit;
    int64_t max_bandwidth;
    bool auto_converge;
    bool validate_uuid;
    bool pause_before_switchover;
} MigrateArgs;

static void migrate_args_clear(MigrateArgs *a)
{
    g_free(a->socket);
    g_free(a->uri);
}

static bool migrate_parse(int argc, char **argv, MigrateArgs *a, GError **error)
{
    g_autofree char *qmp = NULL, *channels = NULL, *downtime = NULL, *bandwidth = NULL;
    gboolean json = FALSE, auto_converge = FALSE, validate_uuid = FALSE, pause = FALSE;
    GOptionEntry entries[] = {
        { "qmp", 'q', 0, G_OPTION_ARG_STRING, &qmp, "QMP socket of the source VM (required)",
          "unix:PATH" },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &json,
          "Print the final query-migrate object as JSON on stdout", NULL },
        { "channels", 'C', 0, G_OPTION_ARG_STRING, &channels,
          "Connections, 1 to 255; more than 1 enables the multifd capability", "N" },
        { "downtime-limit", 0, 0, G_OPTION_ARG_STRING, &downtime,
          "The longest pause allowed for the last pass (the VM's default: 300)", "MS" },
        { "max-bandwidth", 0, 0, G_OPTION_ARG_STRING, &bandwidth,
          "Bandwidth limit in bytes per second (100M = 100 MiB/s)", "BYTES" },
        { "auto-converge", 0, 0, G_OPTION_ARG_NONE, &auto_converge,
          "Throttle the vCPUs when the guest dirties memory faster than it can be sent", NULL },
        { "validate-uuid", 0, 0, G_OPTION_ARG_NONE, &validate_uuid,
          "The destination refuses a VM whose UUID differs from its own", NULL },
        { "pause-before-switchover", 0, 0, G_OPTION_ARG_NONE, &pause,
          "Stop in pre-switchover before the device state, report it, then migrate-continue",
          NULL },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("URI - live-migrate a running VM");
    g_option_context_set_summary(
        ctx, "Live-migrates a running VM (vmsnap run, or QEMU) through its QMP socket to URI\n"
             "(tcp:HOST:PORT, unix:PATH, exec:CMD, fd:NAME, file:PATH) and waits until it\n"
             "completes. Start the destination first: vmsnap run --incoming URI, or QEMU's\n"
             "-incoming.");
    g_option_context_set_description(
        ctx, "Exit codes: 0 completed, 1 usage, 2 the migration failed or was cancelled,\n"
             "3 cannot connect or QMP protocol error.\n\n"
             "Examples:\n"
             "  vmsnap migrate --qmp unix:/tmp/src.qmp tcp:dst.example:4444\n"
             "  vmsnap migrate --qmp unix:/tmp/src.qmp --channels 4 --downtime-limit 50 \\\n"
             "      --auto-converge unix:/tmp/mig.sock\n"
             "  vmsnap migrate --qmp unix:/tmp/src.qmp 'exec:zstd -1 > /var/tmp/vm.zst'\n");
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
                    "missing URI (e.g. tcp:HOST:PORT); see --help");
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
    if (!migrate_parse_limits(downtime, bandwidth, &a->downtime_limit, &a->max_bandwidth, error))
        return false;
    a->socket = g_steal_pointer(&socket);
    a->uri = migrate_absolute_uri(args[1]);
    a->json = json;
    a->channels = (unsigned)nch;
    a->auto_converge = auto_converge;
    a->validate_uuid = validate_uuid;
    a->pause_before_switchover = pause;
    return true;
}

int cli_migrate(int argc, char **argv)
{
    MigrateArgs a = { 0 };
    g_autoptr(GError) error = NULL;
    if (!migrate_parse(argc, argv, &a, &error)) {
        fprintf(stderr, "vmsnap migrate: %s\n", error->message);
        migrate_args_clear(&a);
        return CLI_EXIT_USAGE;
    }
    /* One channel is plain migration: no multifd, as in QEMU. */
    bool multifd = a.channels > 1;
    MigrateRun r = {
        .prog = "vmsnap migrate",
        .socket = a.socket,
        .uri = a.uri,
        .json = a.json,
        .multifd = multifd,
        .auto_converge = a.auto_converge,
        .validate_uuid = a.validate_uuid,
        .pause_before_switchover = a.pause_before_switchover,
        .multifd_channels = multifd ? a.channels : 0,
        .downtime_limit = a.downtime_limit,
        .max_bandwidth = a.max_bandwidth,
        .live_progress = true,
    };
    int code = migrate_run(&r);
    migrate_args_clear(&a);
    return code;
}
