/*
 * The snapshot file format (docs/FORMAT.md): on-disk constants, encoders for
 * writers, and a validating parser for readers. Pure data code: no KVM, no
 * threads, no file descriptors (I/O goes through a callback), so it can be
 * fuzzed. Internal functions return bool and fill a GError naming the file
 * offset, section or field at fault.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* Error domain of this library. Errors from a FormatReadFn are passed through. */
#define FORMAT_ERROR (format_error_quark())
GQuark format_error_quark(void);

typedef enum {
    FORMAT_ERROR_NOT_SNAPSHOT, /* bad magic */
    FORMAT_ERROR_CORRUPT,      /* checksum mismatch, a value or layout rule broken */
    FORMAT_ERROR_UNSUPPORTED,  /* newer version, unknown incompat bit or required section */
    FORMAT_ERROR_PARTIAL,      /* state "PART" without FORMAT_OPEN_ALLOW_PARTIAL */
    FORMAT_ERROR_TRUNCATED,    /* the file is shorter than the snapshot says */
    FORMAT_ERROR_INVALID,      /* a writer's input breaks a rule (format_plan_layout) */
} FormatError;

#define FORMAT_MAGIC            "\x89VMSNAP\n"
#define FORMAT_MAGIC_LEN        8
#define FORMAT_HEADER_SIZE      4096u
#define FORMAT_VERSION          1u
#define FORMAT_STATE_PARTIAL    0x54524150u /* "PART" */
#define FORMAT_STATE_DONE       0x454E4F44u /* "DONE" */
#define FORMAT_PAGE_SIZE        4096u
#define FORMAT_AREA_ALIGN       (1u << 20)
#define FORMAT_DIR_ENTRY_SIZE   64u
#define FORMAT_BLOCK_ENTRY_SIZE 64u
#define FORMAT_MAX_BLOCKS       64u
#define FORMAT_MAX_SECTIONS     4096u
#define FORMAT_MAX_SECTION_SIZE (256ull << 20)
#define FORMAT_MAX_BLOCK_SIZE   (16ull << 40)
#define FORMAT_SECTION_NAME_MAX 23u /* + NUL in 24 bytes */
#define FORMAT_BLOCK_NAME_MAX   31u /* + NUL in 32 bytes */

/* Feature bits known to this reader (none in version 1). */
#define FORMAT_COMPAT_KNOWN   0ull
#define FORMAT_INCOMPAT_KNOWN 0ull

/* Directory entry flags. */
#define FORMAT_SECTION_FIELDS      (1u << 0)
#define FORMAT_SECTION_REQUIRED    (1u << 1)
#define FORMAT_SECTION_FLAGS_KNOWN (FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED)

/* On-disk section type IDs. When adding an ID, also update
 * format_section_type_name() and docs/FORMAT.md section 3.2. */
typedef enum {
    FORMAT_SECTION_CONFIG = 1,
    FORMAT_SECTION_DEVICE = 2,
    FORMAT_SECTION_RAM_BLOCKS = 3,
    FORMAT_SECTION_PRESENT_BITMAP = 4,
    FORMAT_SECTION_PAGE_CHECKSUMS = 5,
    FORMAT_SECTION_ZEROED_BITMAP = 6,
    FORMAT_SECTION_PARENT = 7,
    FORMAT_SECTION_WORKSET = 8,
} FormatSectionType;

/* "CONFIG", "DEVICE", ...; "unknown" for other values. */
const char *format_section_type_name(uint32_t type);

/* The header, decoded. */
typedef struct FormatHeader {
    uint32_t format_version;
    uint32_t writer_version;
    uint32_t state;
    uint64_t compat_features;
    uint64_t incompat_features;
    uint8_t snapshot_uuid[16];
    uint8_t vm_uuid[16];
    uint64_t created_ns;
    uint64_t base_offset;
    uint64_t file_size;
    uint64_t metadata_offset;
    uint64_t metadata_size;
    uint64_t directory_checksum;
    uint32_t directory_entries;
    uint32_t page_size;
    uint32_t area_align;
    uint64_t ram_size;
    uint64_t present_pages;
} FormatHeader;

/* Encodes h (magic, header_size and header_checksum are filled in) into 4096 bytes. */
void format_header_encode(const FormatHeader *h, uint8_t out[FORMAT_HEADER_SIZE]);

/* Decodes and checks a header read at absolute offset `at`: magic, checksum,
 * header_size, format_version, unknown incompat bits, reserved bytes, base_offset
 * == at, page_size, area_align. Does NOT refuse a partial header (the caller
 * decides). Errors name the field and its absolute offset. */
bool format_header_decode(const uint8_t in[FORMAT_HEADER_SIZE], uint64_t at, FormatHeader *h,
                          GError **error);

/* A directory entry, decoded. */
typedef struct FormatSection {
    uint32_t type;
    uint32_t version;
    uint32_t instance;
    uint32_t flags;
    uint64_t offset;
    uint64_t size;
    uint64_t checksum;
    char name[FORMAT_SECTION_NAME_MAX + 1];
} FormatSection;

/* A RAM block table entry, decoded. */
typedef struct FormatBlock {
    char name[FORMAT_BLOCK_NAME_MAX + 1];
    uint64_t gpa;
    uint64_t size;
    uint64_t pages_offset;
    uint32_t page_size;
    uint32_t flags;
} FormatBlock;

static inline uint64_t format_block_pages(const FormatBlock *b)
{
    return b->size / b->page_size;
}

/* Bitmap helpers: LE u64 words, bit i%64 of word i/64. */
static inline size_t format_bitmap_words(uint64_t pages)
{
    return (size_t)((pages + 63) / 64);
}

static inline bool format_bitmap_test(const uint64_t *words, uint64_t i)
{
    return (GUINT64_FROM_LE(words[i / 64]) >> (i % 64)) & 1;
}

/* ---- writers ---- */

/*
 * Plans a file: given blocks with name/gpa/size/page_size set, fills each
 * pages_offset (aligned to FORMAT_AREA_ALIGN, the first one at or after
 * base + FORMAT_HEADER_SIZE) and returns the metadata offset (4096-aligned, after
 * the last page area) in *metadata_offset. Checks names, sizes, overlaps and
 * limits. Returns false with an error.
 */
bool format_plan_layout(uint64_t base, FormatBlock *blocks, unsigned n_blocks,
                        uint64_t *metadata_offset, GError **error);

/* Encodes the RAM_BLOCKS payload. */
GBytes *format_ram_blocks_encode(const FormatBlock *blocks, unsigned n_blocks);

/* Builds the metadata region: a directory followed by 8-aligned payloads. */
typedef struct FormatMetaWriter FormatMetaWriter;

FormatMetaWriter *format_meta_new(uint64_t metadata_offset);
/* Adds a section; the payload is referenced (not copied) until finish; NULL is an
 * empty payload. Name is at most FORMAT_SECTION_NAME_MAX characters of
 * [A-Za-z0-9_.-], non-empty for DEVICE sections (NULL: ""). */
void format_meta_add(FormatMetaWriter *m, uint32_t type, uint32_t version, uint32_t instance,
                     uint32_t flags, const char *name, GBytes *payload);
/* Returns the encoded region (directory + payloads, payloads in the order added)
 * and sets the header fields metadata_offset, metadata_size, file_size,
 * directory_checksum and directory_entries of *h. Frees m. A misuse of
 * format_meta_add() (bad name, version 0, unknown flag, duplicate, over a limit)
 * was reported there with g_critical(); finish then returns NULL. */
GBytes *format_meta_finish(FormatMetaWriter *m, FormatHeader *h);
void format_meta_free(FormatMetaWriter *m);

/* ---- readers ---- */

/* Reads exactly `len` bytes at absolute `offset`; false with an error (including
 * a short read, which names the offset and the file size). The parser only asks
 * for ranges inside [base, disk_size) and passes the callback's errors through
 * unchanged, so they should name the file. */
typedef bool (*FormatReadFn)(void *opaque, uint64_t offset, void *buf, size_t len, GError **error);

typedef enum {
    FORMAT_OPEN_ALLOW_PARTIAL = 1 << 0,  /* inspect/verify: accept a "PART" header */
    FORMAT_OPEN_DROP_CHECKSUMS = 1 << 1, /* verify the checksum tables, then free them */
} FormatOpenFlags;

/* A parsed, validated snapshot. */
typedef struct FormatSnapshot {
    FormatHeader header;
    char *what;         /* file name for error messages */
    uint64_t disk_size; /* size of the file on disk */
    unsigned n_sections;
    FormatSection *sections; /* in directory order */
    GBytes **payloads;       /* per section, verified; NULL for dropped checksum tables */
    unsigned n_blocks;
    FormatBlock *blocks;
    /* Shortcuts into payloads (no extra references): */
    GBytes *config; /* CONFIG payload (fields) */
    uint32_t config_version;
    GBytes **present;   /* per block: PRESENT_BITMAP payload */
    GBytes **checksums; /* per block: PAGE_CHECKSUMS payload, NULL if dropped */
} FormatSnapshot;

/*
 * Reads and validates everything but the pages: the header (refusing "PART"
 * unless FORMAT_OPEN_ALLOW_PARTIAL, in which case n_sections is 0 for a partial
 * file), the directory and every section against their checksums, bounds of every
 * offset and size against the header and `disk_size`, the RAM block table rules,
 * the bitmaps' trailing bits, zero checksums of absent pages, and the presence of
 * the required sections. `what` names the file in errors. Returns NULL with an
 * error naming the file, offset, section or field.
 */
FormatSnapshot *format_snapshot_parse(FormatReadFn read, void *opaque, const char *what,
                                      uint64_t base, uint64_t disk_size, unsigned flags,
                                      GError **error);

/* Optional: returns `len` bytes at absolute `offset` without copying them (an mmap of
 * the page cache), or NULL with an error. Fresh memory is slow to touch on some hosts
 * and the page checksum tables are 2 MiB per GiB of RAM, so a reader that can map
 * them opens large snapshots several times faster. */
typedef GBytes *(*FormatMapFn)(void *opaque, uint64_t offset, size_t len, GError **error);

/* Same, but payloads of at least FORMAT_MAP_MIN bytes come from `map` when it is not
 * NULL (they are read-only). */
#define FORMAT_MAP_MIN (256u << 10)
FormatSnapshot *format_snapshot_parse_mapped(FormatReadFn read, FormatMapFn map, void *opaque,
                                             const char *what, uint64_t base, uint64_t disk_size,
                                             unsigned flags, GError **error);
void format_snapshot_free(FormatSnapshot *s);

/* The first section of this type/name/instance (name NULL: any), or NULL. */
const FormatSection *format_snapshot_find(const FormatSnapshot *s, uint32_t type, const char *name,
                                          uint32_t instance);

/* The verified payload of section index i (directory order), or NULL if dropped. */
static inline GBytes *format_snapshot_payload(const FormatSnapshot *s, unsigned i)
{
    return i < s->n_sections ? s->payloads[i] : NULL;
}

/* Number of present pages in block i. */
uint64_t format_snapshot_present_pages(const FormatSnapshot *s, unsigned block);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(FormatSnapshot, format_snapshot_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FormatMetaWriter, format_meta_free)
