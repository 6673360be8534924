/* XXH3 on AVX2: this file alone is built with -mavx2 (format/meson.build), and
 * xxh.c calls it only when the CPU has AVX2. */
#define XXH_VECTOR    2 /* XXH_AVX2 */
#define XXH_IMPL_NAME xxh_avx2
#include "xxh_impl.h"
