/* A 16550A-compatible UART (COM1 at 0x3f8, IRQ 4). */
#pragma once

#include "chardev.h"
#include "pio.h"

#include <glib.h>

#define UART_COM1_BASE 0x3f8
#define UART_COM1_IRQ  4
#define UART_FIFO_SIZE 16

typedef void (*UartIrqFunc)(void *opaque, int level);

/* Register file; this is also the device's saved state. */
typedef struct UartRegs {
    uint8_t ier, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
    bool thr_interrupt;          /* THR empty interrupt pending (until IIR read/THR write) */
    uint8_t rx_fifo[UART_FIFO_SIZE];
    uint8_t rx_head, rx_count;
} UartRegs;

typedef struct Uart {
    GMutex lock;
    UartRegs r;
    int irq_level;
    Chardev *out;
    UartIrqFunc set_irq;
    void *irq_opaque;
} Uart;

void uart_init(Uart *u, Chardev *out, UartIrqFunc set_irq, void *irq_opaque);
void uart_destroy(Uart *u);

/* PIO handler for the 8 registers at base. */
void uart_pio(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size);

/* Queues received bytes; returns how many fit in the FIFO. */
size_t uart_receive(Uart *u, const uint8_t *buf, size_t len);
