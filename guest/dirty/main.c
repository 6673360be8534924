/* SPDX-License-Identifier: MIT */
/*
 * guest/dirty: the self-checking dirty-memory workload (docs/GUEST.md).
 *
 * Every vCPU walks its share of [start, end) page by page.  Pass k checks
 * that each page holds (word0, word1) = (k-1, tag) -- (0, 0) on pass 1 --
 * and stores (k, tag), tag = page_number ^ 0xA5A5A5A5.  A mismatch prints
 * "E%08X\n" and halts.  vCPU 0 prints 'A' at start and 'B' every b_every
 * passes.  State is published in the status block at 0xF000.
 *
 * Freestanding, no libc headers, general registers only.
 */
#include "../guests.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

_Static_assert(sizeof(u8) == 1, "u8");
_Static_assert(sizeof(u16) == 2, "u16");
_Static_assert(sizeof(u32) == 4, "u32");
_Static_assert(sizeof(u64) == 8, "u64");
_Static_assert(sizeof(void *) == 4, "32-bit guest");

#define PAGE_SHIFT 12
#define PAGE_SIZE  4096u
#define MAX_CPUS   VMSNAP_DIRTY_MAX_CPUS
#define TAG_XOR    VMSNAP_DIRTY_TAG_XOR
#define NO_PAGE    0xFFFFFFFFu

#define MB_BOOT_MAGIC 0x2BADB002u
#define MBI_MEMORY    (1u << 0)
#define MBI_CMDLINE   (1u << 2)
#define MBI_MMAP      (1u << 6)

#define DEFAULT_START_PAGE 0x100u    /* 1 MiB */
#define MIN_START_PAGE     0x100u    /* below 1 MiB: image, boot info, BIOS */
#define MAX_END_PAGE       0x100000u /* 4 GiB: no paging, 32-bit addresses */
/* About this many pages walked by vCPU 0 between two 'B' when bevery= is not
 * given: ~5 B/s on this project's PVM hosts at any RAM size (docs/GUEST.md). */
#define B_TARGET_PAGES 65536u

#define COM1     0x3F8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20

struct slot {
    u32 state;
    u32 passes;
    u32 first_page;
    u32 end_page;
    u32 cursor;
    u32 reserved[3];
};

struct status {
    u32 magic;
    u32 version;
    u32 ncpus;
    u32 page_size;
    u32 start_page;
    u32 end_page;
    u32 step;
    u32 pace;
    u32 b_every;
    u32 error_page;
    u32 error_found;
    u32 error_expected;
    u32 error_found1;
    u32 error_expected1;
    u32 error_cpu;
    u32 flags;
    struct slot slot[MAX_CPUS];
};

#define OFF(f) __builtin_offsetof(struct status, f)
_Static_assert(sizeof(struct slot) == VMSNAP_DIRTY_SLOT_SIZE, "slot size");
_Static_assert(OFF(magic) == VMSNAP_DIRTY_OFF_MAGIC, "magic");
_Static_assert(OFF(version) == VMSNAP_DIRTY_OFF_VERSION, "version");
_Static_assert(OFF(ncpus) == VMSNAP_DIRTY_OFF_NCPUS, "ncpus");
_Static_assert(OFF(page_size) == VMSNAP_DIRTY_OFF_PAGE_SIZE, "page_size");
_Static_assert(OFF(start_page) == VMSNAP_DIRTY_OFF_START_PAGE, "start_page");
_Static_assert(OFF(end_page) == VMSNAP_DIRTY_OFF_END_PAGE, "end_page");
_Static_assert(OFF(step) == VMSNAP_DIRTY_OFF_STEP, "step");
_Static_assert(OFF(pace) == VMSNAP_DIRTY_OFF_PACE, "pace");
_Static_assert(OFF(b_every) == VMSNAP_DIRTY_OFF_B_EVERY, "b_every");
_Static_assert(OFF(error_page) == VMSNAP_DIRTY_OFF_ERROR_PAGE, "error_page");
_Static_assert(OFF(error_found) == VMSNAP_DIRTY_OFF_ERROR_FOUND, "error_found");
_Static_assert(OFF(error_expected) == VMSNAP_DIRTY_OFF_ERROR_EXPECTED, "error_expected");
_Static_assert(OFF(error_found1) == VMSNAP_DIRTY_OFF_ERROR_FOUND1, "error_found1");
_Static_assert(OFF(error_expected1) == VMSNAP_DIRTY_OFF_ERROR_EXPECTED1, "error_expected1");
_Static_assert(OFF(error_cpu) == VMSNAP_DIRTY_OFF_ERROR_CPU, "error_cpu");
_Static_assert(OFF(flags) == VMSNAP_DIRTY_OFF_FLAGS, "flags");
_Static_assert(OFF(slot) == VMSNAP_DIRTY_OFF_SLOTS, "slots");
_Static_assert(OFF(slot[1].passes) ==
                   VMSNAP_DIRTY_OFF_SLOTS + VMSNAP_DIRTY_SLOT_SIZE + VMSNAP_DIRTY_SLOT_PASSES,
               "passes");
_Static_assert(__builtin_offsetof(struct slot, cursor) == VMSNAP_DIRTY_SLOT_CURSOR, "cursor");
_Static_assert(__builtin_offsetof(struct slot, first_page) == VMSNAP_DIRTY_SLOT_FIRST_PAGE,
               "first");
_Static_assert(__builtin_offsetof(struct slot, end_page) == VMSNAP_DIRTY_SLOT_END_PAGE, "end");
_Static_assert(sizeof(struct status) == 0x440, "status block size");

#define STATUS ((volatile struct status *)VMSNAP_DIRTY_STATUS_GPA)

struct config {
    u32 start_page;
    u32 end_page;
    u32 step;
    u32 pace;
    u32 b_every; /* 0 = default */
    u32 clear;   /* zero word0/word1 of the range before pass 1 */
};

/* In .data, not .bss: initialised by every load of the ELF, without relying
 * on a loader to clear .bss and without vCPU 0 racing the others to do it. */
static volatile u32 uart_lock __attribute__((section(".data")));
static volatile u32 header_ready __attribute__((section(".data")));

/* start.S */
void dirty_main(u32 magic, u32 mbi, u32 cpu, u32 ncpus, u32 vmsnap) __attribute__((noreturn));
void dirty_halt_forever(void) __attribute__((noreturn));

/* walk.S; the offsets are mirrored there as W_*. */
struct walk {
    u32 first;            /* first page */
    u32 end;              /* end page (exclusive) */
    u32 gen;              /* pass number k >= 1 */
    u32 step;             /* pages */
    u32 stride;           /* step << 12 */
    u32 pace;             /* dec/jnz iterations after each page */
    volatile u32 *cursor; /* this vCPU's slot cursor */
    u32 found0;           /* out: word0 seen at the failing page */
    u32 found1;           /* out: word1 seen at the failing page */
};
_Static_assert(__builtin_offsetof(struct walk, pace) == 20, "W_PACE");
_Static_assert(__builtin_offsetof(struct walk, cursor) == 24, "W_CURSOR");
_Static_assert(__builtin_offsetof(struct walk, found1) == 32, "W_FOUND1");
#define WALK_BLOCK 32u /* pages per unrolled block in dirty_walk_blocks */
u32 dirty_walk_generic(struct walk *w);
u32 dirty_walk_blocks(struct walk *w);

/* gcc may emit calls to these even when freestanding. */
void *memset(void *d, int c, unsigned int n);
void *memcpy(void *d, const void *s, unsigned int n);

void *memset(void *d, int c, unsigned int n)
{
    u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned int n)
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

static inline u32 rd32(u32 addr)
{
    return *(const volatile u32 *)addr;
}

static void lock(void)
{
    u32 v;
    do {
        v = 1;
        /* xchg with memory is always locked */
        __asm__ volatile("xchgl %0, %1" : "+r"(v), "+m"(uart_lock) : : "memory");
    } while (v);
}

static void unlock(void)
{
    __asm__ volatile("" : : : "memory");
    uart_lock = 0;
}

static void uart_putc(char c)
{
    while (!(inb(COM1_LSR) & LSR_THRE))
        ;
    outb(COM1, (u8)c);
}

static void uart_putc_locked(char c)
{
    lock();
    uart_putc(c);
    unlock();
}

/* ---- command line ---------------------------------------------------- */

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

/* Decimal or 0x-hex, optional K/M/G suffix (either case).  Returns 0 on a
 * malformed or overflowing value. */
static int parse_num(const char *s, u32 len, u64 *out)
{
    u64 v = 0;
    u32 i = 0;
    int hex = 0;
    if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        hex = 1;
        i = 2;
    }
    u32 digits = 0;
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
            break;
        if (v >> 40)
            return 0; /* far beyond anything meaningful */
        v = hex ? (v << 4) | d : v * 10 + d;
        digits++;
    }
    if (!digits)
        return 0;
    if (i < len) {
        u32 shift;
        switch (s[i]) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        default:
            return 0;
        }
        if (i + 1 != len || (v >> (63 - shift)))
            return 0;
        v <<= shift;
    }
    *out = v;
    return 1;
}

static u32 clamp32(u64 v)
{
    return v > 0xFFFFFFFFull ? 0xFFFFFFFFu : (u32)v;
}

static void parse_cmdline(const char *cl, struct config *cfg, int *have_start, int *have_end)
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
            continue; /* malformed value: keep the default */
        if (key_is(k, klen, "start")) {
            u64 pg = (n + PAGE_SIZE - 1) >> PAGE_SHIFT; /* round up */
            cfg->start_page = pg > MAX_END_PAGE ? MAX_END_PAGE : (u32)pg;
            *have_start = 1;
        } else if (key_is(k, klen, "end")) {
            u64 pg = n >> PAGE_SHIFT; /* round down */
            cfg->end_page = pg > MAX_END_PAGE ? MAX_END_PAGE : (u32)pg;
            *have_end = 1;
        } else if (key_is(k, klen, "step")) {
            cfg->step = clamp32(n);
        } else if (key_is(k, klen, "pace")) {
            cfg->pace = clamp32(n);
        } else if (key_is(k, klen, "bevery")) {
            cfg->b_every = clamp32(n);
        } else if (key_is(k, klen, "clear")) {
            cfg->clear = n != 0;
        }
    }
}

/* End (in pages) of the type-1 region of the memory map that contains
 * start_page, or 0 when there is none. */
static u32 mmap_end(u32 mmap_addr, u32 mmap_len, u32 start_page)
{
    u64 start = (u64)start_page << PAGE_SHIFT;
    u32 off = 0;
    while (off + 24 <= mmap_len) {
        u32 e = mmap_addr + off;
        u32 size = rd32(e);
        u64 base = (u64)rd32(e + 4) | ((u64)rd32(e + 8) << 32);
        u64 len = (u64)rd32(e + 12) | ((u64)rd32(e + 16) << 32);
        u32 type = rd32(e + 20);
        if (type == 1 && base <= start && start - base < len) {
            u64 end = (base + len) >> PAGE_SHIFT;
            return end > MAX_END_PAGE ? MAX_END_PAGE : (u32)end;
        }
        if (size < 20)
            break; /* malformed: would not advance sanely */
        off += size + 4;
    }
    return 0;
}

static void configure(u32 magic, u32 mbi, int vmsnap, struct config *cfg)
{
    int have_start = 0, have_end = 0;
    cfg->start_page = DEFAULT_START_PAGE;
    cfg->end_page = 0;
    cfg->step = 1;
    cfg->pace = 0;
    cfg->b_every = 0;
    /* vmsnap's RAM is fresh anonymous memory, so pass 1 can insist on
     * zeros.  Under a BIOS (QEMU + SeaBIOS) "usable" RAM is not clean:
     * SeaBIOS leaves its relocated init code near the top of RAM. */
    cfg->clear = !vmsnap;

    u32 flags = magic == MB_BOOT_MAGIC ? rd32(mbi) : 0;
    if ((flags & MBI_CMDLINE) && rd32(mbi + 16))
        parse_cmdline((const char *)rd32(mbi + 16), cfg, &have_start, &have_end);

    if (cfg->start_page < MIN_START_PAGE)
        cfg->start_page = MIN_START_PAGE;
    if (!have_end) {
        u32 end = 0;
        if (flags & MBI_MMAP)
            end = mmap_end(rd32(mbi + 48), rd32(mbi + 44), DEFAULT_START_PAGE);
        if (!end && (flags & MBI_MEMORY)) {
            /* mem_upper: KiB of memory from 1 MiB up */
            u64 e = (0x100000ull + (u64)rd32(mbi + 8) * 1024) >> PAGE_SHIFT;
            end = e > MAX_END_PAGE ? MAX_END_PAGE : (u32)e;
        }
        cfg->end_page = end;
    }
    if (cfg->end_page < cfg->start_page)
        cfg->end_page = cfg->start_page; /* empty range */
    if (cfg->step == 0)
        cfg->step = 1;
    if (cfg->step > MAX_END_PAGE)
        cfg->step = MAX_END_PAGE; /* also keeps pn + step from wrapping */
}

/* ---- walking ---------------------------------------------------------- */

static void put_hex8(u32 v)
{
    for (int sh = 28; sh >= 0; sh -= 4) {
        u32 d = (v >> sh) & 0xF;
        uart_putc((char)(d < 10 ? '0' + d : 'A' + d - 10));
    }
}

static void __attribute__((noreturn)) fail(u32 cpu, u32 pn, u32 gen, u32 found0, u32 found1)
{
    volatile struct status *st = STATUS;
    u32 exp0 = gen - 1;
    u32 exp1 = gen == 1 ? 0 : (pn ^ TAG_XOR);

    st->slot[cpu].cursor = pn;
    st->slot[cpu].state = VMSNAP_DIRTY_STATE_ERROR;
    lock();
    if (st->error_page == NO_PAGE) {
        st->error_found = found0;
        st->error_expected = exp0;
        st->error_found1 = found1;
        st->error_expected1 = exp1;
        st->error_cpu = cpu;
        __asm__ volatile("" : : : "memory");
        st->error_page = pn; /* last: the other fields are valid once this is */
    }
    uart_putc('E');
    put_hex8(pn);
    uart_putc('\n');
    unlock();
    dirty_halt_forever();
}

/* Pre-pass: make the range look like fresh RAM to pass 1. */
static void clear_range(u32 first, u32 end, u32 step, volatile u32 *cursor)
{
    for (u32 pn = first; pn < end; pn += step) {
        volatile u32 *p = (volatile u32 *)(pn << PAGE_SHIFT);
        *cursor = pn;
        p[0] = 0;
        p[1] = 0;
    }
}

/* One pass of this vCPU over [first, end).  Returns NO_PAGE or the failing
 * page, with w->found0/found1 filled in. */
static u32 walk_pass(struct walk *w, u32 first, u32 end)
{
    if (w->step == 1 && w->pace == 0) {
        u32 a = (first + WALK_BLOCK - 1) & ~(WALK_BLOCK - 1);
        u32 b = end & ~(WALK_BLOCK - 1);
        if (a < b) {
            u32 bad;
            w->first = first;
            w->end = a;
            if ((bad = dirty_walk_generic(w)) != NO_PAGE)
                return bad;
            w->first = a;
            w->end = b;
            if ((bad = dirty_walk_blocks(w)) != NO_PAGE)
                return bad;
            w->first = b;
            w->end = end;
            return dirty_walk_generic(w);
        }
    }
    w->first = first;
    w->end = end;
    return dirty_walk_generic(w);
}

void dirty_main(u32 magic, u32 mbi, u32 cpu, u32 ncpus, u32 vmsnap)
{
    volatile struct status *st = STATUS;
    struct config cfg;

    if (ncpus == 0)
        ncpus = 1;
    if (ncpus > MAX_CPUS)
        ncpus = MAX_CPUS;
    if (cpu >= ncpus)
        dirty_halt_forever(); /* start.S already parks cpu >= MAX_CPUS */

    /* Every vCPU parses the (read-only) boot info itself: no shared state. */
    configure(magic, mbi, vmsnap != 0, &cfg);

    u32 total = cfg.end_page - cfg.start_page;
    /* total <= 2^20 pages and ncpus <= 32: the products fit in 32 bits */
    u32 first = cfg.start_page + total * cpu / ncpus;
    u32 end = cfg.start_page + total * (cpu + 1) / ncpus;
    u32 pages_per_pass = first < end ? (end - first - 1) / cfg.step + 1 : 0;

    if (cpu == 0) {
        u32 b_every = cfg.b_every;
        if (!b_every) {
            b_every = pages_per_pass ? (B_TARGET_PAGES + pages_per_pass / 2) / pages_per_pass : 1;
            if (!b_every)
                b_every = 1;
        }
        cfg.b_every = b_every;

        st->version = VMSNAP_DIRTY_VERSION;
        st->ncpus = ncpus;
        st->page_size = PAGE_SIZE;
        st->start_page = cfg.start_page;
        st->end_page = cfg.end_page;
        st->step = cfg.step;
        st->pace = cfg.pace;
        st->b_every = b_every;
        st->error_page = NO_PAGE;
        st->error_found = 0;
        st->error_expected = 0;
        st->error_found1 = 0;
        st->error_expected1 = 0;
        st->error_cpu = 0;
        st->flags =
            (vmsnap ? VMSNAP_DIRTY_FLAG_VMSNAP : 0) | (cfg.clear ? VMSNAP_DIRTY_FLAG_CLEARED : 0);
        for (u32 i = 0; i < MAX_CPUS; i++) {
            if (i != 0 && i < ncpus)
                continue; /* those belong to their vCPUs */
            volatile u32 *w = (volatile u32 *)&st->slot[i];
            for (u32 j = 0; j < sizeof(struct slot) / 4; j++)
                w[j] = 0;
        }
        __asm__ volatile("" : : : "memory");
        st->magic = VMSNAP_DIRTY_MAGIC; /* last: header complete */
    } else {
        volatile u32 *w = (volatile u32 *)&st->slot[cpu];
        for (u32 j = 0; j < sizeof(struct slot) / 4; j++)
            w[j] = 0;
    }

    volatile struct slot *me = &st->slot[cpu];
    me->first_page = first;
    me->end_page = end;
    me->cursor = first;

    if (cpu == 0) {
        __asm__ volatile("" : : : "memory");
        header_ready = 1;
        uart_putc_locked('A');
    } else {
        /* Do not walk (and maybe report an error) before vCPU 0 has
         * initialised the header, error fields included. */
        while (!header_ready)
            ;
    }

    if (!pages_per_pass) {
        me->state = VMSNAP_DIRTY_STATE_IDLE;
        dirty_halt_forever();
    }
    me->state = VMSNAP_DIRTY_STATE_WALKING;
    if (cfg.clear)
        clear_range(first, end, cfg.step, &me->cursor);
    if (cpu == 0) /* lets a bench wait for real dirtying, not the pre-pass */
        st->flags |= VMSNAP_DIRTY_FLAG_WALKING;

    struct walk w = {
        .step = cfg.step,
        .stride = cfg.step << PAGE_SHIFT,
        .pace = cfg.pace,
        .cursor = &me->cursor,
    };
    u32 since_b = 0;
    for (u32 gen = 1;; gen++) {
        w.gen = gen;
        u32 bad = walk_pass(&w, first, end);
        if (bad != NO_PAGE)
            fail(cpu, bad, gen, w.found0, w.found1);
        me->passes = gen;
        if (st->error_page != NO_PAGE) {
            /* Another vCPU found a damaged page: freeze the memory image for
             * inspection and stop the 'B's, so the output ends with 'E'. */
            me->state = VMSNAP_DIRTY_STATE_ERROR;
            dirty_halt_forever();
        }
        if (cpu == 0 && ++since_b >= cfg.b_every) {
            since_b = 0;
            lock();
            /* under the lock fail() takes: no 'B' ever follows an 'E' */
            int stop = st->error_page != NO_PAGE;
            if (!stop)
                uart_putc('B');
            unlock();
            if (stop) {
                me->state = VMSNAP_DIRTY_STATE_ERROR;
                dirty_halt_forever();
            }
        }
    }
}
