/* Planning a file: where each page area and the metadata go (docs/FORMAT.md 1, 4). */
#include "internal.h"

#include <inttypes.h>

bool format_plan_layout(uint64_t base, FormatBlock *blocks, unsigned n_blocks,
                        uint64_t *metadata_offset, GError **error)
{
    *metadata_offset = 0;
    if (!format_blocks_check(blocks, n_blocks, UINT64_MAX, error)) {
        return false;
    }
    /* 64 blocks of at most 16 TiB each, aligned: far below 2^63 unless base is huge. */
    if (base > UINT64_MAX / 2) {
        g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_INVALID,
                    "base offset %" PRIu64 " is too large", base);
        return false;
    }
    uint64_t end = base + FORMAT_HEADER_SIZE;
    for (unsigned i = 0; i < n_blocks; i++) {
        blocks[i].pages_offset = format_align_up(end, FORMAT_AREA_ALIGN);
        end = blocks[i].pages_offset + blocks[i].size;
    }
    /* Block sizes are whole pages, so the metadata starts right after the last area. */
    *metadata_offset = format_align_up(end, FORMAT_PAGE_SIZE);
    return true;
}
