#include "runstate.h"

static const char *const names[RUN_STATE__MAX] = {
    [RUN_STATE_PRELAUNCH] = "prelaunch",
    [RUN_STATE_RUNNING] = "running",
    [RUN_STATE_PAUSED] = "paused",
    [RUN_STATE_INMIGRATE] = "inmigrate",
    [RUN_STATE_FINISH_MIGRATE] = "finish-migrate",
    [RUN_STATE_POSTMIGRATE] = "postmigrate",
    [RUN_STATE_SAVE_VM] = "save-vm",
    [RUN_STATE_RESTORE_VM] = "restore-vm",
    [RUN_STATE_INTERNAL_ERROR] = "internal-error",
    [RUN_STATE_SHUTDOWN] = "shutdown",
};

const char *runstate_name(RunState s)
{
    return (unsigned)s < RUN_STATE__MAX ? names[s] : "unknown";
}

bool runstate_is_running(RunState s)
{
    return s == RUN_STATE_RUNNING;
}
