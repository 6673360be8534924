/* Filling never-touched memory with UFFDIO_COPY (migration/fresh_fill.c): data lands,
 * pages already present are written anyway, stray touches read zero instead of
 * hanging, untouched pages read zero once the fill ends. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fresh_fill.h"

#define PAGE  4096u
#define PAGES 64u

typedef struct Area {
    VmsnapRamBlock block;
    uint8_t *src; /* PAGES pages of a pattern */
} Area;

static void area_init(Area *a)
{
    memset(a, 0, sizeof(*a));
    void *p = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert_true(p != MAP_FAILED);
    g_strlcpy(a->block.name, "ram", sizeof(a->block.name));
    a->block.size = (uint64_t)PAGES * PAGE;
    a->block.page_size = PAGE;
    a->block.host = p;
    a->block.backing_fd = -1;
    a->src = g_malloc(PAGES * PAGE);
    for (unsigned i = 0; i < PAGES * PAGE; i++)
        a->src[i] = (uint8_t)(i / PAGE * 7 + i % 251 + 1);
}

static void area_free(Area *a)
{
    munmap(a->block.host, a->block.size);
    g_free(a->src);
}

/* Sets up `a` and opens a fill over it; NULL, `a` freed and the test skipped when
 * this kernel or sandbox has no userfaultfd. */
static FreshFill *open_or_skip(Area *a)
{
    area_init(a);
    g_autoptr(GError) why = NULL;
    FreshFill *f = fresh_fill_new(&a->block, 1, &why);
    if (!f) {
        g_autofree char *msg = g_strdup_printf("userfaultfd unavailable: %s", why->message);
        g_test_skip(msg);
        area_free(a);
    }
    return f;
}

static bool page_is_zero(const uint8_t *p)
{
    for (unsigned i = 0; i < PAGE; i++)
        if (p[i])
            return false;
    return true;
}

static void test_copy_runs(void)
{
    Area a;
    FreshFill *f = open_or_skip(&a);
    if (!f)
        return;
    uint8_t *host = a.block.host;
    g_autoptr(GError) error = NULL;
    /* pages 2-9 in one call, 20 alone, 40-63 in one call; the rest never written */
    g_assert_true(fresh_fill_copy(f, host + 2 * PAGE, a.src + 2 * PAGE, 8 * PAGE, &error));
    g_assert_true(fresh_fill_copy(f, host + 20 * PAGE, a.src + 20 * PAGE, PAGE, &error));
    g_assert_true(fresh_fill_copy(f, host + 40 * PAGE, a.src + 40 * PAGE, 24 * PAGE, &error));
    g_assert_no_error(error);
    uint64_t copied, present, stray;
    fresh_fill_stats(f, &copied, &present, &stray);
    g_assert_cmpuint(copied, ==, 33);
    g_assert_cmpuint(present, ==, 0);
    g_assert_cmpuint(stray, ==, 0);
    fresh_fill_free(f);
    for (unsigned i = 0; i < PAGES; i++) {
        bool filled = (i >= 2 && i < 10) || i == 20 || i >= 40;
        if (filled)
            g_assert_cmpmem(host + i * PAGE, PAGE, a.src + i * PAGE, PAGE);
        else
            g_assert_true(page_is_zero(host + i * PAGE));
    }
    area_free(&a);
}

/* A run over pages some of which are present: those are written by memcpy, the
 * others still by UFFDIO_COPY, and every page ends with the new data. */
static void test_present_pages(void)
{
    Area a;
    FreshFill *f = open_or_skip(&a);
    if (!f)
        return;
    uint8_t *host = a.block.host;
    g_autoptr(GError) error = NULL;
    g_assert_true(fresh_fill_copy(f, host + 4 * PAGE, a.src, PAGE, &error));
    g_assert_true(fresh_fill_copy(f, host + 6 * PAGE, a.src, 2 * PAGE, &error));
    /* pages 3..10 again: 4, 6 and 7 are present now */
    g_assert_true(fresh_fill_copy(f, host + 3 * PAGE, a.src + 3 * PAGE, 8 * PAGE, &error));
    g_assert_no_error(error);
    uint64_t copied, present, stray;
    fresh_fill_stats(f, &copied, &present, &stray);
    g_assert_cmpuint(present, ==, 3);
    g_assert_cmpuint(copied, ==, 3 + 5);
    fresh_fill_free(f);
    g_assert_cmpmem(host + 3 * PAGE, 8 * PAGE, a.src + 3 * PAGE, 8 * PAGE);
    area_free(&a);
}

/* Reading or writing a page the fill has not written does not hang: the helper
 * maps the zero page; a later copy to it lands by memcpy. */
static void test_stray_touch(void)
{
    Area a;
    FreshFill *f = open_or_skip(&a);
    if (!f)
        return;
    volatile uint8_t *host = a.block.host;
    g_assert_cmpuint(host[5 * PAGE + 17], ==, 0); /* read: the zero page */
    host[9 * PAGE] = 0x5a;                        /* write: zero page, then its copy */
    g_assert_cmpuint(host[9 * PAGE], ==, 0x5a);
    uint64_t copied, present, stray;
    fresh_fill_stats(f, &copied, &present, &stray);
    g_assert_cmpuint(stray, ==, 2);
    g_autoptr(GError) error = NULL;
    g_assert_true(fresh_fill_copy(f, a.block.host + 4 * PAGE, a.src, 2 * PAGE, &error));
    g_assert_no_error(error);
    fresh_fill_stats(f, &copied, &present, &stray);
    g_assert_cmpuint(copied, ==, 1);
    g_assert_cmpuint(present, ==, 1);
    fresh_fill_free(f);
    g_assert_cmpmem(a.block.host + 4 * PAGE, 2 * PAGE, a.src, 2 * PAGE);
    g_assert_cmpuint(host[9 * PAGE], ==, 0x5a);
    area_free(&a);
}

/* A block that is not page-aligned is refused, the step named, nothing left
 * registered (its memory is used normally afterwards). */
static void test_refuses_unaligned(void)
{
    Area a;
    area_init(&a);
    VmsnapRamBlock odd = a.block;
    odd.host += 512;
    odd.size -= PAGE;
    g_autoptr(GError) why = NULL;
    FreshFill *f = fresh_fill_new(&odd, 1, &why);
    g_assert_null(f);
    g_assert_nonnull(why);
    if (!strstr(why->message, "UFFDIO_REGISTER"))
        g_test_message("refused before registering: %s", why->message);
    g_assert_true(g_str_has_prefix(why->message, "fresh fill: "));
    a.block.host[0] = 1; /* would hang if the block stayed registered */
    g_assert_cmpuint(a.block.host[0], ==, 1);
    area_free(&a);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/fresh-fill/copy-runs", test_copy_runs);
    g_test_add_func("/fresh-fill/present-pages", test_present_pages);
    g_test_add_func("/fresh-fill/stray-touch", test_stray_touch);
    g_test_add_func("/fresh-fill/refuses-unaligned", test_refuses_unaligned);
    return g_test_run();
}
