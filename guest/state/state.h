/* SPDX-License-Identifier: MIT */
/*
 * guest/state: declarations shared by the ring-0 kernel (kernel.c), the
 * ring-3 task (user.c) and the assembly (start.S, simd.S).
 *
 * Freestanding: no libc header.  The status-block layout comes from
 * guests.h; the structs below are checked against it with _Static_assert.
 */
#ifndef GUEST_STATE_H
#define GUEST_STATE_H

#include "../guests.h"

typedef unsigned char u8;
typedef signed char s8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long s64;

_Static_assert(sizeof(void *) == 8, "64-bit guest");

#define MAX_CPUS    VMSNAP_STATE_MAX_CPUS
#define KSTACK_SIZE 8192u /* per vCPU, aligned to its size: struct percpu at its base */
#define USTACK_SIZE 8192u

/* Interrupt vectors. */
#define V_PIC_BASE  0x20 /* legacy PIC remapped here and masked */
#define V_PIT_PIN0  0x30 /* PIT on IOAPIC pin 0 (KVM default GSI routing) */
#define V_PIT_PIN2  0x32 /* PIT on IOAPIC pin 2 (QEMU's ISA IRQ0 override) */
#define V_UART      0x34 /* COM1, IOAPIC pin 4 */
#define V_TIMER     0x40 /* LAPIC timer */
#define V_PING      0x50 /* vCPU 0 -> AP */
#define V_PONG      0x51 /* AP -> vCPU 0 */
#define V_LAPIC_ERR 0xFE
#define V_SPURIOUS  0xFF

/* Ring 3 -> ring 0 requests: rax = request, then rdi/rsi/rdx (start.S: r3_call). */
#define REQ_REPORT      1 /* a = F code, b, c = details */
#define REQ_LAPIC_STALL 2 /* own LAPIC timer silent: diagnose (F02 or F01) */
#define REQ_PIT_STALL   3 /* PIT silent: diagnose (F02, F03, F05 or F04) */

struct slot {
    u32 state;
    u32 apic_id;
    u32 lapic_ticks;
    u32 timer_mode;
    u32 ipis;
    u32 f_count;
    u32 last_f;
    u32 r3_calls;
    u64 r3_loops;
    u64 kvmclock_ns;
    u64 tsc;
    u64 run_ns;
    u64 dirty_bytes;
    u32 dirty_passes;
    u32 exc_vector;
    u64 exc_rip;
    u64 max_gap_ns;
    u64 reserved[4];
};

struct status {
    u32 magic;
    u32 version;
    u32 ncpus;
    u32 flags;
    u32 hz;
    u32 pit_hz;
    u32 maxjump_ms;
    u32 dirty_mb;
    u32 pit_pin;
    u32 heartbeats;
    u32 pit_ticks;
    u32 uart_rx_irqs;
    u32 uart_rx_bytes;
    u32 pings;
    u32 pongs;
    u32 f_count;
    u32 first_f;
    u32 last_f;
    u32 last_f_cpu;
    u32 f_mask;
    u64 last_f_a;
    u64 last_f_b;
    u32 tsc_khz;
    u32 lapic_khz;
    u32 dirty_rate;
    u32 cpus_wanted;
    u32 patterns_gpa;
    u32 pattern_size;
    u32 reserved[2];
    struct slot slot[MAX_CPUS];
};

#define STATUS ((volatile struct status *)(u64)VMSNAP_STATE_STATUS_GPA)

/* kvmclock (pvclock) structure, one per vCPU at VMSNAP_STATE_PVCLOCK_GPA. */
struct pvclock {
    u32 version;
    u32 pad0;
    u64 tsc_timestamp;
    u64 system_time;
    u32 tsc_to_system_mul;
    s8 tsc_shift;
    u8 flags;
    u8 pad[2];
};
_Static_assert(sizeof(struct pvclock) == 32, "pvclock size");
#define PVCLOCK                ((volatile struct pvclock *)(u64)VMSNAP_STATE_PVCLOCK_GPA)
#define PVCLOCK_TSC_STABLE_BIT 0x01

/* Boot configuration: written by vCPU 0 before any AP or ring-3 task
 * starts, read-only afterwards (ring 3 reads it too: all pages are U). */
struct config {
    u32 ncpus; /* vCPUs running */
    u32 hz;    /* LAPIC timer ticks/s */
    u32 pit_hz;
    u32 maxjump_ms;
    u32 dirty_mb;     /* total, split between the vCPUs */
    u32 dirty_rate;   /* MB/s per vCPU, 0 = unlimited */
    u32 tscdl;        /* 0 never, 1 every vCPU, 2 odd vCPUs (when CPUID offers it) */
    u32 check_every;  /* LAPIC ticks between periodic device checks */
    u32 brk;          /* break=: test-only fault injection (docs/GUEST.md) */
    u32 kvmclock;     /* 1: kvmclock MSRs in use */
    u32 kvmclock_msr; /* 0x4b564d01 or 0x12 */
    u32 avx;          /* ring 3 checks ymm upper halves */
    u32 tsc_deadline; /* CPUID.1:ECX[24] */
    u64 tsc_khz;
    u64 lapic_khz;
    u64 dirty_base;  /* first byte of the dirty range */
    u64 dirty_bytes; /* its size */
    u64 ram_end;     /* end of RAM (from the multiboot info) */
};

extern struct config cfg;

/* start.S */
void enter_user(u64 rip, u64 rsp, u64 arg) __attribute__((noreturn));
u64 r3_call(u64 req, u64 a, u64 b, u64 c);
extern const char r3_call_ud2[];

/* user.c: the ring-3 task, one per vCPU. */
void user_main(u64 cpu) __attribute__((noreturn));

/* simd.S (ring 3 only). */
#define SIMD_REGS    14
#define SIMD_BAD_SSE 1u
#define SIMD_BAD_AVX 2u
#define SIMD_BAD_FPU 4u
struct simd_patterns {
    u8 reg[SIMD_REGS][32]; /* xmm/ymm0..13 */
    u32 mxcsr;
    u16 fcw;
    u16 pad;
    u64 st0;      /* double image of x87 ST0 (pi) */
    u32 bad_reg;  /* out: first mismatching register (simd_check) */
    u32 bad_mask; /* out: pmovmskb result of that register */
    u32 pad2[2];
} __attribute__((aligned(32)));
extern struct simd_patterns patterns[MAX_CPUS]; /* user.c */
void simd_load(struct simd_patterns *p, u64 avx);
u32 simd_check(struct simd_patterns *p, u64 avx);

#endif /* GUEST_STATE_H */
