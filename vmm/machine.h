/* The machine: a VM with its devices, control socket and main loop. */
#pragma once

#include "chardev.h"
#include "qmp.h"
#include "runstate.h"
#include "uart.h"
#include "vm.h"

#include <glib.h>

/* `vmsnap run` exit codes (docs/CLI.md). */
enum {
    MACHINE_EXIT_OK = 0,
    MACHINE_EXIT_USAGE = 1,  /* bad options, or the VM could not be created */
    MACHINE_EXIT_FAILED = 2, /* the VM stopped on a guest or KVM error */
};

typedef struct MachineConfig {
    uint64_t memory; /* bytes */
    unsigned cpus;
    RamBacking backing;
    char *kernel;         /* multiboot ELF, bzImage or vmlinux; NULL = the embedded dirty guest */
    char *initrd;         /* Linux initrd (initramfs) path, or NULL */
    char *append;         /* kernel command line */
    char *serial;         /* --serial: stdio | file:PATH[,input=INPATH] | unix:PATH | none */
    bool serial_no_stdin; /* stdin carries the incoming stream: stdio is output only */
    char *qmp;            /* unix:PATH, or NULL */
    char *name;
    char *uuid;  /* canonical text form */
    bool paused; /* start in prelaunch, like QEMU's -S; after a restore: paused */
    /* Incoming migration / restore: no kernel is loaded, the VM starts in inmigrate. */
    bool incoming;
    bool incoming_defer;    /* wait for QMP migrate-incoming */
    char *incoming_uri;     /* loaded by the caller after machine_new() */
    bool restore_mode_copy; /* copy instead of map */
    bool verify;            /* check every page checksum before running */
    char **skip_devices;    /* test-only: device sections not to load */
} MachineConfig;

typedef struct DevState DevState;
typedef struct Migration Migration;

typedef struct Machine {
    MachineConfig cfg;
    Vm *vm;
    DevState *devstate;
    Migration *mig;
    char *kernel_desc; /* kernel path, or "embedded:guest/dirty" */
    uint64_t kernel_xxh3;
    Chardev serial;
    Uart uart;
    QmpServer *qmp;
    bool qmp_listening; /* the --qmp socket exists (machine_listen_qmp) */
    GMainLoop *loop;
    RunState state;
    int exit_code;
    bool shutting_down;
    guint signal_sources[3];
} Machine;

void machine_config_clear(MachineConfig *cfg);

/* Creates the VM, loads the kernel, opens the serial backend and the QMP socket.
 * Returns NULL with an error that names the option, file or resource at fault. */
Machine *machine_new(const MachineConfig *cfg, GError **error);

/* Starts the vCPUs (unless paused) and runs the main loop until quit, a signal,
 * or a fatal guest error. Returns the process exit code. */
int machine_run(Machine *m);

void machine_free(Machine *m);

/* Starts listening on the --qmp socket; machine_new() does it unless the config has
 * an incoming URI, whose caller starts the incoming side first. Idempotent. */
bool machine_listen_qmp(Machine *m, GError **error);

/* Queues fn(data) on the main loop, from any thread. Never runs it in the caller,
 * unlike g_main_context_invoke() when the loop is not running yet: a worker thread
 * that the callback joins must not be the one running it. */
void machine_call_in_main(Machine *m, gint priority, GSourceFunc fn, gpointer data,
                          GDestroyNotify notify);

/* Run control, main thread only. stop/cont emit STOP/RESUME as QEMU does. */
void machine_stop(Machine *m, RunState stopped_state);
bool machine_cont(Machine *m, GError **error);
/* The run state is written by the migration thread too: read and write it with these. */
void machine_set_state(Machine *m, RunState s);
RunState machine_state(const Machine *m);

/* Ends the main loop with `exit_code` after emitting SHUTDOWN. */
void machine_shutdown(Machine *m, int exit_code, bool guest, const char *reason);

/* Registers the VM's QMP commands (qmp_vm.c). */
void machine_register_qmp(Machine *m);
