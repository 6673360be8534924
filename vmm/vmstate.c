#include "vmstate.h"

#include "devstate.h"

#include <string.h>

unsigned vmstate_ram_blocks(Machine *m, VmsnapRamBlock *blocks)
{
    GuestRam *ram = &m->vm->ram;
    for (unsigned i = 0; i < ram->n_blocks; i++) {
        const RamBlock *b = &ram->blocks[i];
        memset(&blocks[i], 0, sizeof(blocks[i]));
        g_strlcpy(blocks[i].name, b->name, sizeof(blocks[i].name));
        blocks[i].gpa = b->gpa;
        blocks[i].size = b->size;
        blocks[i].page_size = b->page_size;
        blocks[i].host = b->host;
        blocks[i].backing_fd = b->backing == RAM_BACKING_FILE ? b->fd : -1;
    }
    return ram->n_blocks;
}

static GBytes *config_encode(Machine *m, GError **error)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_str(w, "name", m->cfg.name ? m->cfg.name : "");
    vmsnap_fw_str(w, "uuid", m->cfg.uuid);
    vmsnap_fw_u64(w, "memory", m->cfg.memory);
    vmsnap_fw_u32(w, "cpus", m->cfg.cpus);
    vmsnap_fw_str(w, "kernel", m->kernel_desc ? m->kernel_desc : "");
    vmsnap_fw_u64(w, "kernel_xxh3", m->kernel_xxh3);
    vmsnap_fw_str(w, "cmdline", m->cfg.append ? m->cfg.append : "");
    vmsnap_fw_str(w, "run_state", runstate_name(m->state));
    return vmsnap_fw_finish(w, error);
}

bool vmstate_describe(Machine *m, VmsnapVm *vm, VmsnapRamBlock *blocks, GError **error)
{
    memset(vm, 0, sizeof(*vm));
    vm->struct_size = sizeof(*vm);
    g_autofree char *hex = g_strdup(m->cfg.uuid);
    /* canonical text -> 16 bytes */
    unsigned j = 0;
    for (const char *p = hex; *p && j < 32; p++) {
        int v = g_ascii_xdigit_value(*p);
        if (v < 0)
            continue;
        if (j % 2 == 0)
            vm->uuid[j / 2] = (uint8_t)(v << 4);
        else
            vm->uuid[j / 2] |= (uint8_t)v;
        j++;
    }
    vm->n_blocks = vmstate_ram_blocks(m, blocks);
    vm->blocks = blocks;
    vm->devices = devstate_devices(m->devstate, &vm->n_devices);
    vm->config = config_encode(m, error);
    vm->config_version = MACHINE_CONFIG_VERSION;
    return vm->config != NULL;
}

void vmstate_clear(VmsnapVm *vm)
{
    g_clear_pointer(&vm->config, g_bytes_unref);
}

bool vmstate_config_decode(GBytes *payload, uint32_t version, MachineConfig *cfg, char **run_state,
                           GError **error)
{
    if (version != MACHINE_CONFIG_VERSION) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "section 'config' has version %u, this vmsnap reads version %u", version,
                    MACHINE_CONFIG_VERSION);
        return false;
    }
    gsize len;
    const void *data = g_bytes_get_data(payload, &len);
    VmsnapFieldReader *r = vmsnap_fr_new(data, len, "config", 0, version);
    g_autofree char *kernel = NULL;
    uint64_t xxh = 0;
    memset(cfg, 0, sizeof(*cfg));
    vmsnap_fr_str(r, "name", 256, &cfg->name);
    vmsnap_fr_str(r, "uuid", 64, &cfg->uuid);
    vmsnap_fr_u64(r, "memory", &cfg->memory);
    vmsnap_fr_u32(r, "cpus", &cfg->cpus);
    vmsnap_fr_str(r, "kernel", 4096, &kernel);
    vmsnap_fr_u64(r, "kernel_xxh3", &xxh);
    vmsnap_fr_str(r, "cmdline", 4096, &cfg->append);
    vmsnap_fr_str(r, "run_state", 64, run_state);
    if (!vmsnap_fr_failed(r)) {
        if (cfg->cpus < 1 || cfg->cpus > VM_MAX_VCPUS)
            vmsnap_fr_fail(r, "cpus is %u, vmsnap runs 1 to %d", cfg->cpus, VM_MAX_VCPUS);
        else if (cfg->memory < (2ull << 20) || cfg->memory % RAM_PAGE_SIZE)
            vmsnap_fr_fail(r, "memory is %" G_GUINT64_FORMAT " bytes", cfg->memory);
        else if (!g_uuid_string_is_valid(cfg->uuid))
            vmsnap_fr_fail(r, "uuid '%s' is not a UUID", cfg->uuid);
    }
    if (!vmsnap_fr_finish(r, error)) {
        machine_config_clear(cfg);
        g_clear_pointer(run_state, g_free);
        return false;
    }
    if (cfg->name && !*cfg->name)
        g_clear_pointer(&cfg->name, g_free);
    if (cfg->append && !*cfg->append)
        g_clear_pointer(&cfg->append, g_free);
    return true;
}

bool vmstate_config_check(const MachineConfig *have, const MachineConfig *snap, const char *what,
                          GError **error)
{
    if (have->memory != snap->memory) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "%s: config field 'memory' is %" G_GUINT64_FORMAT " MiB in the snapshot, "
                    "this VM has %" G_GUINT64_FORMAT " MiB (--memory)",
                    what, snap->memory >> 20, have->memory >> 20);
        return false;
    }
    if (have->cpus != snap->cpus) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "%s: config field 'cpus' is %u in the snapshot, this VM has %u (--cpus)", what,
                    snap->cpus, have->cpus);
        return false;
    }
    return true;
}
