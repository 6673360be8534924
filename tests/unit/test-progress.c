/* Progress formatting (cli/progress.c). */
#include "progress.h"

#include <math.h>
#include <string.h>

#define CHECK_STR(expr, expected)              \
    do {                                       \
        g_autofree char *got_ = (expr);        \
        g_assert_cmpstr(got_, ==, (expected)); \
    } while (0)

static void test_bytes(void)
{
    CHECK_STR(progress_format_bytes(0), "0 B");
    CHECK_STR(progress_format_bytes(1), "1 B");
    CHECK_STR(progress_format_bytes(1023), "1023 B");
    CHECK_STR(progress_format_bytes(1024), "1.0 KiB");
    CHECK_STR(progress_format_bytes(1536), "1.5 KiB");
    CHECK_STR(progress_format_bytes(1048575), "1.0 MiB"); /* never "1024.0 KiB" */
    CHECK_STR(progress_format_bytes(1048576), "1.0 MiB");
    CHECK_STR(progress_format_bytes(3ull << 29), "1.5 GiB");
    CHECK_STR(progress_format_bytes(64ull << 20), "64.0 MiB");
    CHECK_STR(progress_format_bytes(5ull << 40), "5.0 TiB");
    CHECK_STR(progress_format_bytes(3ull << 50), "3.0 PiB");
    CHECK_STR(progress_format_bytes(UINT64_MAX), "16384.0 PiB");
}

static void test_rate(void)
{
    CHECK_STR(progress_format_rate(0), "0 B/s");
    CHECK_STR(progress_format_rate(512), "512 B/s");
    CHECK_STR(progress_format_rate(12500), "12.5 kB/s");
    CHECK_STR(progress_format_rate(850.3e6), "850.3 MB/s");
    CHECK_STR(progress_format_rate(999.96e6), "1.00 GB/s");
    CHECK_STR(progress_format_rate(1.25e9), "1.25 GB/s");
    CHECK_STR(progress_format_rate(-1), "-");
    CHECK_STR(progress_format_rate(NAN), "-");
    CHECK_STR(progress_format_rate(INFINITY), "-");
}

static void test_eta(void)
{
    CHECK_STR(progress_format_eta(0), "0:00");
    CHECK_STR(progress_format_eta(0.2), "0:01"); /* rounds up */
    CHECK_STR(progress_format_eta(42), "0:42");
    CHECK_STR(progress_format_eta(725), "12:05");
    CHECK_STR(progress_format_eta(3723), "1:02:03");
    CHECK_STR(progress_format_eta(99 * 3600 + 59), "99:00:59");
    CHECK_STR(progress_format_eta(100 * 3600), "--:--");
    CHECK_STR(progress_format_eta(-1), "--:--");
    CHECK_STR(progress_format_eta(NAN), "--:--");

    g_assert_cmpfloat(progress_eta_seconds(0, 0), ==, 0);
    g_assert_cmpfloat(progress_eta_seconds(100, 0), <, 0);
    g_assert_cmpfloat(progress_eta_seconds(1000, 100), ==, 10);
}

static void test_duration(void)
{
    CHECK_STR(progress_format_duration(0), "0 ms");
    CHECK_STR(progress_format_duration(0.85), "850 ms");
    CHECK_STR(progress_format_duration(1.234), "1.23 s");
    CHECK_STR(progress_format_duration(125), "2 min 05 s");
    CHECK_STR(progress_format_duration(3720), "1 h 02 min");
    CHECK_STR(progress_format_duration(-1), "-");
}

static void test_render(void)
{
    ProgressLine p = {
        .label = "active",
        .done = 1ull << 30,
        .total = 4ull << 30,
        .rate = 850.3e6,
        .eta = 3.5,
    };
    CHECK_STR(progress_render(&p, 100),
              "active [##########..............................]  25%  1.0 GiB / 4.0 GiB  "
              "850.3 MB/s  ETA 0:04");

    /* The bar shrinks to fit, then disappears, then the text is cut. */
    g_autofree char *mid = progress_render(&p, 70);
    g_assert_cmpuint(strlen(mid), <=, 70);
    g_assert_true(g_str_has_prefix(mid, "active [##"));
    g_assert_true(g_str_has_suffix(mid, "ETA 0:04"));
    g_autofree char *narrow = progress_render(&p, 60);
    g_assert_cmpstr(narrow, ==, "active  25%  1.0 GiB / 4.0 GiB  850.3 MB/s  ETA 0:04");
    g_autofree char *tiny = progress_render(&p, 10);
    g_assert_cmpstr(tiny, ==, "active  25");

    /* Done and over-done are 100%; unknown total: no bar, no percent, no ETA. */
    p.done = p.total;
    p.eta = 0;
    CHECK_STR(progress_render(&p, 60), "active 100%  4.0 GiB / 4.0 GiB  850.3 MB/s  ETA 0:00");
    p.done = p.total + 1;
    g_autofree char *over = progress_render(&p, 100);
    g_assert_nonnull(strstr(over, "[########################################] 100%"));
    ProgressLine u = { .label = "setup", .done = 4096, .rate = 0, .eta = -1 };
    CHECK_STR(progress_render(&u, 80), "setup 4.0 KiB");
    ProgressLine e = { .done = 0, .total = 100, .rate = 0, .eta = -1 };
    CHECK_STR(progress_render(&e, 40), "  0%  0 B / 100 B  ETA --:--");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/progress/bytes", test_bytes);
    g_test_add_func("/progress/rate", test_rate);
    g_test_add_func("/progress/eta", test_eta);
    g_test_add_func("/progress/duration", test_duration);
    g_test_add_func("/progress/render", test_render);
    return g_test_run();
}
