/*
 * Device "cpu", one instance per vCPU: every piece of vCPU state KVM keeps outside
 * guest RAM (docs/DEVICES.md). Save reads it all with KVM_GET_*, load reads and
 * validates every field first and then applies it in the order KVM needs.
 */
#include "devstate.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>

#define CPU_VERSION     1
#define CPU_MAX_MSRS    1024u       /* bound on KVM_GET_MSR_INDEX_LIST */
#define CPU_MAX_XSAVE   (1u << 20)  /* bound on a stored XSAVE area */
#define CPU_MAX_LAPIC   (64u << 10) /* bound on a stored LAPIC page before the exact check */
#define CPU_N_IRQ_WORDS G_N_ELEMENTS(((struct kvm_sregs *)0)->interrupt_bitmap)

/* What this KVM can save, probed once per VM. */
typedef struct CpuCaps {
    uint32_t *msrs; /* readable MSRs, in KVM's order */
    unsigned n_msrs;
    size_t xsave_size; /* bytes KVM_GET_XSAVE(2) fills */
    bool xsave2;
} CpuCaps;

/* One vCPU's state, as KVM's structs. */
typedef struct CpuState {
    uint32_t index;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xsave *xsave; /* caps->xsave_size bytes */
    struct kvm_xcrs xcrs;
    struct kvm_msrs *msrs; /* header + caps->n_msrs entries */
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_debugregs debugregs;
} CpuState;

static CpuState *cpu_state_new(const CpuCaps *caps)
{
    CpuState *s = g_new0(CpuState, 1);
    s->xsave = g_malloc0(MAX(caps->xsave_size, sizeof(struct kvm_xsave)));
    s->msrs = g_malloc0(sizeof(struct kvm_msrs) + caps->n_msrs * sizeof(struct kvm_msr_entry));
    return s;
}

static void cpu_state_free(CpuState *s)
{
    if (!s)
        return;
    g_free(s->xsave);
    g_free(s->msrs);
    g_free(s);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(CpuState, cpu_state_free)

/* ---- Field tables: the names of the plain u64 registers ---- */

typedef struct U64Field {
    const char *name;
    size_t offset;
} U64Field;

// clang-format off
#define REG(n) { #n, offsetof(struct kvm_regs, n) }
static const U64Field regs_fields[] = {
    REG(rax), REG(rbx), REG(rcx), REG(rdx), REG(rsi), REG(rdi), REG(rsp), REG(rbp), REG(r8),
    REG(r9),  REG(r10), REG(r11), REG(r12), REG(r13), REG(r14), REG(r15), REG(rip), REG(rflags),
};
#undef REG

#define SREG(n) { #n, offsetof(struct kvm_sregs, n) }
static const U64Field sregs_u64_fields[] = {
    SREG(cr0), SREG(cr2), SREG(cr3), SREG(cr4), SREG(cr8), SREG(efer), SREG(apic_base),
};
#undef SREG
// clang-format on

static __u64 *u64_at(void *base, const U64Field *f)
{
    return (__u64 *)((uint8_t *)base + f->offset);
}

/* KVM's __u64 is unsigned long long, uint64_t is unsigned long: read through a
 * uint64_t so that no object is accessed through the other type. */
static bool rd_u64(VmsnapFieldReader *r, const char *name, __u64 *out)
{
    uint64_t v = 0;
    bool ok = vmsnap_fr_u64(r, name, &v);
    *out = v;
    return ok;
}

/* ---- Probing ---- */

static void cpu_caps_free(void *data)
{
    CpuCaps *caps = data;
    if (!caps)
        return;
    g_free(caps->msrs);
    g_free(caps);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(CpuCaps, cpu_caps_free)

/* KVM_GET_MSRS reads entries in order and stops at the first it cannot read, returning
 * how many it read: drop that one and go on from the next. */
static bool probe_msrs(Vm *vm, CpuCaps *caps, GError **error)
{
    struct kvm_msr_list probe = { .nmsrs = 0 };
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return devstate_ioctl_error(error, errno, "KVM_GET_MSR_INDEX_LIST", "kvm", 0);
    if (probe.nmsrs > CPU_MAX_MSRS) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "KVM_GET_MSR_INDEX_LIST reports %u MSRs, vmsnap handles at most %u",
                    probe.nmsrs, CPU_MAX_MSRS);
        return false;
    }
    g_autofree struct kvm_msr_list *list =
        g_malloc0(sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
    list->nmsrs = probe.nmsrs;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0)
        return devstate_ioctl_error(error, errno, "KVM_GET_MSR_INDEX_LIST", "kvm", 0);

    unsigned n = list->nmsrs;
    g_autofree struct kvm_msrs *msrs = g_malloc0(sizeof(*msrs) + n * sizeof(struct kvm_msr_entry));
    caps->msrs = g_new0(uint32_t, MAX(n, 1u));
    for (unsigned from = 0; from < n;) {
        msrs->nmsrs = n - from;
        for (unsigned i = from; i < n; i++)
            msrs->entries[i - from] = (struct kvm_msr_entry){ .index = list->indices[i] };
        int got = ioctl(vm->vcpus[0].fd, KVM_GET_MSRS, msrs);
        if (got < 0)
            return devstate_ioctl_error(error, errno, "KVM_GET_MSRS (probe)", "cpu", 0);
        for (int i = 0; i < got; i++)
            caps->msrs[caps->n_msrs++] = list->indices[from + i];
        from += (unsigned)got + 1; /* skip the unreadable one */
    }
    return true;
}

static bool cpu_init(DevState *ds, void **data, GError **error)
{
    Vm *vm = devstate_vm(ds);
    g_autoptr(CpuCaps) caps = g_new0(CpuCaps, 1);

    /* KVM_CAP_XSAVE2 on the VM fd gives the size KVM_GET_XSAVE2 fills (at least 4096);
     * without it, KVM_GET_XSAVE fills struct kvm_xsave. */
    int size = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    if (size > 0) {
        caps->xsave2 = true;
        caps->xsave_size = MAX((size_t)size, sizeof(struct kvm_xsave));
    } else if (ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0) {
        caps->xsave_size = sizeof(struct kvm_xsave);
    } else {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "this KVM lacks KVM_CAP_XSAVE, which vmsnap needs to save FPU state");
        return false;
    }
    if (caps->xsave_size > CPU_MAX_XSAVE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "KVM's XSAVE area is %zu bytes, vmsnap handles at most %u", caps->xsave_size,
                    CPU_MAX_XSAVE);
        return false;
    }
    if (vm->n_vcpus > 0 && !probe_msrs(vm, caps, error))
        return false;
    *data = g_steal_pointer(&caps);
    return true;
}

static unsigned cpu_count(const DevState *ds)
{
    return devstate_vm(ds)->n_vcpus;
}

/* ---- Save ---- */

static bool vcpu_get(Vcpu *v, unsigned long req, void *arg, const char *what, GError **error)
{
    if (ioctl(v->fd, req, arg) < 0)
        return devstate_ioctl_error(error, errno, what, "cpu", v->index);
    return true;
}

static bool get_state(Vcpu *v, const CpuCaps *caps, CpuState *s, GError **error)
{
    s->index = v->index;
    if (!vcpu_get(v, KVM_GET_REGS, &s->regs, "KVM_GET_REGS", error) ||
        !vcpu_get(v, KVM_GET_SREGS, &s->sregs, "KVM_GET_SREGS", error) ||
        !vcpu_get(v, caps->xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, s->xsave,
                  caps->xsave2 ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE", error) ||
        !vcpu_get(v, KVM_GET_XCRS, &s->xcrs, "KVM_GET_XCRS", error) ||
        !vcpu_get(v, KVM_GET_LAPIC, &s->lapic, "KVM_GET_LAPIC", error) ||
        !vcpu_get(v, KVM_GET_VCPU_EVENTS, &s->events, "KVM_GET_VCPU_EVENTS", error) ||
        !vcpu_get(v, KVM_GET_MP_STATE, &s->mp, "KVM_GET_MP_STATE", error) ||
        !vcpu_get(v, KVM_GET_DEBUGREGS, &s->debugregs, "KVM_GET_DEBUGREGS", error))
        return false;
    if (s->xcrs.nr_xcrs > KVM_MAX_XCRS) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "KVM_GET_XCRS on cpu %u returned %u XCRs (at most %u)", v->index,
                    s->xcrs.nr_xcrs, KVM_MAX_XCRS);
        return false;
    }

    s->msrs->nmsrs = caps->n_msrs;
    for (unsigned i = 0; i < caps->n_msrs; i++)
        s->msrs->entries[i] = (struct kvm_msr_entry){ .index = caps->msrs[i] };
    int got = ioctl(v->fd, KVM_GET_MSRS, s->msrs);
    if (got < 0)
        return devstate_ioctl_error(error, errno, "KVM_GET_MSRS", "cpu", v->index);
    if ((unsigned)got < caps->n_msrs) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "KVM_GET_MSRS on cpu %u: MSR 0x%x could not be read (%d of %u read)", v->index,
                    caps->msrs[got], got, caps->n_msrs);
        return false;
    }
    return true;
}

static void write_segment(VmsnapFieldWriter *w, const char *name, const struct kvm_segment *s)
{
    vmsnap_fw_struct_begin(w, name);
    vmsnap_fw_u64(w, "base", s->base);
    vmsnap_fw_u32(w, "limit", s->limit);
    vmsnap_fw_u16(w, "selector", s->selector);
    vmsnap_fw_u8(w, "type", s->type);
    vmsnap_fw_u8(w, "present", s->present);
    vmsnap_fw_u8(w, "dpl", s->dpl);
    vmsnap_fw_u8(w, "db", s->db);
    vmsnap_fw_u8(w, "s", s->s);
    vmsnap_fw_u8(w, "l", s->l);
    vmsnap_fw_u8(w, "g", s->g);
    vmsnap_fw_u8(w, "avl", s->avl);
    vmsnap_fw_u8(w, "unusable", s->unusable);
    vmsnap_fw_struct_end(w);
}

static void write_dtable(VmsnapFieldWriter *w, const char *name, const struct kvm_dtable *t)
{
    vmsnap_fw_struct_begin(w, name);
    vmsnap_fw_u64(w, "base", t->base);
    vmsnap_fw_u16(w, "limit", t->limit);
    vmsnap_fw_struct_end(w);
}

static void write_state(VmsnapFieldWriter *w, const CpuState *s, size_t xsave_size)
{
    vmsnap_fw_u32(w, "index", s->index);

    vmsnap_fw_struct_begin(w, "regs");
    for (unsigned i = 0; i < G_N_ELEMENTS(regs_fields); i++)
        vmsnap_fw_u64(w, regs_fields[i].name, *u64_at((void *)&s->regs, &regs_fields[i]));
    vmsnap_fw_struct_end(w);

    const struct kvm_sregs *sr = &s->sregs;
    vmsnap_fw_struct_begin(w, "sregs");
    write_segment(w, "cs", &sr->cs);
    write_segment(w, "ds", &sr->ds);
    write_segment(w, "es", &sr->es);
    write_segment(w, "fs", &sr->fs);
    write_segment(w, "gs", &sr->gs);
    write_segment(w, "ss", &sr->ss);
    write_segment(w, "tr", &sr->tr);
    write_segment(w, "ldt", &sr->ldt);
    write_dtable(w, "gdt", &sr->gdt);
    write_dtable(w, "idt", &sr->idt);
    for (unsigned i = 0; i < G_N_ELEMENTS(sregs_u64_fields); i++)
        vmsnap_fw_u64(w, sregs_u64_fields[i].name, *u64_at((void *)sr, &sregs_u64_fields[i]));
    vmsnap_fw_array_begin(w, "interrupt_bitmap", CPU_N_IRQ_WORDS);
    for (unsigned i = 0; i < CPU_N_IRQ_WORDS; i++)
        vmsnap_fw_u64(w, NULL, sr->interrupt_bitmap[i]);
    vmsnap_fw_array_end(w);
    vmsnap_fw_struct_end(w);

    vmsnap_fw_bytes(w, "xsave", s->xsave, xsave_size);

    vmsnap_fw_array_begin(w, "xcrs", s->xcrs.nr_xcrs);
    for (unsigned i = 0; i < s->xcrs.nr_xcrs; i++) {
        vmsnap_fw_struct_begin(w, NULL);
        vmsnap_fw_u32(w, "xcr", s->xcrs.xcrs[i].xcr);
        vmsnap_fw_u64(w, "value", s->xcrs.xcrs[i].value);
        vmsnap_fw_struct_end(w);
    }
    vmsnap_fw_array_end(w);

    vmsnap_fw_array_begin(w, "msrs", s->msrs->nmsrs);
    for (unsigned i = 0; i < s->msrs->nmsrs; i++) {
        vmsnap_fw_struct_begin(w, NULL);
        vmsnap_fw_u32(w, "index", s->msrs->entries[i].index);
        vmsnap_fw_u64(w, "value", s->msrs->entries[i].data);
        vmsnap_fw_struct_end(w);
    }
    vmsnap_fw_array_end(w);

    vmsnap_fw_bytes(w, "lapic", s->lapic.regs, sizeof(s->lapic.regs));

    const struct kvm_vcpu_events *e = &s->events;
    vmsnap_fw_struct_begin(w, "events");
    vmsnap_fw_struct_begin(w, "exception");
    vmsnap_fw_u8(w, "injected", e->exception.injected);
    vmsnap_fw_u8(w, "nr", e->exception.nr);
    vmsnap_fw_u8(w, "has_error_code", e->exception.has_error_code);
    vmsnap_fw_u8(w, "pending", e->exception.pending);
    vmsnap_fw_u32(w, "error_code", e->exception.error_code);
    vmsnap_fw_u8(w, "has_payload", e->exception_has_payload);
    vmsnap_fw_u64(w, "payload", e->exception_payload);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_struct_begin(w, "interrupt");
    vmsnap_fw_u8(w, "injected", e->interrupt.injected);
    vmsnap_fw_u8(w, "nr", e->interrupt.nr);
    vmsnap_fw_u8(w, "soft", e->interrupt.soft);
    vmsnap_fw_u8(w, "shadow", e->interrupt.shadow);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_struct_begin(w, "nmi");
    vmsnap_fw_u8(w, "injected", e->nmi.injected);
    vmsnap_fw_u8(w, "pending", e->nmi.pending);
    vmsnap_fw_u8(w, "masked", e->nmi.masked);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_u32(w, "sipi_vector", e->sipi_vector);
    vmsnap_fw_struct_begin(w, "smi");
    vmsnap_fw_u8(w, "smm", e->smi.smm);
    vmsnap_fw_u8(w, "pending", e->smi.pending);
    vmsnap_fw_u8(w, "smm_inside_nmi", e->smi.smm_inside_nmi);
    vmsnap_fw_u8(w, "latched_init", e->smi.latched_init);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_u8(w, "triple_fault_pending", e->triple_fault.pending);
    vmsnap_fw_u32(w, "flags", e->flags);
    vmsnap_fw_struct_end(w);

    vmsnap_fw_u32(w, "mp_state", s->mp.mp_state);

    const struct kvm_debugregs *d = &s->debugregs;
    vmsnap_fw_struct_begin(w, "debugregs");
    vmsnap_fw_array_begin(w, "db", G_N_ELEMENTS(d->db));
    for (unsigned i = 0; i < G_N_ELEMENTS(d->db); i++)
        vmsnap_fw_u64(w, NULL, d->db[i]);
    vmsnap_fw_array_end(w);
    vmsnap_fw_u64(w, "dr6", d->dr6);
    vmsnap_fw_u64(w, "dr7", d->dr7);
    vmsnap_fw_u64(w, "flags", d->flags);
    vmsnap_fw_struct_end(w);
}

static bool cpu_save(DevState *ds, unsigned instance, VmsnapFieldWriter *w, GError **error)
{
    const CpuCaps *caps = devstate_type_data(ds, &devtype_cpu);
    g_autoptr(CpuState) s = cpu_state_new(caps);
    if (!get_state(&devstate_vm(ds)->vcpus[instance], caps, s, error))
        return false;
    write_state(w, s, caps->xsave_size);
    return true;
}

/* ---- Load: read and validate ---- */

/* Reads u8 fields that KVM only ever sets to 0 or 1. */
static bool rd_flag(VmsnapFieldReader *r, const char *name, uint8_t *out)
{
    return devstate_rd_u8_max(r, name, 1, out);
}

static bool read_segment(VmsnapFieldReader *r, const char *name, struct kvm_segment *s)
{
    memset(s, 0, sizeof(*s));
    vmsnap_fr_struct_begin(r, name);
    rd_u64(r, "base", &s->base);
    vmsnap_fr_u32(r, "limit", &s->limit);
    vmsnap_fr_u16(r, "selector", &s->selector);
    devstate_rd_u8_max(r, "type", 15, &s->type);
    rd_flag(r, "present", &s->present);
    devstate_rd_u8_max(r, "dpl", 3, &s->dpl);
    rd_flag(r, "db", &s->db);
    rd_flag(r, "s", &s->s);
    rd_flag(r, "l", &s->l);
    rd_flag(r, "g", &s->g);
    rd_flag(r, "avl", &s->avl);
    rd_flag(r, "unusable", &s->unusable);
    return vmsnap_fr_struct_end(r);
}

static bool read_dtable(VmsnapFieldReader *r, const char *name, struct kvm_dtable *t)
{
    memset(t, 0, sizeof(*t));
    vmsnap_fr_struct_begin(r, name);
    rd_u64(r, "base", &t->base);
    vmsnap_fr_u16(r, "limit", &t->limit);
    return vmsnap_fr_struct_end(r);
}

static bool read_sregs(VmsnapFieldReader *r, struct kvm_sregs *sr)
{
    vmsnap_fr_struct_begin(r, "sregs");
    read_segment(r, "cs", &sr->cs);
    read_segment(r, "ds", &sr->ds);
    read_segment(r, "es", &sr->es);
    read_segment(r, "fs", &sr->fs);
    read_segment(r, "gs", &sr->gs);
    read_segment(r, "ss", &sr->ss);
    read_segment(r, "tr", &sr->tr);
    read_segment(r, "ldt", &sr->ldt);
    read_dtable(r, "gdt", &sr->gdt);
    read_dtable(r, "idt", &sr->idt);
    for (unsigned i = 0; i < G_N_ELEMENTS(sregs_u64_fields); i++) {
        __u64 *p = u64_at(sr, &sregs_u64_fields[i]);
        if (rd_u64(r, sregs_u64_fields[i].name, p) && p == &sr->cr8 && *p > 15)
            vmsnap_fr_fail(r, "cr8 is 0x%" G_GINT64_MODIFIER "x, at most 0xf", (uint64_t)*p);
    }

    /* Counts are checked after array_end, so that errors name the array. */
    uint32_t n = 0;
    unsigned bits = 0;
    vmsnap_fr_array_begin(r, "interrupt_bitmap", CPU_N_IRQ_WORDS, &n);
    for (unsigned i = 0; i < n && !vmsnap_fr_failed(r); i++) {
        rd_u64(r, NULL, &sr->interrupt_bitmap[i]);
        bits += (unsigned)__builtin_popcountll(sr->interrupt_bitmap[i]);
    }
    if (vmsnap_fr_array_end(r)) {
        if (n != CPU_N_IRQ_WORDS)
            vmsnap_fr_fail(r, "%u words, expected %zu", n, CPU_N_IRQ_WORDS);
        /* api.rst: at most one bit, the interrupt acknowledged but not yet injected. */
        else if (bits > 1)
            vmsnap_fr_fail(r, "%u interrupts pending, at most 1 may be", bits);
    }
    return vmsnap_fr_struct_end(r);
}

static bool read_msrs(VmsnapFieldReader *r, const CpuCaps *caps, struct kvm_msrs *msrs)
{
    uint32_t n = 0;
    if (!vmsnap_fr_array_begin(r, "msrs", caps->n_msrs, &n))
        return false;
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    msrs->nmsrs = n;
    for (unsigned i = 0; i < n && !vmsnap_fr_failed(r); i++) {
        struct kvm_msr_entry *e = &msrs->entries[i];
        memset(e, 0, sizeof(*e));
        vmsnap_fr_struct_begin(r, NULL);
        if (vmsnap_fr_u32(r, "index", &e->index)) {
            bool known = false;
            for (unsigned k = 0; k < caps->n_msrs && !known; k++)
                known = caps->msrs[k] == e->index;
            if (!known)
                vmsnap_fr_fail(r, "MSR 0x%x is not one this KVM saves and restores", e->index);
            else if (!g_hash_table_add(seen, GUINT_TO_POINTER(e->index)))
                vmsnap_fr_fail(r, "MSR 0x%x appears twice", e->index);
        }
        rd_u64(r, "value", &e->data);
        vmsnap_fr_struct_end(r);
    }
    return vmsnap_fr_array_end(r);
}

static bool read_events(VmsnapFieldReader *r, struct kvm_vcpu_events *e)
{
    const uint32_t known_flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |
                                 KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM |
                                 KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
    memset(e, 0, sizeof(*e));
    vmsnap_fr_struct_begin(r, "events");
    vmsnap_fr_struct_begin(r, "exception");
    rd_flag(r, "injected", &e->exception.injected);
    /* KVM refuses vectors above 31 and NMI (2) as an exception. */
    if (vmsnap_fr_u8(r, "nr", &e->exception.nr) && (e->exception.nr > 31 || e->exception.nr == 2))
        vmsnap_fr_fail(r, "vector %u is not an exception vector", e->exception.nr);
    rd_flag(r, "has_error_code", &e->exception.has_error_code);
    rd_flag(r, "pending", &e->exception.pending);
    vmsnap_fr_u32(r, "error_code", &e->exception.error_code);
    rd_flag(r, "has_payload", &e->exception_has_payload);
    rd_u64(r, "payload", &e->exception_payload);
    vmsnap_fr_struct_end(r);
    vmsnap_fr_struct_begin(r, "interrupt");
    rd_flag(r, "injected", &e->interrupt.injected);
    vmsnap_fr_u8(r, "nr", &e->interrupt.nr);
    rd_flag(r, "soft", &e->interrupt.soft);
    /* KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI */
    devstate_rd_u8_max(r, "shadow", 3, &e->interrupt.shadow);
    vmsnap_fr_struct_end(r);
    vmsnap_fr_struct_begin(r, "nmi");
    rd_flag(r, "injected", &e->nmi.injected);
    devstate_rd_u8_max(r, "pending", 2, &e->nmi.pending); /* KVM queues at most 2 NMIs */
    rd_flag(r, "masked", &e->nmi.masked);
    vmsnap_fr_struct_end(r);
    vmsnap_fr_u32(r, "sipi_vector", &e->sipi_vector);
    vmsnap_fr_struct_begin(r, "smi");
    rd_flag(r, "smm", &e->smi.smm);
    rd_flag(r, "pending", &e->smi.pending);
    rd_flag(r, "smm_inside_nmi", &e->smi.smm_inside_nmi);
    rd_flag(r, "latched_init", &e->smi.latched_init);
    vmsnap_fr_struct_end(r);
    rd_flag(r, "triple_fault_pending", &e->triple_fault.pending);
    if (vmsnap_fr_u32(r, "flags", &e->flags) && (e->flags & ~known_flags))
        vmsnap_fr_fail(r, "unknown flags 0x%x (known: 0x%x)", e->flags & ~known_flags, known_flags);
    return vmsnap_fr_struct_end(r);
}

static bool read_state(VmsnapFieldReader *r, const CpuCaps *caps, unsigned instance,
                       unsigned n_vcpus, CpuState *s)
{
    if (vmsnap_fr_u32(r, "index", &s->index)) {
        if (s->index >= n_vcpus)
            vmsnap_fr_fail(r, "vCPU %u, but this VM has %u vCPU%s", s->index, n_vcpus,
                           n_vcpus == 1 ? "" : "s");
        else if (s->index != instance)
            vmsnap_fr_fail(r, "the state of vCPU %u, loaded into vCPU %u", s->index, instance);
    }

    vmsnap_fr_struct_begin(r, "regs");
    for (unsigned i = 0; i < G_N_ELEMENTS(regs_fields); i++)
        rd_u64(r, regs_fields[i].name, u64_at(&s->regs, &regs_fields[i]));
    vmsnap_fr_struct_end(r);

    read_sregs(r, &s->sregs);

    g_autofree void *xsave = NULL;
    size_t len = 0;
    if (vmsnap_fr_bytes_dup(r, "xsave", CPU_MAX_XSAVE, &xsave, &len)) {
        if (len != caps->xsave_size)
            vmsnap_fr_fail(r, "the XSAVE area is %zu bytes, this host's is %zu bytes", len,
                           caps->xsave_size);
        else
            memcpy(s->xsave, xsave, len);
    }

    uint32_t n = 0;
    if (vmsnap_fr_array_begin(r, "xcrs", KVM_MAX_XCRS, &n)) {
        s->xcrs.nr_xcrs = n;
        for (unsigned i = 0; i < n && !vmsnap_fr_failed(r); i++) {
            vmsnap_fr_struct_begin(r, NULL);
            /* XCR0 is the only one defined; KVM refuses the others. */
            devstate_rd_u32_max(r, "xcr", 0, &s->xcrs.xcrs[i].xcr);
            rd_u64(r, "value", &s->xcrs.xcrs[i].value);
            vmsnap_fr_struct_end(r);
        }
        vmsnap_fr_array_end(r);
    }

    read_msrs(r, caps, s->msrs);

    g_autofree void *lapic = NULL;
    if (vmsnap_fr_bytes_dup(r, "lapic", CPU_MAX_LAPIC, &lapic, &len)) {
        if (len != sizeof(s->lapic.regs))
            vmsnap_fr_fail(r, "the LAPIC register page is %zu bytes, KVM's is %zu bytes", len,
                           sizeof(s->lapic.regs));
        else
            memcpy(s->lapic.regs, lapic, len);
    }

    read_events(r, &s->events);

    if (vmsnap_fr_u32(r, "mp_state", &s->mp.mp_state)) {
        switch (s->mp.mp_state) {
        case KVM_MP_STATE_RUNNABLE:
        case KVM_MP_STATE_UNINITIALIZED:
        case KVM_MP_STATE_INIT_RECEIVED:
        case KVM_MP_STATE_HALTED:
        case KVM_MP_STATE_SIPI_RECEIVED:
        case KVM_MP_STATE_AP_RESET_HOLD:
        case KVM_MP_STATE_SUSPENDED:
            break;
        default:
            vmsnap_fr_fail(r, "%u is not an x86 MP state", s->mp.mp_state);
        }
    }

    struct kvm_debugregs *d = &s->debugregs;
    vmsnap_fr_struct_begin(r, "debugregs");
    vmsnap_fr_array_begin(r, "db", G_N_ELEMENTS(d->db), &n);
    for (unsigned i = 0; i < n && !vmsnap_fr_failed(r); i++)
        rd_u64(r, NULL, &d->db[i]);
    if (vmsnap_fr_array_end(r) && n != G_N_ELEMENTS(d->db))
        vmsnap_fr_fail(r, "%u debug address registers, expected %zu", n, G_N_ELEMENTS(d->db));
    /* KVM_SET_DEBUGREGS refuses bits above 31 in DR6/DR7 and any flag. */
    if (rd_u64(r, "dr6", &d->dr6) && (d->dr6 >> 32))
        vmsnap_fr_fail(r, "dr6 0x%" G_GINT64_MODIFIER "x has bits above 31", (uint64_t)d->dr6);
    if (rd_u64(r, "dr7", &d->dr7) && (d->dr7 >> 32))
        vmsnap_fr_fail(r, "dr7 0x%" G_GINT64_MODIFIER "x has bits above 31", (uint64_t)d->dr7);
    if (rd_u64(r, "flags", &d->flags) && d->flags)
        vmsnap_fr_fail(r, "flags 0x%" G_GINT64_MODIFIER "x, must be 0", (uint64_t)d->flags);
    vmsnap_fr_struct_end(r);

    return !vmsnap_fr_failed(r);
}

/* ---- Load: apply ---- */

static bool vcpu_set(Vcpu *v, unsigned long req, void *arg, const char *what, GError **error)
{
    if (ioctl(v->fd, req, arg) < 0)
        return devstate_ioctl_error(error, errno, what, "cpu", v->index);
    return true;
}

/* MSRs that a test can leave out on their own (--x-skip-device-load cpuN.PART). */
#define MSR_IA32_TSC            0x10u
#define MSR_IA32_TSC_DEADLINE   0x6e0u
#define MSR_KVM_SYSTEM_TIME     0x12u
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u

static const char *msr_part(uint32_t index)
{
    switch (index) {
    case MSR_IA32_TSC:
        return "tsc";
    case MSR_IA32_TSC_DEADLINE:
        return "tsc_deadline";
    case MSR_KVM_SYSTEM_TIME:
    case MSR_KVM_SYSTEM_TIME_NEW:
        return "kvmclock_msr";
    default:
        return NULL;
    }
}

/* KVM_SET_MSRS of the saved entries at positions pos[0..n); an error names the refused
 * one by its position in the section ("msrs[K]"). */
static bool set_msrs(Vcpu *v, const struct kvm_msrs *saved, const unsigned *pos, unsigned n,
                     GError **error)
{
    if (n == 0)
        return true;
    g_autofree struct kvm_msrs *msrs =
        g_malloc0(sizeof(struct kvm_msrs) + n * sizeof(struct kvm_msr_entry));
    msrs->nmsrs = n;
    for (unsigned k = 0; k < n; k++)
        msrs->entries[k] = saved->entries[pos[k]];
    int set = ioctl(v->fd, KVM_SET_MSRS, msrs);
    if (set < 0)
        return devstate_ioctl_error(error, errno, "KVM_SET_MSRS", "cpu", v->index);
    if ((unsigned)set < n) {
        const struct kvm_msr_entry *e = &msrs->entries[set];
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "section 'cpu' instance %u: field 'msrs[%u]': KVM refused MSR 0x%x = "
                    "0x%" G_GINT64_MODIFIER "x (%d of %u MSRs set)",
                    v->index, pos[set], e->index, (uint64_t)e->data, set, n);
        return false;
    }
    return true;
}

/*
 * The order, and why (KVM's Documentation/virt/kvm/api.rst, and what QEMU's
 * kvm_arch_put_registers()/kvm_put_tscdeadline_msr() and Firecracker's restore_state()
 * learned):
 *  1. sregs: sets EFER and the APIC base MSR (xAPIC/x2APIC mode decides how
 *     KVM_SET_LAPIC reads the APIC ID), and must precede the MSRs; it may also
 *     change the MP state (the reset-vector special case), so MP state comes later.
 *  2. regs: KVM_SET_REGS drops a pending exception, so it precedes the events.
 *  3. XSAVE, then XCRs: both are checked against the CPUID set at vCPU creation.
 *  4. LAPIC: after sregs (APIC base), before the MSRs and the events.
 *  5. MSRs except IA32_TSC_DEADLINE, in KVM's list order, where IA32_TSC (0x10) comes
 *     early. A host write of IA32_TSC goes through KVM's TSC synchronisation, which
 *     keeps vCPUs written within a second in step.
 *  6. MP state: after sregs (see 1) and the LAPIC.
 *  7. vCPU events: after regs (see 2), after sregs (whose interrupt_bitmap queues
 *     an interrupt that the events then state exactly) and after the LAPIC, whose
 *     restore must not clear an INIT the events latch. The NMI-pending and SIPI-vector
 *     fields are only applied with their VALID flags, which KVM_GET_VCPU_EVENTS does
 *     not set: set them, as QEMU does, or a pending NMI is lost.
 *  8. debug registers (nothing depends on them).
 *  9. IA32_TSC_DEADLINE, last: KVM ignores (and keeps 0 for) a deadline written while
 *     the LVT timer is not in TSC-deadline mode, so it needs the LAPIC (4), and it is a
 *     guest TSC value, so it needs IA32_TSC (5). Nothing after it may touch the timer.
 * The kvmclock and the irqchip are VM-wide and restored after every vCPU
 * (devstate.c).
 *
 * A test can leave out any of these (devstate_skipped(), --x-skip-device-load).
 */
static bool apply_state(DevState *ds, Vcpu *v, CpuState *s, GError **error)
{
    unsigned i = v->index;
#define SKIP(part) devstate_skipped(ds, "cpu", i, part)
    if (!SKIP("sregs") && !vcpu_set(v, KVM_SET_SREGS, &s->sregs, "KVM_SET_SREGS", error))
        return false;
    if (!SKIP("regs") && !vcpu_set(v, KVM_SET_REGS, &s->regs, "KVM_SET_REGS", error))
        return false;
    if (!SKIP("xsave")) {
        if (!vcpu_set(v, KVM_SET_XSAVE, s->xsave, "KVM_SET_XSAVE", error))
            return false;
        if (s->xcrs.nr_xcrs > 0 && !vcpu_set(v, KVM_SET_XCRS, &s->xcrs, "KVM_SET_XCRS", error))
            return false;
    }
    if (!SKIP("lapic") && !vcpu_set(v, KVM_SET_LAPIC, &s->lapic, "KVM_SET_LAPIC", error))
        return false;

    /* The MSRs to write now, and the deadline to write last (positions in s->msrs). */
    bool skip_msrs = SKIP("msrs");
    g_autofree unsigned *now = g_new0(unsigned, MAX(s->msrs->nmsrs, 1u));
    unsigned n_now = 0, deadline = 0, n_deadline = 0;
    for (unsigned k = 0; k < s->msrs->nmsrs && !skip_msrs; k++) {
        const char *part = msr_part(s->msrs->entries[k].index);
        if (part && SKIP(part))
            continue;
        if (s->msrs->entries[k].index == MSR_IA32_TSC_DEADLINE) {
            deadline = k;
            n_deadline = 1;
        } else {
            now[n_now++] = k;
        }
    }
    if (!set_msrs(v, s->msrs, now, n_now, error))
        return false;

    if (!SKIP("mp_state") && !vcpu_set(v, KVM_SET_MP_STATE, &s->mp, "KVM_SET_MP_STATE", error))
        return false;
    s->events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    if (!SKIP("events") &&
        !vcpu_set(v, KVM_SET_VCPU_EVENTS, &s->events, "KVM_SET_VCPU_EVENTS", error))
        return false;
    if (!SKIP("debugregs") &&
        !vcpu_set(v, KVM_SET_DEBUGREGS, &s->debugregs, "KVM_SET_DEBUGREGS", error))
        return false;
    return set_msrs(v, s->msrs, &deadline, n_deadline, error);
#undef SKIP
}

static bool cpu_load(DevState *ds, unsigned instance, VmsnapFieldReader *r, uint32_t version,
                     GError **error)
{
    Vm *vm = devstate_vm(ds);
    const CpuCaps *caps = devstate_type_data(ds, &devtype_cpu);
    g_autoptr(CpuState) s = cpu_state_new(caps);

    if (!read_state(r, caps, instance, vm->n_vcpus, s))
        return false;
    return apply_state(ds, &vm->vcpus[instance], s, error);
}

const DevType devtype_cpu = {
    .name = "cpu",
    .version = CPU_VERSION,
    .min_version = 1,
    .init = cpu_init,
    .fini = cpu_caps_free,
    .count = cpu_count,
    .save = cpu_save,
    .load = cpu_load,
};
