/* format/xxh.c: each vector unit's XXH3 gives libxxhash's values, one-shot and
 * streamed in uneven pieces, at every length around XXH3's internal boundaries. */
#include <glib.h>
#include <string.h>
#include <xxhash.h>

#include "xxh.h"
#include "xxh_table.h"

static const size_t lengths[] = { 0,    1,    3,    4,     8,     9,      16,    17,
                                  128,  129,  240,  241,   255,   256,    1023,  1024,
                                  1025, 4096, 4097, 65536, 65599, 131072, 131079 };

static uint8_t *random_buffer(size_t len)
{
    uint8_t *b = g_malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)g_test_rand_int();
    return b;
}

static void check_table(const XxhTable *t)
{
    g_autofree uint8_t *buf = random_buffer(131079 + 64);
    for (size_t i = 0; i < G_N_ELEMENTS(lengths); i++) {
        size_t len = lengths[i];
        const uint8_t *p = buf + (i % 7); /* unaligned too */
        uint64_t seed = (uint64_t)g_test_rand_int() << 32 | (uint32_t)g_test_rand_int();
        g_assert_cmphex(t->hash(p, len), ==, XXH3_64bits(p, len));
        g_assert_cmphex(t->hash_seed(p, len, seed), ==, XXH3_64bits_withSeed(p, len, seed));
        void *st = t->new_state();
        g_assert_nonnull(st);
        t->reset_seed(st, seed);
        for (size_t off = 0; off < len;) {
            size_t piece = (size_t)g_test_rand_int_range(1, 5000); /* MIN() evaluates twice */
            size_t n = MIN(len - off, piece);
            t->update(st, p + off, n);
            off += n;
        }
        g_assert_cmphex(t->digest(st), ==, XXH3_64bits_withSeed(p, len, seed));
        t->free_state(st);
    }
}

static void test_sse2(void)
{
    check_table(&xxh_sse2);
}

static void test_avx2(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2")) {
        g_test_skip("this CPU has no AVX2");
        return;
    }
    check_table(&xxh_avx2);
#else
    g_test_skip("not x86-64");
#endif
}

/* The public calls: whichever unit they picked, libxxhash's values. */
static void test_public(void)
{
    g_autofree uint8_t *buf = random_buffer(4096 * 3);
    g_assert_cmphex(vs_xxh3(buf, 4096), ==, XXH3_64bits(buf, 4096));
    g_assert_cmphex(vs_xxh3_seed(buf, 4096, 42), ==, XXH3_64bits_withSeed(buf, 4096, 42));
    VsXxh3 *h = vs_xxh3_new();
    g_assert_cmphex(vs_xxh3_digest(h), ==, XXH3_64bits(NULL, 0));
    vs_xxh3_reset_seed(h, 7);
    vs_xxh3_update(h, buf, 100);
    vs_xxh3_update(h, buf + 100, 4096 * 3 - 100);
    g_assert_cmphex(vs_xxh3_digest(h), ==, XXH3_64bits_withSeed(buf, 4096 * 3, 7));
    vs_xxh3_free(h);
    const char *unit = vs_xxh3_unit();
    g_assert_true(strcmp(unit, "avx2") == 0 || strcmp(unit, "sse2") == 0);
    g_test_message("XXH3 unit: %s", unit);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/xxh/sse2-matches-libxxhash", test_sse2);
    g_test_add_func("/xxh/avx2-matches-libxxhash", test_avx2);
    g_test_add_func("/xxh/public", test_public);
    return g_test_run();
}
