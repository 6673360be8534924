/* The XXH3 implementations behind xxh.h, one per vector unit (internal). */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct XxhTable {
    uint64_t (*hash)(const void *data, size_t len);
    uint64_t (*hash_seed)(const void *data, size_t len, uint64_t seed);
    void *(*new_state)(void);
    void (*free_state)(void *state);
    void (*reset_seed)(void *state, uint64_t seed);
    void (*update)(void *state, const void *data, size_t len);
    uint64_t (*digest)(const void *state);
} XxhTable;

extern const XxhTable xxh_sse2;
#if defined(__x86_64__)
extern const XxhTable xxh_avx2; /* only where the CPU has AVX2 */
#endif
