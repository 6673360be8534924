#include "vcpu.h"

#include "cpuid.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* The kick signal. Its handler sets immediate_exit in the interrupted vCPU's run
 * area, so a kick that lands just before KVM_RUN still makes KVM_RUN return. */
#define VCPU_KICK_SIGNAL SIGUSR1

static __thread struct kvm_run *current_run;

static void kick_handler(int sig)
{
    (void)sig;
    struct kvm_run *run = current_run;
    if (run)
        __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
}

void vcpu_install_kick_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: KVM_RUN must return EINTR */
    sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
}

void vcpu_kick(Vcpu *v)
{
    if (v->thread_started)
        pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

bool vcpu_init(Vm *vm, unsigned index, GError **error)
{
    Vcpu *v = &vm->vcpus[index];
    memset(v, 0, sizeof(*v));
    v->vm = vm;
    v->index = index;
    v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (v->fd < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "KVM_CREATE_VCPU %u failed: %s",
                    index, g_strerror(err));
        return false;
    }
    int size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (size <= 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "KVM_GET_VCPU_MMAP_SIZE failed: %s",
                    g_strerror(errno));
        return false;
    }
    v->run_size = (size_t)size;
    void *run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (run == MAP_FAILED) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot map the run area of vCPU %u: %s",
                    index, g_strerror(errno));
        return false;
    }
    v->run = run;
    return cpuid_apply(v->fd, vm->cpuid, index, vm->n_vcpus, error);
}

void vcpu_destroy(Vcpu *v)
{
    if (v->run)
        munmap(v->run, v->run_size);
    if (v->fd > 0)
        close(v->fd);
    v->run = NULL;
    v->fd = -1;
}

static uint64_t vcpu_rip(Vcpu *v)
{
    struct kvm_regs regs;
    if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
        return 0;
    return regs.rip;
}

static void handle_io(Vcpu *v)
{
    struct kvm_run *run = v->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

    for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
        if (!pio_dispatch(&v->vm->pio, run->io.port, is_write, data, run->io.size)) {
            uint32_t value = 0;
            memcpy(&value, data, MIN(run->io.size, sizeof(value)));
            if (is_write)
                vm_vcpu_fatal(v,
                              "unhandled I/O: out port 0x%04x, %u byte(s), value 0x%x, rip "
                              "0x%" G_GINT64_MODIFIER "x",
                              run->io.port, run->io.size, value, vcpu_rip(v));
            else
                vm_vcpu_fatal(
                    v, "unhandled I/O: in port 0x%04x, %u byte(s), rip 0x%" G_GINT64_MODIFIER "x",
                    run->io.port, run->io.size, vcpu_rip(v));
            return;
        }
    }
}

static void report_internal_error(Vcpu *v)
{
    struct kvm_run *run = v->run;
    GString *s = g_string_new(NULL);
    uint32_t sub = run->internal.suberror;

    g_string_append_printf(s, "KVM internal error, suberror %u", sub);
    if (sub == KVM_INTERNAL_ERROR_EMULATION) {
        g_string_append(s, " (emulation failure: the instruction is not supported by this KVM's "
                           "instruction emulator)");
#ifdef KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
        if (run->emulation_failure.ndata >= 3 &&
            (run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
            g_string_append(s, ", instruction bytes:");
            for (unsigned i = 0; i < run->emulation_failure.insn_size && i < 15; i++)
                g_string_append_printf(s, " %02x", run->emulation_failure.insn_bytes[i]);
        }
#endif
    }
    g_string_append_printf(s, ", rip 0x%" G_GINT64_MODIFIER "x", vcpu_rip(v));
    vm_vcpu_fatal(v, "%s", s->str);
    g_string_free(s, TRUE);
}

/* Returns false when the vCPU must stop for good. */
static bool handle_exit(Vcpu *v)
{
    struct kvm_run *run = v->run;

    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        handle_io(v);
        return !v->dead;
    case KVM_EXIT_MMIO:
        vm_vcpu_fatal(v,
                      "unhandled MMIO %s at 0x%" G_GINT64_MODIFIER
                      "x, %u byte(s), rip 0x%" G_GINT64_MODIFIER "x",
                      run->mmio.is_write ? "write" : "read", (uint64_t)run->mmio.phys_addr,
                      run->mmio.len, vcpu_rip(v));
        return false;
    case KVM_EXIT_SHUTDOWN:
        vm_vcpu_fatal(v, "guest triple fault (KVM_EXIT_SHUTDOWN), rip 0x%" G_GINT64_MODIFIER "x",
                      vcpu_rip(v));
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        report_internal_error(v);
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        vm_vcpu_fatal(v, "KVM entry failed, hardware reason 0x%" G_GINT64_MODIFIER "x",
                      (uint64_t)run->fail_entry.hardware_entry_failure_reason);
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        vm_vcpu_fatal(v, "guest system event %u (shutdown/reset/crash)", run->system_event.type);
        return false;
    case KVM_EXIT_HLT:
        vm_vcpu_fatal(v, "guest halted with no in-kernel irqchip to wake it");
        return false;
    default:
        vm_vcpu_fatal(v, "unexpected KVM exit reason %u", run->exit_reason);
        return false;
    }
}

static void *vcpu_thread(void *opaque)
{
    Vcpu *v = opaque;
    Vm *vm = v->vm;
    sigset_t set;

    g_autofree char *name = g_strdup_printf("vcpu%u", v->index);
    pthread_setname_np(pthread_self(), name);
    current_run = v->run;
    sigemptyset(&set);
    sigaddset(&set, VCPU_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    while (!atomic_load(&vm->quit)) {
        if (atomic_load(&vm->pause_requested)) {
            vm_vcpu_park(v);
            continue;
        }
        int r = ioctl(v->fd, KVM_RUN, 0);
        if (r < 0) {
            int err = errno;
            if (err == EINTR || err == EAGAIN) {
                /* Clear first, then the loop re-reads the flags: a kick after this
                 * point sets immediate_exit again. */
                __atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
                uint64_t nap = __atomic_exchange_n(&v->throttle_us, 0, __ATOMIC_ACQ_REL);
                if (nap && !atomic_load(&vm->pause_requested))
                    g_usleep(nap);
                continue;
            }
            vm_vcpu_fatal(v, "KVM_RUN failed: %s", g_strerror(err));
            break;
        }
        v->exits++;
        if (!handle_exit(v))
            break;
    }
    current_run = NULL;
    return NULL;
}

bool vcpu_start_thread(Vcpu *v, GError **error)
{
    int err = pthread_create(&v->thread, NULL, vcpu_thread, v);
    if (err) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "cannot start the thread of vCPU %u: %s", v->index, g_strerror(err));
        return false;
    }
    v->thread_started = true;
    return true;
}
