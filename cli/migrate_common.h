/*
 * What `vmsnap save` and `vmsnap migrate` share: drive a migration through a VM's
 * QMP socket (vmsnap's or QEMU's) with QEMU's commands only, follow it with
 * query-migrate and the MIGRATION / MIGRATION_PASS events, draw the progress line,
 * print the summary, map the outcome to an exit code.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define MIGRATE_EXIT_FAILED 2 /* the migration failed or was cancelled, or a command refused */
#define MIGRATE_EXIT_QMP    3 /* cannot connect, or QMP protocol error */

typedef struct MigrateRun {
    const char *prog;   /* "vmsnap save": prefixes every message */
    const char *socket; /* the QMP socket path (without "unix:") */
    const char *uri;    /* as sent in migrate {"uri"} */
    bool json;          /* print the final query-migrate object on stdout */
    bool resume;        /* send cont after completed (save --resume) */
    /* migrate-set-capabilities: events always; these when true. */
    bool multifd;
    bool auto_converge;
    bool validate_uuid;
    bool pause_before_switchover;
    /* A stopped save: `stop` a running VM before `migrate` (QMP's migrate is live on a
     * running VM, as in QEMU), and `cont` it again if the save fails. */
    bool stop_first;
    /* migrate-set-parameters, sent when any is set. */
    unsigned multifd_channels; /* 0: leave the VM's setting */
    int64_t downtime_limit;    /* ms; < 0: leave */
    int64_t max_bandwidth;     /* bytes/s; < 0: leave */
    /* The progress line of a live migration (passes, dirty rate, throttle) and the
     * passes in the summary, instead of save's bar with percent and ETA. */
    bool live_progress;
} MigrateRun;

/* Runs the migration to its end; returns the exit code (0, MIGRATE_EXIT_FAILED,
 * MIGRATE_EXIT_QMP). Messages go to stderr, the summary or JSON to stdout. The first
 * SIGINT/SIGTERM sends migrate_cancel; a second one kills the process. */
int migrate_run(const MigrateRun *r);

/* A relative file: or unix: path made absolute: the VM resolves paths in its own
 * working directory, not ours. Other URIs are copied. */
char *migrate_absolute_uri(const char *uri);

/* Checks "unix:PATH" (--qmp) and returns PATH, or NULL with an error. */
char *migrate_qmp_path(const char *qmp, GError **error);

/* Parses --downtime-limit MS (0 to 2000000, QEMU's range) and --max-bandwidth
 * BYTES/s (a size such as 100M: 100 MiB/s); an option not given (NULL) gives -1:
 * leave the VM's value. Returns false with an error naming the option. */
bool migrate_parse_limits(const char *downtime, const char *bandwidth, int64_t *downtime_limit,
                          int64_t *max_bandwidth, GError **error);
