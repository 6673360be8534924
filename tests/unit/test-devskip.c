/* Unit tests of vmm/devskip.c: the test-only --x-skip-device-load SPEC parser. */
#include "devskip.h"
#include "devstate.h"

#include <string.h>

static DevSkip *parse(const char *const *specs)
{
    g_autoptr(GError) error = NULL;
    DevSkip *s = devskip_parse(specs, &error);
    g_assert_no_error(error);
    g_assert_nonnull(s);
    return s;
}

static void test_empty(void)
{
    g_autoptr(DevSkip) none = parse(NULL);
    g_assert_true(devskip_is_empty(none));
    g_assert_false(devskip_section(none, "cpu", 0));
    g_assert_false(devskip_part(none, "cpu", 0, "lapic"));
    g_assert_true(devskip_is_empty(NULL));
    g_assert_false(devskip_section(NULL, "pit", 0));
    g_assert_false(devskip_part(NULL, "cpu", 1, "xsave"));
    const char *const trailing[] = { "pit,", NULL };
    g_autoptr(DevSkip) t = parse(trailing);
    g_assert_true(devskip_section(t, "pit", 0));
}

static void test_whole_sections(void)
{
    const char *const specs[] = { "pit", "ioapic,serial", NULL };
    g_autoptr(DevSkip) s = parse(specs);
    g_assert_false(devskip_is_empty(s));
    g_assert_true(devskip_section(s, "pit", 0));
    g_assert_true(devskip_section(s, "ioapic", 0));
    g_assert_true(devskip_section(s, "serial", 0));
    g_assert_false(devskip_section(s, "pic", 0));
    g_assert_false(devskip_section(s, "kvmclock", 0));
    g_assert_false(devskip_section(s, "cpu", 0));
    g_assert_false(devskip_part(s, "cpu", 0, "lapic"));
    g_autofree char *d = devskip_describe(s);
    g_assert_cmpstr(d, ==, "pit,ioapic,serial");
}

static void test_instances_and_parts(void)
{
    const char *const specs[] = { "cpu1.mp_state, cpu.lapic", "pic1", "cpu2", NULL };
    g_autoptr(DevSkip) s = parse(specs);
    /* cpu.lapic: every vCPU's LAPIC, but not the whole section */
    g_assert_true(devskip_part(s, "cpu", 0, "lapic"));
    g_assert_true(devskip_part(s, "cpu", 7, "lapic"));
    g_assert_false(devskip_section(s, "cpu", 0));
    g_assert_false(devskip_part(s, "cpu", 0, "regs"));
    /* cpu1.mp_state: only vCPU 1 */
    g_assert_true(devskip_part(s, "cpu", 1, "mp_state"));
    g_assert_false(devskip_part(s, "cpu", 0, "mp_state"));
    g_assert_false(devskip_section(s, "cpu", 1));
    /* cpu2: the whole of vCPU 2, so every part of it */
    g_assert_true(devskip_section(s, "cpu", 2));
    g_assert_true(devskip_part(s, "cpu", 2, "xsave"));
    g_assert_true(devskip_part(s, "cpu", 2, "tsc_deadline"));
    g_assert_false(devskip_part(s, "cpu", 3, "xsave"));
    /* pic1 only */
    g_assert_true(devskip_section(s, "pic", 1));
    g_assert_false(devskip_section(s, "pic", 0));
    g_autofree char *d = devskip_describe(s);
    g_assert_cmpstr(d, ==, "cpu1.mp_state,cpu.lapic,pic1,cpu2");
}

static void test_every_part(void)
{
    for (const char *const *p = devskip_cpu_parts(); *p; p++) {
        g_autofree char *spec = g_strdup_printf("cpu0.%s", *p);
        const char *const specs[] = { spec, NULL };
        g_autoptr(DevSkip) s = parse(specs);
        for (const char *const *q = devskip_cpu_parts(); *q; q++)
            g_assert_cmpint(devskip_part(s, "cpu", 0, *q), ==, !strcmp(*p, *q));
        g_assert_false(devskip_part(s, "cpu", 1, *p));
    }
}

static void expect_error(const char *spec, const char *fragment)
{
    const char *const specs[] = { spec, NULL };
    g_autoptr(GError) error = NULL;
    DevSkip *s = devskip_parse(specs, &error);
    if (s)
        g_error("'%s' was accepted", spec);
    g_assert_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE);
    if (!strstr(error->message, fragment))
        g_error("'%s': message '%s' lacks '%s'", spec, error->message, fragment);
    /* Every error lists the valid names. */
    g_assert_nonnull(strstr(error->message, "cpu, pic, ioapic, pit, kvmclock, serial"));
    g_assert_nonnull(strstr(error->message, "sregs, regs, xsave, lapic, msrs, tsc, tsc_deadline, "
                                            "kvmclock_msr, mp_state, events, debugregs"));
}

static void test_errors(void)
{
    expect_error("", "empty");
    expect_error("lapic", "unknown section 'lapic'");
    expect_error("cpus", "unknown section 'cpus'");
    expect_error("cpu.apic", "unknown cpu part 'apic'");
    expect_error("cpu1.", "unknown cpu part ''");
    expect_error("pit.regs", "only cpu sections have parts");
    expect_error("cpu01", "bad instance number");
    expect_error("cpu99999", "bad instance number");
    expect_error("cpu1x", "unexpected text");
    expect_error("1", "no section name");
    expect_error(".lapic", "no section name");
    expect_error("pit,bogus", "unknown section 'bogus'");
}

/* devskip's names are the device registry's section names, in the same order. */
static void test_names_match_registry(void)
{
    const char *const *names = devskip_sections();
    unsigned n = 0;
    for (; names[n]; n++)
        g_assert_cmpstr(names[n], ==, devstate_type_name(n));
    g_assert_cmpuint(n, ==, devstate_n_types());
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/devskip/empty", test_empty);
    g_test_add_func("/devskip/whole-sections", test_whole_sections);
    g_test_add_func("/devskip/instances-and-parts", test_instances_and_parts);
    g_test_add_func("/devskip/every-part", test_every_part);
    g_test_add_func("/devskip/errors", test_errors);
    g_test_add_func("/devskip/names-match-registry", test_names_match_registry);
    return g_test_run();
}
