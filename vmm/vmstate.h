/* The machine as the snapshot engine sees it: RAM blocks, device handlers and the
 * CONFIG section (docs/FORMAT.md section 7). */
#pragma once

#include "machine.h"

#include <vmsnap/vm.h>

#define MACHINE_CONFIG_VERSION 1u

/* Fills vm (and blocks, which must hold RAM_MAX_BLOCKS entries) for a save of m.
 * The config payload in vm->config is a new reference. */
bool vmstate_describe(Machine *m, VmsnapVm *vm, VmsnapRamBlock *blocks, GError **error);
void vmstate_clear(VmsnapVm *vm);

/* The VMM's RAM blocks in engine form (host pointers, backing fds). */
unsigned vmstate_ram_blocks(Machine *m, VmsnapRamBlock *blocks);

/* Decodes a CONFIG payload into cfg (memory, cpus, name, uuid, kernel, cmdline) and
 * the run state the VM had when saved. */
bool vmstate_config_decode(GBytes *payload, uint32_t version, MachineConfig *cfg, char **run_state,
                           GError **error);

/* Checks that a snapshot's configuration fits this machine (memory, vCPUs); the
 * error names the field and both values. */
bool vmstate_config_check(const MachineConfig *have, const MachineConfig *snap, const char *what,
                          GError **error);
