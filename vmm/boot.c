#include "boot.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#define GDT_CODE32 0x08
#define GDT_DATA32 0x10
#define GDT_TSS    0x18

static const uint64_t boot_gdt[] = {
    0, 0x00cf9a000000ffffull, /* 0x08: 32-bit code, base 0, limit 4 GiB */
    0x00cf92000000ffffull,    /* 0x10: 32-bit data, base 0, limit 4 GiB */
    0x00008b000000ffffull,    /* 0x18: busy 32-bit TSS at 0 (only to satisfy entry checks) */
};

void boot_flat_segment(struct kvm_segment *s, uint16_t selector, uint8_t type, bool code64)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffffu;
    s->selector = selector;
    s->type = type;
    s->present = 1;
    s->dpl = 0;
    s->s = 1;
    s->g = 1;
    s->l = code64;
    s->db = !code64;
}

bool boot_vcpu_ioctl(Vcpu *v, unsigned long req, void *arg, const char *what, GError **error)
{
    if (ioctl(v->fd, req, arg) == 0)
        return true;
    int err = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s on vCPU %u failed: %s", what,
                v->index, g_strerror(err));
    return false;
}

void boot_sregs_tables(struct kvm_sregs *s, uint16_t tss, uint64_t gdt_base, uint16_t gdt_limit)
{
    s->es = s->fs = s->gs = s->ss = s->ds;
    memset(&s->tr, 0, sizeof(s->tr));
    s->tr.selector = tss;
    s->tr.limit = 0xffff;
    s->tr.type = 0xb; /* busy TSS: VM entry checks want one */
    s->tr.present = 1;
    memset(&s->ldt, 0, sizeof(s->ldt));
    s->ldt.type = 0x2;
    s->ldt.present = 1;
    s->ldt.limit = 0xffff;
    s->gdt.base = gdt_base;
    s->gdt.limit = gdt_limit;
    s->idt.base = 0;
    s->idt.limit = 0;
}

static bool setup_vcpu(Vcpu *v, const MultibootImage *img, GError **error)
{
    struct kvm_sregs sregs;

    if (v->index > 0) {
        /* With the in-kernel LAPIC an AP waits for INIT/SIPI; start it directly. */
        struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
        if (!boot_vcpu_ioctl(v, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE", error))
            return false;
    }
    if (!boot_vcpu_ioctl(v, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS", error))
        return false;
    boot_flat_segment(&sregs.cs, GDT_CODE32, 0xb, false);
    boot_flat_segment(&sregs.ds, GDT_DATA32, 0x3, false);
    boot_sregs_tables(&sregs, GDT_TSS, BOOT_GDT_ADDR, sizeof(boot_gdt) - 1);
    sregs.cr0 = 0x11; /* PE | ET; paging off */
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    if (!boot_vcpu_ioctl(v, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS", error))
        return false;

    struct kvm_regs regs = {
        .rflags = 0x2,
        .rip = img->entry,
        .rax = MULTIBOOT_BOOTLOADER_MAGIC,
        .rbx = img->mbi_addr,
        .rcx = v->index,
        .rdx = v->vm->n_vcpus,
        .rsi = VMSNAP_BOOT_MAGIC,
    };
    return boot_vcpu_ioctl(v, KVM_SET_REGS, &regs, "KVM_SET_REGS", error);
}

bool boot_multiboot_vcpus(Vm *vm, const MultibootImage *img, GError **error)
{
    void *gdt = ram_ptr(&vm->ram, BOOT_GDT_ADDR, sizeof(boot_gdt));
    if (!gdt) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "no guest RAM for the boot GDT");
        return false;
    }
    memcpy(gdt, boot_gdt, sizeof(boot_gdt));
    for (unsigned i = 0; i < vm->n_vcpus; i++)
        if (!setup_vcpu(&vm->vcpus[i], img, error))
            return false;
    return true;
}
