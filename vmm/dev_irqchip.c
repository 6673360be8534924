/*
 * Devices "pic" (instance 0 = master, 1 = slave) and "ioapic" (instance 0): the
 * in-kernel irqchip, through KVM_GET/SET_IRQCHIP (chip ids 0, 1, 2). Every field of
 * kvm_pic_state and kvm_ioapic_state is saved by name (docs/DEVICES.md).
 */
#include "devstate.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#define PIC_VERSION    1
#define IOAPIC_VERSION 1

#define IOAPIC_BASE 0xfec00000ull /* KVM's fixed IOAPIC address */

/* KVM sets these at creation; the guest cannot change them (i8259.c). */
static const uint8_t pic_elcr_mask[2] = { 0xf8, 0xde };

static bool get_chip(DevState *ds, const char *section, unsigned instance, uint32_t chip_id,
                     struct kvm_irqchip *chip, GError **error)
{
    memset(chip, 0, sizeof(*chip));
    chip->chip_id = chip_id;
    if (ioctl(devstate_vm(ds)->vm_fd, KVM_GET_IRQCHIP, chip) < 0)
        return devstate_ioctl_error(error, errno, "KVM_GET_IRQCHIP", section, instance);
    return true;
}

static bool set_chip(DevState *ds, const char *section, unsigned instance, struct kvm_irqchip *chip,
                     GError **error)
{
    if (ioctl(devstate_vm(ds)->vm_fd, KVM_SET_IRQCHIP, chip) < 0)
        return devstate_ioctl_error(error, errno, "KVM_SET_IRQCHIP", section, instance);
    return true;
}

/* ---- pic ---- */

static unsigned pic_count(const DevState *ds)
{
    return 2;
}

static bool pic_save(DevState *ds, unsigned instance, VmsnapFieldWriter *w, GError **error)
{
    struct kvm_irqchip chip;
    if (!get_chip(ds, "pic", instance, instance, &chip, error))
        return false;
    const struct kvm_pic_state *p = &chip.chip.pic;
    vmsnap_fw_u8(w, "last_irr", p->last_irr);
    vmsnap_fw_u8(w, "irr", p->irr);
    vmsnap_fw_u8(w, "imr", p->imr);
    vmsnap_fw_u8(w, "isr", p->isr);
    vmsnap_fw_u8(w, "priority_add", p->priority_add);
    vmsnap_fw_u8(w, "irq_base", p->irq_base);
    vmsnap_fw_u8(w, "read_reg_select", p->read_reg_select);
    vmsnap_fw_u8(w, "poll", p->poll);
    vmsnap_fw_u8(w, "special_mask", p->special_mask);
    vmsnap_fw_u8(w, "init_state", p->init_state);
    vmsnap_fw_u8(w, "auto_eoi", p->auto_eoi);
    vmsnap_fw_u8(w, "rotate_on_auto_eoi", p->rotate_on_auto_eoi);
    vmsnap_fw_u8(w, "special_fully_nested_mode", p->special_fully_nested_mode);
    vmsnap_fw_u8(w, "init4", p->init4);
    vmsnap_fw_u8(w, "elcr", p->elcr);
    vmsnap_fw_u8(w, "elcr_mask", p->elcr_mask);
    return true;
}

static bool pic_load(DevState *ds, unsigned instance, VmsnapFieldReader *r, uint32_t version,
                     GError **error)
{
    struct kvm_irqchip chip = { .chip_id = instance };
    struct kvm_pic_state *p = &chip.chip.pic;

    /* Ranges: what KVM's i8259 emulation can produce. */
    vmsnap_fr_u8(r, "last_irr", &p->last_irr);
    vmsnap_fr_u8(r, "irr", &p->irr);
    vmsnap_fr_u8(r, "imr", &p->imr);
    vmsnap_fr_u8(r, "isr", &p->isr);
    devstate_rd_u8_max(r, "priority_add", 7, &p->priority_add);
    if (vmsnap_fr_u8(r, "irq_base", &p->irq_base) && (p->irq_base & 7))
        vmsnap_fr_fail(r, "vector base 0x%02x is not a multiple of 8", p->irq_base);
    devstate_rd_u8_max(r, "read_reg_select", 1, &p->read_reg_select);
    devstate_rd_u8_max(r, "poll", 1, &p->poll);
    devstate_rd_u8_max(r, "special_mask", 1, &p->special_mask);
    devstate_rd_u8_max(r, "init_state", 3, &p->init_state); /* expecting ICW2..ICW4 */
    devstate_rd_u8_max(r, "auto_eoi", 1, &p->auto_eoi);
    devstate_rd_u8_max(r, "rotate_on_auto_eoi", 1, &p->rotate_on_auto_eoi);
    devstate_rd_u8_max(r, "special_fully_nested_mode", 1, &p->special_fully_nested_mode);
    devstate_rd_u8_max(r, "init4", 1, &p->init4);
    vmsnap_fr_u8(r, "elcr", &p->elcr);
    if (vmsnap_fr_u8(r, "elcr_mask", &p->elcr_mask)) {
        if (p->elcr_mask != pic_elcr_mask[instance])
            vmsnap_fr_fail(r, "0x%02x, KVM's is 0x%02x for this PIC", p->elcr_mask,
                           pic_elcr_mask[instance]);
        else if (p->elcr & ~p->elcr_mask)
            vmsnap_fr_fail(r, "elcr 0x%02x sets bits outside the mask", p->elcr);
    }
    if (vmsnap_fr_failed(r))
        return false;
    if (devstate_skipped(ds, "pic", instance, NULL))
        return true;
    return set_chip(ds, "pic", instance, &chip, error);
}

const DevType devtype_pic = {
    .name = "pic",
    .version = PIC_VERSION,
    .min_version = 1,
    .count = pic_count,
    .save = pic_save,
    .load = pic_load,
};

/* ---- ioapic ---- */

/* A redirection entry, split into its named fields; what is left is `reserved`. */
#define RTE_FIELD(b, shift, w) ((uint8_t)(((b) >> (shift)) & ((1u << (w)) - 1)))
#define RTE_DEST_SHIFT         56
#define RTE_RESERVED_MASK      0x00fffffffffe0000ull /* bits 17-55 */

static unsigned ioapic_count(const DevState *ds)
{
    return 1;
}

static bool ioapic_save(DevState *ds, unsigned instance, VmsnapFieldWriter *w, GError **error)
{
    struct kvm_irqchip chip;
    if (!get_chip(ds, "ioapic", instance, KVM_IRQCHIP_IOAPIC, &chip, error))
        return false;
    const struct kvm_ioapic_state *io = &chip.chip.ioapic;
    vmsnap_fw_u64(w, "base_address", io->base_address);
    vmsnap_fw_u32(w, "ioregsel", io->ioregsel);
    vmsnap_fw_u32(w, "id", io->id);
    vmsnap_fw_u32(w, "irr", io->irr);
    vmsnap_fw_array_begin(w, "redirtbl", KVM_IOAPIC_NUM_PINS);
    for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; i++) {
        uint64_t b = io->redirtbl[i].bits;
        vmsnap_fw_struct_begin(w, NULL);
        vmsnap_fw_u8(w, "vector", RTE_FIELD(b, 0, 8));
        vmsnap_fw_u8(w, "delivery_mode", RTE_FIELD(b, 8, 3));
        vmsnap_fw_u8(w, "dest_mode", RTE_FIELD(b, 11, 1));
        vmsnap_fw_u8(w, "delivery_status", RTE_FIELD(b, 12, 1));
        vmsnap_fw_u8(w, "polarity", RTE_FIELD(b, 13, 1));
        vmsnap_fw_u8(w, "remote_irr", RTE_FIELD(b, 14, 1));
        vmsnap_fw_u8(w, "trig_mode", RTE_FIELD(b, 15, 1));
        vmsnap_fw_u8(w, "mask", RTE_FIELD(b, 16, 1));
        vmsnap_fw_u8(w, "dest_id", (uint8_t)(b >> RTE_DEST_SHIFT));
        /* Guests may write these bits; KVM keeps them, so must we. */
        vmsnap_fw_u64(w, "reserved", b & RTE_RESERVED_MASK);
        vmsnap_fw_struct_end(w);
    }
    vmsnap_fw_array_end(w);
    return true;
}

static bool read_rte(VmsnapFieldReader *r, uint64_t *bits)
{
    uint8_t vector = 0, delivery_mode = 0, dest_mode = 0, delivery_status = 0, polarity = 0;
    uint8_t remote_irr = 0, trig_mode = 0, mask = 0, dest_id = 0;
    uint64_t reserved = 0;

    vmsnap_fr_struct_begin(r, NULL);
    vmsnap_fr_u8(r, "vector", &vector);
    devstate_rd_u8_max(r, "delivery_mode", 7, &delivery_mode);
    devstate_rd_u8_max(r, "dest_mode", 1, &dest_mode);
    devstate_rd_u8_max(r, "delivery_status", 1, &delivery_status);
    devstate_rd_u8_max(r, "polarity", 1, &polarity);
    devstate_rd_u8_max(r, "remote_irr", 1, &remote_irr);
    devstate_rd_u8_max(r, "trig_mode", 1, &trig_mode);
    devstate_rd_u8_max(r, "mask", 1, &mask);
    vmsnap_fr_u8(r, "dest_id", &dest_id);
    if (vmsnap_fr_u64(r, "reserved", &reserved) && (reserved & ~RTE_RESERVED_MASK))
        vmsnap_fr_fail(r, "0x%016" G_GINT64_MODIFIER "x has bits outside 17-55", reserved);
    vmsnap_fr_struct_end(r);

    *bits = vector | (uint64_t)delivery_mode << 8 | (uint64_t)dest_mode << 11 |
            (uint64_t)delivery_status << 12 | (uint64_t)polarity << 13 |
            (uint64_t)remote_irr << 14 | (uint64_t)trig_mode << 15 | (uint64_t)mask << 16 |
            (uint64_t)dest_id << RTE_DEST_SHIFT | reserved;
    return !vmsnap_fr_failed(r);
}

static bool ioapic_load(DevState *ds, unsigned instance, VmsnapFieldReader *r, uint32_t version,
                        GError **error)
{
    struct kvm_irqchip chip = { .chip_id = KVM_IRQCHIP_IOAPIC };
    struct kvm_ioapic_state *io = &chip.chip.ioapic;
    uint64_t base = 0;

    /* KVM decodes MMIO at base_address: only its fixed address is acceptable. */
    if (vmsnap_fr_u64(r, "base_address", &base) && base != IOAPIC_BASE)
        vmsnap_fr_fail(r, "0x%" G_GINT64_MODIFIER "x, this VMM's IOAPIC is at 0x%llx", base,
                       IOAPIC_BASE);
    io->base_address = base;
    vmsnap_fr_u32(r, "ioregsel", &io->ioregsel);
    devstate_rd_u32_max(r, "id", 15, &io->id); /* KVM keeps 4 bits */
    devstate_rd_u32_max(r, "irr", (1u << KVM_IOAPIC_NUM_PINS) - 1, &io->irr);
    uint32_t n = 0;
    vmsnap_fr_array_begin(r, "redirtbl", KVM_IOAPIC_NUM_PINS, &n);
    for (unsigned i = 0; i < n && !vmsnap_fr_failed(r); i++) {
        uint64_t bits = 0;
        read_rte(r, &bits);
        io->redirtbl[i].bits = bits;
    }
    /* Checked after array_end, so that the error names the array. */
    if (vmsnap_fr_array_end(r) && n != KVM_IOAPIC_NUM_PINS)
        vmsnap_fr_fail(r, "%u entries, the IOAPIC has %u pins", n, KVM_IOAPIC_NUM_PINS);
    if (vmsnap_fr_failed(r))
        return false;
    if (devstate_skipped(ds, "ioapic", instance, NULL))
        return true;
    return set_chip(ds, "ioapic", instance, &chip, error);
}

const DevType devtype_ioapic = {
    .name = "ioapic",
    .version = IOAPIC_VERSION,
    .min_version = 1,
    .count = ioapic_count,
    .save = ioapic_save,
    .load = ioapic_load,
};
