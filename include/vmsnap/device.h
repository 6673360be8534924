/*
 * Device state handlers: the seam between a VMM's devices and the snapshot
 * engine (DESIGN.md section 2). Each device describes itself once; the engine
 * saves one DEVICE section per handler and, on restore, hands each handler the
 * section with its name and instance.
 */
#pragma once

#include <vmsnap/fields.h>

G_BEGIN_DECLS

typedef struct VmsnapDevice {
    uint32_t struct_size; /* sizeof(VmsnapDevice), so the struct can grow */
    const char *name;     /* section name, 1-23 chars: "cpu", "pic", "serial", ... */
    uint32_t instance;    /* vCPU index, chip number, ... */
    uint32_t version;     /* the version save() writes */
    uint32_t min_version; /* the oldest version load() accepts */
    /* Emits the device's fields. The VM is paused. Returns false with an error. */
    bool (*save)(void *opaque, VmsnapFieldWriter *w, GError **error);
    /* Reads the fields written by `version` and applies them. Should validate
     * before applying. Returns false with an error naming the field. */
    bool (*load)(void *opaque, VmsnapFieldReader *r, uint32_t version, GError **error);
    void *opaque;
} VmsnapDevice;

G_END_DECLS
