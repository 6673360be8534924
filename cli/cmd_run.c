/* vmsnap run: boot a VM. */
#include "cli.h"
#include "devskip.h"
#include "parse.h"

#include <stdio.h>
#include <string.h>

#define MIN_MEMORY (2ull << 20)

bool cli_run_parse(int argc, char **argv, MachineConfig *cfg, GError **error)
{
    g_autofree char *memory = NULL, *cpus = NULL, *backend = NULL, *incoming = NULL;
    g_autofree char *mode = NULL;
    gboolean paused = FALSE, verify = FALSE;
    GOptionEntry entries[] = {
        { "memory", 'm', 0, G_OPTION_ARG_STRING, &memory,
          "Guest RAM (default 256M; a bare number is MiB, as in QEMU)", "SIZE" },
        { "cpus", 'c', 0, G_OPTION_ARG_STRING, &cpus, "Number of vCPUs, 1 to 32 (default 1)", "N" },
        { "kernel", 'k', 0, G_OPTION_ARG_FILENAME, &cfg->kernel,
          "Kernel: multiboot v1 ELF32, Linux bzImage or Linux vmlinux (ELF64) "
          "(default: the embedded self-checking guest)",
          "FILE" },
        { "initrd", 0, 0, G_OPTION_ARG_FILENAME, &cfg->initrd, "Initial ramdisk for a Linux kernel",
          "FILE" },
        { "append", 'a', 0, G_OPTION_ARG_STRING, &cfg->append, "Kernel command line", "ARGS" },
        { "serial", 's', 0, G_OPTION_ARG_STRING, &cfg->serial,
          "Serial port: stdio (default), file:PATH[,input=INPATH], unix:PATH or none", "BACKEND" },
        { "qmp", 'q', 0, G_OPTION_ARG_STRING, &cfg->qmp, "QMP control socket (unix:PATH)",
          "unix:PATH" },
        { "name", 'n', 0, G_OPTION_ARG_STRING, &cfg->name, "VM name (query-name)", "NAME" },
        { "uuid", 'u', 0, G_OPTION_ARG_STRING, &cfg->uuid, "VM UUID (default: random)", "UUID" },
        { "paused", 'S', 0, G_OPTION_ARG_NONE, &paused,
          "Start with the vCPUs stopped (QEMU's -S); resume with the QMP 'cont'", NULL },
        { "memory-backend", 0, 0, G_OPTION_ARG_STRING, &backend,
          "Guest RAM allocation: anon (default) or memfd", "anon|memfd" },
        { "incoming", 'i', 0, G_OPTION_ARG_STRING, &incoming,
          "Wait for an incoming migration: a snapshot (file:PATH[,offset=N]) or a stream "
          "(unix:PATH, tcp:HOST:PORT, exec:CMD) loaded at "
          "start, or 'defer' to wait for the QMP migrate-incoming",
          "URI|defer" },
        { "restore-mode", 0, 0, G_OPTION_ARG_STRING, &mode,
          "With --incoming: map (default) or copy", "map|copy" },
        { "verify", 0, 0, G_OPTION_ARG_NONE, &verify,
          "With --incoming: check every page checksum before the guest runs", NULL },
        { "x-skip-device-load", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING_ARRAY,
          &cfg->skip_devices,
          "Test only: do not load this device state on --incoming/restore: SECTION[N][.PART], "
          "repeatable or comma-separated (docs/CLI.md)",
          "SPEC" },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- boot a VM");
    g_option_context_set_summary(ctx,
                                 "Boots a KVM virtual machine with a multiboot or Linux kernel.");
    g_option_context_set_description(
        ctx, "Examples:\n"
             "  vmsnap run --memory 256M --qmp unix:/tmp/vm.sock\n"
             "  vmsnap run --cpus 2 --memory 1G --append 'bevery=4' --serial file:/tmp/vm.out\n"
             "  vmsnap run --kernel vmlinux --initrd initramfs.gz --append 'console=ttyS0'\n");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_strict_posix(ctx, FALSE);

    /* parse_strv owns the array and frees what it removes: give it a copy. */
    g_auto(GStrv) args = g_new0(char *, argc + 1);
    for (int i = 0; i < argc; i++)
        args[i] = g_strdup(argv[i]);
    if (!g_option_context_parse_strv(ctx, &args, error))
        return false;
    int n = (int)g_strv_length(args);
    char **av = args;
    if (n > 1) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "unexpected argument '%s'",
                    av[1]);
        return false;
    }

    cfg->memory = 256ull << 20;
    if (memory && !parse_size(memory, 1ull << 20, &cfg->memory, error)) {
        g_prefix_error(error, "--memory: ");
        return false;
    }
    if (cfg->memory < MIN_MEMORY || cfg->memory % 4096) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--memory: %" G_GUINT64_FORMAT " bytes; need a multiple of 4 KiB, at least "
                    "2 MiB",
                    cfg->memory);
        return false;
    }
    uint64_t ncpus = 1;
    if (cpus && !parse_uint(cpus, "--cpus", 1, VM_MAX_VCPUS, &ncpus, error))
        return false;
    cfg->cpus = (unsigned)ncpus;
    cfg->backing = RAM_BACKING_ANON;
    if (backend && !strcmp(backend, "memfd")) {
        cfg->backing = RAM_BACKING_MEMFD;
    } else if (backend && strcmp(backend, "anon")) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--memory-backend: '%s' is not anon or memfd", backend);
        return false;
    }
    if (cfg->uuid && !g_uuid_string_is_valid(cfg->uuid)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--uuid: '%s' is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", cfg->uuid);
        return false;
    }
    ChardevSpec spec;
    if (!chardev_spec_parse(cfg->serial, "--serial", &spec, error))
        return false;
    chardev_spec_clear(&spec);
    if (cfg->qmp && (!g_str_has_prefix(cfg->qmp, "unix:") || !cfg->qmp[5])) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--qmp: '%s' is not unix:PATH",
                    cfg->qmp);
        return false;
    }
    if (cfg->skip_devices) {
        g_autoptr(DevSkip) check = devskip_parse((const char *const *)cfg->skip_devices, error);
        if (!check) {
            g_prefix_error(error, "--x-skip-device-load: ");
            return false;
        }
    }
    if (cfg->initrd && !cfg->kernel) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--initrd needs --kernel with a Linux kernel (bzImage or vmlinux)");
        return false;
    }
    cfg->paused = paused;
    cfg->verify = verify;
    RestoreMode rm;
    if (!cli_parse_restore_mode(mode, &rm, error)) {
        g_prefix_error(error, "--restore-");
        return false;
    }
    cfg->restore_mode_copy = rm == RESTORE_MODE_COPY;
    if (incoming) {
        cfg->incoming = true;
        cfg->incoming_defer = !strcmp(incoming, "defer");
        if (cfg->incoming_defer && !cfg->qmp) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--incoming defer needs --qmp (migrate-incoming comes over QMP)");
            return false;
        }
        if (!cfg->incoming_defer)
            cfg->incoming_uri = g_steal_pointer(&incoming);
    }
    return true;
}

int cli_run(int argc, char **argv)
{
    MachineConfig cfg = { 0 };
    g_autoptr(GError) error = NULL;

    if (!cli_run_parse(argc, argv, &cfg, &error)) {
        fprintf(stderr, "vmsnap run: %s\n", error->message);
        machine_config_clear(&cfg);
        return CLI_EXIT_USAGE;
    }
    Machine *m = machine_new(&cfg, &error);
    machine_config_clear(&cfg);
    if (!m) {
        fprintf(stderr, "vmsnap run: %s\n", error->message);
        return CLI_EXIT_USAGE;
    }
    if (m->cfg.incoming_uri) {
        if (!migration_incoming_start(m, m->cfg.incoming_uri, &error)) {
            fprintf(stderr, "vmsnap run: --incoming: %s\n", error->message);
            machine_free(m);
            return CLI_EXIT_USAGE;
        }
    }
    if (!machine_listen_qmp(m, &error)) {
        fprintf(stderr, "vmsnap run: %s\n", error->message);
        machine_free(m);
        return CLI_EXIT_USAGE;
    }
    int code = machine_run(m);
    machine_free(m);
    return code;
}
