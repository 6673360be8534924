/* The 4096-byte file header and commit record (docs/FORMAT.md section 2). */
#include "internal.h"

#include <inttypes.h>
#include <xxhash.h>

void format_header_encode(const FormatHeader *h, uint8_t out[FORMAT_HEADER_SIZE])
{
    memset(out, 0, FORMAT_HEADER_SIZE);
    memcpy(out + HDR_MAGIC, FORMAT_MAGIC, FORMAT_MAGIC_LEN);
    le32_store(out + HDR_HEADER_SIZE, FORMAT_HEADER_SIZE);
    le32_store(out + HDR_FORMAT_VERSION, h->format_version);
    le32_store(out + HDR_WRITER_VERSION, h->writer_version);
    le32_store(out + HDR_STATE, h->state);
    le64_store(out + HDR_COMPAT, h->compat_features);
    le64_store(out + HDR_INCOMPAT, h->incompat_features);
    memcpy(out + HDR_SNAPSHOT_UUID, h->snapshot_uuid, 16);
    memcpy(out + HDR_VM_UUID, h->vm_uuid, 16);
    le64_store(out + HDR_CREATED_NS, h->created_ns);
    le64_store(out + HDR_BASE_OFFSET, h->base_offset);
    le64_store(out + HDR_FILE_SIZE, h->file_size);
    le64_store(out + HDR_METADATA_OFFSET, h->metadata_offset);
    le64_store(out + HDR_METADATA_SIZE, h->metadata_size);
    le64_store(out + HDR_DIRECTORY_CHECKSUM, h->directory_checksum);
    le32_store(out + HDR_DIRECTORY_ENTRIES, h->directory_entries);
    le32_store(out + HDR_PAGE_SIZE, h->page_size);
    le32_store(out + HDR_AREA_ALIGN, h->area_align);
    le64_store(out + HDR_RAM_SIZE, h->ram_size);
    le64_store(out + HDR_PRESENT_PAGES, h->present_pages);
    le64_store(out + HDR_CHECKSUM, XXH3_64bits(out, HDR_CHECKSUM));
}

static bool G_GNUC_PRINTF(4, 5)
    header_error(GError **error, int code, uint64_t at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, FORMAT_ERROR, code, "header at offset %" PRIu64 ": %s", at, msg);
    return false;
}

/* Field `name` at header offset `off` must be zero (partial header). */
static bool zero_in_partial(uint64_t v, const char *name, unsigned off, uint64_t at, GError **error)
{
    if (v == 0) {
        return true;
    }
    return header_error(error, FORMAT_ERROR_CORRUPT, at,
                        "%s at offset %" PRIu64 " is %" PRIu64 ", must be 0 in a partial header",
                        name, at + off, v);
}

/* Internal consistency of the sizes and offsets, without the file size. */
static bool check_layout(const FormatHeader *h, uint64_t at, GError **error)
{
    const uint64_t end_of_header = at + FORMAT_HEADER_SIZE;
    const uint64_t max_ram = (uint64_t)FORMAT_MAX_BLOCKS * FORMAT_MAX_BLOCK_SIZE;

    if (h->ram_size == 0 || h->ram_size % h->page_size != 0 || h->ram_size > max_ram) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "ram_size at offset %" PRIu64 " is %" PRIu64
                            ", expected a non-zero multiple of page_size up to %" PRIu64,
                            at + HDR_RAM_SIZE, h->ram_size, max_ram);
    }
    if (h->present_pages > h->ram_size / h->page_size) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "present_pages at offset %" PRIu64 " is %" PRIu64
                            ", more than the %" PRIu64 " pages of RAM",
                            at + HDR_PRESENT_PAGES, h->present_pages, h->ram_size / h->page_size);
    }
    if (h->state == FORMAT_STATE_PARTIAL) {
        /* Only the planned end of the page areas is known (section 2). */
        if (!zero_in_partial(h->metadata_offset, "metadata_offset", HDR_METADATA_OFFSET, at,
                             error) ||
            !zero_in_partial(h->metadata_size, "metadata_size", HDR_METADATA_SIZE, at, error) ||
            !zero_in_partial(h->directory_checksum, "directory_checksum", HDR_DIRECTORY_CHECKSUM,
                             at, error) ||
            !zero_in_partial(h->directory_entries, "directory_entries", HDR_DIRECTORY_ENTRIES, at,
                             error) ||
            !zero_in_partial(h->present_pages, "present_pages", HDR_PRESENT_PAGES, at, error)) {
            return false;
        }
        if (h->file_size % FORMAT_PAGE_SIZE != 0 || h->file_size < end_of_header ||
            h->file_size - end_of_header < h->ram_size) {
            return header_error(error, FORMAT_ERROR_CORRUPT, at,
                                "file_size at offset %" PRIu64 " is %" PRIu64
                                ", not a 4096-aligned end of the page areas",
                                at + HDR_FILE_SIZE, h->file_size);
        }
        return true;
    }

    if (h->directory_entries < 1 || h->directory_entries > FORMAT_MAX_SECTIONS) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "directory_entries at offset %" PRIu64 " is %u, expected 1 to %u",
                            at + HDR_DIRECTORY_ENTRIES, h->directory_entries, FORMAT_MAX_SECTIONS);
    }
    /* Page areas (ram_size bytes at least) lie between the header and the metadata. */
    if (h->metadata_offset % FORMAT_PAGE_SIZE != 0 || h->metadata_offset < end_of_header ||
        h->metadata_offset - end_of_header < h->ram_size) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "metadata_offset at offset %" PRIu64 " is %" PRIu64
                            ", not a 4096-aligned offset after the header and %" PRIu64
                            " bytes of RAM",
                            at + HDR_METADATA_OFFSET, h->metadata_offset, h->ram_size);
    }
    uint64_t dir_size = (uint64_t)h->directory_entries * FORMAT_DIR_ENTRY_SIZE;
    if (h->metadata_size < dir_size || h->metadata_size > UINT64_MAX - h->metadata_offset ||
        h->metadata_offset + h->metadata_size != h->file_size) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "metadata_size at offset %" PRIu64 " is %" PRIu64
                            ": the metadata must hold the %" PRIu64
                            "-byte directory and end at file_size %" PRIu64,
                            at + HDR_METADATA_SIZE, h->metadata_size, dir_size, h->file_size);
    }
    return true;
}

bool format_header_decode(const uint8_t in[FORMAT_HEADER_SIZE], uint64_t at, FormatHeader *h,
                          GError **error)
{
    memset(h, 0, sizeof(*h));
    if (memcmp(in + HDR_MAGIC, FORMAT_MAGIC, FORMAT_MAGIC_LEN) != 0) {
        return header_error(error, FORMAT_ERROR_NOT_SNAPSHOT, at,
                            "not a vmsnap snapshot (bad magic)");
    }
    uint64_t stored = le64_load(in + HDR_CHECKSUM);
    uint64_t computed = XXH3_64bits(in, HDR_CHECKSUM);
    if (stored != computed) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "header_checksum mismatch (stored 0x%016" PRIx64
                            ", computed 0x%016" PRIx64 ")",
                            stored, computed);
    }
    uint32_t header_size = le32_load(in + HDR_HEADER_SIZE);
    if (header_size != FORMAT_HEADER_SIZE) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "header_size at offset %" PRIu64 " is %u, expected %u",
                            at + HDR_HEADER_SIZE, header_size, FORMAT_HEADER_SIZE);
    }
    h->format_version = le32_load(in + HDR_FORMAT_VERSION);
    if (h->format_version != FORMAT_VERSION) {
        return header_error(error, FORMAT_ERROR_UNSUPPORTED, at,
                            "format_version at offset %" PRIu64
                            " is %u, this vmsnap reads version %u",
                            at + HDR_FORMAT_VERSION, h->format_version, FORMAT_VERSION);
    }
    h->incompat_features = le64_load(in + HDR_INCOMPAT);
    uint64_t unknown = h->incompat_features & ~FORMAT_INCOMPAT_KNOWN;
    if (unknown != 0) {
        return header_error(error, FORMAT_ERROR_UNSUPPORTED, at,
                            "incompatible feature bits 0x%" PRIx64
                            " unknown to this vmsnap%s (incompat_features at offset %" PRIu64 ")",
                            unknown, (unknown & 1) ? " (bit 0: DELTA, incremental snapshots)" : "",
                            at + HDR_INCOMPAT);
    }
    h->state = le32_load(in + HDR_STATE);
    if (h->state != FORMAT_STATE_PARTIAL && h->state != FORMAT_STATE_DONE) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "state at offset %" PRIu64 " is 0x%08x, expected \"PART\" or \"DONE\"",
                            at + HDR_STATE, h->state);
    }
    for (unsigned i = HDR_RESERVED0; i < HDR_CHECKSUM; i++) {
        if (i == HDR_RAM_SIZE) {
            i = HDR_RESERVED1; /* skip ram_size and present_pages */
        }
        if (in[i] != 0) {
            return header_error(error, FORMAT_ERROR_CORRUPT, at,
                                "reserved byte at offset %" PRIu64 " is 0x%02x, must be zero",
                                at + i, in[i]);
        }
    }
    h->base_offset = le64_load(in + HDR_BASE_OFFSET);
    if (h->base_offset != at) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at,
                            "base_offset at offset %" PRIu64 " is %" PRIu64
                            ", but the header was read at offset %" PRIu64,
                            at + HDR_BASE_OFFSET, h->base_offset, at);
    }
    if (at > UINT64_MAX - FORMAT_AREA_ALIGN * 2ull) {
        return header_error(error, FORMAT_ERROR_CORRUPT, at, "base_offset is too large");
    }
    h->page_size = le32_load(in + HDR_PAGE_SIZE);
    if (h->page_size != FORMAT_PAGE_SIZE) {
        return header_error(error, FORMAT_ERROR_UNSUPPORTED, at,
                            "page_size at offset %" PRIu64 " is %u, this vmsnap supports %u",
                            at + HDR_PAGE_SIZE, h->page_size, FORMAT_PAGE_SIZE);
    }
    h->area_align = le32_load(in + HDR_AREA_ALIGN);
    if (h->area_align != FORMAT_AREA_ALIGN) {
        return header_error(error, FORMAT_ERROR_UNSUPPORTED, at,
                            "area_align at offset %" PRIu64 " is %u, expected %u for 4 KiB pages",
                            at + HDR_AREA_ALIGN, h->area_align, FORMAT_AREA_ALIGN);
    }
    h->writer_version = le32_load(in + HDR_WRITER_VERSION);
    h->compat_features = le64_load(in + HDR_COMPAT);
    memcpy(h->snapshot_uuid, in + HDR_SNAPSHOT_UUID, 16);
    memcpy(h->vm_uuid, in + HDR_VM_UUID, 16);
    h->created_ns = le64_load(in + HDR_CREATED_NS);
    h->file_size = le64_load(in + HDR_FILE_SIZE);
    h->metadata_offset = le64_load(in + HDR_METADATA_OFFSET);
    h->metadata_size = le64_load(in + HDR_METADATA_SIZE);
    h->directory_checksum = le64_load(in + HDR_DIRECTORY_CHECKSUM);
    h->directory_entries = le32_load(in + HDR_DIRECTORY_ENTRIES);
    h->ram_size = le64_load(in + HDR_RAM_SIZE);
    h->present_pages = le64_load(in + HDR_PRESENT_PAGES);
    return check_layout(h, at, error);
}
