/* SPDX-License-Identifier: MIT */
/*
 * guests.h - the guests embedded in the vmsnap binary, and the guest-side
 * contract host code relies on.
 *
 * The ELF images are generated at build time by guest/embed.py from the
 * freestanding kernels under guest/.  The status-block layout below is the
 * one described in docs/GUEST.md; guest/dirty/main.c asserts it matches.
 *
 * This header is also included by the freestanding guest itself, so it must
 * not include any other header.
 */
#ifndef VMSNAP_GUESTS_H
#define VMSNAP_GUESTS_H

/* guest/dirty: 32-bit Multiboot v1 ELF (guest-dirty.elf), byte for byte. */
extern const unsigned char vmsnap_guest_dirty_elf[];
extern const unsigned int vmsnap_guest_dirty_elf_len;

/* Registers vmsnap's VMM passes at entry, in addition to EAX/EBX. */
#define VMSNAP_DIRTY_ENTRY_ESI 0x564D534Eu /* 'VMSN'; ECX = vCPU index, EDX = count */

/* Status block: fixed guest-physical address, little-endian u32 fields. */
#define VMSNAP_DIRTY_STATUS_GPA 0x0000F000u
#define VMSNAP_DIRTY_MAGIC      0x59545244u /* 'DRTY' */
#define VMSNAP_DIRTY_VERSION    1u
#define VMSNAP_DIRTY_MAX_CPUS   32u
#define VMSNAP_DIRTY_NO_ERROR   0xFFFFFFFFu
#define VMSNAP_DIRTY_TAG_XOR    0xA5A5A5A5u /* word1 = page_number ^ this */

#define VMSNAP_DIRTY_OFF_MAGIC           0x000u
#define VMSNAP_DIRTY_OFF_VERSION         0x004u
#define VMSNAP_DIRTY_OFF_NCPUS           0x008u
#define VMSNAP_DIRTY_OFF_PAGE_SIZE       0x00Cu
#define VMSNAP_DIRTY_OFF_START_PAGE      0x010u
#define VMSNAP_DIRTY_OFF_END_PAGE        0x014u
#define VMSNAP_DIRTY_OFF_STEP            0x018u
#define VMSNAP_DIRTY_OFF_PACE            0x01Cu
#define VMSNAP_DIRTY_OFF_B_EVERY         0x020u
#define VMSNAP_DIRTY_OFF_ERROR_PAGE      0x024u
#define VMSNAP_DIRTY_OFF_ERROR_FOUND     0x028u /* word0 seen */
#define VMSNAP_DIRTY_OFF_ERROR_EXPECTED  0x02Cu /* word0 expected */
#define VMSNAP_DIRTY_OFF_ERROR_FOUND1    0x030u /* word1 seen (extension) */
#define VMSNAP_DIRTY_OFF_ERROR_EXPECTED1 0x034u /* word1 expected (extension) */
#define VMSNAP_DIRTY_OFF_ERROR_CPU       0x038u /* vCPU that saw it (extension) */
#define VMSNAP_DIRTY_OFF_FLAGS           0x03Cu /* VMSNAP_DIRTY_FLAG_* (extension) */
#define VMSNAP_DIRTY_OFF_SLOTS           0x040u
#define VMSNAP_DIRTY_SLOT_SIZE           32u

#define VMSNAP_DIRTY_FLAG_VMSNAP  (1u << 0) /* entered with ESI = 'VMSN' */
#define VMSNAP_DIRTY_FLAG_CLEARED (1u << 1) /* range zeroed before pass 1 (clear=1) */
#define VMSNAP_DIRTY_FLAG_WALKING (1u << 2) /* vCPU 0 began pass 1 (pre-pass done) */

/* Per-vCPU slot i at VMSNAP_DIRTY_OFF_SLOTS + i * VMSNAP_DIRTY_SLOT_SIZE. */
#define VMSNAP_DIRTY_SLOT_STATE      0u
#define VMSNAP_DIRTY_SLOT_PASSES     4u
#define VMSNAP_DIRTY_SLOT_FIRST_PAGE 8u
#define VMSNAP_DIRTY_SLOT_END_PAGE   12u
#define VMSNAP_DIRTY_SLOT_CURSOR     16u

#define VMSNAP_DIRTY_STATE_NOT_STARTED 0u
#define VMSNAP_DIRTY_STATE_WALKING     1u
#define VMSNAP_DIRTY_STATE_ERROR       2u
#define VMSNAP_DIRTY_STATE_IDLE        3u /* empty share: halted, no error */

/* vCPU 0's pass counter, the one tests poll. */
#define VMSNAP_DIRTY_PASSES_GPA \
    (VMSNAP_DIRTY_STATUS_GPA + VMSNAP_DIRTY_OFF_SLOTS + VMSNAP_DIRTY_SLOT_PASSES)

/*
 * guest/state: 64-bit SMP guest that checks its own device state
 * (docs/GUEST.md, "guest/state").  Multiboot v1 ELF32 (guest-state.elf),
 * byte for byte; the 64-bit code is linked as x86_64 and converted with
 * objcopy -O elf32-i386.
 */
extern const unsigned char vmsnap_guest_state_elf[];
extern const unsigned int vmsnap_guest_state_elf_len;

/* Fixed guest-physical addresses (all below the image at 0x10000). */
/* AP real-mode trampoline page (SIPI vector 0x08) */
#define VMSNAP_STATE_TRAMPOLINE_GPA 0x00008000u
#define VMSNAP_STATE_PVCLOCK_GPA    0x0000D000u /* kvmclock structs, 32 bytes per vCPU */
#define VMSNAP_STATE_STATUS_GPA     0x0000E000u /* status block */
#define VMSNAP_STATE_IMAGE_GPA      0x00010000u /* link address of the image */
#define VMSNAP_STATE_DIRTY_GPA      0x00200000u /* start of the ring-3 dirty range (dirty=MB) */

#define VMSNAP_STATE_MAGIC    0x54415453u /* 'STAT' */
#define VMSNAP_STATE_VERSION  1u
#define VMSNAP_STATE_MAX_CPUS 16u
#define VMSNAP_STATE_SIZE     0x880u /* header 0x80 + 16 slots of 0x80 */

/* Header: little-endian; u32 unless marked u64. */
#define VMSNAP_STATE_OFF_MAGIC      0x000u /* written last, once 'A' is printed */
#define VMSNAP_STATE_OFF_VERSION    0x004u
#define VMSNAP_STATE_OFF_NCPUS      0x008u /* vCPUs running (vCPU 0 + APs started) */
#define VMSNAP_STATE_OFF_FLAGS      0x00Cu /* VMSNAP_STATE_FLAG_* */
#define VMSNAP_STATE_OFF_HZ         0x010u /* LAPIC timer ticks per second per vCPU */
#define VMSNAP_STATE_OFF_PIT_HZ     0x014u
#define VMSNAP_STATE_OFF_MAXJUMP_MS 0x018u
#define VMSNAP_STATE_OFF_DIRTY_MB   0x01Cu /* effective size of the dirty range */
/* IOAPIC pin the PIT ticks on (0 or 2), 0xFFFFFFFF = none */
#define VMSNAP_STATE_OFF_PIT_PIN       0x020u
#define VMSNAP_STATE_OFF_HEARTBEATS    0x024u /* 'S' printed */
#define VMSNAP_STATE_OFF_PIT_TICKS     0x028u
#define VMSNAP_STATE_OFF_UART_RX_IRQS  0x02Cu
#define VMSNAP_STATE_OFF_UART_RX_BYTES 0x030u
#define VMSNAP_STATE_OFF_PINGS         0x034u /* IPIs sent by vCPU 0 */
#define VMSNAP_STATE_OFF_PONGS         0x038u /* answers received by vCPU 0 */
#define VMSNAP_STATE_OFF_F_COUNT       0x03Cu /* violations detected (printed or not) */
#define VMSNAP_STATE_OFF_FIRST_F       0x040u /* first F code, 0 = none */
#define VMSNAP_STATE_OFF_LAST_F        0x044u /* last F code, 0 = none */
#define VMSNAP_STATE_OFF_LAST_F_CPU    0x048u
#define VMSNAP_STATE_OFF_F_MASK        0x04Cu /* bit n set: code n was detected */
#define VMSNAP_STATE_OFF_LAST_F_A      0x050u /* u64: detail values of the last F */
#define VMSNAP_STATE_OFF_LAST_F_B      0x058u /* u64 */
#define VMSNAP_STATE_OFF_TSC_KHZ       0x060u
#define VMSNAP_STATE_OFF_LAPIC_KHZ     0x064u /* LAPIC timer input clock (before the divider) */
#define VMSNAP_STATE_OFF_DIRTY_RATE    0x068u /* dirtyrate= MB/s per vCPU, 0 = unlimited */
#define VMSNAP_STATE_OFF_CPUS_WANTED   0x06Cu /* cpus= / EDX from vmsnap, 0 = probed */
/* the ring-3 tasks' expected SIMD values (tests corrupt them) */
#define VMSNAP_STATE_OFF_PATTERNS_GPA 0x070u
/* bytes per vCPU: xmm/ymm i of vCPU c at +c*size + 32*i */
#define VMSNAP_STATE_OFF_PATTERN_SIZE 0x074u
#define VMSNAP_STATE_OFF_SLOTS        0x080u
#define VMSNAP_STATE_SLOT_SIZE        0x080u

#define VMSNAP_STATE_FLAG_VMSNAP   (1u << 0) /* entered with ESI = 'VMSN' */
#define VMSNAP_STATE_FLAG_KVMCLOCK (1u << 1) /* kvmclock in use */
#define VMSNAP_STATE_FLAG_TSCDL    (1u << 2) /* CPUID offers TSC-deadline */
#define VMSNAP_STATE_FLAG_AVX      (1u << 3) /* ring-3 checks cover the ymm upper halves */
#define VMSNAP_STATE_FLAG_READY    (1u << 4) /* all vCPUs up, 'A' printed */
#define VMSNAP_STATE_FLAG_STABLE   (1u << 5) /* kvmclock PVCLOCK_TSC_STABLE_BIT seen at boot */

/* Per-vCPU slot i at VMSNAP_STATE_OFF_SLOTS + i * VMSNAP_STATE_SLOT_SIZE. */
#define VMSNAP_STATE_SLOT_STATE       0x00u /* VMSNAP_STATE_CPU_* */
#define VMSNAP_STATE_SLOT_APIC_ID     0x04u
#define VMSNAP_STATE_SLOT_LAPIC_TICKS 0x08u
#define VMSNAP_STATE_SLOT_TIMER_MODE  0x0Cu /* 1 periodic, 2 TSC-deadline */
#define VMSNAP_STATE_SLOT_IPIS        0x10u /* APs: pings received; vCPU 0: pongs received */
#define VMSNAP_STATE_SLOT_F_COUNT     0x14u
#define VMSNAP_STATE_SLOT_LAST_F      0x18u
#define VMSNAP_STATE_SLOT_R3_CALLS    0x1Cu /* ring 3 -> ring 0 requests (ud2) */
#define VMSNAP_STATE_SLOT_R3_LOOPS    0x20u /* u64: ring-3 check loops */
#define VMSNAP_STATE_SLOT_KVMCLOCK_NS 0x28u /* u64: last kvmclock read by ring 3 */
#define VMSNAP_STATE_SLOT_TSC         0x30u /* u64: last TSC read by ring 3 */
/* u64: ring-3 running time (gaps > 50 ms count as 50 ms) */
#define VMSNAP_STATE_SLOT_RUN_NS       0x38u
#define VMSNAP_STATE_SLOT_DIRTY_BYTES  0x40u /* u64: bytes written to the dirty range */
#define VMSNAP_STATE_SLOT_DIRTY_PASSES 0x48u
#define VMSNAP_STATE_SLOT_EXC_VECTOR   0x4Cu /* last unexpected exception/interrupt vector */
#define VMSNAP_STATE_SLOT_EXC_RIP      0x50u /* u64 */
#define VMSNAP_STATE_SLOT_MAX_GAP_NS   0x58u /* u64: largest TSC gap between two ring-3 loops */

#define VMSNAP_STATE_CPU_ABSENT  0u
#define VMSNAP_STATE_CPU_BOOTING 1u
#define VMSNAP_STATE_CPU_RUNNING 2u /* ring-3 task started */
#define VMSNAP_STATE_CPU_DEAD    3u /* unexpected exception: idles in ring 0 */

/* F codes: "F%02u <reason> cpu=N ...\n" on COM1 (docs/GUEST.md). */
#define VMSNAP_STATE_F_LAPIC_STALL   1u  /* LAPIC timer not ticking */
#define VMSNAP_STATE_F_LAPIC_CONFIG  2u  /* LAPIC registers not what the guest programmed */
#define VMSNAP_STATE_F_IOAPIC        3u  /* IOAPIC redirection entry changed */
#define VMSNAP_STATE_F_PIT_STALL     4u  /* PIT not ticking */
#define VMSNAP_STATE_F_PIT_CONFIG    5u  /* PIT mode/access/reload not what the guest programmed */
#define VMSNAP_STATE_F_KVMCLOCK_BACK 6u  /* kvmclock went backwards */
#define VMSNAP_STATE_F_TSC_BACK      7u  /* TSC went backwards */
#define VMSNAP_STATE_F_CLOCK_JUMP    8u  /* kvmclock or TSC jumped more than maxjump= ms */
#define VMSNAP_STATE_F_KVMCLOCK_DEAD 9u  /* kvmclock MSR lost / struct stuck / not advancing */
#define VMSNAP_STATE_F_SSE           10u /* xmm register mismatch (ring 3) */
#define VMSNAP_STATE_F_AVX           11u /* ymm upper-half mismatch (ring 3) */
#define VMSNAP_STATE_F_FPU           12u /* x87 control word/stack or MXCSR mismatch (ring 3) */
#define VMSNAP_STATE_F_IPI_STALL     13u /* IPI ping-pong stalled while the AP runs */
#define VMSNAP_STATE_F_AP_DEAD       14u /* AP neither ticks nor runs ring 3 */
#define VMSNAP_STATE_F_UART_CONFIG   15u /* IER/LCR/MCR/SCR not what the guest programmed */
#define VMSNAP_STATE_F_UART_RX       16u /* received byte pending without an RX interrupt */
#define VMSNAP_STATE_F_EXCEPTION     17u /* unexpected exception: vector, error, rip */
#define VMSNAP_STATE_F_SPURIOUS      18u /* unexpected interrupt vector / LAPIC error */
#define VMSNAP_STATE_F_DIRTY         19u /* ring-3 dirty range lost a write */
#define VMSNAP_STATE_F_AP_START      20u /* AP did not answer INIT/SIPI (cpus= or vmsnap count) */
#define VMSNAP_STATE_F_MAX           20u

#endif /* VMSNAP_GUESTS_H */
