/* Run states, with QEMU's names (query-status) and allowed transitions. */
#pragma once

#include <stdbool.h>

/* When adding a state, also update runstate_name() and runstate_is_running(). */
typedef enum {
    RUN_STATE_PRELAUNCH, /* started with --paused, never ran */
    RUN_STATE_RUNNING,
    RUN_STATE_PAUSED,         /* stopped by `stop` */
    RUN_STATE_INMIGRATE,      /* waiting for or receiving an incoming migration */
    RUN_STATE_FINISH_MIGRATE, /* paused for the final pass of an outgoing migration/save */
    RUN_STATE_POSTMIGRATE,    /* stopped after a completed outgoing migration/save */
    RUN_STATE_SAVE_VM,
    RUN_STATE_RESTORE_VM,
    RUN_STATE_INTERNAL_ERROR, /* a vCPU stopped on a KVM or emulation error */
    RUN_STATE_SHUTDOWN,
    RUN_STATE__MAX,
} RunState;

const char *runstate_name(RunState s);
bool runstate_is_running(RunState s);
