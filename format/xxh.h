/*
 * XXH3-64 on the widest vector unit this CPU has. Debian's libxxhash is built for
 * the x86-64 baseline (SSE2): 8 GB/s on a 128 KiB buffer here, against 28-31 GB/s
 * with AVX2. Page checksums are on every save, restore and migration path, so the
 * hot ones call these; the values are XXH3's, whichever unit computes them.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct VsXxh3 VsXxh3;

uint64_t vs_xxh3(const void *data, size_t len);
uint64_t vs_xxh3_seed(const void *data, size_t len, uint64_t seed);

/* Streaming: new (aborts on out-of-memory, like g_new), reset, update, digest. */
VsXxh3 *vs_xxh3_new(void);
void vs_xxh3_free(VsXxh3 *h);
void vs_xxh3_reset_seed(VsXxh3 *h, uint64_t seed);
void vs_xxh3_update(VsXxh3 *h, const void *data, size_t len);
uint64_t vs_xxh3_digest(const VsXxh3 *h);

/* The unit in use: "avx2" or "sse2" (VMSNAP_XXH3=sse2 in the environment forces
 * the baseline, to compare). */
const char *vs_xxh3_unit(void);
