/*
 * Self-describing fields: the writer. Misuse (a bad name, an unbalanced end, a
 * wrong element count, a size over a limit) is recorded once, with the field path,
 * and reported by vmsnap_fw_finish(); later calls are ignored.
 */
#include "fields_wire.h"

#include <string.h>
#include <vmsnap/fields.h>

typedef struct {
    uint8_t kind;   /* FIELD_STRUCT or FIELD_ARRAY */
    uint32_t count; /* ARRAY: announced elements */
    uint32_t n;     /* ARRAY: elements written */
} WFrame;

struct VmsnapFieldWriter {
    GByteArray *buf;
    WFrame frames[FIELDS_MAX_DEPTH];
    unsigned depth;
    GString *path;                         /* path of the open containers */
    size_t path_len[FIELDS_MAX_DEPTH + 1]; /* path->len before each container */
    char *error;                           /* first misuse, or NULL */
};

VmsnapFieldWriter *vmsnap_fw_new(void)
{
    VmsnapFieldWriter *w = g_new0(VmsnapFieldWriter, 1);
    w->buf = g_byte_array_new();
    w->path = g_string_new(NULL);
    return w;
}

void vmsnap_fw_free(VmsnapFieldWriter *w)
{
    if (w == NULL) {
        return;
    }
    if (w->buf != NULL) {
        g_byte_array_unref(w->buf);
    }
    g_string_free(w->path, TRUE);
    g_free(w->error);
    g_free(w);
}

static void G_GNUC_PRINTF(3, 4)
    fw_fail(VmsnapFieldWriter *w, const char *leaf, const char *fmt, ...)
{
    if (w->error != NULL) {
        return;
    }
    g_autoptr(GString) path = g_string_new(w->path->str);
    if (leaf != NULL) {
        fields_path_append(path, leaf, strlen(leaf), -1);
    }
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    w->error = path->len > 0 ? g_strdup_printf("field '%s': %s", path->str, msg) : g_strdup(msg);
}

/*
 * Writes a field header after checking the name against the context. Returns
 * false (and writes nothing) when the writer has failed. *index is the element
 * index inside an array, -1 outside.
 */
static bool fw_head(VmsnapFieldWriter *w, uint8_t kind, const char *name, size_t value_size,
                    int64_t *index)
{
    if (w->error != NULL) {
        return false;
    }
    size_t name_len = name != NULL ? strlen(name) : 0;
    WFrame *top = w->depth > 0 ? &w->frames[w->depth - 1] : NULL;
    *index = -1;
    if (top != NULL && top->kind == FIELD_ARRAY) {
        if (name_len != 0) {
            fw_fail(w, NULL, "array elements have no name, got '%s'", name);
            return false;
        }
        if (top->n >= top->count) {
            fw_fail(w, NULL, "more than the %u elements announced", top->count);
            return false;
        }
        *index = top->n++;
    } else if (!fields_name_valid(name != NULL ? name : "", name_len)) {
        fw_fail(w, NULL, "invalid field name '%s' (1 to 63 characters of [A-Za-z0-9_-])",
                name != NULL ? name : "");
        return false;
    }
    /* Bound the payload before growing it: 2 + name + value. */
    if (value_size > FIELDS_MAX_PAYLOAD || w->buf->len + 2 + name_len > FIELDS_MAX_PAYLOAD ||
        w->buf->len + 2 + name_len + value_size > FIELDS_MAX_PAYLOAD) {
        fw_fail(w, *index < 0 ? name : NULL, "the payload would exceed %u bytes",
                FIELDS_MAX_PAYLOAD);
        return false;
    }
    uint8_t head[2] = { kind, (uint8_t)name_len };
    g_byte_array_append(w->buf, head, 2);
    g_byte_array_append(w->buf, (const uint8_t *)name, (guint)name_len);
    return true;
}

static void fw_scalar(VmsnapFieldWriter *w, uint8_t kind, const char *name, uint64_t v)
{
    size_t size = fields_fixed_size(kind);
    int64_t index;
    if (!fw_head(w, kind, name, size, &index)) {
        return;
    }
    uint8_t le[8];
    for (size_t i = 0; i < size; i++) {
        le[i] = (uint8_t)(v >> (8 * i));
    }
    g_byte_array_append(w->buf, le, (guint)size);
}

void vmsnap_fw_u8(VmsnapFieldWriter *w, const char *name, uint8_t v)
{
    fw_scalar(w, FIELD_U8, name, v);
}

void vmsnap_fw_u16(VmsnapFieldWriter *w, const char *name, uint16_t v)
{
    fw_scalar(w, FIELD_U16, name, v);
}

void vmsnap_fw_u32(VmsnapFieldWriter *w, const char *name, uint32_t v)
{
    fw_scalar(w, FIELD_U32, name, v);
}

void vmsnap_fw_u64(VmsnapFieldWriter *w, const char *name, uint64_t v)
{
    fw_scalar(w, FIELD_U64, name, v);
}

void vmsnap_fw_i64(VmsnapFieldWriter *w, const char *name, int64_t v)
{
    fw_scalar(w, FIELD_I64, name, (uint64_t)v);
}

void vmsnap_fw_bool(VmsnapFieldWriter *w, const char *name, bool v)
{
    fw_scalar(w, FIELD_BOOL, name, v ? 1 : 0);
}

static void fw_blob(VmsnapFieldWriter *w, uint8_t kind, const char *name, const void *data,
                    size_t len, size_t max)
{
    if (w->error != NULL) {
        return;
    }
    if (len > max) {
        fw_fail(w, name, "%s of %zu bytes, at most %zu allowed", fields_kind_name(kind), len, max);
        return;
    }
    int64_t index;
    if (!fw_head(w, kind, name, 4 + len, &index)) {
        return;
    }
    uint8_t le[4] = { (uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
                      (uint8_t)(len >> 24) };
    g_byte_array_append(w->buf, le, 4);
    g_byte_array_append(w->buf, data, (guint)len);
}

void vmsnap_fw_bytes(VmsnapFieldWriter *w, const char *name, const void *data, size_t len)
{
    fw_blob(w, FIELD_BYTES, name, data, len, FIELDS_MAX_BYTES);
}

void vmsnap_fw_str(VmsnapFieldWriter *w, const char *name, const char *s)
{
    if (w->error == NULL && s == NULL) {
        fw_fail(w, name, "NULL string");
        return;
    }
    size_t len = w->error == NULL ? strlen(s) : 0;
    if (w->error == NULL && !g_utf8_validate(s, (gssize)len, NULL)) {
        fw_fail(w, name, "string is not valid UTF-8");
        return;
    }
    fw_blob(w, FIELD_STR, name, s, len, FIELDS_MAX_STR);
}

static void fw_push(VmsnapFieldWriter *w, uint8_t kind, const char *name, uint32_t count)
{
    if (w->error != NULL) {
        return;
    }
    if (w->depth == FIELDS_MAX_DEPTH) {
        fw_fail(w, name, "nesting deeper than %u", FIELDS_MAX_DEPTH);
        return;
    }
    int64_t index;
    if (!fw_head(w, kind, name, kind == FIELD_ARRAY ? 4 : 0, &index)) {
        return;
    }
    if (kind == FIELD_ARRAY) {
        uint8_t le[4] = { (uint8_t)count, (uint8_t)(count >> 8), (uint8_t)(count >> 16),
                          (uint8_t)(count >> 24) };
        g_byte_array_append(w->buf, le, 4);
    }
    w->path_len[w->depth] = w->path->len;
    fields_path_append(w->path, name, index < 0 ? strlen(name) : 0, index);
    w->frames[w->depth++] = (WFrame){ .kind = kind, .count = count };
}

static void fw_pop(VmsnapFieldWriter *w, uint8_t kind)
{
    if (w->error != NULL) {
        return;
    }
    if (w->depth == 0 || w->frames[w->depth - 1].kind != kind) {
        fw_fail(w, NULL, "%s_end without a matching %s_begin", fields_kind_name(kind),
                fields_kind_name(kind));
        return;
    }
    WFrame *top = &w->frames[w->depth - 1];
    if (kind == FIELD_ARRAY && top->n != top->count) {
        fw_fail(w, NULL, "%u elements written, %u announced", top->n, top->count);
        return;
    }
    if (w->buf->len + 2 > FIELDS_MAX_PAYLOAD) {
        fw_fail(w, NULL, "the payload would exceed %u bytes", FIELDS_MAX_PAYLOAD);
        return;
    }
    uint8_t end[2] = { FIELD_END, 0 };
    g_byte_array_append(w->buf, end, 2);
    w->depth--;
    g_string_truncate(w->path, w->path_len[w->depth]);
}

void vmsnap_fw_struct_begin(VmsnapFieldWriter *w, const char *name)
{
    fw_push(w, FIELD_STRUCT, name, 0);
}

void vmsnap_fw_struct_end(VmsnapFieldWriter *w)
{
    fw_pop(w, FIELD_STRUCT);
}

void vmsnap_fw_array_begin(VmsnapFieldWriter *w, const char *name, uint32_t count)
{
    fw_push(w, FIELD_ARRAY, name, count);
}

void vmsnap_fw_array_end(VmsnapFieldWriter *w)
{
    fw_pop(w, FIELD_ARRAY);
}

bool vmsnap_fw_raw(VmsnapFieldWriter *w, const void *fields, size_t len)
{
    if (w->error != NULL) {
        return false;
    }
    if (w->depth > 0) {
        fw_fail(w, NULL, "raw fields inside an open %s",
                fields_kind_name(w->frames[w->depth - 1].kind));
        return false;
    }
    if (len > FIELDS_MAX_PAYLOAD - w->buf->len) {
        fw_fail(w, NULL, "the payload would exceed %u bytes", FIELDS_MAX_PAYLOAD);
        return false;
    }
    GError *local = NULL;
    if (!vmsnap_fields_check(fields, len, &local)) {
        fw_fail(w, NULL, "raw fields are not well formed: %s", local->message);
        g_error_free(local);
        return false;
    }
    g_byte_array_append(w->buf, fields, (guint)len);
    return true;
}

GBytes *vmsnap_fw_finish(VmsnapFieldWriter *w, GError **error)
{
    g_autoptr(VmsnapFieldWriter) owned = w;
    if (w->error == NULL && w->depth > 0) {
        fw_fail(w, NULL, "%s not closed", fields_kind_name(w->frames[w->depth - 1].kind));
    }
    if (w->error != NULL) {
        g_set_error(error, VMSNAP_FIELDS_ERROR, VMSNAP_FIELDS_ERROR_USAGE, "%s", w->error);
        return NULL;
    }
    return g_byte_array_free_to_bytes(g_steal_pointer(&w->buf));
}
