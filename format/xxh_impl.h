/* One XXH3 implementation, compiled per vector unit (xxh_sse2.c, xxh_avx2.c): the
 * including file defines XXH_VECTOR and XXH_IMPL_NAME. Everything is static inline
 * from xxhash.h (XXH_INLINE_ALL), so the two copies never meet at link time. */
#pragma once

#include "xxh_table.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

static uint64_t impl_hash(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

static uint64_t impl_hash_seed(const void *data, size_t len, uint64_t seed)
{
    return XXH3_64bits_withSeed(data, len, seed);
}

static void *impl_new(void)
{
    return XXH3_createState();
}

static void impl_free(void *state)
{
    XXH3_freeState(state);
}

static void impl_reset_seed(void *state, uint64_t seed)
{
    XXH3_64bits_reset_withSeed(state, seed);
}

static void impl_update(void *state, const void *data, size_t len)
{
    XXH3_64bits_update(state, data, len);
}

static uint64_t impl_digest(const void *state)
{
    return XXH3_64bits_digest(state);
}

const XxhTable XXH_IMPL_NAME = {
    impl_hash, impl_hash_seed, impl_new, impl_free, impl_reset_seed, impl_update, impl_digest,
};
