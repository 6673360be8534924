/* vCPU throttling (auto-converge): every 10 ms period, each vCPU is kicked out of
 * KVM_RUN and sleeps `percent`% of the period. A thread does the kicking because a
 * guest that never exits to the VMM would otherwise never be slowed down. */
#include "vcpu.h"

#define THROTTLE_PERIOD_US 10000

static gpointer throttle_thread(gpointer data)
{
    Vm *vm = data;
    g_mutex_lock(&vm->throttle.lock);
    while (!vm->throttle.stop) {
        unsigned pct = __atomic_load_n(&vm->throttle.percent, __ATOMIC_RELAXED);
        if (!pct) {
            g_cond_wait(&vm->throttle.cond, &vm->throttle.lock);
            continue;
        }
        uint64_t sleep_us = (uint64_t)THROTTLE_PERIOD_US * pct / 100;
        uint64_t run_us = THROTTLE_PERIOD_US - sleep_us;
        g_mutex_unlock(&vm->throttle.lock);
        g_usleep(run_us);
        for (unsigned i = 0; i < vm->n_vcpus; i++) {
            __atomic_store_n(&vm->vcpus[i].throttle_us, sleep_us, __ATOMIC_RELEASE);
            vcpu_kick(&vm->vcpus[i]);
        }
        g_usleep(sleep_us);
        g_mutex_lock(&vm->throttle.lock);
    }
    g_mutex_unlock(&vm->throttle.lock);
    return NULL;
}

void vm_set_throttle(Vm *vm, unsigned percent)
{
    percent = MIN(percent, 99u);
    g_mutex_lock(&vm->throttle.lock);
    __atomic_store_n(&vm->throttle.percent, percent, __ATOMIC_RELAXED);
    if (percent && !vm->throttle.thread)
        vm->throttle.thread = g_thread_new("vmsnap-throttle", throttle_thread, vm);
    g_cond_broadcast(&vm->throttle.cond);
    g_mutex_unlock(&vm->throttle.lock);
}
