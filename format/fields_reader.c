/*
 * Self-describing fields: the reader. The payload is hostile: every length is
 * bounded against what is left before it is used, and the first error sticks.
 */
#include "fields_wire.h"

#include <string.h>
#include <vmsnap/fields.h>

typedef struct {
    uint8_t kind;   /* FIELD_STRUCT or FIELD_ARRAY */
    uint32_t count; /* ARRAY: announced elements */
    uint32_t next;  /* ARRAY: elements consumed */
} RFrame;

struct VmsnapFieldReader {
    const uint8_t *data;
    size_t len;
    size_t pos;
    char *section;
    uint32_t instance;
    uint32_t version;
    RFrame frames[FIELDS_MAX_DEPTH];
    unsigned depth;
    GString *path;                         /* path of the open containers */
    size_t path_len[FIELDS_MAX_DEPTH + 1]; /* path->len before each container */
    GString *cur;                          /* path of the field being read */
    GString *last;                         /* path of the last field consumed */
    GError *error;
};

VmsnapFieldReader *vmsnap_fr_new(const void *data, size_t len, const char *section,
                                 uint32_t instance, uint32_t version)
{
    VmsnapFieldReader *r = g_new0(VmsnapFieldReader, 1);
    r->data = data;
    r->len = data != NULL ? len : 0;
    r->section = g_strdup(section);
    r->instance = instance;
    r->version = version;
    r->path = g_string_new(NULL);
    r->cur = g_string_new(NULL);
    r->last = g_string_new(NULL);
    return r;
}

void vmsnap_fr_free(VmsnapFieldReader *r)
{
    if (r == NULL) {
        return;
    }
    g_free(r->section);
    g_string_free(r->path, TRUE);
    g_string_free(r->cur, TRUE);
    g_string_free(r->last, TRUE);
    g_clear_error(&r->error);
    g_free(r);
}

static bool G_GNUC_PRINTF(4, 0)
    fr_verror(VmsnapFieldReader *r, int code, const char *path, const char *fmt, va_list ap)
{
    if (r->error != NULL) {
        return false;
    }
    g_autoptr(GString) msg = g_string_new(NULL);
    if (r->section != NULL) {
        g_string_append_printf(msg, "section '%s' instance %u version %u: ", r->section,
                               r->instance, r->version);
    }
    if (path != NULL && path[0] != '\0') {
        g_string_append_printf(msg, "field '%s': ", path);
    }
    g_string_append_vprintf(msg, fmt, ap);
    r->error = g_error_new_literal(VMSNAP_FIELDS_ERROR, code, msg->str);
    return false;
}

static bool G_GNUC_PRINTF(4, 5)
    fr_error(VmsnapFieldReader *r, int code, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fr_verror(r, code, path, fmt, ap);
    va_end(ap);
    return false;
}

bool vmsnap_fr_fail(VmsnapFieldReader *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fr_verror(r, VMSNAP_FIELDS_ERROR_VALUE, r->last->str, fmt, ap);
    va_end(ap);
    return false;
}

bool vmsnap_fr_failed(const VmsnapFieldReader *r)
{
    return r->error != NULL;
}

static RFrame *fr_top(VmsnapFieldReader *r)
{
    return r->depth > 0 ? &r->frames[r->depth - 1] : NULL;
}

/*
 * Checks that the next field has this kind and name (NULL or "" for an array
 * element), with r->cur set to its path. On success *h is its header and *index
 * its element index (-1 outside an array).
 */
static bool fr_next(VmsnapFieldReader *r, uint8_t kind, const char *name, FieldHead *h,
                    int64_t *index)
{
    if (r->error != NULL) {
        return false;
    }
    RFrame *top = fr_top(r);
    bool in_array = top != NULL && top->kind == FIELD_ARRAY;
    size_t name_len = name != NULL ? strlen(name) : 0;
    const char *kn = fields_kind_name(kind);

    *index = in_array ? (int64_t)top->next : -1;
    g_string_assign(r->cur, r->path->str);
    fields_path_append(r->cur, name != NULL ? name : "", name_len, *index);
    if (in_array && name_len != 0) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_USAGE, r->cur->str,
                        "array elements are read with an empty name, not '%s'", name);
    }
    if (!in_array && name_len == 0) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_USAGE, r->cur->str, "a field name is required");
    }
    if (in_array && top->next >= top->count) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "expected %s, but the array has only %u elements", kn, top->count);
    }
    if (r->pos >= r->len) {
        if (top != NULL) {
            return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str,
                            "expected %s, found the end of the payload inside '%s'", kn,
                            r->path->str);
        }
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "expected %s, found the end of the payload", kn);
    }
    const char *why = NULL;
    if (!fields_head_parse(r->data, r->len, r->pos, h, &why)) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str, "%s at payload offset %zu",
                        why, r->pos);
    }
    if (h->kind == FIELD_END) {
        if (top == NULL) {
            return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str,
                            "end marker outside any struct or array at payload offset %zu", r->pos);
        }
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "expected %s, found the end of %s '%s'", kn, fields_kind_name(top->kind),
                        r->path->str);
    }
    if (in_array != (h->name_len == 0)) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str,
                        in_array ? "named field '%.*s' inside an array at payload offset %zu"
                                 : "unnamed field%.*s outside an array at payload offset %zu",
                        (int)h->name_len, h->name, r->pos);
    }
    if (h->name_len != name_len || (name_len > 0 && memcmp(h->name, name, name_len) != 0)) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "expected %s '%s', found %s '%.*s'", kn, name, fields_kind_name(h->kind),
                        (int)h->name_len, h->name);
    }
    if (h->kind != kind) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str, "expected %s, found %s", kn,
                        fields_kind_name(h->kind));
    }
    return true;
}

/* Bounds n value bytes at pos; *p points at them. */
static bool fr_take(VmsnapFieldReader *r, size_t pos, size_t n, const uint8_t **p)
{
    if (pos > r->len || r->len - pos < n) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str,
                        "truncated value at payload offset %zu (%zu bytes needed, %zu left)", pos,
                        n, pos > r->len ? 0 : r->len - pos);
    }
    *p = r->data + pos;
    return true;
}

/* The field ends at `end`: consume it. */
static void fr_consume(VmsnapFieldReader *r, size_t end, int64_t index)
{
    r->pos = end;
    if (index >= 0) {
        fr_top(r)->next++;
    }
    g_string_assign(r->last, r->cur->str);
}

static uint64_t load_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static bool fr_scalar(VmsnapFieldReader *r, uint8_t kind, const char *name, uint64_t *v)
{
    FieldHead h;
    int64_t index;
    const uint8_t *p = NULL;
    size_t size = fields_fixed_size(kind);
    *v = 0;
    if (!fr_next(r, kind, name, &h, &index) || !fr_take(r, h.value, size, &p)) {
        return false;
    }
    uint64_t x = load_le(p, size);
    if (kind == FIELD_BOOL && x > 1) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str,
                        "invalid bool value %u at payload offset %zu", (unsigned)x, h.value);
    }
    fr_consume(r, h.value + size, index);
    *v = x;
    return true;
}

bool vmsnap_fr_u8(VmsnapFieldReader *r, const char *name, uint8_t *out)
{
    uint64_t v;
    bool ok = fr_scalar(r, FIELD_U8, name, &v);
    *out = (uint8_t)v;
    return ok;
}

bool vmsnap_fr_u16(VmsnapFieldReader *r, const char *name, uint16_t *out)
{
    uint64_t v;
    bool ok = fr_scalar(r, FIELD_U16, name, &v);
    *out = (uint16_t)v;
    return ok;
}

bool vmsnap_fr_u32(VmsnapFieldReader *r, const char *name, uint32_t *out)
{
    uint64_t v;
    bool ok = fr_scalar(r, FIELD_U32, name, &v);
    *out = (uint32_t)v;
    return ok;
}

bool vmsnap_fr_u64(VmsnapFieldReader *r, const char *name, uint64_t *out)
{
    return fr_scalar(r, FIELD_U64, name, out);
}

bool vmsnap_fr_i64(VmsnapFieldReader *r, const char *name, int64_t *out)
{
    uint64_t v;
    bool ok = fr_scalar(r, FIELD_I64, name, &v);
    *out = (int64_t)v;
    return ok;
}

bool vmsnap_fr_bool(VmsnapFieldReader *r, const char *name, bool *out)
{
    uint64_t v;
    bool ok = fr_scalar(r, FIELD_BOOL, name, &v);
    *out = v != 0;
    return ok;
}

/* Reads the header and length of a BYTES or STR field and bounds its data. */
static bool fr_blob(VmsnapFieldReader *r, uint8_t kind, const char *name, size_t limit,
                    const uint8_t **data, uint32_t *n, size_t *end, int64_t *index)
{
    FieldHead h;
    const uint8_t *p = NULL;
    if (!fr_next(r, kind, name, &h, index) || !fr_take(r, h.value, 4, &p)) {
        return false;
    }
    *n = (uint32_t)load_le(p, 4);
    if (*n > limit) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str,
                        "%s of %u bytes over the limit of %zu at payload offset %zu",
                        fields_kind_name(kind), *n, limit, h.value);
    }
    if (!fr_take(r, h.value + 4, *n, data)) {
        return false;
    }
    *end = h.value + 4 + *n;
    return true;
}

bool vmsnap_fr_bytes(VmsnapFieldReader *r, const char *name, void *out, size_t len)
{
    const uint8_t *data = NULL;
    uint32_t n;
    size_t end = 0;
    int64_t index;
    if (len > 0) {
        memset(out, 0, len);
    }
    if (!fr_blob(r, FIELD_BYTES, name, FIELDS_MAX_BYTES, &data, &n, &end, &index)) {
        return false;
    }
    if (n != len) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "expected %zu bytes, found %u", len, n);
    }
    if (n > 0) {
        memcpy(out, data, n);
    }
    fr_consume(r, end, index);
    return true;
}

bool vmsnap_fr_bytes_dup(VmsnapFieldReader *r, const char *name, size_t max, void **out,
                         size_t *len)
{
    const uint8_t *data = NULL;
    uint32_t n;
    size_t end = 0;
    int64_t index;
    *out = NULL;
    *len = 0;
    if (!fr_blob(r, FIELD_BYTES, name, FIELDS_MAX_BYTES, &data, &n, &end, &index)) {
        return false;
    }
    if (n > max) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "%u bytes, at most %zu expected", n, max);
    }
    *out = g_memdup2(data, n);
    *len = n;
    fr_consume(r, end, index);
    return true;
}

bool vmsnap_fr_str(VmsnapFieldReader *r, const char *name, size_t max, char **out)
{
    const uint8_t *data = NULL;
    uint32_t n;
    size_t end = 0;
    int64_t index;
    *out = NULL;
    if (!fr_blob(r, FIELD_STR, name, FIELDS_MAX_STR, &data, &n, &end, &index)) {
        return false;
    }
    if (memchr(data, 0, n) != NULL) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str,
                        "string contains a NUL byte");
    }
    if (!g_utf8_validate((const char *)data, n, NULL)) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str, "string is not valid UTF-8");
    }
    if (n > max) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "string of %u bytes, at most %zu expected", n, max);
    }
    *out = g_strndup((const char *)data, n);
    fr_consume(r, end, index);
    return true;
}

static void fr_push(VmsnapFieldReader *r, uint8_t kind, uint32_t count)
{
    r->path_len[r->depth] = r->path->len;
    g_string_assign(r->path, r->cur->str);
    r->frames[r->depth++] = (RFrame){ .kind = kind, .count = count };
}

bool vmsnap_fr_struct_begin(VmsnapFieldReader *r, const char *name)
{
    FieldHead h;
    int64_t index;
    if (!fr_next(r, FIELD_STRUCT, name, &h, &index)) {
        return false;
    }
    if (r->depth == FIELDS_MAX_DEPTH) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str, "nesting deeper than %u",
                        FIELDS_MAX_DEPTH);
    }
    fr_consume(r, h.value, index);
    fr_push(r, FIELD_STRUCT, 0);
    return true;
}

bool vmsnap_fr_array_begin(VmsnapFieldReader *r, const char *name, uint32_t max, uint32_t *count)
{
    FieldHead h;
    int64_t index;
    const uint8_t *p = NULL;
    *count = 0;
    if (!fr_next(r, FIELD_ARRAY, name, &h, &index) || !fr_take(r, h.value, 4, &p)) {
        return false;
    }
    uint32_t n = (uint32_t)load_le(p, 4);
    if (n > max) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "array of %u elements, at most %u expected", n, max);
    }
    /* Each element takes at least 2 bytes, and the END 2 more. */
    size_t left = r->len - (h.value + 4);
    if (left < 2 || n > (left - 2) / 2) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str,
                        "array count %u does not fit in the %zu bytes left", n, left);
    }
    if (r->depth == FIELDS_MAX_DEPTH) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->cur->str, "nesting deeper than %u",
                        FIELDS_MAX_DEPTH);
    }
    fr_consume(r, h.value + 4, index);
    fr_push(r, FIELD_ARRAY, n);
    *count = n;
    return true;
}

static bool fr_pop(VmsnapFieldReader *r, uint8_t kind)
{
    if (r->error != NULL) {
        return false;
    }
    RFrame *top = fr_top(r);
    const char *kn = fields_kind_name(kind);
    if (top == NULL || top->kind != kind) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_USAGE, r->path->str,
                        "%s_end without a matching %s_begin", kn, kn);
    }
    if (kind == FIELD_ARRAY && top->next != top->count) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_USAGE, r->path->str,
                        "array_end after %u of its %u elements", top->next, top->count);
    }
    FieldHead h;
    const char *why = NULL;
    if (r->pos >= r->len) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->path->str,
                        "the payload ends before the end of the %s", kn);
    }
    if (!fields_head_parse(r->data, r->len, r->pos, &h, &why)) {
        return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->path->str, "%s at payload offset %zu",
                        why, r->pos);
    }
    if (h.kind != FIELD_END) {
        if (kind == FIELD_ARRAY) {
            return fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, r->path->str,
                            "more elements than its count %u at payload offset %zu", top->count,
                            r->pos);
        }
        g_string_assign(r->cur, r->path->str);
        fields_path_append(r->cur, h.name, h.name_len, -1);
        return fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, r->cur->str,
                        "unexpected %s after the last expected member of '%s'",
                        fields_kind_name(h.kind), r->path->str);
    }
    r->pos = h.value;
    g_string_assign(r->last, r->path->str);
    r->depth--;
    g_string_truncate(r->path, r->path_len[r->depth]);
    return true;
}

bool vmsnap_fr_struct_end(VmsnapFieldReader *r)
{
    return fr_pop(r, FIELD_STRUCT);
}

bool vmsnap_fr_array_end(VmsnapFieldReader *r)
{
    return fr_pop(r, FIELD_ARRAY);
}

bool vmsnap_fr_finish(VmsnapFieldReader *r, GError **error)
{
    g_autoptr(VmsnapFieldReader) owned = r;
    if (r->error == NULL && r->depth > 0) {
        fr_error(r, VMSNAP_FIELDS_ERROR_USAGE, r->path->str, "%s not closed",
                 fields_kind_name(fr_top(r)->kind));
    }
    if (r->error == NULL && r->pos < r->len) {
        FieldHead h;
        const char *why = NULL;
        if (!fields_head_parse(r->data, r->len, r->pos, &h, &why)) {
            fr_error(r, VMSNAP_FIELDS_ERROR_MALFORMED, NULL, "%s at payload offset %zu", why,
                     r->pos);
        } else {
            g_autofree char *name = g_strndup(h.name, h.name_len);
            fr_error(r, VMSNAP_FIELDS_ERROR_MISMATCH, name,
                     "unexpected %s after the last expected field", fields_kind_name(h.kind));
        }
    }
    if (r->error != NULL) {
        g_propagate_error(error, g_steal_pointer(&r->error));
        return false;
    }
    return true;
}
