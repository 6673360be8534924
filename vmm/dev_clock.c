/*
 * Device "kvmclock", instance 0: the VM-wide kvmclock, through KVM_GET/SET_CLOCK.
 *
 * Semantics (QEMU's): guest time continues from the saved value. KVM_SET_CLOCK gets
 * the saved `clock` with flags 0, so the time the VM spent saved, paused or in
 * transit is not seen by the guest; we never pass KVM_CLOCK_REALTIME, which would
 * advance the clock by the host wall-clock time elapsed since the save (wrong after
 * a restore days later, and meaningless between hosts whose clocks differ). The
 * saved flags are kept for diagnostics only (KVM_CLOCK_TSC_STABLE etc. are outputs).
 * The vCPUs are restored first (devstate.c), so KVM_SET_CLOCK rebuilds every vCPU's
 * pvclock page from the restored TSC.
 */
#include "devstate.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#define CLOCK_VERSION     1
#define CLOCK_FLAGS_KNOWN (KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC)

static unsigned clock_count(const DevState *ds)
{
    return 1;
}

static bool clock_save(DevState *ds, unsigned instance, VmsnapFieldWriter *w, GError **error)
{
    struct kvm_clock_data data;
    memset(&data, 0, sizeof(data));
    if (ioctl(devstate_vm(ds)->vm_fd, KVM_GET_CLOCK, &data) < 0)
        return devstate_ioctl_error(error, errno, "KVM_GET_CLOCK", "kvmclock", instance);
    vmsnap_fw_u64(w, "clock", data.clock);
    vmsnap_fw_u32(w, "flags", data.flags);
    return true;
}

static bool clock_load(DevState *ds, unsigned instance, VmsnapFieldReader *r, uint32_t version,
                       GError **error)
{
    uint64_t clock = 0;
    uint32_t flags = 0;

    vmsnap_fr_u64(r, "clock", &clock);
    if (vmsnap_fr_u32(r, "flags", &flags) && (flags & ~CLOCK_FLAGS_KNOWN))
        vmsnap_fr_fail(r, "unknown flags 0x%x (known: 0x%x)", flags & ~CLOCK_FLAGS_KNOWN,
                       CLOCK_FLAGS_KNOWN);
    if (vmsnap_fr_failed(r))
        return false;
    if (devstate_skipped(ds, "kvmclock", instance, NULL))
        return true;

    struct kvm_clock_data data;
    memset(&data, 0, sizeof(data));
    data.clock = clock;
    if (ioctl(devstate_vm(ds)->vm_fd, KVM_SET_CLOCK, &data) < 0)
        return devstate_ioctl_error(error, errno, "KVM_SET_CLOCK", "kvmclock", instance);
    return true;
}

const DevType devtype_kvmclock = {
    .name = "kvmclock",
    .version = CLOCK_VERSION,
    .min_version = 1,
    .count = clock_count,
    .save = clock_save,
    .load = clock_load,
};
