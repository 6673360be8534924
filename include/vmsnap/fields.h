/*
 * Self-describing fields: how device state and configuration are written into a
 * snapshot (docs/FORMAT.md section 5). A device's save callback emits named,
 * typed fields; its load callback reads them back in the same order, and every
 * mismatch produces an error naming the section and the field path.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef struct VmsnapFieldWriter VmsnapFieldWriter;
typedef struct VmsnapFieldReader VmsnapFieldReader;

/* Error domain of the functions below. */
#define VMSNAP_FIELDS_ERROR (vmsnap_fields_error_quark())
GQuark vmsnap_fields_error_quark(void);

typedef enum {
    VMSNAP_FIELDS_ERROR_MISMATCH,  /* valid payload, but not the expected field list */
    VMSNAP_FIELDS_ERROR_MALFORMED, /* the payload breaks the encoding or its limits */
    VMSNAP_FIELDS_ERROR_VALUE,     /* a value the caller refused (vmsnap_fr_fail) */
    VMSNAP_FIELDS_ERROR_USAGE,     /* the writer or reader was used wrongly (bad name,
                                    * unbalanced struct/array, wrong element count) */
} VmsnapFieldsError;

/* Creates an empty writer. Never returns NULL. */
VmsnapFieldWriter *vmsnap_fw_new(void);

/* Append one field. Names are 1 to 63 characters of [A-Za-z0-9_-] (empty for
 * array elements). A bad name or an unbalanced end is a programming error: it is
 * recorded and reported by vmsnap_fw_finish(). */
void vmsnap_fw_u8(VmsnapFieldWriter *w, const char *name, uint8_t v);
void vmsnap_fw_u16(VmsnapFieldWriter *w, const char *name, uint16_t v);
void vmsnap_fw_u32(VmsnapFieldWriter *w, const char *name, uint32_t v);
void vmsnap_fw_u64(VmsnapFieldWriter *w, const char *name, uint64_t v);
void vmsnap_fw_i64(VmsnapFieldWriter *w, const char *name, int64_t v);
void vmsnap_fw_bool(VmsnapFieldWriter *w, const char *name, bool v);
void vmsnap_fw_bytes(VmsnapFieldWriter *w, const char *name, const void *data, size_t len);
void vmsnap_fw_str(VmsnapFieldWriter *w, const char *name, const char *s);
void vmsnap_fw_struct_begin(VmsnapFieldWriter *w, const char *name);
void vmsnap_fw_struct_end(VmsnapFieldWriter *w);
/* Exactly `count` elements (fields with name "" or NULL) must follow. */
void vmsnap_fw_array_begin(VmsnapFieldWriter *w, const char *name, uint32_t count);
void vmsnap_fw_array_end(VmsnapFieldWriter *w);

/* Appends already-encoded fields: a whole well-formed payload (as read from a
 * snapshot or a stream), at the top level. Returns true; false when the bytes are
 * not well formed (vmsnap_fields_check), a struct or array is open, the payload
 * would grow over its limit, or the writer had already failed: the error is
 * recorded and reported by vmsnap_fw_finish(). */
bool vmsnap_fw_raw(VmsnapFieldWriter *w, const void *fields, size_t len);

/* Returns the encoded payload and frees the writer, or NULL with an error (bad
 * name, unbalanced struct/array, wrong element count, size limit) and frees it. */
GBytes *vmsnap_fw_finish(VmsnapFieldWriter *w, GError **error);
void vmsnap_fw_free(VmsnapFieldWriter *w);

/*
 * Creates a reader over `data` (not copied; must outlive the reader). `section`,
 * `instance` and `version` only label errors:
 * "section 'cpu' instance 1 version 1: field 'sregs.cs.base': expected u64, found u32".
 *
 * Errors are sticky: after the first mismatch every read returns false and zeroes
 * its outputs, so a load callback may read everything and check once, with
 * vmsnap_fr_finish() or vmsnap_fr_failed().
 */
VmsnapFieldReader *vmsnap_fr_new(const void *data, size_t len, const char *section,
                                 uint32_t instance, uint32_t version);

/* Each returns true and stores the value when the next field has this kind and
 * name; false otherwise (and the reader is failed). */
bool vmsnap_fr_u8(VmsnapFieldReader *r, const char *name, uint8_t *out);
bool vmsnap_fr_u16(VmsnapFieldReader *r, const char *name, uint16_t *out);
bool vmsnap_fr_u32(VmsnapFieldReader *r, const char *name, uint32_t *out);
bool vmsnap_fr_u64(VmsnapFieldReader *r, const char *name, uint64_t *out);
bool vmsnap_fr_i64(VmsnapFieldReader *r, const char *name, int64_t *out);
bool vmsnap_fr_bool(VmsnapFieldReader *r, const char *name, bool *out);
/* The stored length must equal `len` exactly. */
bool vmsnap_fr_bytes(VmsnapFieldReader *r, const char *name, void *out, size_t len);
/* Any length up to `max`; *out is g_malloc'ed (free with g_free). */
bool vmsnap_fr_bytes_dup(VmsnapFieldReader *r, const char *name, size_t max, void **out,
                         size_t *len);
/* Up to `max` bytes; *out is a NUL-terminated g_malloc'ed copy; embedded NULs refused. */
bool vmsnap_fr_str(VmsnapFieldReader *r, const char *name, size_t max, char **out);
bool vmsnap_fr_struct_begin(VmsnapFieldReader *r, const char *name);
bool vmsnap_fr_struct_end(VmsnapFieldReader *r);
/* Reads the element count, which must be at most `max`. */
bool vmsnap_fr_array_begin(VmsnapFieldReader *r, const char *name, uint32_t max, uint32_t *count);
bool vmsnap_fr_array_end(VmsnapFieldReader *r);

/* Records a semantic error found by the caller (e.g. a value out of range) with the
 * current field path; returns false. */
bool vmsnap_fr_fail(VmsnapFieldReader *r, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* True once any read failed. */
bool vmsnap_fr_failed(const VmsnapFieldReader *r);

/* Checks that no error occurred and every field was consumed; frees the reader.
 * Returns false with the first error (section and field named). */
bool vmsnap_fr_finish(VmsnapFieldReader *r, GError **error);
void vmsnap_fr_free(VmsnapFieldReader *r);

/* Pretty-prints a whole payload, one line per scalar field:
 * "<prefix>.regs.rip = (u64) 0x0000000000101234\n". BYTES print as hex (long ones
 * abbreviated unless `full`). Returns false with an error on malformed input; `out`
 * then holds the lines before the malformed field. */
bool vmsnap_fields_print(const void *data, size_t len, const char *prefix, bool full, GString *out,
                         GError **error);

/* Checks that a whole payload is well formed (what vmsnap_fields_print() checks,
 * without printing). Returns false with a MALFORMED error naming the offset. */
bool vmsnap_fields_check(const void *data, size_t len, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmsnapFieldWriter, vmsnap_fw_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmsnapFieldReader, vmsnap_fr_free)

G_END_DECLS
