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

#define IER_RDA   0x01
#define IER_THRE  0x02
#define IER_RLS   0x04
#define IER_MSI   0x08

#define IIR_NONE  0x01
#define IIR_MSI   0x00
#define IIR_THRE  0x02
#define IIR_RDA   0x04
#define IIR_RLS   0x06
#define IIR_FIFO  0xc0

#define LCR_DLAB  0x80
#define MCR_LOOP  0x10
#define LSR_DR    0x01
#define LSR_OE    0x02
#define LSR_THRE  0x20
#define LSR_TEMT  0x40
#define FCR_ENABLE 0x01
#define FCR_CLEAR_RX 0x02

static uint8_t compute_iir(const UartRegs *r)
{
    uint8_t fifo = (r->fcr & FCR_ENABLE) ? IIR_FIFO : 0;
    if ((r->ier & IER_RLS) && (r->lsr & LSR_OE))
        return IIR_RLS | fifo;
    if ((r->ier & IER_RDA) && r->rx_count)
        return IIR_RDA | fifo;
    if ((r->ier & IER_THRE) && r->thr_interrupt)
        return IIR_THRE | fifo;
    return IIR_NONE | fifo;
}

/* Called with the lock held. */
static void update_irq(Uart *u)
{
    int level = (compute_iir(&u->r) & IIR_NONE) ? 0 : 1;
    /* MCR OUT2 gates the interrupt line on PC-compatible boards. */
    if (!(u->r.mcr & 0x08))
        level = 0;
    if (level != u->irq_level) {
        u->irq_level = level;
        if (u->set_irq)
            u->set_irq(u->irq_opaque, level);
    }
}

static void rx_push(Uart *u, uint8_t byte)
{
    UartRegs *r = &u->r;
    if (r->rx_count == UART_FIFO_SIZE) {
        r->lsr |= LSR_OE;
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
    if (--r->rx_count == 0)
        r->lsr &= ~LSR_DR;
    return byte;
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
        else
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
    case REG_IIR_FCR:
        r->fcr = v & 0xc9;
        if (v & FCR_CLEAR_RX) {
            r->rx_count = r->rx_head = 0;
            r->lsr &= ~LSR_DR;
        }
        break;
    case REG_LCR:
        r->lcr = v;
        break;
    case REG_MCR:
        r->mcr = v & 0x1f;
        break;
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
        r->lsr &= ~LSR_OE;
        break;
    case REG_MSR:
        if (r->mcr & MCR_LOOP) /* loopback: modem outputs feed the inputs */
            v = (uint8_t)(((r->mcr & 0x0c) << 4) | ((r->mcr & 0x01) << 5) |
                          ((r->mcr & 0x02) << 3));
        else
            v = r->msr;
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
    g_mutex_unlock(&u->lock);
}

size_t uart_receive(Uart *u, const uint8_t *buf, size_t len)
{
    size_t n;
    g_mutex_lock(&u->lock);
    for (n = 0; n < len && u->r.rx_count < UART_FIFO_SIZE; n++)
        rx_push(u, buf[n]);
    update_irq(u);
    g_mutex_unlock(&u->lock);
    return n;
}
