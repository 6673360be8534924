/* Migration URIs, as QEMU spells them: file:PATH[,offset=N], fd:NAME, exec:CMD,
 * unix:PATH, tcp:HOST:PORT. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    MIGRATE_URI_FILE,
    MIGRATE_URI_FD,
    MIGRATE_URI_EXEC,
    MIGRATE_URI_UNIX,
    MIGRATE_URI_TCP,
} MigrateUriKind;

typedef struct MigrateUri {
    MigrateUriKind kind;
    char *path;      /* file: and unix: */
    uint64_t offset; /* file: ,offset=N */
    bool has_offset; /* ",offset=" was given (even 0): write in place */
    char *fdname;    /* fd: */
    char *command;   /* exec: */
    char *host;      /* tcp: */
    char *port;      /* tcp: (string: may be a service name or 0) */
} MigrateUri;

/* Parses `uri`. Errors use QEMU's wording where QEMU has one:
 * "Parameter 'uri' expects a valid migration protocol". */
bool migrate_uri_parse(const char *uri, MigrateUri *out, GError **error);
void migrate_uri_clear(MigrateUri *u);
const char *migrate_uri_kind_name(MigrateUriKind k);
