/* --serial spec parsing (vmm/chardev_spec.c) and the CLI's use of it. */
#include "chardev_spec.h"
#include "cli.h"

#include <string.h>

static void test_forms(void)
{
    ChardevSpec s;
    g_autoptr(GError) error = NULL;

    g_assert_true(chardev_spec_parse(NULL, "--serial", &s, &error));
    g_assert_cmpint(s.kind, ==, CHARDEV_STDIO);
    g_assert_true(chardev_spec_parse("stdio", "--serial", &s, &error));
    g_assert_cmpint(s.kind, ==, CHARDEV_STDIO);
    g_assert_null(s.path);
    g_assert_true(chardev_spec_parse("none", "--serial", &s, &error));
    g_assert_cmpint(s.kind, ==, CHARDEV_NONE);

    g_assert_true(chardev_spec_parse("file:/tmp/out", "--serial", &s, &error));
    g_assert_cmpint(s.kind, ==, CHARDEV_FILE);
    g_assert_cmpstr(s.path, ==, "/tmp/out");
    g_assert_null(s.input);
    chardev_spec_clear(&s);

    g_assert_true(chardev_spec_parse("file:/tmp/out,input=/tmp/in", "--serial", &s, &error));
    g_assert_cmpint(s.kind, ==, CHARDEV_FILE);
    g_assert_cmpstr(s.path, ==, "/tmp/out");
    g_assert_cmpstr(s.input, ==, "/tmp/in");
    chardev_spec_clear(&s);
    g_assert_null(s.path);
    g_assert_null(s.input);

    g_assert_true(chardev_spec_parse("unix:/run/vm.serial", "--serial", &s, &error));
    g_assert_cmpint(s.kind, ==, CHARDEV_UNIX);
    g_assert_cmpstr(s.path, ==, "/run/vm.serial");
    chardev_spec_clear(&s);

    /* A path may hold ':' and '=' as they are, and ',' doubled. */
    g_assert_true(chardev_spec_parse("file:a:b=c,,d,input=x,,y", "--serial", &s, &error));
    g_assert_cmpstr(s.path, ==, "a:b=c,d");
    g_assert_cmpstr(s.input, ==, "x,y");
    chardev_spec_clear(&s);
    g_assert_no_error(error);
}

static void expect_error(const char *text, const char *needle)
{
    ChardevSpec s;
    g_autoptr(GError) error = NULL;
    g_assert_false(chardev_spec_parse(text, "--serial", &s, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
    if (g_test_verbose())
        g_printerr("%s -> %s\n", text, error->message);
    g_assert_true(g_str_has_prefix(error->message, "--serial: "));
    g_assert_nonnull(strstr(error->message, needle));
    /* Nothing is left allocated after a refusal. */
    g_assert_null(s.path);
    g_assert_null(s.input);
}

static void test_errors(void)
{
    expect_error("", "unknown backend ''");
    expect_error("tcp:host:1", "unknown backend 'tcp' in 'tcp:host:1'");
    expect_error("stdin", "unknown backend 'stdin'");
    expect_error("pty", "expected stdio, file:PATH[,input=INPATH], unix:PATH or none");
    expect_error("file:", "'file:' needs a PATH");
    expect_error("unix:", "'unix:' needs a PATH");
    expect_error("file:,input=x", "'file:' needs a PATH");
    expect_error("file:out,input=", "'input=' needs a PATH");
    expect_error("file:out,input=a,input=b", "'input=' given twice");
    expect_error("file:out,speed=9600", "unknown option 'speed=9600' for 'file:'");
    expect_error("file:out,", "empty option after ','");
    expect_error("unix:/s,input=x", "unknown option 'input=x' for 'unix:'");
    expect_error("stdio:x", "'stdio' takes no arguments");
    expect_error("none:", "'none' takes no arguments");
}

static bool run_parse(const char *serial, GError **error)
{
    char *argv[] = { "run", "--serial", (char *)serial, NULL };
    MachineConfig cfg;
    memset(&cfg, 0, sizeof(cfg));
    bool ok = cli_run_parse(3, argv, &cfg, error);
    if (ok)
        g_assert_cmpstr(cfg.serial, ==, serial);
    machine_config_clear(&cfg);
    return ok;
}

/* `vmsnap run` refuses a bad spec while parsing its options, naming the option. */
static void test_cli(void)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(run_parse("unix:/tmp/x.sock", &error));
    g_assert_true(run_parse("file:/tmp/o,input=/tmp/i", &error));
    g_assert_no_error(error);
    g_assert_false(run_parse("file:/tmp/o,inptu=/tmp/i", &error));
    g_assert_nonnull(strstr(error->message, "--serial: unknown option 'inptu=/tmp/i'"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/chardev-spec/forms", test_forms);
    g_test_add_func("/chardev-spec/errors", test_errors);
    g_test_add_func("/chardev-spec/cli", test_cli);
    return g_test_run();
}
