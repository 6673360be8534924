#include "xxh.h"

#include "xxh_table.h"

#include <glib.h>
#include <string.h>

struct VsXxh3 {
    const XxhTable *t; /* the table that made the state, for its whole life */
    void *state;
};

static const XxhTable *pick(void)
{
#if defined(__x86_64__)
    const char *force = g_getenv("VMSNAP_XXH3");
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && !(force && strcmp(force, "sse2") == 0))
        return &xxh_avx2;
#endif
    return &xxh_sse2;
}

static const XxhTable *table(void)
{
    static const XxhTable *t;
    const XxhTable *cur = __atomic_load_n(&t, __ATOMIC_ACQUIRE);
    if (G_UNLIKELY(!cur)) {
        cur = pick(); /* the same answer on every thread */
        __atomic_store_n(&t, cur, __ATOMIC_RELEASE);
    }
    return cur;
}

uint64_t vs_xxh3(const void *data, size_t len)
{
    return table()->hash(data, len);
}

uint64_t vs_xxh3_seed(const void *data, size_t len, uint64_t seed)
{
    return table()->hash_seed(data, len, seed);
}

VsXxh3 *vs_xxh3_new(void)
{
    VsXxh3 *h = g_new(VsXxh3, 1);
    h->t = table();
    h->state = h->t->new_state();
    if (!h->state)
        g_error("out of memory for an XXH3 state");
    h->t->reset_seed(h->state, 0);
    return h;
}

void vs_xxh3_free(VsXxh3 *h)
{
    if (!h)
        return;
    h->t->free_state(h->state);
    g_free(h);
}

void vs_xxh3_reset_seed(VsXxh3 *h, uint64_t seed)
{
    h->t->reset_seed(h->state, seed);
}

void vs_xxh3_update(VsXxh3 *h, const void *data, size_t len)
{
    h->t->update(h->state, data, len);
}

uint64_t vs_xxh3_digest(const VsXxh3 *h)
{
    return h->t->digest(h->state);
}

const char *vs_xxh3_unit(void)
{
#if defined(__x86_64__)
    if (table() == &xxh_avx2)
        return "avx2";
#endif
    return "sse2";
}
