/*
 * Device state of the micro-VMM: everything outside guest RAM, as DEVICE sections
 * of self-describing fields (docs/DEVICES.md, docs/FORMAT.md section 8).
 *
 * Each device type lives in one dev_*.c file that holds its whole save/load
 * description (Firecracker style) and is listed in the registry in devstate.c.
 * A DevState binds the registry to one VM and hands the engine one VmsnapDevice
 * per instance, in restore order.
 */
#pragma once

#include "devskip.h"
#include "uart.h"
#include "vm.h"

#include <vmsnap/device.h>

G_BEGIN_DECLS

typedef struct DevState DevState;

/*
 * Creates the handlers of `vm` (and of `uart`, which may be NULL: then there is no
 * "serial" section). Probes what this KVM can save: the MSR list (KVM_GET_MSR_INDEX_LIST,
 * filtered with KVM_GET_MSRS on vCPU 0) and the XSAVE size. Returns NULL with an error
 * when a probe fails. The VM and the UART must outlive the DevState. Call it before
 * vm_start() or while the VM is paused: the probe issues vCPU 0 ioctls, which wait for
 * a running vCPU to leave KVM_RUN.
 */
DevState *devstate_new(Vm *vm, Uart *uart, GError **error);

/* All handlers of this VM, in restore order: cpu 0..n-1, pic 0, pic 1, ioapic 0, pit 0,
 * kvmclock 0, serial 0. The VmsnapDevice.opaque pointers stay valid until
 * devstate_free(). Never NULL; *n receives the count. */
const VmsnapDevice *devstate_devices(const DevState *ds, unsigned *n);

/* The handler for section (name, instance), or NULL with an error that names the
 * section and says why (unknown device, or an instance this VM does not have, e.g.
 * "section 'cpu' instance 2: this VM has 2 vCPUs (instances 0 to 1)"). */
const VmsnapDevice *devstate_find(const DevState *ds, const char *name, uint32_t instance,
                                  GError **error);

/* NULL is fine. */
void devstate_free(DevState *ds);

/* Test-only (--x-skip-device-load): from now on, loads validate but do not apply the
 * state `skip` selects. Takes ownership of `skip` (NULL = load everything). */
void devstate_set_skip(DevState *ds, DevSkip *skip);

/*
 * The load protocol of these handlers. VmsnapDevice.load() records validation errors
 * in the reader (vmsnap_fr_fail() or a kind/name mismatch) and then returns false
 * WITHOUT setting *error: the caller gets the message, which names the section and the
 * field, from vmsnap_fr_finish(), which it calls anyway to check that every field was
 * consumed. Errors while applying the state (a KVM ioctl refusing it) set *error.
 * These two helpers implement the whole protocol for one payload.
 */

/* Saves one device into a payload. Returns NULL with an error. */
GBytes *devstate_save_payload(const VmsnapDevice *dev, GError **error);

/* Loads one payload written by section version `version` into `dev`. Refuses a version
 * outside min_version..version naming both. Returns false with an error naming the
 * section and the field. */
bool devstate_load_payload(const VmsnapDevice *dev, const void *data, size_t len, uint32_t version,
                           GError **error);

/* Registry walk (tests, `vmsnap` diagnostics): the device types in restore order. */
unsigned devstate_n_types(void);
const char *devstate_type_name(unsigned i);
uint32_t devstate_type_version(unsigned i);
uint32_t devstate_type_min_version(unsigned i);
/* How many instances of type i this DevState's VM has. */
unsigned devstate_type_instances(const DevState *ds, unsigned i);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(DevState, devstate_free)

/* ---- For the device files (dev_*.c) ---- */

typedef struct DevType {
    const char *name;     /* section name */
    uint32_t version;     /* what save() writes */
    uint32_t min_version; /* the oldest load() reads */
    /* Optional per-VM probe, run once by devstate_new(); *data is passed to fini. */
    bool (*init)(DevState *ds, void **data, GError **error);
    void (*fini)(void *data);
    /* Instances this VM has. */
    unsigned (*count)(const DevState *ds);
    /* The VM is paused. Return false with *error set (KVM refused a GET). */
    bool (*save)(DevState *ds, unsigned instance, VmsnapFieldWriter *w, GError **error);
    /* Read every field first, validating each as it is read (vmsnap_fr_fail()), and
     * apply only when all are valid. `version` is within min_version..version. */
    bool (*load)(DevState *ds, unsigned instance, VmsnapFieldReader *r, uint32_t version,
                 GError **error);
} DevType;

extern const DevType devtype_cpu;
extern const DevType devtype_pic;
extern const DevType devtype_ioapic;
extern const DevType devtype_pit;
extern const DevType devtype_kvmclock;
extern const DevType devtype_serial;

Vm *devstate_vm(const DevState *ds);
Uart *devstate_uart(const DevState *ds);
/* True when the state `part` (NULL: the whole section) of (section, instance) must not
 * be applied (devstate_set_skip()). A load still reads and validates every field. */
bool devstate_skipped(const DevState *ds, const char *section, unsigned instance, const char *part);

/* The data `type`'s init() produced. */
void *devstate_type_data(const DevState *ds, const DevType *type);

/* Sets *error for a failed ioctl: "<what> on <section> <instance> failed: <errno text>". */
bool devstate_ioctl_error(GError **error, int err, const char *what, const char *section,
                          unsigned instance);

/* Reads an unsigned field and checks it is at most `max`; on a larger value the reader
 * fails with a message naming the value and the range. */
bool devstate_rd_u8_max(VmsnapFieldReader *r, const char *name, uint8_t max, uint8_t *out);
bool devstate_rd_u16_max(VmsnapFieldReader *r, const char *name, uint16_t max, uint16_t *out);
bool devstate_rd_u32_max(VmsnapFieldReader *r, const char *name, uint32_t max, uint32_t *out);

/* The "serial" section's payload, without a DevState (unit tests: no KVM needed).
 * Load follows the protocol above: false with the error recorded in the reader;
 * with apply false it only validates. */
void serial_state_save(Uart *u, VmsnapFieldWriter *w);
bool serial_state_load(Uart *u, VmsnapFieldReader *r, uint32_t version, bool apply);

G_END_DECLS
