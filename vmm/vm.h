/* A KVM virtual machine: RAM, vCPU threads, in-kernel irqchip and PIT, PIO devices,
 * and run control (pause/resume of every vCPU with consistent state). */
#pragma once

#include "pio.h"
#include "ram.h"

#include <glib.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define VM_MAX_VCPUS 32

typedef struct Vm Vm;
typedef struct Vcpu Vcpu;

typedef enum {
    VM_NOTICE_FATAL,      /* a vCPU stopped: triple fault, unhandled I/O, KVM error */
    VM_NOTICE_DEBUG_EXIT, /* the guest wrote to the debug-exit port */
} VmNoticeKind;

/* Called from a vCPU thread; `message` is only valid during the call. */
typedef void (*VmNoticeFunc)(void *opaque, VmNoticeKind kind, int code, const char *message);

struct Vcpu {
    Vm *vm;
    unsigned index;
    int fd;
    struct kvm_run *run;
    size_t run_size;
    pthread_t thread;
    bool thread_started;
    bool dead;            /* stopped for good after a fatal exit */
    uint64_t throttle_us; /* atomic: sleep this long at the next kick (throttling) */
    uint64_t exits;
};

struct Vm {
    int kvm_fd;
    int vm_fd;
    GuestRam ram;
    unsigned n_vcpus;
    Vcpu vcpus[VM_MAX_VCPUS];
    struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID, patched per vCPU */
    PioBus pio;

    /* run control: see vm_pause() */
    GMutex lock;
    GCond cond;
    atomic_bool pause_requested;
    atomic_bool quit;
    unsigned parked;

    VmNoticeFunc notice;
    void *notice_opaque;

    /* dirty tracking (dirty.c) */
    struct {
        bool available;
        bool active;                       /* atomic */
        uint64_t *vmm[RAM_MAX_BLOCKS];     /* pages the VMM wrote */
        uint64_t *scratch[RAM_MAX_BLOCKS]; /* KVM_GET_DIRTY_LOG buffer */
    } dirty;

    /* vCPU throttling for auto-converge (throttle.c) */
    struct {
        unsigned percent; /* atomic */
        GThread *thread;
        GMutex lock;
        GCond cond;
        bool stop;
    } throttle;
};

typedef struct VmConfig {
    uint64_t memory; /* bytes */
    unsigned cpus;
    RamBacking backing;
} VmConfig;

/* Opens /dev/kvm, creates the VM, its RAM, irqchip, PIT and vCPUs (threads not
 * started). Returns NULL with an error naming what failed. */
Vm *vm_new(const VmConfig *cfg, GError **error);

/* Starts one thread per vCPU. The vCPUs stay parked until vm_resume(). */
bool vm_start(Vm *vm, GError **error);

/* Stops every vCPU and waits until all are parked outside KVM_RUN with pending
 * I/O completed, so that register and device state can be read or written. */
void vm_pause(Vm *vm);
void vm_resume(Vm *vm);

/* Stops and joins the vCPU threads and frees everything. NULL is fine. */
void vm_free(Vm *vm);

/* Makes the vCPUs sleep `percent`% of each 10 ms period (0 = off). */
void vm_set_throttle(Vm *vm, unsigned percent);

/* Raises or lowers an interrupt line of the in-kernel PIC/IOAPIC. */
void vm_set_irq(Vm *vm, unsigned irq, int level);

/* Called by vCPU threads (vcpu.c). */
void vm_vcpu_park(Vcpu *v);
void vm_vcpu_fatal(Vcpu *v, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
void vm_vcpu_notice(Vcpu *v, VmNoticeKind kind, int code, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
