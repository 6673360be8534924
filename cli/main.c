/* vmsnap: checkpoint/restore and live migration for KVM virtual machines. */
#include "cli.h"
#include "config.h"

#include <locale.h>
#include <stdio.h>
#include <string.h>

static const CliCommand commands[] = {
    { "run", "Boot a VM (the built-in self-checking guest by default)", cli_run },
    { "save", "Save a running VM through its QMP socket, with progress", cli_save },
    { "restore", "Start a VM from a snapshot (map or copy)", cli_restore },
    { "migrate", "Live-migrate a running VM through its QMP socket, with progress", cli_migrate },
    { "inspect", "Show a snapshot file: header, config, sections, RAM; extract RAM", cli_inspect },
    { "verify", "Check a snapshot file: metadata, then every page", cli_verify },
    { "convert", "Turn a migration stream into a snapshot file and back", cli_convert },
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: vmsnap COMMAND [OPTIONS]\n\n"
               "Checkpoint/restore and live migration for KVM virtual machines.\n\n"
               "Commands:\n");
    for (unsigned i = 0; i < G_N_ELEMENTS(commands); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'vmsnap COMMAND --help' for the options of a command.\n"
               "Options:\n"
               "  -h, --help     Show this help\n"
               "  -V, --version  Show the version\n");
}

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    /* stdout may carry a stream or the guest's serial port: GLib's debug and info
     * messages (G_MESSAGES_DEBUG=vmsnap) go to stderr with the rest */
    g_log_writer_default_set_use_stderr(TRUE);
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        if (argc > 2 && strcmp(cmd, "help") == 0) {
            for (unsigned i = 0; i < G_N_ELEMENTS(commands); i++)
                if (!strcmp(argv[2], commands[i].name)) {
                    char *hargv[] = { argv[2], "--help", NULL };
                    return commands[i].run(2, hargv);
                }
        }
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("vmsnap %s\n", VMSNAP_VERSION);
        return 0;
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(commands); i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "vmsnap: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
