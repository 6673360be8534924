/* SPDX-License-Identifier: MIT */
/*
 * guest/state ring 0: boot, device programming, interrupt handlers and the
 * device-state checks (docs/GUEST.md, "guest/state").
 *
 * On PVM hosts every ring-0 instruction goes through KVM's emulator
 * (~0.5 us each; rdtsc 4.5 us, port I/O ~9 us, LAPIC/IOAPIC MMIO ~1 us), so
 * the handlers are short and the expensive checks run ~10 times a second.
 * All SIMD and all the tight-loop checking is in the ring-3 task (user.c).
 * Every ring-0 path runs with IF=0 (interrupt gates), except the boot-time
 * PIT wait and the idle loop after an unexpected exception.
 */
#include "state.h"

/* ---- layout checks against guests.h ------------------------------------- */
#define OFF(f)  __builtin_offsetof(struct status, f)
#define SOFF(f) __builtin_offsetof(struct slot, f)
_Static_assert(OFF(magic) == VMSNAP_STATE_OFF_MAGIC, "magic");
_Static_assert(OFF(version) == VMSNAP_STATE_OFF_VERSION, "version");
_Static_assert(OFF(ncpus) == VMSNAP_STATE_OFF_NCPUS, "ncpus");
_Static_assert(OFF(flags) == VMSNAP_STATE_OFF_FLAGS, "flags");
_Static_assert(OFF(hz) == VMSNAP_STATE_OFF_HZ, "hz");
_Static_assert(OFF(pit_hz) == VMSNAP_STATE_OFF_PIT_HZ, "pit_hz");
_Static_assert(OFF(maxjump_ms) == VMSNAP_STATE_OFF_MAXJUMP_MS, "maxjump");
_Static_assert(OFF(dirty_mb) == VMSNAP_STATE_OFF_DIRTY_MB, "dirty_mb");
_Static_assert(OFF(pit_pin) == VMSNAP_STATE_OFF_PIT_PIN, "pit_pin");
_Static_assert(OFF(heartbeats) == VMSNAP_STATE_OFF_HEARTBEATS, "heartbeats");
_Static_assert(OFF(pit_ticks) == VMSNAP_STATE_OFF_PIT_TICKS, "pit_ticks");
_Static_assert(OFF(uart_rx_irqs) == VMSNAP_STATE_OFF_UART_RX_IRQS, "rx_irqs");
_Static_assert(OFF(uart_rx_bytes) == VMSNAP_STATE_OFF_UART_RX_BYTES, "rx_bytes");
_Static_assert(OFF(pings) == VMSNAP_STATE_OFF_PINGS, "pings");
_Static_assert(OFF(pongs) == VMSNAP_STATE_OFF_PONGS, "pongs");
_Static_assert(OFF(f_count) == VMSNAP_STATE_OFF_F_COUNT, "f_count");
_Static_assert(OFF(first_f) == VMSNAP_STATE_OFF_FIRST_F, "first_f");
_Static_assert(OFF(last_f) == VMSNAP_STATE_OFF_LAST_F, "last_f");
_Static_assert(OFF(last_f_cpu) == VMSNAP_STATE_OFF_LAST_F_CPU, "last_f_cpu");
_Static_assert(OFF(f_mask) == VMSNAP_STATE_OFF_F_MASK, "f_mask");
_Static_assert(OFF(last_f_a) == VMSNAP_STATE_OFF_LAST_F_A, "last_f_a");
_Static_assert(OFF(last_f_b) == VMSNAP_STATE_OFF_LAST_F_B, "last_f_b");
_Static_assert(OFF(tsc_khz) == VMSNAP_STATE_OFF_TSC_KHZ, "tsc_khz");
_Static_assert(OFF(lapic_khz) == VMSNAP_STATE_OFF_LAPIC_KHZ, "lapic_khz");
_Static_assert(OFF(dirty_rate) == VMSNAP_STATE_OFF_DIRTY_RATE, "dirty_rate");
_Static_assert(OFF(cpus_wanted) == VMSNAP_STATE_OFF_CPUS_WANTED, "cpus_wanted");
_Static_assert(OFF(patterns_gpa) == VMSNAP_STATE_OFF_PATTERNS_GPA, "patterns_gpa");
_Static_assert(OFF(pattern_size) == VMSNAP_STATE_OFF_PATTERN_SIZE, "pattern_size");
_Static_assert(OFF(slot) == VMSNAP_STATE_OFF_SLOTS, "slots");
_Static_assert(sizeof(struct slot) == VMSNAP_STATE_SLOT_SIZE, "slot size");
_Static_assert(sizeof(struct status) == VMSNAP_STATE_SIZE, "status size");
_Static_assert(SOFF(state) == VMSNAP_STATE_SLOT_STATE, "state");
_Static_assert(SOFF(apic_id) == VMSNAP_STATE_SLOT_APIC_ID, "apic_id");
_Static_assert(SOFF(lapic_ticks) == VMSNAP_STATE_SLOT_LAPIC_TICKS, "lapic_ticks");
_Static_assert(SOFF(timer_mode) == VMSNAP_STATE_SLOT_TIMER_MODE, "timer_mode");
_Static_assert(SOFF(ipis) == VMSNAP_STATE_SLOT_IPIS, "ipis");
_Static_assert(SOFF(f_count) == VMSNAP_STATE_SLOT_F_COUNT, "slot f_count");
_Static_assert(SOFF(last_f) == VMSNAP_STATE_SLOT_LAST_F, "slot last_f");
_Static_assert(SOFF(r3_calls) == VMSNAP_STATE_SLOT_R3_CALLS, "r3_calls");
_Static_assert(SOFF(r3_loops) == VMSNAP_STATE_SLOT_R3_LOOPS, "r3_loops");
_Static_assert(SOFF(kvmclock_ns) == VMSNAP_STATE_SLOT_KVMCLOCK_NS, "kvmclock_ns");
_Static_assert(SOFF(tsc) == VMSNAP_STATE_SLOT_TSC, "tsc");
_Static_assert(SOFF(run_ns) == VMSNAP_STATE_SLOT_RUN_NS, "run_ns");
_Static_assert(SOFF(dirty_bytes) == VMSNAP_STATE_SLOT_DIRTY_BYTES, "dirty_bytes");
_Static_assert(SOFF(dirty_passes) == VMSNAP_STATE_SLOT_DIRTY_PASSES, "dirty_passes");
_Static_assert(SOFF(exc_vector) == VMSNAP_STATE_SLOT_EXC_VECTOR, "exc_vector");
_Static_assert(SOFF(exc_rip) == VMSNAP_STATE_SLOT_EXC_RIP, "exc_rip");
_Static_assert(SOFF(max_gap_ns) == VMSNAP_STATE_SLOT_MAX_GAP_NS, "max_gap_ns");
_Static_assert(MAX_CPUS * sizeof(struct pvclock) <= 4096, "pvclock page");

/* ---- constants ------------------------------------------------------------ */
#define MB_BOOT_MAGIC 0x2BADB002u
#define MBI_MEMORY    (1u << 0)
#define MBI_CMDLINE   (1u << 2)
#define VMSN          0x564D534Eu

#define COM1         0x3F8
#define UART_RBR     (COM1 + 0)
#define UART_THR     (COM1 + 0)
#define UART_IER     (COM1 + 1)
#define UART_FCR     (COM1 + 2)
#define UART_IIR     (COM1 + 2)
#define UART_LCR     (COM1 + 3)
#define UART_MCR     (COM1 + 4)
#define UART_LSR     (COM1 + 5)
#define UART_MSR     (COM1 + 6)
#define UART_SCR     (COM1 + 7)
#define LSR_DR       0x01
#define LSR_THRE     0x20
#define UART_IER_VAL 0x01 /* received-data interrupt only */
#define UART_LCR_VAL 0x03 /* 8N1, DLAB off */
#define UART_MCR_VAL 0x0B /* DTR | RTS | OUT2 (OUT2 gates the IRQ on PCs) */
#define UART_SCR_VAL 0x5A
#define UART_PIN     4

#define PIT_CH0      0x40
#define PIT_CMD      0x43
#define PIT_HZ_IN    1193182u
#define PIT_MODE_CMD 0x34 /* channel 0, lo/hi, mode 2 (rate generator), binary */

#define LAPIC_BASE      0xFEE00000ull
#define LAPIC_ID        0x020
#define LAPIC_TPR       0x080
#define LAPIC_EOI       0x0B0
#define LAPIC_LDR       0x0D0
#define LAPIC_DFR       0x0E0
#define LAPIC_SVR       0x0F0
#define LAPIC_ESR       0x280
#define LAPIC_ICR_LO    0x300
#define LAPIC_ICR_HI    0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_ERR   0x370
#define LAPIC_TICR      0x380
#define LAPIC_TCCR      0x390
#define LAPIC_TDCR      0x3E0
#define LVT_MASKED      (1u << 16)
#define LVT_PERIODIC    (1u << 17)
#define LVT_TSCDL       (2u << 17)
#define LVT_DELIVS      (1u << 12)
#define SVR_VAL         (0x100u | V_SPURIOUS)
#define TDCR_DIV16      0x3u

#define IOAPIC_BASE    0xFEC00000ull
#define IOAPIC_RO_BITS ((1ull << 12) | (1ull << 14)) /* delivery status, remote IRR */

#define MSR_EFER                0xC0000080u
#define MSR_TSC_DEADLINE        0x6E0u
#define MSR_KVM_SYSTEM_TIME     0x12u
#define MSR_KVM_SYSTEM_TIME_NEW 0x4B564D01u

#define NO_PIN 0xFFFFFFFFu

/* ---- state ---------------------------------------------------------------- */
struct config cfg;

/* Per vCPU, at the base of its (size-aligned) kernel stack. */
struct percpu {
    u32 cpu;
    u32 apic_id;
    u32 deadline;  /* TSC-deadline mode */
    u32 ticr;      /* periodic initial count */
    u32 lvt_timer; /* what we programmed */
    u32 ldr;
    u64 period_tsc;
    u64 next_deadline;
    u32 check_tick;
    u32 printed; /* F codes already printed by this vCPU (bit n) */
    u32 printed_hb[VMSNAP_STATE_F_MAX + 1];
};

u8 kstacks[MAX_CPUS][KSTACK_SIZE] __attribute__((aligned(KSTACK_SIZE)));
u8 ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(4096)));

struct idt_entry {
    u64 lo, hi;
};
static struct idt_entry idt[256] __attribute__((aligned(16)));

struct tss {
    u32 reserved0;
    u64 rsp0, rsp1, rsp2;
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iopb;
} __attribute__((packed));
_Static_assert(sizeof(struct tss) == 104, "tss size");
static struct tss tss[MAX_CPUS] __attribute__((aligned(16)));

/* start.S */
extern u32 boot_magic, boot_mbi, boot_esi, boot_edx;
extern u64 ap_boot_rsp;
extern u32 ap_boot_cpu;
extern u64 gdt_tss[];
extern const u64 isr_stubs[256];
extern const u8 tramp_start[], tramp_end[];
void kmain(void) __attribute__((noreturn));
void ap_main(u32 cpu) __attribute__((noreturn));

struct frame {
    u64 r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
    u64 vector, error;
    u64 rip, cs, rflags, rsp, ss;
};
void isr_dispatch(struct frame *f);

static volatile u32 uart_lock; /* 0 free, else owner vCPU + 1 */
static volatile u32 ready;     /* all vCPUs up, 'A' printed */
static volatile u32 ap_started;
static u32 bsp_apic_id;
static u64 ioapic_shadow[24];
static u32 ioapic_checked_pins[3];
static u32 n_checked_pins;
static u16 pit_reload;
static volatile u32 calib_ticks;  /* PIT ticks while calibrating */
static volatile u64 calib_tsc[2]; /* TSC at PIT tick 1 and the last one */

/* vCPU 0 bookkeeping (only ever touched by vCPU 0's handlers). */
static u32 hb_ticks;
static u32 heartbeats;
static u32 ping_out; /* a ping is in flight */
static u32 ping_target;
static u32 ping_age;      /* vCPU 0 ticks since it was sent */
static u32 ping_progress; /* the target's progress (ap_progress) when sent */
static u32 ping_confirm;  /* unanswered for 2 s with progress: watching 1 s more */
static u32 ap_sample[MAX_CPUS];
static u32 ap_still[MAX_CPUS]; /* consecutive 1-s samples without progress */
static u32 rx_pending_checks;  /* periodic checks that saw LSR.DR with no RX irq in between */
static u32 rx_irqs_seen;
static u32 brk_ticks;                /* vCPU 0 ticks since 'A', until break= fires */
static volatile u32 ap_ignore_pings; /* break=13 */
static volatile u32 ap_halt;         /* break=14 */

/* ---- helpers --------------------------------------------------------------- */
void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);

void *memset(void *d, int c, unsigned long n)
{
    u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    u8 *p = d;
    const u8 *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void outb(u16 port, u8 v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static inline u64 rdmsr(u32 msr)
{
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}

static inline void wrmsr(u32 msr, u64 v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static inline u32 lapic_rd(u32 reg)
{
    return *(volatile u32 *)(LAPIC_BASE + reg);
}

static inline void lapic_wr(u32 reg, u32 v)
{
    *(volatile u32 *)(LAPIC_BASE + reg) = v;
}

static inline void lapic_eoi(void)
{
    lapic_wr(LAPIC_EOI, 0);
}

static u32 ioapic_rd(u32 reg)
{
    *(volatile u32 *)IOAPIC_BASE = reg;
    return *(volatile u32 *)(IOAPIC_BASE + 0x10);
}

static void ioapic_wr(u32 reg, u32 v)
{
    *(volatile u32 *)IOAPIC_BASE = reg;
    *(volatile u32 *)(IOAPIC_BASE + 0x10) = v;
}

static u64 ioapic_get(u32 pin)
{
    u32 lo = ioapic_rd(0x10 + 2 * pin);
    u32 hi = ioapic_rd(0x11 + 2 * pin);
    return ((u64)hi << 32) | lo;
}

static void ioapic_set(u32 pin, u64 v)
{
    ioapic_wr(0x10 + 2 * pin, (u32)v | LVT_MASKED); /* masked while half-written */
    ioapic_wr(0x11 + 2 * pin, (u32)(v >> 32));
    ioapic_wr(0x10 + 2 * pin, (u32)v);
    ioapic_shadow[pin] = v;
}

static inline struct percpu *this_cpu(void)
{
    u64 sp;
    __asm__("movq %%rsp, %0" : "=r"(sp));
    return (struct percpu *)(sp & ~(u64)(KSTACK_SIZE - 1));
}

static inline volatile struct slot *my_slot(struct percpu *pc)
{
    return &STATUS->slot[pc->cpu];
}

static void udelay(u64 us)
{
    u64 t0 = rdtsc(), n = us * cfg.tsc_khz / 1000;
    while (rdtsc() - t0 < n)
        ;
}

/* ---- serial output ---------------------------------------------------------- */
static void lock(struct percpu *pc, int *taken)
{
    u32 me = pc->cpu + 1;
    *taken = 0;
    if (uart_lock == me)
        return; /* re-entered (exception while printing): do not deadlock */
    for (;;) {
        u32 expected = 0;
        if (__atomic_compare_exchange_n(&uart_lock, &expected, me, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            break;
        while (uart_lock)
            ;
    }
    *taken = 1;
}

static void unlock(int taken)
{
    __asm__ volatile("" : : : "memory");
    if (taken)
        uart_lock = 0;
}

static void putc_raw(char c)
{
    while (!(inb(UART_LSR) & LSR_THRE))
        ;
    outb(UART_THR, (u8)c);
}

static void puts_raw(const char *s)
{
    while (*s)
        putc_raw(*s++);
}

static void put_hex(u64 v)
{
    char buf[17];
    int n = 0;
    do {
        u32 d = (u32)(v & 0xF);
        buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v >>= 4;
    } while (v && n < 16);
    while (n)
        putc_raw(buf[--n]);
}

static void put_dec(u32 v)
{
    char buf[10];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        putc_raw(buf[--n]);
}

/* ---- violations ---------------------------------------------------------------- */
static const char *const f_reason[VMSNAP_STATE_F_MAX + 1] = {
    [VMSNAP_STATE_F_LAPIC_STALL] = "LAPIC timer not ticking",
    [VMSNAP_STATE_F_LAPIC_CONFIG] = "LAPIC configuration lost",
    [VMSNAP_STATE_F_IOAPIC] = "IOAPIC redirection entry changed",
    [VMSNAP_STATE_F_PIT_STALL] = "PIT not ticking",
    [VMSNAP_STATE_F_PIT_CONFIG] = "PIT configuration lost",
    [VMSNAP_STATE_F_KVMCLOCK_BACK] = "kvmclock went backwards",
    [VMSNAP_STATE_F_TSC_BACK] = "TSC went backwards",
    [VMSNAP_STATE_F_CLOCK_JUMP] = "clock jumped more than maxjump",
    [VMSNAP_STATE_F_KVMCLOCK_DEAD] = "kvmclock not running",
    [VMSNAP_STATE_F_SSE] = "SSE register mismatch",
    [VMSNAP_STATE_F_AVX] = "AVX register mismatch",
    [VMSNAP_STATE_F_FPU] = "x87/MXCSR state mismatch",
    [VMSNAP_STATE_F_IPI_STALL] = "IPI ping-pong stalled",
    [VMSNAP_STATE_F_AP_DEAD] = "AP not running",
    [VMSNAP_STATE_F_UART_CONFIG] = "UART configuration lost",
    [VMSNAP_STATE_F_UART_RX] = "UART receive interrupt not delivered",
    [VMSNAP_STATE_F_EXCEPTION] = "unexpected exception",
    [VMSNAP_STATE_F_SPURIOUS] = "unexpected interrupt",
    [VMSNAP_STATE_F_DIRTY] = "dirty memory lost a write",
    [VMSNAP_STATE_F_AP_START] = "AP did not start",
};

/* Records a violation in the status block and prints
 * "F<code> <reason> cpu=<n> a=<hex> b=<hex>\n" -- the first time this vCPU
 * sees the code, then at most once per 10 heartbeats while it recurs. */
static void report(u32 code, u64 a, u64 b)
{
    struct percpu *pc = this_cpu();
    volatile struct status *st = STATUS;
    volatile struct slot *sl = my_slot(pc);
    int taken;

    if (code == 0 || code > VMSNAP_STATE_F_MAX)
        code = VMSNAP_STATE_F_SPURIOUS;
    lock(pc, &taken);
    st->f_count++;
    if (!st->first_f)
        st->first_f = code;
    st->last_f = code;
    st->last_f_cpu = pc->cpu;
    st->last_f_a = a;
    st->last_f_b = b;
    st->f_mask |= 1u << code;
    sl->f_count++;
    sl->last_f = code;
    if (!(pc->printed & (1u << code)) || heartbeats - pc->printed_hb[code] >= 10) {
        pc->printed |= 1u << code;
        pc->printed_hb[code] = heartbeats;
        putc_raw('F');
        putc_raw((char)('0' + code / 10));
        putc_raw((char)('0' + code % 10));
        putc_raw(' ');
        puts_raw(f_reason[code]);
        puts_raw(" cpu=");
        put_dec(pc->cpu);
        puts_raw(" a=");
        put_hex(a);
        puts_raw(" b=");
        put_hex(b);
        putc_raw('\n');
    }
    unlock(taken);
}

/* ---- device checks (each returns 1 after reporting a mismatch) ------------------ */
static int check_lapic(struct percpu *pc)
{
    u32 v;
    if (((v = lapic_rd(LAPIC_SVR)) & 0x1FF) != SVR_VAL)
        goto bad_svr;
    if (((v = lapic_rd(LAPIC_LVT_TIMER)) & ~LVT_DELIVS) != pc->lvt_timer)
        goto bad_timer;
    if (((v = lapic_rd(LAPIC_LVT_ERR)) & ~LVT_DELIVS) != V_LAPIC_ERR)
        goto bad_err;
    if (((v = lapic_rd(LAPIC_TDCR)) & 0xB) != TDCR_DIV16)
        goto bad_tdcr;
    if (!pc->deadline && (v = lapic_rd(LAPIC_TICR)) != pc->ticr)
        goto bad_ticr;
    if (((v = lapic_rd(LAPIC_LDR)) & 0xFF000000u) != pc->ldr)
        goto bad_ldr;
    return 0;
bad_svr:
    report(VMSNAP_STATE_F_LAPIC_CONFIG, LAPIC_SVR, v);
    return 1;
bad_timer:
    report(VMSNAP_STATE_F_LAPIC_CONFIG, LAPIC_LVT_TIMER, v);
    return 1;
bad_err:
    report(VMSNAP_STATE_F_LAPIC_CONFIG, LAPIC_LVT_ERR, v);
    return 1;
bad_tdcr:
    report(VMSNAP_STATE_F_LAPIC_CONFIG, LAPIC_TDCR, v);
    return 1;
bad_ticr:
    report(VMSNAP_STATE_F_LAPIC_CONFIG, LAPIC_TICR, v);
    return 1;
bad_ldr:
    report(VMSNAP_STATE_F_LAPIC_CONFIG, LAPIC_LDR, v);
    return 1;
}

static int check_kvmclock_msr(struct percpu *pc)
{
    if (!cfg.kvmclock)
        return 0;
    u64 want = (VMSNAP_STATE_PVCLOCK_GPA + 32ull * pc->cpu) | 1;
    u64 v = rdmsr(cfg.kvmclock_msr);
    if (v != want) {
        report(VMSNAP_STATE_F_KVMCLOCK_DEAD, v, want);
        return 1;
    }
    return 0;
}

static int check_ioapic(void)
{
    for (u32 i = 0; i < n_checked_pins; i++) {
        u32 pin = ioapic_checked_pins[i];
        u64 v = ioapic_get(pin);
        if ((v & ~IOAPIC_RO_BITS) != ioapic_shadow[pin]) {
            report(VMSNAP_STATE_F_IOAPIC, pin, v);
            return 1;
        }
    }
    return 0;
}

static int check_pit(void)
{
    outb(PIT_CMD, 0xC2); /* read-back: latch count and status of channel 0 */
    u32 status = inb(PIT_CH0);
    u32 lo = inb(PIT_CH0);
    u32 hi = inb(PIT_CH0);
    u32 count = lo | (hi << 8);
    if ((status & 0x3F) != PIT_MODE_CMD) {
        report(VMSNAP_STATE_F_PIT_CONFIG, status, PIT_MODE_CMD);
        return 1;
    }
    if (count > pit_reload || count == 0) {
        report(VMSNAP_STATE_F_PIT_CONFIG, 0x10000u | count, pit_reload);
        return 1;
    }
    return 0;
}

static int check_uart(void)
{
    u32 ier = inb(UART_IER), lcr = inb(UART_LCR), mcr = inb(UART_MCR), scr = inb(UART_SCR);
    if ((ier & 0x0F) != UART_IER_VAL || lcr != UART_LCR_VAL || (mcr & 0x1F) != UART_MCR_VAL ||
        scr != UART_SCR_VAL) {
        report(VMSNAP_STATE_F_UART_CONFIG, (ier << 24) | (lcr << 16) | (mcr << 8) | scr,
               (UART_IER_VAL << 24) | (UART_LCR_VAL << 16) | (UART_MCR_VAL << 8) | UART_SCR_VAL);
        return 1;
    }
    return 0;
}

static void uart_drain(void)
{
    for (u32 n = 0; n < 16 && (inb(UART_LSR) & LSR_DR); n++) {
        u8 c = inb(UART_RBR);
        putc_raw('<');
        putc_raw((char)c);
        putc_raw('>');
        STATUS->uart_rx_bytes++;
    }
}

/* A received byte waiting across two periodic checks with no RX interrupt
 * in between means the interrupt got lost.  Echo it anyway. */
static void check_uart_rx(struct percpu *pc)
{
    u32 irqs = STATUS->uart_rx_irqs;
    if (!(inb(UART_LSR) & LSR_DR) || irqs != rx_irqs_seen) {
        rx_pending_checks = 0;
        rx_irqs_seen = irqs;
        return;
    }
    if (++rx_pending_checks < 2)
        return;
    rx_pending_checks = 0;
    report(VMSNAP_STATE_F_UART_RX, irqs, STATUS->uart_rx_bytes);
    int taken;
    lock(pc, &taken);
    uart_drain();
    unlock(taken);
}

/* ---- interrupt handlers ----------------------------------------------------------- */
static void send_ipi(u32 apic_id, u32 icr)
{
    for (u32 n = 0; n < 1000 && (lapic_rd(LAPIC_ICR_LO) & LVT_DELIVS); n++)
        ;
    lapic_wr(LAPIC_ICR_HI, apic_id << 24);
    lapic_wr(LAPIC_ICR_LO, icr);
}

/* An AP's progress: its LAPIC ticks plus its ring-3 loops (published every
 * 256 loops).  Either one moving means the vCPU executes. */
static u32 ap_progress(u32 cpu)
{
    volatile struct slot *sl = &STATUS->slot[cpu];
    return sl->lapic_ticks + (u32)sl->r3_loops;
}

/* vCPU 0, once per second of its own ticks: is every AP still executing? */
static void check_aps(void)
{
    for (u32 i = 1; i < cfg.ncpus; i++) {
        volatile struct slot *sl = &STATUS->slot[i];
        if (sl->state == VMSNAP_STATE_CPU_DEAD)
            continue; /* already reported as an exception */
        u32 s = ap_progress(i);
        if (s != ap_sample[i]) {
            ap_sample[i] = s;
            ap_still[i] = 0;
        } else if (++ap_still[i] >= 2) {
            report(VMSNAP_STATE_F_AP_DEAD, i, sl->lapic_ticks);
        }
    }
}

/* break=N (test only): 3 s after 'A', damage the state behind check N the
 * way a lost device section would, so each F code can be seen to fire. */
static void sabotage(struct percpu *pc, u32 code)
{
    switch (code) {
    case VMSNAP_STATE_F_LAPIC_STALL: /* needs TSC-deadline on vCPU 0 (tscdl=1) */
        if (pc->deadline)
            wrmsr(MSR_TSC_DEADLINE, 0); /* disarmed, LAPIC registers untouched */
        break;
    case VMSNAP_STATE_F_LAPIC_CONFIG: /* a reset LAPIC: software-disabled */
        lapic_wr(LAPIC_SVR, 0xFF);
        break;
    case VMSNAP_STATE_F_IOAPIC: /* a reset IOAPIC: the PIT pin masked */
        for (u32 i = 0; i < n_checked_pins; i++)
            if (ioapic_checked_pins[i] != UART_PIN)
                ioapic_wr(0x10 + 2 * ioapic_checked_pins[i],
                          (u32)ioapic_shadow[ioapic_checked_pins[i]] | LVT_MASKED);
        break;
    case VMSNAP_STATE_F_PIT_CONFIG: /* channel 0 in one-shot mode 0 */
        outb(PIT_CMD, 0x30);
        outb(PIT_CH0, 0xFF);
        outb(PIT_CH0, 0xFF);
        break;
    case VMSNAP_STATE_F_KVMCLOCK_DEAD: /* the kvmclock MSR of vCPU 0 lost */
        if (cfg.kvmclock)
            wrmsr(cfg.kvmclock_msr, 0);
        break;
    case VMSNAP_STATE_F_IPI_STALL: /* the APs run on but stop answering */
        ap_ignore_pings = 1;
        break;
    case VMSNAP_STATE_F_AP_DEAD: /* the APs stop executing */
        ap_halt = 1;
        break;
    case VMSNAP_STATE_F_UART_CONFIG: /* a reset UART's scratch register */
        outb(UART_SCR, 0);
        break;
    case VMSNAP_STATE_F_EXCEPTION: /* ud2 in ring 0 (vCPU 0 then idles) */
        __asm__ volatile("ud2");
        break;
    default:
        break;
    }
}

static void cpu0_tick(void)
{
    volatile struct status *st = STATUS;
    if (++hb_ticks >= cfg.hz) {
        hb_ticks = 0;
        heartbeats++;
        st->heartbeats = heartbeats;
        struct percpu *pc = this_cpu();
        int taken;
        lock(pc, &taken);
        putc_raw('S');
        unlock(taken);
        check_aps();
    }
    if (cfg.brk && brk_ticks < 3 * cfg.hz && ++brk_ticks == 3 * cfg.hz)
        sabotage(this_cpu(), cfg.brk);
    if (cfg.ncpus > 1) {
        if (!ping_out) {
            ping_target = ping_target + 1 >= cfg.ncpus ? 1 : ping_target + 1;
            if (STATUS->slot[ping_target].state == VMSNAP_STATE_CPU_DEAD)
                return;
            ping_out = 1;
            ping_age = 0;
            ping_confirm = 0;
            ping_progress = ap_progress(ping_target);
            st->pings++;
            send_ipi(st->slot[ping_target].apic_id, V_PING);
        } else if (++ping_age > (ping_confirm ? 1 : 2) * cfg.hz) {
            /* 2 s of vCPU-0 time without an answer.  Only a stall if the AP
             * ran meanwhile, and still runs for 1 s more without answering:
             * an AP that stopped is F14's (check_aps), even one that stopped
             * just after the ping went out. */
            u32 now = ap_progress(ping_target);
            if (now != ping_progress && !ping_confirm) {
                ping_confirm = 1;
                ping_progress = now;
                ping_age = 0;
                return;
            }
            if (now != ping_progress)
                report(VMSNAP_STATE_F_IPI_STALL, ping_target, st->pings);
            ping_out = 0; /* try again with a fresh ping */
        }
    }
}

static void periodic_checks(struct percpu *pc)
{
    if (check_lapic(pc))
        return;
    check_kvmclock_msr(pc);
    if (pc->cpu != 0)
        return;
    check_ioapic();
    check_pit();
    if (!check_uart())
        check_uart_rx(pc);
}

static void timer_isr(void)
{
    struct percpu *pc = this_cpu();
    volatile struct slot *sl = my_slot(pc);
    sl->lapic_ticks++;
    if (pc->deadline) {
        u64 now = rdtsc();
        pc->next_deadline += pc->period_tsc;
        if ((s64)(pc->next_deadline - now) <= 0)
            pc->next_deadline = now + pc->period_tsc; /* after a pause: no burst */
        wrmsr(MSR_TSC_DEADLINE, pc->next_deadline);
    }
    lapic_eoi();
    if (!ready)
        return;
    if (pc->cpu == 0)
        cpu0_tick();
    else if (ap_halt)
        for (;;)
            __asm__ volatile("cli; hlt");
    if (++pc->check_tick >= cfg.check_every) {
        pc->check_tick = 0;
        periodic_checks(pc);
    }
}

static void pit_isr(u32 vector)
{
    STATUS->pit_ticks++;
    if (!ready) {
        u32 n = calib_ticks + 1;
        u64 t = rdtsc();
        if (n == 1) {
            calib_tsc[0] = t;
            /* first tick tells which IOAPIC pin the PIT is on */
            STATUS->pit_pin = vector == V_PIT_PIN0 ? 0 : 2;
        }
        calib_tsc[1] = t;
        calib_ticks = n;
    }
    lapic_eoi();
}

static void uart_isr(void)
{
    struct percpu *pc = this_cpu();
    int taken;
    STATUS->uart_rx_irqs++;
    lock(pc, &taken);
    uart_drain();
    unlock(taken);
    lapic_eoi();
}

static void ping_isr(void)
{
    struct percpu *pc = this_cpu();
    my_slot(pc)->ipis++;
    if (!ap_ignore_pings)
        send_ipi(bsp_apic_id, V_PONG);
    lapic_eoi();
}

static void pong_isr(void)
{
    volatile struct status *st = STATUS;
    st->pongs++;
    st->slot[0].ipis++;
    ping_out = 0;
    lapic_eoi();
}

static void __attribute__((noreturn)) idle_forever(void)
{
    for (;;)
        __asm__ volatile("sti; hlt; cli");
}

static void diagnose_lapic_stall(struct percpu *pc, u64 ticks, u64 ms)
{
    if (check_lapic(pc))
        return;
    report(VMSNAP_STATE_F_LAPIC_STALL, ticks, ms);
}

static void diagnose_pit_stall(struct percpu *pc, u64 ticks, u64 ms)
{
    if (check_lapic(pc) || check_ioapic() || check_pit())
        return;
    report(VMSNAP_STATE_F_PIT_STALL, ticks, ms);
}

static void exception(struct frame *f)
{
    struct percpu *pc = this_cpu();
    volatile struct slot *sl = my_slot(pc);
    sl->exc_vector = (u32)f->vector;
    sl->exc_rip = f->rip;
    sl->state = VMSNAP_STATE_CPU_DEAD;
    report(VMSNAP_STATE_F_EXCEPTION, f->vector | (f->error << 8) | ((f->cs & 3) << 40), f->rip);
    /* Keep handling interrupts (ticks, IPIs) so the rest of the guest runs on. */
    lapic_eoi();
    idle_forever();
}

void isr_dispatch(struct frame *f)
{
    switch (f->vector) {
    case V_TIMER:
        timer_isr();
        return;
    case V_PIT_PIN0:
    case V_PIT_PIN2:
        pit_isr((u32)f->vector);
        return;
    case V_UART:
        uart_isr();
        return;
    case V_PING:
        ping_isr();
        return;
    case V_PONG:
        pong_isr();
        return;
    case V_SPURIOUS:
        return; /* no EOI for the spurious vector */
    case 6:
        if ((f->cs & 3) == 3 && f->rip == (u64)r3_call_ud2) {
            struct percpu *pc = this_cpu();
            my_slot(pc)->r3_calls++;
            switch (f->rax) {
            case REQ_REPORT:
                report((u32)f->rdi, f->rsi, f->rdx);
                break;
            case REQ_LAPIC_STALL:
                diagnose_lapic_stall(pc, f->rdi, f->rsi);
                break;
            case REQ_PIT_STALL:
                diagnose_pit_stall(pc, f->rdi, f->rsi);
                break;
            }
            f->rax = 0;
            f->rip += 2;
            return;
        }
        break;
    case V_LAPIC_ERR: {
        lapic_wr(LAPIC_ESR, 0);
        u32 esr = lapic_rd(LAPIC_ESR);
        report(VMSNAP_STATE_F_SPURIOUS, f->vector, esr);
        lapic_eoi();
        return;
    }
    default:
        break;
    }
    if (f->vector < 32) {
        exception(f);
        return;
    }
    struct percpu *pc = this_cpu();
    my_slot(pc)->exc_vector = (u32)f->vector;
    report(VMSNAP_STATE_F_SPURIOUS, f->vector, f->rip);
    lapic_eoi();
}

/* ---- command line ------------------------------------------------------------------ */
static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int key_is(const char *k, u32 klen, const char *want)
{
    u32 i = 0;
    for (; i < klen; i++)
        if (want[i] != k[i])
            return 0;
    return want[i] == 0;
}

/* Decimal or 0x-hex.  Returns 0 on a malformed value. */
static int parse_num(const char *s, u32 len, u64 *out)
{
    u64 v = 0;
    u32 i = 0, digits = 0;
    int hex = 0;
    if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        hex = 1;
        i = 2;
    }
    for (; i < len; i++) {
        char c = s[i];
        u32 d;
        if (c >= '0' && c <= '9')
            d = (u32)(c - '0');
        else if (hex && c >= 'a' && c <= 'f')
            d = (u32)(c - 'a' + 10);
        else if (hex && c >= 'A' && c <= 'F')
            d = (u32)(c - 'A' + 10);
        else
            return 0;
        if (v >> 40)
            return 0;
        v = hex ? (v << 4) | d : v * 10 + d;
        digits++;
    }
    if (!digits)
        return 0;
    *out = v;
    return 1;
}

static u32 clamp(u64 v, u32 lo, u32 hi)
{
    return v < lo ? lo : v > hi ? hi : (u32)v;
}

static void parse_cmdline(const char *cl, u32 *cpus)
{
    u32 i = 0;
    for (;;) {
        while (cl[i] && is_space(cl[i]))
            i++;
        if (!cl[i])
            break;
        u32 tok = i, eq = 0;
        while (cl[i] && !is_space(cl[i])) {
            if (cl[i] == '=' && !eq)
                eq = i;
            i++;
        }
        if (!eq)
            continue; /* e.g. the kernel path QEMU prepends */
        const char *k = cl + tok, *v = cl + eq + 1;
        u32 klen = eq - tok, vlen = i - eq - 1;
        u64 n;
        if (!parse_num(v, vlen, &n))
            continue;
        if (key_is(k, klen, "cpus"))
            *cpus = clamp(n, 0, MAX_CPUS);
        else if (key_is(k, klen, "hz"))
            cfg.hz = clamp(n, 1, 1000);
        else if (key_is(k, klen, "pithz"))
            cfg.pit_hz = clamp(n, 19, 1000);
        else if (key_is(k, klen, "maxjump"))
            cfg.maxjump_ms = clamp(n, 1, 0x7FFFFFFF);
        else if (key_is(k, klen, "dirty"))
            cfg.dirty_mb = clamp(n, 0, 4096);
        else if (key_is(k, klen, "dirtyrate"))
            cfg.dirty_rate = clamp(n, 0, 1000000);
        else if (key_is(k, klen, "tscdl"))
            cfg.tscdl = clamp(n, 0, 2);
        else if (key_is(k, klen, "break"))
            cfg.brk = clamp(n, 0, VMSNAP_STATE_F_MAX);
        else if (key_is(k, klen, "checks"))
            cfg.check_every = clamp(n, 1, 1000); /* per second; turned into ticks below */
    }
}

static inline u32 rd32(u64 addr)
{
    return *(const volatile u32 *)addr;
}

/* ---- per-vCPU setup ------------------------------------------------------------------ */
static void set_idt_entry(u32 v, u64 handler)
{
    idt[v].lo =
        (handler & 0xFFFF) | (0x08ull << 16) | (0x8Eull << 40) | ((handler >> 16 & 0xFFFF) << 48);
    idt[v].hi = handler >> 32;
}

static void load_idt(void)
{
    struct __attribute__((packed)) {
        u16 limit;
        u64 base;
    } d = { sizeof(idt) - 1, (u64)idt };
    __asm__ volatile("lidt %0" : : "m"(d));
}

static void load_tss(u32 cpu)
{
    struct tss *t = &tss[cpu];
    u64 base = (u64)t;
    t->rsp0 = (u64)&kstacks[cpu][KSTACK_SIZE];
    t->iopb = sizeof(struct tss);
    u64 limit = sizeof(struct tss) - 1;
    gdt_tss[2 * cpu] = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (0x89ull << 40) |
                       ((limit >> 16 & 0xF) << 48) | ((base >> 24 & 0xFF) << 56);
    gdt_tss[2 * cpu + 1] = base >> 32;
    u16 sel = (u16)(0x40 + 16 * cpu);
    __asm__ volatile("ltr %0" : : "r"(sel));
}

static void setup_fpu(void)
{
    u64 cr0, cr4;
    __asm__ volatile("movq %%cr0, %0" : "=r"(cr0));
    cr0 &= ~((1ull << 2) | (1ull << 3)); /* EM, TS */
    cr0 |= (1ull << 1) | (1ull << 5);    /* MP, NE */
    __asm__ volatile("movq %0, %%cr0" : : "r"(cr0));
    __asm__ volatile("movq %%cr4, %0" : "=r"(cr4));
    cr4 |= (1ull << 9) | (1ull << 10); /* OSFXSR, OSXMMEXCPT */
    u32 a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    if (c & (1u << 26)) {
        cr4 |= 1ull << 18; /* OSXSAVE */
        __asm__ volatile("movq %0, %%cr4" : : "r"(cr4));
        u32 xcr0 = cfg.avx ? 7 : 3; /* x87 | SSE (| AVX) */
        __asm__ volatile("xsetbv" : : "c"(0), "a"(xcr0), "d"(0));
    } else {
        __asm__ volatile("movq %0, %%cr4" : : "r"(cr4));
    }
}

static void start_timer(struct percpu *pc)
{
    volatile struct slot *sl = my_slot(pc);
    lapic_wr(LAPIC_TDCR, TDCR_DIV16);
    pc->deadline = cfg.tsc_deadline && (cfg.tscdl == 1 || (cfg.tscdl == 2 && (pc->cpu & 1)));
    if (pc->deadline) {
        pc->lvt_timer = V_TIMER | LVT_TSCDL;
        pc->period_tsc = cfg.tsc_khz * 1000 / cfg.hz;
        lapic_wr(LAPIC_TICR, 0);
        lapic_wr(LAPIC_LVT_TIMER, pc->lvt_timer);
        pc->next_deadline = rdtsc() + pc->period_tsc;
        wrmsr(MSR_TSC_DEADLINE, pc->next_deadline);
        sl->timer_mode = 2;
    } else {
        pc->lvt_timer = V_TIMER | LVT_PERIODIC;
        u64 count = cfg.lapic_khz * 1000 / 16 / cfg.hz;
        pc->ticr = count > 0xFFFFFFFFull ? 0xFFFFFFFFu : count ? (u32)count : 1;
        lapic_wr(LAPIC_LVT_TIMER, pc->lvt_timer);
        lapic_wr(LAPIC_TICR, pc->ticr);
        sl->timer_mode = 1;
    }
}

static void lapic_init(struct percpu *pc)
{
    /* SVR first: KVM forces LVT writes to masked while the APIC is
     * software-disabled (an AP's state after INIT). */
    lapic_wr(LAPIC_SVR, SVR_VAL);
    lapic_wr(LAPIC_TPR, 0);
    lapic_wr(LAPIC_DFR, 0xFFFFFFFFu); /* flat model */
    pc->ldr = (1u << (pc->cpu & 7)) << 24;
    lapic_wr(LAPIC_LDR, pc->ldr);
    lapic_wr(LAPIC_LVT_LINT0, LVT_MASKED); /* no ExtINT from the PIC */
    lapic_wr(LAPIC_LVT_LINT1, LVT_MASKED);
    lapic_wr(LAPIC_LVT_ERR, V_LAPIC_ERR);
    lapic_wr(LAPIC_LVT_TIMER, LVT_MASKED | V_TIMER);
    lapic_wr(LAPIC_SVR, SVR_VAL);
    lapic_wr(LAPIC_ESR, 0);
    lapic_wr(LAPIC_ESR, 0);
}

static void kvmclock_init(u32 cpu)
{
    if (cfg.kvmclock)
        wrmsr(cfg.kvmclock_msr, (VMSNAP_STATE_PVCLOCK_GPA + 32ull * cpu) | 1);
}

/* Common to every vCPU; ends in ring 3. */
static void __attribute__((noreturn)) cpu_start(struct percpu *pc)
{
    volatile struct slot *sl = my_slot(pc);
    load_tss(pc->cpu);
    setup_fpu();
    lapic_init(pc);
    pc->apic_id = lapic_rd(LAPIC_ID) >> 24;
    sl->apic_id = pc->apic_id;
    kvmclock_init(pc->cpu);
    start_timer(pc);
    sl->state = VMSNAP_STATE_CPU_RUNNING;
    enter_user((u64)user_main, (u64)&ustacks[pc->cpu][USTACK_SIZE] - 8, pc->cpu);
}

void ap_main(u32 cpu)
{
    struct percpu *pc = this_cpu();
    memset(pc, 0, sizeof(*pc));
    pc->cpu = cpu;
    load_idt();
    ap_started = 1;
    cpu_start(pc);
}

/* ---- vCPU 0 boot ------------------------------------------------------------------------ */
static u32 start_ap(u32 cpu, u64 timeout_ms)
{
    ap_started = 0;
    ap_boot_cpu = cpu;
    ap_boot_rsp = (u64)&kstacks[cpu][KSTACK_SIZE];
    STATUS->slot[cpu].state = VMSNAP_STATE_CPU_BOOTING;
    u32 apic = cpu;         /* APIC ID = vCPU index (QEMU, vmsnap) */
    send_ipi(apic, 0x4500); /* INIT, level assert */
    udelay(500);
    for (u32 sipi = 0; sipi < 2 && !ap_started; sipi++) {
        send_ipi(apic, 0x4600 | (VMSNAP_STATE_TRAMPOLINE_GPA >> 12));
        u64 t0 = rdtsc(), n = (sipi ? timeout_ms : 10) * cfg.tsc_khz;
        while (!ap_started && rdtsc() - t0 < n)
            ;
    }
    if (!ap_started) {
        STATUS->slot[cpu].state = VMSNAP_STATE_CPU_ABSENT;
        return 0;
    }
    return 1;
}

static void pic_mask(void)
{
    /* Remap the 8259s to 0x20-0x2F (away from the exception vectors) and
     * mask every line: SeaBIOS leaves them at vector 8 with the PIT live. */
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    outb(0x21, V_PIC_BASE);
    outb(0xA1, V_PIC_BASE + 8);
    outb(0x21, 4);
    outb(0xA1, 2);
    outb(0x21, 1);
    outb(0xA1, 1);
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

static void uart_init(void)
{
    outb(UART_IER, 0);
    outb(UART_LCR, 0x80); /* DLAB */
    outb(UART_RBR, 1);    /* 115200 baud */
    outb(UART_IER, 0);
    outb(UART_LCR, UART_LCR_VAL);
    outb(UART_FCR, 0); /* no FIFO: one byte per interrupt */
    outb(UART_MCR, UART_MCR_VAL);
    outb(UART_SCR, UART_SCR_VAL);
    (void)inb(UART_LSR);
    (void)inb(UART_IIR);
    (void)inb(UART_MSR);
    while (inb(UART_LSR) & LSR_DR)
        (void)inb(UART_RBR); /* anything typed before we were ready */
    outb(UART_IER, UART_IER_VAL);
}

static u64 redir(u32 vector, u32 masked)
{
    return vector | ((u64)bsp_apic_id << 56) | (masked ? LVT_MASKED : 0);
}

static void detect_cpu_features(void)
{
    u32 a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    cfg.tsc_deadline = (c >> 24) & 1;
    cfg.avx = ((c >> 28) & 1) && ((c >> 26) & 1); /* AVX and XSAVE */
    cpuid(0x40000000, 0, &a, &b, &c, &d);
    if (b == 0x4B4D564Bu && c == 0x564B4D56u && d == 0x4Du && a >= 0x40000001u) {
        cpuid(0x40000001, 0, &a, &b, &c, &d);
        if (a & (1u << 3)) {
            cfg.kvmclock = 1;
            cfg.kvmclock_msr = MSR_KVM_SYSTEM_TIME_NEW;
        } else if (a & 1u) {
            cfg.kvmclock = 1;
            cfg.kvmclock_msr = MSR_KVM_SYSTEM_TIME;
        }
    }
}

/* TSC rate from the kvmclock scale (as Linux's pvclock_tsc_khz), else from
 * PIT ticks counted while waiting for the PIT pin. */
static u64 kvmclock_tsc_khz(void)
{
    volatile struct pvclock *pv = &PVCLOCK[0];
    for (u32 n = 0; n < 100000; n++) {
        u32 v = pv->version;
        if ((v & 1) || !v)
            continue;
        u32 mul = pv->tsc_to_system_mul;
        s8 shift = pv->tsc_shift;
        if (pv->version != v || !mul)
            continue;
        u64 khz = (1000000ull << 32) / mul;
        if (shift < 0)
            khz <<= -shift;
        else
            khz >>= shift;
        return khz;
    }
    return 0;
}

void kmain(void)
{
    struct percpu *pc = this_cpu();
    volatile struct status *st = STATUS;
    memset(pc, 0, sizeof(*pc));

    /* status block: cleared, magic last (after 'A') */
    for (u32 i = 0; i < VMSNAP_STATE_SIZE / 8; i++)
        ((volatile u64 *)st)[i] = 0;
    for (u32 i = 0; i < 4096 / 8; i++)
        ((volatile u64 *)PVCLOCK)[i] = 0;

    /* defaults, command line */
    cfg.hz = 100;
    cfg.pit_hz = 100;
    cfg.maxjump_ms = 60000;
    cfg.tscdl = 2;
    cfg.check_every = 10;
    int vmsnap = boot_esi == VMSN;
    u32 cpus = vmsnap ? clamp(boot_edx, 1, MAX_CPUS) : 0; /* 0: probe */
    u32 mbflags = boot_magic == MB_BOOT_MAGIC ? rd32(boot_mbi) : 0;
    if ((mbflags & MBI_CMDLINE) && rd32(boot_mbi + 16))
        parse_cmdline((const char *)(u64)rd32(boot_mbi + 16), &cpus);
    cfg.ram_end =
        (mbflags & MBI_MEMORY) ? 0x100000ull + (u64)rd32(boot_mbi + 8) * 1024 : 0x400000ull;
    if (cfg.ram_end > 0x100000000ull)
        cfg.ram_end = 0x100000000ull;
    cfg.check_every = cfg.hz / cfg.check_every ? cfg.hz / cfg.check_every : 1;
    cfg.dirty_base = VMSNAP_STATE_DIRTY_GPA;
    u64 avail = cfg.ram_end > cfg.dirty_base ? (cfg.ram_end - cfg.dirty_base) >> 20 : 0;
    if (cfg.dirty_mb > avail)
        cfg.dirty_mb = (u32)avail;
    cfg.dirty_bytes = (u64)cfg.dirty_mb << 20;

    uart_init();
    pic_mask();
    detect_cpu_features();

    /* IDT */
    for (u32 v = 0; v < 256; v++)
        set_idt_entry(v, isr_stubs[v]);
    load_idt();

    /* LAPIC (needed for EOIs from now on), kvmclock */
    lapic_init(pc);
    bsp_apic_id = lapic_rd(LAPIC_ID) >> 24;
    kvmclock_init(0);
    if (cfg.kvmclock) {
        cfg.tsc_khz = kvmclock_tsc_khz();
        if (!cfg.tsc_khz)
            cfg.kvmclock = 0;
    }

    /* IOAPIC: PIT on pin 0 (KVM's default GSI routing, vmsnap) or pin 2
     * (QEMU's IRQ0 -> GSI2 override): program both, keep the one that
     * ticks.  COM1 on pin 4. */
    st->pit_pin = NO_PIN;
    ioapic_set(0, redir(V_PIT_PIN0, 0));
    ioapic_set(2, redir(V_PIT_PIN2, 0));
    ioapic_set(UART_PIN, redir(V_UART, 0));
    pit_reload = (u16)(PIT_HZ_IN / cfg.pit_hz);
    outb(PIT_CMD, PIT_MODE_CMD);
    outb(PIT_CH0, (u8)pit_reload);
    outb(PIT_CH0, (u8)(pit_reload >> 8));

    /* Wait for PIT ticks with interrupts on: 2 ticks, or 11 when the TSC
     * rate has to come from them.  Timeout ~0.5-5 s (TSC rate unknown). */
    u32 want = cfg.tsc_khz ? 2 : 11;
    u64 t0 = rdtsc(), limit = cfg.tsc_khz ? cfg.tsc_khz * 1000 : 5000000000ull;
    __asm__ volatile("sti");
    while (calib_ticks < want && rdtsc() - t0 < limit)
        ;
    __asm__ volatile("cli");
    if (!cfg.tsc_khz) {
        if (calib_ticks >= 2)
            cfg.tsc_khz = (calib_tsc[1] - calib_tsc[0]) * cfg.pit_hz / (calib_ticks - 1) / 1000;
        if (!cfg.tsc_khz)
            cfg.tsc_khz = 2000000; /* a guess; the PIT is dead anyway */
    }
    n_checked_pins = 0;
    if (st->pit_pin == 0) {
        ioapic_set(2, redir(V_PIT_PIN2, 1));
        ioapic_checked_pins[n_checked_pins++] = 0;
    } else if (st->pit_pin == 2) {
        ioapic_set(0, redir(V_PIT_PIN0, 1));
        ioapic_checked_pins[n_checked_pins++] = 2;
    } else {
        ioapic_checked_pins[n_checked_pins++] = 0;
        ioapic_checked_pins[n_checked_pins++] = 2;
    }
    ioapic_checked_pins[n_checked_pins++] = UART_PIN;

    /* LAPIC timer input clock, against the TSC: one-shot from ~0 over 10 ms */
    lapic_wr(LAPIC_TDCR, TDCR_DIV16);
    lapic_wr(LAPIC_LVT_TIMER, LVT_MASKED | V_TIMER);
    lapic_wr(LAPIC_TICR, 0xFFFFFFFFu);
    u64 c0 = rdtsc(), c1;
    while ((c1 = rdtsc()) - c0 < cfg.tsc_khz * 10)
        ;
    u32 left = lapic_rd(LAPIC_TCCR);
    lapic_wr(LAPIC_TICR, 0);
    cfg.lapic_khz = (u64)(0xFFFFFFFFu - left) * 16 * cfg.tsc_khz / (c1 - c0);
    if (!cfg.lapic_khz)
        cfg.lapic_khz = 1000000;

    /* header (magic comes last) */
    st->version = VMSNAP_STATE_VERSION;
    st->hz = cfg.hz;
    st->pit_hz = cfg.pit_hz;
    st->maxjump_ms = cfg.maxjump_ms;
    st->dirty_mb = cfg.dirty_mb;
    st->dirty_rate = cfg.dirty_rate;
    st->tsc_khz = (u32)cfg.tsc_khz;
    st->lapic_khz = (u32)cfg.lapic_khz;
    st->cpus_wanted = cpus;
    st->patterns_gpa = (u32)(u64)patterns;
    st->pattern_size = sizeof(struct simd_patterns);
    u32 flags =
        (vmsnap ? VMSNAP_STATE_FLAG_VMSNAP : 0) | (cfg.kvmclock ? VMSNAP_STATE_FLAG_KVMCLOCK : 0) |
        (cfg.tsc_deadline ? VMSNAP_STATE_FLAG_TSCDL : 0) | (cfg.avx ? VMSNAP_STATE_FLAG_AVX : 0) |
        (cfg.kvmclock && (PVCLOCK[0].flags & PVCLOCK_TSC_STABLE_BIT) ? VMSNAP_STATE_FLAG_STABLE
                                                                     : 0);
    st->flags = flags;
    st->slot[0].state = VMSNAP_STATE_CPU_BOOTING;
    if (calib_ticks == 0)
        report(VMSNAP_STATE_F_PIT_STALL, 0, 0);

    /* APs: INIT/SIPI/SIPI into the trampoline, one at a time */
    memcpy((void *)(u64)VMSNAP_STATE_TRAMPOLINE_GPA, tramp_start,
           (unsigned long)(tramp_end - tramp_start));
    u32 n = 1;
    if (cpus == 0) {
        /* probe: until the first APIC ID that does not answer */
        while (n < MAX_CPUS && start_ap(n, 100))
            n++;
    } else {
        for (u32 i = 1; i < cpus; i++) {
            if (start_ap(i, 1000))
                n = i + 1;
            else {
                report(VMSNAP_STATE_F_AP_START, i, cpus);
                break;
            }
        }
    }
    cfg.ncpus = n;
    st->ncpus = n;

    st->flags = flags | VMSNAP_STATE_FLAG_READY;
    int taken;
    lock(pc, &taken);
    putc_raw('A');
    unlock(taken);
    st->magic = VMSNAP_STATE_MAGIC;
    ready = 1;
    cpu_start(pc);
}
