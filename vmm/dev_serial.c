/*
 * Device "serial", instance 0: the 16550A (COM1) emulated by vmm/uart.c. Its saved
 * state is the register file UartRegs plus the level the UART last drove on its IRQ
 * line, taken under the UART's mutex. That is all of the guest-visible state: the RX
 * FIFO (or holding register) with its bytes, LSR (DR, OE), the pending THR-empty
 * interrupt and the MSR delta bits; IIR and the line level follow from them. Bytes the
 * host backend has read but the FIFO has not taken yet are host state, not saved.
 */
#include "devstate.h"

#include <string.h>

#define SERIAL_VERSION 1

static unsigned serial_count(const DevState *ds)
{
    return devstate_uart(ds) ? 1 : 0;
}

void serial_state_save(Uart *u, VmsnapFieldWriter *w)
{
    UartRegs r;
    int level;

    g_mutex_lock(&u->lock);
    r = u->r;
    level = u->irq_level;
    g_mutex_unlock(&u->lock);

    vmsnap_fw_u8(w, "ier", r.ier);
    vmsnap_fw_u8(w, "lcr", r.lcr);
    vmsnap_fw_u8(w, "mcr", r.mcr);
    vmsnap_fw_u8(w, "lsr", r.lsr);
    vmsnap_fw_u8(w, "msr", r.msr);
    vmsnap_fw_u8(w, "scr", r.scr);
    vmsnap_fw_u8(w, "dll", r.dll);
    vmsnap_fw_u8(w, "dlm", r.dlm);
    vmsnap_fw_u8(w, "fcr", r.fcr);
    vmsnap_fw_bool(w, "thr_interrupt", r.thr_interrupt);
    vmsnap_fw_bytes(w, "rx_fifo", r.rx_fifo, sizeof(r.rx_fifo));
    vmsnap_fw_u8(w, "rx_head", r.rx_head);
    vmsnap_fw_u8(w, "rx_count", r.rx_count);
    vmsnap_fw_u8(w, "irq_level", level ? 1 : 0);
}

static bool serial_save(DevState *ds, unsigned instance, VmsnapFieldWriter *w, GError **error)
{
    serial_state_save(devstate_uart(ds), w);
    return true;
}

bool serial_state_load(Uart *u, VmsnapFieldReader *r, uint32_t version, bool apply)
{
    UartRegs regs;
    uint8_t level = 0;
    memset(&regs, 0, sizeof(regs));

    /* Masks: the bits uart.c's register writes keep. */
    devstate_rd_u8_max(r, "ier", 0x0f, &regs.ier);
    vmsnap_fr_u8(r, "lcr", &regs.lcr);
    devstate_rd_u8_max(r, "mcr", 0x1f, &regs.mcr);
    vmsnap_fr_u8(r, "lsr", &regs.lsr);
    vmsnap_fr_u8(r, "msr", &regs.msr);
    vmsnap_fr_u8(r, "scr", &regs.scr);
    vmsnap_fr_u8(r, "dll", &regs.dll);
    vmsnap_fr_u8(r, "dlm", &regs.dlm);
    if (vmsnap_fr_u8(r, "fcr", &regs.fcr) && (regs.fcr & ~0xc9))
        vmsnap_fr_fail(r, "0x%02x has bits other than 0xc9", regs.fcr);
    vmsnap_fr_bool(r, "thr_interrupt", &regs.thr_interrupt);
    vmsnap_fr_bytes(r, "rx_fifo", regs.rx_fifo, sizeof(regs.rx_fifo));
    devstate_rd_u8_max(r, "rx_head", UART_FIFO_SIZE - 1, &regs.rx_head);
    /* LSR.DR means "the FIFO holds a byte": a state where they disagree is unreachable. */
    if (devstate_rd_u8_max(r, "rx_count", UART_FIFO_SIZE, &regs.rx_count) &&
        !(regs.lsr & 0x01) != !regs.rx_count)
        vmsnap_fr_fail(r, "%u bytes, but lsr 0x%02x says data-ready %u", regs.rx_count, regs.lsr,
                       regs.lsr & 0x01);
    devstate_rd_u8_max(r, "irq_level", 1, &level);
    if (vmsnap_fr_failed(r))
        return false;
    if (!apply)
        return true; /* validated only (--x-skip-device-load) */

    /* Drives the line again: the irqchip (restored before) holds the line's state, but
     * KVM's per-source line level is not part of it. */
    uart_load_regs(u, &regs, level);
    return true;
}

static bool serial_load(DevState *ds, unsigned instance, VmsnapFieldReader *r, uint32_t version,
                        GError **error)
{
    return serial_state_load(devstate_uart(ds), r, version,
                             !devstate_skipped(ds, "serial", instance, NULL));
}

const DevType devtype_serial = {
    .name = "serial",
    .version = SERIAL_VERSION,
    .min_version = 1,
    .count = serial_count,
    .save = serial_save,
    .load = serial_load,
};
