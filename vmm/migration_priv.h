/* Internal state of the VMM's migration module (migration*.c). */
#pragma once

#include "migration.h"
#include "precopy.h"
#include "stream.h"
#include "uri.h"

#include <vmsnap/vm.h>

typedef enum {
    MIG_NONE,
    MIG_SETUP,
    MIG_ACTIVE,
    MIG_PRE_SWITCHOVER,
    MIG_DEVICE,
    MIG_COMPLETED,
    MIG_FAILED,
    MIG_CANCELLING,
    MIG_CANCELLED,
} MigStatus;

/* QEMU's migration parameters and capabilities that vmsnap implements. */
typedef struct MigParams {
    int64_t multifd_channels;
    int64_t downtime_limit; /* ms */
    int64_t max_bandwidth;  /* bytes/s, 0 = unlimited */
    int64_t cpu_throttle_initial;
    int64_t cpu_throttle_increment;
    int64_t max_cpu_throttle;
    bool x_page_checksums;
    bool cap_events;
    bool cap_multifd;
    bool cap_auto_converge;
    bool cap_pause_before_switchover;
    bool cap_validate_uuid;
} MigParams;

/* An incoming stream migration (the destination side). */
typedef struct Incoming {
    MigStatus status; /* atomic */
    MigrateUri uri;
    struct TransportListener *listener;
    VStream *main; /* exec: / fd: streams, before the thread takes it */
    GThread *thread;
    struct Receiver *rx;
    GError *error;
    uint64_t ran_us, loaded_us, resumed_us; /* the receive thread's steps (debug) */
    bool validate_uuid_failed;
} Incoming;

struct Migration {
    Machine *m;
    Incoming in;
    MigParams params;
    MigStatus status; /* atomic: the job thread moves it forward */
    uint64_t start_us, setup_us, end_us;
    RunState prev_state;
    bool was_running;
    bool paused_by_us; /* atomic */
    char *error_desc;
    int cancel; /* atomic */
    GThread *thread;
    /* the job */
    MigrateUri uri;
    int fd; /* fd: target, or -1 */
    bool fd_is_file;
    VmsnapVm vm;
    VmsnapVmOps ops;
    VmsnapRamBlock blocks[RAM_MAX_BLOCKS];
    VmsnapProgress progress;
    VmsnapSaveStats file_stats;
    PrecopyState pst;
    bool is_file;
    GError *job_error;
    /* pause-before-switchover */
    GMutex lock;
    GCond cond;
    bool continue_requested;
};

Migration *migration_get(Machine *m);
void migration_set_status(Migration *g, MigStatus s);
MigStatus migration_status(const Migration *g);
const char *migration_status_name(MigStatus s);
bool migration_active(const Migration *g);

/* migration_out.c */
struct SaveSink *migration_stream_sink_new(Migration *g, GError **error);
bool migration_out_start(Migration *g, GError **error);
/* migration.c: called in the main thread when the job thread ends. */
void migration_out_finished(Migration *g);
