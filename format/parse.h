/* The snapshot parser's shared state and helpers (format/parse*.c only). */
#pragma once

#include "internal.h"

typedef struct {
    FormatSnapshot *s;
    FormatReadFn read;
    FormatMapFn map;
    void *opaque;
    unsigned flags;
} Parser;

/* "<what>: <message>"; returns false. */
bool parse_error(Parser *p, GError **error, int code, const char *fmt, ...) G_GNUC_PRINTF(4, 5);

/* "<what>: section TYPE 'name' instance N at offset X: <message>"; returns false. */
bool parse_section_error(Parser *p, unsigned i, GError **error, int code, const char *fmt, ...)
    G_GNUC_PRINTF(5, 6);

/* Directory entry rules that depend on the type (flags, instance, version, unknown
 * and required types) and the counts of the singleton sections. Before any payload
 * is read. */
bool parse_check_types(Parser *p, GError **error);

/* After the payloads are read and verified: the RAM block table against the
 * header, the per-block bitmaps and checksum tables, and FIELDS payloads. */
bool parse_check_ram(Parser *p, GError **error);
bool parse_check_fields(Parser *p, GError **error);
