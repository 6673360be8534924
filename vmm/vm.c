#include "vm.h"

#include "cpuid.h"
#include "dirty.h"
#include "vcpu.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Placed in the hole below 4 GiB; only used by VMX for real-mode emulation. */
#define KVM_TSS_ADDR 0xfffbd000ul

static bool kvm_check(int fd, int cap, const char *name, GError **error)
{
    if (ioctl(fd, KVM_CHECK_EXTENSION, cap) > 0)
        return true;
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "this KVM lacks %s, which vmsnap needs", name);
    return false;
}

static bool open_kvm(Vm *vm, GError **error)
{
    /* The override lets tests exercise the "no KVM" path. */
    const char *dev = g_getenv("VMSNAP_KVM_DEVICE");
    if (!dev || !*dev)
        dev = "/dev/kvm";
    vm->kvm_fd = open(dev, O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "cannot open %s: %s (vmsnap needs KVM: load kvm_intel or kvm_amd, or "
                    "run on a host with hardware or nested virtualization)",
                    dev, g_strerror(err));
        return false;
    }
    int api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "%s speaks KVM API version %d, vmsnap needs %d", dev, api, KVM_API_VERSION);
        return false;
    }
    return kvm_check(vm->kvm_fd, KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", error) &&
           kvm_check(vm->kvm_fd, KVM_CAP_PIT2, "KVM_CAP_PIT2", error) &&
           kvm_check(vm->kvm_fd, KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", error) &&
           kvm_check(vm->kvm_fd, KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", error);
}

static bool vm_ioctl(Vm *vm, unsigned long req, void *arg, const char *what, GError **error)
{
    if (ioctl(vm->vm_fd, req, arg) == 0)
        return true;
    int err = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s failed: %s", what,
                g_strerror(err));
    return false;
}

static bool map_ram(Vm *vm, GError **error)
{
    for (unsigned i = 0; i < vm->ram.n_blocks; i++) {
        RamBlock *b = &vm->ram.blocks[i];
        /* Dirty logging is armed from the start (manual protect, INITIALLY_SET): it
         * costs nothing until a fetch write-protects pages, and it makes starting a
         * migration free of the memslot update (an SRCU grace period, several ms). */
        struct kvm_userspace_memory_region region = {
            .slot = i,
            .flags = vm->dirty.available ? KVM_MEM_LOG_DIRTY_PAGES : 0,
            .guest_phys_addr = b->gpa,
            .memory_size = b->size,
            .userspace_addr = (uintptr_t)b->host,
        };
        if (!vm_ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION", error))
            return false;
    }
    return true;
}

Vm *vm_new(const VmConfig *cfg, GError **error)
{
    Vm *vm = g_new0(Vm, 1);
    vm->kvm_fd = vm->vm_fd = -1;
    g_mutex_init(&vm->lock);
    g_cond_init(&vm->cond);
    g_mutex_init(&vm->throttle.lock);
    g_cond_init(&vm->throttle.cond);
    atomic_store(&vm->pause_requested, true);

    if (cfg->cpus < 1 || cfg->cpus > VM_MAX_VCPUS) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%u vCPUs requested, vmsnap supports 1 to %d", cfg->cpus, VM_MAX_VCPUS);
        goto fail;
    }
    if (!open_kvm(vm, error))
        goto fail;
    int max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (max > 0 && cfg->cpus > (unsigned)max) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%u vCPUs requested, this KVM allows %d", cfg->cpus, max);
        goto fail;
    }
    do {
        vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    } while (vm->vm_fd < 0 && errno == EINTR);
    if (vm->vm_fd < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "KVM_CREATE_VM failed: %s",
                    g_strerror(err));
        goto fail;
    }
    /* Only VMX needs it; harmless elsewhere. */
    ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR);
    if (!vm_ioctl(vm, KVM_CREATE_IRQCHIP, NULL, "KVM_CREATE_IRQCHIP", error))
        goto fail;
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (!vm_ioctl(vm, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2", error))
        goto fail;

    if (!ram_layout(&vm->ram, cfg->memory, error) || !ram_alloc(&vm->ram, cfg->backing, error) ||
        !dirty_log_init(vm, error) || !map_ram(vm, error))
        goto fail;

    vm->cpuid = cpuid_supported(vm->kvm_fd, error);
    if (!vm->cpuid)
        goto fail;
    vm->n_vcpus = cfg->cpus;
    for (unsigned i = 0; i < cfg->cpus; i++)
        if (!vcpu_init(vm, i, error))
            goto fail;
    return vm;

fail:
    vm_free(vm);
    return NULL;
}

bool vm_start(Vm *vm, GError **error)
{
    sigset_t set, old;

    vcpu_install_kick_handler();
    /* Threads inherit the mask: only vCPU threads unblock the kick signal. */
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (unsigned i = 0; i < vm->n_vcpus; i++)
        if (!vcpu_start_thread(&vm->vcpus[i], error))
            return false;
    return true;
}

void vm_pause(Vm *vm)
{
    g_mutex_lock(&vm->lock);
    atomic_store(&vm->pause_requested, true);
    for (unsigned i = 0; i < vm->n_vcpus; i++)
        vcpu_kick(&vm->vcpus[i]);
    while (vm->parked < vm->n_vcpus)
        g_cond_wait(&vm->cond, &vm->lock);
    g_mutex_unlock(&vm->lock);
}

void vm_resume(Vm *vm)
{
    g_mutex_lock(&vm->lock);
    atomic_store(&vm->pause_requested, false);
    g_cond_broadcast(&vm->cond);
    g_mutex_unlock(&vm->lock);
}

void vm_vcpu_park(Vcpu *v)
{
    Vm *vm = v->vm;

    /* Re-enter once with immediate_exit set: KVM completes a pending PIO/MMIO
     * and returns EINTR without running guest code, so the state is consistent. */
    __atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    ioctl(v->fd, KVM_RUN, 0);
    __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);

    g_mutex_lock(&vm->lock);
    vm->parked++;
    g_cond_broadcast(&vm->cond);
    while (atomic_load(&vm->pause_requested) && !atomic_load(&vm->quit))
        g_cond_wait(&vm->cond, &vm->lock);
    vm->parked--;
    g_mutex_unlock(&vm->lock);
}

void vm_vcpu_notice(Vcpu *v, VmNoticeKind kind, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (v->vm->notice)
        v->vm->notice(v->vm->notice_opaque, kind, code, msg);
}

void vm_vcpu_fatal(Vcpu *v, const char *fmt, ...)
{
    Vm *vm = v->vm;
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);

    /* A dead vCPU counts as parked forever, so vm_pause() never waits for it. */
    g_mutex_lock(&vm->lock);
    if (!v->dead) {
        v->dead = true;
        vm->parked++;
        g_cond_broadcast(&vm->cond);
    }
    g_mutex_unlock(&vm->lock);
    vm_vcpu_notice(v, VM_NOTICE_FATAL, 1, "vCPU %u: %s", v->index, msg);
}

void vm_set_irq(Vm *vm, unsigned irq, int level)
{
    struct kvm_irq_level l = { .irq = irq, .level = level };
    ioctl(vm->vm_fd, KVM_IRQ_LINE, &l);
}

void vm_free(Vm *vm)
{
    if (!vm)
        return;
    g_mutex_lock(&vm->throttle.lock);
    vm->throttle.stop = true;
    g_cond_broadcast(&vm->throttle.cond);
    g_mutex_unlock(&vm->throttle.lock);
    if (vm->throttle.thread)
        g_thread_join(vm->throttle.thread);
    if (vm->dirty.active)
        dirty_log_stop(vm);
    g_mutex_lock(&vm->lock);
    atomic_store(&vm->quit, true);
    g_cond_broadcast(&vm->cond);
    g_mutex_unlock(&vm->lock);
    for (unsigned i = 0; i < vm->n_vcpus; i++) {
        Vcpu *v = &vm->vcpus[i];
        if (v->thread_started) {
            vcpu_kick(v);
            pthread_join(v->thread, NULL);
            v->thread_started = false;
        }
    }
    for (unsigned i = 0; i < vm->n_vcpus; i++)
        vcpu_destroy(&vm->vcpus[i]);
    g_free(vm->cpuid);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    ram_free(&vm->ram);
    g_mutex_clear(&vm->lock);
    g_cond_clear(&vm->cond);
    g_mutex_clear(&vm->throttle.lock);
    g_cond_clear(&vm->throttle.cond);
    g_free(vm);
}
