/* Parsing of command-line values shared by the subcommands. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* Parses a size such as "4096", "256M", "4G", "1.5G", "512KiB". Suffixes K, M, G, T
 * (powers of 1024, optional "iB"/"B"). A bare number is multiplied by
 * `default_unit` (1 for bytes; QEMU's -m uses MiB). Returns false with an error
 * quoting the text on bad syntax or overflow. */
bool parse_size(const char *text, uint64_t default_unit, uint64_t *out, GError **error);

/* Parses a whole number in [min, max]; `what` names the option in errors. */
bool parse_uint(const char *text, const char *what, uint64_t min, uint64_t max, uint64_t *out,
                GError **error);
