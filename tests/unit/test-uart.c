/* The 16550A model (vmm/uart.c): receive path, interrupts, and the "serial" section. */
#include "devstate.h"
#include "uart.h"

#include <string.h>

enum { RBR = 0, THR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

typedef struct {
    Uart u;
    int level;
    unsigned raises, lowers;
    unsigned notes;
} T;

static void irq_cb(void *opaque, int level)
{
    T *t = opaque;
    g_assert_cmpint(level, !=, t->level); /* only transitions reach the line */
    t->level = level;
    if (level)
        t->raises++;
    else
        t->lowers++;
}

static void note_cb(void *opaque)
{
    ((T *)opaque)->notes++;
}

static uint8_t rd(T *t, unsigned reg)
{
    uint8_t v;
    uart_pio(&t->u, (uint16_t)(UART_COM1_BASE + reg), false, &v, 1);
    return v;
}

static void wr(T *t, unsigned reg, uint8_t v)
{
    uart_pio(&t->u, (uint16_t)(UART_COM1_BASE + reg), true, &v, 1);
}

/* 8N1, FCR as given, DTR|RTS|OUT2, RX data interrupt only (what guest/state does). */
static void setup(T *t, uint8_t fcr, uint8_t ier)
{
    memset(t, 0, sizeof(*t));
    uart_init(&t->u, NULL, irq_cb, t);
    uart_set_rx_notify(&t->u, note_cb, t);
    wr(t, LCR, 0x03);
    wr(t, FCR, fcr);
    wr(t, MCR, 0x0b);
    wr(t, IER, ier);
}

static size_t feed(T *t, const char *s)
{
    return uart_receive(&t->u, (const uint8_t *)s, strlen(s));
}

static void teardown(T *t)
{
    uart_destroy(&t->u);
}

/* FIFO off: one byte at a time, DR, IIR 0x04, the line up until RBR is read. */
static void test_holding_register(void)
{
    T t;
    setup(&t, 0x00, 0x01);
    g_assert_cmphex(rd(&t, IIR), ==, 0x01);
    g_assert_cmphex(rd(&t, LSR) & 0x01, ==, 0);
    g_assert_cmpuint(uart_rx_room(&t.u), ==, 1);
    g_assert_cmpuint(feed(&t, "ab"), ==, 1); /* no room for 'b': refused, not dropped */
    g_assert_cmpuint(uart_rx_room(&t.u), ==, 0);
    g_assert_cmphex(rd(&t, LSR), ==, 0x61); /* DR, THRE, TEMT; no OE */
    g_assert_cmphex(rd(&t, IIR), ==, 0x04); /* no FIFO bits */
    g_assert_cmpint(t.level, ==, 1);
    g_assert_cmpuint(t.notes, ==, 0);
    g_assert_cmphex(rd(&t, RBR), ==, 'a');
    g_assert_cmpint(t.level, ==, 0);
    g_assert_cmphex(rd(&t, LSR) & 0x01, ==, 0);
    g_assert_cmphex(rd(&t, IIR), ==, 0x01);
    g_assert_cmpuint(t.notes, ==, 1); /* the host is told there is room */
    g_assert_cmpuint(feed(&t, "b"), ==, 1);
    g_assert_cmpint(t.level, ==, 1);
    g_assert_cmpuint(t.raises, ==, 2);
    g_assert_cmpuint(t.lowers, ==, 1);
    g_assert_cmphex(rd(&t, RBR), ==, 'b');
    g_assert_cmpuint(t.notes, ==, 1); /* nobody was waiting this time */
    teardown(&t);
}

/* FIFO on, trigger 14: 16 bytes fit; IIR says "data" at/above the trigger level and
 * "character timeout" below it; bytes come out in order across the ring's wrap. */
static void test_fifo(void)
{
    T t;
    setup(&t, 0xc1, 0x01);
    g_assert_cmphex(rd(&t, IIR), ==, 0xc1);
    g_assert_cmpuint(uart_rx_room(&t.u), ==, 16);
    g_assert_cmpuint(feed(&t, "0123456789ab"), ==, 12);
    g_assert_cmphex(rd(&t, IIR), ==, 0xcc); /* 12 < 14: timeout */
    g_assert_cmpuint(feed(&t, "cdefghij"), ==, 4);
    g_assert_cmpuint(uart_rx_room(&t.u), ==, 0);
    g_assert_cmphex(rd(&t, IIR), ==, 0xc4);        /* 16 >= 14 */
    g_assert_cmphex(rd(&t, LSR) & 0x03, ==, 0x01); /* full is not an overrun */
    for (int i = 0; i < 3; i++)
        g_assert_cmphex(rd(&t, RBR), ==, "012"[i]);
    g_assert_cmphex(rd(&t, IIR), ==, 0xcc); /* 13 left */
    g_assert_cmpuint(t.notes, ==, 1);
    g_assert_cmpuint(feed(&t, "ghi"), ==, 3); /* wraps around the ring */
    const char *want = "3456789abcdefghi";
    for (int i = 0; want[i]; i++) {
        g_assert_cmpint(t.level, ==, 1);
        g_assert_cmphex(rd(&t, RBR), ==, want[i]);
    }
    g_assert_cmphex(rd(&t, LSR) & 0x01, ==, 0);
    g_assert_cmphex(rd(&t, IIR), ==, 0xc1);
    g_assert_cmpint(t.level, ==, 0);
    g_assert_cmphex(rd(&t, RBR), ==, 0); /* empty FIFO */
    teardown(&t);
}

static void test_trigger_levels(void)
{
    static const struct {
        uint8_t fcr;
        unsigned level;
    } cases[] = {
        { 0x01, 1 },
        { 0x41, 4 },
        { 0x81, 8 },
        { 0xc1, 14 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        T t;
        setup(&t, cases[i].fcr, 0x01);
        for (unsigned n = 1; n <= 16; n++) {
            g_assert_cmpuint(feed(&t, "x"), ==, 1);
            g_assert_cmphex(rd(&t, IIR), ==, n < cases[i].level ? 0xcc : 0xc4);
        }
        teardown(&t);
    }
}

/* FCR: the clear bit empties the RX FIFO; so does switching the FIFO on or off;
 * other bits are ignored unless bit 0 is set. */
static void test_fcr(void)
{
    T t;
    setup(&t, 0x01, 0x01);
    feed(&t, "abc");
    wr(&t, FCR, 0x03);
    g_assert_cmphex(rd(&t, LSR) & 0x01, ==, 0);
    g_assert_cmpint(t.level, ==, 0);
    feed(&t, "abc");
    wr(&t, FCR, 0xc0); /* bit 0 clear: FIFO off, trigger bits not kept, FIFO emptied */
    g_assert_cmphex(rd(&t, LSR) & 0x01, ==, 0);
    g_assert_cmphex(rd(&t, IIR), ==, 0x01);
    g_assert_cmpuint(uart_rx_room(&t.u), ==, 1);
    g_assert_cmphex(t.u.r.fcr, ==, 0);
    teardown(&t);
}

/* Loopback overruns: FIFO off, the new byte overwrites the holding register; FIFO on,
 * the FIFO keeps its 16 bytes. OE raises the line status interrupt until LSR is read. */
static void test_overrun(void)
{
    T t;
    setup(&t, 0x00, 0x05); /* RX data + line status */
    wr(&t, MCR, 0x1b);     /* loopback */
    wr(&t, THR, 'x');
    g_assert_cmphex(rd(&t, IIR), ==, 0x04);
    wr(&t, THR, 'y');
    g_assert_cmphex(rd(&t, IIR), ==, 0x06);
    g_assert_cmpint(t.level, ==, 1);
    g_assert_cmphex(rd(&t, LSR) & 0x03, ==, 0x03);
    g_assert_cmphex(rd(&t, LSR) & 0x03, ==, 0x01); /* reading LSR cleared OE */
    g_assert_cmphex(rd(&t, IIR), ==, 0x04);
    g_assert_cmphex(rd(&t, RBR), ==, 'y');
    g_assert_cmpint(t.level, ==, 0);
    teardown(&t);

    setup(&t, 0xc1, 0x05);
    wr(&t, MCR, 0x1b);
    for (int i = 0; i < 17; i++)
        wr(&t, THR, (uint8_t)('A' + i));
    g_assert_cmphex(rd(&t, IIR), ==, 0xc6);
    g_assert_cmphex(rd(&t, LSR) & 0x03, ==, 0x03);
    for (int i = 0; i < 16; i++)
        g_assert_cmphex(rd(&t, RBR), ==, 'A' + i);
    g_assert_cmphex(rd(&t, LSR) & 0x03, ==, 0x00);
    teardown(&t);
}

/* All four sources at once, in priority order: line status, RX data, THR empty,
 * modem status; each cleared the way the 16550 clears it. */
static void test_iir_priorities(void)
{
    T t;
    setup(&t, 0x00, 0x0f);
    /* Entering loopback with RTS off drops CTS (the inputs follow DTR, RTS, OUT1, OUT2):
     * a delta bit. The line is gated by OUT2, which stays set. */
    wr(&t, MCR, 0x19);
    g_assert_cmpint(t.level, ==, 1);
    wr(&t, THR, 'p'); /* RX data (loopback) and THR empty */
    wr(&t, THR, 'q'); /* overrun */
    g_assert_cmphex(rd(&t, IIR), ==, 0x06);
    rd(&t, LSR);
    g_assert_cmphex(rd(&t, IIR), ==, 0x04);
    g_assert_cmphex(rd(&t, RBR), ==, 'q');
    g_assert_cmphex(rd(&t, IIR), ==, 0x02); /* reading it acknowledges THRE */
    uint8_t msr = rd(&t, IIR) == 0x00 ? rd(&t, MSR) : 0xff;
    g_assert_cmphex(msr, ==, 0xa1); /* DCD (OUT2), DSR (DTR); delta CTS */
    g_assert_cmphex(rd(&t, IIR), ==, 0x01);
    g_assert_cmpint(t.level, ==, 0);
    g_assert_cmphex(rd(&t, MSR) & 0x0f, ==, 0);
    teardown(&t);
}

/* Level semantics and the OUT2 gate: the line goes up once per condition, down when
 * it clears; with OUT2 off it stays down whatever IIR says. IER masks sources. */
static void test_irq_line(void)
{
    T t;
    setup(&t, 0x00, 0x00); /* no source enabled */
    feed(&t, "a");
    g_assert_cmphex(rd(&t, IIR), ==, 0x01);
    g_assert_cmpint(t.level, ==, 0);
    wr(&t, MCR, 0x03); /* OUT2 off */
    wr(&t, IER, 0x01);
    g_assert_cmphex(rd(&t, IIR), ==, 0x04);
    g_assert_cmpint(t.level, ==, 0);
    wr(&t, MCR, 0x0b); /* OUT2 on: the pending condition reaches the line */
    g_assert_cmpint(t.level, ==, 1);
    rd(&t, LSR);
    rd(&t, IIR);
    g_assert_cmpuint(t.raises, ==, 1);
    wr(&t, IER, 0x00); /* masking the source lowers the line */
    g_assert_cmpint(t.level, ==, 0);
    wr(&t, IER, 0x01);
    g_assert_cmpint(t.level, ==, 1);
    rd(&t, RBR);
    g_assert_cmpint(t.level, ==, 0);
    g_assert_cmpuint(t.raises, ==, 2);
    g_assert_cmpuint(t.lowers, ==, 2);
    /* THR empty: raised when enabled, lowered by reading IIR, raised by writing THR. */
    wr(&t, IER, 0x02);
    g_assert_cmpint(t.level, ==, 1);
    g_assert_cmphex(rd(&t, IIR), ==, 0x02);
    g_assert_cmpint(t.level, ==, 0);
    wr(&t, THR, 'z');
    g_assert_cmpint(t.level, ==, 1);
    teardown(&t);
}

/* While held (VM stopped) nothing is taken and the state does not move; releasing
 * tells the waiting host. */
static void test_hold(void)
{
    T t;
    setup(&t, 0x01, 0x01);
    uart_set_rx_hold(&t.u, true);
    g_assert_cmpuint(uart_rx_room(&t.u), ==, 0);
    g_assert_cmpuint(feed(&t, "abc"), ==, 0);
    g_assert_cmphex(rd(&t, LSR) & 0x01, ==, 0);
    g_assert_cmpint(t.level, ==, 0);
    g_assert_cmpuint(t.notes, ==, 0);
    uart_set_rx_hold(&t.u, false);
    g_assert_cmpuint(t.notes, ==, 1);
    g_assert_cmpuint(feed(&t, "abc"), ==, 3);
    g_assert_cmpint(t.level, ==, 1);
    teardown(&t);
}

static GBytes *save(T *t)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    serial_state_save(&t->u, w);
    GBytes *b = vmsnap_fw_finish(w, NULL);
    g_assert_nonnull(b);
    return b;
}

static bool load(T *t, GBytes *b, uint32_t version, GError **error)
{
    gsize len;
    const void *data = g_bytes_get_data(b, &len);
    VmsnapFieldReader *r = vmsnap_fr_new(data, len, "serial", 0, version);
    bool ok = serial_state_load(&t->u, r, version, true);
    bool done = vmsnap_fr_finish(r, error);
    return ok && done;
}

/* A UART with bytes in a wrapped FIFO, a pending THR interrupt, OE and MSR deltas
 * saves and loads into a fresh UART that then behaves identically. */
static void test_save_load(void)
{
    T a, b;
    g_autoptr(GError) error = NULL;
    setup(&a, 0x81, 0x0f);
    wr(&a, SCR, 0x5a);
    wr(&a, LCR, 0x83);
    wr(&a, RBR, 0x01); /* divisor 1 */
    wr(&a, LCR, 0x03);
    feed(&a, "0123456789abcdef");
    for (int i = 0; i < 10; i++)
        rd(&a, RBR);
    g_assert_cmpuint(feed(&a, "ghijklmnopqr"), ==, 10); /* full, wrapped */
    wr(&a, MCR, 0x19);                                  /* loopback with RTS off: an MSR delta */
    wr(&a, THR, 'm'); /* overrun (FIFO full), THR interrupt pending */
    g_assert_cmphex(a.u.r.lsr & 0x03, ==, 0x03);
    g_assert_cmphex(a.u.r.msr & 0x0f, ==, 0x01);
    g_assert_true(a.u.r.thr_interrupt);
    g_assert_cmpuint(a.u.r.rx_head, ==, 10);
    g_assert_cmpint(a.level, ==, 1);

    g_autoptr(GBytes) bytes = save(&a);
    setup(&b, 0x00, 0x00);
    b.u.r.mcr = 0; /* the target's line starts low */
    g_assert_true(load(&b, bytes, 1, &error));
    g_assert_no_error(error);
    g_assert_cmpint(memcmp(&a.u.r, &b.u.r, sizeof(a.u.r)), ==, 0);
    g_assert_cmpint(b.level, ==, 1); /* the line was driven again */
    g_assert_cmpuint(b.u.irq_level, ==, 1);

    /* Same reads, same answers, until both are quiet. */
    const unsigned regs[] = { IIR, LSR, IIR, RBR, RBR, IIR, MSR, IIR, SCR, LCR, MCR };
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < G_N_ELEMENTS(regs); i++)
            g_assert_cmphex(rd(&a, regs[i]), ==, rd(&b, regs[i]));
    for (int i = 0; i < 16; i++)
        g_assert_cmphex(rd(&a, RBR), ==, rd(&b, RBR));
    g_assert_cmpint(a.level, ==, b.level);
    teardown(&a);
    teardown(&b);
}

/* The version-1 payload, field by field (docs/DEVICES.md), with one u8 field replaced. */
static GBytes *payload(const UartRegs *r, uint8_t level, const char *field, uint8_t value)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
#define U8(name, v) vmsnap_fw_u8(w, name, field && !strcmp(field, name) ? value : (v))
    U8("ier", r->ier);
    U8("lcr", r->lcr);
    U8("mcr", r->mcr);
    U8("lsr", r->lsr);
    U8("msr", r->msr);
    U8("scr", r->scr);
    U8("dll", r->dll);
    U8("dlm", r->dlm);
    U8("fcr", r->fcr);
    vmsnap_fw_bool(w, "thr_interrupt", r->thr_interrupt);
    vmsnap_fw_bytes(w, "rx_fifo", r->rx_fifo, sizeof(r->rx_fifo));
    U8("rx_head", r->rx_head);
    U8("rx_count", r->rx_count);
    U8("irq_level", level);
#undef U8
    GBytes *b = vmsnap_fw_finish(w, NULL);
    g_assert_nonnull(b);
    return b;
}

/* Values the UART cannot reach are refused, naming the field, and nothing is applied. */
static void test_load_refusals(void)
{
    T a, b;
    g_autoptr(GError) ok_error = NULL;
    setup(&a, 0x01, 0x01);
    feed(&a, "xy");
    /* The test's encoding is the device's own. */
    g_autoptr(GBytes) mine = payload(&a.u.r, 1, NULL, 0);
    g_autoptr(GBytes) theirs = save(&a);
    g_assert_true(g_bytes_equal(mine, theirs));

    static const struct {
        const char *name;
        uint8_t value;
        const char *needle;
    } cases[] = {
        { "rx_count", 17, "'rx_count'" },  { "rx_count", 0, "data-ready" }, /* LSR still says DR */
        { "lsr", 0x60, "data-ready" }, /* DR off with 2 bytes in the FIFO */
        { "rx_head", 16, "'rx_head'" },    { "fcr", 0x02, "'fcr'" },
        { "ier", 0x10, "'ier'" },          { "mcr", 0x20, "'mcr'" },
        { "irq_level", 2, "'irq_level'" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GBytes) bad = payload(&a.u.r, 1, cases[i].name, cases[i].value);
        g_autoptr(GError) error = NULL;
        setup(&b, 0x00, 0x00);
        UartRegs before = b.u.r;
        g_assert_false(load(&b, bad, 1, &error));
        g_assert_nonnull(error);
        if (g_test_verbose())
            g_printerr("%s=%u -> %s\n", cases[i].name, cases[i].value, error->message);
        g_assert_nonnull(strstr(error->message, cases[i].needle));
        g_assert_nonnull(strstr(error->message, "section 'serial'"));
        g_assert_cmpint(memcmp(&before, &b.u.r, sizeof(before)), ==, 0);
        g_assert_cmpuint(b.raises, ==, 0);
        teardown(&b);
    }
    /* A valid payload with the line low loads and lowers nothing it never raised. */
    g_autoptr(GBytes) fine = payload(&a.u.r, 1, NULL, 0);
    setup(&b, 0x00, 0x00);
    g_assert_true(load(&b, fine, 1, &ok_error));
    g_assert_cmpint(b.level, ==, 1);
    teardown(&b);
    teardown(&a);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/uart/holding-register", test_holding_register);
    g_test_add_func("/uart/fifo", test_fifo);
    g_test_add_func("/uart/trigger-levels", test_trigger_levels);
    g_test_add_func("/uart/fcr", test_fcr);
    g_test_add_func("/uart/overrun", test_overrun);
    g_test_add_func("/uart/iir-priorities", test_iir_priorities);
    g_test_add_func("/uart/irq-line", test_irq_line);
    g_test_add_func("/uart/hold", test_hold);
    g_test_add_func("/uart/save-load", test_save_load);
    g_test_add_func("/uart/load-refusals", test_load_refusals);
    return g_test_run();
}
