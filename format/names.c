/* Section type names, the error domain, and section/block name rules. */
#include "internal.h"

G_DEFINE_QUARK(vmsnap_format_error, format_error)

const char *format_section_type_name(uint32_t type)
{
    switch ((FormatSectionType)type) {
    case FORMAT_SECTION_CONFIG:
        return "CONFIG";
    case FORMAT_SECTION_DEVICE:
        return "DEVICE";
    case FORMAT_SECTION_RAM_BLOCKS:
        return "RAM_BLOCKS";
    case FORMAT_SECTION_PRESENT_BITMAP:
        return "PRESENT_BITMAP";
    case FORMAT_SECTION_PAGE_CHECKSUMS:
        return "PAGE_CHECKSUMS";
    case FORMAT_SECTION_ZEROED_BITMAP:
        return "ZEROED_BITMAP";
    case FORMAT_SECTION_PARENT:
        return "PARENT";
    case FORMAT_SECTION_WORKSET:
        return "WORKSET";
    }
    return "unknown";
}

static bool name_char(char c)
{
    return g_ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
}

bool format_name_valid(const char *name, size_t max, bool allow_empty)
{
    if (name == NULL) {
        return allow_empty;
    }
    size_t len = 0;
    for (; name[len] != '\0'; len++) {
        if (len == max || !name_char(name[len])) {
            return false;
        }
    }
    return len > 0 || allow_empty;
}

bool format_name_decode(const uint8_t *field, size_t size, char *out, bool allow_empty,
                        const char **why)
{
    size_t len = 0;
    while (len < size && field[len] != 0) {
        if (!name_char((char)field[len])) {
            *why = "name has a character outside [A-Za-z0-9_.-]";
            return false;
        }
        len++;
    }
    if (len == size) {
        *why = "name is not NUL-terminated";
        return false;
    }
    for (size_t i = len; i < size; i++) {
        if (field[i] != 0) {
            *why = "name padding is not zero";
            return false;
        }
    }
    if (len == 0 && !allow_empty) {
        *why = "name is empty";
        return false;
    }
    memcpy(out, field, len);
    out[len] = '\0';
    return true;
}

void format_name_encode(uint8_t *field, size_t size, const char *name)
{
    memset(field, 0, size);
    if (name != NULL) {
        memcpy(field, name, MIN(strlen(name), size - 1));
    }
}
