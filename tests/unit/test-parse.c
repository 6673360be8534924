/* Size and number parsing shared by the CLI. */
#include "parse.h"

static void check_size(const char *text, uint64_t unit, uint64_t expect)
{
    g_autoptr(GError) error = NULL;
    uint64_t v = 0;
    g_assert_true(parse_size(text, unit, &v, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(v, ==, expect);
}

static void check_bad_size(const char *text, const char *needle)
{
    g_autoptr(GError) error = NULL;
    uint64_t v = 0;
    g_assert_false(parse_size(text, 1, &v, &error));
    g_assert_nonnull(error);
    g_assert_nonnull(strstr(error->message, needle));
}

static void test_sizes(void)
{
    check_size("4096", 1, 4096);
    check_size("256", 1 << 20, 256ull << 20);
    check_size("256M", 1, 256ull << 20);
    check_size("256m", 1, 256ull << 20);
    check_size("4G", 1, 4ull << 30);
    check_size("4GiB", 1, 4ull << 30);
    check_size("4GB", 1, 4ull << 30);
    check_size("1.5G", 1, 3ull << 29);
    check_size("0.5K", 1, 512);
    check_size("512K", 1 << 20, 512ull << 10);
    check_size("2T", 1, 2ull << 40);
    check_size("100B", 1 << 20, 100);
}

static void test_bad_sizes(void)
{
    check_bad_size("", "expected a number");
    check_bad_size("M", "expected a number");
    check_bad_size("-1G", "expected a number");
    check_bad_size("12Q", "unknown suffix");
    check_bad_size("1Gx", "unexpected characters");
    check_bad_size("1.", "expected digits after '.'");
    check_bad_size("0.3B", "not a whole number of bytes");
    check_bad_size("99999999999999999999", "too large");
    check_bad_size("17179869184G", "too large");
    check_bad_size("1.1234567G", "too many decimal places");
}

static void test_uint(void)
{
    g_autoptr(GError) error = NULL;
    uint64_t v;
    g_assert_true(parse_uint("7", "--cpus", 1, 32, &v, &error));
    g_assert_cmpuint(v, ==, 7);
    g_assert_false(parse_uint("0", "--cpus", 1, 32, &v, &error));
    g_assert_nonnull(strstr(error->message, "--cpus: '0' is not a whole number from 1 to 32"));
    g_clear_error(&error);
    g_assert_false(parse_uint("3x", "--cpus", 1, 32, &v, &error));
    g_clear_error(&error);
    g_assert_false(parse_uint("", "--cpus", 1, 32, &v, &error));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/parse/sizes", test_sizes);
    g_test_add_func("/parse/bad-sizes", test_bad_sizes);
    g_test_add_func("/parse/uint", test_uint);
    return g_test_run();
}
