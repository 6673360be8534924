/*
 * Section rules by type (docs/FORMAT.md sections 3.2 and 4): which sections a
 * version 1 full snapshot has, their flags and versions, the RAM block table
 * against the header, and the per-block bitmaps and checksum tables.
 */
#include "parse.h"

#include <inttypes.h>
#include <vmsnap/fields.h>

#define FIELDS_REQUIRED (FORMAT_SECTION_FIELDS | FORMAT_SECTION_REQUIRED)

/* Flags, instance and version of a known section type, as the table in 3.2 says. */
static bool check_known(Parser *p, unsigned i, uint32_t flags, bool instance0, bool version1,
                        GError **error)
{
    const FormatSection *sec = &p->s->sections[i];
    if (sec->flags != flags) {
        return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT, "flags 0x%x, expected 0x%x",
                                   sec->flags, flags);
    }
    if (instance0 && sec->instance != 0) {
        return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT, "instance %u, expected 0",
                                   sec->instance);
    }
    if (version1 && sec->version != 1) {
        return parse_section_error(p, i, error, FORMAT_ERROR_UNSUPPORTED,
                                   "version %u, this vmsnap reads version 1", sec->version);
    }
    return true;
}

bool parse_check_types(Parser *p, GError **error)
{
    FormatSnapshot *s = p->s;
    int config = -1, ram_blocks = -1;

    for (unsigned i = 0; i < s->n_sections; i++) {
        const FormatSection *sec = &s->sections[i];
        const char *tn = format_section_type_name(sec->type);
        bool ok = true;
        switch ((FormatSectionType)sec->type) {
        case FORMAT_SECTION_CONFIG:
            ok = check_known(p, i, FIELDS_REQUIRED, true, false, error);
            if (ok && config >= 0) {
                return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT,
                                           "a second CONFIG section (the first is directory "
                                           "entry %d)",
                                           config);
            }
            config = (int)i;
            break;
        case FORMAT_SECTION_DEVICE:
            ok = check_known(p, i, FIELDS_REQUIRED, false, false, error);
            break;
        case FORMAT_SECTION_RAM_BLOCKS:
            ok = check_known(p, i, FORMAT_SECTION_REQUIRED, true, true, error);
            if (ok && ram_blocks >= 0) {
                return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT,
                                           "a second RAM_BLOCKS section (the first is "
                                           "directory entry %d)",
                                           ram_blocks);
            }
            ram_blocks = (int)i;
            break;
        case FORMAT_SECTION_PRESENT_BITMAP:
        case FORMAT_SECTION_PAGE_CHECKSUMS:
            ok = check_known(p, i, FORMAT_SECTION_REQUIRED, false, true, error);
            break;
        case FORMAT_SECTION_ZEROED_BITMAP:
        case FORMAT_SECTION_PARENT:
            return parse_section_error(p, i, error, FORMAT_ERROR_UNSUPPORTED,
                                       "%s sections belong to incremental snapshots (incompat "
                                       "bit DELTA), which this vmsnap does not read",
                                       tn);
        case FORMAT_SECTION_WORKSET:
        default:
            /* Not understood by this reader: ignored unless the writer requires it. */
            if (sec->flags & FORMAT_SECTION_REQUIRED) {
                return parse_section_error(p, i, error, FORMAT_ERROR_UNSUPPORTED,
                                           "section type %u (%s) is required by the file but "
                                           "unknown to this vmsnap",
                                           sec->type, tn);
            }
            break;
        }
        if (!ok) {
            return false;
        }
    }
    if (config < 0) {
        return parse_error(p, error, FORMAT_ERROR_CORRUPT, "no CONFIG section");
    }
    if (ram_blocks < 0) {
        return parse_error(p, error, FORMAT_ERROR_CORRUPT, "no RAM_BLOCKS section");
    }
    s->config_version = s->sections[config].version;
    return true;
}

/* Page areas against the header: aligned, between the header and the metadata,
 * not overlapping, and adding up to ram_size. */
static bool check_areas(Parser *p, unsigned sec, GError **error)
{
    const FormatSnapshot *s = p->s;
    const FormatHeader *h = &s->header;
    uint64_t total = 0;
    for (unsigned i = 0; i < s->n_blocks; i++) {
        const FormatBlock *b = &s->blocks[i];
        if (b->pages_offset % h->area_align != 0 ||
            b->pages_offset < h->base_offset + FORMAT_HEADER_SIZE ||
            b->pages_offset > h->metadata_offset ||
            b->size > h->metadata_offset - b->pages_offset) {
            return parse_section_error(p, sec, error, FORMAT_ERROR_CORRUPT,
                                       "RAM block %u '%s': page area [%" PRIu64 ", +%" PRIu64
                                       ") is not a multiple of %u between the header end %" PRIu64
                                       " and the metadata at %" PRIu64,
                                       i, b->name, b->pages_offset, b->size, h->area_align,
                                       h->base_offset + FORMAT_HEADER_SIZE, h->metadata_offset);
        }
        for (unsigned j = 0; j < i; j++) {
            const FormatBlock *o = &s->blocks[j];
            if (b->pages_offset < o->pages_offset + o->size &&
                o->pages_offset < b->pages_offset + b->size) {
                return parse_section_error(p, sec, error, FORMAT_ERROR_CORRUPT,
                                           "RAM block %u '%s': page area at %" PRIu64
                                           " overlaps the page area of block %u '%s'",
                                           i, b->name, b->pages_offset, j, o->name);
            }
        }
        total += b->size; /* at most 64 * 16 TiB: no overflow */
    }
    if (total != h->ram_size) {
        return parse_section_error(p, sec, error, FORMAT_ERROR_CORRUPT,
                                   "the blocks add up to %" PRIu64
                                   " bytes, the header's ram_size is %" PRIu64,
                                   total, h->ram_size);
    }
    return true;
}

/* A PRESENT_BITMAP payload: its size, no bits past the last page; counts pages. */
static bool check_bitmap(Parser *p, unsigned sec, const FormatBlock *b, uint64_t *present,
                         GError **error)
{
    uint64_t pages = format_block_pages(b);
    size_t words = format_bitmap_words(pages);
    gsize size;
    const uint8_t *data = g_bytes_get_data(p->s->payloads[sec], &size);
    if (size != words * 8) {
        return parse_section_error(p, sec, error, FORMAT_ERROR_CORRUPT,
                                   "bitmap of %zu bytes, block '%s' of %" PRIu64 " pages needs %zu",
                                   (size_t)size, b->name, pages, words * 8);
    }
    uint64_t count = 0;
    for (size_t w = 0; w < words; w++) {
        count += (uint64_t)__builtin_popcountll(le64_load(data + w * 8));
    }
    if (pages % 64 != 0) {
        uint64_t last = le64_load(data + (words - 1) * 8);
        uint64_t extra = last >> (pages % 64);
        if (extra != 0) {
            return parse_section_error(
                p, sec, error, FORMAT_ERROR_CORRUPT,
                "bit %" PRIu64 " is set, past the last page %" PRIu64,
                (words - 1) * 64 + pages % 64 + (uint64_t)__builtin_ctzll(extra), pages - 1);
        }
    }
    *present += count;
    return true;
}

/* A PAGE_CHECKSUMS payload: its size, and 0 for every absent page. */
static bool check_checksums(Parser *p, unsigned sec, unsigned bsec, const FormatBlock *b,
                            GError **error)
{
    uint64_t pages = format_block_pages(b);
    gsize size;
    const uint8_t *sums = g_bytes_get_data(p->s->payloads[sec], &size);
    const uint8_t *bits = g_bytes_get_data(p->s->payloads[bsec], NULL);
    if (size != pages * 8) {
        return parse_section_error(p, sec, error, FORMAT_ERROR_CORRUPT,
                                   "%zu bytes, block '%s' of %" PRIu64 " pages needs %" PRIu64,
                                   (size_t)size, b->name, pages, pages * 8);
    }
    for (uint64_t i = 0; i < pages; i++) {
        bool present = (le64_load(bits + i / 64 * 8) >> (i % 64)) & 1;
        uint64_t sum = le64_load(sums + i * 8);
        if (!present && sum != 0) {
            return parse_section_error(p, sec, error, FORMAT_ERROR_CORRUPT,
                                       "page %" PRIu64 " is not present but its checksum "
                                       "(at offset %" PRIu64 ") is 0x%016" PRIx64,
                                       i, p->s->sections[sec].offset + i * 8, sum);
        }
    }
    return true;
}

/* Finds the one section of `type` per block; refuses strays and duplicates. */
static bool per_block(Parser *p, uint32_t type, int *index, GError **error)
{
    FormatSnapshot *s = p->s;
    for (unsigned b = 0; b < s->n_blocks; b++) {
        index[b] = -1;
    }
    for (unsigned i = 0; i < s->n_sections; i++) {
        const FormatSection *sec = &s->sections[i];
        if (sec->type != type) {
            continue;
        }
        if (sec->instance >= s->n_blocks) {
            return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT,
                                       "instance %u, but there are %u RAM blocks", sec->instance,
                                       s->n_blocks);
        }
        if (index[sec->instance] >= 0) {
            return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT,
                                       "a second %s for RAM block %u (the first is directory "
                                       "entry %d)",
                                       format_section_type_name(type), sec->instance,
                                       index[sec->instance]);
        }
        index[sec->instance] = (int)i;
    }
    for (unsigned b = 0; b < s->n_blocks; b++) {
        if (index[b] < 0) {
            return parse_error(p, error, FORMAT_ERROR_CORRUPT,
                               "no %s section for RAM block %u '%s'",
                               format_section_type_name(type), b, s->blocks[b].name);
        }
    }
    return true;
}

bool parse_check_ram(Parser *p, GError **error)
{
    FormatSnapshot *s = p->s;
    unsigned table = s->n_sections;
    for (unsigned i = 0; i < s->n_sections; i++) {
        if (s->sections[i].type == FORMAT_SECTION_RAM_BLOCKS) {
            table = i;
        } else if (s->sections[i].type == FORMAT_SECTION_CONFIG) {
            s->config = s->payloads[i];
        }
    }
    if (table == s->n_sections) {
        return parse_error(p, error, FORMAT_ERROR_CORRUPT, "no RAM_BLOCKS section");
    }
    gsize size;
    const uint8_t *data = g_bytes_get_data(s->payloads[table], &size);
    g_autoptr(GError) local = NULL;
    if (!format_ram_blocks_decode(data, size, s->sections[table].offset, &s->blocks, &s->n_blocks,
                                  &local)) {
        return parse_section_error(p, table, error, FORMAT_ERROR_CORRUPT, "%s", local->message);
    }
    if (!check_areas(p, table, error)) {
        return false;
    }

    int bitmap[FORMAT_MAX_BLOCKS], sums[FORMAT_MAX_BLOCKS];
    if (!per_block(p, FORMAT_SECTION_PRESENT_BITMAP, bitmap, error) ||
        !per_block(p, FORMAT_SECTION_PAGE_CHECKSUMS, sums, error)) {
        return false;
    }
    s->present = g_new0(GBytes *, s->n_blocks);
    s->checksums = g_new0(GBytes *, s->n_blocks);
    uint64_t present = 0;
    for (unsigned b = 0; b < s->n_blocks; b++) {
        if (!check_bitmap(p, (unsigned)bitmap[b], &s->blocks[b], &present, error) ||
            !check_checksums(p, (unsigned)sums[b], (unsigned)bitmap[b], &s->blocks[b], error)) {
            return false;
        }
        s->present[b] = s->payloads[bitmap[b]];
        s->checksums[b] = s->payloads[sums[b]];
    }
    if (present != s->header.present_pages) {
        return parse_error(p, error, FORMAT_ERROR_CORRUPT,
                           "the bitmaps have %" PRIu64 " present pages, the header's "
                           "present_pages (at offset %" PRIu64 ") says %" PRIu64,
                           present, s->header.base_offset + HDR_PRESENT_PAGES,
                           s->header.present_pages);
    }
    return true;
}

bool parse_check_fields(Parser *p, GError **error)
{
    FormatSnapshot *s = p->s;
    for (unsigned i = 0; i < s->n_sections; i++) {
        const FormatSection *sec = &s->sections[i];
        if (sec->type != FORMAT_SECTION_CONFIG && sec->type != FORMAT_SECTION_DEVICE) {
            continue;
        }
        gsize size;
        const void *data = g_bytes_get_data(s->payloads[i], &size);
        g_autoptr(GError) local = NULL;
        if (!vmsnap_fields_check(data, size, &local)) {
            return parse_section_error(p, i, error, FORMAT_ERROR_CORRUPT, "%s", local->message);
        }
    }
    return true;
}
