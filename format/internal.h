/* Declarations shared inside format/ (not for other areas). */
#pragma once

#include "format.h"
#include "le.h"

/* Byte offsets of the header fields (docs/FORMAT.md section 2). */
enum {
    HDR_MAGIC = 0,
    HDR_HEADER_SIZE = 8,
    HDR_FORMAT_VERSION = 12,
    HDR_WRITER_VERSION = 16,
    HDR_STATE = 20,
    HDR_COMPAT = 24,
    HDR_INCOMPAT = 32,
    HDR_SNAPSHOT_UUID = 40,
    HDR_VM_UUID = 56,
    HDR_CREATED_NS = 72,
    HDR_BASE_OFFSET = 80,
    HDR_FILE_SIZE = 88,
    HDR_METADATA_OFFSET = 96,
    HDR_METADATA_SIZE = 104,
    HDR_DIRECTORY_CHECKSUM = 112,
    HDR_DIRECTORY_ENTRIES = 120,
    HDR_PAGE_SIZE = 124,
    HDR_AREA_ALIGN = 128,
    HDR_RESERVED0 = 132,
    HDR_RAM_SIZE = 136,
    HDR_PRESENT_PAGES = 144,
    HDR_RESERVED1 = 152,
    HDR_CHECKSUM = 4088,
};
_Static_assert(HDR_VM_UUID == HDR_SNAPSHOT_UUID + 16, "uuids are 16 bytes");
_Static_assert(HDR_RESERVED0 + 4 == HDR_RAM_SIZE, "u32 reserved after area_align");
_Static_assert(HDR_RESERVED1 + 3936 == HDR_CHECKSUM, "reserved tail is 3936 bytes");
_Static_assert(HDR_CHECKSUM + 8 == FORMAT_HEADER_SIZE, "checksum is the last u64");

/* Directory entry (section 3.1). */
enum {
    DIR_TYPE = 0,
    DIR_VERSION = 4,
    DIR_INSTANCE = 8,
    DIR_FLAGS = 12,
    DIR_OFFSET = 16,
    DIR_SIZE = 24,
    DIR_CHECKSUM = 32,
    DIR_NAME = 40,
    DIR_NAME_SIZE = 24,
};
_Static_assert(DIR_NAME + DIR_NAME_SIZE == FORMAT_DIR_ENTRY_SIZE, "directory entry size");
_Static_assert(DIR_NAME_SIZE == FORMAT_SECTION_NAME_MAX + 1, "section name field");

/* RAM_BLOCKS payload (section 4.1): 8-byte head, then 64-byte entries. */
enum {
    RB_COUNT = 0,
    RB_RESERVED = 4,
    RB_ENTRIES = 8,
    RBE_NAME = 0,
    RBE_NAME_SIZE = 32,
    RBE_GPA = 32,
    RBE_SIZE = 40,
    RBE_PAGES_OFFSET = 48,
    RBE_PAGE_SIZE = 56,
    RBE_FLAGS = 60,
};
_Static_assert(RBE_FLAGS + 4 == FORMAT_BLOCK_ENTRY_SIZE, "block entry size");
_Static_assert(RBE_NAME_SIZE == FORMAT_BLOCK_NAME_MAX + 1, "block name field");

/* Names of sections and RAM blocks: [A-Za-z0-9_.-], at most `max` characters,
 * empty only when allow_empty. */
bool format_name_valid(const char *name, size_t max, bool allow_empty);

/* Copies a NUL-padded name field of `size` bytes to out[size]: there must be a
 * NUL, only zero bytes after it, and valid characters before it. On error returns
 * false with *why set to a static description. */
bool format_name_decode(const uint8_t *field, size_t size, char *out, bool allow_empty,
                        const char **why);

/* Stores name NUL-padded into field[size] (name already checked). */
void format_name_encode(uint8_t *field, size_t size, const char *name);

/* Checks each block's own rules (name, gpa and size alignment, size limit,
 * page_size, flags), unique names and non-overlapping guest-physical ranges.
 * Errors name the block; `table_offset` is the absolute offset of the RAM_BLOCKS
 * payload for error messages, or UINT64_MAX when there is none (planning). */
bool format_blocks_check(const FormatBlock *blocks, unsigned n, uint64_t table_offset,
                         GError **error);

/* Decodes a RAM_BLOCKS payload (count, reserved, entries) and runs
 * format_blocks_check(). Layout rules against the header are the caller's. */
bool format_ram_blocks_decode(const uint8_t *p, size_t len, uint64_t table_offset,
                              FormatBlock **blocks, unsigned *n, GError **error);

static inline uint64_t format_align_up(uint64_t v, uint64_t align)
{
    return (v + align - 1) / align * align;
}
