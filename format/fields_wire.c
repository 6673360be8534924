/* Self-describing fields: kind names, name rules and field paths. */
#include "fields_wire.h"

#include <vmsnap/fields.h>

G_DEFINE_QUARK(vmsnap_fields_error, vmsnap_fields_error)

const char *fields_kind_name(unsigned kind)
{
    switch (kind) {
    case FIELD_U8:
        return "u8";
    case FIELD_U16:
        return "u16";
    case FIELD_U32:
        return "u32";
    case FIELD_U64:
        return "u64";
    case FIELD_I64:
        return "i64";
    case FIELD_BOOL:
        return "bool";
    case FIELD_BYTES:
        return "bytes";
    case FIELD_STR:
        return "str";
    case FIELD_STRUCT:
        return "struct";
    case FIELD_ARRAY:
        return "array";
    case FIELD_END:
        return "end";
    }
    return "unknown kind";
}

size_t fields_fixed_size(unsigned kind)
{
    switch (kind) {
    case FIELD_U8:
        return 1;
    case FIELD_U16:
        return 2;
    case FIELD_U32:
        return 4;
    case FIELD_U64:
        return 8;
    case FIELD_I64:
        return 8;
    case FIELD_BOOL:
        return 1;
    }
    return 0;
}

bool fields_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > FIELDS_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!g_ascii_isalnum(c) && c != '_' && c != '-') {
            return false;
        }
    }
    return true;
}

void fields_path_append(GString *path, const char *name, size_t name_len, int64_t index)
{
    if (index >= 0) {
        g_string_append_printf(path, "[%" G_GINT64_FORMAT "]", index);
        return;
    }
    if (path->len > 0) {
        g_string_append_c(path, '.');
    }
    g_string_append_len(path, name, (gssize)name_len);
}

void fields_append_quoted(GString *out, const char *s, size_t len)
{
    g_string_append_c(out, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            g_string_append_c(out, '\\');
            g_string_append_c(out, (char)c);
        } else if (c < 0x20 || c == 0x7f) {
            g_string_append_printf(out, "\\x%02x", c);
        } else {
            g_string_append_c(out, (char)c);
        }
    }
    g_string_append_c(out, '"');
}

bool fields_head_parse(const uint8_t *data, size_t len, size_t pos, FieldHead *h, const char **why)
{
    if (pos > len || len - pos < 2) {
        *why = "truncated field header";
        return false;
    }
    h->kind = data[pos];
    h->name_len = data[pos + 1];
    if (h->kind < FIELD_U8 || h->kind > FIELD_END) {
        *why = "unknown field kind";
        return false;
    }
    if (h->name_len > FIELDS_NAME_MAX) {
        *why = "field name longer than 63 bytes";
        return false;
    }
    if (len - pos - 2 < h->name_len) {
        *why = "truncated field name";
        return false;
    }
    h->name = (const char *)data + pos + 2;
    if (h->name_len > 0 && !fields_name_valid(h->name, h->name_len)) {
        *why = "field name outside [A-Za-z0-9_-]";
        return false;
    }
    if (h->kind == FIELD_END && h->name_len != 0) {
        *why = "end marker with a name";
        return false;
    }
    h->value = pos + 2 + h->name_len;
    return true;
}
