/*
 * Self-describing fields: walking a whole payload without knowing its field list,
 * to print it (vmsnap inspect) or just to check that it is well formed.
 */
#include "fields_wire.h"

#include <inttypes.h>
#include <string.h>
#include <vmsnap/fields.h>

/* Bytes printed in full up to this length; longer ones are cut unless `full`. */
#define BYTES_SHORT 32u

typedef struct {
    uint8_t kind;    /* FIELD_STRUCT or FIELD_ARRAY */
    uint32_t count;  /* ARRAY: announced elements */
    uint32_t n;      /* members or elements seen */
    size_t path_len; /* path->len before this container's component */
} PFrame;

typedef struct {
    const uint8_t *data;
    size_t len;
    GString *path;
    GString *out; /* NULL: check only */
    bool full;
} Walk;

static bool G_GNUC_PRINTF(4, 5)
    walk_error(GError **error, const GString *path, size_t pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (path->len > 0) {
        g_set_error(error, VMSNAP_FIELDS_ERROR, VMSNAP_FIELDS_ERROR_MALFORMED,
                    "field '%s' at payload offset %zu: %s", path->str, pos, msg);
    } else {
        g_set_error(error, VMSNAP_FIELDS_ERROR, VMSNAP_FIELDS_ERROR_MALFORMED,
                    "payload offset %zu: %s", pos, msg);
    }
    return false;
}

static uint64_t load_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static void print_hex(GString *out, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        g_string_append_printf(out, "%02x", p[i]);
    }
}

/* Prints (or checks) one scalar, BYTES or STR value at data[pos]; *end is past it. */
static bool walk_value(Walk *w, uint8_t kind, size_t pos, size_t *end, GError **error)
{
    size_t left = w->len - pos;
    size_t fixed = fields_fixed_size(kind);
    if (fixed > 0) {
        if (left < fixed) {
            return walk_error(error, w->path, pos, "truncated %s value", fields_kind_name(kind));
        }
        uint64_t v = load_le(w->data + pos, fixed);
        if (kind == FIELD_BOOL && v > 1) {
            return walk_error(error, w->path, pos, "invalid bool value %u", (unsigned)v);
        }
        *end = pos + fixed;
        if (w->out == NULL) {
            return true;
        }
        g_string_append_printf(w->out, "%s = (%s) ", w->path->str, fields_kind_name(kind));
        switch (kind) {
        case FIELD_U8:
            g_string_append_printf(w->out, "0x%02x", (unsigned)v);
            break;
        case FIELD_U16:
            g_string_append_printf(w->out, "0x%04x", (unsigned)v);
            break;
        case FIELD_U32:
            g_string_append_printf(w->out, "0x%08x", (unsigned)v);
            break;
        case FIELD_U64:
            g_string_append_printf(w->out, "0x%016" PRIx64, v);
            break;
        case FIELD_I64:
            g_string_append_printf(w->out, "%" PRId64, (int64_t)v);
            break;
        case FIELD_BOOL:
            g_string_append(w->out, v ? "true" : "false");
            break;
        }
        g_string_append_c(w->out, '\n');
        return true;
    }

    /* BYTES or STR: u32 length, then the data. */
    if (left < 4) {
        return walk_error(error, w->path, pos, "truncated %s length", fields_kind_name(kind));
    }
    uint32_t n = (uint32_t)load_le(w->data + pos, 4);
    size_t limit = kind == FIELD_STR ? FIELDS_MAX_STR : FIELDS_MAX_BYTES;
    if (n > limit) {
        return walk_error(error, w->path, pos, "%s of %u bytes over the limit of %zu",
                          fields_kind_name(kind), n, limit);
    }
    if (left - 4 < n) {
        return walk_error(error, w->path, pos, "truncated %s (%u bytes, %zu left)",
                          fields_kind_name(kind), n, left - 4);
    }
    const uint8_t *p = w->data + pos + 4;
    if (kind == FIELD_STR) {
        if (memchr(p, 0, n) != NULL) {
            return walk_error(error, w->path, pos, "string contains a NUL byte");
        }
        if (!g_utf8_validate((const char *)p, n, NULL)) {
            return walk_error(error, w->path, pos, "string is not valid UTF-8");
        }
    }
    *end = pos + 4 + n;
    if (w->out == NULL) {
        return true;
    }
    if (kind == FIELD_STR) {
        g_string_append_printf(w->out, "%s = (str) ", w->path->str);
        fields_append_quoted(w->out, (const char *)p, n);
    } else {
        g_string_append_printf(w->out, "%s = (bytes[%u])%s", w->path->str, n, n ? " " : "");
        if (n > BYTES_SHORT && !w->full) {
            print_hex(w->out, p, BYTES_SHORT);
            g_string_append(w->out, "...");
        } else {
            print_hex(w->out, p, n);
        }
    }
    g_string_append_c(w->out, '\n');
    return true;
}

static bool walk(Walk *w, GError **error)
{
    PFrame frames[FIELDS_MAX_DEPTH];
    unsigned depth = 0;
    size_t pos = 0;

    while (pos < w->len) {
        FieldHead h;
        const char *why = NULL;
        if (!fields_head_parse(w->data, w->len, pos, &h, &why)) {
            return walk_error(error, w->path, pos, "%s", why);
        }
        PFrame *top = depth > 0 ? &frames[depth - 1] : NULL;
        bool in_array = top != NULL && top->kind == FIELD_ARRAY;

        if (h.kind == FIELD_END) {
            if (top == NULL) {
                return walk_error(error, w->path, pos, "end marker outside any struct or array");
            }
            if (in_array && top->n != top->count) {
                return walk_error(error, w->path, pos, "array of %u elements ends after %u",
                                  top->count, top->n);
            }
            if (top->n == 0 && w->out != NULL) {
                g_string_append_printf(w->out, "%s = (%s) %s\n", w->path->str,
                                       in_array ? "array[0]" : "struct", in_array ? "[]" : "{}");
            }
            g_string_truncate(w->path, top->path_len);
            depth--;
            pos = h.value;
            continue;
        }
        if (in_array && h.name_len != 0) {
            return walk_error(error, w->path, pos, "named field '%.*s' inside an array",
                              (int)h.name_len, h.name);
        }
        if (!in_array && h.name_len == 0) {
            return walk_error(error, w->path, pos, "unnamed field outside an array");
        }
        if (in_array && top->n >= top->count) {
            return walk_error(error, w->path, pos, "more elements than the array's count %u",
                              top->count);
        }
        int64_t index = in_array ? (int64_t)top->n : -1;
        if (top != NULL) {
            top->n++;
        }
        size_t path_len = w->path->len;
        fields_path_append(w->path, h.name, h.name_len, index);

        if (h.kind == FIELD_STRUCT || h.kind == FIELD_ARRAY) {
            uint32_t count = 0;
            size_t end = h.value;
            if (depth == FIELDS_MAX_DEPTH) {
                return walk_error(error, w->path, pos, "nesting deeper than %u", FIELDS_MAX_DEPTH);
            }
            if (h.kind == FIELD_ARRAY) {
                if (w->len - h.value < 4) {
                    return walk_error(error, w->path, pos, "truncated array count");
                }
                count = (uint32_t)load_le(w->data + h.value, 4);
                end += 4;
            }
            frames[depth++] = (PFrame){ .kind = h.kind, .count = count, .path_len = path_len };
            pos = end;
            continue;
        }
        size_t end = 0;
        if (!walk_value(w, h.kind, h.value, &end, error)) {
            return false;
        }
        g_string_truncate(w->path, path_len);
        pos = end;
    }
    if (depth > 0) {
        return walk_error(error, w->path, pos, "the payload ends inside this %s",
                          fields_kind_name(frames[depth - 1].kind));
    }
    return true;
}

bool vmsnap_fields_print(const void *data, size_t len, const char *prefix, bool full, GString *out,
                         GError **error)
{
    g_autoptr(GString) path = g_string_new(prefix);
    Walk w = {
        .data = data, .len = data != NULL ? len : 0, .path = path, .out = out, .full = full
    };
    return walk(&w, error);
}

bool vmsnap_fields_check(const void *data, size_t len, GError **error)
{
    g_autoptr(GString) path = g_string_new(NULL);
    Walk w = { .data = data, .len = data != NULL ? len : 0, .path = path, .out = NULL };
    return walk(&w, error);
}
