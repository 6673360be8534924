/* SPDX-License-Identifier: MIT */
/*
 * JSON output in QEMU's own format, so that scripts matching QEMU's text
 * ("return": {}, "status": "running") keep working: ", " and ": " separators,
 * everything outside printable ASCII escaped as \uXXXX, doubles as %.17g.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

/* Appends @node (NULL is written as null) to @out. */
void qmp_json_append(GString *out, JsonNode *node);

/* Returns @node as a newly allocated string. */
char *qmp_json_to_string(JsonNode *node);
