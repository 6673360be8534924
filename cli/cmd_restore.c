/* vmsnap restore: start a VM from a snapshot, with no VM arguments needed. */
#include "cli.h"
#include "devskip.h"
#include "migration.h"
#include "vmstate.h"

#include "transport.h"

#include <stdio.h>
#include <unistd.h>
#include <string.h>
#include <vmsnap/restore.h>

bool cli_parse_restore_mode(const char *text, RestoreMode *mode, GError **error)
{
    if (!text || !strcmp(text, "map"))
        *mode = RESTORE_MODE_MAP;
    else if (!strcmp(text, "copy"))
        *mode = RESTORE_MODE_COPY;
    else {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--mode: '%s' is not map or copy", text);
        return false;
    }
    return true;
}

/* A stream (exec:CMD, or - for stdin): the VM's configuration is in its first
 * record, so the machine is created once that record has arrived. */
static int restore_stream(const char *uri, char **skip, char *serial, char *qmp, bool paused)
{
    g_autoptr(GError) error = NULL;
    VStream *s = !strcmp(uri, "-") ? transport_stream_from_fd(dup(STDIN_FILENO), "stdin")
                                   : transport_exec_read(uri + 5, &error);
    GBytes *fields = NULL;
    uint32_t version = 0;
    MachineConfig cfg = { 0 };
    g_autofree char *run_state = NULL;
    if (!s || !migration_peek_config(&s, &fields, &version, &error) ||
        !vmstate_config_decode(fields, version, &cfg, &run_state, &error)) {
        /* Stream errors already begin with the stream's name. */
        if (g_str_has_prefix(error->message, uri))
            fprintf(stderr, "vmsnap restore: %s\n", error->message);
        else
            fprintf(stderr, "vmsnap restore: %s: %s\n", uri, error->message);
        if (s)
            vstream_free(s);
        if (fields)
            g_bytes_unref(fields);
        g_free(serial);
        g_free(qmp);
        return CLI_EXIT_USAGE;
    }
    g_bytes_unref(fields);
    cfg.serial = serial;
    cfg.serial_no_stdin = !strcmp(uri, "-"); /* stdin is the stream */
    cfg.qmp = qmp;
    cfg.paused = paused;
    cfg.incoming = true;
    cfg.skip_devices = g_strdupv(skip);
    Machine *m = machine_new(&cfg, &error);
    machine_config_clear(&cfg);
    if (!m) {
        vstream_free(s);
        fprintf(stderr, "vmsnap restore: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }
    if (!migration_incoming_stream(m, s, &error)) {
        fprintf(stderr, "vmsnap restore: %s\n", error->message);
        machine_free(m);
        return CLI_EXIT_USAGE;
    }
    int code = machine_run(m);
    machine_free(m);
    return code;
}

int cli_restore(int argc, char **argv)
{
    g_autofree char *mode_text = NULL, *serial = NULL, *qmp = NULL;
    g_auto(GStrv) skip = NULL;
    gboolean paused = FALSE, verify = FALSE;
    GOptionEntry entries[] = {
        { "mode", 0, 0, G_OPTION_ARG_STRING, &mode_text,
          "map (default: private mapping of the file, instant) or copy (read every page "
          "into fresh memory, checking each checksum)",
          "map|copy" },
        { "verify", 0, 0, G_OPTION_ARG_NONE, &verify,
          "Check every page checksum before the guest runs (map mode)", NULL },
        { "serial", 's', 0, G_OPTION_ARG_STRING, &serial,
          "Serial port: stdio (default; input from stdin unless the snapshot is read from "
          "stdin), file:PATH[,input=INPATH], unix:PATH or none",
          "BACKEND" },
        { "qmp", 'q', 0, G_OPTION_ARG_STRING, &qmp, "QMP control socket (unix:PATH)", "unix:PATH" },
        { "paused", 'S', 0, G_OPTION_ARG_NONE, &paused,
          "Leave the restored VM paused (QMP 'cont' resumes it)", NULL },
        { "x-skip-device-load", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING_ARRAY, &skip,
          "Test only: do not load this device state on --incoming/restore: SECTION[N][.PART], "
          "repeatable or comma-separated (docs/CLI.md)",
          "SPEC" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("URI - start a VM from a snapshot");
    g_option_context_set_summary(
        ctx,
        "Restores a VM saved with 'vmsnap save' or QMP 'migrate'. URI is file:PATH[,offset=N]\n"
        "or a path (a mapped-RAM snapshot), or exec:CMD or - (a stream read from the\n"
        "command's output or stdin, e.g. exec:'zstd -dc vm.zst'). The snapshot carries the\n"
        "VM's configuration: no VM options are needed.");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    g_auto(GStrv) args = g_new0(char *, argc + 1);
    for (int i = 0; i < argc; i++)
        args[i] = g_strdup(argv[i]);
    if (!g_option_context_parse_strv(ctx, &args, &error)) {
        fprintf(stderr, "vmsnap restore: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }
    if (g_strv_length(args) != 2) {
        fprintf(stderr, "vmsnap restore: expected one snapshot URI (see --help)\n");
        return CLI_EXIT_USAGE;
    }
    g_autoptr(DevSkip) check = devskip_parse((const char *const *)skip, &error);
    if (!check) {
        fprintf(stderr, "vmsnap restore: --x-skip-device-load: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }
    IncomingOptions opt = { .verify = verify };
    if (!cli_parse_restore_mode(mode_text, &opt.mode, &error)) {
        fprintf(stderr, "vmsnap restore: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }

    ChardevSpec spec;
    if (!chardev_spec_parse(serial, "--serial", &spec, &error)) {
        fprintf(stderr, "vmsnap restore: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }
    chardev_spec_clear(&spec);

    if (g_str_has_prefix(args[1], "exec:") || !strcmp(args[1], "-"))
        return restore_stream(args[1], skip, g_steal_pointer(&serial), g_steal_pointer(&qmp),
                              paused);
    g_autoptr(VmsnapSnapshot) snap =
        migration_open_snapshot(NULL, args[1], migration_open_flags(&opt), &error);
    if (!snap) {
        fprintf(stderr, "vmsnap restore: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }
    uint32_t version;
    MachineConfig cfg = { 0 };
    g_autofree char *run_state = NULL;
    GBytes *config = vmsnap_snapshot_config(snap, &version);
    if (!vmstate_config_decode(config, version, &cfg, &run_state, &error)) {
        fprintf(stderr, "vmsnap restore: %s: %s\n", vmsnap_snapshot_name(snap), error->message);
        return CLI_EXIT_USAGE;
    }
    cfg.serial = g_steal_pointer(&serial);
    cfg.qmp = g_steal_pointer(&qmp);
    cfg.paused = paused;
    cfg.incoming = true;
    cfg.skip_devices = g_strdupv(skip);
    if (cfg.qmp && (!g_str_has_prefix(cfg.qmp, "unix:") || !cfg.qmp[5])) {
        fprintf(stderr, "vmsnap restore: --qmp: '%s' is not unix:PATH\n", cfg.qmp);
        machine_config_clear(&cfg);
        return CLI_EXIT_USAGE;
    }
    Machine *m = machine_new(&cfg, &error);
    machine_config_clear(&cfg);
    if (!m) {
        fprintf(stderr, "vmsnap restore: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }
    if (!migration_incoming_snapshot(m, snap, &opt, &error)) {
        fprintf(stderr, "vmsnap restore: %s\n", error->message);
        machine_free(m);
        return CLI_EXIT_USAGE;
    }
    g_clear_pointer(&snap, vmsnap_snapshot_close);
    int code = machine_run(m);
    machine_free(m);
    return code;
}
