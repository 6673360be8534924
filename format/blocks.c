/* The RAM block table (docs/FORMAT.md section 4.1): encoding and block rules. */
#include "internal.h"

#include <inttypes.h>

GBytes *format_ram_blocks_encode(const FormatBlock *blocks, unsigned n_blocks)
{
    size_t len = RB_ENTRIES + (size_t)n_blocks * FORMAT_BLOCK_ENTRY_SIZE;
    uint8_t *p = g_malloc0(len);
    le32_store(p + RB_COUNT, n_blocks);
    for (unsigned i = 0; i < n_blocks; i++) {
        const FormatBlock *b = &blocks[i];
        uint8_t *e = p + RB_ENTRIES + (size_t)i * FORMAT_BLOCK_ENTRY_SIZE;
        format_name_encode(e + RBE_NAME, RBE_NAME_SIZE, b->name);
        le64_store(e + RBE_GPA, b->gpa);
        le64_store(e + RBE_SIZE, b->size);
        le64_store(e + RBE_PAGES_OFFSET, b->pages_offset);
        le32_store(e + RBE_PAGE_SIZE, b->page_size);
        le32_store(e + RBE_FLAGS, b->flags);
    }
    return g_bytes_new_take(p, len);
}

static bool G_GNUC_PRINTF(5, 6) block_error(GError **error, const FormatBlock *b, unsigned i,
                                            uint64_t table_offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    int code = table_offset == UINT64_MAX ? FORMAT_ERROR_INVALID : FORMAT_ERROR_CORRUPT;
    if (table_offset == UINT64_MAX) {
        g_set_error(error, FORMAT_ERROR, code, "RAM block %u '%s': %s", i, b->name, msg);
    } else {
        g_set_error(error, FORMAT_ERROR, code,
                    "RAM block %u '%s' (entry at offset %" PRIu64 "): %s", i, b->name,
                    table_offset + RB_ENTRIES + (uint64_t)i * FORMAT_BLOCK_ENTRY_SIZE, msg);
    }
    return false;
}

bool format_blocks_check(const FormatBlock *blocks, unsigned n, uint64_t table_offset,
                         GError **error)
{
    int code = table_offset == UINT64_MAX ? FORMAT_ERROR_INVALID : FORMAT_ERROR_CORRUPT;
    if (n < 1 || n > FORMAT_MAX_BLOCKS) {
        g_set_error(error, FORMAT_ERROR, code, "%u RAM blocks, expected 1 to %u", n,
                    FORMAT_MAX_BLOCKS);
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        const FormatBlock *b = &blocks[i];
        if (!format_name_valid(b->name, FORMAT_BLOCK_NAME_MAX, false)) {
            return block_error(error, b, i, table_offset,
                               "invalid name (1 to %u characters of [A-Za-z0-9_.-])",
                               FORMAT_BLOCK_NAME_MAX);
        }
        if (b->page_size != FORMAT_PAGE_SIZE) {
            return block_error(error, b, i, table_offset, "page_size %u, expected %u", b->page_size,
                               FORMAT_PAGE_SIZE);
        }
        if (b->size == 0 || b->size % b->page_size != 0 || b->size > FORMAT_MAX_BLOCK_SIZE) {
            return block_error(error, b, i, table_offset,
                               "size %" PRIu64 " is not a non-zero multiple of %u up to %" PRIu64,
                               b->size, b->page_size, (uint64_t)FORMAT_MAX_BLOCK_SIZE);
        }
        if (b->gpa % b->page_size != 0 || b->gpa > UINT64_MAX - b->size) {
            return block_error(error, b, i, table_offset,
                               "gpa 0x%" PRIx64 " is not page aligned or the block wraps", b->gpa);
        }
        if (b->flags != 0) {
            return block_error(error, b, i, table_offset, "reserved flags 0x%x are not zero",
                               b->flags);
        }
        for (unsigned j = 0; j < i; j++) {
            const FormatBlock *o = &blocks[j];
            if (strcmp(o->name, b->name) == 0) {
                return block_error(error, b, i, table_offset, "same name as block %u", j);
            }
            if (b->gpa < o->gpa + o->size && o->gpa < b->gpa + b->size) {
                return block_error(error, b, i, table_offset,
                                   "guest-physical range [0x%" PRIx64 ", 0x%" PRIx64
                                   ") overlaps block %u '%s'",
                                   b->gpa, b->gpa + b->size, j, o->name);
            }
        }
    }
    return true;
}

bool format_ram_blocks_decode(const uint8_t *p, size_t len, uint64_t table_offset,
                              FormatBlock **blocks, unsigned *n, GError **error)
{
    *blocks = NULL;
    *n = 0;
    if (len < RB_ENTRIES) {
        g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                    "payload of %zu bytes is too small for the block count", len);
        return false;
    }
    uint32_t count = le32_load(p + RB_COUNT);
    if (count < 1 || count > FORMAT_MAX_BLOCKS) {
        g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                    "count at offset %" PRIu64 " is %u, expected 1 to %u", table_offset + RB_COUNT,
                    count, FORMAT_MAX_BLOCKS);
        return false;
    }
    if (le32_load(p + RB_RESERVED) != 0) {
        g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                    "reserved field at offset %" PRIu64 " is not zero", table_offset + RB_RESERVED);
        return false;
    }
    size_t expect = RB_ENTRIES + (size_t)count * FORMAT_BLOCK_ENTRY_SIZE;
    if (len != expect) {
        g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                    "payload is %zu bytes, %u blocks need %zu", len, count, expect);
        return false;
    }
    g_autofree FormatBlock *out = g_new0(FormatBlock, count);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = p + RB_ENTRIES + (size_t)i * FORMAT_BLOCK_ENTRY_SIZE;
        FormatBlock *b = &out[i];
        const char *why = NULL;
        if (!format_name_decode(e + RBE_NAME, RBE_NAME_SIZE, b->name, false, &why)) {
            g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                        "RAM block %u (entry at offset %" PRIu64 "): %s", i,
                        table_offset + (uint64_t)(e - p), why);
            return false;
        }
        b->gpa = le64_load(e + RBE_GPA);
        b->size = le64_load(e + RBE_SIZE);
        b->pages_offset = le64_load(e + RBE_PAGES_OFFSET);
        b->page_size = le32_load(e + RBE_PAGE_SIZE);
        b->flags = le32_load(e + RBE_FLAGS);
    }
    if (!format_blocks_check(out, count, table_offset, error)) {
        return false;
    }
    *blocks = g_steal_pointer(&out);
    *n = count;
    return true;
}
