/*
 * Self-describing fields, the wire level (docs/FORMAT.md section 5): kind IDs,
 * limits, names and field paths, shared by the writer, the reader and the printer.
 * Internal to format/.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* On-disk field kinds. When adding a kind, also update fields_kind_name(),
 * fields_fixed_size(), the reader, the printer and docs/FORMAT.md section 5. */
typedef enum {
    FIELD_U8 = 1,
    FIELD_U16 = 2,
    FIELD_U32 = 3,
    FIELD_U64 = 4,
    FIELD_I64 = 5,
    FIELD_BOOL = 6,
    FIELD_BYTES = 7,
    FIELD_STR = 8,
    FIELD_STRUCT = 9,
    FIELD_ARRAY = 10,
    FIELD_END = 11,
} FieldKind;

#define FIELDS_NAME_MAX    63u
#define FIELDS_MAX_DEPTH   16u
#define FIELDS_MAX_BYTES   (16u << 20)
#define FIELDS_MAX_STR     (64u << 10)
#define FIELDS_MAX_PAYLOAD (256u << 20) /* FORMAT_MAX_SECTION_SIZE */

/* "u8", "u64", "struct", ...; "unknown kind" for values outside the enum. */
const char *fields_kind_name(unsigned kind);

/* Size of the value of a fixed-size kind (U8..BOOL), 0 for the others. */
size_t fields_fixed_size(unsigned kind);

/* True when name[0..len) is 1 to 63 characters of [A-Za-z0-9_-]. */
bool fields_name_valid(const char *name, size_t len);

/* Appends one path component: ".name" (or "name" at the start) or "[index]". */
void fields_path_append(GString *path, const char *name, size_t name_len, int64_t index);

/* Appends s as a double-quoted string, escaping '"', '\\' and control bytes. */
void fields_append_quoted(GString *out, const char *s, size_t len);

/* One field header, decoded by fields_head_parse(). */
typedef struct FieldHead {
    uint8_t kind;
    uint8_t name_len;
    const char *name; /* points into the payload, not NUL-terminated */
    size_t value;     /* payload offset of the value */
} FieldHead;

/*
 * Decodes the header of the field at data[pos] (kind, name length, name): the
 * kind must be known, the name length at most 63, the name in the charset (or
 * empty) and inside the payload. On error returns false and sets *why to a static
 * description.
 */
bool fields_head_parse(const uint8_t *data, size_t len, size_t pos, FieldHead *h, const char **why);
