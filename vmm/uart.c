#include "uart.h"

#include <string.h>

enum {
    REG_RBR_THR_DLL = 0,
    REG_IER_DLM = 1,
    REG_IIR_FCR = 2,
    REG_LCR = 3,
    REG_MCR = 4,
    REG_LSR = 5,
    REG_MSR = 6,
    REG_SCR = 7,
};

#define IER_RDA  0x01
#define IER_THRE 0x02
#define IER_RLS  0x04
#define IER_MSI  0x08

#define IIR_NONE    0x01
#define IIR_MSI     0x00
#define IIR_THRE    0x02
#define IIR_RDA     0x04
#define IIR_RLS     0x06
#define IIR_TIMEOUT 0x0c
#define IIR_FIFO    0xc0

#define LCR_DLAB     0x80
#define MCR_OUT2     0x08
#define MCR_LOOP     0x10
#define LSR_DR       0x01
#define LSR_OE       0x02
#define LSR_ERRORS   0x1e /* OE, PE, FE, BI: the receiver line status interrupt's sources */
#define LSR_THRE     0x20
#define LSR_TEMT     0x40
#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_KEPT     0xc9 /* enable, DMA mode, RX trigger level */

static const uint8_t rx_trigger[4] = { 1, 4, 8, 14 };

/*
 * The character timeout: a real 16550 raises it when bytes below the trigger level
 * have waited 4 character times with nothing received or read. The host hands its
 * bytes over at once (no baud timing), so no further byte is ever "in transit": the
 * condition is taken as met as soon as bytes wait below the trigger level.
 */
static uint8_t compute_iir(const UartRegs *r)
{
    bool fifo = r->fcr & FCR_ENABLE;
    uint8_t fifo_bits = fifo ? IIR_FIFO : 0;
    if ((r->ier & IER_RLS) && (r->lsr & LSR_ERRORS))
        return IIR_RLS | fifo_bits;
    if ((r->ier & IER_RDA) && r->rx_count) {
        if (fifo && r->rx_count < rx_trigger[r->fcr >> 6])
            return IIR_TIMEOUT | fifo_bits;
        return IIR_RDA | fifo_bits;
    }
    if ((r->ier & IER_THRE) && r->thr_interrupt)
        return IIR_THRE | fifo_bits;
    if ((r->ier & IER_MSI) && (r->msr & 0x0f))
        return IIR_MSI | fifo_bits;
    return IIR_NONE | fifo_bits;
}

/* Called with the lock held. */
static void update_irq(Uart *u)
{
    int level = (compute_iir(&u->r) & IIR_NONE) ? 0 : 1;
    /* MCR OUT2 gates the interrupt line on PC-compatible boards. */
    if (!(u->r.mcr & MCR_OUT2))
        level = 0;
    if (level != u->irq_level) {
        u->irq_level = level;
        if (u->set_irq)
            u->set_irq(u->irq_opaque, level);
    }
}

static size_t room_locked(const Uart *u)
{
    unsigned cap = uart_rx_capacity(&u->r);
    if (u->rx_hold || u->r.rx_count >= cap)
        return 0;
    return cap - u->r.rx_count;
}

/* With the lock held: tell a refused host that it can send again. */
static void maybe_notify(Uart *u)
{
    if (u->rx_waiting && room_locked(u)) {
        u->rx_waiting = false;
        if (u->rx_notify)
            u->rx_notify(u->rx_notify_opaque);
    }
}

static void rx_clear(UartRegs *r)
{
    r->rx_count = r->rx_head = 0;
    r->lsr &= ~LSR_DR;
}

static void rx_push(Uart *u, uint8_t byte)
{
    UartRegs *r = &u->r;
    if (r->rx_count >= uart_rx_capacity(r)) {
        /* Overrun: the FIFO keeps its bytes and the new one is lost; without FIFO the
         * new byte overwrites the holding register. */
        r->lsr |= LSR_OE;
        if (!(r->fcr & FCR_ENABLE))
            r->rx_fifo[(r->rx_head + r->rx_count - 1) % UART_FIFO_SIZE] = byte;
        return;
    }
    r->rx_fifo[(r->rx_head + r->rx_count) % UART_FIFO_SIZE] = byte;
    r->rx_count++;
    r->lsr |= LSR_DR;
}

static uint8_t rx_pop(Uart *u)
{
    UartRegs *r = &u->r;
    if (!r->rx_count)
        return 0;
    uint8_t byte = r->rx_fifo[r->rx_head];
    r->rx_head = (r->rx_head + 1) % UART_FIFO_SIZE;
    if (--r->rx_count == 0) {
        r->lsr &= ~LSR_DR;
        r->rx_head = 0;
    }
    return byte;
}

/* The modem inputs (MSR bits 4-7): the lines, or in loopback the MCR outputs
 * (RTS -> CTS, DTR -> DSR, OUT1 -> RI, OUT2 -> DCD). */
static uint8_t modem_inputs(const UartRegs *r)
{
    if (r->mcr & MCR_LOOP)
        return (uint8_t)(((r->mcr & 0x02) << 3) | ((r->mcr & 0x01) << 5) | ((r->mcr & 0x0c) << 4));
    return r->msr & 0xf0;
}

void uart_init(Uart *u, Chardev *out, UartIrqFunc set_irq, void *irq_opaque)
{
    memset(u, 0, sizeof(*u));
    g_mutex_init(&u->lock);
    u->out = out;
    u->set_irq = set_irq;
    u->irq_opaque = irq_opaque;
    u->r.lsr = LSR_THRE | LSR_TEMT;
    u->r.msr = 0xb0; /* DCD, DSR, CTS asserted */
    u->r.dll = 0x0c; /* 9600 baud */
}

void uart_destroy(Uart *u)
{
    g_mutex_clear(&u->lock);
}

static void write_reg(Uart *u, unsigned reg, uint8_t v)
{
    UartRegs *r = &u->r;
    bool dlab = r->lcr & LCR_DLAB;

    switch (reg) {
    case REG_RBR_THR_DLL:
        if (dlab) {
            r->dll = v;
            break;
        }
        if (r->mcr & MCR_LOOP)
            rx_push(u, v);
        else if (u->out)
            chardev_write(u->out, &v, 1);
        /* The byte leaves at once: THR is empty again. */
        r->thr_interrupt = true;
        break;
    case REG_IER_DLM:
        if (dlab) {
            r->dlm = v;
            break;
        }
        /* Enabling the THRE interrupt while THR is empty raises it at once. */
        if (!(r->ier & IER_THRE) && (v & IER_THRE))
            r->thr_interrupt = true;
        r->ier = v & 0x0f;
        break;
    case REG_IIR_FCR: {
        /* The other bits are written only together with bit 0 (FIFO enable);
         * changing bit 0 empties the FIFOs. */
        uint8_t fcr = (v & FCR_ENABLE) ? (v & FCR_KEPT) : 0;
        if ((v & FCR_CLEAR_RX) || ((fcr ^ r->fcr) & FCR_ENABLE))
            rx_clear(r);
        r->fcr = fcr;
        break;
    }
    case REG_LCR:
        r->lcr = v;
        break;
    case REG_MCR: {
        uint8_t before = modem_inputs(r);
        r->mcr = v & 0x1f;
        uint8_t after = modem_inputs(r);
        uint8_t changed = before ^ after;
        /* Delta bits: CTS, DSR and DCD changed; RI went from on to off. */
        r->msr |= (uint8_t)(((changed & 0x10) ? 0x01 : 0) | ((changed & 0x20) ? 0x02 : 0) |
                            ((before & 0x40) && !(after & 0x40) ? 0x04 : 0) |
                            ((changed & 0x80) ? 0x08 : 0));
        break;
    }
    case REG_SCR:
        r->scr = v;
        break;
    default: /* LSR and MSR are read-only */
        break;
    }
}

static uint8_t read_reg(Uart *u, unsigned reg)
{
    UartRegs *r = &u->r;
    bool dlab = r->lcr & LCR_DLAB;
    uint8_t v = 0;

    switch (reg) {
    case REG_RBR_THR_DLL:
        v = dlab ? r->dll : rx_pop(u);
        break;
    case REG_IER_DLM:
        v = dlab ? r->dlm : r->ier;
        break;
    case REG_IIR_FCR:
        v = compute_iir(r);
        /* Reading IIR acknowledges a THRE interrupt. */
        if ((v & 0x0f) == IIR_THRE)
            r->thr_interrupt = false;
        break;
    case REG_LCR:
        v = r->lcr;
        break;
    case REG_MCR:
        v = r->mcr;
        break;
    case REG_LSR:
        v = r->lsr;
        r->lsr &= ~LSR_ERRORS; /* reading LSR clears the error bits */
        break;
    case REG_MSR:
        v = (uint8_t)(modem_inputs(r) | (r->msr & 0x0f));
        r->msr &= 0xf0; /* reading MSR clears the delta bits */
        break;
    case REG_SCR:
        v = r->scr;
        break;
    }
    return v;
}

void uart_pio(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size)
{
    Uart *u = opaque;
    unsigned reg = (port - UART_COM1_BASE) & 7;

    g_mutex_lock(&u->lock);
    if (is_write)
        write_reg(u, reg, data[0]);
    else
        data[0] = read_reg(u, reg);
    for (unsigned i = 1; i < size; i++) /* wider accesses: upper bytes float high */
        if (!is_write)
            data[i] = 0xff;
    update_irq(u);
    maybe_notify(u);
    g_mutex_unlock(&u->lock);
}

void uart_set_rx_notify(Uart *u, UartRxNotifyFunc fn, void *opaque)
{
    g_mutex_lock(&u->lock);
    u->rx_notify = fn;
    u->rx_notify_opaque = opaque;
    g_mutex_unlock(&u->lock);
}

size_t uart_rx_room(Uart *u)
{
    g_mutex_lock(&u->lock);
    size_t room = room_locked(u);
    if (!room)
        u->rx_waiting = true;
    g_mutex_unlock(&u->lock);
    return room;
}

size_t uart_receive(Uart *u, const uint8_t *buf, size_t len)
{
    g_mutex_lock(&u->lock);
    size_t n = MIN(len, room_locked(u));
    for (size_t i = 0; i < n; i++)
        rx_push(u, buf[i]);
    if (n < len)
        u->rx_waiting = true;
    update_irq(u);
    g_mutex_unlock(&u->lock);
    return n;
}

void uart_set_rx_hold(Uart *u, bool hold)
{
    g_mutex_lock(&u->lock);
    u->rx_hold = hold;
    maybe_notify(u);
    g_mutex_unlock(&u->lock);
}

void uart_load_regs(Uart *u, const UartRegs *regs, int irq_level)
{
    g_mutex_lock(&u->lock);
    u->r = *regs;
    u->irq_level = irq_level;
    /* The irqchip (restored before) holds the line's state, but KVM's per-source line
     * level is not part of it: drive the line again so that both agree. */
    if (u->set_irq)
        u->set_irq(u->irq_opaque, irq_level);
    maybe_notify(u);
    g_mutex_unlock(&u->lock);
}
