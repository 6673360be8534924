/* vCPU creation and the vCPU thread's run loop. */
#pragma once

#include "vm.h"

/* Creates vCPU `index` of vm (fd, run area, CPUID). */
bool vcpu_init(Vm *vm, unsigned index, GError **error);

/* Starts the thread; it parks until the VM is resumed. */
bool vcpu_start_thread(Vcpu *v, GError **error);

/* Forces the vCPU out of KVM_RUN (safe from any thread). */
void vcpu_kick(Vcpu *v);

/* Installs the kick signal handler; call once before starting vCPU threads. */
void vcpu_install_kick_handler(void);

/* Releases the run area and fd (the thread must be joined). */
void vcpu_destroy(Vcpu *v);
