/* SPDX-License-Identifier: MIT */
/*
 * guest/state ring 3: one task per vCPU, running natively (no emulation).
 *
 * It never returns and never enters the kernel except through r3_call
 * (ud2) to report a violation or to have a silent timer diagnosed.  Every
 * loop it:
 *   - checks xmm/ymm0..13, MXCSR and the x87 state against the patterns it
 *     loaded once (simd.S): the only copy of that state is the vCPU's;
 *   - reads the TSC and this vCPU's kvmclock: never backwards, never a step
 *     larger than maxjump=;
 *   - watches the LAPIC tick counter of its vCPU (and, on vCPU 0, the PIT
 *     tick counter) against its own running time;
 *   - optionally rewrites one page of its share of the dirty range.
 * The loop counter and last clock values are published in the status
 * block every 256 loops.
 *
 * Built with -mgeneral-regs-only like the kernel: only simd.S touches the
 * SIMD registers.
 */
#include "state.h"

_Static_assert(__builtin_offsetof(struct simd_patterns, mxcsr) == 0x1C0, "P_MXCSR");
_Static_assert(__builtin_offsetof(struct simd_patterns, fcw) == 0x1C4, "P_FCW");
_Static_assert(__builtin_offsetof(struct simd_patterns, st0) == 0x1C8, "P_ST0");
_Static_assert(__builtin_offsetof(struct simd_patterns, bad_reg) == 0x1D0, "P_BAD_REG");
_Static_assert(__builtin_offsetof(struct simd_patterns, bad_mask) == 0x1D4, "P_BAD_MASK");
_Static_assert(__builtin_offsetof(struct simd_patterns, pad2) == 0x1D8, "P_SCRATCH");

#define MXCSR_VAL 0xFF80u /* all exceptions masked, round toward zero, FTZ */
#define FCW_VAL   0x027Fu /* all exceptions masked, double precision */

#define RUN_CAP_MS    50u  /* a longer gap (pause, host preemption) counts as this much */
#define WATCHDOG_MS   500u /* a timer silent for this much running time is diagnosed */
#define KC_STUCK_MS   100u /* kvmclock frozen while the TSC runs this long: F09 */
#define PUBLISH_EVERY 256u

struct simd_patterns patterns[MAX_CPUS];

static inline u64 rdtsc_ordered(void)
{
    u32 lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((u64)hi << 32) | lo;
}

static void report(u32 code, u64 a, u64 b)
{
    r3_call(REQ_REPORT, code, a, b);
}

/* Reads kvmclock; 0 if the struct never became stable (odd version). */
static int pvclock_read(volatile struct pvclock *pv, u64 *ns, u32 *version)
{
    for (u32 tries = 0; tries < 1000000; tries++) {
        u32 v = pv->version;
        __asm__ volatile("" : : : "memory");
        if (v & 1)
            continue;
        u64 ts = pv->tsc_timestamp;
        u64 sys = pv->system_time;
        u32 mul = pv->tsc_to_system_mul;
        s8 shift = pv->tsc_shift;
        u64 tsc = rdtsc_ordered();
        __asm__ volatile("" : : : "memory");
        if (pv->version != v)
            continue;
        u64 d = tsc - ts;
        if (shift < 0)
            d >>= -shift;
        else
            d <<= shift;
        *ns = sys + (u64)(((unsigned __int128)d * mul) >> 32);
        *version = v;
        return 1;
    }
    *version = pv->version;
    return 0;
}

static void fill_patterns(struct simd_patterns *p, u64 cpu)
{
    u32 x = 0x9E3779B9u ^ (u32)(cpu * 0x85EBCA6Bu);
    for (u32 r = 0; r < SIMD_REGS; r++)
        for (u32 b = 0; b < 32; b++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            u8 v = (u8)(x >> 11);
            p->reg[r][b] = v ? v : 0xA5; /* never 0: lost state reads as 0 */
        }
    p->mxcsr = MXCSR_VAL;
    p->fcw = FCW_VAL;
}

/* No 128-bit division: libgcc is not linked. */
static u64 cyc_to_ns(u64 cyc, u64 khz)
{
    return cyc / khz * 1000000 + cyc % khz * 1000000 / khz;
}

static inline void dirty_page(u64 *pg, u64 val)
{
    u64 n = 4096 / 8;
    __asm__ volatile("rep stosq" : "+D"(pg), "+c"(n) : "a"(val) : "memory");
}

void user_main(u64 cpu)
{
    volatile struct status *st = STATUS;
    volatile struct slot *sl = &st->slot[cpu];
    volatile struct pvclock *pv = &PVCLOCK[cpu];
    struct simd_patterns *p = &patterns[cpu];
    const u64 avx = cfg.avx;
    const u64 khz = cfg.tsc_khz ? cfg.tsc_khz : 1;

    /* vCPU 0 fills in cfg.ncpus once every AP has answered */
    while (!(st->flags & VMSNAP_STATE_FLAG_READY))
        __asm__ volatile("pause");

    fill_patterns(p, cpu);
    simd_load(p, avx);

    const u64 maxjump_cyc = (u64)cfg.maxjump_ms * khz;
    const u64 maxjump_ns = (u64)cfg.maxjump_ms * 1000000ull;
    const u64 cap_cyc = RUN_CAP_MS * khz;
    u32 wd_ms = 5000 / cfg.hz; /* at least 5 LAPIC periods */
    if (wd_ms < WATCHDOG_MS)
        wd_ms = WATCHDOG_MS;
    const u64 wd_cyc = wd_ms * khz;
    u32 pit_wd_ms = 5000 / cfg.pit_hz;
    if (pit_wd_ms < WATCHDOG_MS)
        pit_wd_ms = WATCHDOG_MS;
    const u64 pit_wd_cyc = pit_wd_ms * khz;
    const u64 kc_stuck_cyc = KC_STUCK_MS * khz;

    /* this vCPU's share of the dirty range, in pages */
    u64 pages_total = cfg.dirty_bytes >> 12;
    u64 first = pages_total * cpu / cfg.ncpus;
    u64 npages = pages_total * (cpu + 1) / cfg.ncpus - first;
    u64 *dirty = (u64 *)(cfg.dirty_base + (first << 12));
    u64 didx = 0, dpass = 1, ddone = 0;
    /* dirtyrate= MB/s: cycles per page */
    u64 cyc_per_page = cfg.dirty_rate ? khz * 1000 / ((u64)cfg.dirty_rate * 256) : 0;
    if (cfg.dirty_rate && !cyc_per_page)
        cyc_per_page = 1;

    u64 last_tsc = rdtsc_ordered(), max_gap = 0, run = 0;
    u64 last_kc = 0, kc_stuck_since = 0;
    u32 kc_version = 0;
    if (cfg.kvmclock && !pvclock_read(pv, &last_kc, &kc_version))
        report(VMSNAP_STATE_F_KVMCLOCK_DEAD, 1, kc_version);
    u32 last_lt = sl->lapic_ticks, last_pt = st->pit_ticks;
    u64 lt_change = 0, pt_change = 0;

    for (u64 loops = 1;; loops++) {
        u32 bad = simd_check(p, avx);
        if (bad) {
            u64 detail = ((u64)p->bad_reg << 32) | p->bad_mask;
            if (bad & SIMD_BAD_SSE)
                report(VMSNAP_STATE_F_SSE, detail, cpu);
            if (bad & SIMD_BAD_AVX)
                report(VMSNAP_STATE_F_AVX, detail, cpu);
            if (bad & SIMD_BAD_FPU)
                report(VMSNAP_STATE_F_FPU, 0, cpu);
            simd_load(p, avx); /* start over: later damage is reported again */
        }

        u64 t = rdtsc_ordered();
        if (t < last_tsc) {
            report(VMSNAP_STATE_F_TSC_BACK, last_tsc, t);
        } else {
            u64 d = t - last_tsc;
            if (d > maxjump_cyc)
                report(VMSNAP_STATE_F_CLOCK_JUMP, 1, d / khz); /* 1 = TSC, ms */
            if (d > max_gap)
                max_gap = d;
            run += d > cap_cyc ? cap_cyc : d;
        }
        last_tsc = t;

        if (cfg.kvmclock) {
            u64 kc;
            if (!pvclock_read(pv, &kc, &kc_version)) {
                report(VMSNAP_STATE_F_KVMCLOCK_DEAD, 1, kc_version);
            } else if (kc < last_kc) {
                report(VMSNAP_STATE_F_KVMCLOCK_BACK, last_kc, kc);
                last_kc = kc;
            } else {
                if (kc - last_kc > maxjump_ns)
                    report(VMSNAP_STATE_F_CLOCK_JUMP, 0,
                           (kc - last_kc) / 1000000); /* 0 = kvmclock */
                if (kc == last_kc) {
                    if (!kc_stuck_since) {
                        kc_stuck_since = t;
                    } else if (t - kc_stuck_since > kc_stuck_cyc) {
                        report(VMSNAP_STATE_F_KVMCLOCK_DEAD, 2, kc);
                        kc_stuck_since = 0;
                    }
                } else {
                    kc_stuck_since = 0;
                }
                last_kc = kc;
            }
        }

        /* timers: silent for too long in running time -> ask ring 0 why */
        u32 lt = sl->lapic_ticks;
        if (lt != last_lt) {
            last_lt = lt;
            lt_change = run;
        } else if (run - lt_change > wd_cyc) {
            r3_call(REQ_LAPIC_STALL, lt, (run - lt_change) / khz, 0);
            lt_change = run;
        }
        if (cpu == 0) {
            u32 pt = st->pit_ticks;
            if (pt != last_pt) {
                last_pt = pt;
                pt_change = run;
            } else if (run - pt_change > pit_wd_cyc) {
                r3_call(REQ_PIT_STALL, pt, (run - pt_change) / khz, 0);
                pt_change = run;
            }
        }

        if (npages && (!cyc_per_page || ddone < run / cyc_per_page)) {
            u64 *pg = dirty + (didx << 9);
            u64 tag = (cfg.dirty_base >> 12) + first + didx; /* page number */
            if (dpass > 1 && pg[0] != (((dpass - 1) << 32) | tag))
                report(VMSNAP_STATE_F_DIRTY, (u64)pg, pg[0]);
            dirty_page(pg, (dpass << 32) | tag);
            ddone++;
            if (++didx == npages) {
                didx = 0;
                dpass++;
                sl->dirty_passes = (u32)(dpass - 1);
            }
        }

        if (loops % PUBLISH_EVERY == 0) {
            sl->r3_loops = loops;
            sl->tsc = t;
            sl->kvmclock_ns = last_kc;
            sl->run_ns = cyc_to_ns(run, khz);
            sl->max_gap_ns = cyc_to_ns(max_gap, khz);
            sl->dirty_bytes = ddone << 12;
        }
    }
}
