/*
 * Test-only: device state NOT to load on an incoming migration or restore
 * (`--x-skip-device-load SPEC`, docs/CLI.md). Tests use it to prove that the guest
 * notices each lost piece of state (guest/state's F codes, docs/GUEST.md).
 *
 * SPEC is SECTION[N][.PART], several separated by commas:
 *   SECTION  a device section: cpu, pic, ioapic, pit, kvmclock, serial
 *   N        an instance (cpu1 = vCPU 1); without it, every instance
 *   PART     cpu only: sregs, regs, xsave (with the XCRs), lapic, msrs, tsc,
 *            tsc_deadline, kvmclock_msr, mp_state, events, debugregs
 * The skipped section is still read and validated; only applying it is left out,
 * so the device keeps the state the fresh VM gave it.
 *
 * Pure data code (no KVM): unit-tested by tests/unit/test-devskip.c.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

G_BEGIN_DECLS

typedef struct DevSkip DevSkip;

/* Parses every string of `specs` (NULL-terminated; NULL = none), each one a
 * comma-separated list of SPECs. Returns NULL with an error that names the bad SPEC and
 * lists the valid names. An empty list gives an empty DevSkip (never NULL on success). */
DevSkip *devskip_parse(const char *const *specs, GError **error);

/* True when nothing is skipped. NULL is empty. */
bool devskip_is_empty(const DevSkip *s);

/* True when the whole of (section, instance) is skipped. NULL skips nothing. */
bool devskip_section(const DevSkip *s, const char *section, unsigned instance);

/* True when `part` of (section, instance) is skipped: named itself, or its whole
 * section/instance is. NULL skips nothing. */
bool devskip_part(const DevSkip *s, const char *section, unsigned instance, const char *part);

/* The skipped items, normalised and comma-separated ("cpu1.mp_state,pit"), for logs.
 * g_free() it. */
char *devskip_describe(const DevSkip *s);

/* The valid names (for errors and --help): NULL-terminated static arrays. */
const char *const *devskip_sections(void);
const char *const *devskip_cpu_parts(void);

void devskip_free(DevSkip *s);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(DevSkip, devskip_free)

G_END_DECLS
