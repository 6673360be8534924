/* XXH3 on SSE2, the x86-64 baseline (scalar elsewhere). */
#if defined(__x86_64__)
#define XXH_VECTOR 1 /* XXH_SSE2 */
#endif
#define XXH_IMPL_NAME xxh_sse2
#include "xxh_impl.h"
