#include "dirty.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>

bool dirty_log_init(Vm *vm, GError **error)
{
    int caps = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    uint64_t want = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;
    if (caps < 0 || ((uint64_t)caps & want) != want) {
        vm->dirty.available = false; /* only stopped saves then */
        return true;
    }
    struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = { want } };
    if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2) failed: %s", g_strerror(err));
        return false;
    }
    vm->dirty.available = true;
    return true;
}

bool dirty_log_start(Vm *vm, GError **error)
{
    if (!vm->dirty.available) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "this KVM has no manual dirty-log protection with INITIALLY_SET: live "
                    "migration is not possible (stop the VM first)");
        return false;
    }
    for (unsigned i = 0; i < vm->ram.n_blocks; i++) {
        size_t words = (size_t)((vm->ram.blocks[i].size / RAM_PAGE_SIZE + 63) / 64);
        vm->dirty.vmm[i] = g_new0(uint64_t, words);
        vm->dirty.scratch[i] = g_new0(uint64_t, words);
    }
    /* KVM logs since the VM was created (see vm.c): nothing to switch on. */
    __atomic_store_n(&vm->dirty.active, true, __ATOMIC_SEQ_CST);
    return true;
}

bool dirty_log_rearm(Vm *vm, unsigned b, uint64_t first, uint64_t count, const uint64_t *bitmap,
                     GError **error)
{
    g_assert(first % 64 == 0);
    struct kvm_clear_dirty_log clear = {
        .slot = b,
        .first_page = first,
        .num_pages = (uint32_t)count,
        .dirty_bitmap = (void *)bitmap,
    };
    if (ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "KVM_CLEAR_DIRTY_LOG for RAM block '%s', pages %" PRIu64 "+%" PRIu64
                    " failed: %s",
                    vm->ram.blocks[b].name, first, count, g_strerror(err));
        return false;
    }
    return true;
}

bool dirty_log_fetch(Vm *vm, unsigned b, uint64_t *bitmap, GError **error)
{
    RamBlock *blk = &vm->ram.blocks[b];
    uint64_t pages = blk->size / RAM_PAGE_SIZE;
    size_t words = (size_t)((pages + 63) / 64);
    uint64_t *buf = vm->dirty.scratch[b];

    memset(buf, 0, words * sizeof(uint64_t));
    struct kvm_dirty_log log = { .slot = b, .dirty_bitmap = buf };
    if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "KVM_GET_DIRTY_LOG for RAM block '%s' failed: %s", blk->name, g_strerror(err));
        return false;
    }
    /* Manual protect: the fetch only reads the log; dirty_log_rearm() re-protects
     * each range just before its pages are read. */
    uint64_t *vmm = vm->dirty.vmm[b];
    for (size_t w = 0; w < words; w++)
        bitmap[w] |= buf[w] | __atomic_exchange_n(&vmm[w], 0, __ATOMIC_RELAXED);
    return true;
}

void dirty_log_stop(Vm *vm)
{
    __atomic_store_n(&vm->dirty.active, false, __ATOMIC_SEQ_CST);
    for (unsigned i = 0; i < vm->ram.n_blocks; i++) {
        g_clear_pointer(&vm->dirty.vmm[i], g_free);
        g_clear_pointer(&vm->dirty.scratch[i], g_free);
    }
}

void dirty_log_mark(Vm *vm, uint64_t gpa, uint64_t len)
{
    if (!__atomic_load_n(&vm->dirty.active, __ATOMIC_ACQUIRE) || !len)
        return;
    for (unsigned i = 0; i < vm->ram.n_blocks; i++) {
        RamBlock *b = &vm->ram.blocks[i];
        if (gpa < b->gpa || gpa - b->gpa >= b->size || !vm->dirty.vmm[i])
            continue;
        uint64_t first = (gpa - b->gpa) / RAM_PAGE_SIZE;
        uint64_t last = MIN(gpa - b->gpa + len - 1, b->size - 1) / RAM_PAGE_SIZE;
        for (uint64_t p = first; p <= last; p++)
            __atomic_fetch_or(&vm->dirty.vmm[i][p / 64], 1ull << (p % 64), __ATOMIC_RELAXED);
    }
}
