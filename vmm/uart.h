/* A 16550A-compatible UART (COM1 at 0x3f8, IRQ 4).
 *
 * Transmit: a byte written to THR leaves at once (to the Chardev); THR is empty again.
 * Receive: bytes from the host enter through uart_receive() into the RX FIFO (16 bytes
 * with FCR bit 0 set, else the 1-byte holding register). The host only offers what
 * uart_rx_room() allows, so host input is never overrun; an overrun (LSR.OE) can still
 * happen in loopback mode. The interrupt output follows IIR (priority: receiver line
 * status > received data / character timeout > THR empty > modem status), gated by
 * MCR.OUT2, and is driven as a level: set_irq(1) while a condition holds, set_irq(0)
 * when it clears.
 */
#pragma once

#include "chardev.h"
#include "pio.h"

#include <glib.h>

#define UART_COM1_BASE 0x3f8
#define UART_COM1_IRQ  4
#define UART_FIFO_SIZE 16

typedef void (*UartIrqFunc)(void *opaque, int level);
typedef void (*UartRxNotifyFunc)(void *opaque);

/* Register file; this is also the device's saved state (vmm/dev_serial.c). */
typedef struct UartRegs {
    uint8_t ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
    bool thr_interrupt; /* THR empty interrupt pending (until IIR read/THR write) */
    uint8_t rx_fifo[UART_FIFO_SIZE];
    uint8_t rx_head, rx_count; /* rx_count <= 16 (FIFO mode) or 1 */
} UartRegs;

typedef struct Uart {
    GMutex lock;
    UartRegs r;
    int irq_level;
    Chardev *out;
    UartIrqFunc set_irq;
    void *irq_opaque;
    /* Host side of the receive path (not guest state). */
    bool rx_hold;    /* the VM is not running: take no input */
    bool rx_waiting; /* the host was refused: notify when there is room */
    UartRxNotifyFunc rx_notify;
    void *rx_notify_opaque;
} Uart;

void uart_init(Uart *u, Chardev *out, UartIrqFunc set_irq, void *irq_opaque);
void uart_destroy(Uart *u);

/* PIO handler for the 8 registers at base. */
void uart_pio(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size);

/* Called (from any thread, with the UART's lock held: do not call back into the UART)
 * when room appears after uart_rx_room() returned 0 or uart_receive() took less than
 * offered. */
void uart_set_rx_notify(Uart *u, UartRxNotifyFunc fn, void *opaque);

/* How many bytes uart_receive() takes now: 0 while held or full. */
size_t uart_rx_room(Uart *u);

/* Queues received bytes, at most uart_rx_room(); returns how many were taken. */
size_t uart_receive(Uart *u, const uint8_t *buf, size_t len);

/* While held (the VM is not running), the UART takes no input and its state does not
 * change from the host side. Releasing notifies a waiting host. */
void uart_set_rx_hold(Uart *u, bool hold);

/* Replaces the register file (device load) under the lock, re-drives the IRQ line at
 * `irq_level` and notifies a waiting host. */
void uart_load_regs(Uart *u, const UartRegs *regs, int irq_level);

/* The FIFO capacity FCR selects: 16 or 1. */
static inline unsigned uart_rx_capacity(const UartRegs *r)
{
    return (r->fcr & 0x01) ? UART_FIFO_SIZE : 1;
}
