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
#define VMSNAP_DIRTY_STATUS_GPA   0x0000F000u
#define VMSNAP_DIRTY_MAGIC        0x59545244u /* 'DRTY' */
#define VMSNAP_DIRTY_VERSION      1u
#define VMSNAP_DIRTY_MAX_CPUS     32u
#define VMSNAP_DIRTY_NO_ERROR     0xFFFFFFFFu
#define VMSNAP_DIRTY_TAG_XOR      0xA5A5A5A5u /* word1 = page_number ^ this */

#define VMSNAP_DIRTY_OFF_MAGIC          0x000u
#define VMSNAP_DIRTY_OFF_VERSION        0x004u
#define VMSNAP_DIRTY_OFF_NCPUS          0x008u
#define VMSNAP_DIRTY_OFF_PAGE_SIZE      0x00Cu
#define VMSNAP_DIRTY_OFF_START_PAGE     0x010u
#define VMSNAP_DIRTY_OFF_END_PAGE       0x014u
#define VMSNAP_DIRTY_OFF_STEP           0x018u
#define VMSNAP_DIRTY_OFF_PACE           0x01Cu
#define VMSNAP_DIRTY_OFF_B_EVERY        0x020u
#define VMSNAP_DIRTY_OFF_ERROR_PAGE     0x024u
#define VMSNAP_DIRTY_OFF_ERROR_FOUND    0x028u /* word0 seen */
#define VMSNAP_DIRTY_OFF_ERROR_EXPECTED 0x02Cu /* word0 expected */
#define VMSNAP_DIRTY_OFF_ERROR_FOUND1   0x030u /* word1 seen (extension) */
#define VMSNAP_DIRTY_OFF_ERROR_EXPECTED1 0x034u /* word1 expected (extension) */
#define VMSNAP_DIRTY_OFF_ERROR_CPU      0x038u /* vCPU that saw it (extension) */
#define VMSNAP_DIRTY_OFF_FLAGS          0x03Cu /* VMSNAP_DIRTY_FLAG_* (extension) */
#define VMSNAP_DIRTY_OFF_SLOTS          0x040u
#define VMSNAP_DIRTY_SLOT_SIZE          32u

#define VMSNAP_DIRTY_FLAG_VMSNAP  (1u << 0) /* entered with ESI = 'VMSN' */
#define VMSNAP_DIRTY_FLAG_CLEARED (1u << 1) /* range zeroed before pass 1 (clear=1) */

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

#endif /* VMSNAP_GUESTS_H */
