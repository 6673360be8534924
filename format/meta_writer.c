/* Building the metadata region: directory, then 8-aligned payloads (FORMAT.md 3.1). */
#include "internal.h"

#include <xxhash.h>

typedef struct {
    FormatSection s;
    GBytes *payload;
} MetaEntry;

struct FormatMetaWriter {
    uint64_t metadata_offset;
    GArray *entries; /* MetaEntry */
    bool misused;
};

static void meta_entry_clear(gpointer p)
{
    MetaEntry *e = p;
    g_bytes_unref(e->payload);
}

FormatMetaWriter *format_meta_new(uint64_t metadata_offset)
{
    FormatMetaWriter *m = g_new0(FormatMetaWriter, 1);
    m->metadata_offset = metadata_offset;
    m->entries = g_array_new(FALSE, TRUE, sizeof(MetaEntry));
    g_array_set_clear_func(m->entries, meta_entry_clear);
    return m;
}

void format_meta_free(FormatMetaWriter *m)
{
    if (m == NULL) {
        return;
    }
    g_array_unref(m->entries);
    g_free(m);
}

/* A writer's programming error: reported once as a critical; finish returns NULL. */
static void G_GNUC_PRINTF(2, 3) meta_misuse(FormatMetaWriter *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (!m->misused) {
        g_critical("format_meta_add: %s", msg);
    }
    m->misused = true;
}

void format_meta_add(FormatMetaWriter *m, uint32_t type, uint32_t version, uint32_t instance,
                     uint32_t flags, const char *name, GBytes *payload)
{
    const char *tn = format_section_type_name(type);
    if (name == NULL) {
        name = "";
    }
    if (!format_name_valid(name, FORMAT_SECTION_NAME_MAX, type != FORMAT_SECTION_DEVICE)) {
        meta_misuse(m, "section %s: invalid name '%s'", tn, name);
        return;
    }
    if (version == 0 || (flags & ~FORMAT_SECTION_FLAGS_KNOWN) != 0) {
        meta_misuse(m, "section %s '%s': version 0 or unknown flags 0x%x", tn, name, flags);
        return;
    }
    gsize size = payload != NULL ? g_bytes_get_size(payload) : 0;
    if (size > FORMAT_MAX_SECTION_SIZE) {
        meta_misuse(m, "section %s '%s': payload of %zu bytes over the limit", tn, name, size);
        return;
    }
    if (m->entries->len == FORMAT_MAX_SECTIONS) {
        meta_misuse(m, "more than %u sections", FORMAT_MAX_SECTIONS);
        return;
    }
    for (guint i = 0; i < m->entries->len; i++) {
        const FormatSection *o = &g_array_index(m->entries, MetaEntry, i).s;
        if (o->type == type && o->instance == instance && strcmp(o->name, name) == 0) {
            meta_misuse(m, "section %s '%s' instance %u added twice", tn, name, instance);
            return;
        }
    }
    MetaEntry e = { .s = { .type = type,
                           .version = version,
                           .instance = instance,
                           .flags = flags,
                           .size = size },
                    .payload = payload != NULL ? g_bytes_ref(payload) : g_bytes_new(NULL, 0) };
    g_strlcpy(e.s.name, name, sizeof(e.s.name));
    g_array_append_val(m->entries, e);
}

GBytes *format_meta_finish(FormatMetaWriter *m, FormatHeader *h)
{
    g_autoptr(FormatMetaWriter) owned = m;
    if (m->misused) {
        return NULL;
    }
    guint n = m->entries->len;
    uint64_t dir_size = (uint64_t)n * FORMAT_DIR_ENTRY_SIZE;
    uint64_t end = m->metadata_offset + dir_size;
    for (guint i = 0; i < n; i++) {
        MetaEntry *e = &g_array_index(m->entries, MetaEntry, i);
        e->s.offset = format_align_up(end, 8);
        end = e->s.offset + e->s.size;
    }
    uint64_t region = end - m->metadata_offset;
    uint8_t *buf = g_malloc0(region);
    for (guint i = 0; i < n; i++) {
        MetaEntry *e = &g_array_index(m->entries, MetaEntry, i);
        uint8_t *d = buf + (size_t)i * FORMAT_DIR_ENTRY_SIZE;
        gsize size;
        const void *data = g_bytes_get_data(e->payload, &size);
        e->s.checksum = XXH3_64bits(data, size);
        if (size > 0) {
            memcpy(buf + (e->s.offset - m->metadata_offset), data, size);
        }
        le32_store(d + DIR_TYPE, e->s.type);
        le32_store(d + DIR_VERSION, e->s.version);
        le32_store(d + DIR_INSTANCE, e->s.instance);
        le32_store(d + DIR_FLAGS, e->s.flags);
        le64_store(d + DIR_OFFSET, e->s.offset);
        le64_store(d + DIR_SIZE, e->s.size);
        le64_store(d + DIR_CHECKSUM, e->s.checksum);
        format_name_encode(d + DIR_NAME, DIR_NAME_SIZE, e->s.name);
    }
    h->metadata_offset = m->metadata_offset;
    h->metadata_size = region;
    h->file_size = end;
    h->directory_checksum = XXH3_64bits(buf, dir_size);
    h->directory_entries = n;
    return g_bytes_new_take(buf, region);
}
