/* The device registry and the per-VM handler table (devstate.h). */
#include "devstate.h"

#include <string.h>

/*
 * Restore order. CPUs first: the IOAPIC routes by LAPIC ID, and KVM_SET_CLOCK
 * recomputes every vCPU's kvmclock page from its (restored) TSC. The PIC and IOAPIC
 * before the PIT, whose restored timer fires into them. The serial port last: the
 * level of its IRQ line lives in the irqchip, restored before it.
 */
static const DevType *const registry[] = {
    &devtype_cpu, &devtype_pic, &devtype_ioapic, &devtype_pit, &devtype_kvmclock, &devtype_serial,
};
#define N_TYPES G_N_ELEMENTS(registry)

typedef struct DevInstance {
    DevState *ds;
    const DevType *type;
    unsigned index;
} DevInstance;

struct DevState {
    Vm *vm;
    Uart *uart;
    void *type_data[N_TYPES];
    bool type_init[N_TYPES];
    unsigned n;
    VmsnapDevice *devices;
    DevInstance *instances;
    DevSkip *skip;
};

unsigned devstate_n_types(void)
{
    return N_TYPES;
}

const char *devstate_type_name(unsigned i)
{
    return i < N_TYPES ? registry[i]->name : NULL;
}

uint32_t devstate_type_version(unsigned i)
{
    return i < N_TYPES ? registry[i]->version : 0;
}

uint32_t devstate_type_min_version(unsigned i)
{
    return i < N_TYPES ? registry[i]->min_version : 0;
}

unsigned devstate_type_instances(const DevState *ds, unsigned i)
{
    return i < N_TYPES ? registry[i]->count(ds) : 0;
}

Vm *devstate_vm(const DevState *ds)
{
    return ds->vm;
}

Uart *devstate_uart(const DevState *ds)
{
    return ds->uart;
}

void devstate_set_skip(DevState *ds, DevSkip *skip)
{
    devskip_free(ds->skip);
    ds->skip = skip;
}

bool devstate_skipped(const DevState *ds, const char *section, unsigned instance, const char *part)
{
    if (!ds->skip)
        return false;
    return part ? devskip_part(ds->skip, section, instance, part)
                : devskip_section(ds->skip, section, instance);
}

void *devstate_type_data(const DevState *ds, const DevType *type)
{
    for (unsigned i = 0; i < N_TYPES; i++)
        if (registry[i] == type)
            return ds->type_data[i];
    return NULL;
}

bool devstate_ioctl_error(GError **error, int err, const char *what, const char *section,
                          unsigned instance)
{
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s on %s %u failed: %s", what,
                section, instance, g_strerror(err));
    return false;
}

bool devstate_rd_u8_max(VmsnapFieldReader *r, const char *name, uint8_t max, uint8_t *out)
{
    if (!vmsnap_fr_u8(r, name, out))
        return false;
    if (*out > max)
        return vmsnap_fr_fail(r, "value %u is out of range (0 to %u)", *out, max);
    return true;
}

bool devstate_rd_u16_max(VmsnapFieldReader *r, const char *name, uint16_t max, uint16_t *out)
{
    if (!vmsnap_fr_u16(r, name, out))
        return false;
    if (*out > max)
        return vmsnap_fr_fail(r, "value %u is out of range (0 to %u)", *out, max);
    return true;
}

bool devstate_rd_u32_max(VmsnapFieldReader *r, const char *name, uint32_t max, uint32_t *out)
{
    if (!vmsnap_fr_u32(r, name, out))
        return false;
    if (*out > max)
        return vmsnap_fr_fail(r, "value %u is out of range (0 to %u)", *out, max);
    return true;
}

static bool instance_save(void *opaque, VmsnapFieldWriter *w, GError **error)
{
    DevInstance *in = opaque;
    return in->type->save(in->ds, in->index, w, error);
}

static bool instance_load(void *opaque, VmsnapFieldReader *r, uint32_t version, GError **error)
{
    DevInstance *in = opaque;
    const DevType *t = in->type;

    /* The engine checks the range too; a handler must not trust its caller. */
    if (version > t->version)
        return vmsnap_fr_fail(r, "section version %u is newer than this vmsnap knows (%u)", version,
                              t->version);
    if (version < t->min_version)
        return vmsnap_fr_fail(r,
                              "section version %u is older than the oldest this vmsnap "
                              "reads (%u)",
                              version, t->min_version);
    if (in->index >= t->count(in->ds))
        return vmsnap_fr_fail(r, "this VM has no %s %u", t->name, in->index);
    return t->load(in->ds, in->index, r, version, error);
}

DevState *devstate_new(Vm *vm, Uart *uart, GError **error)
{
    g_autoptr(DevState) ds = g_new0(DevState, 1);
    ds->vm = vm;
    ds->uart = uart;

    for (unsigned i = 0; i < N_TYPES; i++) {
        if (registry[i]->init) {
            if (!registry[i]->init(ds, &ds->type_data[i], error))
                return NULL;
            ds->type_init[i] = true;
        }
        ds->n += registry[i]->count(ds);
    }
    ds->devices = g_new0(VmsnapDevice, ds->n);
    ds->instances = g_new0(DevInstance, ds->n);
    unsigned k = 0;
    for (unsigned i = 0; i < N_TYPES; i++) {
        unsigned count = registry[i]->count(ds);
        for (unsigned j = 0; j < count; j++, k++) {
            ds->instances[k] = (DevInstance){ .ds = ds, .type = registry[i], .index = j };
            ds->devices[k] = (VmsnapDevice){
                .struct_size = sizeof(VmsnapDevice),
                .name = registry[i]->name,
                .instance = j,
                .version = registry[i]->version,
                .min_version = registry[i]->min_version,
                .save = instance_save,
                .load = instance_load,
                .opaque = &ds->instances[k],
            };
        }
    }
    return g_steal_pointer(&ds);
}

const VmsnapDevice *devstate_devices(const DevState *ds, unsigned *n)
{
    *n = ds->n;
    return ds->devices;
}

const VmsnapDevice *devstate_find(const DevState *ds, const char *name, uint32_t instance,
                                  GError **error)
{
    const DevType *type = NULL;
    for (unsigned i = 0; i < N_TYPES; i++)
        if (strcmp(registry[i]->name, name) == 0)
            type = registry[i];
    if (!type) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "section '%s' instance %u: no device of this VMM has this name", name,
                    instance);
        return NULL;
    }
    for (unsigned k = 0; k < ds->n; k++)
        if (ds->instances[k].type == type && ds->instances[k].index == instance)
            return &ds->devices[k];

    unsigned count = type->count(ds);
    if (type == &devtype_cpu && count == 1)
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "section '%s' instance %u: this VM has 1 vCPU (instance 0)", name, instance);
    else if (type == &devtype_cpu)
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "section '%s' instance %u: this VM has %u vCPUs (instances 0 to %u)", name,
                    instance, count, count - 1);
    else if (count == 0)
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "section '%s' instance %u: this VM has no %s device", name, instance, name);
    else
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "section '%s' instance %u: this VM has %u (instances 0 to %u)", name, instance,
                    count, count - 1);
    return NULL;
}

void devstate_free(DevState *ds)
{
    if (!ds)
        return;
    for (unsigned i = 0; i < N_TYPES; i++)
        if (ds->type_init[i] && registry[i]->fini)
            registry[i]->fini(ds->type_data[i]);
    g_free(ds->devices);
    g_free(ds->instances);
    devskip_free(ds->skip);
    g_free(ds);
}

GBytes *devstate_save_payload(const VmsnapDevice *dev, GError **error)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    if (!dev->save(dev->opaque, w, error)) {
        vmsnap_fw_free(w);
        return NULL;
    }
    return vmsnap_fw_finish(w, error);
}

bool devstate_load_payload(const VmsnapDevice *dev, const void *data, size_t len, uint32_t version,
                           GError **error)
{
    VmsnapFieldReader *r = vmsnap_fr_new(data, len, dev->name, dev->instance, version);
    GError *apply_error = NULL;
    bool ok = dev->load(dev->opaque, r, version, &apply_error);
    /* finish() reports a validation error, or fields left over after a "successful" load. */
    bool consumed = vmsnap_fr_finish(r, apply_error ? NULL : error);
    if (apply_error) {
        g_propagate_error(error, apply_error);
        return false;
    }
    if (!ok && consumed) {
        /* A handler that failed without saying why: a bug, but never a silent one. */
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "section '%s' instance %u: load failed",
                    dev->name, dev->instance);
        return false;
    }
    return ok && consumed;
}
