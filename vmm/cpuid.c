#include "cpuid.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

struct kvm_cpuid2 *cpuid_supported(int kvm_fd, GError **error)
{
    for (unsigned nent = 128; nent <= 4096; nent *= 2) {
        struct kvm_cpuid2 *c = g_malloc0(sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
        c->nent = nent;
        if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
            return c;
        int err = errno;
        g_free(c);
        if (err != E2BIG) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                        "KVM_GET_SUPPORTED_CPUID failed: %s", g_strerror(err));
            return NULL;
        }
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "KVM_GET_SUPPORTED_CPUID: too many entries");
    return NULL;
}

bool cpuid_apply(int vcpu_fd, const struct kvm_cpuid2 *base, unsigned index, unsigned count,
                 GError **error)
{
    size_t size = sizeof(*base) + base->nent * sizeof(struct kvm_cpuid_entry2);
    g_autofree struct kvm_cpuid2 *c = g_memdup2(base, size);

    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        switch (e->function) {
        case 1:
            /* initial APIC ID and the number of logical processors */
            e->ebx = (e->ebx & 0x0000ffffu) | (index << 24) | (MIN(count, 255u) << 16);
            e->ecx |= 1u << 31; /* hypervisor present */
            if (count > 1)
                e->edx |= 1u << 28; /* HTT: the count field is valid */
            break;
        case 0xb:
        case 0x1f:
            e->edx = index; /* x2APIC ID */
            break;
        default:
            break;
        }
    }
    if (ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "KVM_SET_CPUID2 on vCPU %u failed: %s", index, g_strerror(err));
        return false;
    }
    return true;
}
