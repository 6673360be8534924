/* `vmsnap run` option parsing into a machine configuration. */
#include "cli.h"

#include <string.h>

static bool parse(MachineConfig *cfg, GError **error, ...)
{
    GPtrArray *args = g_ptr_array_new();
    va_list ap;
    g_ptr_array_add(args, "run");
    va_start(ap, error);
    for (const char *a; (a = va_arg(ap, const char *));)
        g_ptr_array_add(args, (gpointer)a);
    va_end(ap);
    g_ptr_array_add(args, NULL);
    memset(cfg, 0, sizeof(*cfg));
    bool ok = cli_run_parse((int)args->len - 1, (char **)args->pdata, cfg, error);
    g_ptr_array_free(args, TRUE);
    return ok;
}

static void test_defaults(void)
{
    MachineConfig cfg;
    g_autoptr(GError) error = NULL;
    g_assert_true(parse(&cfg, &error, NULL));
    g_assert_cmpuint(cfg.memory, ==, 256ull << 20);
    g_assert_cmpuint(cfg.cpus, ==, 1);
    g_assert_null(cfg.kernel);
    g_assert_null(cfg.qmp);
    g_assert_false(cfg.paused);
    g_assert_cmpint(cfg.backing, ==, RAM_BACKING_ANON);
    machine_config_clear(&cfg);
}

static void test_all_options(void)
{
    MachineConfig cfg;
    g_autoptr(GError) error = NULL;
    g_assert_true(parse(&cfg, &error, "--memory", "5G", "--cpus", "2", "--kernel", "/k.elf",
                        "--append", "start=2M bevery=3", "--serial", "file:/tmp/s", "--qmp",
                        "unix:/tmp/q", "--name", "vm1", "--uuid",
                        "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "--paused", "--memory-backend",
                        "memfd", NULL));
    g_assert_no_error(error);
    g_assert_cmpuint(cfg.memory, ==, 5ull << 30);
    g_assert_cmpuint(cfg.cpus, ==, 2);
    g_assert_cmpstr(cfg.kernel, ==, "/k.elf");
    g_assert_cmpstr(cfg.append, ==, "start=2M bevery=3");
    g_assert_cmpstr(cfg.serial, ==, "file:/tmp/s");
    g_assert_cmpstr(cfg.qmp, ==, "unix:/tmp/q");
    g_assert_cmpstr(cfg.name, ==, "vm1");
    g_assert_cmpstr(cfg.uuid, ==, "6ba7b810-9dad-11d1-80b4-00c04fd430c8");
    g_assert_true(cfg.paused);
    g_assert_cmpint(cfg.backing, ==, RAM_BACKING_MEMFD);
    machine_config_clear(&cfg);
}

static void test_memory_bare_number_is_mib(void)
{
    MachineConfig cfg;
    g_autoptr(GError) error = NULL;
    g_assert_true(parse(&cfg, &error, "-m", "64", NULL));
    g_assert_cmpuint(cfg.memory, ==, 64ull << 20);
    machine_config_clear(&cfg);
}

static void expect_error(const char *needle, ...)
{
    GPtrArray *args = g_ptr_array_new();
    va_list ap;
    g_ptr_array_add(args, "run");
    va_start(ap, needle);
    for (const char *a; (a = va_arg(ap, const char *));)
        g_ptr_array_add(args, (gpointer)a);
    va_end(ap);
    g_ptr_array_add(args, NULL);
    MachineConfig cfg = { 0 };
    g_autoptr(GError) error = NULL;
    g_assert_false(cli_run_parse((int)args->len - 1, (char **)args->pdata, &cfg, &error));
    g_assert_nonnull(error);
    if (!strstr(error->message, needle))
        g_error("expected '%s' in '%s'", needle, error->message);
    machine_config_clear(&cfg);
    g_ptr_array_free(args, TRUE);
}

static void test_errors(void)
{
    expect_error("--memory: invalid size 'x'", "--memory", "x", NULL);
    expect_error("at least 2 MiB", "--memory", "1M", NULL);
    expect_error("multiple of 4 KiB", "--memory", "10000B", NULL);
    expect_error("--cpus: '0'", "--cpus", "0", NULL);
    expect_error("--cpus: '99'", "--cpus", "99", NULL);
    expect_error("--uuid: 'abc' is not a UUID", "--uuid", "abc", NULL);
    expect_error("--qmp: 'tcp:1' is not unix:PATH", "--qmp", "tcp:1", NULL);
    expect_error("--memory-backend: 'huge'", "--memory-backend", "huge", NULL);
    expect_error("Unknown option --bogus", "--bogus", NULL);
    expect_error("unexpected argument 'stray'", "stray", NULL);
}

static void test_skip_device_load(void)
{
    MachineConfig cfg;
    g_autoptr(GError) error = NULL;
    g_assert_true(parse(&cfg, &error, "--incoming", "unix:/tmp/m", "--x-skip-device-load",
                        "cpu1.mp_state,pit", "--x-skip-device-load", "serial", NULL));
    g_assert_no_error(error);
    g_assert_cmpuint(g_strv_length(cfg.skip_devices), ==, 2);
    g_assert_cmpstr(cfg.skip_devices[0], ==, "cpu1.mp_state,pit");
    g_assert_cmpstr(cfg.skip_devices[1], ==, "serial");
    machine_config_clear(&cfg);

    g_assert_false(parse(&cfg, &error, "--x-skip-device-load", "pit,cpu.apic", NULL));
    g_assert_nonnull(error);
    g_assert_nonnull(strstr(error->message, "--x-skip-device-load: 'cpu.apic'"));
    g_assert_nonnull(strstr(error->message, "unknown cpu part 'apic'"));
    g_assert_nonnull(strstr(error->message, "cpu, pic, ioapic, pit, kvmclock, serial"));
    machine_config_clear(&cfg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/run-options/defaults", test_defaults);
    g_test_add_func("/run-options/all", test_all_options);
    g_test_add_func("/run-options/bare-memory-is-mib", test_memory_bare_number_is_mib);
    g_test_add_func("/run-options/errors", test_errors);
    g_test_add_func("/run-options/skip-device-load", test_skip_device_load);
    return g_test_run();
}
