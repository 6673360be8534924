/* Outgoing migration/save and incoming restore, driven by QMP (QEMU's commands
 * and states: setup -> active -> completed | failed | cancelled). */
#pragma once

#include "machine.h"

typedef enum {
    RESTORE_MODE_MAP,
    RESTORE_MODE_COPY,
} RestoreMode;

typedef struct IncomingOptions {
    RestoreMode mode;
    bool verify; /* check every page checksum before running (map) */
} IncomingOptions;

/* Registers migrate, migrate_cancel, query-migrate, migrate-set-*, query-migrate-*,
 * migrate-incoming. */
void migration_register_qmp(Machine *m);

/* Restores the VM from `uri` (file:PATH[,offset=N], fd:NAME, or a plain path) while
 * the machine is in inmigrate: RAM (map or copy), then device state. On success
 * the machine is paused (cfg.paused) or running. Returns false with an error naming
 * the file and what is wrong; the machine stays in inmigrate. */
bool migration_incoming(Machine *m, const char *uri, const IncomingOptions *opt, GError **error);

/* Same, from a snapshot the caller opened (with VMSNAP_OPEN_NO_PAGE_CHECKSUMS only for
 * map restores without verify). */
typedef struct VmsnapSnapshot VmsnapSnapshot;
bool migration_incoming_snapshot(Machine *m, VmsnapSnapshot *s, const IncomingOptions *opt,
                                 GError **error);

/* Open flags suited to a restore mode. */
unsigned migration_open_flags(const IncomingOptions *opt);

/* Opens file:PATH[,offset=N], fd:NAME (needs the QMP server) or a plain path. */
VmsnapSnapshot *migration_open_snapshot(Machine *m, const char *uri, unsigned flags,
                                        GError **error);

/* Starts an incoming migration from `uri` while the machine is in inmigrate: a
 * snapshot file (loaded before this returns) or a stream (unix:, tcp: and exec: are
 * listened to / run now and received in a thread; the VM resumes when it ends, or
 * the process exits 1 if the stream is broken). Returns false with an error. */
bool migration_incoming_start(Machine *m, const char *uri, GError **error);

/* Same for a stream the caller opened (owned): received in a thread. */
typedef struct VStream VStream;
bool migration_incoming_stream(Machine *m, VStream *s, GError **error);

/* Reads a stream's header and CONFIG record without consuming them: returns the
 * CONFIG fields and version, and replaces *s with a stream that replays the peeked
 * bytes first. False with an error naming the stream. */
bool migration_peek_config(VStream **s, GBytes **fields, uint32_t *version, GError **error);

/* Adds the destination's "socket-address" (and "status" when there is no outgoing
 * migration) to a query-migrate answer being built. */
void migration_query_incoming(Machine *m, JsonBuilder *b);

/* Stops an incoming migration in progress (at exit). */
void migration_incoming_cleanup(Machine *m);

/* Cancels an outgoing migration in progress and waits for its thread. */
void migration_cleanup(Machine *m);
