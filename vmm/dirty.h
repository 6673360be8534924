/*
 * Dirty page tracking for live save and migration: KVM's dirty log in manual-protect
 * mode with INITIALLY_SET (starting costs nothing at any RAM size; pages are
 * write-protected only as each range is re-armed just before it is read), ORed with
 * a VMM-side bitmap of the pages the VMM itself writes.
 */
#pragma once

#include "vm.h"

/* Enables manual protection once per VM (call at VM creation). Returns false with an
 * error if KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with INITIALLY_SET. */
bool dirty_log_init(Vm *vm, GError **error);

/* Starts a tracking session (KVM logs from VM creation on; this costs two small
 * allocations per block). Pages written since the last session, or never re-armed
 * in it, still read as dirty: callers treat every page as dirty at the start. */
bool dirty_log_start(Vm *vm, GError **error);

/* ORs the pages of block b dirtied since the last fetch into bitmap (host-endian
 * words); also takes the VMM-side bits. They stay writable (and reported) until
 * dirty_log_rearm() names them. */
bool dirty_log_fetch(Vm *vm, unsigned b, uint64_t *bitmap, GError **error);

/* Re-protects the pages of block b set in bitmap (bit i = page first + i; first a
 * multiple of 64): a write from now on shows in the next fetch. */
bool dirty_log_rearm(Vm *vm, unsigned b, uint64_t first, uint64_t count, const uint64_t *bitmap,
                     GError **error);

void dirty_log_stop(Vm *vm);

/* Records a VMM write to guest memory (only while logging). */
void dirty_log_mark(Vm *vm, uint64_t gpa, uint64_t len);
